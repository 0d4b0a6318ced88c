//! End-to-end throughput and latency on loopback: the release server binary in
//! its own process, driven by simulated clients and workers in this one.
//!
//! Each client creates a `hello` job, then polls its status every
//! `--status-interval-ms` until it is terminal, and records create→terminal
//! latency. Each worker keeps `--polls-per-worker` long-polls in flight and
//! answers every task at once. After the runs, the server's RSS is read once
//! at least `--rss-after` jobs have gone through it.
//!
//! Storage is memory unless `--redis-db N` is given: then the server uses the
//! Redis at 127.0.0.1:6379, database N (flushed before and after), and each
//! run also reports the Redis commands per job (`INFO commandstats` before and
//! after, sum of `calls`, so commands run inside Lua scripts count too) and
//! the CPU time of the server(s), Redis and this load generator.
//! `--instances 2` (Redis only) starts two server processes sharing that
//! database; clients alternate between them and each worker's long-polls are
//! spread over both. After the timed runs, `--monitor-seconds S` (default 3
//! with Redis, 0 to skip) more seconds of the same load run under `redis-cli
//! MONITOR` to split the commands per job into those the server sends (round
//! trips, pipelined or not) and those its Lua scripts run.
//!
//! `--idle-workers N` registers N more workers, each of a task type of its own
//! that no job uses: the fleet a dispatch must not scan.
//!
//! `--idle-sockets N` opens N worker WebSockets before the runs and reports
//! the server's RSS and CPU with them open and nothing else to do (over
//! `--rest-seconds`, default 5); they stay open through the runs.
//! `--listing` reads the first client's 1,000-job listing afterwards, as
//! is, gzip and zstd (20 reads each): bytes on the wire and median time.
//! `--progress-sockets S` has S workers, each holding a `pipeline` job's
//! `fetch` task, send progress reports over their sockets as fast as the
//! server takes them during every run: the events/s it sustains beside the
//! job load.
//!
//! Every run prints the server's CPU time per finished job (user + system
//! from `/proc/<pid>/stat`). `--bare` runs the same load against a bare
//! in-memory axum server speaking the same four requests (`e2e/bare.rs`)
//! instead; `--compare-bare` runs both, bare first, and prints the ratios.
//!
//! `cargo bench -p avtomatika --bench e2e -- [--bare | --compare-bare] [--clients 32,64,128] [--workers 8]
//!   [--idle-workers 0] [--idle-sockets 0 [--rest-seconds 5]] [--progress-sockets 0] [--listing] [--polls-per-worker 4] [--seconds 10] [--status-interval-ms 1] [--rss-after 100000]
//!   [--redis-db N [--instances 2] [--monitor-seconds 3]] [--history-uri URI]`

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

#[path = "e2e/bare.rs"]
mod bare;

const CLIENT_TOKEN: &str = "bench-client-token";
const WORKER_TOKEN: &str = "bench-worker-token";

#[derive(Clone)]
struct Options {
    /// Load the bare yardstick server instead of Avtomatika.
    bare: bool,
    /// Run the bare server, then Avtomatika, and compare.
    compare_bare: bool,
    clients: Vec<usize>,
    workers: usize,
    /// Workers registered for task types no job uses.
    idle_workers: usize,
    /// Worker WebSockets held open, idle.
    idle_sockets: usize,
    rest_seconds: u64,
    /// Workers streaming progress reports over their sockets during the runs.
    progress_sockets: usize,
    /// Read a 1,000-job listing plain, gzip and zstd after the runs.
    listing: bool,
    polls_per_worker: usize,
    seconds: u64,
    status_interval: Duration,
    rss_after: u64,
    /// Redis database to use; memory storage when unset.
    redis_db: Option<u32>,
    /// Server processes (more than one needs Redis).
    instances: usize,
    /// Seconds of load under `MONITOR` after the timed runs (Redis only).
    monitor_seconds: u64,
    /// `HISTORY_DATABASE_URI` for the server(s); history off when unset.
    history_uri: Option<String>,
}

impl Options {
    fn parse() -> Self {
        let mut options = Self {
            bare: false,
            compare_bare: false,
            clients: vec![32, 64, 128],
            workers: 8,
            idle_workers: 0,
            idle_sockets: 0,
            rest_seconds: 5,
            progress_sockets: 0,
            listing: false,
            polls_per_worker: 4,
            seconds: 10,
            status_interval: Duration::from_millis(1),
            rss_after: 100_000,
            redis_db: None,
            instances: 1,
            monitor_seconds: 3,
            history_uri: None,
        };
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        options.bare = args.iter().any(|a| a == "--bare");
        options.compare_bare = args.iter().any(|a| a == "--compare-bare");
        if let Some(v) = value("--clients") {
            options.clients = v.split(',').filter_map(|n| n.trim().parse().ok()).collect();
        }
        if let Some(v) = value("--workers").and_then(|v| v.parse().ok()) {
            options.workers = v;
        }
        if let Some(v) = value("--polls-per-worker").and_then(|v| v.parse().ok()) {
            options.polls_per_worker = v;
        }
        if let Some(v) = value("--idle-workers") {
            options.idle_workers = v.parse().expect("--idle-workers: a number");
        }
        if let Some(v) = value("--idle-sockets") {
            options.idle_sockets = v.parse().expect("--idle-sockets: a number");
        }
        if let Some(v) = value("--rest-seconds") {
            options.rest_seconds = v.parse().expect("--rest-seconds: a number");
        }
        if let Some(v) = value("--progress-sockets") {
            options.progress_sockets = v.parse().expect("--progress-sockets: a number");
        }
        options.listing = args.iter().any(|a| a == "--listing");
        if let Some(v) = value("--seconds").and_then(|v| v.parse().ok()) {
            options.seconds = v;
        }
        if let Some(v) = value("--status-interval-ms").and_then(|v| v.parse().ok()) {
            options.status_interval = Duration::from_millis(v);
        }
        options.redis_db = value("--redis-db").map(|v| v.parse().expect("--redis-db: a database number"));
        if let Some(v) = value("--instances") {
            options.instances = v.parse().expect("--instances: a number");
        }
        assert!(options.instances >= 1, "--instances: at least 1");
        if options.bare || options.compare_bare {
            let extras = options.redis_db.is_some()
                || options.history_uri.is_some()
                || options.listing
                || options.idle_sockets > 0
                || options.progress_sockets > 0;
            assert!(!extras, "--bare compares memory storage only: no --redis-db, --history-uri, sockets or --listing");
        }
        assert!(options.instances == 1 || options.redis_db.is_some(), "--instances > 1 needs --redis-db");
        // Job records live in Redis there: the server's RSS says little.
        if options.redis_db.is_some() {
            options.rss_after = 0;
        }
        if let Some(v) = value("--rss-after").and_then(|v| v.parse().ok()) {
            options.rss_after = v;
        }
        if let Some(v) = value("--monitor-seconds") {
            options.monitor_seconds = v.parse().expect("--monitor-seconds: a number");
        }
        if options.redis_db.is_none() {
            options.monitor_seconds = 0;
        }
        options.history_uri = value("--history-uri");
        options
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    async fn open(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect to the server");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.expect("HTTP handshake");
        tokio::spawn(connection);
        Self { sender, host: addr.to_owned() }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        token: (&str, &str),
        body: Option<String>,
    ) -> (StatusCode, Bytes) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header(token.0, token.1)
            .header("content-type", "application/json")
            .body(Full::new(body.map(Bytes::from).unwrap_or_default()))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let response = self.sender.send_request(request).await.expect("response");
        let status = response.status();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

const REDIS_ADDR: &str = "127.0.0.1:6379";

fn start_server(port: u16, options: &Options, instance_id: &str) -> Child {
    if options.bare {
        let bench = std::env::current_exe().expect("this bench's executable");
        return Command::new(bench)
            .arg("--serve-bare")
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the bare server");
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_avtomatika"));
    command
        .env("API_HOST", "127.0.0.1")
        .env("API_PORT", port.to_string())
        .env("CLIENT_TOKEN", CLIENT_TOKEN)
        .env("GLOBAL_WORKER_TOKEN", WORKER_TOKEN)
        .env("LOG_LEVEL", "ERROR")
        .env("WORKER_POLL_TIMEOUT_SECONDS", "5")
        .env("INSTANCE_ID", instance_id)
        // The whole simulated fleet registers under the global token.
        .env(
            "MAX_WORKERS_PER_TOKEN",
            (options.workers + options.idle_workers + options.progress_sockets + 1).to_string(),
        )
        // Measured here is serving, not start-up; and a bench leaves no files
        // in the user's ~/.cache.
        .env("PLUGIN_CACHE_DIR", "off");
    if let Some(db) = options.redis_db {
        let (host, port) = REDIS_ADDR.split_once(':').expect("host:port");
        command.env("REDIS_HOST", host).env("REDIS_PORT", port).env("REDIS_DB", db.to_string());
    }
    if let Some(uri) = &options.history_uri {
        command.env("HISTORY_DATABASE_URI", uri);
    }
    command.stdout(Stdio::null()).spawn().expect("start the server binary")
}

/// A connection to the benchmark's Redis database.
fn redis_conn(db: u32) -> redis::Connection {
    redis::Client::open(format!("redis://{REDIS_ADDR}/{db}"))
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect to Redis at {REDIS_ADDR}/{db}: {e}"))
}

/// What Redis has done so far: calls per command (`INFO commandstats`;
/// commands run by Lua scripts count, each under its own name) and CPU seconds.
struct RedisStats {
    calls: BTreeMap<String, u64>,
    cpu_seconds: f64,
}

impl RedisStats {
    fn read(conn: &mut redis::Connection) -> Self {
        let commandstats: String = redis::cmd("INFO").arg("commandstats").query(conn).expect("INFO commandstats");
        let mut calls = BTreeMap::new();
        for line in commandstats.lines() {
            // cmdstat_get:calls=12,usec=34,usec_per_call=2.83,rejected_calls=0,failed_calls=0
            let Some((name, fields)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
            let count = fields.split(',').find_map(|f| f.strip_prefix("calls=")).and_then(|v| v.parse().ok());
            calls.insert(name.to_owned(), count.unwrap_or(0));
        }
        let cpu: String = redis::cmd("INFO").arg("cpu").query(conn).expect("INFO cpu");
        let cpu_seconds = cpu
            .lines()
            .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
            .filter_map(|l| l.split_once(':').and_then(|(_, v)| v.trim().parse::<f64>().ok()))
            .sum();
        Self { calls, cpu_seconds }
    }

    /// Calls per job since `before`, largest first, and their sum.
    fn per_job_since(&self, before: &Self, jobs: usize) -> (f64, Vec<(String, f64)>) {
        let jobs = jobs.max(1) as f64;
        let mut per_command: Vec<(String, f64)> = self
            .calls
            .iter()
            .map(|(name, &n)| (name.clone(), (n - before.calls.get(name).copied().unwrap_or(0)) as f64 / jobs))
            .filter(|(_, n)| *n > 0.0)
            .collect();
        per_command.sort_by(|a, b| b.1.total_cmp(&a.1));
        (per_command.iter().map(|(_, n)| n).sum(), per_command)
    }
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok())).sum();
    // CLK_TCK is 100 on Linux.
    ticks / 100.0
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn worker_loop(addr: String, worker_id: String, stop: Arc<AtomicBool>) {
    let mut conn = Conn::open(&addr).await;
    let path = format!("/_worker/workers/{worker_id}/tasks/next");
    while !stop.load(Ordering::Relaxed) {
        let (status, body) = conn.send(Method::GET, &path, ("X-Worker-Token", WORKER_TOKEN), None).await;
        if status != StatusCode::OK {
            continue;
        }
        let task: Value = serde_json::from_slice(&body).expect("task JSON");
        let result = serde_json::json!({
            "job_id": task["job_id"],
            "task_id": task["task_id"],
            "worker_id": worker_id,
            "result": {"status": "success", "data": {"greeting": "Hello!"}},
        });
        let (status, _) = conn
            .send(Method::POST, "/_worker/tasks/result", ("X-Worker-Token", WORKER_TOKEN), Some(result.to_string()))
            .await;
        assert_eq!(status, StatusCode::OK, "result accepted");
    }
}

struct ClientStats {
    latencies: Vec<Duration>,
    status_polls: u64,
}

async fn client_loop(addr: String, interval: Duration, until: Instant, done: Arc<AtomicU64>) -> ClientStats {
    let mut conn = Conn::open(&addr).await;
    let mut stats = ClientStats { latencies: Vec::new(), status_polls: 0 };
    let body = r#"{"name":"Ada"}"#.to_owned();
    while Instant::now() < until {
        let started = Instant::now();
        let (status, answer) = conn
            .send(Method::POST, "/api/v1/jobs/hello", ("X-Avtomatika-Token", CLIENT_TOKEN), Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "job accepted");
        let answer: Value = serde_json::from_slice(&answer).expect("create JSON");
        let path = format!("/api/v1/jobs/{}", answer["job_id"].as_str().expect("job_id"));
        loop {
            let (status, job) = conn.send(Method::GET, &path, ("X-Avtomatika-Token", CLIENT_TOKEN), None).await;
            stats.status_polls += 1;
            assert_eq!(status, StatusCode::OK);
            let job = std::str::from_utf8(&job).expect("UTF-8");
            if job.contains(r#""status":"finished""#) {
                break;
            }
            assert!(!job.contains(r#""status":"failed""#) && !job.contains("quarantined"), "job went wrong: {job}");
            tokio::time::sleep(interval).await;
        }
        stats.latencies.push(started.elapsed());
        done.fetch_add(1, Ordering::Relaxed);
    }
    stats
}

/// Counts the commands `redis-cli MONITOR` shows for database `db` until
/// `stop` is set: (sent by clients, run inside Lua scripts), each by name.
fn monitor(db: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(BTreeMap<String, u64>, BTreeMap<String, u64>)> {
    use std::io::BufRead;
    let (host, port) = REDIS_ADDR.split_once(':').expect("host:port");
    let mut child = Command::new("redis-cli")
        .args(["-h", host, "-p", port, "monitor"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start redis-cli monitor");
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        let (mut sent, mut lua) = (BTreeMap::new(), BTreeMap::new());
        let script = format!("[{db} lua] ");
        let client = format!("[{db} ");
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            // 1700000000.123456 [15 127.0.0.1:40000] "hget" "key" "d"
            let name = |rest: &str| rest.split('"').nth(1).unwrap_or("?").to_ascii_lowercase();
            if let Some(i) = line.find(&script) {
                *lua.entry(name(&line[i..])).or_default() += 1;
            } else if let Some(i) = line.find(&client) {
                *sent.entry(name(&line[i..])).or_default() += 1;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        (sent, lua)
    })
}

fn per_job(counts: &BTreeMap<String, u64>, jobs: u64) -> (f64, String) {
    let jobs = jobs.max(1) as f64;
    let mut list: Vec<(&String, &u64)> = counts.iter().collect();
    list.sort_by(|a, b| b.1.cmp(a.1));
    let total = counts.values().sum::<u64>() as f64 / jobs;
    let text: Vec<String> = list.iter().take(12).map(|(n, c)| format!("{n} {:.2}", **c as f64 / jobs)).collect();
    (total, text.join(", "))
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A worker's WebSocket to `addr` under the global token.
async fn open_socket(addr: &str, worker_id: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/_worker/ws/{worker_id}").into_client_request().expect("a WebSocket request");
    request.headers_mut().insert("X-Worker-Token", WORKER_TOKEN.parse().expect("a header value"));
    tokio_tungstenite::connect_async(request).await.expect("the socket opens").0
}

/// Keeps an idle socket answering the server's pings until it closes.
async fn idle_socket(socket: Socket) {
    use futures::StreamExt;
    let (_, mut incoming) = socket.split();
    while let Some(Ok(_)) = incoming.next().await {}
}

/// `--idle-sockets`: opens them, then reports the server at rest with them.
async fn open_idle_sockets(addr: &str, count: usize, rest: Duration, pid: u32) -> Vec<tokio::task::JoinHandle<()>> {
    let rss_before = rss_mb(pid);
    let opened = Instant::now();
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        held.push(tokio::spawn(idle_socket(open_socket(addr, &format!("bench-socket-{i}")).await)));
    }
    let opening = opened.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = cpu_seconds(&pid.to_string());
    tokio::time::sleep(rest).await;
    let cpu = (cpu_seconds(&pid.to_string()) - cpu_before) / rest.as_secs_f64();
    let rss = rss_mb(pid);
    println!(
        "{count} idle worker sockets opened in {opening:.2?}: server RSS {rss:.1} MB ({:+.1} MB, {:.1} KB per socket); \
         CPU at rest {:.2} % of a core over {rest:?}",
        rss - rss_before,
        (rss - rss_before) * 1024.0 / count.max(1) as f64,
        cpu * 100.0
    );
    held
}

/// `--progress-sockets`: a worker holding one `pipeline` job's `fetch` task
/// sends progress over its socket until `stop`; counts what it sent.
async fn progress_sender(
    addr: String,
    index: usize,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    holding: tokio::sync::oneshot::Sender<()>,
) -> (String, f64) {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let worker_id = format!("bench-progress-{index}");
    let mut conn = Conn::open(&addr).await;
    let body = serde_json::json!({"worker_id": worker_id, "supported_tasks": ["fetch"], "max_concurrent_tasks": 1});
    let (status, _) = conn
        .send(Method::POST, "/_worker/workers/register", ("X-Worker-Token", WORKER_TOKEN), Some(body.to_string()))
        .await;
    assert_eq!(status, StatusCode::OK, "progress worker registered");
    let (status, _) = conn
        .send(
            Method::POST,
            "/api/v1/jobs/pipeline",
            ("X-Avtomatika-Token", CLIENT_TOKEN),
            Some(r#"{"url":"https://example.com"}"#.into()),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "pipeline job accepted");
    let deadline = Instant::now() + Duration::from_secs(30);
    let task: Value = loop {
        let path = format!("/_worker/workers/{worker_id}/tasks/next");
        let (status, body) = conn.send(Method::GET, &path, ("X-Worker-Token", WORKER_TOKEN), None).await;
        match status {
            StatusCode::OK => break serde_json::from_slice(&body).expect("task JSON"),
            StatusCode::NO_CONTENT => assert!(Instant::now() < deadline, "{worker_id} got no fetch task in 30 s"),
            other => panic!("{worker_id} polled and got {other}"),
        }
    };
    let _ = holding.send(());
    let job_id = task["job_id"].as_str().expect("job_id").to_owned();
    let mut socket = open_socket(&addr, &worker_id).await;
    let mut last = 0.0;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        last = (n % 1_000_000) as f64 / 1_000_000.0;
        let event = serde_json::json!({"type": "progress_update", "job_id": job_id, "task_id": task["task_id"],
                                       "progress": last, "message": "streaming"});
        socket.send(Message::Text(event.to_string().into())).await.expect("progress sent");
        sent.fetch_add(1, Ordering::Relaxed);
        // One event per turn of the single-threaded runtime: the job load runs between.
        tokio::task::yield_now().await;
    }
    (job_id, last)
}

/// `--listing`: the 1,000-job listing as is and compressed.
async fn listing_figures(addr: &str) {
    let mut conn = Conn::open(addr).await;
    for encoding in ["identity", "gzip", "zstd"] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..20 {
            let request = Request::builder()
                .method(Method::GET)
                .uri("/api/v1/jobs?limit=1000")
                .header("host", &conn.host)
                .header("X-Avtomatika-Token", CLIENT_TOKEN)
                .header("Accept-Encoding", encoding)
                .body(Full::new(Bytes::new()))
                .expect("request");
            let started = Instant::now();
            conn.sender.ready().await.expect("connection ready");
            let response = conn.sender.send_request(request).await.expect("response");
            assert_eq!(response.status(), StatusCode::OK, "listing");
            let body = response.into_body().collect().await.expect("body").to_bytes();
            times.push(started.elapsed());
            bytes = body.len();
        }
        times.sort();
        println!(
            "1,000-job listing, {encoding:>8}: {bytes:>9} bytes, median {:.2} ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3
        );
    }
}

async fn wait_until_serving(addr: &str) {
    let ready = Instant::now();
    loop {
        if let Ok(mut conn) = tokio::time::timeout(Duration::from_secs(1), async {
            let stream = TcpStream::connect(addr).await?;
            drop(stream);
            Ok::<_, std::io::Error>(Conn::open(addr).await)
        })
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timeout")))
        {
            let (status, _) = conn.send(Method::GET, "/_public/status", ("x-none", ""), None).await;
            if status == StatusCode::OK {
                break;
            }
        }
        assert!(ready.elapsed() < Duration::from_secs(60), "server at {addr} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One run's figures, for `--compare-bare`.
struct Figures {
    clients: usize,
    jobs_per_second: f64,
    server_cpu_per_job: Duration,
    p99: Duration,
}

async fn run(options: Options) -> Vec<Figures> {
    let mut figures = Vec::new();
    let mut redis = options.redis_db.map(|db| {
        let mut conn = redis_conn(db);
        redis::cmd("FLUSHDB").query::<()>(&mut conn).expect("FLUSHDB");
        conn
    });
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    let ready = Instant::now();
    for i in 0..options.instances {
        let port = free_port();
        servers.push(start_server(port, &options, &format!("bench-{i}")));
        addrs.push(format!("127.0.0.1:{port}"));
    }
    for addr in &addrs {
        wait_until_serving(addr).await;
    }
    let pids: Vec<u32> = servers.iter().map(Child::id).collect();
    let mut storage = match options.redis_db {
        Some(db) => format!("Redis {REDIS_ADDR} db {db}"),
        None if options.bare => "the BARE yardstick server, memory".to_owned(),
        None => "memory".to_owned(),
    };
    if let Some(uri) = &options.history_uri {
        storage.push_str(&format!(", history {uri}"));
    }
    println!(
        "{} server(s) (pid {pids:?}, {storage}) ready in {:?}; RSS at start {}",
        addrs.len(),
        ready.elapsed(),
        rss_list(&pids)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let idle_sockets = if options.idle_sockets > 0 {
        open_idle_sockets(&addrs[0], options.idle_sockets, Duration::from_secs(options.rest_seconds), pids[0]).await
    } else {
        Vec::new()
    };
    let progress_sent = Arc::new(AtomicU64::new(0));
    // One at a time: each creates its job and holds its task before the
    // next registers, so every sender holds a task of its own.
    let mut progress_senders = Vec::new();
    for i in 0..options.progress_sockets {
        let (holding, held) = tokio::sync::oneshot::channel();
        let sender = progress_sender(addrs[0].clone(), i, progress_sent.clone(), stop.clone(), holding);
        progress_senders.push(tokio::spawn(sender));
        held.await.expect("the progress sender got its task");
    }
    let mut register = Conn::open(&addrs[0]).await;
    for w in 0..options.idle_workers {
        let body = serde_json::json!({
            "worker_id": format!("bench-idle-{w}"), "supported_tasks": [format!("other-{w}")],
            "max_concurrent_tasks": 10, "resources": {"cpu_cores": 4, "gpu_info": null},
            "capabilities": {"cost_per_skill": {format!("other-{w}"): 0.5}},
        });
        let (status, _) = register
            .send(Method::POST, "/_worker/workers/register", ("X-Worker-Token", WORKER_TOKEN), Some(body.to_string()))
            .await;
        assert_eq!(status, StatusCode::OK, "idle worker {w} registered");
    }
    if options.idle_workers > 0 {
        println!("{} idle workers of other task types registered", options.idle_workers);
    }
    let mut worker_tasks = Vec::new();
    for w in 0..options.workers {
        let worker_id = format!("bench-worker-{w}");
        let body =
            serde_json::json!({"worker_id": worker_id, "supported_tasks": ["greet"], "max_concurrent_tasks": 10});
        let (status, _) = register
            .send(Method::POST, "/_worker/workers/register", ("X-Worker-Token", WORKER_TOKEN), Some(body.to_string()))
            .await;
        assert_eq!(status, StatusCode::OK);
        // A worker's long-polls are spread over the instances.
        for p in 0..options.polls_per_worker {
            let addr = addrs[(w + p) % addrs.len()].clone();
            worker_tasks.push(tokio::spawn(worker_loop(addr, worker_id.clone(), stop.clone())));
        }
    }

    let done = Arc::new(AtomicU64::new(0));
    println!(
        "{} workers × {} long-polls; clients poll status every {:?}; {} s per run",
        options.workers, options.polls_per_worker, options.status_interval, options.seconds
    );
    let mut phases: Vec<usize> = options.clients.clone();
    let mut round = 0;
    let own_pid = std::process::id().to_string();
    while round < phases.len() {
        let clients = phases[round];
        round += 1;
        let redis_before = redis.as_mut().map(RedisStats::read);
        let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_seconds(&p.to_string())).collect();
        let own_before = cpu_seconds(&own_pid);
        let progress_before = progress_sent.load(Ordering::Relaxed);
        let until = Instant::now() + Duration::from_secs(options.seconds);
        let started = Instant::now();
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let addr = addrs[c % addrs.len()].clone();
                tokio::spawn(client_loop(addr, options.status_interval, until, done.clone()))
            })
            .collect();
        let mut latencies = Vec::new();
        let mut polls = 0;
        for handle in handles {
            let stats = handle.await.expect("client task");
            latencies.extend(stats.latencies);
            polls += stats.status_polls;
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "clients {clients:>4}: {:>6} jobs in {:.1} s = {:>7.0} jobs/s; create→terminal p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.2} status polls/job; server RSS {}",
            latencies.len(),
            elapsed.as_secs_f64(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99)),
            ms(percentile(&latencies, 1.0)),
            polls as f64 / latencies.len().max(1) as f64,
            rss_list(&pids),
        );
        let seconds = elapsed.as_secs_f64();
        if options.progress_sockets > 0 {
            let events = progress_sent.load(Ordering::Relaxed) - progress_before;
            println!(
                "              progress over {} sockets beside the load: {events} events = {:.0} events/s",
                options.progress_sockets,
                events as f64 / seconds
            );
        }
        let server_cores: Vec<String> = pids
            .iter()
            .zip(&cpu_before)
            .map(|(p, before)| format!("{:.2}", (cpu_seconds(&p.to_string()) - before) / seconds))
            .collect();
        let own_cores = (cpu_seconds(&own_pid) - own_before) / seconds;
        let server_cpu: f64 =
            pids.iter().zip(&cpu_before).map(|(p, before)| cpu_seconds(&p.to_string()) - before).sum();
        let server_cpu_per_job = Duration::from_secs_f64(server_cpu / latencies.len().max(1) as f64);
        println!("              server CPU per finished job: {:.0} µs", server_cpu_per_job.as_secs_f64() * 1e6);
        figures.push(Figures {
            clients,
            jobs_per_second: latencies.len() as f64 / seconds,
            server_cpu_per_job,
            p99: percentile(&latencies, 0.99),
        });
        if let (Some(conn), Some(before)) = (redis.as_mut(), redis_before) {
            let after = RedisStats::read(conn);
            let (total, per_command) = after.per_job_since(&before, latencies.len());
            let top: Vec<String> = per_command.iter().take(12).map(|(name, n)| format!("{name} {n:.2}")).collect();
            println!("              Redis commands/job {total:.1}: {}", top.join(", "));
            println!(
                "              CPU cores: server {} | Redis {:.2} | load generator {:.2}",
                server_cores.join(" + "),
                (after.cpu_seconds - before.cpu_seconds) / seconds,
                own_cores
            );
        } else {
            println!("              CPU cores: server {} | load generator {:.2}", server_cores.join(" + "), own_cores);
        }
        if options.history_uri.is_some() {
            // Events dropped would make history look cheaper than it is.
            let mut conn = Conn::open(&addrs[0]).await;
            let (_, body) =
                conn.send(Method::GET, "/_public/metrics", ("X-Avtomatika-Token", CLIENT_TOKEN), None).await;
            let text = String::from_utf8_lossy(&body);
            let read = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
                    .unwrap_or(-1.0)
            };
            println!(
                "              history: {} events written, {} dropped, {} in the buffer, {} failed writes",
                read("avtomatika_history_events_written_total "),
                read("avtomatika_history_events_dropped_total "),
                read("avtomatika_history_buffer_depth "),
                read("avtomatika_history_write_failures_total "),
            );
        }
        // Keep the last client count going until enough jobs went through
        // for the RSS reading.
        if round == phases.len() && done.load(Ordering::Relaxed) < options.rss_after {
            phases.push(clients);
        }
    }
    println!("server RSS after {} jobs: {}", done.load(Ordering::Relaxed), rss_list(&pids));

    if let (Some(db), true) = (options.redis_db, options.monitor_seconds > 0) {
        let clients = *phases.last().expect("a client count");
        let stop_monitor = Arc::new(AtomicBool::new(false));
        let monitor = monitor(db, stop_monitor.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = done.load(Ordering::Relaxed);
        let until = Instant::now() + Duration::from_secs(options.monitor_seconds);
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let addr = addrs[c % addrs.len()].clone();
                tokio::spawn(client_loop(addr, options.status_interval, until, done.clone()))
            })
            .collect();
        for handle in handles {
            handle.await.expect("client task");
        }
        let jobs = done.load(Ordering::Relaxed) - before;
        stop_monitor.store(true, Ordering::Relaxed);
        // One more command so the monitor sees a line and stops.
        if let Some(conn) = redis.as_mut() {
            let _: Result<String, _> = redis::cmd("PING").query(conn);
        }
        let (sent, lua) = monitor.join().expect("monitor thread");
        let (sent_total, sent_text) = per_job(&sent, jobs);
        let (lua_total, lua_text) = per_job(&lua, jobs);
        println!("under MONITOR, {jobs} jobs with {clients} clients:");
        println!("  sent by the server per job {sent_total:.1}: {sent_text}");
        println!("  run by Lua scripts per job {lua_total:.1}: {lua_text}");
    }

    if options.listing {
        listing_figures(&addrs[0]).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut checked = Conn::open(&addrs[0]).await;
    for sender in progress_senders {
        let (job_id, last) = sender.await.expect("progress sender");
        // Reports are written at most every 100 ms per socket: the last one lands by then.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, job) = checked
            .send(Method::GET, &format!("/api/v1/jobs/{job_id}"), ("X-Avtomatika-Token", CLIENT_TOKEN), None)
            .await;
        let job: Value = serde_json::from_slice(&job).expect("job JSON");
        assert_eq!(job["progress"].as_f64(), Some(last), "the last report sent is the job's progress");
    }
    for socket in idle_sockets {
        socket.abort();
    }
    for server in &mut servers {
        let _ = server.kill();
        let _ = server.wait();
    }
    for task in worker_tasks {
        task.abort();
    }
    if let Some(conn) = redis.as_mut() {
        redis::cmd("FLUSHDB").query::<()>(conn).expect("FLUSHDB");
    }
    figures
}

/// `--compare-bare`: each client count's figures side by side, with
/// Avtomatika's CPU per job over the bare server's (issue 19's target: ≤ 1.5).
fn compare(bare: &[Figures], ours: &[Figures]) {
    println!("\nside by side (first run of each client count):");
    println!(
        "clients | jobs/s bare | jobs/s ours | ours/bare | CPU/job bare | CPU/job ours | ours/bare | p99 bare | p99 ours"
    );
    for b in bare {
        let Some(o) = ours.iter().find(|o| o.clients == b.clients) else { continue };
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{:>7} | {:>11.0} | {:>11.0} | {:>9.2} | {:>9.0} µs | {:>9.0} µs | {:>9.2} | {:>5.2} ms | {:>5.2} ms",
            b.clients,
            b.jobs_per_second,
            o.jobs_per_second,
            o.jobs_per_second / b.jobs_per_second,
            us(b.server_cpu_per_job),
            us(o.server_cpu_per_job),
            us(o.server_cpu_per_job) / us(b.server_cpu_per_job),
            ms(b.p99),
            ms(o.p99),
        );
    }
}

fn rss_list(pids: &[u32]) -> String {
    pids.iter().map(|&p| format!("{:.1} MB", rss_mb(p))).collect::<Vec<_>>().join(" + ")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-bare") {
        let port = args.get(i + 1).and_then(|p| p.parse().ok()).expect("--serve-bare PORT");
        bare::serve(port);
        return;
    }
    let options = Options::parse();
    // The load generator gets one thread, as a real client fleet's share of
    // a 2-core machine would be bounded too; the server has the rest.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    if options.compare_bare {
        // The RSS reading's extra rounds would run each side for different lengths.
        let base = Options { rss_after: 0, compare_bare: false, ..options };
        let bare = rt.block_on(run(Options { bare: true, ..base.clone() }));
        let ours = rt.block_on(run(base));
        compare(&bare, &ours);
    } else {
        rt.block_on(run(options));
    }
}
