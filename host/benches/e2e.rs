//! End-to-end throughput and latency on loopback: the release server binary in
//! its own process, driven by simulated clients and workers in this one.
//!
//! Each client creates a `hello` job, then polls its status every
//! `--status-interval-ms` until it is terminal, and records create→terminal
//! latency. Each worker keeps `--polls-per-worker` long-polls in flight and
//! answers every task at once. After the runs, the server's RSS is read once
//! at least `--rss-after` jobs have gone through it.
//!
//! `cargo bench -p avtomatika --bench e2e -- [--clients 32,64,128] [--workers 8]
//!   [--polls-per-worker 4] [--seconds 10] [--status-interval-ms 1] [--rss-after 100000]`

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

const CLIENT_TOKEN: &str = "bench-client-token";
const WORKER_TOKEN: &str = "bench-worker-token";

struct Options {
    clients: Vec<usize>,
    workers: usize,
    polls_per_worker: usize,
    seconds: u64,
    status_interval: Duration,
    rss_after: u64,
}

impl Options {
    fn parse() -> Self {
        let mut options = Self {
            clients: vec![32, 64, 128],
            workers: 8,
            polls_per_worker: 4,
            seconds: 10,
            status_interval: Duration::from_millis(1),
            rss_after: 100_000,
        };
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        if let Some(v) = value("--clients") {
            options.clients = v.split(',').filter_map(|n| n.trim().parse().ok()).collect();
        }
        if let Some(v) = value("--workers").and_then(|v| v.parse().ok()) {
            options.workers = v;
        }
        if let Some(v) = value("--polls-per-worker").and_then(|v| v.parse().ok()) {
            options.polls_per_worker = v;
        }
        if let Some(v) = value("--seconds").and_then(|v| v.parse().ok()) {
            options.seconds = v;
        }
        if let Some(v) = value("--status-interval-ms").and_then(|v| v.parse().ok()) {
            options.status_interval = Duration::from_millis(v);
        }
        if let Some(v) = value("--rss-after").and_then(|v| v.parse().ok()) {
            options.rss_after = v;
        }
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

fn start_server(port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_avtomatika"))
        .env("API_HOST", "127.0.0.1")
        .env("API_PORT", port.to_string())
        .env("CLIENT_TOKEN", CLIENT_TOKEN)
        .env("GLOBAL_WORKER_TOKEN", WORKER_TOKEN)
        .env("LOG_LEVEL", "ERROR")
        .env("WORKER_POLL_TIMEOUT_SECONDS", "5")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the server binary")
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

async fn run(options: Options) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = start_server(port);
    let pid = server.id();
    let ready = Instant::now();
    loop {
        if let Ok(mut conn) = tokio::time::timeout(Duration::from_secs(1), async {
            let stream = TcpStream::connect(&addr).await?;
            drop(stream);
            Ok::<_, std::io::Error>(Conn::open(&addr).await)
        })
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timeout")))
        {
            let (status, _) = conn.send(Method::GET, "/_public/status", ("x-none", ""), None).await;
            if status == StatusCode::OK {
                break;
            }
        }
        assert!(ready.elapsed() < Duration::from_secs(60), "server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("server pid {pid} ready in {:?}; RSS at start {:.1} MB", ready.elapsed(), rss_mb(pid));

    let stop = Arc::new(AtomicBool::new(false));
    let mut register = Conn::open(&addr).await;
    let mut worker_tasks = Vec::new();
    for w in 0..options.workers {
        let worker_id = format!("bench-worker-{w}");
        let body =
            serde_json::json!({"worker_id": worker_id, "supported_tasks": ["greet"], "max_concurrent_tasks": 10});
        let (status, _) = register
            .send(Method::POST, "/_worker/workers/register", ("X-Worker-Token", WORKER_TOKEN), Some(body.to_string()))
            .await;
        assert_eq!(status, StatusCode::OK);
        for _ in 0..options.polls_per_worker {
            worker_tasks.push(tokio::spawn(worker_loop(addr.clone(), worker_id.clone(), stop.clone())));
        }
    }

    let done = Arc::new(AtomicU64::new(0));
    println!(
        "{} workers × {} long-polls; clients poll status every {:?}; {} s per run",
        options.workers, options.polls_per_worker, options.status_interval, options.seconds
    );
    let mut phases: Vec<usize> = options.clients.clone();
    let mut round = 0;
    while round < phases.len() {
        let clients = phases[round];
        round += 1;
        let until = Instant::now() + Duration::from_secs(options.seconds);
        let started = Instant::now();
        let handles: Vec<_> = (0..clients)
            .map(|_| tokio::spawn(client_loop(addr.clone(), options.status_interval, until, done.clone())))
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
            "clients {clients:>4}: {:>6} jobs in {:.1} s = {:>7.0} jobs/s; create→terminal p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.2} status polls/job; server RSS {:.1} MB",
            latencies.len(),
            elapsed.as_secs_f64(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99)),
            ms(percentile(&latencies, 1.0)),
            polls as f64 / latencies.len().max(1) as f64,
            rss_mb(pid),
        );
        // Keep the last client count going until enough jobs went through
        // for the RSS reading.
        if round == phases.len() && done.load(Ordering::Relaxed) < options.rss_after {
            phases.push(clients);
        }
    }
    println!("server RSS after {} jobs: {:.1} MB", done.load(Ordering::Relaxed), rss_mb(pid));

    stop.store(true, Ordering::Relaxed);
    let _ = server.kill();
    let _ = server.wait();
    for task in worker_tasks {
        task.abort();
    }
}

fn main() {
    let options = Options::parse();
    // The load generator gets one thread, as a real client fleet's share of
    // a 2-core machine would be bounded too; the server has the rest.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(run(options));
}
