//! Property tests of the job state machine (proptest), through the real
//! server, the real example components and its HTTP API: generated sequences
//! of worker results (every status and error code, malformed ones, stale and
//! repeated ones, two copies racing), client cancels and watcher rounds far past every
//! deadline, against one-task (`hello`), two-task (`pipeline`) and
//! parallel (`image-pipeline`) jobs, on memory storage and on Redis. Whatever the sequence:
//!
//! - every answer is a success or a clear `4xx`, never a `5xx`;
//! - the job's `version` never goes back, and moves whenever the job does;
//! - no task ever has two accepted results, and a stale or repeated one is
//!   `result_ignored`;
//! - driven on, the job ends in exactly one terminal status and stays there
//!   (its history, in SQLite, holds exactly one terminal event).
//!
//! Timeouts are watcher rounds at chosen instants (the watcher loop is off),
//! so a loaded machine changes the interleavings tried, not the verdict.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use avtomatika::config::{Config, HistoryDatabase, RedisConfig};
use avtomatika_tests::{Answer, Auth, CLIENT_TOKEN, TestServer, TestWorker, WORKER_TOKEN, manual_watcher_config};
use chrono::{TimeDelta, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{Value, json};

/// Generated sequences; each is one job driven through up to `MAX_STEPS`.
const CASES: u32 = 40;
const MAX_STEPS: usize = 14;
const TERMINAL: [&str; 5] = ["finished", "failed", "cancelled", "error", "quarantined"];
const TERMINAL_EVENTS: [&str; 4] = ["job_finished", "job_failed", "job_cancelled", "job_quarantined"];
const TASK_TYPES: [&str; 4] = ["greet", "fetch", "publish", "resize"];

#[derive(Debug, Clone, Copy)]
enum Blueprint {
    Hello,
    Pipeline,
    Images,
}

impl Blueprint {
    fn create(self) -> (&'static str, Value) {
        // Deadlines far enough out that only a watcher round reaches them.
        let timeouts = json!({"dispatch_timeout": 600, "result_timeout": 600});
        let mut body = match self {
            Self::Hello => json!({"initial_data": {"name": "Ada"}}),
            Self::Pipeline => json!({"initial_data": {"url": "https://example.com"}}),
            Self::Images => json!({"initial_data": {"image": "cat.png", "sizes": ["s", "m"]}}),
        };
        body.as_object_mut().into_iter().for_each(|b| b.extend(timeouts.as_object().cloned().unwrap_or_default()));
        let path = match self {
            Self::Hello => "/api/v1/jobs/hello",
            Self::Pipeline => "/api/v1/jobs/pipeline",
            Self::Images => "/api/v1/jobs/image-pipeline",
        };
        (path, body)
    }
}

/// What a worker answers.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// `success` with the data the task type's next handler reads.
    Success,
    /// `success` without that data (the next handler fails the job).
    EmptySuccess,
    Transient,
    Permanent,
    InvalidInput,
    /// `failure` with an error code the host does not know.
    UnknownCode,
    Cancelled,
    /// A status no transition names.
    Custom,
    /// A body with neither `result` nor `status`: refused with `400`.
    Unreadable,
}

impl Reply {
    fn result(self, task_type: &str) -> Value {
        let data = match task_type {
            "greet" => json!({"greeting": "Hello, Ada"}),
            "fetch" => json!({"content": "some text"}),
            "resize" => json!({"url": "s3://thumbs/cat.png"}),
            _ => json!({}),
        };
        let failure = |code: &str| json!({"status": "failure", "error": {"code": code, "message": "generated"}});
        match self {
            Self::Success => json!({"status": "success", "data": data}),
            Self::EmptySuccess => json!({"data": {}}),
            Self::Transient => failure("TRANSIENT_ERROR"),
            Self::Permanent => failure("PERMANENT_ERROR"),
            Self::InvalidInput => failure("INVALID_INPUT_ERROR"),
            Self::UnknownCode => failure("NO_SUCH_CODE"),
            Self::Cancelled => json!({"status": "cancelled"}),
            Self::Custom => json!({"status": "needs_review"}),
            Self::Unreadable => Value::Null,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// The worker polls once and keeps what it gets.
    Take,
    /// The worker answers the held task picked by the index.
    Answer(usize, Reply),
    /// The worker posts the same new answer twice at once.
    Race(usize, Reply),
    /// Every answer posted so far is posted again.
    Repeat,
    /// A registered worker the task was not given to answers it.
    Intrude(usize),
    Cancel,
    /// A watcher round a day from now: every deadline of the job has passed.
    Timeout,
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        4 => Just(Reply::Success),
        1 => Just(Reply::EmptySuccess),
        2 => Just(Reply::Transient),
        1 => Just(Reply::Permanent),
        1 => Just(Reply::InvalidInput),
        1 => Just(Reply::UnknownCode),
        1 => Just(Reply::Cancelled),
        1 => Just(Reply::Custom),
        1 => Just(Reply::Unreadable),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => Just(Step::Take),
        5 => (0..4usize, reply()).prop_map(|(i, r)| Step::Answer(i, r)),
        2 => (0..4usize, reply()).prop_map(|(i, r)| Step::Race(i, r)),
        1 => Just(Step::Repeat),
        1 => (0..4usize).prop_map(Step::Intrude),
        1 => Just(Step::Cancel),
        1 => Just(Step::Timeout),
    ]
}

fn case() -> impl Strategy<Value = (Blueprint, Vec<Step>)> {
    let blueprint = prop_oneof![Just(Blueprint::Hello), Just(Blueprint::Pipeline), Just(Blueprint::Images)];
    (blueprint, proptest::collection::vec(step(), 1..MAX_STEPS))
}

/// What one case has seen of its job.
struct Observed {
    job_id: String,
    version: u64,
    /// Status, state and task ids: whatever changes must bump the version.
    shape: Value,
    /// Tasks handed to the worker and not yet answered by it.
    held: Vec<Value>,
    /// Every answer posted, to post again.
    posted: Vec<Value>,
    /// Accepted results per task id.
    accepted: HashMap<String, u32>,
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

fn is_accepted(answer: &Value) -> bool {
    answer["status"].as_str().is_some_and(|s| s.starts_with("result_accepted") || s.ends_with("result_accepted"))
}

struct Harness<'a> {
    server: &'a TestServer,
    worker: TestWorker<'a>,
    intruder: TestWorker<'a>,
}

impl Harness<'_> {
    async fn observe(&self, seen: &mut Observed, after: &str) -> Result<Value, TestCaseError> {
        let job = self.server.job(&seen.job_id).await;
        let version = job["version"].as_u64().ok_or_else(|| fail(format!("no version: {job:#}")))?;
        let task_ids = |job: &Value| {
            let mut ids = vec![job["current_task"]["task_id"].clone()];
            if let Some(branches) = job["parallel"]["branches"].as_array() {
                ids.extend(branches.iter().map(|b| b["task_id"].clone()));
            }
            ids
        };
        let shape = json!([job["status"], job["current_state"], task_ids(&job), job["error_message"]]);
        if version < seen.version {
            return Err(fail(format!("version went back {} -> {version} after {after}: {job:#}", seen.version)));
        }
        if !seen.shape.is_null() && shape != seen.shape && version == seen.version {
            return Err(fail(format!("job changed without a new version after {after}: {} -> {shape}", seen.shape)));
        }
        seen.version = version;
        seen.shape = shape;
        Ok(job)
    }

    /// Posts `result` for `task` as `worker`; checks and records the answer.
    async fn post(
        &self,
        worker: &TestWorker<'_>,
        task: &Value,
        result: Value,
        seen: &mut Observed,
    ) -> Result<Answer, TestCaseError> {
        let mut body = json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": worker.worker_id});
        if !result.is_null() {
            body["result"] = result;
        }
        let answer = self
            .server
            .send(Method::POST, "/_worker/tasks/result", Auth::Worker(WORKER_TOKEN), Some(&body.to_string()))
            .await;
        self.record(&answer, task, &body, seen)?;
        Ok(answer)
    }

    fn record(&self, answer: &Answer, task: &Value, body: &Value, seen: &mut Observed) -> Result<(), TestCaseError> {
        if answer.status >= 500 {
            return Err(fail(format!("{} for result {body}: {}", answer.status, answer.text)));
        }
        if answer.status == 200 && is_accepted(&answer.json()) {
            let task_id = task["task_id"].as_str().unwrap_or_default().to_owned();
            let count = seen.accepted.entry(task_id.clone()).or_default();
            *count += 1;
            if *count > 1 {
                return Err(fail(format!("a second result accepted for task {task_id}: {body}")));
            }
        }
        if answer.status == 200 {
            seen.posted.push(body.clone());
        }
        Ok(())
    }

    /// One poll; a task of an earlier case's job is answered and dropped.
    async fn take(&self, seen: &mut Observed) -> Result<Option<Value>, TestCaseError> {
        for _ in 0..4 {
            match self.worker.poll().await {
                None => return Ok(None),
                Some(task) if task["job_id"] == seen.job_id.as_str() => return Ok(Some(task)),
                Some(stale) => {
                    let kind = stale["type"].as_str().unwrap_or_default().to_owned();
                    let _ = self.worker.post_result(&stale, Reply::Success.result(&kind)).await;
                }
            }
        }
        Ok(None)
    }

    async fn run(&self, step: Step, seen: &mut Observed) -> Result<(), TestCaseError> {
        let pick = |held: &Vec<Value>, i: usize| (!held.is_empty()).then(|| i % held.len());
        match step {
            Step::Take => {
                if let Some(task) = self.take(seen).await? {
                    seen.held.push(task);
                }
            }
            Step::Answer(i, reply) => {
                if let Some(i) = pick(&seen.held, i) {
                    let task = seen.held.remove(i);
                    let kind = task["type"].as_str().unwrap_or_default().to_owned();
                    let answer = self.post(&self.worker, &task, reply.result(&kind), seen).await?;
                    if matches!(reply, Reply::Unreadable) && answer.status != 400 {
                        return Err(fail(format!("a result without status was not refused: {answer:?}")));
                    }
                }
            }
            Step::Race(i, reply) => {
                if let Some(i) = pick(&seen.held, i) {
                    let task = seen.held.remove(i);
                    let kind = task["type"].as_str().unwrap_or_default().to_owned();
                    let body = json!({
                        "job_id": task["job_id"], "task_id": task["task_id"],
                        "worker_id": self.worker.worker_id, "result": reply.result(&kind),
                    })
                    .to_string();
                    let send = || {
                        self.server.send(Method::POST, "/_worker/tasks/result", Auth::Worker(WORKER_TOKEN), Some(&body))
                    };
                    let (a, b) = tokio::join!(send(), send());
                    let body: Value = serde_json::from_str(&body).unwrap_or_default();
                    self.record(&a, &task, &body, seen)?;
                    self.record(&b, &task, &body, seen)?;
                }
            }
            Step::Repeat => {
                for body in seen.posted.clone() {
                    let answer = self
                        .server
                        .send(
                            Method::POST,
                            "/_worker/tasks/result",
                            Auth::Worker(WORKER_TOKEN),
                            Some(&body.to_string()),
                        )
                        .await;
                    if answer.status >= 500 || (answer.status == 200 && answer.json()["status"] != "result_ignored") {
                        return Err(fail(format!("a repeated result was not ignored: {body} -> {answer:?}")));
                    }
                }
            }
            Step::Intrude(i) => {
                if let Some(i) = pick(&seen.held, i) {
                    let task = seen.held[i].clone();
                    let answer = self.post(&self.intruder, &task, Reply::Success.result(""), seen).await?;
                    // 403 while the task is current; ignored once it is not.
                    let ignored = answer.status == 200 && answer.json()["status"] == "result_ignored";
                    if answer.status != 403 && !ignored {
                        return Err(fail(format!("another worker's result was taken: {answer:?}")));
                    }
                }
            }
            Step::Cancel => {
                let path = format!("/api/v1/jobs/{}/cancel", seen.job_id);
                let answer = self.server.send(Method::POST, &path, Auth::Client(CLIENT_TOKEN), None).await;
                if answer.status >= 500 {
                    return Err(fail(format!("cancel answered {}: {}", answer.status, answer.text)));
                }
            }
            Step::Timeout => {
                let at = Utc::now() + TimeDelta::days(1);
                self.server.orchestrator.time_out_overdue(at).await.map_err(|e| fail(format!("watcher: {e}")))?;
            }
        }
        self.observe(seen, &format!("{step:?}")).await?;
        Ok(())
    }

    /// Answers whatever the job still waits on with success, running a
    /// watcher round when nothing comes, until the job is terminal.
    async fn settle(&self, seen: &mut Observed) -> Result<Value, TestCaseError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut idle = 0;
        loop {
            let job = self.observe(seen, "settling").await?;
            if TERMINAL.iter().any(|t| job["status"] == *t) {
                return Ok(job);
            }
            if Instant::now() > deadline {
                return Err(fail(format!("the job never ended: {job:#}")));
            }
            let mut held = std::mem::take(&mut seen.held);
            if let Some(task) = self.take(seen).await? {
                held.push(task);
            }
            if held.is_empty() {
                idle += 1;
                if idle % 3 == 0 {
                    let at = Utc::now() + TimeDelta::days(1);
                    self.server.orchestrator.time_out_overdue(at).await.map_err(|e| fail(format!("watcher: {e}")))?;
                }
            }
            for task in held {
                let kind = task["type"].as_str().unwrap_or_default().to_owned();
                self.post(&self.worker, &task, Reply::Success.result(&kind), seen).await?;
            }
        }
    }

    /// After the end nothing moves the job: results, cancels, watcher rounds.
    async fn poke_ended(&self, seen: &mut Observed, ended: &Value) -> Result<(), TestCaseError> {
        self.run(Step::Repeat, seen).await?;
        self.run(Step::Cancel, seen).await?;
        self.run(Step::Timeout, seen).await?;
        let job = self.observe(seen, "poking the ended job").await?;
        if job["status"] != ended["status"] || job["version"] != ended["version"] {
            return Err(fail(format!("an ended job changed: {ended:#} -> {job:#}")));
        }
        Ok(())
    }

    /// The job's history holds exactly one terminal event, once written.
    async fn one_terminal_event(&self, job_id: &str) -> Result<(), TestCaseError> {
        let path = format!("/api/v1/jobs/{job_id}/history");
        let deadline = Instant::now() + Duration::from_secs(10);
        let terminal = loop {
            let answer = self.server.send(Method::GET, &path, Auth::Client(CLIENT_TOKEN), None).await;
            let events = answer.json();
            let terminal: Vec<Value> = events
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| TERMINAL_EVENTS.iter().any(|t| e["event_type"] == *t))
                .cloned()
                .collect();
            if !terminal.is_empty() || Instant::now() > deadline {
                break terminal;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if terminal.len() != 1 {
            return Err(fail(format!("{} terminal events for job {job_id}: {terminal:#?}", terminal.len())));
        }
        Ok(())
    }

    async fn case(&self, blueprint: Blueprint, steps: &[Step]) -> Result<(), TestCaseError> {
        // Keeps the worker live however long the run takes.
        let ping = self.worker.heartbeat(None).await;
        if ping.status != 200 {
            return Err(fail(format!("heartbeat: {ping:?}")));
        }
        let (path, body) = blueprint.create();
        let job_id = self.server.create_job(path, body).await;
        let mut seen = Observed {
            job_id,
            version: 0,
            shape: Value::Null,
            held: Vec::new(),
            posted: Vec::new(),
            accepted: HashMap::new(),
        };
        self.observe(&mut seen, "create").await?;
        for step in steps {
            self.run(*step, &mut seen).await?;
        }
        let ended = self.settle(&mut seen).await?;
        self.poke_ended(&mut seen, &ended).await?;
        self.one_terminal_event(&seen.job_id).await
    }
}

/// Runs the generated cases on a server started from `config`.
fn run_cases(config: Config) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        worker_poll_timeout: Duration::from_millis(150),
        job_max_retries: 2,
        history_database: Some(HistoryDatabase::Sqlite(dir.path().join("history.db"))),
        ..config
    };
    let server = runtime.block_on(TestServer::start_with(config));
    let harness =
        Harness { server: &server, worker: server.worker("sm-worker"), intruder: server.worker("sm-intruder") };
    runtime.block_on(async {
        harness.worker.register(&TASK_TYPES).await;
        // Registered for no task type here, so it is never dispatched to.
        harness.intruder.register(&["unused-type"]).await;
    });

    let mut runner = TestRunner::new(RunnerConfig {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..RunnerConfig::default()
    });
    let result = runner.run(&case(), |(blueprint, steps)| runtime.block_on(harness.case(blueprint, &steps)));
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn any_sequence_of_results_cancels_and_timeouts_ends_the_job_once_in_memory() {
    run_cases(manual_watcher_config());
}

/// Database 14 of the Redis at 127.0.0.1:6379, flushed first; no other test uses it.
#[test]
fn any_sequence_of_results_cancels_and_timeouts_ends_the_job_once_on_redis() {
    const DB: u32 = 14;
    let client = redis::Client::open(format!("redis://127.0.0.1:6379/{DB}")).unwrap();
    let mut conn = client.get_connection().expect("Redis at 127.0.0.1:6379");
    let () = redis::cmd("FLUSHDB").query(&mut conn).expect("FLUSHDB");
    let redis = RedisConfig { host: "127.0.0.1".into(), port: 6379, db: DB };
    run_cases(Config { redis: Some(redis), instance_id: "state-machine".into(), ..manual_watcher_config() });
}
