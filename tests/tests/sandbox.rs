//! Deliberately broken blueprint components through the real server: handlers
//! that spin, hoard memory, trap, fail or break their graph end up quarantined
//! with the cause while the server keeps serving, and components that cannot
//! be loaded stop the server from starting, naming the file and the reason.
//!
//! Every plugin of `plugins/rust/testing/` must have a test here of its name
//! (a function or module); `foreach_testing_plugin!` below fails to compile otherwise.

use std::path::Path;
use std::time::{Duration, Instant};

use avtomatika::App;
use avtomatika_tests::config::{Config, PluginLimits};
use avtomatika_tests::{TestServer, blueprints_dir, test_config};
use serde_json::{Value, json};
use tempfile::TempDir;

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::$name as _;
    };
}
avtomatika_plugins::foreach_testing_plugin!(assert_test_exists);

fn config_for(dir: &Path) -> Config {
    Config {
        blueprints_dir: Some(dir.to_owned()),
        job_max_retries: 1,
        plugin_limits: PluginLimits {
            memory_bytes: 16 << 20,
            timeout: Duration::from_millis(200),
            ..PluginLimits::default()
        },
        worker_poll_timeout: Duration::from_secs(1),
        executor_max_concurrent_jobs: 16,
        ..test_config()
    }
}

/// `App::new` on `files` must fail; returns the error's text.
async fn load_error(dir: &Path) -> String {
    match App::new(config_for(dir)).await {
        Ok(_) => panic!("the server started with the blueprints in {}", dir.display()),
        Err(error) => error.to_string(),
    }
}

fn assert_mentions(error: &str, needles: &[&str]) {
    for needle in needles {
        assert!(error.contains(needle), "{error:?} should mention {needle:?}");
    }
}

/// `outcome-echo` answers with the outcomes its initial data spells out; the
/// generated cases are in `guest_outcomes.rs`. Here: it does what it says.
mod outcome_echo {
    use super::*;

    #[tokio::test]
    async fn it_answers_each_state_with_the_outcome_spelled_for_it() {
        let dir = blueprints_dir(&[("outcome_echo.wasm", avtomatika_plugins::OUTCOME_ECHO_COMPONENT)]);
        let server = TestServer::start_with(config_for(dir.path())).await;
        let worker = server.worker("echo");
        worker.register(&["greet"]).await;
        let outcomes = json!({
            "start": {"dispatch": {"type": "greet", "params": {"name": "Ada"}, "on": [["success", "a"]], "priority": 3}},
            "a": {"fail": "spelled failure", "history": {"seen": "a"}},
        });
        let job_id = server.create_job("/api/v1/jobs/outcome-echo", json!({"outcomes": outcomes})).await;
        let task = worker.next_task(Duration::from_secs(10)).await;
        assert_eq!((&task["params"], &task["priority"]), (&json!({"name": "Ada"}), &json!(3)), "{task:#}");
        let (status, _) = worker.post_result(&task, json!({"data": {"greeting": "hi"}})).await;
        assert_eq!(status, 200);
        let job = server.wait_for_status(&job_id, "failed").await;
        assert_eq!(job["error_message"], "spelled failure", "{job:#}");
        assert_eq!(job["state_history"], json!({"greeting": "hi", "seen": "a"}), "{job:#}");
        server.stop().await;
    }
}

mod misbehave {
    use super::*;

    const MISBEHAVE: &str = "/api/v1/jobs/misbehave";

    /// A server with `misbehave` and `hello`, per `config_for`.
    pub(super) async fn server_with(adjust: impl FnOnce(&mut Config)) -> (TestServer, TempDir) {
        let dir = blueprints_dir(&[
            ("misbehave.wasm", avtomatika_plugins::MISBEHAVE_COMPONENT),
            ("hello.wasm", avtomatika_plugins::HELLO_COMPONENT),
        ]);
        let mut config = config_for(dir.path());
        adjust(&mut config);
        (TestServer::start_with(config).await, dir)
    }

    /// Runs a `mode` job to its end and returns the job.
    async fn run(mode: &str) -> Value {
        let (server, _dir) = server_with(|_| {}).await;
        let job_id = server.create_job(MISBEHAVE, json!({"mode": mode})).await;
        let job = server
            .wait_for(&job_id, Duration::from_secs(20), |j| {
                !matches!(j["status"].as_str(), Some("pending" | "running"))
            })
            .await;
        server.stop().await;
        job
    }

    /// Runs a `mode` job and checks it was quarantined after 1 + `job_max_retries`
    /// (= 2) attempts with an error naming `cause`.
    async fn quarantined(mode: &str, cause: &[&str]) -> String {
        let job = run(mode).await;
        assert_eq!(job["status"], "quarantined", "mode {mode}: {job:#}");
        assert_eq!(job["current_state"], "start", "{job:#}");
        let message = job["error_message"].as_str().unwrap_or_else(|| panic!("no error_message: {job:#}")).to_owned();
        assert_mentions(&message, cause);
        assert!(message.contains("2 times"), "mode {mode}: 2 attempts (1 + JOB_MAX_RETRIES) expected: {message:?}");
        message
    }

    #[tokio::test]
    async fn a_spinning_handler_is_stopped_by_the_cpu_time_limit() {
        let started = Instant::now();
        quarantined("loop", &["CPU time limit", "200 ms"]).await;
        // Two attempts of 200 ms each at least.
        assert!(started.elapsed() >= Duration::from_millis(400), "took only {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_hoarding_handler_is_stopped_by_the_memory_limit() {
        quarantined("bomb", &["memory limit", "16 MiB"]).await;
    }

    #[tokio::test]
    async fn a_panicking_handler_traps() {
        quarantined("trap", &["trapped"]).await;
    }

    #[tokio::test]
    async fn a_handler_error_is_reported() {
        quarantined("error", &["handler returned an error", "misbehave: deliberate handler error"]).await;
    }

    #[tokio::test]
    async fn a_move_to_an_undeclared_state_is_refused() {
        quarantined("undeclared", &["not among its declared transitions", "nowhere"]).await;
    }

    /// A blueprint that moves between states forever is failed by the
    /// transition limit (`MAX_TRANSITIONS_PER_JOB`, 100 by default).
    #[tokio::test]
    async fn a_cycling_blueprint_is_stopped_by_the_transition_limit() {
        let job = run("cycle").await;
        assert_eq!(job["status"], "failed", "{job:#}");
        assert_eq!(job["transitions"], 101, "{job:#}");
        let message = job["error_message"].as_str().unwrap_or_default();
        assert_mentions(message, &["more than 100 state transitions", "MAX_TRANSITIONS_PER_JOB"]);
    }

    #[tokio::test]
    async fn a_healthy_call_finishes() {
        let job = run("ok").await;
        assert_eq!(job["status"], "finished", "{job:#}");
        assert_eq!(job["current_state"], "finished", "{job:#}");
        assert_eq!(job["state_history"]["ok"], json!(true), "{job:#}");
        assert!(job.get("error_message").is_none_or(Value::is_null), "{job:#}");
    }

    /// More spinning handlers than runtime threads: requests are still answered
    /// promptly, and a hello job goes through a worker, start to finish, before
    /// any of the spinning handlers is stopped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_server_keeps_serving_while_handlers_spin() {
        let limit = Duration::from_secs(3);
        let (server, _dir) = server_with(|c| {
            c.plugin_limits.timeout = limit;
            c.job_max_retries = 0;
        })
        .await;
        let worker = server.worker("w-busy");
        worker.register(&["greet"]).await;

        let started = Instant::now();
        let mut spinning = Vec::new();
        for _ in 0..4 {
            spinning.push(server.create_job(MISBEHAVE, json!({"mode": "loop"})).await);
        }

        // A request that does no work at all: without spinning handlers it is
        // answered in about a millisecond.
        let mut latencies = Vec::new();
        for _ in 0..5 {
            let sent = Instant::now();
            let answer = server.send(reqwest::Method::GET, "/_public/status", avtomatika_tests::Auth::None, None).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            latencies.push(sent.elapsed());
        }
        let slowest = latencies.iter().max().copied().unwrap_or_default();
        assert!(
            slowest < Duration::from_millis(100),
            "GET /_public/status took up to {slowest:?} while handlers spin ({latencies:?})"
        );

        let job_id = server.create_job("/api/v1/jobs/hello", json!({"name": "Ada"})).await;
        let task = worker.next_task(limit).await;
        assert_eq!(task["job_id"], job_id.as_str());
        let (status, _) = worker.post_result(&task, json!({"data": {"greeting": "Hi"}})).await;
        assert_eq!(status, 200);
        server.wait_for(&job_id, limit, |j| j["status"] == "finished").await;
        let served_in = started.elapsed();
        assert!(served_in < limit, "the hello job took {served_in:?}, as long as the spinning handlers");
        for id in &spinning {
            let job = server.job(id).await;
            assert_eq!(job["status"], "pending", "the spinning handler should still run: {job:#}");
        }

        // …and they were running all along: each is stopped about `limit` after it was created.
        for id in &spinning {
            let job = server.wait_for(id, limit * 3, |j| j["status"] == "quarantined").await;
            assert_mentions(job["error_message"].as_str().unwrap_or_default(), &["CPU time limit"]);
        }
        let stopped_in = started.elapsed();
        assert!(stopped_in < limit * 2, "the spinning handlers were stopped only after {stopped_in:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn two_starts() {
    let dir = blueprints_dir(&[
        ("hello.wasm", avtomatika_plugins::HELLO_COMPONENT),
        ("two_starts.wasm", avtomatika_plugins::TWO_STARTS_COMPONENT),
    ]);
    let error = load_error(dir.path()).await;
    assert_mentions(&error, &["two_starts.wasm", "several start states", "first", "second"]);
}

#[tokio::test]
async fn bad_transition() {
    let dir = blueprints_dir(&[("bad_transition.wasm", avtomatika_plugins::BAD_TRANSITION_COMPONENT)]);
    let error = load_error(dir.path()).await;
    assert_mentions(&error, &["bad_transition.wasm", "unknown state", "missing"]);
}

#[tokio::test]
async fn wrong_world() {
    let dir = blueprints_dir(&[("wrong_world.wasm", avtomatika_plugins::WRONG_WORLD_COMPONENT)]);
    let error = load_error(dir.path()).await;
    assert_mentions(&error, &["wrong_world.wasm", "does not implement", "blueprint"]);
}

#[tokio::test]
async fn garbage_is_not_a_component() {
    let dir = blueprints_dir(&[("hello.wasm", avtomatika_plugins::HELLO_COMPONENT)]);
    std::fs::write(dir.path().join("junk.wasm"), b"\x00asm but not really, just junk bytes").unwrap();
    let error = load_error(dir.path()).await;
    assert_mentions(&error, &["junk.wasm", "not a valid WebAssembly component"]);
}

#[tokio::test]
async fn a_core_module_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    // The smallest valid core module: magic and version 1.
    std::fs::write(dir.path().join("core.wasm"), b"\x00asm\x01\x00\x00\x00").unwrap();
    let error = load_error(dir.path()).await;
    assert_mentions(&error, &["core.wasm", "not a valid WebAssembly component"]);
}

#[tokio::test]
async fn the_same_blueprint_twice_is_refused() {
    let dir = blueprints_dir(&[
        ("first_hello.wasm", avtomatika_plugins::HELLO_COMPONENT),
        ("second_hello.wasm", avtomatika_plugins::HELLO_COMPONENT),
    ]);
    let error = load_error(dir.path()).await;
    assert_mentions(&error, &["first_hello.wasm", "second_hello.wasm", "hello", "already used"]);
}

#[tokio::test]
async fn a_directory_without_components_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.txt"), "not a blueprint").unwrap();
    std::fs::create_dir(dir.path().join("nested.wasm")).unwrap();
    let error = load_error(dir.path()).await;
    assert_mentions(&error, &[&dir.path().display().to_string(), "no *.wasm"]);
}

#[tokio::test]
async fn a_missing_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist");
    let error = load_error(&missing).await;
    assert_mentions(&error, &[&missing.display().to_string()]);
}

#[tokio::test]
async fn a_directory_of_good_blueprints_serves_them() {
    let dir = blueprints_dir(&[
        ("hello.wasm", avtomatika_plugins::HELLO_COMPONENT),
        ("misbehave.wasm", avtomatika_plugins::MISBEHAVE_COMPONENT),
    ]);
    let server = TestServer::start_with(config_for(dir.path())).await;
    // Only what the directory holds is loaded: `pipeline` is a built-in example, not here.
    let answer = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs/pipeline",
            avtomatika_tests::Auth::Client(avtomatika_tests::CLIENT_TOKEN),
            Some("{}"),
        )
        .await;
    assert!(matches!(answer.status, 404 | 405), "{answer:?}");
    server.create_job("/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    server.stop().await;
}

/// `files-probe` (the `task-files` capability) runs against S3 in
/// `tests/task_files.rs`; without S3 every call answers `disabled` (an
/// error value, not a trap) and the file routes do not exist.
#[tokio::test]
async fn files_probe() {
    let dir = blueprints_dir(&[("files_probe.wasm", avtomatika_plugins::FILES_PROBE_COMPONENT)]);
    let server = TestServer::start_with(config_for(dir.path())).await;
    let ops = json!([{"op": "list"}, {"op": "write", "name": "a", "text": "x"}, {"op": "uri", "name": "a"}]);
    let job_id = server.create_job("/api/v1/jobs/files-probe", json!({ "ops": ops })).await;
    let job = server.wait_for_status(&job_id, "finished").await;
    assert_eq!(
        job["state_history"]["results"],
        json!([{"error": "disabled"}, {"error": "disabled"}, {"error": "disabled"}])
    );
    let answer = server
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{job_id}/files"),
            avtomatika_tests::Auth::Client(avtomatika_tests::CLIENT_TOKEN),
            None,
        )
        .await;
    answer.assert_error(404);
    server.stop().await;
}

/// Adding the `task-files` interface kept the world compatible: a component
/// built before it existed (`tests/fixtures/counter-before-task-files.wasm`,
/// the `counter` example as built from the commit before) loads and runs.
#[tokio::test]
async fn a_component_built_before_task_files_still_loads_and_runs() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/counter-before-task-files.wasm");
    let dir = blueprints_dir(&[("counter.wasm", fixture.to_str().expect("a UTF-8 path"))]);
    let server = TestServer::start_with(config_for(dir.path())).await;
    let job_id = server.create_job("/api/v1/jobs/counter", json!({"page": "old"})).await;
    let job = server.wait_for_status(&job_id, "finished").await;
    assert_eq!(job["state_history"]["count"], 1, "{job:#}");
    server.stop().await;
}

/// The instance pool (`PLUGIN_POOL_*`) with the `versioned` blueprint, whose
/// handler says how many calls its instance has served. (Its versions are
/// tested in `blueprint_reload.rs`.)
mod versioned_v1 {
    use super::*;
    use avtomatika_tests::config::InstancePolicy;

    pub(super) fn pool_config(dir: &Path, policy: InstancePolicy) -> Config {
        Config {
            plugin_limits: PluginLimits {
                memory_bytes: 64 << 20,
                timeout: Duration::from_millis(500),
                ..PluginLimits::default()
            },
            plugin_instances: policy,
            ..config_for(dir)
        }
    }

    /// Runs one `versioned` job to its end; the instance's call count.
    pub(super) async fn instance_calls(server: &TestServer, initial_data: Value) -> u64 {
        let job = server.create_job("/api/v1/jobs/versioned", initial_data).await;
        let job = server.wait_for_status(&job, "finished").await;
        job["state_history"]["instance_calls"].as_u64().unwrap_or_else(|| panic!("no call count: {job:#}"))
    }

    async fn calls_of_five_jobs(policy: InstancePolicy) -> (Vec<u64>, usize) {
        let dir = blueprints_dir(&[("versioned.wasm", avtomatika_plugins::VERSIONED_V1_COMPONENT)]);
        let server = TestServer::start_with(pool_config(dir.path(), policy)).await;
        let mut calls = Vec::new();
        for _ in 0..5 {
            calls.push(instance_calls(&server, json!({})).await);
        }
        let idle = server.orchestrator.runtime.blueprint("versioned").expect("loaded").idle_instances();
        server.stop().await;
        (calls, idle)
    }

    #[tokio::test]
    async fn successive_calls_share_a_pooled_instance() {
        let (calls, idle) = calls_of_five_jobs(InstancePolicy::default()).await;
        assert_eq!(calls, [1, 2, 3, 4, 5], "one live instance served every call");
        assert_eq!(idle, 1);
    }

    #[tokio::test]
    async fn an_isolated_blueprint_gets_a_fresh_instance_for_every_call() {
        let policy = InstancePolicy { fresh_blueprints: vec!["versioned".into()], ..InstancePolicy::default() };
        assert_eq!(calls_of_five_jobs(policy).await, (vec![1; 5], 0));
        let policy = InstancePolicy { pool_size: 0, ..InstancePolicy::default() };
        assert_eq!(calls_of_five_jobs(policy).await, (vec![1; 5], 0));
    }

    #[tokio::test]
    async fn an_instance_is_replaced_after_its_maximum_of_calls() {
        let policy = InstancePolicy { max_calls: 2, ..InstancePolicy::default() };
        assert_eq!(calls_of_five_jobs(policy).await.0, [1, 2, 1, 2, 1]);
    }
}

/// More of the instance pool: instances that grew or failed are not reused.
mod versioned_v2 {
    use super::versioned_v1::{instance_calls, pool_config};
    use super::*;
    use avtomatika_tests::config::InstancePolicy;

    #[tokio::test]
    async fn an_instance_whose_memory_grew_is_replaced() {
        let dir = blueprints_dir(&[("versioned.wasm", avtomatika_plugins::VERSIONED_V2_COMPONENT)]);
        let server = TestServer::start_with(pool_config(dir.path(), InstancePolicy::default())).await;
        // A little growth is fine: the instance stays.
        assert_eq!(instance_calls(&server, json!({ "hoard_mb": 1 })).await, 1);
        assert_eq!(instance_calls(&server, json!({})).await, 2);
        // More than a quarter of the 64 MiB limit: the next call gets a new one.
        assert_eq!(instance_calls(&server, json!({ "hoard_mb": 20 })).await, 3);
        assert_eq!(instance_calls(&server, json!({})).await, 1);
        server.stop().await;
    }

    #[tokio::test]
    async fn an_instance_that_failed_is_not_reused() {
        let dir = blueprints_dir(&[("versioned.wasm", avtomatika_plugins::VERSIONED_V2_COMPONENT)]);
        let server = TestServer::start_with(pool_config(dir.path(), InstancePolicy::default())).await;
        assert_eq!(instance_calls(&server, json!({})).await, 1);
        // Past the memory limit: the call traps, on the idle instance first.
        let job = server.create_job("/api/v1/jobs/versioned", json!({ "hoard_mb": 100 })).await;
        let job = server.wait_for_status(&job, "quarantined").await;
        assert!(job["error_message"].as_str().is_some_and(|m| m.contains("memory limit")), "{job:#}");
        assert_eq!(instance_calls(&server, json!({})).await, 1, "the trapped instance was dropped");
        server.stop().await;
    }
}

/// A component built against the released 1.0.0 contract (before tasks had a
/// routing) loads beside 1.1.0 ones and runs as it always did: its `log`
/// import resolves to the 1.1.0 capability and its task gets the default
/// routing.
mod contract_v1_0 {
    use super::*;

    #[tokio::test]
    async fn a_component_built_against_1_0_0_loads_and_runs_unchanged() {
        let dir = blueprints_dir(&[
            ("old.wasm", avtomatika_plugins::CONTRACT_V1_0_COMPONENT),
            ("routed.wasm", avtomatika_plugins::ROUTED_COMPONENT),
        ]);
        let server = TestServer::start_with(config_for(dir.path())).await;
        let worker = server.worker("greeter");
        worker.register(&["greet"]).await;
        let job_id = server.create_job("/api/v1/jobs/contract-v1-0", json!({"name": "Ada"})).await;
        let task = worker.next_task(Duration::from_secs(10)).await;
        assert_eq!((&task["type"], &task["params"]), (&json!("greet"), &json!({"name": "Ada"})), "{task:#}");
        let (status, _) = worker.post_result(&task, json!({"data": {"greeting": "Hello, Ada"}})).await;
        assert_eq!(status, 200);
        let job = server.wait_for_status(&job_id, "finished").await;
        assert_eq!(job["state_history"], json!({"built_against": "1.0.0", "greeting": "Hello, Ada"}), "{job:#}");
        server.stop().await;
    }
}

/// `routed` dispatches with the routing its initial data asks for (its
/// routing is tested in `routing.rs`). Here: a routing the host cannot take
/// is the plugin's contract error, and the job ends saying so.
mod routed {
    use super::*;

    #[tokio::test]
    async fn a_routing_the_host_refuses_quarantines_the_job_with_the_reason() {
        let dir = blueprints_dir(&[("routed.wasm", avtomatika_plugins::ROUTED_COMPONENT)]);
        let server = TestServer::start_with(config_for(dir.path())).await;
        for (input, reason) in [
            (json!({"max_cost": -1.0}), "max-cost"),
            (json!({"requires": [1, 2]}), "resource-requirements of the task must be a JSON object"),
            (json!({"timeout_seconds": 0, "branches": 2}), "timeout-seconds of branch 0"),
            // Requirements are matched against every candidate at each dispatch: bounded.
            (json!({"requires": {"region": "x".repeat(17 * 1024)}}), "at most 16384 are allowed"),
        ] {
            let job_id = server.create_job("/api/v1/jobs/routed", input.clone()).await;
            let job = server.wait_for_status(&job_id, "quarantined").await;
            let message = job["error_message"].as_str().unwrap_or_default();
            assert!(message.contains(reason), "{input}: {message:?} should say {reason:?}");
        }
        server.stop().await;
    }
}
