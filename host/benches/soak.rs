//! Soak: `--jobs` `hello` jobs at a steady `--rate` per second through the
//! release server in its own process (memory storage, or the Redis at
//! 127.0.0.1:6379 with `--redis-db N`, flushed first), with
//! `JOB_RETENTION_SECONDS=--retention`. Workers answer every task at once.
//!
//! Every `--sample-seconds` it prints one line of the curve: seconds, jobs
//! created and finished, the server's RSS, open file descriptors and threads,
//! and with Redis its `used_memory` and key count. Once the first retention
//! periods have passed, ended jobs leave as fast as new ones end, so every
//! one of those must stay flat: the run ends by comparing the last sample
//! with the one at three retention periods and exits 1 when RSS or Redis
//! memory grew by more than `--max-growth` percent (default 20), or file
//! descriptors or threads by more than 16.
//!
//! `cargo bench -p avtomatika --bench soak -- [--jobs 1000000] [--rate 2000]
//!   [--retention 60] [--sample-seconds 10] [--redis-db N] [--max-growth 20]`

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;

const CLIENT_TOKEN: &str = "soak-client-token";
const WORKER_TOKEN: &str = "soak-worker-token";
const WORKERS: usize = 4;
const POLLS_PER_WORKER: usize = 4;
/// Creates in flight at once.
const CREATORS: usize = 64;

struct Options {
    jobs: u64,
    rate: u64,
    retention: u64,
    sample_seconds: u64,
    redis_db: Option<u32>,
    max_growth: f64,
}

impl Options {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        let number = |name: &str, default: u64| {
            value(name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}: a number, not {v:?}")))
        };
        Self {
            jobs: number("--jobs", 1_000_000),
            rate: number("--rate", 2_000).max(1),
            retention: number("--retention", 60).max(1),
            sample_seconds: number("--sample-seconds", 10).max(1),
            redis_db: value("--redis-db").map(|v| v.parse().expect("--redis-db: a database number")),
            max_growth: number("--max-growth", 20) as f64,
        }
    }
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(options: &Options) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut command = Command::new(env!("CARGO_BIN_EXE_avtomatika"));
        command
            .env("API_HOST", "127.0.0.1")
            .env("API_PORT", port.to_string())
            .env("CLIENT_TOKEN", CLIENT_TOKEN)
            .env("GLOBAL_WORKER_TOKEN", WORKER_TOKEN)
            .env("LOG_LEVEL", "ERROR")
            .env("WORKER_POLL_TIMEOUT_SECONDS", "5")
            .env("JOB_RETENTION_SECONDS", options.retention.to_string())
            .env("PLUGIN_CACHE_DIR", "off")
            .stdout(Stdio::null());
        if let Some(db) = options.redis_db {
            command.env("REDIS_HOST", "127.0.0.1").env("REDIS_PORT", "6379").env("REDIS_DB", db.to_string());
        }
        let child = command.spawn().expect("start the server binary");
        Self { child, base: format!("http://127.0.0.1:{port}") }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One point of the curve.
#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: f64,
    created: u64,
    finished: u64,
    rss_mb: f64,
    fds: u64,
    threads: u64,
    redis_mb: Option<f64>,
    redis_keys: Option<u64>,
}

fn status_field(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |entries| entries.count() as u64)
}

fn redis_conn(db: u32) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:6379/{db}"))
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect to Redis at 127.0.0.1:6379/{db}: {e}"))
}

fn redis_memory(conn: &mut redis::Connection) -> (f64, u64) {
    let info: String = redis::cmd("INFO").arg("memory").query(conn).expect("INFO memory");
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let keys: u64 = redis::cmd("DBSIZE").query(conn).expect("DBSIZE");
    (used / 1_048_576.0, keys)
}

async fn wait_until_serving(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while http.get(format!("{base}/_public/status")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker that answers every task at once with `success`, until `total` are finished.
async fn worker(http: reqwest::Client, base: String, id: String, finished: Arc<AtomicU64>, total: u64) {
    let next = format!("{base}/_worker/workers/{id}/tasks/next");
    let result = format!("{base}/_worker/tasks/result");
    while finished.load(Ordering::Relaxed) < total {
        let Ok(response) = http.get(&next).header("X-Worker-Token", WORKER_TOKEN).send().await else { continue };
        if response.status() != 200 {
            continue;
        }
        let Ok(task) = response.json::<Value>().await else { continue };
        let body = json!({
            "job_id": task["job_id"], "task_id": task["task_id"], "worker_id": id,
            "result": {"status": "success", "data": {"greeting": "Hello!"}},
        });
        match http.post(&result).header("X-Worker-Token", WORKER_TOKEN).json(&body).send().await {
            Ok(answer) if answer.status() == 200 => {
                finished.fetch_add(1, Ordering::Relaxed);
            }
            Ok(answer) => eprintln!("result answered {}", answer.status()),
            Err(e) => eprintln!("result not sent: {e}"),
        }
    }
}

fn main() {
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let mut redis = options.redis_db.map(|db| {
        let mut conn = redis_conn(db);
        let () = redis::cmd("FLUSHDB").query(&mut conn).expect("FLUSHDB");
        conn
    });
    let server = Server::start(&options);
    let pid = server.pid();
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("HTTP client");
    let (created, finished) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    runtime.block_on(wait_until_serving(&http, &server.base));

    let storage = options.redis_db.map_or("memory".to_owned(), |db| format!("Redis db {db}"));
    println!(
        "soak: {} jobs at {}/s, JOB_RETENTION_SECONDS={}, {storage}; a sample every {} s",
        options.jobs, options.rate, options.retention, options.sample_seconds
    );
    println!("seconds,created,finished,rss_mb,fds,threads,redis_mb,redis_keys");
    runtime.block_on(async {
        for w in 0..WORKERS {
            let id = format!("soak-worker-{w}");
            let body = json!({"worker_id": id, "worker_type": "soak", "supported_tasks": ["greet"], "max_concurrent_tasks": 64});
            let registered = http
                .post(format!("{}/_worker/workers/register", server.base))
                .header("X-Worker-Token", WORKER_TOKEN)
                .json(&body)
                .send()
                .await
                .expect("register");
            assert_eq!(registered.status(), 200, "register {id}");
            for _ in 0..POLLS_PER_WORKER {
                tokio::spawn(worker(http.clone(), server.base.clone(), id.clone(), finished.clone(), options.jobs));
            }
            // Heartbeats keep the worker live however long the soak runs.
            let (http, base) = (http.clone(), server.base.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    let _ = http
                        .patch(format!("{base}/_worker/workers/{id}"))
                        .header("X-Worker-Token", WORKER_TOKEN)
                        .send()
                        .await;
                }
            });
        }

        // A steady rate: each 10 ms tick releases its share of creates.
        let creators = Arc::new(Semaphore::new(CREATORS));
        let (http_c, base, created_c, jobs, rate) =
            (http.clone(), server.base.clone(), created.clone(), options.jobs, options.rate);
        tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut released = 0u64;
            while released < jobs {
                tick.tick().await;
                let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(jobs);
                while released < due {
                    released += 1;
                    let permit = creators.clone().acquire_owned().await.expect("semaphore");
                    let (http, url, created) = (http_c.clone(), format!("{base}/api/v1/jobs/hello"), created_c.clone());
                    tokio::spawn(async move {
                        let sent = http
                            .post(url)
                            .header("X-Avtomatika-Token", CLIENT_TOKEN)
                            .json(&json!({"initial_data": {"name": "Ada"}}))
                            .send()
                            .await;
                        match sent {
                            Ok(answer) if answer.status() == 202 => {
                                created.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(answer) => eprintln!("create answered {}", answer.status()),
                            Err(e) => eprintln!("create not sent: {e}"),
                        }
                        drop(permit);
                    });
                }
            }
        });
    });

    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    loop {
        std::thread::sleep(Duration::from_secs(options.sample_seconds));
        let (redis_mb, redis_keys) = match redis.as_mut().map(redis_memory) {
            Some((mb, keys)) => (Some(mb), Some(keys)),
            None => (None, None),
        };
        let sample = Sample {
            seconds: started.elapsed().as_secs_f64(),
            created: created.load(Ordering::Relaxed),
            finished: finished.load(Ordering::Relaxed),
            rss_mb: status_field(pid, "VmRSS:") / 1024.0,
            fds: open_fds(pid),
            threads: status_field(pid, "Threads:") as u64,
            redis_mb,
            redis_keys,
        };
        println!(
            "{:.0},{},{},{:.1},{},{},{},{}",
            sample.seconds,
            sample.created,
            sample.finished,
            sample.rss_mb,
            sample.fds,
            sample.threads,
            sample.redis_mb.map_or(String::new(), |mb| format!("{mb:.1}")),
            sample.redis_keys.map_or(String::new(), |k| k.to_string()),
        );
        samples.push(sample);
        if sample.finished >= options.jobs {
            break;
        }
    }

    let settled = 3.0 * options.retention as f64;
    let Some(base) = samples.iter().find(|s| s.seconds >= settled).copied() else {
        println!("the run ended before {settled:.0} s (three retention periods): nothing to compare");
        return;
    };
    let last = *samples.last().expect("one sample at least");
    let growth = |from: f64, to: f64| if from > 0.0 { (to - from) / from * 100.0 } else { 0.0 };
    let rss = growth(base.rss_mb, last.rss_mb);
    let redis_growth = base.redis_mb.zip(last.redis_mb).map(|(from, to)| growth(from, to));
    println!(
        "from {:.0} s to {:.0} s ({} jobs): RSS {:.1} -> {:.1} MB ({rss:+.1}%), fds {} -> {}, threads {} -> {}{}",
        base.seconds,
        last.seconds,
        last.finished - base.finished,
        base.rss_mb,
        last.rss_mb,
        base.fds,
        last.fds,
        base.threads,
        last.threads,
        redis_growth.map_or(String::new(), |g| format!(
            ", Redis {:.1} -> {:.1} MB ({g:+.1}%), keys {} -> {}",
            base.redis_mb.unwrap_or_default(),
            last.redis_mb.unwrap_or_default(),
            base.redis_keys.unwrap_or_default(),
            last.redis_keys.unwrap_or_default()
        )),
    );
    let flat = rss <= options.max_growth
        && redis_growth.is_none_or(|g| g <= options.max_growth)
        && last.fds <= base.fds + 16
        && last.threads <= base.threads + 16;
    drop(server);
    if let (Some(conn), Some(_)) = (redis.as_mut(), options.redis_db) {
        let () = redis::cmd("FLUSHDB").query(conn).expect("FLUSHDB");
    }
    if !flat {
        println!("NOT FLAT: something grows with the number of jobs");
        std::process::exit(1);
    }
}
