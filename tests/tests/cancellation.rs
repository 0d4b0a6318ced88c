//! `POST /api/v1/jobs/{id}/cancel` through real HTTP and the real components:
//! a task still queued is taken back and the job cancelled at once; a task a
//! worker holds is flagged, the worker reads the flag and answers; jobs waiting
//! for a person, for parallel branches or for a child are cancelled at once
//! (queued branches taken back, the child cancelled too); anything else is a
//! `409`, and another client's job does not exist.

use std::time::Duration;

use avtomatika_tests::config::Config;
use avtomatika_tests::{
    Answer, Auth, CLIENT_TOKEN, TestServer, TestWorker, WORKER_TOKEN, manual_watcher_config, one_busy_slot,
};
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};

const HELLO: &str = "/api/v1/jobs/hello";
const PIPELINE: &str = "/api/v1/jobs/pipeline";
const MODERATION: &str = "/api/v1/jobs/moderation";
const IMAGES: &str = "/api/v1/jobs/image-pipeline";
const ORDER: &str = "/api/v1/jobs/order";
const TASK_WAIT: Duration = Duration::from_secs(10);
const ACCEPTED: &str = "cancellation_request_accepted";

async fn server() -> TestServer {
    TestServer::start_with(manual_watcher_config()).await
}

async fn cancel_as(server: &TestServer, token: &str, job_id: &str) -> Answer {
    server.send(Method::POST, &format!("/api/v1/jobs/{job_id}/cancel"), Auth::Client(token), None).await
}

async fn cancel(server: &TestServer, job_id: &str) -> Answer {
    cancel_as(server, CLIENT_TOKEN, job_id).await
}

/// Cancels `job_id` and asserts the request was accepted.
async fn cancel_ok(server: &TestServer, job_id: &str) {
    let answer = cancel(server, job_id).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), json!({"status": ACCEPTED}), "{answer:?}");
}

/// `GET /_worker/workers/{worker}/jobs/{job}/tasks/{task}` as `auth`.
async fn task_flag(server: &TestServer, auth: Auth<'_>, worker_id: &str, job_id: &str, task_id: &str) -> Answer {
    let path = format!("/_worker/workers/{worker_id}/jobs/{job_id}/tasks/{task_id}");
    server.send(Method::GET, &path, auth, None).await
}

/// Whether `worker` has been asked to stop `task` (which it holds).
async fn cancellation_requested(server: &TestServer, worker: &TestWorker<'_>, task: &Value) -> bool {
    let (job_id, task_id) = (task["job_id"].as_str().unwrap(), task["task_id"].as_str().unwrap());
    let answer = task_flag(server, Auth::Worker(WORKER_TOKEN), &worker.worker_id, job_id, task_id).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let body = answer.json();
    assert_eq!((body["job_id"].as_str(), body["task_id"].as_str()), (Some(job_id), Some(task_id)), "{body:#}");
    body["cancellation_requested"].as_bool().unwrap_or_else(|| panic!("no flag: {body:#}"))
}

/// `in_flight` of `worker_id` as `GET /api/v1/workers` reports it.
async fn in_flight(server: &TestServer, worker_id: &str) -> u64 {
    let answer = server.send(Method::GET, "/api/v1/workers", Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let workers = answer.json();
    let worker = workers
        .as_array()
        .and_then(|all| all.iter().find(|w| w["worker_id"] == worker_id))
        .unwrap_or_else(|| panic!("worker {worker_id} is not listed: {workers:#}"));
    worker["in_flight"].as_u64().unwrap_or_else(|| panic!("no in_flight: {worker:#}"))
}

/// Waits until the executor's queue is empty, so that any follow-up a change
/// queued (a parent woken by its child) has run.
async fn settle(server: &TestServer) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = server.send(Method::GET, "/api/v1/dashboard", Auth::Client(CLIENT_TOKEN), None).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        if answer.json()["jobs"]["queued"] == 0 {
            // The last job taken off the queue may still be running its step.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the job queue did not drain: {answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_queued_task_is_taken_back_and_the_job_cancelled_at_once() {
    let server = server().await;
    let worker = server.worker("w-idle");
    worker.register(&["greet"]).await;
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    let job = server.wait_for_status(&job_id, "waiting_for_worker").await;
    assert_eq!(job["current_task"]["worker_id"], "w-idle", "{job:#}");
    assert_eq!(in_flight(&server, "w-idle").await, 1);

    cancel_ok(&server, &job_id).await;
    // At once: no waiting for anything.
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    assert_eq!(in_flight(&server, "w-idle").await, 0);
    worker.assert_no_task().await;
    // Ended: a second cancel is a conflict.
    cancel(&server, &job_id).await.assert_error(409);

    // A task no live worker takes (parked) is cancelled at once as well, and a
    // worker for it that arrives later is not handed it.
    let parked = server.create_job(PIPELINE, json!({"url": "https://example.com"})).await;
    let job = server.wait_for_status(&parked, "waiting_for_worker").await;
    assert!(job["current_task"]["worker_id"].is_null(), "{job:#}");
    cancel_ok(&server, &parked).await;
    assert_eq!(server.job(&parked).await["status"], "cancelled");
    let fetcher = server.worker("w-fetch");
    fetcher.register(&["fetch"]).await;
    fetcher.assert_no_task().await;
    assert_eq!(in_flight(&server, "w-fetch").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_taken_task_is_flagged_and_the_worker_answers_cancelled() {
    let server = server().await;
    let worker = server.worker("w-holder");
    worker.register(&["greet"]).await;
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    let task = worker.next_task(TASK_WAIT).await;
    let task_id = task["task_id"].as_str().unwrap();
    assert!(!cancellation_requested(&server, &worker, &task).await);

    // Only the holder may ask, with a worker token, about a task that exists.
    let token = Auth::Worker(WORKER_TOKEN);
    task_flag(&server, token, "w-other", &job_id, task_id).await.assert_error(403);
    for auth in [Auth::None, Auth::Worker("wrong"), Auth::Client(CLIENT_TOKEN)] {
        task_flag(&server, auth, "w-holder", &job_id, task_id).await.assert_error(401);
    }
    let unknown = "00000000-0000-4000-8000-000000000000";
    task_flag(&server, token, "w-holder", unknown, task_id).await.assert_error(404);
    task_flag(&server, token, "w-holder", &job_id, unknown).await.assert_error(404);
    task_flag(&server, token, "w-holder", "not-a-job", "not-a-task").await.assert_error(404);

    cancel_ok(&server, &job_id).await;
    // The worker has the task: the job waits for its answer.
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "waiting_for_worker", "{job:#}");
    assert_eq!(job["current_task"]["cancel_requested"], true, "{job:#}");
    assert!(cancellation_requested(&server, &worker, &task).await);
    task_flag(&server, token, "w-other", &job_id, task_id).await.assert_error(403);
    assert_eq!(in_flight(&server, "w-holder").await, 1);

    let (status, body) = worker.post_result(&task, json!({"status": "cancelled"})).await;
    assert_eq!((status, body), (200, json!({"status": "result_accepted_cancelled"})));
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    assert_eq!(in_flight(&server, "w-holder").await, 0);
    worker.assert_no_task().await;
    cancel(&server, &job_id).await.assert_error(409);
    server.stop().await;
}

#[tokio::test]
async fn a_flagged_task_that_fails_transiently_is_cancelled_not_retried() {
    let server = server().await;
    let worker = server.worker("w-flaky");
    worker.register(&["greet"]).await;
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    let task = worker.next_task(TASK_WAIT).await;
    cancel_ok(&server, &job_id).await;

    let error = json!({"code": "TRANSIENT_ERROR", "message": "interrupted"});
    let (status, body) = worker.post_result(&task, json!({"status": "failure", "error": error})).await;
    assert_eq!((status, body), (200, json!({"status": "result_accepted_failure"})));
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    assert_eq!(job["current_task"]["retries"], 0, "{job:#}");
    assert_eq!(in_flight(&server, "w-flaky").await, 0);
    worker.assert_no_task().await;
    server.stop().await;
}

#[tokio::test]
async fn a_flagged_task_that_times_out_is_cancelled_not_retried() {
    let server = server().await;
    let worker = server.worker("w-gone");
    worker.register(&["greet"]).await;
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    worker.next_task(TASK_WAIT).await;
    cancel_ok(&server, &job_id).await;
    let job = server.job(&job_id).await;
    let dispatched: DateTime<Utc> = job["current_task"]["dispatched_at"].as_str().unwrap().parse().unwrap();

    // The worker never answers: WORKER_TIMEOUT_SECONDS later the watcher gives up.
    let past = dispatched + TimeDelta::from_std(server.orchestrator.config.worker_timeout).unwrap();
    assert_eq!(server.orchestrator.time_out_overdue(past).await.unwrap(), 1);
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    assert_eq!(in_flight(&server, "w-gone").await, 0);
    worker.assert_no_task().await;
    server.stop().await;
}

#[tokio::test]
async fn a_job_waiting_for_a_person_is_cancelled_and_the_decision_then_refused() {
    let server = server().await;
    let publisher = server.worker("w-publish");
    publisher.register(&["publish"]).await;
    let job_id = server.create_job(MODERATION, json!({"title": "Hello", "body": "…"})).await;
    server.wait_for_status(&job_id, "waiting_for_human").await;

    cancel_ok(&server, &job_id).await;
    let job = server.job(&job_id).await;
    assert_eq!((job["status"].as_str(), job["current_state"].as_str()), (Some("cancelled"), Some("review")), "{job:#}");

    let approval = format!("/_public/webhooks/approval/{job_id}");
    let answer = server.send(Method::POST, &approval, Auth::None, Some(r#"{"decision": "approved"}"#)).await;
    answer.assert_error(409);
    let job = server.job(&job_id).await;
    assert_eq!((job["status"].as_str(), job["current_state"].as_str()), (Some("cancelled"), Some("review")), "{job:#}");
    publisher.assert_no_task().await;
    cancel(&server, &job_id).await.assert_error(409);
    server.stop().await;
}

#[tokio::test]
async fn a_parallel_job_is_cancelled_at_once_with_its_queued_branches_taken_back() {
    let server = server().await;
    let worker = server.worker("w-resize");
    worker.register(&["resize"]).await;
    let body = json!({"image": "s3://b/cat.png", "sizes": ["small", "medium", "large"]});
    let job_id = server.create_job(IMAGES, body).await;
    server.wait_for_status(&job_id, "waiting_for_parallel_tasks").await;
    assert_eq!(in_flight(&server, "w-resize").await, 3);

    // Two branches taken, one of them answered; the third still queued.
    let answered = worker.next_task(TASK_WAIT).await;
    let held = worker.next_task(TASK_WAIT).await;
    let (status, body) = worker.post_result(&answered, json!({"status": "success", "data": {"url": "u1"}})).await;
    assert_eq!((status, body), (200, json!({"status": "parallel_branch_result_accepted"})));
    assert_eq!(in_flight(&server, "w-resize").await, 2);
    assert!(!cancellation_requested(&server, &worker, &held).await);

    cancel_ok(&server, &job_id).await;
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    assert_eq!(in_flight(&server, "w-resize").await, 0);
    assert!(cancellation_requested(&server, &worker, &held).await);
    worker.assert_no_task().await;

    let (status, body) = worker.post_result(&held, json!({"status": "success", "data": {"url": "u2"}})).await;
    assert_eq!((status, body), (200, json!({"status": "result_ignored"})));
    settle(&server).await;
    let after = server.job(&job_id).await;
    assert_eq!(after["status"], "cancelled", "{after:#}");
    assert_eq!(after["current_state"], "resize", "the aggregator never ran: {after:#}");
    assert!(after["aggregation_results"].is_null(), "{after:#}");
    assert_eq!(after["version"], job["version"], "a late result changed the job: {after:#}");
    assert_eq!(in_flight(&server, "w-resize").await, 0);
    server.stop().await;
}

/// Starts an `order` and returns its id and its `payment` child's, once the
/// child waits for a `charge` worker.
async fn order_with_child(server: &TestServer) -> (String, String) {
    let order = server.create_job(ORDER, json!({"amount": 42.5, "address": "221B Baker St"})).await;
    let parent = server.wait_for_status(&order, "waiting_for_sub_job").await;
    let child = parent["child_job_ids"][0].as_str().unwrap_or_else(|| panic!("no child: {parent:#}")).to_owned();
    let job = server.wait_for_status(&child, "waiting_for_worker").await;
    assert_eq!((job["blueprint_name"].as_str(), job["parent_job_id"].as_str()), (Some("payment"), Some(&*order)));
    (order, child)
}

#[tokio::test]
async fn cancelling_a_parent_cancels_its_child() {
    let server = server().await;
    let worker = server.worker("w-charge");
    worker.register(&["charge"]).await;

    // The child's task still queued: both end at once.
    let (order, child) = order_with_child(&server).await;
    cancel_ok(&server, &order).await;
    let (parent_job, child_job) = (server.job(&order).await, server.job(&child).await);
    assert_eq!(parent_job["status"], "cancelled", "{parent_job:#}");
    assert_eq!(child_job["status"], "cancelled", "{child_job:#}");
    assert_eq!(in_flight(&server, "w-charge").await, 0);
    worker.assert_no_task().await;
    // The child's end wakes the parent, which stays as it was.
    settle(&server).await;
    let parent_job = server.job(&order).await;
    assert_eq!((parent_job["status"].as_str(), parent_job["current_state"].as_str()), (Some("cancelled"), Some("pay")));

    // The child's task taken: the parent ends at once, the worker is asked to stop.
    let (order, child) = order_with_child(&server).await;
    let task = worker.next_task(TASK_WAIT).await;
    assert_eq!(task["job_id"], child.as_str());
    cancel_ok(&server, &order).await;
    assert_eq!(server.job(&order).await["status"], "cancelled");
    assert_eq!(server.job(&child).await["status"], "waiting_for_worker");
    assert!(cancellation_requested(&server, &worker, &task).await);
    let (status, body) = worker.post_result(&task, json!({"status": "cancelled"})).await;
    assert_eq!((status, body), (200, json!({"status": "result_accepted_cancelled"})));
    assert_eq!(server.job(&child).await["status"], "cancelled");
    settle(&server).await;
    let parent_job = server.job(&order).await;
    assert_eq!((parent_job["status"].as_str(), parent_job["current_state"].as_str()), (Some("cancelled"), Some("pay")));
    assert_eq!(in_flight(&server, "w-charge").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn ended_and_unknown_jobs_are_refused() {
    let server = server().await;
    let worker = server.worker("w-done");
    worker.register(&["greet"]).await;
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    let task = worker.next_task(TASK_WAIT).await;
    worker.post_result(&task, json!({"status": "success"})).await;
    server.wait_for_status(&job_id, "finished").await;

    let message = cancel(&server, &job_id).await.assert_error(409);
    assert!(message.contains("finished"), "{message}");
    assert_eq!(server.job(&job_id).await["status"], "finished");

    cancel(&server, "00000000-0000-4000-8000-000000000000").await.assert_error(404);
    cancel(&server, "not-a-uuid").await.assert_error(404);
    for auth in [Auth::None, Auth::Client("wrong"), Auth::Worker(WORKER_TOKEN)] {
        let answer = server.send(Method::POST, &format!("/api/v1/jobs/{job_id}/cancel"), auth, None).await;
        answer.assert_error(401);
    }
    server.stop().await;
}

#[tokio::test]
async fn pending_jobs_are_refused() {
    let (config, _dir) = one_busy_slot(manual_watcher_config());
    let server = TestServer::start_with(config).await;
    let spinning = server.create_job("/api/v1/jobs/misbehave", json!({"mode": "loop"})).await;
    settle(&server).await;
    // The only slot runs the spinning handler: this job waits in the queue.
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    assert_eq!(server.job(&job_id).await["status"], "pending");
    let message = cancel(&server, &job_id).await.assert_error(409);
    assert!(message.contains("pending"), "{message}");
    // So is the one whose handler is running.
    assert_eq!(server.job(&spinning).await["status"], "pending");
    cancel(&server, &spinning).await.assert_error(409);
    assert_eq!(server.job(&job_id).await["status"], "pending", "the slot was freed too early for this test");

    // Once its handler has run, the same job can be cancelled.
    server.wait_for_status(&spinning, "quarantined").await;
    server.wait_for_status(&job_id, "waiting_for_worker").await;
    cancel_ok(&server, &job_id).await;
    assert_eq!(server.job(&job_id).await["status"], "cancelled");
    server.stop().await;
}

const ACME: &str = "acme-token-5d01c2";
const GLOBEX: &str = "globex-token-93ae7f";

#[tokio::test]
async fn another_clients_job_cannot_be_cancelled() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let clients = dir.path().join("clients.toml");
    let text = format!("[acme]\ntoken = \"{ACME}\"\n\n[globex]\ntoken = \"{GLOBEX}\"\n");
    std::fs::write(&clients, text).expect("write clients.toml");
    let server = TestServer::start_with(Config { clients_config_path: Some(clients), ..manual_watcher_config() }).await;

    let answer = server.send(Method::POST, HELLO, Auth::Client(ACME), Some(r#"{"name": "Ada"}"#)).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let job_id = answer.json()["job_id"].as_str().unwrap().to_owned();
    let get = server.send(Method::GET, &format!("/api/v1/jobs/{job_id}"), Auth::Client(ACME), None).await;
    assert_eq!(get.status, 200, "{get:?}");

    // For globex the job does not exist, exactly like an unknown id.
    let message = cancel_as(&server, GLOBEX, &job_id).await.assert_error(404);
    let unknown = "00000000-0000-4000-8000-000000000000";
    let unknown_message = cancel_as(&server, GLOBEX, unknown).await.assert_error(404);
    assert_eq!(message.replace(job_id.as_str(), "ID"), unknown_message.replace(unknown, "ID"));
    // With a clients file the global client token opens nothing.
    cancel_as(&server, CLIENT_TOKEN, &job_id).await.assert_error(401);

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let job = loop {
        let job = server.send(Method::GET, &format!("/api/v1/jobs/{job_id}"), Auth::Client(ACME), None).await.json();
        if job["status"] != "pending" {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "job never dispatched: {job:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(job["status"], "waiting_for_worker", "globex's attempts left acme's job alone: {job:#}");
    let answer = cancel_as(&server, ACME, &job_id).await;
    assert_eq!((answer.status, answer.json()), (200, json!({"status": ACCEPTED})), "{answer:?}");
    server.stop().await;
}
