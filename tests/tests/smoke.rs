//! The walking skeleton end to end: create a `hello` job, a test worker takes
//! its `greet` task and answers, the job finishes with the worker's data.

use std::time::Duration;

use avtomatika_tests::TestServer;
use serde_json::json;

#[tokio::test]
async fn hello_job_runs_to_finished_through_a_worker() {
    let server = TestServer::start().await;
    let worker = server.worker("w-smoke");
    worker.register(&["greet"]).await;

    let job_id = server.create_job("/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    let task = worker.next_task(Duration::from_secs(10)).await;
    assert_eq!(task["job_id"], job_id.as_str());
    assert_eq!(task["type"], "greet");
    assert_eq!(task["params"], json!({"name": "Ada"}));

    let (status, body) =
        worker.post_result(&task, json!({"status": "success", "data": {"greeting": "Hello, Ada"}})).await;
    assert_eq!((status, body), (200, json!({"status": "result_accepted_success"})));

    let job = server.wait_for_status(&job_id, "finished").await;
    assert_eq!(job["current_state"], "finished");
    assert_eq!(job["state_history"]["greeting"], "Hello, Ada");
    server.stop().await;
}
