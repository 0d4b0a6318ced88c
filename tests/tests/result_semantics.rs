//! "Result semantics" of `spec/http-api.md`, rule by rule: what a worker's
//! answer does to its job. Driven through `hello` (one `greet` task whose
//! `success` finishes and `failure` fails the job) and `pipeline`.

use std::collections::HashSet;
use std::time::Duration;

use avtomatika_tests::config::Config;
use avtomatika_tests::{TestServer, TestWorker, test_config};
use serde_json::{Value, json};

const HELLO: &str = "/api/v1/jobs/hello";
const PIPELINE: &str = "/api/v1/jobs/pipeline";
const MAX_RETRIES: u32 = 2;
const TASK_WAIT: Duration = Duration::from_secs(10);

fn config() -> Config {
    Config { worker_poll_timeout: Duration::from_secs(1), job_max_retries: MAX_RETRIES, ..test_config() }
}

async fn server() -> TestServer {
    TestServer::start_with(config()).await
}

/// Creates a hello job and returns it with its first task, taken by `worker`.
async fn hello_task(server: &TestServer, worker: &TestWorker<'_>) -> (String, Value) {
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    let task = worker.next_task(TASK_WAIT).await;
    assert_eq!(task["job_id"], job_id.as_str(), "{task:#}");
    (job_id, task)
}

/// Asserts the job is terminal with `status` and returns its error message.
async fn ended(server: &TestServer, job_id: &str, status: &str) -> (Value, String) {
    let terminal = ["finished", "failed", "cancelled", "error", "quarantined"];
    let job = server.wait_for(job_id, TASK_WAIT, |j| terminal.iter().any(|t| j["status"] == *t)).await;
    assert_eq!(job["status"], status, "{job:#}");
    let message = job["error_message"].as_str().unwrap_or_default().to_owned();
    (job, message)
}

#[tokio::test]
async fn a_missing_status_is_success_and_data_joins_the_history() {
    let server = server().await;
    let worker = server.worker("w-ok");
    worker.register(&["greet"]).await;
    let (job_id, task) = hello_task(&server, &worker).await;

    let (status, body) = worker.post_result(&task, json!({"data": {"greeting": "Hello, Ada", "n": 1}})).await;
    assert_eq!((status, body), (200, json!({"status": "result_accepted_success"})));
    let (job, message) = ended(&server, &job_id, "finished").await;
    assert_eq!(job["current_state"], "finished", "{job:#}");
    assert_eq!(job["state_history"]["greeting"], "Hello, Ada", "{job:#}");
    assert_eq!(job["state_history"]["n"], 1, "{job:#}");
    assert!(message.is_empty(), "a finished job has no error: {job:#}");
    server.stop().await;
}

#[tokio::test]
async fn a_status_without_a_transition_fails_the_job() {
    let server = server().await;
    let worker = server.worker("w-review");
    worker.register(&["greet"]).await;
    let (job_id, task) = hello_task(&server, &worker).await;

    let (status, _) = worker.post_result(&task, json!({"status": "needs_review", "data": {"x": 1}})).await;
    assert_eq!(status, 200);
    let (job, message) = ended(&server, &job_id, "failed").await;
    assert!(message.contains("needs_review"), "the error should name the status: {job:#}");
    server.stop().await;
}

/// Fails every dispatch of one job's task with `error` (or no `error` key)
/// and counts the dispatches until the job is quarantined.
async fn fail_until_quarantined(server: &TestServer, worker: &TestWorker<'_>, error: Option<Value>) {
    let (job_id, mut task) = hello_task(server, worker).await;
    let mut task_ids = HashSet::new();
    let mut dispatches = 1;
    loop {
        assert!(task_ids.insert(task["task_id"].as_str().unwrap().to_owned()), "task id reused: {task:#}");
        assert_eq!(task["params"], json!({"name": "Ada"}), "a retry carries the same params: {task:#}");
        assert_eq!(task["type"], "greet");
        let mut result = json!({"status": "failure"});
        if let Some(error) = &error {
            result["error"] = error.clone();
        }
        let (status, body) = worker.post_result(&task, result).await;
        assert_eq!((status, body), (200, json!({"status": "result_accepted_failure"})));
        let job = server.job(&job_id).await;
        if job["status"] == "quarantined" {
            break;
        }
        assert_eq!(job["status"], "waiting_for_worker", "a transient failure is retried: {job:#}");
        assert!(dispatches <= MAX_RETRIES, "dispatched more than 1 + JOB_MAX_RETRIES times: {job:#}");
        task = worker.next_task(TASK_WAIT).await;
        assert_eq!(task["job_id"], job_id.as_str());
        dispatches += 1;
    }
    assert_eq!(dispatches, MAX_RETRIES + 1, "error {error:?}: the task runs once plus JOB_MAX_RETRIES retries");
    let (job, message) = ended(server, &job_id, "quarantined").await;
    assert!(!message.is_empty(), "a quarantined job says why: {job:#}");
    if let Some(text) = error.as_ref().and_then(|e| e["message"].as_str()) {
        assert!(message.contains(text), "the error should carry the worker's message {text:?}: {job:#}");
    }
}

#[tokio::test]
async fn transient_failures_are_redispatched_then_quarantined() {
    let server = server().await;
    let worker = server.worker("w-flaky");
    worker.register(&["greet"]).await;
    fail_until_quarantined(&server, &worker, Some(json!({"code": "TRANSIENT_ERROR", "message": "disk full"}))).await;
    // No code is a transient error too, and so is no `error` at all.
    fail_until_quarantined(&server, &worker, Some(json!({"message": "flaky network"}))).await;
    fail_until_quarantined(&server, &worker, None).await;
    worker.assert_no_task().await;
    server.stop().await;
}

#[tokio::test]
async fn permanent_errors_quarantine_and_invalid_input_fails_at_once() {
    let server = server().await;
    let worker = server.worker("w-hard");
    worker.register(&["greet"]).await;

    let (permanent, task) = hello_task(&server, &worker).await;
    let error = json!({"code": "PERMANENT_ERROR", "message": "model missing"});
    let (status, body) = worker.post_result(&task, json!({"status": "failure", "error": error})).await;
    assert_eq!((status, body), (200, json!({"status": "result_accepted_failure"})));
    let (job, message) = ended(&server, &permanent, "quarantined").await;
    assert!(message.contains("model missing"), "{job:#}");

    let (invalid, task) = hello_task(&server, &worker).await;
    let error = json!({"code": "INVALID_INPUT_ERROR", "message": "name is empty"});
    let (status, _) = worker.post_result(&task, json!({"status": "failure", "error": error})).await;
    assert_eq!(status, 200);
    let (job, message) = ended(&server, &invalid, "failed").await;
    assert!(message.to_lowercase().contains("invalid input"), "{job:#}");
    assert!(message.contains("name is empty"), "{job:#}");

    // Neither was dispatched again.
    worker.assert_no_task().await;
    server.stop().await;
}

#[tokio::test]
async fn cancelled_without_a_cancelled_transition_cancels_the_job() {
    let server = server().await;
    let worker = server.worker("w-cancel");
    worker.register(&["greet"]).await;
    let (job_id, task) = hello_task(&server, &worker).await;
    let (status, body) = worker.post_result(&task, json!({"status": "cancelled"})).await;
    assert_eq!((status, body), (200, json!({"status": "result_accepted_cancelled"})));
    ended(&server, &job_id, "cancelled").await;
    server.stop().await;
}

#[tokio::test]
async fn a_result_from_another_worker_is_forbidden() {
    let server = server().await;
    let (a, b) = (server.worker("w-a"), server.worker("w-b"));
    a.register(&["greet"]).await;
    b.register(&["greet"]).await;
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    let job = server.wait_for(&job_id, TASK_WAIT, |j| j["current_task"]["worker_id"].is_string()).await;
    let (owner, intruder) = if job["current_task"]["worker_id"] == "w-a" { (&a, &b) } else { (&b, &a) };
    let task = owner.next_task(TASK_WAIT).await;
    assert_eq!(task["job_id"], job_id.as_str());
    let before = server.job(&job_id).await;

    let (status, body) = intruder.post_result(&task, json!({"status": "success", "data": {"evil": true}})).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].is_string(), "a 403 is a JSON error: {body}");
    assert_eq!(server.job(&job_id).await, before, "a refused result changes nothing");

    let (status, body) = owner.post_result(&task, json!({"status": "success", "data": {"greeting": "Hi"}})).await;
    assert_eq!((status, body), (200, json!({"status": "result_accepted_success"})));
    let (job, _) = ended(&server, &job_id, "finished").await;
    assert_eq!(job["state_history"], json!({"greeting": "Hi"}), "{job:#}");
    server.stop().await;
}

#[tokio::test]
async fn a_duplicate_result_is_ignored() {
    let server = server().await;
    let worker = server.worker("w-dup");
    worker.register(&["greet"]).await;
    let (job_id, task) = hello_task(&server, &worker).await;

    let result = json!({"status": "success", "data": {"greeting": "Hi"}});
    let (status, _) = worker.post_result(&task, result.clone()).await;
    assert_eq!(status, 200);
    let (finished, _) = ended(&server, &job_id, "finished").await;

    for again in [result, json!({"status": "failure"}), json!({"status": "success", "data": {"greeting": "Changed"}})] {
        let (status, body) = worker.post_result(&task, again).await;
        assert_eq!(status, 200, "a duplicate answers 200: {body}");
        let job = server.job(&job_id).await;
        assert_eq!(job["version"], finished["version"], "a duplicate must not touch the job: {job:#}");
        assert_eq!(job["updated_at"], finished["updated_at"], "{job:#}");
        assert_eq!(job, finished);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_result_for_a_redispatched_task_is_ignored() {
    let server = server().await;
    let worker = server.worker("w-stale");
    worker.register(&["greet"]).await;
    let (job_id, first) = hello_task(&server, &worker).await;

    let (status, _) =
        worker.post_result(&first, json!({"status": "failure", "error": {"code": "TRANSIENT_ERROR"}})).await;
    assert_eq!(status, 200);
    let second = worker.next_task(TASK_WAIT).await;
    assert_ne!(second["task_id"], first["task_id"], "a re-dispatch gets a new task id");
    let waiting = server.job(&job_id).await;
    assert_eq!(waiting["status"], "waiting_for_worker", "{waiting:#}");

    // The first attempt answers late: ignored, whatever it says.
    for late in [json!({"status": "success", "data": {"late": true}}), json!({"status": "failure"})] {
        let (status, body) = worker.post_result(&first, late).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(server.job(&job_id).await, waiting, "a stale result changes nothing");
    }
    // A task id that was never issued is no better.
    let mut bogus = first.clone();
    bogus["task_id"] = json!("not-a-task-id");
    let (status, _) = worker.post_result(&bogus, json!({"status": "success"})).await;
    assert_eq!(status, 200);
    assert_eq!(server.job(&job_id).await, waiting);

    let (status, body) = worker.post_result(&second, json!({"data": {"greeting": "Hi"}})).await;
    assert_eq!((status, body), (200, json!({"status": "result_accepted_success"})));
    let (job, _) = ended(&server, &job_id, "finished").await;
    assert_eq!(job["state_history"], json!({"greeting": "Hi"}), "{job:#}");
    server.stop().await;
}

/// Many copies of one transient failure arriving at once re-dispatch the task
/// once: exactly one copy is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_are_applied_once() {
    let server = server().await;
    let worker = server.worker("w-race");
    worker.register(&["greet"]).await;
    let (job_id, task) = hello_task(&server, &worker).await;

    let result = json!({"status": "failure", "error": {"code": "TRANSIENT_ERROR"}});
    let answers = futures_join_all((0..8).map(|_| worker.post_result(&task, result.clone())).collect::<Vec<_>>()).await;
    let accepted = answers.iter().filter(|(_, body)| body["status"] == "result_accepted_failure").count();
    assert!(answers.iter().all(|(status, _)| *status == 200), "{answers:?}");
    assert_eq!(accepted, 1, "exactly one copy is applied: {answers:?}");

    let retry = worker.next_task(TASK_WAIT).await;
    assert_eq!(retry["job_id"], job_id.as_str());
    let job = server.job(&job_id).await;
    assert_eq!(job["current_task"]["task_id"], retry["task_id"], "{job:#}");
    assert_eq!(job["current_task"]["retries"], 1, "{job:#}");
    worker.assert_no_task().await;
    server.stop().await;
}

/// Polls futures concurrently on the current task (no extra dependency).
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future finished")).collect()
}

#[tokio::test]
async fn results_need_ids_and_a_known_job() {
    let server = server().await;
    let worker = server.worker("w-ids");
    worker.register(&["greet"]).await;
    let (job_id, task) = hello_task(&server, &worker).await;
    let task_id = task["task_id"].clone();

    for body in [
        json!({"task_id": task_id, "worker_id": "w-ids", "result": {}}),
        json!({"job_id": job_id, "worker_id": "w-ids", "result": {}}),
        json!({"worker_id": "w-ids", "result": {}}),
        json!({"job_id": job_id, "task_id": task_id, "result": {}}),
    ] {
        worker.post_result_body(body).await.assert_error(400);
    }
    for unknown in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let body = json!({"job_id": unknown, "task_id": task_id, "worker_id": "w-ids", "result": {}});
        worker.post_result_body(body).await.assert_error(404);
    }
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "waiting_for_worker", "refused results change nothing: {job:#}");
    server.stop().await;
}

#[tokio::test]
async fn pipeline_runs_fetch_transform_publish_to_finished() {
    let server = server().await;
    let worker = server.worker("w-pipe");
    worker.register(&["fetch", "publish"]).await;
    let job_id = server.create_job(PIPELINE, json!({"url": "https://example.com"})).await;

    let fetch = worker.next_task(TASK_WAIT).await;
    assert_eq!(fetch["type"], "fetch", "{fetch:#}");
    assert_eq!(fetch["params"], json!({"url": "https://example.com"}));
    assert_eq!(fetch["priority"], 0);
    let (status, _) =
        worker.post_result(&fetch, json!({"status": "success", "data": {"content": "hello world"}})).await;
    assert_eq!(status, 200);

    let publish = worker.next_task(TASK_WAIT).await;
    assert_eq!(publish["job_id"], job_id.as_str());
    assert_eq!(publish["type"], "publish", "{publish:#}");
    assert_eq!(publish["params"], json!({"length": 11}), "{publish:#}");
    assert_eq!(publish["priority"], 5, "{publish:#}");
    let job = server.job(&job_id).await;
    assert_eq!((job["current_state"].as_str(), job["status"].as_str()), (Some("publish"), Some("waiting_for_worker")));

    let (status, _) = worker.post_result(&publish, json!({"status": "success", "data": {"published": true}})).await;
    assert_eq!(status, 200);
    let (job, _) = ended(&server, &job_id, "finished").await;
    assert_eq!(job["current_state"], "finished");
    assert_eq!(job["state_history"], json!({"content": "hello world", "length": 11, "published": true}), "{job:#}");
    server.stop().await;
}

#[tokio::test]
async fn pipeline_fails_when_fetch_returns_no_content() {
    let server = server().await;
    let worker = server.worker("w-empty");
    worker.register(&["fetch", "publish"]).await;
    for data in [json!({"content": ""}), json!({}), json!({"content": 7})] {
        let job_id = server.create_job(PIPELINE, json!({"url": "https://example.com/empty"})).await;
        let fetch = worker.next_task(TASK_WAIT).await;
        assert_eq!(fetch["job_id"], job_id.as_str());
        let (status, _) = worker.post_result(&fetch, json!({"status": "success", "data": data})).await;
        assert_eq!(status, 200);
        let (job, message) = ended(&server, &job_id, "failed").await;
        assert!(message.contains("fetch returned no content"), "data {data}: {job:#}");
        assert_eq!(job["current_state"], "transform", "{job:#}");
    }
    worker.assert_no_task().await;
    server.stop().await;
}
