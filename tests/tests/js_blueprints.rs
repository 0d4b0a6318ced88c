//! Blueprints written in JavaScript (`plugins/js`, componentized by
//! `plugins/polyglot`) through the real server: `pipeline-js` behaves as the
//! Rust `pipeline` does, and `misbehave-js` shows that a JavaScript engine in
//! the sandbox is held to the same limits as a Rust guest: a thrown error, an
//! endless loop and a memory bomb each quarantine their job with the cause,
//! while the server keeps serving. `counter-js` uses data stores through the
//! SDK's `Store` as the Rust `counter` does.
//!
//! The plugins run under the default `PLUGIN_MEMORY_LIMIT_MB` (64 MiB), so
//! these tests also show that it suffices for a JavaScript blueprint.

use std::time::{Duration, Instant};

use avtomatika_tests::config::{Config, PluginLimits};
use avtomatika_tests::{TestServer, blueprints_dir, test_config};
use serde_json::{Value, json};
use tempfile::TempDir;

const PIPELINE_JS: &str = "/api/v1/jobs/pipeline-js";
const PIPELINE: &str = "/api/v1/jobs/pipeline";
const MISBEHAVE_JS: &str = "/api/v1/jobs/misbehave-js";
const TASK_WAIT: Duration = Duration::from_secs(10);
const JOB_WAIT: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;

const PIPELINE_JS_FILE: (&str, &str) = ("pipeline-js.wasm", avtomatika_polyglot_plugins::JS_PIPELINE_COMPONENT);
const MISBEHAVE_JS_FILE: (&str, &str) = ("misbehave-js.wasm", avtomatika_polyglot_plugins::JS_MISBEHAVE_COMPONENT);
const PIPELINE_FILE: (&str, &str) = ("pipeline.wasm", avtomatika_plugins::PIPELINE_COMPONENT);
const COUNTER_JS_FILE: (&str, &str) = ("counter-js.wasm", avtomatika_polyglot_plugins::JS_COUNTER_COMPONENT);

/// A server with the blueprints `files`, under the default plugin limits
/// unless `adjust` changes them. Each JavaScript component takes seconds to
/// compile, so a test loads only those it uses.
async fn server_with(files: &[(&str, &str)], adjust: impl FnOnce(&mut Config)) -> (TestServer, TempDir) {
    let dir = blueprints_dir(files);
    let mut config = Config {
        blueprints_dir: Some(dir.path().to_owned()),
        worker_poll_timeout: Duration::from_secs(1),
        job_max_retries: 1,
        executor_max_concurrent_jobs: 16,
        ..test_config()
    };
    adjust(&mut config);
    (TestServer::start_with(config).await, dir)
}

/// Waits until the job has ended and returns it.
async fn ended(server: &TestServer, job_id: &str) -> Value {
    let terminal = ["finished", "failed", "cancelled", "error", "quarantined"];
    server.wait_for(job_id, JOB_WAIT, |j| terminal.iter().any(|t| j["status"] == *t)).await
}

fn error_message(job: &Value) -> String {
    job["error_message"].as_str().unwrap_or_else(|| panic!("no error_message: {job:#}")).to_owned()
}

fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(message.contains(needle), "{message:?} should mention {needle:?}");
    }
}

#[test]
fn the_default_memory_limit_is_the_one_these_tests_run_under() {
    assert_eq!(test_config().plugin_limits.memory_bytes, 64 * MIB);
}

mod pipeline_js {
    use super::*;

    /// Drives one pipeline job at `endpoint` through both tasks, the fetch
    /// answering `content`; returns the publish task's params and the job.
    /// Always the same worker: with two registered for `fetch`, a task could
    /// go to the one that is not polling.
    async fn run(server: &TestServer, endpoint: &str, content: &str) -> (Value, Value) {
        let worker = server.worker("w-pipe");
        worker.register(&["fetch", "publish"]).await;
        let job_id = server.create_job(endpoint, json!({"url": "https://example.com"})).await;

        let fetch = worker.next_task(TASK_WAIT).await;
        assert_eq!(fetch["job_id"], job_id.as_str(), "{fetch:#}");
        assert_eq!(fetch["type"], "fetch", "{fetch:#}");
        assert_eq!(fetch["params"], json!({"url": "https://example.com"}), "{fetch:#}");
        assert_eq!(fetch["priority"], 0, "{fetch:#}");
        let (status, _) = worker.post_result(&fetch, json!({"status": "success", "data": {"content": content}})).await;
        assert_eq!(status, 200);

        let publish = worker.next_task(TASK_WAIT).await;
        assert_eq!(publish["job_id"], job_id.as_str(), "{publish:#}");
        assert_eq!(publish["type"], "publish", "{publish:#}");
        assert_eq!(publish["priority"], 5, "{publish:#}");
        let job = server.job(&job_id).await;
        assert_eq!(
            (job["current_state"].as_str(), job["status"].as_str()),
            (Some("publish"), Some("waiting_for_worker"))
        );
        // pipeline-js routes its publish task (contract 1.1.0); the Rust one does not.
        let routing = if endpoint == PIPELINE_JS {
            json!({"strategy": "least_connections", "requirements": null, "max_cost": null, "timeout_seconds": 600})
        } else {
            json!({"strategy": "default", "requirements": null, "max_cost": null, "timeout_seconds": null})
        };
        assert_eq!(job["current_task"]["routing"], routing, "{job:#}");

        let (status, _) = worker.post_result(&publish, json!({"status": "success", "data": {"published": true}})).await;
        assert_eq!(status, 200);
        (publish["params"].clone(), ended(server, &job_id).await)
    }

    /// `pipeline-js` runs to `finished` with a worker doing both tasks, and
    /// the same input through the Rust `pipeline` gives the same tasks and
    /// history. The second content has characters outside the Basic
    /// Multilingual Plane, which JavaScript's `length` counts twice: both must
    /// count characters (code points), as the Rust example does.
    #[tokio::test]
    async fn runs_to_finished_like_the_rust_pipeline() {
        let (server, _dir) = server_with(&[PIPELINE_JS_FILE, PIPELINE_FILE], |_| {}).await;
        let (params, job) = run(&server, PIPELINE_JS, "hello world").await;
        assert_eq!(params, json!({"length": 11}));
        assert_eq!(job["status"], "finished", "{job:#}");
        assert_eq!(job["current_state"], "finished", "{job:#}");
        assert_eq!(job["blueprint_name"], "pipeline-js", "{job:#}");
        assert_eq!(job["state_history"], json!({"content": "hello world", "length": 11, "published": true}), "{job:#}");

        let content = "héllo 👋 wörld 🌍";
        let (rust_params, rust_job) = run(&server, PIPELINE, content).await;
        let (js_params, js_job) = run(&server, PIPELINE_JS, content).await;
        assert_eq!(rust_params, json!({"length": content.chars().count()}));
        assert_eq!(js_params, rust_params);
        for key in ["status", "current_state", "state_history"] {
            assert_eq!(js_job[key], rust_job[key], "{key}: JS {js_job:#}\nRust {rust_job:#}");
        }
        server.stop().await;
    }

    /// The blueprint's failure path (`transform` fails the job when the fetch
    /// brought no content) and a worker's `INVALID_INPUT_ERROR`, which fails
    /// the job at the task without `transform` ever running.
    #[tokio::test]
    async fn failure_paths() {
        let (server, _dir) = server_with(&[PIPELINE_JS_FILE], |_| {}).await;
        let worker = server.worker("w-empty");
        worker.register(&["fetch", "publish"]).await;
        for data in [json!({"content": ""}), json!({}), json!({"content": 7})] {
            let job_id = server.create_job(PIPELINE_JS, json!({"url": "https://example.com/empty"})).await;
            let fetch = worker.next_task(TASK_WAIT).await;
            assert_eq!(fetch["job_id"], job_id.as_str());
            let (status, _) = worker.post_result(&fetch, json!({"status": "success", "data": data})).await;
            assert_eq!(status, 200);
            let job = ended(&server, &job_id).await;
            assert_eq!(job["status"], "failed", "data {data}: {job:#}");
            assert_eq!(job["current_state"], "transform", "{job:#}");
            assert_mentions(&error_message(&job), &["fetch returned no content"]);
        }

        let job_id = server.create_job(PIPELINE_JS, json!({"url": "https://example.com/404"})).await;
        let fetch = worker.next_task(TASK_WAIT).await;
        assert_eq!(fetch["job_id"], job_id.as_str());
        let failure = json!({"status": "failure", "error": {"code": "INVALID_INPUT_ERROR", "message": "no such page"}});
        let (status, _) = worker.post_result(&fetch, failure).await;
        assert_eq!(status, 200);
        let job = ended(&server, &job_id).await;
        assert_eq!(job["status"], "failed", "{job:#}");
        assert_eq!(job["current_state"], "fetch", "{job:#}");
        assert_mentions(&error_message(&job), &["no such page"]);

        worker.assert_no_task().await;
        server.stop().await;
    }
}

mod misbehave_js {
    use super::*;

    /// Checks that `job` was quarantined in `start` after 1 + `job_max_retries`
    /// (= 2) attempts with an error naming `cause`.
    fn assert_quarantined(job: &Value, cause: &str) {
        assert_eq!(job["status"], "quarantined", "{job:#}");
        assert_eq!(job["current_state"], "start", "{job:#}");
        let message = error_message(job);
        assert_mentions(&message, &[cause, "2 times"]);
    }

    /// Every mode at once on one server (compiling a JavaScript component
    /// takes long enough that each server start counts): a thrown error, an
    /// endless loop and a memory bomb are quarantined with the host's
    /// message for each, and a healthy call still finishes.
    #[tokio::test]
    async fn each_mode_ends_as_the_host_says() {
        let timeout = Duration::from_millis(300);
        let (server, _dir) = server_with(&[MISBEHAVE_JS_FILE], |c| c.plugin_limits.timeout = timeout).await;
        let started = Instant::now();
        let mut jobs = Vec::new();
        for mode in ["error", "loop", "bomb", "ok"] {
            jobs.push((mode, server.create_job(MISBEHAVE_JS, json!({"mode": mode})).await));
        }
        for (mode, job_id) in &jobs {
            let job = ended(&server, job_id).await;
            match *mode {
                "error" => {
                    assert_quarantined(&job, "handler returned an error: misbehave-js: deliberate handler error")
                }
                "loop" => {
                    assert_quarantined(&job, "plugin exceeded its CPU time limit of 300 ms");
                    let took = started.elapsed();
                    assert!(took >= timeout * 2, "two attempts of {timeout:?} each took {took:?}");
                }
                "bomb" => assert_quarantined(&job, "plugin exceeded its memory limit of 64 MiB"),
                _ => {
                    assert_eq!(job["status"], "finished", "{job:#}");
                    assert_eq!(job["current_state"], "finished", "{job:#}");
                    assert_eq!(job["state_history"], json!({"ok": true}), "{job:#}");
                    assert!(job.get("error_message").is_none_or(Value::is_null), "{job:#}");
                }
            }
        }
        server.stop().await;
    }

    /// While JavaScript handlers spin and hoard, a `pipeline-js` job goes
    /// through a worker, start to finish, before the spinning ones are stopped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_server_keeps_serving_meanwhile() {
        let limit = Duration::from_secs(5);
        let (server, _dir) = server_with(&[PIPELINE_JS_FILE, MISBEHAVE_JS_FILE], |c| {
            c.plugin_limits = PluginLimits { timeout: limit, ..c.plugin_limits };
            c.job_max_retries = 0;
        })
        .await;
        let worker = server.worker("w-busy");
        worker.register(&["fetch", "publish"]).await;

        let started = Instant::now();
        let mut spinning = Vec::new();
        for _ in 0..2 {
            spinning.push(server.create_job(MISBEHAVE_JS, json!({"mode": "loop"})).await);
        }
        let bomb = server.create_job(MISBEHAVE_JS, json!({"mode": "bomb"})).await;

        let job_id = server.create_job(PIPELINE_JS, json!({"url": "https://example.com"})).await;
        let fetch = worker.next_task(limit).await;
        assert_eq!(fetch["job_id"], job_id.as_str());
        worker.post_result(&fetch, json!({"data": {"content": "abc"}})).await;
        let publish = worker.next_task(limit).await;
        assert_eq!(publish["params"], json!({"length": 3}), "{publish:#}");
        worker.post_result(&publish, json!({"data": {}})).await;
        server.wait_for(&job_id, limit, |j| j["status"] == "finished").await;
        let served_in = started.elapsed();
        assert!(served_in < limit, "the pipeline-js job took {served_in:?}, as long as the spinning handlers");
        for id in &spinning {
            let job = server.job(id).await;
            assert_eq!(job["status"], "pending", "the spinning handler should still run: {job:#}");
        }

        let job = ended(&server, &bomb).await;
        assert_eq!(job["status"], "quarantined", "{job:#}");
        assert_mentions(&error_message(&job), &["memory limit"]);
        for id in &spinning {
            let job = ended(&server, id).await;
            assert_eq!(job["status"], "quarantined", "{job:#}");
            assert_mentions(&error_message(&job), &["CPU time limit"]);
        }
        server.stop().await;
    }
}

/// `counter-js` gives the Rust `counter`'s histories through the SDK's
/// `Store`, and a refused store request fails its handler with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_js_uses_data_stores_like_the_rust_counter() {
    let (server, _dir) = server_with(&[COUNTER_JS_FILE], |_| {}).await;
    avtomatika_tests::counter::behaves_like_the_rust_counter(&server, "/api/v1/jobs/counter-js").await;
    server.stop().await;
}
