//! Views over many jobs, through real HTTP: a client's own jobs
//! (`GET /api/v1/jobs`, newest first, paged), the ids of quarantined jobs
//! (`GET /_public/jobs/quarantined`, no token, most recent first) and the
//! dashboard's counts (`GET /api/v1/dashboard`).

use std::time::{Duration, Instant};

use avtomatika_tests::config::Config;
use avtomatika_tests::{Answer, Auth, CLIENT_TOKEN, TestServer, TestWorker, WORKER_TOKEN, one_busy_slot, test_config};
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

const HELLO: &str = "/api/v1/jobs/hello";
const MODERATION: &str = "/api/v1/jobs/moderation";
const QUARANTINED: &str = "/_public/jobs/quarantined";
const DASHBOARD: &str = "/api/v1/dashboard";
const TASK_WAIT: Duration = Duration::from_secs(10);

const ACME: &str = "acme-token-41b7e0";
const GLOBEX: &str = "globex-token-c8d352";

fn config() -> Config {
    Config { worker_poll_timeout: Duration::from_millis(500), ..test_config() }
}

/// A server whose clients are `acme` and `globex`; keep the directory alive.
async fn two_clients() -> (TestServer, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let clients = dir.path().join("clients.toml");
    let text = format!("[acme]\ntoken = \"{ACME}\"\n\n[globex]\ntoken = \"{GLOBEX}\"\n");
    std::fs::write(&clients, text).expect("write clients.toml");
    let server = TestServer::start_with(Config { clients_config_path: Some(clients), ..config() }).await;
    (server, dir)
}

async fn get(server: &TestServer, path: &str, auth: Auth<'_>) -> Answer {
    server.send(Method::GET, path, auth, None).await
}

/// `GET path` as `auth`, which must answer 200 with a JSON array.
async fn list(server: &TestServer, path: &str, auth: Auth<'_>) -> Vec<Value> {
    let answer = get(server, path, auth).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    match answer.json() {
        Value::Array(items) => items,
        other => panic!("GET {path} is not a list: {other:#}"),
    }
}

/// The `id`s of listed jobs, in order.
fn ids(jobs: &[Value]) -> Vec<String> {
    jobs.iter().map(|job| job["id"].as_str().unwrap_or_else(|| panic!("no id: {job:#}")).to_owned()).collect()
}

/// Creates a hello job as `token`'s client; returns its id.
async fn create_as(server: &TestServer, token: &str, name: &str) -> String {
    let body = json!({"name": name}).to_string();
    let answer = server.send(Method::POST, HELLO, Auth::Client(token), Some(&body)).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    answer.json()["job_id"].as_str().expect("job_id").to_owned()
}

#[tokio::test]
async fn clients_list_their_own_jobs_newest_first_in_pages() {
    let (server, _dir) = two_clients().await;
    // Interleaved, so that neither client's jobs are one contiguous run.
    let mut acme = Vec::new();
    let mut globex = Vec::new();
    for i in 0..5 {
        acme.push(create_as(&server, ACME, &format!("a{i}")).await);
        if i % 2 == 0 {
            globex.push(create_as(&server, GLOBEX, &format!("g{i}")).await);
        }
    }
    acme.reverse();
    globex.reverse();

    let jobs = list(&server, "/api/v1/jobs", Auth::Client(ACME)).await;
    assert_eq!(ids(&jobs), acme, "acme's jobs, newest first");
    for (job, i) in jobs.iter().zip((0..5).rev()) {
        assert_eq!(job["client"], "acme", "{job:#}");
        assert_eq!(job["blueprint_name"], "hello", "{job:#}");
        assert_eq!(job["initial_data"], json!({"name": format!("a{i}")}), "{job:#}");
    }
    assert_eq!(ids(&list(&server, "/api/v1/jobs", Auth::Client(GLOBEX)).await), globex);

    let page = |limit: usize, offset: usize| format!("/api/v1/jobs?limit={limit}&offset={offset}");
    assert_eq!(ids(&list(&server, &page(2, 0), Auth::Client(ACME)).await), acme[0..2]);
    assert_eq!(ids(&list(&server, &page(2, 2), Auth::Client(ACME)).await), acme[2..4]);
    assert_eq!(ids(&list(&server, &page(2, 4), Auth::Client(ACME)).await), acme[4..5]);
    assert!(list(&server, &page(2, 5), Auth::Client(ACME)).await.is_empty());
    assert!(list(&server, &page(1000, 999), Auth::Client(ACME)).await.is_empty());
    assert_eq!(ids(&list(&server, "/api/v1/jobs?offset=3", Auth::Client(ACME)).await), acme[3..5]);
    assert_eq!(ids(&list(&server, "/api/v1/jobs?limit=1", Auth::Client(ACME)).await), acme[0..1]);
    assert_eq!(ids(&list(&server, &page(1, 1), Auth::Client(GLOBEX)).await), globex[1..2]);

    // A job created now is first, and moves the pages along.
    let newest = create_as(&server, ACME, "a5").await;
    assert_eq!(ids(&list(&server, &page(2, 0), Auth::Client(ACME)).await), [newest, acme[0].clone()]);
    assert_eq!(ids(&list(&server, &page(2, 2), Auth::Client(ACME)).await), acme[1..3]);

    // With a clients file the global token lists nothing: it opens nothing.
    get(&server, "/api/v1/jobs", Auth::Client(CLIENT_TOKEN)).await.assert_error(401);
    server.stop().await;
}

#[tokio::test]
async fn bad_paging_is_refused() {
    let server = TestServer::start_with(config()).await;
    server.create_job(HELLO, json!({"name": "Ada"})).await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=5000",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "limit=",
        "offset=-1",
        "offset=abc",
        "limit=10&offset=x",
    ] {
        let name = if query.contains("offset") { "offset" } else { "limit" };
        for path in ["/api/v1/jobs", QUARANTINED] {
            let auth = if path == QUARANTINED { Auth::None } else { Auth::Client(CLIENT_TOKEN) };
            let message = get(&server, &format!("{path}?{query}"), auth).await.assert_error(400);
            assert!(message.contains(name), "{path}?{query}: {message}");
        }
    }
    assert_eq!(list(&server, "/api/v1/jobs?limit=1000&offset=0", Auth::Client(CLIENT_TOKEN)).await.len(), 1);
    assert_eq!(list(&server, "/api/v1/jobs?limit=1", Auth::Client(CLIENT_TOKEN)).await.len(), 1);
    for auth in [Auth::None, Auth::Client("wrong"), Auth::Worker(WORKER_TOKEN)] {
        get(&server, "/api/v1/jobs", auth).await.assert_error(401);
    }
    server.stop().await;
}

/// Takes `worker`'s next task, which must belong to `job_id`, and fails it
/// with `code`.
async fn fail_task(worker: &TestWorker<'_>, job_id: &str, code: &str) {
    let task = worker.next_task(TASK_WAIT).await;
    assert_eq!(task["job_id"], job_id, "{task:#}");
    let error = json!({"code": code, "message": format!("{code} for the test")});
    let (status, _) = worker.post_result(&task, json!({"status": "failure", "error": error})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn quarantined_jobs_are_listed_by_id_most_recently_quarantined_first_without_a_token() {
    let server = TestServer::start_with(config()).await;
    let worker = server.worker("w-list");
    worker.register(&["greet"]).await;
    assert!(list(&server, QUARANTINED, Auth::None).await.is_empty());

    // Created first, quarantined last.
    let first = server.create_job(HELLO, json!({"name": "secret-first"})).await;
    fail_task(&worker, &first, "TRANSIENT_ERROR").await; // retried: not quarantined yet
    let second = server.create_job(HELLO, json!({"name": "secret-second"})).await;
    // The retry of `first` is queued before `second`'s task: same priority, earlier.
    fail_task(&worker, &first, "INVALID_INPUT_ERROR").await;
    server.wait_for_status(&first, "failed").await;
    fail_task(&worker, &second, "PERMANENT_ERROR").await;
    server.wait_for_status(&second, "quarantined").await;
    assert_eq!(list(&server, QUARANTINED, Auth::None).await, [json!(second)]);

    let third = server.create_job(HELLO, json!({"name": "secret-third"})).await;
    let fourth = server.create_job(HELLO, json!({"name": "secret-fourth"})).await;
    let task_third = worker.next_task(TASK_WAIT).await;
    let task_fourth = worker.next_task(TASK_WAIT).await;
    assert_eq!((task_third["job_id"].as_str(), task_fourth["job_id"].as_str()), (Some(&*third), Some(&*fourth)));
    // Quarantined in the opposite order of their creation.
    let error = json!({"code": "PERMANENT_ERROR", "message": "broken"});
    for task in [&task_fourth, &task_third] {
        let (status, _) = worker.post_result(task, json!({"status": "failure", "error": error})).await;
        assert_eq!(status, 200);
    }
    server.wait_for_status(&third, "quarantined").await;

    let answer = get(&server, QUARANTINED, Auth::None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), json!([third, fourth, second]));
    // Ids only: nothing of the jobs' data is shown without a token.
    assert!(!answer.text.contains("secret"), "{answer:?}");
    let page = |query: &str| format!("{QUARANTINED}?{query}");
    assert_eq!(list(&server, &page("limit=2"), Auth::None).await, [json!(third), json!(fourth)]);
    assert_eq!(list(&server, &page("limit=2&offset=2"), Auth::None).await, [json!(second)]);
    assert!(list(&server, &page("offset=3"), Auth::None).await.is_empty());
    // A token changes nothing.
    assert_eq!(list(&server, QUARANTINED, Auth::Client(CLIENT_TOKEN)).await.len(), 3);
    server.stop().await;
}

/// `GET /api/v1/dashboard` with the client token.
async fn dashboard(server: &TestServer) -> Value {
    let answer = get(server, DASHBOARD, Auth::Client(CLIENT_TOKEN)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()
}

/// The dashboard's `jobs` counts expected: every status 0 but those in `counts`.
fn job_counts(queued: u64, counts: &[(&str, u64)]) -> Value {
    let mut jobs = json!({"queued": queued});
    for status in [
        "pending",
        "running",
        "waiting_for_worker",
        "waiting_for_human",
        "waiting_for_parallel_tasks",
        "waiting_for_sub_job",
        "finished",
        "failed",
        "cancelled",
        "error",
        "quarantined",
    ] {
        jobs[status] = json!(0);
    }
    for (status, n) in counts {
        assert!(jobs.get(status).is_some(), "not a status: {status}");
        jobs[*status] = json!(n);
    }
    jobs
}

/// Polls the dashboard until its `jobs` equal `expected` (jobs move on in the
/// background); fails with the last counts.
async fn wait_for_counts(server: &TestServer, expected: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let board = dashboard(server).await;
        if board["jobs"] == *expected {
            return board;
        }
        assert!(Instant::now() < deadline, "dashboard {board:#} never showed {expected:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_dashboard_counts_live_workers_and_jobs_by_status() {
    let server = TestServer::start_with(config()).await;
    let board = dashboard(&server).await;
    assert_eq!(board, json!({"workers": {"total": 0}, "jobs": job_counts(0, &[])}));

    let worker = server.worker("w-board");
    worker.register(&["greet"]).await;
    server.worker("w-spare").register(&["fetch"]).await;

    // One finished, one quarantined, one failed, two waiting for the worker
    // (one taken, one queued), one waiting for a person.
    let finished = server.create_job(HELLO, json!({"name": "f"})).await;
    let task = worker.next_task(TASK_WAIT).await;
    worker.post_result(&task, json!({"status": "success"})).await;
    server.wait_for_status(&finished, "finished").await;
    let quarantined = server.create_job(HELLO, json!({"name": "q"})).await;
    fail_task(&worker, &quarantined, "PERMANENT_ERROR").await;
    let failed = server.create_job(HELLO, json!({"name": "x"})).await;
    fail_task(&worker, &failed, "INVALID_INPUT_ERROR").await;
    let taken = server.create_job(HELLO, json!({"name": "t"})).await;
    let taken_task = worker.next_task(TASK_WAIT).await;
    server.create_job(HELLO, json!({"name": "w"})).await;
    server.create_job(MODERATION, json!({"title": "T", "body": "B"})).await;

    let expected = job_counts(
        0,
        &[("finished", 1), ("quarantined", 1), ("failed", 1), ("waiting_for_worker", 2), ("waiting_for_human", 1)],
    );
    let board = wait_for_counts(&server, &expected).await;
    assert_eq!(board["workers"], json!({"total": 2}), "{board:#}");
    assert_eq!(server.job(&taken).await["status"], "waiting_for_worker");

    // Counts follow the jobs: cancelling one moves it between statuses.
    let cancel = format!("/api/v1/jobs/{taken}/cancel");
    assert_eq!(server.send(Method::POST, &cancel, Auth::Client(CLIENT_TOKEN), None).await.status, 200);
    let (status, _) = worker.post_result(&taken_task, json!({"status": "cancelled"})).await;
    assert_eq!(status, 200);
    let expected = job_counts(
        0,
        &[
            ("finished", 1),
            ("quarantined", 1),
            ("failed", 1),
            ("cancelled", 1),
            ("waiting_for_worker", 1),
            ("waiting_for_human", 1),
        ],
    );
    wait_for_counts(&server, &expected).await;

    for auth in [Auth::None, Auth::Client("wrong"), Auth::Worker(WORKER_TOKEN)] {
        get(&server, DASHBOARD, auth).await.assert_error(401);
    }
    server.stop().await;
}

#[tokio::test]
async fn workers_that_stop_sending_heartbeats_leave_the_dashboard() {
    // Workers live for twice the health-check interval without a heartbeat.
    let config = Config { worker_health_check_interval: Duration::from_secs(1), ..config() };
    let server = TestServer::start_with(config).await;
    let alive = server.worker("w-alive");
    alive.register(&["greet"]).await;
    server.worker("w-silent").register(&["greet"]).await;
    assert_eq!(dashboard(&server).await["workers"], json!({"total": 2}));

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert_eq!(alive.heartbeat(None).await.status, 200);
        let board = dashboard(&server).await;
        if board["workers"]["total"] == 1 {
            break;
        }
        assert_eq!(board["workers"]["total"], 2, "{board:#}");
        assert!(Instant::now() < deadline, "w-silent never expired: {board:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Only the silent one went.
    let answer = get(&server, "/api/v1/workers", Auth::Client(CLIENT_TOKEN)).await;
    let workers = answer.json();
    let listed: Vec<&str> = workers.as_array().unwrap().iter().filter_map(|w| w["worker_id"].as_str()).collect();
    assert_eq!(listed, ["w-alive"]);
    server.stop().await;
}

#[tokio::test]
async fn the_dashboard_counts_jobs_still_queued_for_the_executor() {
    let (config, _dir) = one_busy_slot(config());
    let server = TestServer::start_with(config).await;
    // A spinning handler holds the only executor slot until its time limit...
    let spinning = server.create_job("/api/v1/jobs/misbehave", json!({"mode": "loop"})).await;
    wait_for_counts(&server, &job_counts(0, &[("pending", 1)])).await;
    // ...so these two wait in the queue, pending.
    let first = server.create_job(HELLO, json!({"name": "a"})).await;
    let second = server.create_job(HELLO, json!({"name": "b"})).await;
    let board = dashboard(&server).await;
    assert_eq!(board["jobs"], job_counts(2, &[("pending", 3)]), "{board:#}");
    assert_eq!(server.job(&spinning).await["status"], "pending", "the slot was freed too early for this test");

    // Then the slot frees, the handlers run, and the queue drains.
    server.wait_for_status(&spinning, "quarantined").await;
    server.wait_for_status(&first, "waiting_for_worker").await;
    server.wait_for_status(&second, "waiting_for_worker").await;
    wait_for_counts(&server, &job_counts(0, &[("quarantined", 1), ("waiting_for_worker", 2)])).await;
    server.stop().await;
}
