//! The watcher: a task not answered by its deadline takes the transient
//! failure path — dispatched again, then the job quarantined — and a late
//! result for a timed-out task changes nothing.

use std::time::Duration;

use avtomatika_tests::{TestServer, test_config};
use serde_json::json;

#[tokio::test]
async fn unanswered_tasks_are_retried_then_the_job_is_quarantined() {
    let mut config = test_config();
    config.worker_timeout = Duration::from_millis(300);
    config.watcher_interval = Duration::from_millis(100);
    config.job_max_retries = 1;
    let server = TestServer::start_with(config).await;
    let worker = server.worker("w-silent");
    worker.register(&["greet"]).await;

    let job_id = server.create_job("/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    let first = worker.next_task(Duration::from_secs(5)).await;
    // No answer: after the deadline the same task comes again under a new id.
    let second = worker.next_task(Duration::from_secs(5)).await;
    assert_eq!(second["job_id"], job_id.as_str());
    assert_ne!(second["task_id"], first["task_id"]);
    assert_eq!(second["params"], first["params"]);
    let job = server.job(&job_id).await;
    assert_eq!(job["current_task"]["retries"], 1);

    // Retries spent: the next deadline quarantines the job.
    let job = server.wait_for_status(&job_id, "quarantined").await;
    let message = job["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("no result within WORKER_TIMEOUT_SECONDS"), "{message}");

    let (status, body) = worker.post_result(&first, json!({"status": "success"})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("result_ignored")));
    assert_eq!(server.job(&job_id).await["status"], "quarantined");
    server.stop().await;
}

#[tokio::test]
async fn answered_tasks_are_not_timed_out() {
    let mut config = test_config();
    config.worker_timeout = Duration::from_millis(400);
    config.watcher_interval = Duration::from_millis(100);
    let server = TestServer::start_with(config).await;
    let worker = server.worker("w-prompt");
    worker.register(&["greet"]).await;
    let job_id = server.create_job("/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    let task = worker.next_task(Duration::from_secs(5)).await;
    let (status, _) = worker.post_result(&task, json!({"status": "success"})).await;
    assert_eq!(status, 200);
    // Several watcher rounds past the old deadline: the job stays finished.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let job = server.job(&job_id).await;
    assert_eq!((job["status"].as_str(), job["version"].as_u64()), (Some("finished"), Some(2)), "{job:#}");
    server.stop().await;
}

/// Finding 3, the review's "stale" probe: a worker that never answers. Each
/// timed-out copy of the task is taken back off its queue before the task is
/// dispatched again, so once the job is quarantined after its retries the
/// worker's queue is empty (it used to hold all 4 copies) and its slots are
/// given back.
#[tokio::test]
async fn timed_out_tasks_are_taken_back_off_the_silent_workers_queue() {
    let mut config = test_config();
    config.worker_timeout = Duration::from_millis(300);
    config.watcher_interval = Duration::from_millis(100);
    config.worker_poll_timeout = Duration::from_millis(500);
    config.job_max_retries = 3;
    let server = TestServer::start_with(config).await;
    let worker = server.worker("w-stale");
    worker.register(&["greet"]).await;

    let job_id = server.create_job("/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    let job = server.wait_for_status(&job_id, "quarantined").await;
    assert_eq!(job["current_task"]["retries"], 3, "{job:#}");
    worker.assert_no_task().await;
    assert_eq!(in_flight(&server, "w-stale").await, 0);
    server.stop().await;
}

/// Finding 3, the dead worker: purging a worker whose liveness lapsed drops
/// its queue, and the job whose task was in it is dispatched again at once
/// (here to a worker that registers later), not left waiting out
/// `WORKER_TIMEOUT_SECONDS`; the dead worker, back under its old id, gets
/// nothing.
#[tokio::test]
async fn a_dead_workers_queued_task_is_failed_over_to_another_worker() {
    let mut config = test_config();
    // Live for 0.4 s after registering; purged on the next sweep.
    config.worker_health_check_interval = Duration::from_millis(200);
    config.worker_poll_timeout = Duration::from_millis(500);
    let server = TestServer::start_with(config).await;
    let dead = server.worker("w-dead");
    dead.register(&["greet"]).await;
    let job_id = server.create_job("/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    server.wait_for_status(&job_id, "waiting_for_worker").await;

    // Long enough for w-dead to lapse and be purged.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let heir = server.worker("w-heir");
    heir.register(&["greet"]).await;
    let task = heir.next_task(Duration::from_secs(5)).await;
    assert_eq!(task["job_id"], job_id.as_str());
    let (status, _) = heir.post_result(&task, json!({"status": "success"})).await;
    assert_eq!(status, 200);
    let job = server.wait_for_status(&job_id, "finished").await;
    assert_eq!(job["current_task"]["retries"], 1, "{job:#}");

    dead.register(&["greet"]).await;
    dead.assert_no_task().await;
    server.stop().await;
}

/// `in_flight` of `worker_id` as `GET /api/v1/workers` reports it.
async fn in_flight(server: &TestServer, worker_id: &str) -> u64 {
    let response = server
        .http
        .get(server.url("/api/v1/workers"))
        .header("X-Avtomatika-Token", avtomatika_tests::CLIENT_TOKEN)
        .send()
        .await
        .expect("workers request");
    let workers: serde_json::Value = response.json().await.expect("workers JSON");
    let worker = workers.as_array().and_then(|all| all.iter().find(|w| w["worker_id"] == worker_id));
    worker.and_then(|w| w["in_flight"].as_u64()).unwrap_or_else(|| panic!("no worker {worker_id} in {workers:#}"))
}
