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
