//! Test harness: the real server, started in-process on an ephemeral port and
//! driven over HTTP, plus a minimal worker speaking the worker API.

use std::time::{Duration, Instant};

use avtomatika::App;
use avtomatika::config::Config;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use avtomatika::config;

pub mod counter;
pub mod databases;
pub mod python;
pub mod s3;

pub const CLIENT_TOKEN: &str = "test-client-token";
pub const WORKER_TOKEN: &str = "test-worker-token";

/// A config for tests: loopback, ephemeral port, test tokens, short polls.
pub fn test_config() -> Config {
    Config {
        api_host: "127.0.0.1".into(),
        api_port: 0,
        client_token: CLIENT_TOKEN.into(),
        global_worker_token: WORKER_TOKEN.into(),
        worker_poll_timeout: Duration::from_secs(2),
        // Tests stop servers with work in flight; a test of the drain sets its own.
        shutdown_grace: Duration::ZERO,
        // One cache for every test server, never the user's ~/.cache: a
        // JavaScript or Python component then compiles once per build of the
        // tests rather than once per server (minutes in a debug build).
        // Tests of the cache itself give it a directory of their own.
        plugin_cache_dir: Some(shared_plugin_cache()),
        ..Config::default()
    }
}

/// The plugin cache all test servers share: in the build's target directory
/// (next to the test executables, `target/<profile>/`), which only the
/// user building may write, rather than at a predictable name in a shared
/// `/tmp` that another user could take first. Outside a target directory,
/// a fresh private directory under the system's temporary one.
pub fn shared_plugin_cache() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().ok();
        // Test executables live in `target/<profile>/deps/`.
        let profile = exe.as_deref().and_then(|exe| exe.parent()).filter(|deps| deps.ends_with("deps"));
        match profile.and_then(|deps| deps.parent()) {
            Some(profile) => profile.join("avtomatika-test-plugin-cache"),
            None => tempfile::Builder::new()
                .prefix("avtomatika-test-plugin-cache-")
                .tempdir()
                .map(|dir| dir.keep())
                .unwrap_or_else(|_| std::env::temp_dir().join("avtomatika-test-plugin-cache")),
        }
    })
    .clone()
}

/// `test_config()` whose watcher runs only when a test calls
/// `orchestrator.time_out_overdue(now)`, with short polls (tests wait one out
/// to see that no task is queued).
pub fn manual_watcher_config() -> Config {
    Config {
        worker_poll_timeout: Duration::from_millis(500),
        watcher_interval: Duration::from_secs(3600),
        ..test_config()
    }
}

/// A running server. Stopped when dropped.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    /// The server's services, for tests that drive them directly (e.g. the
    /// scheduler with their own clock) or inspect storage.
    pub orchestrator: std::sync::Arc<avtomatika::orchestrator::Orchestrator>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// The server with the built-in example blueprints.
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> Self {
        let app = App::new(config).await.expect("server starts");
        let listener = app.bind().await.expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("local address");
        let shutdown = CancellationToken::new();
        let orchestrator = app.orchestrator.clone();
        let handle = tokio::spawn(app.serve(listener, shutdown.clone()));
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            orchestrator,
            shutdown,
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stops the server and waits until it has.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }

    /// `POST /api/v1/jobs/{endpoint}` with the client token; returns the job id.
    pub async fn create_job(&self, path: &str, body: Value) -> String {
        let response = self
            .http
            .post(self.url(path))
            .header("X-Avtomatika-Token", CLIENT_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("create request");
        assert_eq!(response.status(), 202, "create {path}: {:?}", response.text().await);
        let body: Value = response.json().await.expect("create answer is JSON");
        assert_eq!(body["status"], "accepted");
        body["job_id"].as_str().expect("job_id").to_owned()
    }

    pub async fn job(&self, job_id: &str) -> Value {
        let response = self
            .http
            .get(self.url(&format!("/api/v1/jobs/{job_id}")))
            .header("X-Avtomatika-Token", CLIENT_TOKEN)
            .send()
            .await
            .expect("job request");
        assert_eq!(response.status(), 200, "get job {job_id}");
        response.json().await.expect("job is JSON")
    }

    /// Polls the job until `done` holds or `timeout` passes; returns the last state.
    pub async fn wait_for(&self, job_id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(job_id).await;
            if done(&job) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {job_id} did not get there in {timeout:?}: {job:#}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the job's status to become `status`.
    pub async fn wait_for_status(&self, job_id: &str, status: &str) -> Value {
        self.wait_for(job_id, Duration::from_secs(20), |job| job["status"] == status).await
    }

    /// A worker client with the global worker token.
    pub fn worker(&self, worker_id: &str) -> TestWorker<'_> {
        TestWorker { server: self, worker_id: worker_id.to_owned() }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A worker written in the test: registers, polls and posts results.
pub struct TestWorker<'a> {
    server: &'a TestServer,
    pub worker_id: String,
}

impl TestWorker<'_> {
    pub async fn register(&self, tasks: &[&str]) {
        let response = self
            .server
            .http
            .post(self.server.url("/_worker/workers/register"))
            .header("X-Worker-Token", WORKER_TOKEN)
            .json(&json!({
                "worker_id": self.worker_id,
                "worker_type": "test",
                "supported_tasks": tasks,
                "max_concurrent_tasks": 10,
            }))
            .send()
            .await
            .expect("register request");
        assert_eq!(response.status(), 200);
    }

    /// One long-poll: the task, or `None` on 204.
    pub async fn poll(&self) -> Option<Value> {
        let response = self
            .server
            .http
            .get(self.server.url(&format!("/_worker/workers/{}/tasks/next", self.worker_id)))
            .header("X-Worker-Token", WORKER_TOKEN)
            .send()
            .await
            .expect("poll request");
        match response.status().as_u16() {
            200 => Some(response.json().await.expect("task is JSON")),
            204 => None,
            other => panic!("poll answered {other}: {:?}", response.text().await),
        }
    }

    /// Polls until a task arrives (up to `timeout`).
    pub async fn next_task(&self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(task) = self.poll().await {
                return task;
            }
            assert!(Instant::now() < deadline, "worker {} got no task in {timeout:?}", self.worker_id);
        }
    }

    /// Posts `result` for `task`; returns the HTTP status and body.
    pub async fn post_result(&self, task: &Value, result: Value) -> (u16, Value) {
        let body = json!({
            "job_id": task["job_id"],
            "task_id": task["task_id"],
            "worker_id": self.worker_id,
            "result": result,
        });
        let response = self
            .server
            .http
            .post(self.server.url("/_worker/tasks/result"))
            .header("X-Worker-Token", WORKER_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("result request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// An HTTP answer reduced to what tests look at.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    pub text: String,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let content_type =
            response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = response.text().await.expect("response body");
        Self { status, content_type, text }
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// Asserts the spec's error format: `status`, a JSON content type and a
    /// `{"error": "<non-empty string>"}` body. Returns the message.
    pub fn assert_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "unexpected status: {self:?}");
        assert!(
            self.content_type.as_deref().is_some_and(|t| t.starts_with("application/json")),
            "an error must be JSON: {self:?}"
        );
        let message = self.json()["error"].as_str().map(str::to_owned);
        match message {
            Some(message) if !message.is_empty() => message,
            _ => panic!("an error body must be {{\"error\": \"…\"}}: {self:?}"),
        }
    }
}

/// Which token header a raw request carries.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    None,
    Client(&'a str),
    Worker(&'a str),
}

impl TestServer {
    /// Sends `method path` with `auth` and, when given, a raw body sent as
    /// `application/json`.
    pub async fn send(&self, method: reqwest::Method, path: &str, auth: Auth<'_>, body: Option<&str>) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        request = match auth {
            Auth::None => request,
            Auth::Client(token) => request.header("X-Avtomatika-Token", token),
            Auth::Worker(token) => request.header("X-Worker-Token", token),
        };
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_owned());
        }
        Answer::read(request.send().await.expect("request is sent")).await
    }

    /// The value of one sample of `GET /_public/metrics`, named as it is
    /// rendered: `name` or `name{label="value",…}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let answer = self.send(reqwest::Method::GET, "/_public/metrics", Auth::None, None).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let value = answer.text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok());
        value.unwrap_or_else(|| panic!("no {series} in\n{}", answer.text))
    }

    /// `GET /api/v1/jobs/{id}` with the client token, as raw text.
    pub async fn job_text(&self, job_id: &str) -> String {
        let answer =
            self.send(reqwest::Method::GET, &format!("/api/v1/jobs/{job_id}"), Auth::Client(CLIENT_TOKEN), None).await;
        assert_eq!(answer.status, 200, "get job {job_id}: {answer:?}");
        answer.text
    }
}

impl TestWorker<'_> {
    /// `PATCH /_worker/workers/{id}` with `body` (none: an empty ping).
    pub async fn heartbeat(&self, body: Option<Value>) -> Answer {
        let body = body.map(|b| b.to_string());
        self.server
            .send(
                reqwest::Method::PATCH,
                &format!("/_worker/workers/{}", self.worker_id),
                Auth::Worker(WORKER_TOKEN),
                body.as_deref(),
            )
            .await
    }

    /// Posts an arbitrary result body (ids and all) with the worker token.
    pub async fn post_result_body(&self, body: Value) -> Answer {
        self.server
            .send(reqwest::Method::POST, "/_worker/tasks/result", Auth::Worker(WORKER_TOKEN), Some(&body.to_string()))
            .await
    }

    /// Runs one `hello` job for `name` through this worker (registered for
    /// `greet` already) to `finished`, answering with `name` as the greeting;
    /// returns the job's id.
    pub async fn run_hello(&self, name: &str) -> String {
        let job_id = self.server.create_job("/api/v1/jobs/hello", json!({"initial_data": {"name": name}})).await;
        let task = self.next_task(Duration::from_secs(10)).await;
        assert_eq!(task["job_id"], job_id.as_str());
        let (status, _) = self.post_result(&task, json!({"status": "success", "data": {"greeting": name}})).await;
        assert_eq!(status, 200);
        self.server.wait_for_status(&job_id, "finished").await;
        job_id
    }

    /// Asserts that no task is queued: a poll answers 204. It waits out the
    /// server's poll timeout, so keep that short where this is used.
    pub async fn assert_no_task(&self) {
        if let Some(task) = self.poll().await {
            panic!("worker {} was given a task it should not get: {task:#}", self.worker_id);
        }
    }
}

/// A fresh directory holding `files`: (file name in the directory, source
/// path), e.g. `("hello.wasm", avtomatika_plugins::HELLO_COMPONENT)`. Serve it
/// with `Config::blueprints_dir`; keep it alive as long as the server.
pub fn blueprints_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (name, source) in files {
        std::fs::copy(source, dir.path().join(name)).unwrap_or_else(|e| panic!("copying {source}: {e}"));
    }
    dir
}

/// `config` serving only `misbehave` and `hello`, with one executor slot: a
/// `misbehave` job in mode `loop` holds the slot for `PLUGIN_TIMEOUT_MS` (5 s),
/// so jobs created meanwhile stay `pending`. Keep the directory alive.
pub fn one_busy_slot(config: Config) -> (Config, tempfile::TempDir) {
    let dir = blueprints_dir(&[
        ("misbehave.wasm", avtomatika_plugins::MISBEHAVE_COMPONENT),
        ("hello.wasm", avtomatika_plugins::HELLO_COMPONENT),
    ]);
    let config = Config {
        blueprints_dir: Some(dir.path().to_owned()),
        executor_max_concurrent_jobs: 1,
        job_max_retries: 0,
        plugin_limits: avtomatika::config::PluginLimits {
            memory_bytes: 16 << 20,
            timeout: Duration::from_secs(5),
            ..Default::default()
        },
        ..config
    };
    (config, dir)
}
