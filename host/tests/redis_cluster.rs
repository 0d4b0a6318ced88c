//! Several `avtomatika` processes sharing one Redis (the real binary, a real
//! Redis at 127.0.0.1:6379, each test on a database of its own, flushed
//! first), and the bad conditions around it:
//!
//! - two instances serve one job pool: a job created on either is served to a
//!   worker polling the other, and a long-poll on one is woken at once by a
//!   job created on the other;
//! - `kill -9` of one instance with 1,000 jobs in flight: every job finishes,
//!   exactly once, on the survivor (entries the dead instance had read are
//!   claimed after they sat idle for 10 s);
//! - an instance killed and restarted with the same `INSTANCE_ID` picks up the
//!   jobs it left queued;
//! - Redis unreachable at start: a clear error naming the address and exit 1;
//! - Redis lost while running (a private `redis-server`, killed then
//!   restarted from its append-only file, then paused): requests answer 503,
//!   the process stays up, and everything queued before the outage finishes;
//! - two narrower cases, made deterministic with `CLIENT PAUSE` on a private
//!   `redis-server`: a task taken off a worker's queue by an instance that
//!   dies before answering the poll, or by a poll answered 503 because Redis
//!   stalled, is not lost; and a job created right after a stall runs at once.
//!
//! The worker is written here: several long-polls on every instance, and a
//! result goes to whichever instance is alive, retried elsewhere when the
//! one it was sent to dies. It records every task and every answer, so the
//! tests can tell a job finished once from one finished twice.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_avtomatika");
const CLIENT_TOKEN: &str = "cluster-client-token";
const WORKER_TOKEN: &str = "cluster-worker-token";
/// The shared Redis server.
const REDIS_PORT: u16 = 6379;
/// Every key the server writes starts with this (`avtomatika::REDIS_PREFIX`).
const PREFIX: &str = avtomatika::REDIS_PREFIX;
/// The job stream and its consumer group (storage/redis/mod.rs).
const JOB_STREAM: &str = "avtomatika:jobs";
const GROUP: &str = "executors";

/// One database per test, so tests running at once never see each other's
/// keys (the storage conformance suite uses database 0).
const DB_TWO_INSTANCES: u32 = 9;
const DB_CRASH: u32 = 10;
const DB_RESTART: u32 = 11;
const DB_SIGTERM: u32 = 12;

/// Start-up compiles the blueprints: well under this even in a debug build.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// `WORKER_POLL_TIMEOUT_SECONDS` unless a test says otherwise.
const POLL_TIMEOUT_SECONDS: u64 = 2;

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

fn redis_conn(port: u16, db: u32) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/{db}"))
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connect to Redis at 127.0.0.1:{port}/{db}: {e}"))
}

/// A fresh connection to database `db` of the shared Redis, emptied.
fn fresh_db(db: u32) -> redis::Connection {
    let mut conn = redis_conn(REDIS_PORT, db);
    redis::cmd("FLUSHDB").query::<()>(&mut conn).expect("FLUSHDB");
    conn
}

/// Entries of the job stream read by some instance and not yet acknowledged,
/// per consumer (`INSTANCE_ID`).
fn pending_by_consumer(conn: &mut redis::Connection) -> HashMap<String, u64> {
    // [count, min-id, max-id, [[consumer, count], ...]]
    let reply: redis::Value = redis::cmd("XPENDING").arg(JOB_STREAM).arg(GROUP).query(conn).expect("XPENDING");
    let mut out = HashMap::new();
    if let redis::Value::Array(parts) = reply
        && let Some(redis::Value::Array(consumers)) = parts.get(3)
    {
        for consumer in consumers {
            if let Ok((name, count)) = redis::from_redis_value_ref::<(String, String)>(consumer) {
                out.insert(name, count.parse().unwrap_or(0));
            }
        }
    }
    out
}

/// Every job id stored in the database, whoever created it.
fn stored_job_ids(conn: &mut redis::Connection) -> HashSet<String> {
    let pattern = format!("{PREFIX}:job:*");
    let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(conn).expect("KEYS");
    keys.into_iter().filter_map(|k| k.rsplit(':').next().map(str::to_owned)).collect()
}

/// Waits until the job stream is empty, up to `timeout`. A dead instance's
/// step can be recorded while its acknowledgement (which rides along with
/// that instance's next update) is lost: the job carries on, and its stale
/// entry stays pending until a live instance claims it as abandoned (idle
/// 10 s, checked every 2 s) and finds nothing left to do.
async fn wait_stream_drained(conn: &mut redis::Connection, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let stream_len: u64 = redis::cmd("XLEN").arg(JOB_STREAM).query(conn).expect("XLEN");
        if stream_len == 0 || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that nothing is left queued: no job stream entry (entries are
/// deleted once acknowledged), none pending, no task waiting for a worker.
fn assert_queues_empty(conn: &mut redis::Connection, worker_ids: &[&str]) {
    let stream_len: u64 = redis::cmd("XLEN").arg(JOB_STREAM).query(conn).expect("XLEN");
    let pending = pending_by_consumer(conn);
    assert_eq!(stream_len, 0, "job stream entries left over; pending per consumer: {pending:?}");
    assert!(pending.values().all(|&n| n == 0), "job stream entries left pending: {pending:?}");
    for worker in worker_ids {
        let queued: u64 = redis::cmd("ZCARD").arg(format!("{PREFIX}:tasks:{worker}")).query(conn).expect("ZCARD");
        assert_eq!(queued, 0, "tasks left queued for {worker}");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A private `redis-server` on its own port, persisting every write to an
/// append-only file in `dir` before answering, so that it can be killed and
/// restarted with nothing lost: Redis going away and coming back, without
/// touching the shared server the other tests use.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start(port: u16, dir: &Path) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        // Owned from here on: dropped (killed and reaped) if it never answers.
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return server;
            }
            assert!(Instant::now() < deadline, "redis-server on port {port} did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash or a lost host would.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------

/// One `avtomatika` process.
struct Instance {
    id: String,
    child: Child,
    base: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    /// Starts the binary against Redis `127.0.0.1:redis_port`, database `db`,
    /// as `INSTANCE_ID=id`, and waits until it serves. Only `PATH` and `HOME`
    /// are inherited; `vars` come last and may override anything.
    async fn start(id: &str, redis_port: u16, db: u32, vars: &[(&str, &str)]) -> Self {
        let mut child = server_command(id, redis_port, db, vars).spawn().expect("start avtomatika");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let stderr = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            let port = logs.lock().unwrap().iter().filter(|l| l.contains("serving")).find_map(|line| {
                let rest = &line[line.find("127.0.0.1:")? + "127.0.0.1:".len()..];
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                port.parse::<u16>().ok()
            });
            if let Some(port) = port {
                break port;
            }
            if let Some(status) = child.try_wait().expect("wait for the server") {
                panic!("instance {id} exited with {status} before serving: {:#?}", logs.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "instance {id} did not serve in time: {:#?}", logs.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self { id: id.to_owned(), child, base: format!("http://127.0.0.1:{port}"), logs }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`: no shutdown, no cleanup, whatever was in flight is cut off.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the graceful stop (`SHUTDOWN_GRACE_SECONDS`).
    fn sigterm(&self) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(sent.success(), "kill -TERM {} failed", self.id);
    }

    /// Waits up to `timeout` for the process to exit by itself.
    async fn exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Log lines containing `needle`.
    fn log_lines(&self, needle: &str) -> Vec<String> {
        self.logs.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    fn all_logs(&self) -> String {
        format!("instance {}:\n{}", self.id, self.logs.lock().unwrap().join("\n"))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

fn server_command(id: &str, redis_port: u16, db: u32, vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    for keep in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(keep) {
            cmd.env(keep, value);
        }
    }
    // HOME is kept for tools, not for the plugin cache: never write to the
    // user's ~/.cache/avtomatika from a test.
    cmd.env("PLUGIN_CACHE_DIR", "off");
    let redis_port = redis_port.to_string();
    let db = db.to_string();
    let poll_timeout = POLL_TIMEOUT_SECONDS.to_string();
    cmd.envs([
        ("API_HOST", "127.0.0.1"),
        ("API_PORT", "0"),
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", &redis_port),
        ("REDIS_DB", &db),
        ("INSTANCE_ID", id),
        ("CLIENT_TOKEN", CLIENT_TOKEN),
        ("GLOBAL_WORKER_TOKEN", WORKER_TOKEN),
        ("WORKER_POLL_TIMEOUT_SECONDS", &poll_timeout),
        ("LOG_FORMAT", "text"),
    ]);
    cmd.envs(vars.iter().copied());
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client")
}

/// `POST /api/v1/jobs/hello` on `base`: the HTTP status and body.
async fn try_create(http: &reqwest::Client, base: &str, name: &str) -> reqwest::Result<(u16, Value)> {
    let response = http
        .post(format!("{base}/api/v1/jobs/hello"))
        .header("X-Avtomatika-Token", CLIENT_TOKEN)
        .json(&json!({ "name": name }))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// Creates a job on `base`, which must accept it.
async fn create(http: &reqwest::Client, base: &str, name: &str) -> String {
    let (status, body) = try_create(http, base, name).await.expect("create request");
    assert_eq!(status, 202, "create on {base}: {body}");
    body["job_id"].as_str().expect("job_id").to_owned()
}

/// `GET /api/v1/jobs/{id}` on `base`: the HTTP status and body.
async fn try_job(http: &reqwest::Client, base: &str, job_id: &str) -> reqwest::Result<(u16, Value)> {
    let response =
        http.get(format!("{base}/api/v1/jobs/{job_id}")).header("X-Avtomatika-Token", CLIENT_TOKEN).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn job(http: &reqwest::Client, base: &str, job_id: &str) -> Value {
    let (status, body) = try_job(http, base, job_id).await.expect("job request");
    assert_eq!(status, 200, "get job {job_id} on {base}: {body}");
    body
}

/// Reads every job in `ids` from `base` until all are `finished` or `timeout`
/// passes; returns the last reading of each (id → job).
async fn wait_all_finished(
    http: &reqwest::Client,
    base: &str,
    ids: &HashSet<String>,
    timeout: Duration,
) -> HashMap<String, Value> {
    try_wait_all_finished(http, base, ids, timeout).await.unwrap_or_else(|(open, last)| {
        let sample: Vec<&Value> = open.iter().take(3).map(|id| &last[id]).collect();
        panic!("{} of {} jobs not finished after {timeout:?}; e.g. {sample:#?}", open.len(), ids.len())
    })
}

/// [`wait_all_finished`], or the ids still open and the last readings.
async fn try_wait_all_finished(
    http: &reqwest::Client,
    base: &str,
    ids: &HashSet<String>,
    timeout: Duration,
) -> Result<HashMap<String, Value>, (Vec<String>, HashMap<String, Value>)> {
    let deadline = Instant::now() + timeout;
    let mut last: HashMap<String, Value> = HashMap::new();
    let mut open: Vec<String> = ids.iter().cloned().collect();
    loop {
        let readings: Vec<(String, Value)> = futures::stream::iter(open.clone())
            .map(|id| async move {
                let job = job(http, base, &id).await;
                (id, job)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        open.clear();
        for (id, job) in readings {
            if job["status"] != "finished" {
                assert!(
                    job["status"] == "pending" || job["status"] == "running" || job["status"] == "waiting_for_worker",
                    "job {id} went wrong: {job:#}"
                );
                open.push(id.clone());
            }
            last.insert(id, job);
        }
        if open.is_empty() {
            return Ok(last);
        }
        if Instant::now() >= deadline {
            return Err((open, last));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------
// The test worker
// ---------------------------------------------------------------------------

/// What the worker saw, per job id.
#[derive(Default, Debug)]
struct Ledger {
    /// Task ids handed to the worker.
    tasks: HashMap<String, Vec<String>>,
    /// The `status` of every answered result post (`result_accepted_success`, `result_ignored`, …).
    answers: HashMap<String, Vec<String>>,
    /// Result posts sent to an instance that died before answering: the
    /// result may or may not have been applied.
    unanswered: HashMap<String, usize>,
    /// Task answers cut off mid-body (the instance died while sending one).
    cut_off_polls: usize,
    /// Anything a healthy cluster must never answer.
    unexpected: Vec<String>,
}

impl Ledger {
    fn accepted(&self, job_id: &str) -> usize {
        self.answers.get(job_id).map_or(0, |a| a.iter().filter(|s| *s == "result_accepted_success").count())
    }
}

struct WorkerShared {
    http: reqwest::Client,
    /// Base URLs of every instance: polls go to each, a result to the one
    /// its task came from first, then to the others.
    bases: Vec<String>,
    ledger: Mutex<Ledger>,
    stop: AtomicBool,
    /// Simulated work per task.
    work: Duration,
    results: AtomicUsize,
}

/// A fleet of worker ids, each keeping `polls` long-polls on every instance.
struct Worker {
    shared: Arc<WorkerShared>,
    loops: Vec<JoinHandle<()>>,
}

impl Worker {
    /// Registers `worker_ids` on the first instance that answers, then
    /// starts polling.
    async fn start(bases: &[&str], worker_ids: &[&str], polls: usize, work: Duration) -> Self {
        let http = http();
        for worker_id in worker_ids {
            register(&http, bases, worker_id).await;
        }
        let shared = Arc::new(WorkerShared {
            http,
            bases: bases.iter().map(|b| (*b).to_owned()).collect(),
            ledger: Mutex::new(Ledger::default()),
            stop: AtomicBool::new(false),
            work,
            results: AtomicUsize::new(0),
        });
        let mut loops = Vec::new();
        for instance in 0..bases.len() {
            for worker_id in worker_ids {
                for _ in 0..polls {
                    loops.push(tokio::spawn(poll_loop(shared.clone(), instance, (*worker_id).to_owned())));
                }
            }
        }
        Self { shared, loops }
    }

    /// Results the server answered so far.
    fn results(&self) -> usize {
        self.shared.results.load(Ordering::Relaxed)
    }

    /// Stops polling and returns what the worker saw.
    async fn stop(self) -> Ledger {
        self.shared.stop.store(true, Ordering::Relaxed);
        for handle in self.loops {
            // A poll waits out at most the server's poll timeout.
            let _ = tokio::time::timeout(Duration::from_secs(POLL_TIMEOUT_SECONDS + 10), handle).await;
        }
        std::mem::take(&mut *self.shared.ledger.lock().unwrap())
    }
}

async fn register(http: &reqwest::Client, bases: &[&str], worker_id: &str) {
    let body = json!({
        "worker_id": worker_id,
        "worker_type": "cluster-test",
        "supported_tasks": ["greet"],
        "max_concurrent_tasks": 1000,
    });
    for base in bases {
        let sent = http
            .post(format!("{base}/_worker/workers/register"))
            .header("X-Worker-Token", WORKER_TOKEN)
            .json(&body)
            .send()
            .await;
        if let Ok(response) = sent
            && response.status() == 200
        {
            return;
        }
    }
    panic!("no instance registered worker {worker_id}");
}

async fn poll_loop(shared: Arc<WorkerShared>, instance: usize, worker_id: String) {
    let url = format!("{}/_worker/workers/{worker_id}/tasks/next", shared.bases[instance]);
    let poll_limit = Duration::from_secs(POLL_TIMEOUT_SECONDS + 10);
    while !shared.stop.load(Ordering::Relaxed) {
        let sent = shared.http.get(&url).header("X-Worker-Token", WORKER_TOKEN).timeout(poll_limit).send().await;
        let response = match sent {
            Ok(response) => response,
            // The instance is down (or going): try again later.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match response.status().as_u16() {
            200 => {}
            204 => continue,
            503 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            other => {
                let text = response.text().await.unwrap_or_default();
                shared.ledger.lock().unwrap().unexpected.push(format!("poll answered {other}: {text}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let task: Value = match response.json().await {
            Ok(task) => task,
            Err(_) => {
                shared.ledger.lock().unwrap().cut_off_polls += 1;
                continue;
            }
        };
        let job_id = task["job_id"].as_str().unwrap_or_default().to_owned();
        let task_id = task["task_id"].as_str().unwrap_or_default().to_owned();
        shared.ledger.lock().unwrap().tasks.entry(job_id.clone()).or_default().push(task_id.clone());
        if !shared.work.is_zero() {
            tokio::time::sleep(shared.work).await;
        }
        post_result(&shared, instance, &worker_id, &job_id, &task_id).await;
    }
}

/// Posts a `success` result to the instance the task came from, then to the
/// others in turn until one answers.
async fn post_result(shared: &WorkerShared, first: usize, worker_id: &str, job_id: &str, task_id: &str) {
    let body = json!({
        "job_id": job_id,
        "task_id": task_id,
        "worker_id": worker_id,
        "result": { "status": "success", "data": { "greeting": "Hello!" } },
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut target = first;
    loop {
        let base = &shared.bases[target % shared.bases.len()];
        let sent = shared
            .http
            .post(format!("{base}/_worker/tasks/result"))
            .header("X-Worker-Token", WORKER_TOKEN)
            .json(&body)
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 200 => {
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                let status = answer["status"].as_str().unwrap_or("<no status>").to_owned();
                shared.ledger.lock().unwrap().answers.entry(job_id.to_owned()).or_default().push(status);
                shared.results.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Storage unavailable: the result was not applied; try again.
            Ok(response) if response.status() == 503 => {}
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                shared.ledger.lock().unwrap().unexpected.push(format!("result for {job_id} answered {status}: {text}"));
                return;
            }
            Err(e) => {
                // Refused before anything was sent: certainly not applied.
                // Anything else may have been applied before the instance died.
                if !e.is_connect() {
                    *shared.ledger.lock().unwrap().unanswered.entry(job_id.to_owned()).or_default() += 1;
                }
            }
        }
        if Instant::now() >= deadline {
            shared.ledger.lock().unwrap().unexpected.push(format!("result for {job_id} never answered"));
            return;
        }
        target += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each job in `ids` was handed out as exactly one task and had exactly one
/// result accepted. A result posted to an instance that died before
/// answering may have been applied there; its retry is then answered
/// `result_ignored`, and that job counts as accepted once.
fn assert_exactly_once(ledger: &Ledger, ids: &HashSet<String>) -> usize {
    assert!(ledger.unexpected.is_empty(), "unexpected answers: {:#?}", ledger.unexpected);
    let mut accepted_unseen = 0;
    for id in ids {
        let tasks = ledger.tasks.get(id).map_or(&[][..], Vec::as_slice);
        assert_eq!(tasks.len(), 1, "job {id}: expected exactly one task, got {tasks:?}");
        let accepted = ledger.accepted(id);
        let answers = ledger.answers.get(id).map_or(&[][..], Vec::as_slice);
        match accepted {
            1 => {}
            0 if ledger.unanswered.get(id).copied().unwrap_or(0) > 0
                && answers.iter().all(|a| a == "result_ignored") =>
            {
                accepted_unseen += 1;
            }
            _ => panic!("job {id}: {accepted} results accepted (answers {answers:?}, tasks {tasks:?})"),
        }
    }
    accepted_unseen
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// A worker polling only B gets jobs created on A and the reverse, and a
/// long-poll waiting on B is woken as soon as a job is created on A.
#[tokio::test]
async fn two_instances_serve_one_job_pool() {
    let _db = fresh_db(DB_TWO_INSTANCES);
    // A long poll timeout, so a prompt wake-up cannot be a poll that ended anyway.
    let vars = [("WORKER_POLL_TIMEOUT_SECONDS", "20")];
    let a = Instance::start("pool-a", REDIS_PORT, DB_TWO_INSTANCES, &vars).await;
    let b = Instance::start("pool-b", REDIS_PORT, DB_TWO_INSTANCES, &vars).await;
    let http = http();
    let poll = |base: &str, worker: &str| {
        let request = http
            .get(format!("{base}/_worker/workers/{worker}/tasks/next"))
            .header("X-Worker-Token", WORKER_TOKEN)
            .timeout(Duration::from_secs(40));
        async move {
            let response = request.send().await.expect("poll request");
            assert_eq!(response.status(), 200, "a task is expected");
            response.json::<Value>().await.expect("task JSON")
        }
    };
    let answer = |base: &str, worker: &str, task: &Value| {
        let request =
            http.post(format!("{base}/_worker/tasks/result")).header("X-Worker-Token", WORKER_TOKEN).json(&json!({
                "job_id": task["job_id"], "task_id": task["task_id"], "worker_id": worker,
                "result": { "status": "success", "data": { "greeting": "Hello!" } },
            }));
        async move {
            let response = request.send().await.expect("result request");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("result answer")["status"].clone()
        }
    };

    // One worker id throughout, so every task is its own: registered on A
    // and polling B, then registered (again) on B and polling A.
    let worker = "pool-worker";
    for (create_on, serve_on) in [(&a, &b), (&b, &a)] {
        register(&http, &[&create_on.base], worker).await;
        let name = format!("from {}", create_on.id);
        let job_id = create(&http, &create_on.base, &name).await;
        let task = poll(&serve_on.base, worker).await;
        assert_eq!(task["job_id"], job_id.as_str(), "another job's task");
        assert_eq!(task["params"]["name"], name.as_str());
        assert_eq!(answer(&serve_on.base, worker, &task).await, "result_accepted_success");
        let finished = job(&http, &create_on.base, &job_id).await;
        assert_eq!(finished["status"], "finished", "{finished:#}");
        assert_eq!(finished["state_history"]["greeting"], "Hello!");
        assert_eq!(job(&http, &serve_on.base, &job_id).await, finished, "both instances read the same job");
    }

    // Wake-up across instances: a poll waits on B, the job is created on A.
    let waiting = tokio::spawn(poll(&b.base, worker));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the poll returned before any job existed");
    let created = Instant::now();
    let job_id = create(&http, &a.base, "wake").await;
    let task = waiting.await.expect("poll task");
    let woken_after = created.elapsed();
    assert_eq!(task["job_id"], job_id.as_str());
    // Well under the 20 s poll timeout, and under the 5 s safety-net re-check
    // of a waiting poll: only the cross-instance wake-up explains it.
    assert!(woken_after < Duration::from_secs(2), "the poll on B was woken {woken_after:?} after the create on A");
    println!("long-poll on B woken {woken_after:?} after the job was created on A");
    assert_eq!(answer(&b.base, worker, &task).await, "result_accepted_success");
    assert_eq!(job(&http, &a.base, &job_id).await["status"], "finished");
}

/// `kill -9` of one of two instances while 1,000 jobs are in flight: every
/// job finishes on the survivor, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instance_loses_no_job_and_finishes_none_twice() {
    const JOBS: usize = 1000;
    const CREATORS: usize = 8;
    let mut redis = fresh_db(DB_CRASH);
    let started = Instant::now();
    // A task A took off a queue for a long-poll and never handed over can
    // only come back through the task deadline: keep it short enough to
    // matter within this test's wait.
    let vars = [("WORKER_TIMEOUT_SECONDS", "10"), ("WATCHER_INTERVAL_SECONDS", "1")];
    let mut a = Instance::start("crash-a", REDIS_PORT, DB_CRASH, &vars).await;
    let b = Instance::start("crash-b", REDIS_PORT, DB_CRASH, &vars).await;
    let bases = [a.base.as_str(), b.base.as_str()];
    let worker_ids = ["crash-worker-1", "crash-worker-2"];
    // 3 polls per worker id per instance; a little work per task so that
    // jobs pile up in every stage.
    let worker = Worker::start(&bases, &worker_ids, 3, Duration::from_millis(5)).await;

    // Creators alternate between A and B; a create A cannot answer goes to B.
    let http = http();
    let known = Arc::new(Mutex::new(HashSet::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let ambiguous = Arc::new(AtomicUsize::new(0));
    let creators: Vec<JoinHandle<()>> = (0..CREATORS)
        .map(|c| {
            let (http, known, next, ambiguous) = (http.clone(), known.clone(), next.clone(), ambiguous.clone());
            let bases = [a.base.clone(), b.base.clone()];
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < JOBS {
                    let mut target = c;
                    let job_id = loop {
                        let base = &bases[target % 2];
                        match try_create(&http, base, "Ada").await {
                            Ok((202, body)) => break body["job_id"].as_str().expect("job_id").to_owned(),
                            Ok((503, _)) => {}
                            Ok((status, body)) => panic!("create on {base} answered {status}: {body}"),
                            Err(e) if e.is_connect() => {}
                            // Sent, never answered: the job may exist without its id known here.
                            Err(_) => {
                                ambiguous.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        target += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    };
                    known.lock().unwrap().insert(job_id);
                }
            })
        })
        .collect();

    // Kill A mid-stream: after 400 creates, at a moment when it holds job
    // stream entries it has read and not acknowledged (so B must claim
    // them), or at the latest after 700.
    let kill_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let created = known.lock().unwrap().len();
        if created >= 400 {
            let pending = pending_by_consumer(&mut redis).get("crash-a").copied().unwrap_or(0);
            if pending > 0 || created >= 700 {
                break;
            }
        }
        assert!(Instant::now() < kill_deadline, "jobs were not created in time");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    a.kill();
    let killed = Instant::now();
    let created_at_kill = known.lock().unwrap().len();
    let results_at_kill = worker.results();
    let left_pending_by_a = pending_by_consumer(&mut redis).get("crash-a").copied().unwrap_or(0);
    println!(
        "killed A after {:?}: {created_at_kill} jobs created, {results_at_kill} results answered, \
         {left_pending_by_a} job stream entries left pending by A",
        killed - started
    );

    for creator in creators {
        creator.await.expect("creator");
    }
    let ids = known.lock().unwrap().clone();
    assert_eq!(ids.len(), JOBS);
    let finished = match try_wait_all_finished(&http, &b.base, &ids, Duration::from_secs(60)).await {
        Ok(finished) => finished,
        Err((open, last)) => {
            let ledger = worker.stop().await;
            let stuck: Vec<String> = open
                .iter()
                .map(|id| {
                    format!(
                        "{:#}\n  worker saw tasks {:?}, answers {:?}, unanswered posts {:?}",
                        last[id],
                        ledger.tasks.get(id),
                        ledger.answers.get(id),
                        ledger.unanswered.get(id)
                    )
                })
                .collect();
            let queued: Vec<u64> = worker_ids
                .iter()
                .map(|w| redis::cmd("ZCARD").arg(format!("{PREFIX}:tasks:{w}")).query(&mut redis).expect("ZCARD"))
                .collect();
            let never_seen = open.iter().filter(|id| !ledger.tasks.contains_key(*id)).count();
            panic!(
                "{} of {JOBS} jobs not finished 60 s after the kill (A was killed {:?} after start); \
                 {never_seen} of them wait on a task the worker never received while the task queues hold \
                 {queued:?}: A took those tasks off the queue for a long-poll and died before answering it; \
                 cut-off task answers {}; pending {:?}; stuck:\n{}\n{}",
                open.len(),
                killed - started,
                ledger.cut_off_polls,
                pending_by_consumer(&mut redis),
                stuck.join("\n"),
                b.all_logs()
            );
        }
    };
    let all_done = killed.elapsed();

    // Nothing is left queued anywhere, so nothing can touch the jobs again…
    wait_stream_drained(&mut redis, Duration::from_secs(20)).await;
    assert_queues_empty(&mut redis, &worker_ids);
    // …and every job stored, including any whose create A never answered, finished.
    let stored = stored_job_ids(&mut redis);
    let ambiguous = ambiguous.load(Ordering::Relaxed);
    assert!(stored.is_superset(&ids));
    let orphans: HashSet<String> = stored.difference(&ids).cloned().collect();
    assert!(orphans.len() <= ambiguous, "{} unknown jobs stored, {ambiguous} creates unanswered", orphans.len());
    wait_all_finished(&http, &b.base, &orphans, Duration::from_secs(10)).await;

    // The versions of finished jobs do not move any more (a second task
    // dispatched or a second result applied would bump them).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = wait_all_finished(&http, &b.base, &ids, Duration::from_secs(1)).await;
    for (id, job) in &finished {
        assert_eq!(again[id]["version"], job["version"], "job {id} changed after it finished");
        assert_eq!(again[id]["updated_at"], job["updated_at"], "job {id} changed after it finished");
    }

    let ledger = worker.stop().await;
    let all: HashSet<String> = ids.union(&orphans).cloned().collect();
    let accepted_unseen = assert_exactly_once(&ledger, &all);
    for (id, job) in &finished {
        let task = &ledger.tasks[id][0];
        assert_eq!(job["current_task"]["task_id"], task.as_str(), "job {id} finished on another task");
    }
    assert_eq!(ledger.cut_off_polls, 0, "a task answer was cut off when A died: that task is lost");
    if left_pending_by_a > 0 {
        assert!(
            !b.log_lines("claimed job entries abandoned by another instance").is_empty(),
            "B never claimed the entries A left pending: {}",
            b.all_logs()
        );
    }
    let unanswered: usize = ledger.unanswered.values().sum();
    println!(
        "all {JOBS} jobs finished {all_done:?} after the kill ({:?} in all); {ambiguous} creates and \
         {unanswered} result posts cut off by the kill ({accepted_unseen} of those results had been applied \
         by A); {} orphan jobs",
        started.elapsed(),
        orphans.len()
    );
}

/// An instance killed with jobs queued and started again under the same
/// `INSTANCE_ID` carries on with them: parked jobs, tasks queued for a
/// worker, and job stream entries it had read but not acknowledged.
#[tokio::test]
async fn a_restarted_instance_continues_its_queued_jobs() {
    let mut redis = fresh_db(DB_RESTART);
    let started = Instant::now();
    // One handler at a time, so a burst of creates leaves entries read and
    // not yet acknowledged.
    let vars = [("EXECUTOR_MAX_CONCURRENT_JOBS", "1")];
    let mut first = Instance::start("restart-1", REDIS_PORT, DB_RESTART, &vars).await;
    let http = http();
    let mut ids = HashSet::new();

    // No worker yet: these are parked.
    for i in 0..30 {
        ids.insert(create(&http, &first.base, &format!("parked-{i}")).await);
    }
    let parked = wait_for_status(&http, &first.base, &ids, "waiting_for_worker").await;
    // A worker registers (and never polls): the parked tasks and new ones queue for it.
    let worker_id = "restart-worker";
    register(&http, &[&first.base], worker_id).await;
    for i in 0..30 {
        ids.insert(create(&http, &first.base, &format!("queued-{i}")).await);
    }
    // A burst, then the kill while the executor is still behind.
    let burst: Vec<String> = futures::stream::iter(0..60)
        .map(|i| {
            let (http, base) = (&http, &first.base);
            async move { create(http, base, &format!("burst-{i}")).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let left_pending = pending_by_consumer(&mut redis).get("restart-1").copied().unwrap_or(0);
    first.kill();
    ids.extend(burst);
    let queued: u64 = redis::cmd("ZCARD").arg(format!("{PREFIX}:tasks:{worker_id}")).query(&mut redis).expect("ZCARD");
    println!(
        "killed with {} jobs: {parked} parked then queued, {queued} tasks queued for the worker, \
         {left_pending} job stream entries read and not acknowledged",
        ids.len()
    );

    let second = Instance::start("restart-1", REDIS_PORT, DB_RESTART, &vars).await;
    let worker = Worker::start(&[&second.base], &[worker_id], 4, Duration::ZERO).await;
    wait_all_finished(&http, &second.base, &ids, Duration::from_secs(60)).await;
    assert_queues_empty(&mut redis, &[worker_id]);
    let ledger = worker.stop().await;
    assert_exactly_once(&ledger, &ids);
    if left_pending > 0 {
        let resumed = second.log_lines("resuming job entries this instance left unacknowledged");
        let claimed = second.log_lines("claimed job entries abandoned");
        assert!(!resumed.is_empty() || !claimed.is_empty(), "{}", second.all_logs());
    }
    println!("all {} jobs finished, {:?} in all", ids.len(), started.elapsed());
}

/// A task that an instance took off a worker's queue for a long-poll, then
/// died before handing it over, is not lost: the job still finishes.
///
/// Made deterministic with Redis itself (a private server, as pausing the
/// shared one would stall the other tests): writes are paused while A's poll
/// waits for its `ZPOPMIN`, A is frozen (`SIGSTOP`), writes resume, so Redis
/// pops the task and answers a process that never reads the answer, and A is
/// killed. The job then waits on a task no queue holds; the server's task
/// deadline (`WORKER_TIMEOUT_SECONDS`, checked every `WATCHER_INTERVAL_SECONDS`)
/// is what can bring it back.
#[tokio::test]
async fn a_task_popped_by_an_instance_that_dies_is_not_lost() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let private = PrivateRedis::start(free_port(), dir.path());
    let mut redis = redis_conn(private.port, 0);
    let vars = [("WORKER_TIMEOUT_SECONDS", "5"), ("WATCHER_INTERVAL_SECONDS", "1")];
    let mut a = Instance::start("lost-a", private.port, 0, &vars).await;
    let b = Instance::start("lost-b", private.port, 0, &vars).await;
    let http = http();
    let worker_id = "lost-worker";
    register(&http, &[&b.base], worker_id).await;
    let job_id = create(&http, &b.base, "lost").await;
    let ids = HashSet::from([job_id.clone()]);
    wait_for_status(&http, &b.base, &ids, "waiting_for_worker").await;
    let queue = format!("{PREFIX}:tasks:{worker_id}");
    let queued =
        |redis: &mut redis::Connection| -> u64 { redis::cmd("ZCARD").arg(&queue).query(redis).expect("ZCARD") };
    assert_eq!(queued(&mut redis), 1, "the task waits in the worker's queue");

    redis::cmd("CLIENT").arg("PAUSE").arg(30_000).arg("WRITE").query::<()>(&mut redis).expect("CLIENT PAUSE");
    let poll = http
        .get(format!("{}/_worker/workers/{worker_id}/tasks/next", a.base))
        .header("X-Worker-Token", WORKER_TOKEN)
        .timeout(Duration::from_secs(60))
        .send();
    let poll = tokio::spawn(poll);
    // A's ZPOPMIN reaches Redis and is held there. It may also sit behind
    // another paused write of A's (its executor's XAUTOCLAIM, a lock renewal)
    // on the same multiplexed connection, where CLIENT LIST shows that
    // command instead: after a while in flight the poll is taken as held all
    // the same (the check below that Redis ran the ZPOPMIN still has to pass).
    let sent = Instant::now();
    loop {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut redis).expect("CLIENT LIST");
        if clients.lines().any(|l| l.contains("cmd=zpopmin")) {
            break;
        }
        let behind_a_paused_write = clients.lines().any(|l| l.contains("flags=b") && !l.contains("cmd=xreadgroup"));
        if sent.elapsed() > Duration::from_secs(2) && behind_a_paused_write {
            break;
        }
        assert!(sent.elapsed() < Duration::from_secs(10), "A's poll never reached Redis: {clients}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = a.child.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill -STOP").success());
    redis::cmd("CLIENT").arg("UNPAUSE").query::<()>(&mut redis).expect("CLIENT UNPAUSE");
    let deadline = Instant::now() + Duration::from_secs(10);
    while queued(&mut redis) != 0 {
        assert!(Instant::now() < deadline, "Redis did not run A's ZPOPMIN");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.kill();
    let _ = poll.await;
    let died = Instant::now();

    let worker = Worker::start(&[&b.base], &[worker_id], 2, Duration::ZERO).await;
    let outcome = try_wait_all_finished(&http, &b.base, &ids, Duration::from_secs(30)).await;
    let ledger = worker.stop().await;
    if let Err((_, last)) = outcome {
        panic!(
            "job {job_id} never finished after the instance that popped its task died: it waits on a task \
             that no queue holds any more (worker saw {:?}):\n{:#}",
            ledger.tasks.get(&job_id),
            last[&job_id]
        );
    }
    assert!(ledger.unexpected.is_empty(), "{:?}", ledger.unexpected);
    assert_eq!(ledger.accepted(&job_id), 1);
    println!("the job finished {:?} after the instance holding its task died", died.elapsed());
}

/// Waits until every job in `ids` has `status`; returns how many there are.
async fn wait_for_status(http: &reqwest::Client, base: &str, ids: &HashSet<String>, status: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in ids {
        loop {
            let job = job(http, base, id).await;
            if job["status"] == status {
                break;
            }
            assert!(Instant::now() < deadline, "job {id} is not {status}: {job:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    ids.len()
}

/// Redis not reachable at start: exit status 1 within seconds, with a
/// message naming the address.
#[test]
fn the_server_refuses_to_start_without_redis() {
    let closed = free_port();
    let started = Instant::now();
    let output = server_command("no-redis", closed, 3, &[]).stderr(Stdio::piped()).output().expect("run avtomatika");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "exit status 1 expected: {stderr}");
    let address = format!("127.0.0.1:{closed}");
    let message: Vec<&str> = stderr.lines().filter(|l| l.starts_with("avtomatika: cannot start")).collect();
    assert_eq!(message.len(), 1, "one error line expected: {stderr}");
    assert!(message[0].contains(&address) && message[0].contains("Redis"), "{}", message[0]);
    // Start-up compiles the blueprints first (seconds in a debug build);
    // the refused connection itself must not add retries worth waiting for.
    assert!(took < Duration::from_secs(30), "took {took:?} to give up");
    println!("refused in {took:?}: {}", message[0]);
}

/// Redis lost while running: requests answer 503 in the API's error format,
/// the process stays up and its loops back off, and once Redis is back
/// everything queued before the outage finishes. Then the same with Redis
/// up but unresponsive (`CLIENT PAUSE`).
#[tokio::test]
async fn requests_answer_503_while_redis_is_lost_and_queued_jobs_survive() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let mut redis = PrivateRedis::start(port, dir.path());
    let mut server = Instance::start("outage-1", port, 0, &[]).await;
    let http = http();
    let worker_id = "outage-worker";
    register(&http, &[&server.base], worker_id).await;
    let mut ids = HashSet::new();
    for i in 0..20 {
        ids.insert(create(&http, &server.base, &format!("before-{i}")).await);
    }
    wait_for_status(&http, &server.base, &ids, "waiting_for_worker").await;
    let some_job = ids.iter().next().cloned().expect("a job");

    // Redis dies.
    redis.kill();
    let lost = Instant::now();
    let timed = |started: Instant| started.elapsed();
    let t = Instant::now();
    let (status, body) = try_create(&http, &server.base, "during").await.expect("create answered");
    let create_took = timed(t);
    assert_eq!(status, 503, "create while Redis is down: {body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    let t = Instant::now();
    let (status, body) = try_job(&http, &server.base, &some_job).await.expect("status answered");
    let get_took = timed(t);
    assert_eq!(status, 503, "get while Redis is down: {body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    let poll = http
        .get(format!("{}/_worker/workers/{worker_id}/tasks/next", server.base))
        .header("X-Worker-Token", WORKER_TOKEN)
        .send()
        .await
        .expect("poll answered");
    assert_eq!(poll.status(), 503, "poll while Redis is down");
    // Requests that need no storage still work.
    let status = http.get(format!("{}/_public/status", server.base)).send().await.expect("status page");
    assert_eq!(status.status(), 200);
    // Down for a few seconds: the loops keep trying, backing off.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(lost.elapsed())).await;
    assert!(server.is_running(), "the server exited when Redis went away: {}", server.all_logs());
    let outage = lost.elapsed();
    let queue_errors = server.log_lines("cannot read the job queue").len();
    println!(
        "Redis down {outage:?}: create answered 503 in {create_took:?}, get in {get_took:?}; \
         {queue_errors} job queue read errors logged"
    );
    // Backing off from 50 ms, doubling: a handful of attempts, not hundreds.
    assert!(queue_errors <= 12, "the executor does not back off: {queue_errors} errors in {outage:?}");

    // Redis comes back (its append-only file holds everything).
    let redis = PrivateRedis::start(redis.port, dir.path());
    let back = Instant::now();
    let recovered = loop {
        match try_create(&http, &server.base, "after").await {
            Ok((202, body)) => break body["job_id"].as_str().expect("job_id").to_owned(),
            Ok((503, _)) | Err(_) => {}
            Ok((status, body)) => panic!("create after the outage answered {status}: {body}"),
        }
        assert!(back.elapsed() < Duration::from_secs(20), "the server did not recover: {}", server.all_logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("creates accepted again {:?} after Redis came back", back.elapsed());
    ids.insert(recovered);
    let worker = Worker::start(&[&server.base], &[worker_id], 2, Duration::ZERO).await;
    wait_all_finished(&http, &server.base, &ids, Duration::from_secs(30)).await;
    assert_exactly_once(&worker.stop().await, &ids);

    // Redis up but unresponsive for longer than the server waits for an
    // answer (5 s). No worker polls meanwhile: a poll caught by the pause
    // loses its task (see `a_poll_answered_503_on_a_stalled_redis_loses_no_task`).
    let mut ids = HashSet::from([create(&http, &server.base, "before-pause").await]);
    wait_for_status(&http, &server.base, &ids, "waiting_for_worker").await;
    let mut admin = redis_conn(redis.port, 0);
    redis::cmd("CLIENT").arg("PAUSE").arg(7000).arg("ALL").query::<()>(&mut admin).expect("CLIENT PAUSE");
    let paused = Instant::now();
    let (status, body) = try_job(&http, &server.base, &some_job).await.expect("status answered");
    let paused_took = paused.elapsed();
    assert_eq!(status, 503, "get while Redis is unresponsive: {body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    // After the pause, everything carries on.
    tokio::time::sleep(Duration::from_millis(7100).saturating_sub(paused.elapsed())).await;
    ids.insert(create(&http, &server.base, "after-pause").await);
    let worker = Worker::start(&[&server.base], &[worker_id], 2, Duration::ZERO).await;
    wait_all_finished(&http, &server.base, &ids, Duration::from_secs(30)).await;
    println!(
        "Redis paused: get answered 503 after {paused_took:?}; jobs created before and after the pause \
         finished {:?} after it ended",
        paused.elapsed().saturating_sub(Duration::from_secs(7))
    );
    assert!(server.is_running());
    assert_exactly_once(&worker.stop().await, &ids);
}

/// A poll that Redis did not answer in time is answered 503, "try again":
/// the task it asked for must still be there for the next poll. With a
/// destructive pop, Redis runs the `ZPOPMIN` once it answers again and the
/// reply goes nowhere: the task is gone and its job waits forever, unless
/// the task deadline (`WORKER_TIMEOUT_SECONDS`) brings it back.
#[tokio::test]
async fn a_poll_answered_503_on_a_stalled_redis_loses_no_task() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let private = PrivateRedis::start(free_port(), dir.path());
    let vars = [("WORKER_TIMEOUT_SECONDS", "5"), ("WATCHER_INTERVAL_SECONDS", "1")];
    let server = Instance::start("stall-1", private.port, 0, &vars).await;
    let http = http();
    let worker_id = "stall-worker";
    register(&http, &[&server.base], worker_id).await;
    let job_id = create(&http, &server.base, "stall").await;
    let ids = HashSet::from([job_id.clone()]);
    wait_for_status(&http, &server.base, &ids, "waiting_for_worker").await;

    let mut redis = redis_conn(private.port, 0);
    redis::cmd("CLIENT").arg("PAUSE").arg(7000).arg("WRITE").query::<()>(&mut redis).expect("CLIENT PAUSE");
    let paused = Instant::now();
    let poll = http
        .get(format!("{}/_worker/workers/{worker_id}/tasks/next", server.base))
        .header("X-Worker-Token", WORKER_TOKEN)
        .send()
        .await
        .expect("poll answered");
    assert_eq!(poll.status(), 503, "a poll on a stalled Redis");
    println!("poll answered 503 after {:?}", paused.elapsed());
    tokio::time::sleep(Duration::from_millis(7100).saturating_sub(paused.elapsed())).await;

    let worker = Worker::start(&[&server.base], &[worker_id], 2, Duration::ZERO).await;
    let outcome = try_wait_all_finished(&http, &server.base, &ids, Duration::from_secs(20)).await;
    let ledger = worker.stop().await;
    let queued: u64 = redis::cmd("ZCARD").arg(format!("{PREFIX}:tasks:{worker_id}")).query(&mut redis).expect("ZCARD");
    if let Err((_, last)) = outcome {
        panic!(
            "job {job_id} never finished: the poll answered 503 took its task off the queue ({queued} tasks \
             queued now, the worker saw {:?}):\n{:#}",
            ledger.tasks.get(&job_id),
            last[&job_id]
        );
    }
    assert!(ledger.unexpected.is_empty(), "{:?}", ledger.unexpected);
    assert_eq!(ledger.accepted(&job_id), 1);
}

/// A job created as Redis answers again after a stall runs at once. The
/// executor's blocking stream read that timed out during the stall is still
/// queued in Redis: run after the stall, it hands the next new entry to this
/// instance, and the answer goes nowhere. The entry then waits until some
/// instance claims it as abandoned (10 s idle), although nothing crashed.
#[tokio::test]
async fn a_job_created_after_a_redis_stall_runs_promptly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let private = PrivateRedis::start(free_port(), dir.path());
    let server = Instance::start("stall-2", private.port, 0, &[]).await;
    let http = http();
    register(&http, &[&server.base], "stall-2-worker").await;
    let mut redis = redis_conn(private.port, 0);
    // The executor's read (a write command: it moves entries to the pending
    // list) issued within the first second waits, times out after the
    // server's 5 s wait for a Redis answer, and stays queued in Redis.
    redis::cmd("CLIENT").arg("PAUSE").arg(7000).arg("WRITE").query::<()>(&mut redis).expect("CLIENT PAUSE");
    tokio::time::sleep(Duration::from_millis(7050)).await;
    let created = Instant::now();
    let ids = HashSet::from([create(&http, &server.base, "after-stall").await]);
    let deadline = created + Duration::from_secs(20);
    let id = ids.iter().next().expect("a job");
    let ran_after = loop {
        if job(&http, &server.base, id).await["status"] == "waiting_for_worker" {
            break created.elapsed();
        }
        assert!(Instant::now() < deadline, "the job never ran: {}", server.all_logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("a job created after the stall ran {ran_after:?} later");
    assert!(
        ran_after < Duration::from_secs(3),
        "a job created after a Redis stall waited {ran_after:?} for the executor: its stream entry went to a \
         read that had timed out during the stall, and waited to be claimed as abandoned"
    );
}

/// `POST /api/v1/jobs/counter` for `page` on `base`: the HTTP status and body.
async fn try_create_counter(http: &reqwest::Client, base: &str, page: &str) -> reqwest::Result<(u16, Value)> {
    let response = http
        .post(format!("{base}/api/v1/jobs/counter"))
        .header("X-Avtomatika-Token", CLIENT_TOKEN)
        .json(&json!({ "page": page }))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// Every job stream entry pending for `consumer`, as (entry id, job id).
fn pending_entries(conn: &mut redis::Connection, consumer: &str) -> Vec<(String, String)> {
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(JOB_STREAM)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(10_000)
        .arg(consumer)
        .query(conn)
        .expect("XPENDING");
    pending
        .into_iter()
        .map(|(entry, ..)| {
            let found: Vec<(String, HashMap<String, String>)> =
                redis::cmd("XRANGE").arg(JOB_STREAM).arg(&entry).arg(&entry).query(conn).expect("XRANGE");
            let job = found.into_iter().next().and_then(|(_, fields)| fields.get("job").cloned()).unwrap_or_default();
            (entry, job)
        })
        .collect()
}

/// Of `left` (entries pending under `consumer` when it exited), those still
/// pending under it whose job has had a step run (its status is no longer
/// `pending`). Read in one MULTI: another instance claims a gone instance's
/// idle entries and runs them, and a status read apart from the pending
/// list could see such a run and blame `consumer` for it.
fn run_but_unacknowledged(conn: &mut redis::Connection, consumer: &str, left: &[(String, String)]) -> Vec<String> {
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("XPENDING").arg(JOB_STREAM).arg(GROUP).arg("-").arg("+").arg(10_000).arg(consumer);
    for (_, job_id) in left {
        pipe.cmd("HGET").arg(format!("{PREFIX}:job:{job_id}")).arg("s");
    }
    let mut replies: Vec<redis::Value> = pipe.query(conn).expect("MULTI");
    let statuses: Vec<Option<String>> =
        replies.split_off(1).into_iter().map(|v| redis::from_redis_value(v).expect("HGET")).collect();
    let pending: Vec<(String, String, u64, u64)> =
        redis::from_redis_value(replies.pop().expect("XPENDING reply")).expect("XPENDING");
    let still: HashSet<&str> = pending.iter().map(|(entry, ..)| entry.as_str()).collect();
    left.iter()
        .zip(statuses)
        .filter(|((entry, _), status)| still.contains(entry.as_str()) && status.as_deref() != Some("pending"))
        .map(|((entry, job_id), status)| format!("{entry}: job {job_id} is {status:?}"))
        .collect()
}

/// SIGTERM of one of two instances mid-burst (`hello` jobs through a worker,
/// `counter` jobs run by the executors alone): A drains and exits 0; every
/// job finishes exactly once; no handler step ran twice — the `counter`
/// store counts exactly one visit per job, which a step cut off midway and
/// run again on redelivery would break; and A leaves no finished step
/// unacknowledged: every entry still pending under A at its exit belongs to
/// a job no step has run for (read, never started, left for B).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_mid_burst_loses_no_job_and_runs_no_step_twice() {
    const JOBS: usize = 600;
    const CREATORS: usize = 8;
    const GRACE: Duration = Duration::from_secs(20);
    const PAGE: &str = "sigterm";
    let mut redis = fresh_db(DB_SIGTERM);
    let grace = GRACE.as_secs().to_string();
    let vars = [
        ("SHUTDOWN_GRACE_SECONDS", grace.as_str()),
        ("WORKER_TIMEOUT_SECONDS", "10"),
        ("WATCHER_INTERVAL_SECONDS", "1"),
    ];
    let mut a = Instance::start("term-a", REDIS_PORT, DB_SIGTERM, &vars).await;
    let b = Instance::start("term-b", REDIS_PORT, DB_SIGTERM, &vars).await;
    let bases = [a.base.as_str(), b.base.as_str()];
    let worker_ids = ["term-worker-1", "term-worker-2"];
    let worker = Worker::start(&bases, &worker_ids, 3, Duration::from_millis(20)).await;

    // Even jobs `hello`, odd ones `counter`; creators alternate between A
    // and B, and a create A refuses (503) or cannot take goes to B.
    let http = http();
    let hello_ids = Arc::new(Mutex::new(HashSet::new()));
    let counter_ids = Arc::new(Mutex::new(HashSet::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    // Once A has refused a create, creators send to B only: A closes its
    // connections when the drain ends, and a create sent just then would
    // leave a job that may or may not exist.
    let a_draining = Arc::new(AtomicBool::new(false));
    let creators: Vec<JoinHandle<()>> = (0..CREATORS)
        .map(|c| {
            let (http, hello_ids, counter_ids, next, refused, a_draining) = (
                http.clone(),
                hello_ids.clone(),
                counter_ids.clone(),
                next.clone(),
                refused.clone(),
                a_draining.clone(),
            );
            let bases = [a.base.clone(), b.base.clone()];
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= JOBS {
                        return;
                    }
                    let mut target = c;
                    let job_id = loop {
                        if a_draining.load(Ordering::Relaxed) {
                            target = 1;
                        }
                        let base = &bases[target % 2];
                        let sent = if n % 2 == 0 {
                            try_create(&http, base, "Ada").await
                        } else {
                            try_create_counter(&http, base, PAGE).await
                        };
                        match sent {
                            Ok((202, body)) => break body["job_id"].as_str().expect("job_id").to_owned(),
                            Ok((503, body)) => {
                                assert!(body["error"].as_str().unwrap_or_default().contains("shutting down"), "{body}");
                                refused.fetch_add(1, Ordering::Relaxed);
                                a_draining.store(true, Ordering::Relaxed);
                            }
                            Ok((status, body)) => panic!("create on {base} answered {status}: {body}"),
                            Err(e) if e.is_connect() => {}
                            Err(e) => panic!("create on {base} sent and never answered: {e}"),
                        }
                        target += 1;
                    };
                    let ids = if n % 2 == 0 { &hello_ids } else { &counter_ids };
                    ids.lock().unwrap().insert(job_id);
                }
            })
        })
        .collect();

    // SIGTERM A mid-burst, at a moment it holds job stream entries.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let created = hello_ids.lock().unwrap().len() + counter_ids.lock().unwrap().len();
        if created >= JOBS / 3 {
            let pending = pending_by_consumer(&mut redis).get("term-a").copied().unwrap_or(0);
            if pending > 0 || created >= JOBS * 2 / 3 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "jobs were not created in time");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    a.sigterm();
    let signalled = Instant::now();
    let status =
        a.exited(GRACE + Duration::from_secs(15)).await.unwrap_or_else(|| panic!("A still runs: {}", a.all_logs()));
    let took = signalled.elapsed();
    // Right at A's exit, before B may claim anything A left.
    let left = pending_entries(&mut redis, "term-a");
    assert!(status.success(), "A exited with {status}: {}", a.all_logs());
    assert!(took <= GRACE + Duration::from_secs(12), "A took {took:?} to stop");
    let ran_unacknowledged = run_but_unacknowledged(&mut redis, "term-a", &left);
    assert!(
        ran_unacknowledged.is_empty(),
        "A left {} entries of steps it had run unacknowledged (they are delivered again):\n{}\nA's warnings:\n{}",
        ran_unacknowledged.len(),
        ran_unacknowledged.join("\n"),
        [a.log_lines("WARN"), a.log_lines("ERROR")].concat().join("\n")
    );

    for creator in creators {
        creator.await.expect("creator");
    }
    let hello: HashSet<String> = hello_ids.lock().unwrap().clone();
    let counter: HashSet<String> = counter_ids.lock().unwrap().clone();
    assert_eq!(hello.len() + counter.len(), JOBS);
    let all: HashSet<String> = hello.union(&counter).cloned().collect();
    wait_all_finished(&http, &b.base, &all, Duration::from_secs(60)).await;
    let ledger = worker.stop().await;
    assert_exactly_once(&ledger, &hello);
    // `counter` keeps visits per client (`client-data-store`); with
    // `CLIENT_TOKEN` the client is named `default` (runtime/caps/data_store.rs).
    let client = "default";
    let store = format!("{PREFIX}:data:counter\0{}:{client}/visits", client.len());
    let visits: u64 = redis::cmd("HGET").arg(store).arg(PAGE).query(&mut redis).expect("HGET");
    assert_eq!(
        visits,
        counter.len() as u64,
        "the counter step ran {} more times than there are counter jobs",
        visits as i64 - counter.len() as i64
    );
    let drained = a.log_lines("drained").len() + a.log_lines("grace period over").len();
    assert_eq!(drained, 1, "{}", a.all_logs());
    println!(
        "A stopped {took:?} after SIGTERM, leaving {} entries it never ran to B; {} creates refused with 503 \
         during the drain; {} counter visits for {} counter jobs",
        left.len(),
        refused.load(Ordering::Relaxed),
        visits,
        counter.len()
    );
}
