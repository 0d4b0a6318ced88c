//! Routing tasks to workers over HTTP: a worker gets no more tasks than the
//! `max_concurrent_tasks` it declared (in either SDK generation's layout),
//! a worker reporting `busy` gets none, and each worker's reputation follows
//! its results and is shown in `GET /api/v1/workers`.

use std::time::Duration;

use avtomatika_tests::config::Config;
use avtomatika_tests::{Auth, CLIENT_TOKEN, TestServer, WORKER_TOKEN, test_config};
use reqwest::Method;
use serde_json::{Value, json};

const HELLO: &str = "/api/v1/jobs/hello";
const TASK_WAIT: Duration = Duration::from_secs(10);

async fn server() -> TestServer {
    TestServer::start_with(Config { worker_poll_timeout: Duration::from_millis(300), ..test_config() }).await
}

async fn register(server: &TestServer, body: Value) {
    let answer = server
        .send(Method::POST, "/_worker/workers/register", Auth::Worker(WORKER_TOKEN), Some(&body.to_string()))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// The worker as `GET /api/v1/workers` lists it.
async fn listed(server: &TestServer, worker_id: &str) -> Value {
    let answer = server.send(Method::GET, "/api/v1/workers", Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let workers = answer.json();
    workers
        .as_array()
        .and_then(|all| all.iter().find(|w| w["worker_id"] == worker_id).cloned())
        .unwrap_or_else(|| panic!("worker {worker_id} is not listed: {workers:#}"))
}

/// Polls until no task comes; returns those that did.
async fn drain(worker: &avtomatika_tests::TestWorker<'_>) -> Vec<Value> {
    let mut tasks = Vec::new();
    while let Some(task) = worker.poll().await {
        tasks.push(task);
    }
    tasks
}

#[tokio::test]
async fn a_worker_never_holds_more_tasks_than_it_declared_in_either_layout() {
    let server = server().await;
    // The rxon-based SDKs (1.0b5+) declare it under `resources`.
    register(
        &server,
        json!({"worker_id": "rxon", "worker_type": "cpu", "supported_tasks": ["greet"],
               "resources": {"max_concurrent_tasks": 2, "cpu_cores": 4, "gpu_info": null},
               "capabilities": {"hostname": "h", "cost_per_skill": {"greet": 0.5}}}),
    )
    .await;
    let worker = server.worker("rxon");
    let jobs: Vec<String> =
        futures::future::join_all((0..5).map(|i| server.create_job(HELLO, json!({"name": i})))).await;
    let first = drain(&worker).await;
    assert_eq!(first.len(), 2, "two in flight at most: {first:#?}");
    assert_eq!(listed(&server, "rxon").await["max_concurrent_tasks"], 2);

    // Answering one frees a slot; the SDK's heartbeat right after says so.
    let (status, _) = worker.post_result(&first[0], json!({"data": {}})).await;
    assert_eq!(status, 200);
    assert_eq!(server.worker("rxon").heartbeat(Some(json!({"status": "idle", "load": 1}))).await.status, 200);
    let next = drain(&worker).await;
    assert_eq!(next.len(), 1, "one slot was free: {next:#?}");

    // Everything finishes, never more than two at a time.
    let mut held = vec![first[1].clone(), next[0].clone()];
    while let Some(task) = held.pop() {
        let (status, _) = worker.post_result(&task, json!({"data": {}})).await;
        assert_eq!(status, 200);
        server.worker("rxon").heartbeat(Some(json!({"status": "idle"}))).await;
        held.extend(drain(&worker).await);
        assert!(held.len() <= 2, "{held:#?}");
    }
    for job_id in &jobs {
        server.wait_for_status(job_id, "finished").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_busy_worker_gets_nothing_until_it_reports_idle() {
    let server = server().await;
    // 1.0b3 declares it at the top level.
    register(
        &server,
        json!({"worker_id": "b3", "supported_tasks": ["greet"], "max_concurrent_tasks": 1,
                             "cost_per_skill": {"greet": 1.0}, "resources": {"cpu_cores": 2, "gpu_info": null}}),
    )
    .await;
    assert_eq!(
        server
            .worker("b3")
            .heartbeat(Some(json!({"status": "busy", "load": 1, "supported_tasks": ["greet"]})))
            .await
            .status,
        200
    );
    let worker = server.worker("b3");
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    assert!(worker.poll().await.is_none(), "a busy worker got a task");
    assert_eq!(server.job(&job_id).await["status"], "waiting_for_worker");

    assert_eq!(server.worker("b3").heartbeat(Some(json!({"status": "idle", "load": 0}))).await.status, 200);
    let task = worker.next_task(TASK_WAIT).await;
    assert_eq!(task["job_id"], job_id.as_str());
    worker.post_result(&task, json!({"data": {}})).await;
    server.wait_for_status(&job_id, "finished").await;
    server.stop().await;
}

#[tokio::test]
async fn reputation_follows_results_and_is_listed_with_resources() {
    let server = server().await;
    register(
        &server,
        json!({"worker_id": "flaky", "supported_tasks": ["greet"],
               "resources": {"max_concurrent_tasks": 4, "cpu_cores": 8, "gpu_info": {"model": "RTX 4090", "vram_gb": 24}},
               "installed_models": [{"name": "sdxl", "version": "1"}]}),
    )
    .await;
    let worker = server.worker("flaky");
    let listed_new = listed(&server, "flaky").await;
    assert_eq!(listed_new["reputation"], 1.0, "{listed_new:#}");
    assert_eq!(listed_new["resources"]["gpu_info"]["vram_gb"], 24, "{listed_new:#}");

    let answers = [
        json!({"data": {}}),
        json!({"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": "broken"}}),
        // Not the worker's fault: neither counts.
        json!({"status": "failure", "error": {"code": "INVALID_INPUT_ERROR", "message": "bad input"}}),
        json!({"status": "cancelled"}),
        json!({"data": {}}),
        json!({"status": "failure", "error": {"code": "SECURITY_ERROR", "message": "rxon code"}}),
    ];
    for answer in answers {
        let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
        let task = worker.next_task(TASK_WAIT).await;
        assert_eq!(task["job_id"], job_id.as_str());
        let (status, _) = worker.post_result(&task, answer).await;
        assert_eq!(status, 200);
    }
    // Two successes, two failures that count.
    assert_eq!(listed(&server, "flaky").await["reputation"], 0.5);
    server.stop().await;
}
