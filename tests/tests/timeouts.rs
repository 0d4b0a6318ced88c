//! Per-job timeouts from the create body (`dispatch_timeout`, `result_timeout`,
//! in seconds), through real HTTP and the real components: a task no worker
//! took fails its job at the dispatch timeout (and is taken back off the
//! worker's queue), a task taken but not answered fails it at the result
//! timeout, a late result changes nothing, and both apply to every branch of
//! a parallel step.
//!
//! The watcher loop is switched off (a one-hour interval) except in one test;
//! the others run its rounds with [`Orchestrator::time_out_overdue`] at chosen
//! instants, so a loaded machine cannot make them flaky.
//!
//! [`Orchestrator::time_out_overdue`]: avtomatika::orchestrator::Orchestrator::time_out_overdue

use std::time::{Duration, Instant};

use avtomatika_tests::config::Config;
use avtomatika_tests::{Answer, Auth, CLIENT_TOKEN, TestServer, manual_watcher_config};
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};

const HELLO: &str = "/api/v1/jobs/hello";
const IMAGES: &str = "/api/v1/jobs/image-pipeline";
const TASK_WAIT: Duration = Duration::from_secs(10);

async fn server() -> TestServer {
    TestServer::start_with(manual_watcher_config()).await
}

async fn create(server: &TestServer, path: &str, body: Value) -> Answer {
    server.send(Method::POST, path, Auth::Client(CLIENT_TOKEN), Some(&body.to_string())).await
}

/// A `hello` job for Ada with the given timeouts (`null` leaves one out).
async fn hello_with(server: &TestServer, dispatch_timeout: Value, result_timeout: Value) -> String {
    let body = json!({
        "initial_data": {"name": "Ada"},
        "dispatch_timeout": dispatch_timeout,
        "result_timeout": result_timeout,
    });
    server.create_job(HELLO, body).await
}

/// A task record's `dispatched_at`, from a job as `GET /api/v1/jobs/{id}` shows it.
fn dispatched_at(task: &Value) -> DateTime<Utc> {
    let text = task["dispatched_at"].as_str().unwrap_or_else(|| panic!("no dispatched_at: {task:#}"));
    text.parse().unwrap_or_else(|e| panic!("dispatched_at {text:?}: {e}"))
}

/// Runs one watcher round as if the clock read `at`; returns the jobs it handled.
async fn watcher_at(server: &TestServer, at: DateTime<Utc>) -> usize {
    server.orchestrator.time_out_overdue(at).await.expect("watcher round")
}

fn after(at: DateTime<Utc>, millis: i64) -> DateTime<Utc> {
    at + TimeDelta::milliseconds(millis)
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

fn error_message(job: &Value) -> &str {
    job["error_message"].as_str().unwrap_or_else(|| panic!("no error_message: {job:#}"))
}

#[tokio::test]
async fn without_a_worker_for_the_task_type_the_job_fails_at_its_dispatch_timeout() {
    let server = server().await;
    let job_id = hello_with(&server, json!(2), Value::Null).await;
    let job = server.wait_for_status(&job_id, "waiting_for_worker").await;
    assert_eq!(job["timeouts"], json!({"dispatch_timeout_ms": 2000, "result_timeout_ms": null}), "{job:#}");
    let task = &job["current_task"];
    assert!(task["worker_id"].is_null(), "no worker takes greet yet: {job:#}");
    let dispatched = dispatched_at(task);

    assert_eq!(watcher_at(&server, after(dispatched, 1999)).await, 0);
    assert_eq!(server.job(&job_id).await["status"], "waiting_for_worker");

    assert_eq!(watcher_at(&server, after(dispatched, 2000)).await, 1);
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    let message = error_message(&job);
    assert!(message.contains("dispatch_timeout") && message.contains("greet"), "{message}");
    assert!(!message.contains("result_timeout"), "{message}");

    // A worker for greet arriving now is not handed the failed job's task.
    let worker = server.worker("w-late");
    worker.register(&["greet"]).await;
    worker.assert_no_task().await;
    assert_eq!(in_flight(&server, "w-late").await, 0);
    assert_eq!(server.job(&job_id).await["status"], "failed");
    server.stop().await;
}

#[tokio::test]
async fn the_watcher_loop_applies_dispatch_timeouts_on_its_own() {
    let server =
        TestServer::start_with(Config { watcher_interval: Duration::from_millis(100), ..manual_watcher_config() })
            .await;
    let started = Instant::now();
    let job_id = hello_with(&server, json!(0.3), Value::Null).await;
    let job = server.wait_for(&job_id, Duration::from_secs(20), |j| j["status"] == "failed").await;
    assert!(started.elapsed() >= Duration::from_millis(300), "failed after only {:?}", started.elapsed());
    assert!(error_message(&job).contains("dispatch_timeout"), "{job:#}");
    server.stop().await;
}

#[tokio::test]
async fn a_task_no_worker_took_is_withdrawn_at_the_dispatch_timeout() {
    let server = server().await;
    let worker = server.worker("w-asleep");
    worker.register(&["greet"]).await;
    let job_id = hello_with(&server, json!(1), json!(60)).await;
    let job = server.wait_for_status(&job_id, "waiting_for_worker").await;
    let task = job["current_task"].clone();
    assert_eq!(task["worker_id"], "w-asleep", "{job:#}");
    assert_eq!(in_flight(&server, "w-asleep").await, 1);
    let dispatched = dispatched_at(&task);

    assert_eq!(watcher_at(&server, after(dispatched, 999)).await, 0);
    assert_eq!(watcher_at(&server, after(dispatched, 1000)).await, 1);
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    let message = error_message(&job);
    assert!(message.contains("dispatch_timeout") && message.contains("greet"), "{message}");

    // The task left the worker's queue: it never starts late.
    assert_eq!(in_flight(&server, "w-asleep").await, 0);
    worker.assert_no_task().await;
    // Even a result for it (the worker guessed the ids) changes nothing.
    let ids = json!({"job_id": job_id, "task_id": task["task_id"]});
    let (status, body) = worker.post_result(&ids, json!({"status": "success"})).await;
    assert_eq!((status, body), (200, json!({"status": "result_ignored"})));
    assert_eq!(server.job(&job_id).await["status"], "failed");
    assert_eq!(in_flight(&server, "w-asleep").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_taken_task_outlives_its_dispatch_timeout_and_fails_at_its_result_timeout() {
    let server = server().await;
    let worker = server.worker("w-slow");
    worker.register(&["greet"]).await;
    let job_id = hello_with(&server, json!(1), json!(3)).await;
    let task = worker.next_task(TASK_WAIT).await;
    assert_eq!(task["job_id"], job_id.as_str());
    let job = server.job(&job_id).await;
    let dispatched = dispatched_at(&job["current_task"]);

    // The dispatch timeout passes with the task in the worker's hands: no failure.
    assert_eq!(watcher_at(&server, after(dispatched, 1500)).await, 1);
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "waiting_for_worker", "{job:#}");
    assert!(job["error_message"].is_null(), "{job:#}");
    assert_eq!(in_flight(&server, "w-slow").await, 1);

    assert_eq!(watcher_at(&server, after(dispatched, 2999)).await, 0);
    assert_eq!(watcher_at(&server, after(dispatched, 3000)).await, 1);
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    let message = error_message(&job);
    assert!(message.contains("result_timeout") && message.contains("greet"), "{message}");
    assert!(!message.contains("dispatch_timeout"), "{message}");
    assert_eq!(in_flight(&server, "w-slow").await, 0);

    // The answer comes too late: ignored, and the job stays as it ended.
    let (status, body) = worker.post_result(&task, json!({"status": "success", "data": {"greeting": "Hi"}})).await;
    assert_eq!((status, body), (200, json!({"status": "result_ignored"})));
    let after_late = server.job(&job_id).await;
    assert_eq!(after_late, job, "a late result changed the job");
    assert_eq!(in_flight(&server, "w-slow").await, 0);
    // Nothing was dispatched again either.
    worker.assert_no_task().await;
    server.stop().await;
}

#[tokio::test]
async fn a_taken_task_can_still_finish_after_its_dispatch_timeout() {
    let server = server().await;
    let worker = server.worker("w-steady");
    worker.register(&["greet"]).await;
    let job_id = hello_with(&server, json!(1), Value::Null).await;
    let task = worker.next_task(TASK_WAIT).await;
    let dispatched = dispatched_at(&server.job(&job_id).await["current_task"]);

    // Well past the dispatch timeout, well before WORKER_TIMEOUT_SECONDS.
    assert_eq!(watcher_at(&server, after(dispatched, 10_000)).await, 1);
    assert_eq!(watcher_at(&server, after(dispatched, 20_000)).await, 0, "nothing is due before the worker timeout");
    assert_eq!(server.job(&job_id).await["status"], "waiting_for_worker");

    let (status, body) = worker.post_result(&task, json!({"status": "success", "data": {"greeting": "Hi"}})).await;
    assert_eq!((status, body), (200, json!({"status": "result_accepted_success"})));
    let job = server.wait_for_status(&job_id, "finished").await;
    assert_eq!(job["state_history"]["greeting"], "Hi", "{job:#}");
    assert_eq!(in_flight(&server, "w-steady").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn invalid_timeouts_are_refused_naming_the_field() {
    let server = server().await;
    let bad = [json!(0), json!(-1), json!(-0.5), json!("5"), json!(true), json!({}), json!([1]), json!(1e12)];
    for field in ["dispatch_timeout", "result_timeout"] {
        for value in &bad {
            let mut body = json!({"initial_data": {"name": "Ada"}});
            body[field] = value.clone();
            let answer = create(&server, HELLO, body).await;
            let message = answer.assert_error(400);
            assert!(message.contains(field), "{field} = {value}: {message}");
        }
    }
    // None of them created a job.
    let answer = server.send(Method::GET, "/api/v1/jobs", Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!((answer.status, answer.json()), (200, json!([])), "{answer:?}");

    // Fractions and null are fine.
    let body = json!({"initial_data": {"name": "Ada"}, "dispatch_timeout": 0.25, "result_timeout": null});
    let answer = create(&server, HELLO, body).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let job = server.job(answer.json()["job_id"].as_str().unwrap()).await;
    assert_eq!(job["timeouts"], json!({"dispatch_timeout_ms": 250, "result_timeout_ms": null}), "{job:#}");

    // Without `initial_data` (or `webhook_url`) the body is the initial data
    // itself, as in the Python orchestrator: the field is data, not a timeout.
    let answer = create(&server, HELLO, json!({"name": "Ada", "dispatch_timeout": 0})).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let job = server.job(answer.json()["job_id"].as_str().unwrap()).await;
    assert_eq!(job["initial_data"], json!({"name": "Ada", "dispatch_timeout": 0}), "{job:#}");
    assert_eq!(job["timeouts"], json!({"dispatch_timeout_ms": null, "result_timeout_ms": null}), "{job:#}");
    server.stop().await;
}

#[tokio::test]
async fn a_parallel_step_without_workers_fails_at_its_dispatch_timeout() {
    let server = server().await;
    let body = json!({"initial_data": {"image": "s3://b/cat.png", "sizes": ["small", "large"]}, "dispatch_timeout": 1});
    let job_id = server.create_job(IMAGES, body).await;
    let job = server.wait_for_status(&job_id, "waiting_for_parallel_tasks").await;
    let branches = job["parallel"]["branches"].as_array().expect("branches").clone();
    assert_eq!(branches.len(), 2, "{job:#}");
    let dispatched = branches.iter().map(dispatched_at).min().unwrap();

    assert_eq!(watcher_at(&server, after(dispatched, 999)).await, 0);
    assert_eq!(server.job(&job_id).await["status"], "waiting_for_parallel_tasks");
    assert_eq!(watcher_at(&server, after(dispatched, 1000)).await, 1);
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    let message = error_message(&job);
    assert!(message.contains("dispatch_timeout") && message.contains("resize"), "{message}");
    // The aggregator never ran.
    assert_eq!(job["current_state"], "resize", "{job:#}");

    let worker = server.worker("w-resize-late");
    worker.register(&["resize"]).await;
    worker.assert_no_task().await;
    server.stop().await;
}

#[tokio::test]
async fn a_parallel_step_past_its_dispatch_timeout_takes_back_queued_branches_and_frees_the_taken_one() {
    let server = server().await;
    let worker = server.worker("w-busy");
    worker.register(&["greet", "resize"]).await;
    // Another job's task stays in flight on the same worker throughout.
    let hello = server.create_job(HELLO, json!({"name": "Ada"})).await;
    let greet = worker.next_task(TASK_WAIT).await;
    assert_eq!(greet["job_id"], hello.as_str());

    let body = json!({
        "initial_data": {"image": "s3://b/cat.png", "sizes": ["small", "medium", "large"]},
        "dispatch_timeout": 1,
    });
    let job_id = server.create_job(IMAGES, body).await;
    let job = server.wait_for_status(&job_id, "waiting_for_parallel_tasks").await;
    // Each branch counts from its own dispatch; the last one's is what matters here.
    let dispatched = job["parallel"]["branches"].as_array().unwrap().iter().map(dispatched_at).max().unwrap();
    let taken = worker.next_task(TASK_WAIT).await;
    assert_eq!((taken["job_id"].as_str(), taken["type"].as_str()), (Some(job_id.as_str()), Some("resize")));
    assert_eq!(in_flight(&server, "w-busy").await, 4, "greet and three branches");

    assert_eq!(watcher_at(&server, after(dispatched, 1000)).await, 1);
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert!(error_message(&job).contains("dispatch_timeout"), "{job:#}");
    // Two branches withdrawn, the taken one given back: only greet is left.
    assert_eq!(in_flight(&server, "w-busy").await, 1);
    worker.assert_no_task().await;

    let (status, body) = worker.post_result(&taken, json!({"status": "success", "data": {"url": "u"}})).await;
    assert_eq!((status, body), (200, json!({"status": "result_ignored"})));
    assert_eq!(in_flight(&server, "w-busy").await, 1);
    let (status, _) = worker.post_result(&greet, json!({"status": "success"})).await;
    assert_eq!(status, 200);
    server.wait_for_status(&hello, "finished").await;
    assert_eq!(in_flight(&server, "w-busy").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn branches_taken_but_unanswered_fail_the_job_at_its_result_timeout() {
    let server = server().await;
    let worker = server.worker("w-thumbs");
    worker.register(&["resize"]).await;
    let body = json!({"initial_data": {"image": "s3://b/cat.png", "sizes": ["small", "large"]}, "result_timeout": 2});
    let job_id = server.create_job(IMAGES, body).await;
    let job = server.wait_for_status(&job_id, "waiting_for_parallel_tasks").await;
    let dispatched = job["parallel"]["branches"].as_array().unwrap().iter().map(dispatched_at).max().unwrap();
    let answered = worker.next_task(TASK_WAIT).await;
    let silent = worker.next_task(TASK_WAIT).await;
    let (status, body) = worker.post_result(&answered, json!({"status": "success", "data": {"url": "u"}})).await;
    assert_eq!((status, body), (200, json!({"status": "parallel_branch_result_accepted"})));
    assert_eq!(in_flight(&server, "w-thumbs").await, 1);

    assert_eq!(watcher_at(&server, after(dispatched, 1999)).await, 0);
    assert_eq!(server.job(&job_id).await["status"], "waiting_for_parallel_tasks");
    assert_eq!(watcher_at(&server, after(dispatched, 2000)).await, 1);
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    let message = error_message(&job);
    assert!(message.contains("result_timeout") && message.contains("resize"), "{message}");
    assert_eq!(job["current_state"], "resize", "the aggregator never ran: {job:#}");
    assert_eq!(in_flight(&server, "w-thumbs").await, 0);

    let (status, body) = worker.post_result(&silent, json!({"status": "success", "data": {"url": "v"}})).await;
    assert_eq!((status, body), (200, json!({"status": "result_ignored"})));
    assert_eq!(server.job(&job_id).await, job, "a late result changed the job");
    assert_eq!(in_flight(&server, "w-thumbs").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn timeouts_count_from_each_dispatch() {
    let server = server().await;
    let worker = server.worker("w-retry");
    worker.register(&["greet"]).await;
    let job_id = hello_with(&server, json!(2), Value::Null).await;
    let first = worker.next_task(TASK_WAIT).await;
    let first_dispatch = dispatched_at(&server.job(&job_id).await["current_task"]);
    // A transient failure dispatches the task again, and the clock restarts.
    let error = json!({"code": "TRANSIENT_ERROR", "message": "try again"});
    let (status, _) = worker.post_result(&first, json!({"status": "failure", "error": error})).await;
    assert_eq!(status, 200);
    let job = server.job(&job_id).await;
    assert_eq!(
        (job["status"].as_str(), job["current_task"]["retries"].as_u64()),
        (Some("waiting_for_worker"), Some(1))
    );
    let second_dispatch = dispatched_at(&job["current_task"]);
    assert!(second_dispatch > first_dispatch);

    // The retry is still queued (not taken): its own dispatch timeout decides.
    assert_eq!(watcher_at(&server, after(first_dispatch, 2000)).await, 0);
    assert_eq!(watcher_at(&server, after(second_dispatch, 1999)).await, 0);
    assert_eq!(server.job(&job_id).await["status"], "waiting_for_worker");
    assert_eq!(watcher_at(&server, after(second_dispatch, 2000)).await, 1);
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert!(error_message(&job).contains("dispatch_timeout"), "{job:#}");
    assert_eq!(in_flight(&server, "w-retry").await, 0);
    worker.assert_no_task().await;
    server.stop().await;
}
