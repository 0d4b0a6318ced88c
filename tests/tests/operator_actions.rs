//! What an operator does by hand through the client API, and what the
//! history keeps of it: retrying a quarantined job, re-sending a webhook,
//! cancelling (with who asked), filtering the job listing, listing the
//! loaded blueprints. Each with its refusals (another client's job, the
//! wrong status, bad filter values).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avtomatika::config::{Config, HistoryDatabase};
use avtomatika::webhook::parse_networks;
use avtomatika_tests::databases::ThrowawayDb;
use avtomatika_tests::{Answer, Auth, CLIENT_TOKEN, TestServer, TestWorker, test_config};
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use reqwest::Method;
use serde_json::{Value, json};

const HELLO: &str = "/api/v1/jobs/hello";
const OTHER_TOKEN: &str = "other-client-token";
const WAIT: Duration = Duration::from_secs(10);

/// Two clients (`tester` holds CLIENT_TOKEN), history in `dir` when asked,
/// webhooks allowed to this machine.
fn config(dir: &Path, history: bool) -> Config {
    config_in(dir, history.then(|| HistoryDatabase::Sqlite(dir.join("history.db"))))
}

fn config_in(dir: &Path, history: Option<HistoryDatabase>) -> Config {
    let clients = dir.join("clients.toml");
    std::fs::write(&clients, format!("[tester]\ntoken = \"{CLIENT_TOKEN}\"\n\n[other]\ntoken = \"{OTHER_TOKEN}\"\n"))
        .expect("clients.toml");
    let mut config = Config {
        clients_config_path: Some(clients),
        history_database: history,
        worker_poll_timeout: Duration::from_secs(1),
        ..test_config()
    };
    config.webhooks.allowed_networks = parse_networks("127.0.0.0/8").expect("network");
    config
}

async fn call(server: &TestServer, method: Method, path: &str, token: &str) -> Answer {
    server.send(method, path, Auth::Client(token), None).await
}

async fn create(server: &TestServer, token: &str, body: Value) -> String {
    let answer = server.send(Method::POST, HELLO, Auth::Client(token), Some(&body.to_string())).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    answer.json()["job_id"].as_str().expect("job_id").to_owned()
}

/// Takes the next task, which must be `job_id`'s, and answers it with `result`.
async fn answer(worker: &TestWorker<'_>, job_id: &str, result: Value) {
    let task = worker.next_task(WAIT).await;
    assert_eq!(task["job_id"], job_id, "{task:#}");
    let (status, body) = worker.post_result(&task, result).await;
    assert_eq!(status, 200, "{body}");
}

const PERMANENT: &str = r#"{"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": "model missing"}}"#;

/// The history's events for `job_id`, once one of type `kind` is written.
async fn history_events(server: &TestServer, job_id: &str, kind: &str) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = call(server, Method::GET, &format!("/api/v1/jobs/{job_id}/history"), CLIENT_TOKEN).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let events = answer.json().as_array().cloned().unwrap_or_default();
        if events.iter().any(|e| e["event_type"] == kind) {
            return events;
        }
        assert!(Instant::now() < deadline, "no {kind} event: {events:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn event<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    events.iter().find(|e| e["event_type"] == kind).unwrap_or_else(|| panic!("no {kind} event in {events:#?}"))
}

#[tokio::test]
async fn a_quarantined_job_is_retried_from_its_state_and_the_history_says_who() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = TestServer::start_with(config(dir.path(), true)).await;
    let worker = server.worker("greeter");
    worker.register(&["greet"]).await;
    let job_id = create(&server, CLIENT_TOKEN, json!({"name": "Ada"})).await;
    let retry = format!("/api/v1/jobs/{job_id}/retry");

    // Not quarantined yet: refused, and nothing changes.
    let refused = call(&server, Method::POST, &retry, CLIENT_TOKEN).await.assert_error(409);
    assert!(refused.contains("quarantined"), "{refused}");
    answer(&worker, &job_id, serde_json::from_str(PERMANENT).expect("json")).await;
    let job = server.wait_for_status(&job_id, "quarantined").await;
    assert!(job["error_message"].as_str().is_some_and(|m| m.contains("model missing")), "{job:#}");

    // Another client cannot see it, so cannot retry it; unknown ids are 404.
    call(&server, Method::POST, &retry, OTHER_TOKEN).await.assert_error(404);
    let unknown = format!("/api/v1/jobs/{}/retry", uuid::Uuid::new_v4());
    call(&server, Method::POST, &unknown, CLIENT_TOKEN).await.assert_error(404);
    call(&server, Method::POST, "/api/v1/jobs/not-an-id/retry", CLIENT_TOKEN).await.assert_error(404);

    let accepted = call(&server, Method::POST, &retry, CLIENT_TOKEN).await;
    assert_eq!((accepted.status, accepted.json()), (200, json!({"status": "retry_accepted", "job_id": job_id})));
    // The state's handler ran again: a new task, and the job ends well this time.
    let job = server.wait_for_status(&job_id, "waiting_for_worker").await;
    assert!(job["error_message"].is_null(), "the old error is gone: {job:#}");
    answer(&worker, &job_id, json!({"status": "success", "data": {"greeting": "Hello, Ada"}})).await;
    let job = server.wait_for_status(&job_id, "finished").await;
    assert_eq!(job["state_history"]["greeting"], "Hello, Ada", "{job:#}");
    call(&server, Method::POST, &retry, CLIENT_TOKEN).await.assert_error(409);

    let events = history_events(&server, &job_id, "job_finished").await;
    let retried = event(&events, "job_retried");
    assert_eq!(retried["context_snapshot"]["by"], "tester", "{retried:#}");
    assert!(
        retried["context_snapshot"]["previous_error"].as_str().is_some_and(|m| m.contains("model missing")),
        "{retried:#}"
    );
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event_type"].as_str()).collect();
    let at = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap_or_else(|| panic!("{kind} in {kinds:?}"));
    assert!(at("job_quarantined") < at("job_retried") && at("job_retried") < at("job_finished"), "{kinds:?}");

    // The history's listing follows the job through its second life.
    let listed = call(&server, Method::GET, "/api/v1/jobs?status=finished", CLIENT_TOKEN).await.json();
    assert_eq!(listed[0]["id"], job_id, "{listed:#}");
    server.stop().await;
}

/// A receiver that records every webhook body.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Value>>>);

impl Receiver {
    async fn start() -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let receiver = Self::default();
        let app = Router::new().route("/hook", post(record)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let bodies = self.0.lock().expect("lock").clone();
            if bodies.len() >= n {
                return bodies;
            }
            assert!(Instant::now() < deadline, "{} of {n} webhooks: {bodies:?}", bodies.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn record(State(receiver): State<Receiver>, body: axum::Json<Value>) {
    receiver.0.lock().expect("lock").push(body.0);
}

#[tokio::test]
async fn an_ended_jobs_webhook_is_sent_again_on_request_at_most_every_ten_seconds() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = TestServer::start_with(config(dir.path(), true)).await;
    let (receiver, url) = Receiver::start().await;
    let worker = server.worker("greeter");
    worker.register(&["greet"]).await;
    let job_id = create(&server, CLIENT_TOKEN, json!({"initial_data": {"name": "Ada"}, "webhook_url": url})).await;
    let resend = format!("/api/v1/jobs/{job_id}/webhook");

    let refused = call(&server, Method::POST, &resend, CLIENT_TOKEN).await.assert_error(409);
    assert!(refused.contains("not ended"), "{refused}");
    answer(&worker, &job_id, json!({"status": "success", "data": {"greeting": "Hello"}})).await;
    let first = receiver.wait_for(1).await;

    call(&server, Method::POST, &resend, OTHER_TOKEN).await.assert_error(404);
    let queued = call(&server, Method::POST, &resend, CLIENT_TOKEN).await;
    assert_eq!((queued.status, queued.json()), (202, json!({"status": "webhook_queued", "job_id": job_id})));
    let both = receiver.wait_for(2).await;
    assert_eq!(both[1], first[0], "the same payload as at the end");
    assert_eq!(both[1]["event"], "job_finished");
    let again = call(&server, Method::POST, &resend, CLIENT_TOKEN).await.assert_error(429);
    assert!(again.contains("10 s"), "{again}");

    // A job created without a webhook has none to send.
    let plain = create(&server, CLIENT_TOKEN, json!({"name": "Bo"})).await;
    answer(&worker, &plain, json!({"status": "success"})).await;
    server.wait_for_status(&plain, "finished").await;
    let none = call(&server, Method::POST, &format!("/api/v1/jobs/{plain}/webhook"), CLIENT_TOKEN).await;
    assert!(none.assert_error(409).contains("without a webhook_url"));

    let events = history_events(&server, &job_id, "webhook_resent").await;
    assert_eq!(event(&events, "webhook_resent")["context_snapshot"]["by"], "tester");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.wait_for(2).await.len(), 2, "the refused re-send sent nothing");
    server.stop().await;
}

#[tokio::test]
async fn a_cancellation_is_recorded_with_who_asked() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = TestServer::start_with(config(dir.path(), true)).await;
    let job_id = create(&server, CLIENT_TOKEN, json!({"name": "Ada"})).await;
    server.wait_for_status(&job_id, "waiting_for_worker").await;
    let cancelled = call(&server, Method::POST, &format!("/api/v1/jobs/{job_id}/cancel"), CLIENT_TOKEN).await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    server.wait_for_status(&job_id, "cancelled").await;
    let events = history_events(&server, &job_id, "cancellation_requested").await;
    assert_eq!(event(&events, "cancellation_requested")["context_snapshot"]["by"], "tester");
    server.stop().await;
}

/// Ids of a listing, in order.
fn ids(listing: &Value) -> Vec<String> {
    listing.as_array().into_iter().flatten().filter_map(|j| j["id"].as_str().map(str::to_owned)).collect()
}

/// The same filters, from storage (history off) and from the history's SQL.
async fn filters_select_by_status_blueprint_and_time(dir: &Path, history: Option<HistoryDatabase>) {
    let server = TestServer::start_with(config_in(dir, history)).await;
    let worker = server.worker("greeter");
    worker.register(&["greet"]).await;
    let quarantined = create(&server, CLIENT_TOKEN, json!({"name": "A"})).await;
    answer(&worker, &quarantined, serde_json::from_str(PERMANENT).expect("json")).await;
    server.wait_for_status(&quarantined, "quarantined").await;
    let finished = create(&server, CLIENT_TOKEN, json!({"name": "B"})).await;
    answer(&worker, &finished, json!({"status": "success"})).await;
    server.wait_for_status(&finished, "finished").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let boundary = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiting = create(&server, CLIENT_TOKEN, json!({"name": "C"})).await;
    server.wait_for_status(&waiting, "waiting_for_worker").await;
    let theirs = create(&server, OTHER_TOKEN, json!({"name": "D"})).await;
    // The history writes in batches: wait until it holds every end.
    let list = |query: String| {
        let server = &server;
        async move { call(server, Method::GET, &format!("/api/v1/jobs{query}"), CLIENT_TOKEN).await }
    };
    let deadline = Instant::now() + WAIT;
    while ids(&list("?status=quarantined,finished".into()).await.json()).len() < 2 {
        assert!(Instant::now() < deadline, "the ends never reached the listing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let all = ids(&list(String::new()).await.json());
    assert_eq!(
        all,
        [waiting.as_str(), finished.as_str(), quarantined.as_str()],
        "newest first, own jobs only (not {theirs})"
    );
    assert_eq!(ids(&list("?status=quarantined".into()).await.json()), [quarantined.as_str()]);
    assert_eq!(ids(&list("?status=finished,quarantined&limit=1&offset=1".into()).await.json()), [quarantined.as_str()]);
    assert_eq!(ids(&list("?blueprint=hello&status=finished".into()).await.json()), [finished.as_str()]);
    assert!(ids(&list("?blueprint=pipeline".into()).await.json()).is_empty());
    let since = boundary.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!(ids(&list(format!("?since={since}")).await.json()), [waiting.as_str()]);
    assert_eq!(ids(&list(format!("?until={since}")).await.json()), [finished.as_str(), quarantined.as_str()]);

    for (query, field) in [
        ("?status=done", "status"),
        ("?since=yesterday", "since"),
        ("?until=2026-13-01T00:00:00Z", "until"),
        ("?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
    ] {
        let message = list(query.into()).await.assert_error(400);
        assert!(message.contains(field), "{query}: {message}");
    }
    let long = format!("?blueprint={}", "b".repeat(300));
    assert!(list(long).await.assert_error(400).contains("blueprint"));
    server.stop().await;
}

#[tokio::test]
async fn the_listing_filters_from_storage() {
    let dir = tempfile::tempdir().expect("temporary directory");
    filters_select_by_status_blueprint_and_time(dir.path(), None).await;
}

#[tokio::test]
async fn the_listing_filters_from_a_sqlite_history() {
    let dir = tempfile::tempdir().expect("temporary directory");
    filters_select_by_status_blueprint_and_time(dir.path(), Some(HistoryDatabase::Sqlite(dir.path().join("h.db"))))
        .await;
}

#[tokio::test]
async fn the_listing_filters_from_a_postgres_history() {
    let db = ThrowawayDb::create().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    filters_select_by_status_blueprint_and_time(dir.path(), Some(HistoryDatabase::Postgres(db.uri().as_str().into())))
        .await;
    db.drop_now().await;
}

#[tokio::test]
async fn the_loaded_blueprints_are_listed_with_their_versions_and_states() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = TestServer::start_with(config(dir.path(), false)).await;
    let blueprints = call(&server, Method::GET, "/api/v1/blueprints", CLIENT_TOKEN).await.json();
    let hello = blueprints
        .as_array()
        .and_then(|all| all.iter().find(|b| b["name"] == "hello"))
        .unwrap_or_else(|| panic!("hello in {blueprints:#}"));
    assert_eq!(hello["endpoint"], HELLO, "{hello:#}");
    assert_eq!(hello["api_version"], "v1");
    let version = hello["version"].as_str().unwrap_or_default();
    assert!(version.len() == 64 && version.chars().all(|c| c.is_ascii_hexdigit()), "a SHA-256: {hello:#}");
    let states = hello["states"].as_array().cloned().unwrap_or_default();
    let start = hello["start"].as_str().unwrap_or_default();
    assert!(states.iter().any(|s| s["name"] == start && s["end"].is_null()), "{hello:#}");
    assert!(states.iter().any(|s| s["end"] == "finished"), "{hello:#}");
    let names: Vec<&str> = blueprints.as_array().into_iter().flatten().filter_map(|b| b["name"].as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "by name");
    call(&server, Method::GET, "/api/v1/blueprints", "wrong-token").await.assert_error(401);
    server.stop().await;
}
