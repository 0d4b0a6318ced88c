//! Outcomes that break the v1 blueprint contract, from `misbehave`'s modes,
//! through the real server: the host acts on none of them (no task, wait or
//! child job comes of it). A broken outcome is a handler error, retried
//! `JOB_MAX_RETRIES` times and then quarantined with the cause; a child of a
//! blueprint that is not loaded fails the job at once. The server keeps
//! serving throughout.

use std::time::Duration;

use avtomatika_tests::config::Config;
use avtomatika_tests::{Auth, CLIENT_TOKEN, TestServer, blueprints_dir, test_config};
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

const MISBEHAVE: &str = "/api/v1/jobs/misbehave";
const WAIT: Duration = Duration::from_secs(30);
const MAX_RETRIES: u32 = 2;

/// A server with `misbehave` and `hello` only.
async fn server() -> (TestServer, TempDir) {
    let dir = blueprints_dir(&[
        ("misbehave.wasm", avtomatika_plugins::MISBEHAVE_COMPONENT),
        ("hello.wasm", avtomatika_plugins::HELLO_COMPONENT),
    ]);
    let config = Config {
        blueprints_dir: Some(dir.path().to_owned()),
        job_max_retries: MAX_RETRIES,
        worker_poll_timeout: Duration::from_secs(1),
        ..test_config()
    };
    (TestServer::start_with(config).await, dir)
}

/// Runs a `mode` job until it no longer runs; returns it.
async fn run(server: &TestServer, mode: &str) -> Value {
    let job_id = server.create_job(MISBEHAVE, json!({"mode": mode})).await;
    server.wait_for(&job_id, WAIT, |j| !matches!(j["status"].as_str(), Some("pending" | "running"))).await
}

/// Asserts that nothing the broken outcome asked for was set up.
fn assert_nothing_started(job: &Value) {
    for wait in ["current_task", "parallel", "approval", "child", "aggregation_results", "sub_job_result"] {
        assert!(job[wait].is_null(), "{wait} was set up: {job:#}");
    }
    assert_eq!(job["child_job_ids"], json!([]), "{job:#}");
    assert_eq!(job["transitions"], 0, "the job never left its start state: {job:#}");
    assert_eq!(job["state_history"], json!({}), "{job:#}");
}

/// Runs `mode` and checks the job was quarantined after 1 + `JOB_MAX_RETRIES`
/// calls with a contract error naming each of `cause`.
async fn quarantined(server: &TestServer, mode: &str, cause: &[&str]) {
    let job = run(server, mode).await;
    assert_eq!(
        (job["status"].as_str(), job["current_state"].as_str()),
        (Some("quarantined"), Some("start")),
        "{job:#}"
    );
    assert_eq!(job["handler_failures"], MAX_RETRIES + 1, "{job:#}");
    let message = job["error_message"].as_str().unwrap_or_else(|| panic!("no error_message: {job:#}"));
    let attempts = format!("failed {} times", MAX_RETRIES + 1);
    for needle in ["handler of state \"start\"", &attempts, "broke the blueprint contract"].iter().chain(cause) {
        assert!(message.contains(needle), "mode {mode}: {message:?} should mention {needle:?}");
    }
    assert_nothing_started(&job);
}

#[tokio::test]
async fn a_parallel_step_without_branches_is_refused() {
    let (server, _dir) = server().await;
    quarantined(&server, "parallel-empty", &["dispatch-parallel has no branches"]).await;
    server.stop().await;
}

#[tokio::test]
async fn a_parallel_step_into_an_undeclared_state_is_refused() {
    let (server, _dir) = server().await;
    // Its one branch must never reach a worker that takes it.
    let worker = server.worker("w-noop");
    worker.register(&["noop"]).await;
    quarantined(&server, "parallel-undeclared", &["\"nowhere\"", "not among its declared transitions"]).await;
    worker.assert_no_task().await;
    server.stop().await;
}

#[tokio::test]
async fn an_approval_without_decisions_is_refused() {
    let (server, _dir) = server().await;
    quarantined(&server, "approval-empty", &["await-human-approval has no decisions"]).await;
    server.stop().await;
}

#[tokio::test]
async fn an_approval_with_an_undeclared_decision_is_refused() {
    let (server, _dir) = server().await;
    quarantined(&server, "approval-undeclared", &["\"nowhere\"", "not among its declared transitions"]).await;
    server.stop().await;
}

#[tokio::test]
async fn a_child_run_with_an_undeclared_transition_is_refused() {
    let (server, _dir) = server().await;
    quarantined(&server, "child-undeclared", &["\"nowhere\"", "not among its declared transitions"]).await;
    // No child was created: the one job is all there is.
    let list = server.send(Method::GET, "/api/v1/jobs", Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!(list.json().as_array().map(Vec::len), Some(1), "{list:?}");
    server.stop().await;
}

/// A blueprint name is only known at run time: the job fails at once (no
/// retry can load it), naming the blueprint.
#[tokio::test]
async fn a_child_of_a_blueprint_that_is_not_loaded_fails_the_job_at_once() {
    let (server, _dir) = server().await;
    let job = run(&server, "child-unknown").await;
    assert_eq!((job["status"].as_str(), job["current_state"].as_str()), (Some("failed"), Some("start")), "{job:#}");
    assert_eq!(job["handler_failures"], 0, "{job:#}");
    let message = job["error_message"].as_str().unwrap_or_default();
    for needle in ["\"no-such-blueprint\"", "not loaded"] {
        assert!(message.contains(needle), "{message:?} should mention {needle:?}");
    }
    assert_nothing_started(&job);
    server.stop().await;
}

/// Every broken mode at once, then healthy work: the server still serves.
#[tokio::test]
async fn the_server_keeps_serving_after_broken_outcomes() {
    let (server, _dir) = server().await;
    let modes = [
        "parallel-empty",
        "parallel-undeclared",
        "approval-empty",
        "approval-undeclared",
        "child-undeclared",
        "child-unknown",
    ];
    let mut broken = Vec::new();
    for mode in modes {
        broken.push(server.create_job(MISBEHAVE, json!({"mode": mode})).await);
    }
    for job_id in &broken {
        let job =
            server.wait_for(job_id, WAIT, |j| matches!(j["status"].as_str(), Some("quarantined" | "failed"))).await;
        assert!(job["error_message"].as_str().is_some_and(|m| !m.is_empty()), "{job:#}");
    }

    let status = server.send(Method::GET, "/_public/status", Auth::None, None).await;
    assert_eq!((status.status, status.json()), (200, json!({"status": "ok"})));
    let ok = run(&server, "ok").await;
    assert_eq!((ok["status"].as_str(), ok["state_history"]["ok"].as_bool()), (Some("finished"), Some(true)), "{ok:#}");

    let worker = server.worker("w-hello");
    worker.register(&["greet"]).await;
    let hello = server.create_job("/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    let task = worker.next_task(WAIT).await;
    assert_eq!(task["job_id"], hello.as_str(), "{task:#}");
    assert_eq!(worker.post_result(&task, json!({"data": {"greeting": "Hi"}})).await.0, 200);
    server.wait_for(&hello, WAIT, |j| j["status"] == "finished").await;

    let quarantined = server.send(Method::GET, "/_public/jobs/quarantined", Auth::None, None).await.json();
    assert_eq!(quarantined.as_array().map(Vec::len), Some(5), "{quarantined:#}");
    server.stop().await;
}
