//! Parallel steps through the real server and the `image-pipeline` example:
//! one `resize` branch per size goes to workers at once, every branch's
//! result is recorded as it arrives (never retried), and `collect` gets them
//! all, keyed by task id, once the last one is in — whether it answered,
//! failed or timed out.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use avtomatika_tests::config::Config;
use avtomatika_tests::{Auth, CLIENT_TOKEN, TestServer, TestWorker, WORKER_TOKEN, test_config};
use chrono::Utc;
use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

const IMAGE_PIPELINE: &str = "/api/v1/jobs/image-pipeline";
const IMAGE: &str = "s3://bucket/cat.png";
const WAIT: Duration = Duration::from_secs(30);

fn config() -> Config {
    Config { worker_poll_timeout: Duration::from_secs(1), ..test_config() }
}

/// Creates an `image-pipeline` job for `sizes` and waits until it fans out.
async fn fan_out(server: &TestServer, sizes: &[&str]) -> (String, Value) {
    let job_id = server.create_job(IMAGE_PIPELINE, json!({"image": IMAGE, "sizes": sizes})).await;
    let job = server.wait_for(&job_id, WAIT, |j| j["status"] != "pending" && j["status"] != "running").await;
    assert_eq!(job["status"], "waiting_for_parallel_tasks", "{job:#}");
    (job_id, job)
}

/// Takes `n` tasks off `worker`'s queue.
async fn take(worker: &TestWorker<'_>, n: usize) -> Vec<Value> {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        tasks.push(worker.next_task(WAIT).await);
    }
    tasks
}

/// The size a `resize` task was asked for.
fn size_of(task: &Value) -> &str {
    task["params"]["size"].as_str().unwrap_or_else(|| panic!("a resize task without a size: {task:#}"))
}

/// A thumbnail URL that names the task, so a mix-up of sizes shows.
fn url_for(task: &Value) -> String {
    format!("https://cdn.example/{}.png", task["task_id"].as_str().expect("task_id"))
}

/// Waits until the job has ended; returns it.
async fn ended(server: &TestServer, job_id: &str) -> Value {
    let terminal = ["finished", "failed", "cancelled", "error", "quarantined"];
    server.wait_for(job_id, WAIT, |j| terminal.iter().any(|t| j["status"] == *t)).await
}

fn accepted() -> (u16, Value) {
    (200, json!({"status": "parallel_branch_result_accepted"}))
}

#[tokio::test]
async fn every_branch_succeeds_and_collect_maps_each_result_to_its_size() {
    let server = TestServer::start_with(config()).await;
    let worker = server.worker("w-resize");
    worker.register(&["resize"]).await;
    let sizes = ["small", "medium", "large"];
    let (job_id, job) = fan_out(&server, &sizes).await;

    // While waiting, the job shows its branches in the order they were asked for.
    let branches = job["parallel"]["branches"].as_array().unwrap_or_else(|| panic!("no branches: {job:#}"));
    assert_eq!(branches.len(), 3, "{job:#}");
    for (branch, size) in branches.iter().zip(sizes) {
        assert_eq!(branch["type"], "resize", "{branch:#}");
        assert_eq!(branch["params"], json!({"image": IMAGE, "size": size}), "{branch:#}");
        assert_eq!(branch["worker_id"], "w-resize", "{branch:#}");
        assert_eq!(branch["retries"], 0, "{branch:#}");
    }
    assert_eq!(job["parallel"]["aggregate_into"], "collect", "{job:#}");
    assert!(job["current_task"].is_null(), "a fan-out has no single task: {job:#}");

    let tasks = take(&worker, 3).await;
    let mut by_size = BTreeMap::new();
    for task in &tasks {
        assert_eq!(task["job_id"], job_id.as_str(), "{task:#}");
        assert_eq!(task["type"], "resize", "{task:#}");
        let branch = branches.iter().find(|b| b["task_id"] == task["task_id"]);
        assert!(branch.is_some(), "the task is one of the job's branches: {task:#}");
        by_size.insert(size_of(task).to_owned(), url_for(task));
    }
    assert_eq!(by_size.len(), 3, "one task per size: {tasks:#?}");

    // Answer in reverse order: the results are matched by task id, not by arrival.
    for (answered, task) in tasks.iter().rev().enumerate() {
        let result = json!({"status": "success", "data": {"url": url_for(task)}});
        assert_eq!(worker.post_result(task, result).await, accepted());
        if answered < 2 {
            let job = server.job(&job_id).await;
            assert_eq!(job["status"], "waiting_for_parallel_tasks", "not every branch answered yet: {job:#}");
        }
    }

    let job = ended(&server, &job_id).await;
    assert_eq!(
        (job["status"].as_str(), job["current_state"].as_str()),
        (Some("finished"), Some("finished")),
        "{job:#}"
    );
    assert_eq!(job["state_history"]["thumbnails"], json!(by_size), "{job:#}");
    assert!(job["state_history"].get("failed_sizes").is_none(), "{job:#}");
    assert!(job["state_history"].get("url").is_none(), "branch data stays out of the history: {job:#}");
    assert!(job["error_message"].is_null(), "{job:#}");
    assert!(job["parallel"].is_null() && job["aggregation_results"].is_null(), "waits are cleared: {job:#}");
    // resize → collect → finished.
    assert_eq!(job["transitions"], 2, "{job:#}");
    server.stop().await;
}

/// 24 branches spread over 4 workers, every result posted at the same time:
/// none is lost or counted twice, and the job is joined exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_four_branches_answered_at_once_by_four_workers_lose_nothing() {
    let server = TestServer::start_with(config()).await;
    let workers: Vec<TestWorker<'_>> = (0..4).map(|i| server.worker(&format!("w-{i}"))).collect();
    for worker in &workers {
        worker.register(&["resize"]).await;
    }
    let sizes: Vec<String> = (1..=24).map(|i| format!("{}px", 32 * i)).collect();
    let sizes: Vec<&str> = sizes.iter().map(String::as_str).collect();
    let (job_id, job) = fan_out(&server, &sizes).await;

    let branches = job["parallel"]["branches"].as_array().expect("branches");
    assert_eq!(branches.len(), 24, "{job:#}");
    let mut per_worker: HashMap<&str, usize> = HashMap::new();
    for branch in branches {
        *per_worker.entry(branch["worker_id"].as_str().expect("every branch has a worker")).or_default() += 1;
    }
    // Four idle workers with nothing in flight: the fan-out is shared evenly.
    let expected: HashMap<&str, usize> = workers.iter().map(|w| (w.worker_id.as_str(), 6)).collect();
    assert_eq!(per_worker, expected, "branches per worker");

    // Each worker takes its share, then every result goes out at once.
    let shares = join_all(workers.iter().map(|w| take(w, per_worker[w.worker_id.as_str()]))).await;
    let mut by_size = BTreeMap::new();
    let mut posts = Vec::new();
    for (worker, tasks) in workers.iter().zip(&shares) {
        for task in tasks {
            by_size.insert(size_of(task).to_owned(), url_for(task));
            posts.push(worker.post_result(task, json!({"status": "success", "data": {"url": url_for(task)}})));
        }
    }
    assert_eq!(by_size.len(), 24, "one task per size");
    let answers = join_all(posts).await;
    for answer in &answers {
        assert_eq!(*answer, accepted(), "{answers:#?}");
    }

    let job = ended(&server, &job_id).await;
    assert_eq!(job["status"], "finished", "{job:#}");
    assert_eq!(job["state_history"]["thumbnails"], json!(by_size), "{job:#}");
    assert_eq!(job["transitions"], 2, "joined once: {job:#}");
    for worker in &workers {
        worker.assert_no_task().await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_duplicate_branch_result_is_ignored_and_changes_nothing() {
    let server = TestServer::start_with(config()).await;
    let worker = server.worker("w-twice");
    worker.register(&["resize"]).await;
    let (job_id, _) = fan_out(&server, &["small", "large"]).await;
    let tasks = take(&worker, 2).await;
    let (first, second) = (&tasks[0], &tasks[1]);

    let good = json!({"status": "success", "data": {"url": url_for(first)}});
    assert_eq!(worker.post_result(first, good).await, accepted());
    let before = server.job(&job_id).await;
    assert_eq!(before["status"], "waiting_for_parallel_tasks", "{before:#}");

    // The same branch again, success or failure: ignored.
    for again in [
        json!({"status": "success", "data": {"url": "https://cdn.example/impostor.png"}}),
        json!({"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": "second thoughts"}}),
    ] {
        let (status, body) = worker.post_result(first, again).await;
        assert_eq!((status, body), (200, json!({"status": "result_ignored"})));
    }
    assert_eq!(server.job(&job_id).await, before, "a duplicate changed the job");

    let last = json!({"status": "success", "data": {"url": url_for(second)}});
    assert_eq!(worker.post_result(second, last).await, accepted());
    let job = ended(&server, &job_id).await;
    assert_eq!(job["status"], "finished", "{job:#}");
    let expected = json!({size_of(first): url_for(first), size_of(second): url_for(second)});
    assert_eq!(job["state_history"]["thumbnails"], expected, "the first answer counts: {job:#}");

    // After the join, a late copy of either is ignored too.
    for task in [first, second] {
        let (status, body) = worker.post_result(task, json!({"status": "success"})).await;
        assert_eq!((status, body), (200, json!({"status": "result_ignored"})));
    }
    assert_eq!(server.job(&job_id).await, job);
    server.stop().await;
}

/// A branch's failure is recorded whatever its code or status: no retry, no
/// quarantine; `collect` decides, and `image-pipeline` fails the job.
#[tokio::test]
async fn a_failed_branch_is_recorded_without_retry_and_collect_fails_the_job() {
    let server = TestServer::start_with(config()).await;
    let worker = server.worker("w-fail");
    worker.register(&["resize"]).await;

    let failures = [
        json!({"status": "failure", "error": {"code": "TRANSIENT_ERROR", "message": "disk full"}}),
        json!({"status": "failure"}),
        json!({"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": "corrupt image"}}),
        json!({"status": "failure", "error": {"code": "INVALID_INPUT_ERROR", "message": "no such size"}}),
        json!({"status": "cancelled"}),
        json!({"status": "too_big", "data": {"url": "https://cdn.example/partial.png"}}),
    ];
    for failure in failures {
        let (job_id, _) = fan_out(&server, &["small", "medium", "large"]).await;
        let tasks = take(&worker, 3).await;
        let mut failed_size = None;
        for task in &tasks {
            let result = if size_of(task) == "medium" {
                failed_size = Some(size_of(task).to_owned());
                failure.clone()
            } else {
                json!({"data": {"url": url_for(task)}})
            };
            assert_eq!(worker.post_result(task, result).await, accepted(), "{failure}");
        }
        assert_eq!(failed_size.as_deref(), Some("medium"));

        let job = ended(&server, &job_id).await;
        assert_eq!(job["status"], "failed", "{failure}: {job:#}");
        assert_eq!(job["current_state"], "failed", "{failure}: {job:#}");
        assert_eq!(job["state_history"]["failed_sizes"], json!(["medium"]), "{failure}: {job:#}");
        assert!(job["state_history"].get("thumbnails").is_none(), "{job:#}");
        let message = job["error_message"].as_str().unwrap_or_default();
        assert!(message.contains("failure end state") && message.contains("failed"), "{message}");
        // Nothing was dispatched again.
        worker.assert_no_task().await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_branch_result_from_another_worker_is_forbidden() {
    let server = TestServer::start_with(config()).await;
    let holder = server.worker("w-holder");
    holder.register(&["resize"]).await;
    let (job_id, _) = fan_out(&server, &["small", "large"]).await;
    // Registered after the fan-out: it holds none of the branches.
    let intruder = server.worker("w-intruder");
    intruder.register(&["resize"]).await;
    let tasks = take(&holder, 2).await;

    let before = server.job(&job_id).await;
    let body = json!({
        "job_id": job_id,
        "task_id": tasks[0]["task_id"],
        "worker_id": intruder.worker_id,
        "result": {"status": "success", "data": {"url": "https://cdn.example/intruder.png"}},
    });
    let message = intruder.post_result_body(body).await.assert_error(403);
    assert!(message.contains("w-intruder"), "{message}");
    assert_eq!(server.job(&job_id).await, before, "a refused result changed the job");

    // The holder's own answers still count, the refused one never did.
    for task in &tasks {
        let result = json!({"data": {"url": url_for(task)}});
        assert_eq!(holder.post_result(task, result).await, accepted());
    }
    let job = ended(&server, &job_id).await;
    assert_eq!(job["status"], "finished", "{job:#}");
    let thumbnails = job["state_history"]["thumbnails"].to_string();
    assert!(!thumbnails.contains("intruder"), "{job:#}");
    intruder.assert_no_task().await;
    server.stop().await;
}

/// A branch nobody answers is recorded as `timeout` after
/// `WORKER_TIMEOUT_SECONDS` by the running watcher, never re-dispatched, and
/// the aggregator runs with it (`image-pipeline` fails the job).
#[tokio::test]
async fn a_silent_branch_times_out_and_collect_runs_without_it() {
    // Long enough for the other two answers to arrive first on a loaded machine.
    let worker_timeout = Duration::from_secs(2);
    let config = Config { worker_timeout, watcher_interval: Duration::from_millis(100), ..config() };
    let server = TestServer::start_with(config).await;
    let worker = server.worker("w-slow");
    worker.register(&["resize"]).await;

    let started = Instant::now();
    let (job_id, _) = fan_out(&server, &["small", "medium", "large"]).await;
    let tasks = take(&worker, 3).await;
    let silent = tasks.iter().find(|t| size_of(t) == "medium").expect("a medium task");
    for task in tasks.iter().filter(|t| size_of(t) != "medium") {
        assert_eq!(worker.post_result(task, json!({"data": {"url": url_for(task)}})).await, accepted());
    }
    assert_eq!(server.job(&job_id).await["status"], "waiting_for_parallel_tasks");

    let job = ended(&server, &job_id).await;
    assert!(started.elapsed() >= worker_timeout, "timed out early, after {:?}", started.elapsed());
    assert_eq!((job["status"].as_str(), job["current_state"].as_str()), (Some("failed"), Some("failed")), "{job:#}");
    assert_eq!(job["state_history"]["failed_sizes"], json!(["medium"]), "{job:#}");

    // Too late: ignored, and the branch was never dispatched again.
    let (status, body) = worker.post_result(silent, json!({"data": {"url": url_for(silent)}})).await;
    assert_eq!((status, body), (200, json!({"status": "result_ignored"})));
    assert_eq!(server.job(&job_id).await, job);
    worker.assert_no_task().await;
    server.stop().await;
}

/// The same, with the watcher driven by hand: a round before the deadline
/// leaves the branches alone, one after it records the silent branch.
#[tokio::test]
async fn the_watcher_times_out_a_branch_only_after_its_deadline() {
    let config = Config {
        worker_timeout: Duration::from_secs(60),
        // The server's own watcher never runs during the test.
        watcher_interval: Duration::from_secs(3600),
        ..config()
    };
    let server = TestServer::start_with(config).await;
    let worker = server.worker("w-late");
    worker.register(&["resize"]).await;
    let (job_id, _) = fan_out(&server, &["small", "large"]).await;
    let tasks = take(&worker, 2).await;
    let answered = tasks.iter().find(|t| size_of(t) == "large").expect("a large task");
    assert_eq!(worker.post_result(answered, json!({"data": {"url": url_for(answered)}})).await, accepted());

    let handled = server.orchestrator.time_out_overdue(Utc::now()).await.expect("watcher round");
    assert_eq!(handled, 0, "nothing is overdue yet");
    assert_eq!(server.job(&job_id).await["status"], "waiting_for_parallel_tasks");

    let later = Utc::now() + chrono::Duration::seconds(61);
    let handled = server.orchestrator.time_out_overdue(later).await.expect("watcher round");
    assert_eq!(handled, 1, "the one waiting job is overdue");
    let job = ended(&server, &job_id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["state_history"]["failed_sizes"], json!(["small"]), "{job:#}");
    let handled = server.orchestrator.time_out_overdue(later).await.expect("watcher round");
    assert_eq!(handled, 0, "an ended job is no longer watched");
    server.stop().await;
}

/// The fan-out's id, under which storage keeps its branch results.
fn wait_id(job: &Value) -> uuid::Uuid {
    job["parallel"]["wait_id"].as_str().and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("no wait_id: {job:#}"))
}

/// `worker_id`'s tasks in flight, as `GET /api/v1/workers` shows them.
async fn in_flight(server: &TestServer, worker_id: &str) -> u64 {
    let answer = server.send(Method::GET, "/api/v1/workers", Auth::Client(CLIENT_TOKEN), None).await;
    let workers = answer.json();
    let worker = workers.as_array().and_then(|all| all.iter().find(|w| w["worker_id"] == worker_id)).cloned();
    worker.and_then(|w| w["in_flight"].as_u64()).unwrap_or_else(|| panic!("no {worker_id} in {workers:#}"))
}

#[tokio::test]
async fn branches_wait_for_a_worker_to_register() {
    let server = TestServer::start_with(config()).await;
    let (job_id, job) = fan_out(&server, &["small", "large"]).await;
    let branches = job["parallel"]["branches"].as_array().expect("branches");
    assert!(branches.iter().all(|b| b["worker_id"].is_null()), "no worker takes resize yet: {job:#}");

    let worker = server.worker("w-newcomer");
    worker.register(&["resize"]).await;
    let tasks = take(&worker, 2).await;
    let job = server.job(&job_id).await;
    assert!(job["parallel"]["branches"].as_array().expect("branches").iter().all(|b| b["worker_id"] == "w-newcomer"));
    for task in &tasks {
        assert_eq!(worker.post_result(task, json!({"data": {"url": url_for(task)}})).await, accepted());
    }
    assert_eq!(ended(&server, &job_id).await["status"], "finished");
    server.stop().await;
}

/// Cancelling a fan-out: a branch still queued is taken back, the worker
/// holding one is told, a late answer is ignored, and nothing of the
/// fan-out is left in storage or on the worker's count.
#[tokio::test]
async fn cancelling_a_fan_out_takes_back_its_branches() {
    let server = TestServer::start_with(config()).await;
    let worker = server.worker("w-cancel");
    worker.register(&["resize"]).await;
    let (job_id, job) = fan_out(&server, &["small", "medium", "large"]).await;
    let wait_id = wait_id(&job);
    // One branch answered, one held by the worker, one still queued.
    let tasks = take(&worker, 2).await;
    let (answered, held) = (&tasks[0], &tasks[1]);
    assert_eq!(worker.post_result(answered, json!({"data": {"url": url_for(answered)}})).await, accepted());
    assert_eq!(server.orchestrator.storage.branch_results(wait_id).await.expect("branch results").len(), 1);

    let cancel = format!("/api/v1/jobs/{job_id}/cancel");
    let answer = server.send(Method::POST, &cancel, Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!((answer.status, answer.json()), (200, json!({"status": "cancellation_request_accepted"})));
    let job = ended(&server, &job_id).await;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    assert!(job["error_message"].as_str().unwrap_or_default().contains("waiting_for_parallel_tasks"), "{job:#}");

    let flag = format!("/_worker/workers/w-cancel/jobs/{job_id}/tasks/{}", held["task_id"].as_str().unwrap());
    let answer = server.send(Method::GET, &flag, Auth::Worker(WORKER_TOKEN), None).await;
    assert_eq!(answer.json()["cancellation_requested"], true, "{answer:?}");
    let (status, body) = worker.post_result(held, json!({"data": {"url": url_for(held)}})).await;
    assert_eq!((status, body), (200, json!({"status": "result_ignored"})));
    assert_eq!(server.job(&job_id).await, job);
    worker.assert_no_task().await;
    assert_eq!(in_flight(&server, "w-cancel").await, 0);
    let left = server.orchestrator.storage.branch_results(wait_id).await.expect("branch results");
    assert!(left.is_empty(), "a cancelled fan-out's results stay in storage: {left:?}");
    server.stop().await;
}

/// A job's `result_timeout` applies to each branch and fails the whole job;
/// the branch still queued is taken back.
#[tokio::test]
async fn a_result_timeout_fails_the_whole_fan_out() {
    let config = Config { watcher_interval: Duration::from_millis(100), ..config() };
    let server = TestServer::start_with(config).await;
    let worker = server.worker("w-timeout");
    worker.register(&["resize"]).await;
    let body = json!({"initial_data": {"image": IMAGE, "sizes": ["small", "medium", "large"]}, "result_timeout": 2});
    let job_id = server.create_job(IMAGE_PIPELINE, body).await;
    let job = server.wait_for_status(&job_id, "waiting_for_parallel_tasks").await;
    let wait_id = wait_id(&job);
    let tasks = take(&worker, 2).await;
    assert_eq!(worker.post_result(&tasks[0], json!({"data": {"url": url_for(&tasks[0])}})).await, accepted());

    let job = ended(&server, &job_id).await;
    assert_eq!((job["status"].as_str(), job["current_state"].as_str()), (Some("failed"), Some("resize")), "{job:#}");
    let message = job["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("result_timeout") && message.contains("resize"), "{message}");
    let (status, body) = worker.post_result(&tasks[1], json!({"data": {"url": url_for(&tasks[1])}})).await;
    assert_eq!((status, body), (200, json!({"status": "result_ignored"})));
    worker.assert_no_task().await;
    assert_eq!(in_flight(&server, "w-timeout").await, 0);
    let left = server.orchestrator.storage.branch_results(wait_id).await.expect("branch results");
    assert!(left.is_empty(), "a failed fan-out's results stay in storage: {left:?}");
    server.stop().await;
}
