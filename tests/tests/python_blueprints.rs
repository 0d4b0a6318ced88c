//! Blueprints written in Python (`plugins/python`, componentized by
//! `avtomatika-polyglot-plugins`) through the real server: `pipeline-py`
//! behaves as the Rust `pipeline` does, and `misbehave-py` shows that a
//! Python exception reaches the job as a handler error while a spinning or
//! hoarding interpreter is stopped by the same limits as any plugin, with the
//! server serving other jobs meanwhile. `counter-py` uses data stores through
//! the SDK's `Store` as the Rust `counter` does.
//!
//! Compiling a Python component (about 19 MB, most of it CPython) takes
//! Cranelift one to three minutes in a debug build, so every test here shares
//! one server, started by the first test that needs it, on a runtime of its own
//! that outlives each test's.
//!
//! (`python_worker.rs` is something else: a worker process written in Python.)

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use avtomatika_polyglot_plugins::{PY_COUNTER_COMPONENT, PY_MISBEHAVE_COMPONENT, PY_PIPELINE_COMPONENT};
use avtomatika_tests::config::{Config, PluginLimits};
use avtomatika_tests::{Auth, CLIENT_TOKEN, TestServer, blueprints_dir, test_config};
use serde_json::{Value, json};

const PIPELINE_PY: &str = "/api/v1/jobs/pipeline-py";
const MISBEHAVE_PY: &str = "/api/v1/jobs/misbehave-py";
const HELLO: &str = "/api/v1/jobs/hello";
/// `PLUGIN_TIMEOUT_MS` of the shared server: long enough that a job of other
/// blueprints runs start to finish while a Python handler spins.
const CPU_LIMIT: Duration = Duration::from_secs(4);
/// Generous: the tests share two cores with whatever else the machine runs.
const WAIT: Duration = Duration::from_secs(60);
const TERMINAL: [&str; 5] = ["finished", "failed", "cancelled", "error", "quarantined"];

struct Shared {
    runtime: tokio::runtime::Runtime,
    server: TestServer,
}

/// The shared server: the Python components, the Rust `pipeline` (to compare
/// with) and `hello`; the default 64 MiB memory limit, `CPU_LIMIT`, one retry.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = blueprints_dir(&[
            ("pipeline-py.wasm", PY_PIPELINE_COMPONENT),
            ("misbehave-py.wasm", PY_MISBEHAVE_COMPONENT),
            ("counter-py.wasm", PY_COUNTER_COMPONENT),
            ("pipeline.wasm", avtomatika_plugins::PIPELINE_COMPONENT),
            ("hello.wasm", avtomatika_plugins::HELLO_COMPONENT),
        ]);
        let config = Config {
            blueprints_dir: Some(dir.path().to_owned()),
            job_max_retries: 1,
            plugin_limits: PluginLimits { timeout: CPU_LIMIT, ..PluginLimits::default() },
            worker_poll_timeout: Duration::from_secs(1),
            ..test_config()
        };
        let started = Instant::now();
        // The components are read at start-up, so the directory can go now.
        let server = runtime.block_on(TestServer::start_with(config));
        eprintln!("python_blueprints: the server loaded its blueprints in {:?}", started.elapsed());
        Shared { runtime, server }
    })
}

/// Runs `test` against the shared server.
fn with_server<F: Future<Output = ()>>(test: impl FnOnce(&'static TestServer) -> F) {
    let shared = shared();
    shared.runtime.block_on(test(&shared.server));
}

/// Tests whose workers take the same task types run one at a time: the
/// server would hand one test's task to another's worker.
fn exclusive_tasks() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn ended(server: &TestServer, job_id: &str) -> Value {
    server.wait_for(job_id, WAIT, |j| TERMINAL.iter().any(|t| j["status"] == *t)).await
}

fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{text:?} should mention {needle:?}");
    }
}

mod pipeline {
    use super::*;

    /// The one worker id of these tests (run one at a time), so no task
    /// goes to a worker that an earlier test left registered but idle.
    const WORKER: &str = "w-py-pipeline";

    #[test]
    fn runs_fetch_transform_publish_to_finished() {
        let _tasks = exclusive_tasks();
        with_server(|server| async move {
            let worker = server.worker(WORKER);
            worker.register(&["fetch", "publish"]).await;
            let job_id = server.create_job(PIPELINE_PY, json!({"url": "https://example.com"})).await;

            let fetch = worker.next_task(WAIT).await;
            assert_eq!(fetch["job_id"], job_id.as_str(), "{fetch:#}");
            assert_eq!(fetch["type"], "fetch", "{fetch:#}");
            assert_eq!(fetch["params"], json!({"url": "https://example.com"}));
            assert_eq!(fetch["priority"], 0);
            // Characters, not bytes: 13 characters, 19 bytes in UTF-8.
            let content = "héllo wörld 🎉";
            let result = json!({"status": "success", "data": {"content": content}});
            let (status, _) = worker.post_result(&fetch, result).await;
            assert_eq!(status, 200);

            let publish = worker.next_task(WAIT).await;
            assert_eq!(publish["job_id"], job_id.as_str());
            assert_eq!(publish["type"], "publish", "{publish:#}");
            assert_eq!(publish["params"], json!({"length": 13}), "{publish:#}");
            assert_eq!(publish["priority"], 5, "{publish:#}");
            let job = server.job(&job_id).await;
            let at = (job["current_state"].as_str(), job["status"].as_str());
            assert_eq!(at, (Some("publish"), Some("waiting_for_worker")), "{job:#}");
            let routing = json!({"strategy": "least_connections", "requirements": null, "max_cost": null,
                                 "timeout_seconds": 600});
            assert_eq!(job["current_task"]["routing"], routing, "{job:#}");

            let result = json!({"status": "success", "data": {"published": true}});
            let (status, _) = worker.post_result(&publish, result).await;
            assert_eq!(status, 200);
            let job = ended(server, &job_id).await;
            assert_eq!(job["status"], "finished", "{job:#}");
            assert_eq!(job["current_state"], "finished");
            let history = json!({"content": content, "length": 13, "published": true});
            assert_eq!(job["state_history"], history, "{job:#}");
        });
    }

    /// `transform` fails the job through `Next.fail` when the fetch brought
    /// no content, and the worker's `INVALID_INPUT_ERROR` fails it at `publish`.
    #[test]
    fn fails_without_content_or_on_a_worker_failure() {
        let _tasks = exclusive_tasks();
        with_server(|server| async move {
            let worker = server.worker(WORKER);
            worker.register(&["fetch", "publish"]).await;
            for data in [json!({"content": ""}), json!({}), json!({"content": 7})] {
                let job_id = server.create_job(PIPELINE_PY, json!({"url": "https://example.com/empty"})).await;
                let fetch = worker.next_task(WAIT).await;
                assert_eq!(fetch["job_id"], job_id.as_str());
                let (status, _) = worker.post_result(&fetch, json!({"status": "success", "data": data})).await;
                assert_eq!(status, 200);
                let job = ended(server, &job_id).await;
                assert_eq!(job["status"], "failed", "data {data}: {job:#}");
                assert_eq!(job["current_state"], "transform", "{job:#}");
                assert_mentions(job["error_message"].as_str().unwrap_or_default(), &["fetch returned no content"]);
            }

            let job_id = server.create_job(PIPELINE_PY, json!({"url": "https://example.com"})).await;
            let fetch = worker.next_task(WAIT).await;
            worker.post_result(&fetch, json!({"status": "success", "data": {"content": "abc"}})).await;
            let publish = worker.next_task(WAIT).await;
            assert_eq!(publish["params"], json!({"length": 3}), "{publish:#}");
            let error = json!({"code": "INVALID_INPUT_ERROR", "message": "no channel"});
            let (status, _) = worker.post_result(&publish, json!({"status": "failure", "error": error})).await;
            assert_eq!(status, 200);
            let job = ended(server, &job_id).await;
            assert_eq!(job["status"], "failed", "{job:#}");
            assert_eq!(job["current_state"], "publish", "{job:#}");
            assert_mentions(job["error_message"].as_str().unwrap_or_default(), &["no channel"]);
            worker.assert_no_task().await;
        });
    }

    /// Both `describe`s declare the same graph: the DOT the server renders
    /// for each differs only in the name.
    #[test]
    fn declares_the_same_graph_as_the_rust_pipeline() {
        with_server(|server| async move {
            let mut graphs = Vec::new();
            for name in ["pipeline", "pipeline-py"] {
                let path = format!("/api/v1/blueprints/{name}/graph");
                let answer = server.send(reqwest::Method::GET, &path, Auth::Client(CLIENT_TOKEN), None).await;
                assert_eq!(answer.status, 200, "{answer:?}");
                graphs.push(answer.text);
            }
            let (rust, python) = (&graphs[0], &graphs[1]);
            assert!(rust.contains("\"fetch\" -> \"transform\""), "{rust}");
            assert_eq!(&python.replace("\"pipeline-py\"", "\"pipeline\""), rust);
        });
    }
}

mod misbehave {
    use super::*;

    /// Runs a `mode` job to its end; returns it and how long it took.
    async fn run(server: &TestServer, mode: &str) -> (Value, Duration) {
        let started = Instant::now();
        let job_id = server.create_job(MISBEHAVE_PY, json!({"mode": mode})).await;
        let job = ended(server, &job_id).await;
        (job, started.elapsed())
    }

    /// Asserts `job` was quarantined in `start` after 2 attempts (1 +
    /// `job_max_retries`) with an error naming `cause`; returns the message.
    fn quarantined(job: &Value, cause: &[&str]) -> String {
        assert_eq!(job["status"], "quarantined", "{job:#}");
        assert_eq!(job["current_state"], "start", "{job:#}");
        let message = job["error_message"].as_str().unwrap_or_else(|| panic!("no error_message: {job:#}")).to_owned();
        assert_mentions(&message, cause);
        assert!(message.contains("2 times"), "2 attempts (1 + JOB_MAX_RETRIES) expected: {message:?}");
        message
    }

    #[test]
    fn a_healthy_call_finishes() {
        with_server(|server| async move {
            let (job, _) = run(server, "ok").await;
            assert_eq!(job["status"], "finished", "{job:#}");
            assert_eq!(job["state_history"], json!({"ok": true}), "{job:#}");
            assert!(job.get("error_message").is_none_or(Value::is_null), "{job:#}");
        });
    }

    /// The exception's type, text and line reach the job as a handler error,
    /// not as a trap that would hide them.
    #[test]
    fn an_exception_is_a_handler_error() {
        with_server(|server| async move {
            let (job, _) = run(server, "raise").await;
            let cause = ["handler returned an error", "RuntimeError: misbehave-py: deliberate exception", "app.py:"];
            let message = quarantined(&job, &cause);
            assert!(!message.contains("trapped"), "{message:?}");
        });
    }

    #[test]
    fn a_spinning_handler_is_stopped_by_the_cpu_time_limit() {
        with_server(|server| async move {
            let (job, took) = run(server, "loop").await;
            quarantined(&job, &["plugin exceeded its CPU time limit of 4000 ms"]);
            assert!(took >= CPU_LIMIT * 2, "two attempts of {CPU_LIMIT:?} each took only {took:?}");
        });
    }

    /// Under the default 64 MiB, in which the interpreter itself runs fine
    /// (`a_healthy_call_finishes`).
    #[test]
    fn a_hoarding_handler_is_stopped_by_the_memory_limit() {
        with_server(|server| async move {
            let (job, _) = run(server, "bomb").await;
            quarantined(&job, &["plugin exceeded its memory limit of 64 MiB"]);
        });
    }

    /// While a Python handler spins and another hoards memory, a `hello` job
    /// goes through a worker start to finish, long before the spinning one is
    /// stopped, and `/_public/status` answers promptly.
    #[test]
    fn the_server_keeps_serving_meanwhile() {
        with_server(|server| async move {
            let worker = server.worker("w-py-greet");
            worker.register(&["greet"]).await;

            let started = Instant::now();
            let spinning = server.create_job(MISBEHAVE_PY, json!({"mode": "loop"})).await;
            let hoarding = server.create_job(MISBEHAVE_PY, json!({"mode": "bomb"})).await;

            let sent = Instant::now();
            let answer = server.send(reqwest::Method::GET, "/_public/status", Auth::None, None).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            assert!(sent.elapsed() < Duration::from_millis(500), "/_public/status took {:?}", sent.elapsed());

            let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
            let task = worker.next_task(CPU_LIMIT).await;
            assert_eq!(task["job_id"], job_id.as_str(), "{task:#}");
            let (status, _) = worker.post_result(&task, json!({"data": {"greeting": "Hi"}})).await;
            assert_eq!(status, 200);
            server.wait_for(&job_id, CPU_LIMIT, |j| j["status"] == "finished").await;
            let served_in = started.elapsed();
            assert!(served_in < CPU_LIMIT, "the hello job took {served_in:?}, as long as the spinning handler");
            let job = server.job(&spinning).await;
            assert_eq!(job["status"], "pending", "the spinning handler should still run: {job:#}");

            let job = server.wait_for(&hoarding, WAIT, |j| j["status"] == "quarantined").await;
            assert_mentions(job["error_message"].as_str().unwrap_or_default(), &["memory limit of 64 MiB"]);
            let job = server.wait_for(&spinning, WAIT, |j| j["status"] == "quarantined").await;
            assert_mentions(job["error_message"].as_str().unwrap_or_default(), &["CPU time limit of 4000 ms"]);
        });
    }
}

/// `counter-py` gives the Rust `counter`'s histories through the SDK's
/// `Store`, and a refused store request fails its handler with the reason.
#[test]
fn counter_py_uses_data_stores_like_the_rust_counter() {
    with_server(|server| avtomatika_tests::counter::behaves_like_the_rust_counter(server, "/api/v1/jobs/counter-py"));
}
