//! Job history end to end (`HISTORY_DATABASE_URI`): the real server writes
//! to a real SQLite file or a throw-away PostgreSQL database, and everything
//! is read back over HTTP (or, for worker events, from the database itself).

use std::path::Path;
use std::time::{Duration, Instant};

use avtomatika::config::{Config, HistoryDatabase};
use avtomatika_tests::databases::{CutProxy, ThrowawayDb};
use avtomatika_tests::{Auth, CLIENT_TOKEN, TestServer, test_config};
use prometheus_parse::{Scrape, Value as Metric};
use serde_json::{Value, json};
use sqlx::Connection;

const OTHER_TOKEN: &str = "other-client-token";

/// The event types a `hello` job run by a registered worker leaves, in order.
const HELLO_EVENTS: &[&str] =
    &["job_created", "state_started", "state_finished", "task_dispatched", "task_finished", "job_finished"];

/// `test_config()` with history in `database`, timestamps in Tokyo, and two
/// clients: the harness's and another one.
fn history_config(database: HistoryDatabase, dir: &Path) -> Config {
    let clients = dir.join("clients.toml");
    std::fs::write(&clients, format!("[tester]\ntoken = \"{CLIENT_TOKEN}\"\n\n[other]\ntoken = \"{OTHER_TOKEN}\"\n"))
        .unwrap();
    Config {
        history_database: Some(database),
        tz: chrono_tz::Asia::Tokyo,
        clients_config_path: Some(clients),
        ..test_config()
    }
}

async fn history(server: &TestServer, job_id: &str, token: &str) -> (u16, Value) {
    let path = format!("/api/v1/jobs/{job_id}/history");
    let answer = server.send(reqwest::Method::GET, &path, Auth::Client(token), None).await;
    let status = answer.status;
    (status, if status == 200 { answer.json() } else { Value::Null })
}

fn event_types(events: &Value) -> Vec<String> {
    events.as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap().to_owned()).collect()
}

/// Waits until the job's history holds `count` events (the writer is
/// asynchronous, and events recorded once a change is stored can reach the
/// database after later ones).
async fn wait_for_history(server: &TestServer, job_id: &str, count: usize, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, events) = history(server, job_id, CLIENT_TOKEN).await;
        if status == 200 && events.as_array().is_some_and(|e| e.len() >= count) {
            return events;
        }
        assert!(Instant::now() < deadline, "history of {job_id} never reached {count} events: {status} {events:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scrape(server: &TestServer) -> Scrape {
    let answer = server.send(reqwest::Method::GET, "/_public/metrics", Auth::None, None).await;
    assert_eq!(answer.status, 200);
    Scrape::parse(answer.text.lines().map(|line| Ok(line.to_owned()))).expect("the scrape parses")
}

fn metric(scrape: &Scrape, name: &str) -> f64 {
    match scrape.samples.iter().find(|s| s.metric == name).map(|s| &s.value) {
        Some(Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v)) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

/// Checks the full event sequence of a finished `hello` job.
fn assert_hello_history(events: &Value, job_id: &str, name: &str, worker_id: &str) {
    assert_eq!(event_types(events), HELLO_EVENTS, "{events:#}");
    let events = events.as_array().unwrap();
    let mut previous = chrono::DateTime::<chrono::FixedOffset>::MIN_UTC.fixed_offset();
    for event in events {
        assert_eq!(event["job_id"], job_id);
        let stamp = event["timestamp"].as_str().unwrap();
        assert!(stamp.ends_with("+09:00"), "timestamps are rendered in TZ: {stamp}");
        let at = chrono::DateTime::parse_from_rfc3339(stamp).unwrap();
        assert!(at > previous, "events are in order: {events:#?}");
        previous = at;
    }
    let [created, started, finished, dispatched, result, ended] = events.as_slice() else { unreachable!() };
    assert_eq!(created["state"], "start");
    assert_eq!(created["context_snapshot"]["initial_data"]["name"], name);
    assert_eq!(started["state"], "start");
    assert!(finished["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0), "handler duration: {finished}");
    assert_eq!(finished["context_snapshot"]["action"], "dispatch-task");
    assert_eq!(dispatched["worker_id"], worker_id);
    assert_eq!(dispatched["context_snapshot"]["task_type"], "greet");
    assert_eq!(dispatched["context_snapshot"]["params"]["name"], name);
    assert_eq!(dispatched["attempt_number"], 1);
    assert_eq!(result["task_id"], dispatched["task_id"]);
    assert_eq!(result["worker_id"], worker_id);
    assert_eq!(result["context_snapshot"]["status"], "success");
    assert!(result["duration_ms"].as_f64().is_some(), "task round trip: {result}");
    assert_eq!(ended["state"], "finished");
    assert_eq!(ended["context_snapshot"]["status"], "finished");
    assert_eq!(ended["context_snapshot"]["state_history"]["greeting"], name);
}

#[tokio::test]
async fn a_sqlite_file_records_every_step_of_a_job_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nested").join("history.db");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let server = TestServer::start_with(history_config(HistoryDatabase::Sqlite(file.clone()), dir.path())).await;
    assert!(file.exists(), "the SQLite file is created at start-up");
    let worker = server.worker("greeter");
    worker.register(&["greet"]).await;
    let job_id = worker.run_hello("Ada").await;

    let events = wait_for_history(&server, &job_id, HELLO_EVENTS.len(), Duration::from_secs(10)).await;
    assert_hello_history(&events, &job_id, "Ada", "greeter");

    // Owner only; unknown and malformed ids are 404.
    assert_eq!(history(&server, &job_id, OTHER_TOKEN).await.0, 404);
    assert_eq!(history(&server, &uuid::Uuid::new_v4().to_string(), CLIENT_TOKEN).await.0, 404);
    assert_eq!(history(&server, "not-a-uuid", CLIENT_TOKEN).await.0, 404);
    let paged = server
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{job_id}/history?limit=2&offset=1"),
            Auth::Client(CLIENT_TOKEN),
            None,
        )
        .await
        .json();
    assert_eq!(event_types(&paged), &HELLO_EVENTS[1..3]);

    // Worker events are in the same file.
    let heartbeat = worker.heartbeat(Some(json!({"status": "busy"}))).await;
    assert_eq!(heartbeat.status, 200);
    let url = format!("sqlite://{}", file.display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT event_type, worker_info_snapshot FROM worker_events WHERE worker_id = 'greeter' ORDER BY at_us, id",
        )
        .fetch_all(&mut db)
        .await
        .unwrap();
        let kinds: Vec<&str> = rows.iter().map(|(kind, _)| kind.as_str()).collect();
        if kinds == ["registered", "status_update"] {
            let snapshot: Value = serde_json::from_str(&rows[0].1).unwrap();
            assert_eq!(snapshot["supported_tasks"], json!(["greet"]), "{snapshot}");
            break;
        }
        assert!(Instant::now() < deadline, "worker events: {kinds:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// `HISTORY_DATABASE_URI` as the example application's `.env` writes it:
/// `sqlite:` and a path, no slashes. Read from the variable, not built in
/// code, so the URI parsing is what is tested; the file is created at that
/// path (not at one named `sqlite:…`) and holds the job's history.
#[tokio::test]
async fn a_sqlite_uri_without_slashes_writes_the_named_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("avtomatika_history.db");
    let uri = format!("sqlite:{}", file.display());
    let from_env = Config::from_lookup(|name| (name == "HISTORY_DATABASE_URI").then(|| uri.clone())).unwrap();
    let database = from_env.history_database.expect("HISTORY_DATABASE_URI is read");
    assert_eq!(database, HistoryDatabase::Sqlite(file.clone()));
    let server = TestServer::start_with(history_config(database, dir.path())).await;
    assert!(file.exists(), "the SQLite file is created where the URI says");
    let stray: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("sqlite"))
        .collect();
    assert!(stray.is_empty(), "no file named after the URI: {stray:?}");
    let worker = server.worker("greeter");
    worker.register(&["greet"]).await;
    let job_id = worker.run_hello("Ada").await;
    let events = wait_for_history(&server, &job_id, HELLO_EVENTS.len(), Duration::from_secs(10)).await;
    assert_hello_history(&events, &job_id, "Ada", "greeter");
    server.stop().await;
}

/// `:memory:` keeps one database for the server's life: the writer's
/// events are what the API reads back.
#[tokio::test]
async fn an_in_memory_sqlite_database_keeps_the_history_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let from_env =
        Config::from_lookup(|name| (name == "HISTORY_DATABASE_URI").then(|| "sqlite::memory:".to_owned())).unwrap();
    let database = from_env.history_database.expect("HISTORY_DATABASE_URI is read");
    assert_eq!(database, HistoryDatabase::SqliteMemory);
    let server = TestServer::start_with(history_config(database, dir.path())).await;
    let worker = server.worker("greeter");
    worker.register(&["greet"]).await;
    let job_id = worker.run_hello("Ada").await;
    let events = wait_for_history(&server, &job_id, HELLO_EVENTS.len(), Duration::from_secs(10)).await;
    assert_hello_history(&events, &job_id, "Ada", "greeter");
    server.stop().await;
}

#[tokio::test]
async fn history_off_means_no_history_route() {
    let server = TestServer::start_with(test_config()).await;
    let job_id = server.create_job("/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    let answer = server
        .send(reqwest::Method::GET, &format!("/api/v1/jobs/{job_id}/history"), Auth::Client(CLIENT_TOKEN), None)
        .await;
    assert_eq!(answer.status, 404, "{answer:?}");
    server.stop().await;
}

#[tokio::test]
async fn postgres_history_outlives_retention_and_backs_listing_and_dashboard() {
    let db = ThrowawayDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        job_retention: Duration::from_secs(1),
        ..history_config(HistoryDatabase::Postgres(db.uri().as_str().into()), dir.path())
    };
    let server = TestServer::start_with(config).await;
    let worker = server.worker("greeter");
    worker.register(&["greet"]).await;
    let first = worker.run_hello("Ada").await;
    let events = wait_for_history(&server, &first, HELLO_EVENTS.len(), Duration::from_secs(10)).await;
    assert_hello_history(&events, &first, "Ada", "greeter");

    // A second job ending after the first one's retention makes storage forget the first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = worker.run_hello("Bob").await;
    wait_for_history(&server, &second, HELLO_EVENTS.len(), Duration::from_secs(10)).await;
    let gone =
        server.send(reqwest::Method::GET, &format!("/api/v1/jobs/{first}"), Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!(gone.status, 404, "storage no longer holds the first job");

    // Its history is still there, for its owner only.
    let (status, events) = history(&server, &first, CLIENT_TOKEN).await;
    assert_eq!(status, 200);
    assert_eq!(event_types(&events), HELLO_EVENTS);
    assert_eq!(history(&server, &first, OTHER_TOKEN).await.0, 404);

    // The listing comes from the history: both jobs, newest first, the pruned one summarised.
    let list = server.send(reqwest::Method::GET, "/api/v1/jobs", Auth::Client(CLIENT_TOKEN), None).await.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:#?}");
    assert_eq!(list[0]["id"], second.as_str());
    assert_eq!(list[0]["initial_data"]["name"], "Bob", "a retained job is shown whole");
    assert_eq!(list[1]["id"], first.as_str());
    assert_eq!(list[1]["status"], "finished");
    assert_eq!(list[1]["retained"], false);
    assert!(list[1]["created_at"].as_str().unwrap().ends_with("+09:00"));
    let others = server.send(reqwest::Method::GET, "/api/v1/jobs", Auth::Client(OTHER_TOKEN), None).await.json();
    assert_eq!(others, json!([]));

    // So do the dashboard's counts: two finished jobs, though storage retains one.
    let dashboard =
        server.send(reqwest::Method::GET, "/api/v1/dashboard", Auth::Client(CLIENT_TOKEN), None).await.json();
    assert_eq!(dashboard["jobs"]["finished"], 2, "{dashboard}");

    // The schema came from the migrations.
    let mut conn = db.connect().await;
    let (migrations,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&mut conn).await.unwrap();
    assert!(migrations >= 1);
    conn.close().await.unwrap();
    server.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn jobs_run_on_while_the_database_is_gone_and_their_events_follow_it_back() {
    let db = ThrowawayDb::create().await;
    let proxy = CutProxy::start(5432).await;
    let dir = tempfile::tempdir().unwrap();
    let config = history_config(HistoryDatabase::Postgres(db.uri_via(proxy.port).as_str().into()), dir.path());
    let server = TestServer::start_with(config).await;
    let worker = server.worker("greeter");
    worker.register(&["greet"]).await;
    let before = worker.run_hello("Ada").await;
    wait_for_history(&server, &before, HELLO_EVENTS.len(), Duration::from_secs(10)).await;

    proxy.cut();
    let started = Instant::now();
    let during = worker.run_hello("Bob").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the job did not wait for the database: {:?}",
        started.elapsed()
    );
    let answer = server
        .send(reqwest::Method::GET, &format!("/api/v1/jobs/{during}/history"), Auth::Client(CLIENT_TOKEN), None)
        .await;
    assert_eq!(answer.status, 503, "a read while the database is gone says so: {answer:?}");
    assert!(answer.assert_error(503).contains("history"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&scrape(&server).await, "avtomatika_history_write_failures_total") < 1.0 {
        assert!(Instant::now() < deadline, "the failed writes are counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let buffered = scrape(&server).await;
    assert!(metric(&buffered, "avtomatika_history_buffer_depth") >= HELLO_EVENTS.len() as f64);
    assert_eq!(metric(&buffered, "avtomatika_history_events_dropped_total"), 0.0);

    proxy.restore();
    let events = wait_for_history(&server, &during, HELLO_EVENTS.len(), Duration::from_secs(20)).await;
    assert_hello_history(&events, &during, "Bob", "greeter");
    assert_eq!(event_types(&history(&server, &before, CLIENT_TOKEN).await.1), HELLO_EVENTS);
    server.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn a_full_buffer_drops_events_and_counts_them_but_never_blocks_a_job() {
    let db = ThrowawayDb::create().await;
    let proxy = CutProxy::start(5432).await;
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        history_buffer_size: 8,
        ..history_config(HistoryDatabase::Postgres(db.uri_via(proxy.port).as_str().into()), dir.path())
    };
    let server = TestServer::start_with(config).await;
    let worker = server.worker("greeter");
    worker.register(&["greet"]).await;
    proxy.cut();
    for name in ["a", "b", "c", "d"] {
        worker.run_hello(name).await;
    }
    let scraped = scrape(&server).await;
    let dropped = metric(&scraped, "avtomatika_history_events_dropped_total");
    assert!(dropped >= 1.0, "24 events into a buffer of 8 (plus one batch in hand) must drop some: {dropped}");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&scrape(&server).await, "avtomatika_history_buffer_depth") > 0.0 {
        assert!(Instant::now() < deadline, "the buffer drains once the database is back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = worker.run_hello("e").await;
    let events = wait_for_history(&server, &after, HELLO_EVENTS.len(), Duration::from_secs(20)).await;
    assert_eq!(event_types(&events), HELLO_EVENTS, "recording resumes in full once there is room");
    server.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn an_unreachable_database_at_start_up_is_a_clear_error_without_the_password() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let uri = format!("postgresql://avtomatika:hunter2-secret@127.0.0.1:{port}/history");
    let config = Config { history_database: Some(HistoryDatabase::Postgres(uri.as_str().into())), ..test_config() };
    let error = match avtomatika::App::new(config).await {
        Ok(_) => panic!("the server must not start without its history database"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("HISTORY_DATABASE_URI"), "{error}");
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

/// Whether `expected` occurs in `types` in this order (other events may sit between).
fn in_order(types: &[String], expected: &[&str]) -> bool {
    let mut rest = types.iter();
    expected.iter().all(|want| rest.any(|t| t == want))
}

/// Waits until the job's history holds every event of `expected`, in order.
async fn wait_for_events(server: &TestServer, job_id: &str, expected: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, events) = history(server, job_id, CLIENT_TOKEN).await;
        if status == 200 && in_order(&event_types(&events), expected) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "history of {job_id} lacks {expected:?} in order: {:?}",
            event_types(&events)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find<'a>(events: &'a Value, event_type: &str) -> &'a Value {
    events.as_array().unwrap().iter().find(|e| e["event_type"] == event_type).unwrap_or_else(|| panic!("{event_type}"))
}

#[tokio::test]
async fn retries_timeouts_quarantine_cancellation_approvals_fan_outs_and_child_jobs_are_recorded() {
    let blueprints = avtomatika_tests::blueprints_dir(&[
        ("hello.wasm", avtomatika_plugins::HELLO_COMPONENT),
        ("misbehave.wasm", avtomatika_plugins::MISBEHAVE_COMPONENT),
        ("moderation.wasm", avtomatika_plugins::MODERATION_COMPONENT),
        ("image-pipeline.wasm", avtomatika_plugins::IMAGE_PIPELINE_COMPONENT),
        ("order.wasm", avtomatika_plugins::ORDER_COMPONENT),
        ("payment.wasm", avtomatika_plugins::PAYMENT_COMPONENT),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        blueprints_dir: Some(blueprints.path().to_owned()),
        job_max_retries: 1,
        // The watcher runs when the test says (`time_out_overdue`).
        watcher_interval: Duration::from_secs(3600),
        ..history_config(HistoryDatabase::Sqlite(dir.path().join("history.db")), dir.path())
    };
    let server = TestServer::start_with(config).await;

    // Parked, then cancelled before any worker took it.
    let cancelled = server.create_job("/api/v1/jobs/hello", json!({"name": "Cy"})).await;
    server.wait_for_status(&cancelled, "waiting_for_worker").await;
    let answer = server
        .send(reqwest::Method::POST, &format!("/api/v1/jobs/{cancelled}/cancel"), Auth::Client(CLIENT_TOKEN), None)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    wait_for_events(&server, &cancelled, &["task_waiting_for_worker", "cancellation_requested", "job_cancelled"]).await;

    // No worker within the dispatch timeout: timed out, failed.
    let late =
        server.create_job("/api/v1/jobs/hello", json!({"initial_data": {"name": "Di"}, "dispatch_timeout": 1})).await;
    server.wait_for_status(&late, "waiting_for_worker").await;
    server.orchestrator.time_out_overdue(chrono::Utc::now() + chrono::Duration::seconds(5)).await.unwrap();
    let events = wait_for_events(&server, &late, &["task_waiting_for_worker", "task_timed_out", "job_failed"]).await;
    assert!(
        find(&events, "task_timed_out")["context_snapshot"]["cause"].as_str().unwrap().contains("dispatch_timeout")
    );

    // A transient failure is retried, then succeeds.
    let worker = server.worker("w1");
    worker.register(&["greet", "publish", "resize", "charge", "ship"]).await;
    let retried = server.create_job("/api/v1/jobs/hello", json!({"name": "Ed"})).await;
    let task = worker.next_task(Duration::from_secs(10)).await;
    let failure = json!({"status": "failure", "error": {"code": "TRANSIENT_ERROR", "message": "busy"}});
    assert_eq!(worker.post_result(&task, failure).await.0, 200);
    let task = worker.next_task(Duration::from_secs(10)).await;
    assert_eq!(worker.post_result(&task, json!({"data": {"greeting": "Ed"}})).await.0, 200);
    let events = wait_for_events(
        &server,
        &retried,
        &["task_dispatched", "task_finished", "task_retried", "task_dispatched", "task_finished", "job_finished"],
    )
    .await;
    let attempts: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "task_dispatched")
        .map(|e| &e["attempt_number"])
        .collect();
    assert_eq!(attempts, [&json!(1), &json!(2)]);
    assert_eq!(find(&events, "task_finished")["context_snapshot"]["error"]["code"], "TRANSIENT_ERROR");

    // A trapping handler: failed twice (1 + JOB_MAX_RETRIES), then quarantined.
    let trapped = server.create_job("/api/v1/jobs/misbehave", json!({"mode": "trap"})).await;
    let events = wait_for_events(
        &server,
        &trapped,
        &["job_created", "state_started", "state_failed", "state_started", "state_failed", "job_quarantined"],
    )
    .await;
    assert!(find(&events, "state_failed")["context_snapshot"]["error"].as_str().is_some());

    // A human decision.
    let moderated = server.create_job("/api/v1/jobs/moderation", json!({"title": "T", "body": "B"})).await;
    server.wait_for_status(&moderated, "waiting_for_human").await;
    let decided = server
        .send(
            reqwest::Method::POST,
            &format!("/_public/webhooks/approval/{moderated}"),
            Auth::None,
            Some(r#"{"decision":"rejected"}"#),
        )
        .await;
    assert_eq!(decided.status, 200, "{decided:?}");
    let events = wait_for_events(&server, &moderated, &["approval_requested", "approval_decided"]).await;
    assert_eq!(find(&events, "approval_decided")["context_snapshot"]["decision"], "rejected");
    assert_eq!(find(&events, "approval_decided")["next_state"], "reject");

    // A fan-out of two branches joined into the aggregator.
    let fanned = server
        .create_job("/api/v1/jobs/image-pipeline", json!({"image": "s3://bucket/cat.png", "sizes": ["small", "large"]}))
        .await;
    for _ in 0..2 {
        let task = worker.next_task(Duration::from_secs(10)).await;
        assert_eq!(worker.post_result(&task, json!({"data": {"url": "u"}})).await.0, 200);
    }
    let events = wait_for_events(
        &server,
        &fanned,
        &[
            "parallel_dispatched",
            "task_dispatched",
            "task_dispatched",
            "task_finished",
            "task_finished",
            "parallel_joined",
        ],
    )
    .await;
    assert_eq!(find(&events, "parallel_dispatched")["context_snapshot"]["branches"], 2);

    // A child job: the parent records its start and end, the child its parent.
    let order = server.create_job("/api/v1/jobs/order", json!({"amount": 5, "address": "1 Main St"})).await;
    let charge = worker.next_task(Duration::from_secs(10)).await;
    let child = charge["job_id"].as_str().unwrap().to_owned();
    assert_eq!(worker.post_result(&charge, json!({"data": {"charge_id": "ch_1"}})).await.0, 200);
    let events = wait_for_events(&server, &order, &["sub_blueprint_started", "sub_blueprint_finished"]).await;
    assert_eq!(find(&events, "sub_blueprint_started")["context_snapshot"]["child_job_id"], child.as_str());
    assert_eq!(find(&events, "sub_blueprint_finished")["context_snapshot"]["status"], "finished");
    let child_events = wait_for_events(&server, &child, &["job_created", "job_finished"]).await;
    assert_eq!(find(&child_events, "job_created")["context_snapshot"]["parent_job_id"], order.as_str());
    server.stop().await;
}
