//! Child jobs through the real server and the `order` and `payment` examples:
//! an order runs a payment as a child job of the same client, waits in
//! `waiting_for_sub_job`, and moves on by how the payment ended.

use std::path::PathBuf;
use std::time::Duration;

use avtomatika_tests::config::Config;
use avtomatika_tests::{Answer, Auth, TestServer, TestWorker, test_config};
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

const ORDER: &str = "/api/v1/jobs/order";
const WAIT: Duration = Duration::from_secs(30);

const ACME: &str = "acme-token-5d1c07";
const GLOBEX: &str = "globex-token-a92e4b";
const SOLO: &str = "solo-token-0b8f33";
const CLIENTS: &str = r#"
[acme]
token = "acme-token-5d1c07"

[globex]
token = "globex-token-a92e4b"

[solo]
token = "solo-token-0b8f33"
monthly_attempts = 1
"#;

/// A server whose clients are `acme`, `globex` and `solo` (one creation a
/// month); the directory holding `clients.toml` lives as long as the server.
async fn server() -> (TestServer, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let clients: PathBuf = dir.path().join("clients.toml");
    std::fs::write(&clients, CLIENTS).expect("write clients.toml");
    let config =
        Config { clients_config_path: Some(clients), worker_poll_timeout: Duration::from_secs(1), ..test_config() };
    (TestServer::start_with(config).await, dir)
}

async fn create(server: &TestServer, token: &str, path: &str, body: Value) -> Answer {
    server.send(Method::POST, path, Auth::Client(token), Some(&body.to_string())).await
}

async fn create_order(server: &TestServer, token: &str, body: Value) -> String {
    let answer = create(server, token, ORDER, body).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    answer.json()["job_id"].as_str().expect("job_id").to_owned()
}

async fn get(server: &TestServer, token: &str, job_id: &str) -> Answer {
    server.send(Method::GET, &format!("/api/v1/jobs/{job_id}"), Auth::Client(token), None).await
}

/// Polls the job as `token`'s client until `done` holds.
async fn wait_for(server: &TestServer, token: &str, job_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let answer = get(server, token, job_id).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let job = answer.json();
        if done(&job) {
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "job {job_id} did not get there: {job:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn waiting(job: &Value) -> bool {
    !matches!(job["status"].as_str(), Some("pending" | "running"))
}

fn terminal(job: &Value) -> bool {
    matches!(job["status"].as_str(), Some("finished" | "failed" | "cancelled" | "error" | "quarantined"))
}

/// Creates an order as `token`'s client and waits until its payment child
/// exists; returns the order and the child's id.
async fn order_waiting_for_payment(server: &TestServer, token: &str, amount: f64) -> (String, Value, String) {
    let order_id = create_order(server, token, json!({"amount": amount, "address": "1 Main St"})).await;
    let order = wait_for(server, token, &order_id, waiting).await;
    assert_eq!(order["status"], "waiting_for_sub_job", "{order:#}");
    assert_eq!(order["current_state"], "pay", "{order:#}");
    let children = order["child_job_ids"].as_array().unwrap_or_else(|| panic!("no child_job_ids: {order:#}"));
    assert_eq!(children.len(), 1, "{order:#}");
    let child_id = children[0].as_str().expect("a child id").to_owned();
    assert_eq!(order["child"]["job_id"], child_id.as_str(), "{order:#}");
    assert_eq!(order["child"]["blueprint"], "payment", "{order:#}");
    (order_id, order, child_id)
}

/// The `charge` task of `child_id`, taken by `worker`.
async fn charge_task(worker: &TestWorker<'_>, child_id: &str, amount: f64) -> Value {
    let task = worker.next_task(WAIT).await;
    assert_eq!(task["job_id"], child_id, "{task:#}");
    assert_eq!(task["type"], "charge", "{task:#}");
    assert_eq!(task["params"], json!({"amount": amount}), "{task:#}");
    task
}

#[tokio::test]
async fn a_paid_order_ships_with_the_payment_in_its_history() {
    let (server, _dir) = server().await;
    let worker = server.worker("w-shop");
    worker.register(&["charge", "ship"]).await;
    let (order_id, _, child_id) = order_waiting_for_payment(&server, ACME, 42.5).await;

    // The child: a payment job of the same client, linked back to the order.
    let child = wait_for(&server, ACME, &child_id, waiting).await;
    assert_eq!(child["blueprint_name"], "payment", "{child:#}");
    assert_eq!(child["client"], "acme", "{child:#}");
    assert_eq!(child["parent_job_id"], order_id.as_str(), "{child:#}");
    assert_eq!(child["initial_data"], json!({"amount": 42.5}), "{child:#}");
    assert_eq!(child["status"], "waiting_for_worker", "{child:#}");
    assert_eq!(child["child_job_ids"], json!([]), "{child:#}");
    // Another client sees neither job, exactly as if they did not exist.
    for id in [&order_id, &child_id] {
        let message = get(&server, GLOBEX, id).await.assert_error(404);
        assert!(message.contains("not found"), "{message}");
    }

    let task = charge_task(&worker, &child_id, 42.5).await;
    let receipt = json!({"charge_id": "ch_42", "charged": 42.5});
    let (status, _) = worker.post_result(&task, json!({"status": "success", "data": receipt})).await;
    assert_eq!(status, 200);
    let child = wait_for(&server, ACME, &child_id, terminal).await;
    assert_eq!((child["status"].as_str(), child["current_state"].as_str()), (Some("finished"), Some("paid")));

    // The order moves on with the child's history and ships.
    let ship = worker.next_task(WAIT).await;
    assert_eq!(ship["job_id"], order_id.as_str(), "{ship:#}");
    assert_eq!(ship["type"], "ship", "{ship:#}");
    assert_eq!(ship["params"], json!({"address": "1 Main St", "amount": 42.5}), "{ship:#}");
    let order = get(&server, ACME, &order_id).await.json();
    assert_eq!((order["status"].as_str(), order["current_state"].as_str()), (Some("waiting_for_worker"), Some("ship")));
    assert_eq!(order["state_history"]["payment"], receipt, "{order:#}");
    assert!(order["child"].is_null(), "the child wait is over: {order:#}");

    let (status, _) = worker.post_result(&ship, json!({"data": {"tracking": "TRK-1"}})).await;
    assert_eq!(status, 200);
    let order = wait_for(&server, ACME, &order_id, terminal).await;
    assert_eq!((order["status"].as_str(), order["current_state"].as_str()), (Some("finished"), Some("shipped")));
    assert_eq!(order["state_history"], json!({"payment": receipt, "tracking": "TRK-1"}), "{order:#}");
    assert_eq!(order["child_job_ids"], json!([child_id]), "{order:#}");
    assert!(order["parent_job_id"].is_null(), "{order:#}");

    // The child is one of the client's jobs; the other client's list has neither.
    let list = server.send(Method::GET, "/api/v1/jobs", Auth::Client(ACME), None).await.json();
    let ids: Vec<&str> = list.as_array().expect("a list").iter().filter_map(|j| j["id"].as_str()).collect();
    assert!(ids.contains(&order_id.as_str()) && ids.contains(&child_id.as_str()), "{ids:?}");
    let list = server.send(Method::GET, "/api/v1/jobs", Auth::Client(GLOBEX), None).await.json();
    assert_eq!(list, json!([]));
    server.stop().await;
}

/// A payment that ends `failed` (invalid card) or `quarantined` (a permanent
/// error) cancels the order: it ends `failed` in its `cancelled` state.
#[tokio::test]
async fn a_failed_payment_cancels_the_order() {
    let (server, _dir) = server().await;
    let worker = server.worker("w-card");
    worker.register(&["charge", "ship"]).await;

    for (code, child_status) in [("INVALID_INPUT_ERROR", "failed"), ("PERMANENT_ERROR", "quarantined")] {
        let (order_id, _, child_id) = order_waiting_for_payment(&server, ACME, 10.0).await;
        let task = charge_task(&worker, &child_id, 10.0).await;
        let error = json!({"code": code, "message": "card declined"});
        let (status, _) = worker.post_result(&task, json!({"status": "failure", "error": error})).await;
        assert_eq!(status, 200);

        let child = wait_for(&server, ACME, &child_id, terminal).await;
        assert_eq!(child["status"], child_status, "{child:#}");
        assert!(child["error_message"].as_str().unwrap_or_default().contains("card declined"), "{child:#}");

        let order = wait_for(&server, ACME, &order_id, terminal).await;
        assert_eq!((order["status"].as_str(), order["current_state"].as_str()), (Some("failed"), Some("cancelled")));
        assert!(order["state_history"].get("payment").is_none(), "{order:#}");
        assert_eq!(order["child_job_ids"], json!([child_id]), "{order:#}");
        // Nothing was shipped.
        worker.assert_no_task().await;
    }
    server.stop().await;
}

/// The child is created for the order's client but not charged to its
/// quota: a client allowed one creation a month gets its order, child and
/// all, through to the end, and only its next creation is refused.
#[tokio::test]
async fn a_child_job_is_not_charged_to_the_quota() {
    let (server, _dir) = server().await;
    let worker = server.worker("w-quota");
    worker.register(&["charge", "ship"]).await;
    let (order_id, _, child_id) = order_waiting_for_payment(&server, SOLO, 5.0).await;
    let child = get(&server, SOLO, &child_id).await.json();
    assert_eq!(child["client"], "solo", "{child:#}");

    let task = charge_task(&worker, &child_id, 5.0).await;
    assert_eq!(worker.post_result(&task, json!({"data": {"charge_id": "ch_5"}})).await.0, 200);
    let ship = worker.next_task(WAIT).await;
    assert_eq!(ship["job_id"], order_id.as_str(), "{ship:#}");
    assert_eq!(worker.post_result(&ship, json!({})).await.0, 200);
    let order = wait_for(&server, SOLO, &order_id, terminal).await;
    assert_eq!(order["status"], "finished", "{order:#}");

    let message = create(&server, SOLO, ORDER, json!({"amount": 1, "address": "x"})).await.assert_error(429);
    assert!(message.contains("quota"), "{message}");
    server.stop().await;
}

/// Cancelling an order that waits for its payment cancels the payment too.
#[tokio::test]
async fn cancelling_the_parent_cancels_the_child() {
    let (server, _dir) = server().await;
    // No worker takes `charge`: the child's task stays queued.
    let (order_id, _, child_id) = order_waiting_for_payment(&server, ACME, 7.0).await;
    wait_for(&server, ACME, &child_id, |j| j["status"] == "waiting_for_worker").await;

    let path = format!("/api/v1/jobs/{order_id}/cancel");
    let answer = server.send(Method::POST, &path, Auth::Client(ACME), None).await;
    assert_eq!((answer.status, answer.json()), (200, json!({"status": "cancellation_request_accepted"})));
    let order = wait_for(&server, ACME, &order_id, terminal).await;
    assert_eq!(order["status"], "cancelled", "{order:#}");
    let child = wait_for(&server, ACME, &child_id, terminal).await;
    assert_eq!(child["status"], "cancelled", "{child:#}");
    // The order stays cancelled: its child's end does not wake it.
    assert_eq!(get(&server, ACME, &order_id).await.json(), order);

    // Nor does a worker that registers later get the withdrawn charge.
    let worker = server.worker("w-late");
    worker.register(&["charge"]).await;
    worker.assert_no_task().await;
    server.stop().await;
}

#[tokio::test]
async fn an_order_without_an_amount_fails_before_any_child() {
    let (server, _dir) = server().await;
    let order_id = create_order(&server, ACME, json!({"address": "1 Main St"})).await;
    let order = wait_for(&server, ACME, &order_id, terminal).await;
    assert_eq!(order["status"], "failed", "{order:#}");
    assert_eq!(order["error_message"], "the order has no numeric amount", "{order:#}");
    assert_eq!(order["child_job_ids"], json!([]), "{order:#}");
    server.stop().await;
}
