//! Every generation of the real Python worker SDK against the server:
//! `avtomatika-worker` 1.0b3, 1.0b5 (the first on `rxon`) and the newest
//! tried, each running `examples/python-worker/live_worker.py` unchanged.
//! Each reports progress a client sees value by value, is cancelled over its
//! WebSocket while its handler runs (on memory, and on Redis with its socket
//! on the other instance), and gets the result rules of the 1.0b3 tests.

use std::time::{Duration, Instant};

use avtomatika_tests::config::Config;
use avtomatika_tests::python::{
    PythonWorker, SDK_1_0B3, SDK_1_0B5, SDK_NEWEST, sdk_python, wait_until, wait_until_done,
};
use avtomatika_tests::{Auth, CLIENT_TOKEN, TestServer, blueprints_dir, test_config};
use reqwest::Method;
use serde_json::json;

const ROUTED: &str = "/api/v1/jobs/routed";
const HELLO: &str = "/api/v1/jobs/hello";

/// The blueprints, and a `workers.toml` giving each worker a token of its
/// own: 1.0b3 opens its socket on the bare `/_worker/ws`, where only an
/// individual token says which worker it is.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(workers: &[&str]) -> Self {
        let dir = blueprints_dir(&[
            ("hello.wasm", avtomatika_plugins::HELLO_COMPONENT),
            ("routed.wasm", avtomatika_plugins::ROUTED_COMPONENT),
        ]);
        let tokens: String = workers.iter().map(|id| format!("[{id}]\ntoken = \"{}\"\n", token(id))).collect();
        std::fs::write(dir.path().join("workers.toml"), tokens).expect("write workers.toml");
        Self { dir }
    }

    fn config(&self) -> Config {
        Config {
            blueprints_dir: Some(self.dir.path().to_owned()),
            workers_config_path: Some(self.dir.path().join("workers.toml")),
            job_max_retries: 1,
            ..test_config()
        }
    }
}

fn token(worker_id: &str) -> String {
    format!("token-of-{worker_id}")
}

/// A worker id for `version` (SDKs allow letters, digits, `_` and `-` only).
fn id_for(role: &str, version: &str) -> String {
    format!("{role}-{}", version.replace('.', "_"))
}

fn spawn(version: &str, server: &TestServer, id: &str) -> PythonWorker {
    let env = [("WORKER_ENABLE_WEBSOCKETS", "true".to_owned()), ("WORKER_TOKEN", token(id))];
    PythonWorker::spawn_sdk(version, server, id, "live_worker.py", &env)
}

/// Waits until the worker's socket is open on `server`.
async fn socket_open(server: &TestServer, worker: &mut PythonWorker) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("avtomatika_worker_sockets").await < 1.0 {
        worker.assert_running();
        assert!(Instant::now() < deadline, "the worker opened no socket:\n{}", worker.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `report` job: the client sees 0.25, 0.5 and 1.0 in turn (the worker
/// sends them a second apart; the client looks every 20 ms).
async fn progress_seen(server: &TestServer, worker: &mut PythonWorker, version: &str) {
    let job_id = server.create_job(ROUTED, json!({"task_type": "report"})).await;
    let mut seen: Vec<f64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let job = server.job(&job_id).await;
        let progress = job["progress"].as_f64().unwrap_or_default();
        if progress > 0.0 && seen.last() != Some(&progress) {
            seen.push(progress);
            assert!(job["progress_message"].as_str().is_some_and(|m| m.ends_with('%')), "{version}: {job:#}");
        }
        if job["status"] == "finished" || job["status"] == "failed" {
            break job;
        }
        worker.assert_running();
        assert!(Instant::now() < deadline, "{version}: the report job did not end: {job:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(seen, [0.25, 0.5, 1.0], "{version}: {job:#}");
    assert_eq!((job["status"].as_str(), job["progress"].as_f64()), (Some("finished"), Some(1.0)), "{version}: {job:#}");
}

/// A `hold` job cancelled by the client through `cancel_at` while the
/// worker's handler runs; answers the latency from the request to the job's
/// `cancelled` status.
async fn cancelled_in(cancel_at: &TestServer, workers_at: &TestServer, worker: &mut PythonWorker) -> Duration {
    let job_id = cancel_at.create_job(ROUTED, json!({"task_type": "hold"})).await;
    wait_until(cancel_at, worker, &job_id, |job| job["progress"].as_f64() == Some(0.5)).await;
    socket_open(workers_at, worker).await;
    let asked = Instant::now();
    let answer =
        cancel_at.send(Method::POST, &format!("/api/v1/jobs/{job_id}/cancel"), Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!(answer.json(), json!({"status": "cancellation_request_sent"}), "{answer:?}");
    let job = wait_until(cancel_at, worker, &job_id, |job| job["status"] == "cancelled").await;
    let latency = asked.elapsed();
    assert_eq!(job["status"], "cancelled", "{job:#}");
    latency
}

/// The result rules: success data, invalid input, a permanent error, a
/// transient one retried until the retries run out, a custom status.
async fn result_rules(server: &TestServer, worker: &mut PythonWorker, version: &str) {
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    let job = wait_until_done(server, worker, &job_id).await;
    assert_eq!(job["state_history"]["greeting"], "Hello, Ada!", "{version}: {job:#}");
    let job_id = server.create_job(HELLO, json!({"name": ""})).await;
    let job = wait_until_done(server, worker, &job_id).await;
    assert_eq!(job["status"], "failed", "{version}: {job:#}");
    assert!(job["error_message"].as_str().unwrap_or_default().contains("name is required"), "{version}: {job:#}");
    for (task_type, status, message) in [
        ("permanent", "quarantined", "will never work"),
        ("transient", "quarantined", "try again"),
        ("custom", "failed", "needs_review"),
    ] {
        let job_id = server.create_job(ROUTED, json!({"task_type": task_type})).await;
        let job = wait_until_done(server, worker, &job_id).await;
        assert_eq!(job["status"], status, "{version} {task_type}: {job:#}");
        let error = job["error_message"].as_str().unwrap_or_default();
        assert!(error.contains(message), "{version} {task_type}: {job:#}");
    }
}

async fn generation_on_memory(version: &str) {
    sdk_python(version);
    let id = id_for("live", version);
    let setup = Setup::new(&[&id]);
    let server = TestServer::start_with(setup.config()).await;
    let mut worker = spawn(version, &server, &id);
    socket_open(&server, &mut worker).await;
    progress_seen(&server, &mut worker, version).await;
    let latency = cancelled_in(&server, &server, &mut worker).await;
    eprintln!("SDK {version}: cancel request to job cancelled in {latency:?} (memory)");
    assert!(latency < Duration::from_secs(1), "{version}: cancelled in {latency:?}");
    result_rules(&server, &mut worker, version).await;
    worker.assert_running();
    drop(worker);
    server.stop().await;
}

/// The worker talks to instance B only; the client creates and cancels on A.
async fn generation_across_instances(version: &str, db: u32) {
    sdk_python(version);
    let client = redis::Client::open(format!("redis://127.0.0.1:6379/{db}")).expect("a Redis URL");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis at 127.0.0.1:6379");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.expect("FLUSHDB");
    let id = id_for("far", version);
    let setup = Setup::new(&[&id]);
    let start = |instance: String| {
        TestServer::start_with(Config {
            redis: Some(avtomatika::config::RedisConfig { host: "127.0.0.1".into(), port: 6379, db }),
            instance_id: instance,
            ..setup.config()
        })
    };
    let a = start(format!("gen-a-{version}")).await;
    let b = start(format!("gen-b-{version}")).await;
    let mut worker = spawn(version, &b, &id);
    socket_open(&b, &mut worker).await;
    let latency = cancelled_in(&a, &b, &mut worker).await;
    eprintln!("SDK {version}: cancel request to job cancelled in {latency:?} (Redis, socket on the other instance)");
    assert!(latency < Duration::from_secs(1), "{version}: cancelled in {latency:?}");
    worker.assert_running();
    drop(worker);
    a.stop().await;
    b.stop().await;
}

/// The newest SDK without a socket (its default) learns of a cancel from
/// its next heartbeat's answer (`cancel_task_ids`).
#[tokio::test]
async fn newest_sdk_without_a_socket_is_cancelled_by_its_heartbeat() {
    sdk_python(SDK_NEWEST);
    let id = id_for("beat", SDK_NEWEST);
    let setup = Setup::new(&[&id]);
    let server = TestServer::start_with(setup.config()).await;
    let env = [("WORKER_TOKEN", token(&id)), ("WORKER_HEARTBEAT_COOLDOWN", "0.2".to_owned())];
    let mut worker = PythonWorker::spawn_sdk(SDK_NEWEST, &server, &id, "live_worker.py", &env);
    let job_id = server.create_job(ROUTED, json!({"task_type": "hold"})).await;
    // Without a socket its progress comes as events over HTTP.
    wait_until(&server, &mut worker, &job_id, |job| job["progress"].as_f64() == Some(0.5)).await;
    let asked = Instant::now();
    let answer =
        server.send(Method::POST, &format!("/api/v1/jobs/{job_id}/cancel"), Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!(answer.json(), json!({"status": "cancellation_request_accepted"}), "{answer:?}");
    let job = wait_until(&server, &mut worker, &job_id, |job| job["status"] == "cancelled").await;
    let latency = asked.elapsed();
    eprintln!("SDK {SDK_NEWEST} without a socket: cancelled in {latency:?} (heartbeat every 1 s)");
    assert_eq!(job["status"], "cancelled");
    assert!(latency < Duration::from_secs(5), "cancelled in {latency:?}");
    drop(worker);
    server.stop().await;
}

#[tokio::test]
async fn sdk_1_0b3_reports_progress_and_is_cancelled() {
    generation_on_memory(SDK_1_0B3).await;
}

#[tokio::test]
async fn sdk_1_0b5_reports_progress_and_is_cancelled() {
    generation_on_memory(SDK_1_0B5).await;
}

#[tokio::test]
async fn newest_sdk_reports_progress_and_is_cancelled() {
    generation_on_memory(SDK_NEWEST).await;
}

#[tokio::test]
async fn sdk_1_0b3_is_cancelled_across_instances_on_redis() {
    generation_across_instances(SDK_1_0B3, 5).await;
}

#[tokio::test]
async fn sdk_1_0b5_is_cancelled_across_instances_on_redis() {
    generation_across_instances(SDK_1_0B5, 6).await;
}

#[tokio::test]
async fn newest_sdk_is_cancelled_across_instances_on_redis() {
    generation_across_instances(SDK_NEWEST, 7).await;
}
