//! Graceful shutdown of the real binary on memory storage: SIGTERM while
//! jobs are in flight and a worker holds a task. The drain takes no new job
//! (503), answers a parked long-poll at once, still takes the worker's
//! results and hands out what is queued, and the process exits by itself
//! once nothing is under way — with every job finished, none lost.
//! (Redis, two instances: `redis_cluster.rs`.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_avtomatika");
const CLIENT_TOKEN: &str = "shutdown-client-token";
const WORKER_TOKEN: &str = "shutdown-worker-token";
/// Start-up compiles the blueprints: well under this even in a debug build.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// `SHUTDOWN_GRACE_SECONDS` of the server under test.
const GRACE: Duration = Duration::from_secs(20);

/// The binary on memory storage, stderr captured.
struct Server {
    child: Child,
    base: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start(vars: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs([
            ("PLUGIN_CACHE_DIR", "off"),
            ("API_HOST", "127.0.0.1"),
            ("API_PORT", "0"),
            ("CLIENT_TOKEN", CLIENT_TOKEN),
            ("GLOBAL_WORKER_TOKEN", WORKER_TOKEN),
            ("LOG_FORMAT", "text"),
        ]);
        cmd.envs(vars.iter().copied());
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start avtomatika");
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
                panic!("the server exited with {status} before serving: {:#?}", logs.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "the server did not serve in time: {:#?}", logs.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self { child, base: format!("http://127.0.0.1:{port}"), logs }
    }

    fn sigterm(&self) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    async fn exited(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client")
}

async fn create(http: &reqwest::Client, base: &str, name: &str) -> (u16, Value) {
    let response = http
        .post(format!("{base}/api/v1/jobs/hello"))
        .header("X-Avtomatika-Token", CLIENT_TOKEN)
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("create request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn job_status(http: &reqwest::Client, base: &str, job_id: &str) -> String {
    let response = http
        .get(format!("{base}/api/v1/jobs/{job_id}"))
        .header("X-Avtomatika-Token", CLIENT_TOKEN)
        .send()
        .await
        .expect("job request");
    assert_eq!(response.status(), 200);
    let job: Value = response.json().await.expect("job JSON");
    job["status"].as_str().unwrap_or_default().to_owned()
}

async fn register(http: &reqwest::Client, base: &str, worker_id: &str, task_type: &str) {
    let response = http
        .post(format!("{base}/_worker/workers/register"))
        .header("X-Worker-Token", WORKER_TOKEN)
        .json(&json!({ "worker_id": worker_id, "supported_tasks": [task_type], "max_concurrent_tasks": 100 }))
        .send()
        .await
        .expect("register request");
    assert_eq!(response.status(), 200);
}

/// One poll: the HTTP status and the task (on 200).
async fn poll(http: &reqwest::Client, base: &str, worker_id: &str) -> (u16, Value) {
    let response = http
        .get(format!("{base}/_worker/workers/{worker_id}/tasks/next"))
        .header("X-Worker-Token", WORKER_TOKEN)
        .send()
        .await
        .expect("poll request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Posts `success` for `task`; the answer's `status`.
async fn answer(http: &reqwest::Client, base: &str, worker_id: &str, task: &Value) -> String {
    let response = http
        .post(format!("{base}/_worker/tasks/result"))
        .header("X-Worker-Token", WORKER_TOKEN)
        .json(&json!({
            "job_id": task["job_id"], "task_id": task["task_id"], "worker_id": worker_id,
            "result": { "status": "success", "data": { "greeting": "Hello!" } },
        }))
        .send()
        .await
        .expect("result request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("result answer");
    body["status"].as_str().unwrap_or_default().to_owned()
}

/// SIGTERM with 20 jobs waiting on a worker, one of them held by it: the
/// held one's result is accepted during the drain, the other 19 are still
/// handed out and finish, a parked long-poll answers 204 at once, a new job
/// gets 503, and the process exits 0 well within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_memory_server_and_loses_no_job() {
    const JOBS: usize = 20;
    let grace = GRACE.as_secs().to_string();
    // Long polls, so a prompt 204 can only be the drain's.
    let mut server = Server::start(&[("SHUTDOWN_GRACE_SECONDS", &grace), ("WORKER_POLL_TIMEOUT_SECONDS", "30")]).await;
    let (http, base) = (http(), server.base.clone());
    register(&http, &base, "busy", "greet").await;
    // Takes a type no job needs: its poll parks.
    register(&http, &base, "idle", "unused").await;
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let (status, body) = create(&http, &base, &format!("job {i}")).await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["job_id"].as_str().expect("job_id").to_owned());
    }
    let (status, held) = poll(&http, &base, "busy").await;
    assert_eq!(status, 200, "busy gets a task");
    let parked = {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move { poll(&http, &base, "idle").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!parked.is_finished(), "idle's poll should be parked");

    server.sigterm();
    let signalled = Instant::now();
    let (status, _) = tokio::time::timeout(Duration::from_secs(3), parked)
        .await
        .expect("the parked poll answers at once")
        .expect("poll task");
    assert_eq!(status, 204);
    let (status, body) = create(&http, &base, "too late").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("shutting down"), "{body}");

    // The held task's result, then every task still queued. A `hello` job
    // finishes with its result; the server may exit right after the last
    // one, so that one is not read back.
    let mut task = held;
    for answered in 1..=JOBS {
        assert_eq!(answer(&http, &base, "busy", &task).await, "result_accepted_success");
        let job_id = task["job_id"].as_str().unwrap_or_default().to_owned();
        assert!(ids.contains(&job_id), "a task of another job: {task:#}");
        if answered == JOBS {
            break;
        }
        assert_eq!(job_status(&http, &base, &job_id).await, "finished", "job {job_id}");
        let (status, next) = poll(&http, &base, "busy").await;
        assert_eq!(status, 200, "{answered} of {JOBS} answered, yet no task is handed out");
        task = next;
    }

    let status = server.exited(GRACE).await.unwrap_or_else(|| panic!("still running:\n{}", server.logs()));
    let took = signalled.elapsed();
    assert!(status.success(), "exit {status}:\n{}", server.logs());
    assert!(took < GRACE, "the drain should end once nothing is under way, took {took:?}");
    assert!(server.logs().contains("drained"), "{}", server.logs());
    println!("exited {took:?} after SIGTERM, {JOBS} results taken during the drain");
}
