//! Job webhooks end to end: a job created with `webhook_url` is POSTed to a
//! real receiver when it ends (spec "Webhooks"), retried when the receiver
//! fails, and a dead receiver never holds up jobs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avtomatika::config::Config;
use avtomatika_tests::{TestServer, test_config};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

/// A receiver that records every body and answers with the scripted
/// statuses in turn (the last one repeats).
#[derive(Clone)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    statuses: Arc<Mutex<Vec<u16>>>,
    url: String,
}

impl Receiver {
    async fn start(statuses: &[u16]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?secret=s3cr3t", listener.local_addr().unwrap());
        let receiver = Self {
            bodies: Arc::default(),
            statuses: Arc::new(Mutex::new(statuses.iter().rev().copied().collect())),
            url,
        };
        let app = Router::new().route("/hook", post(record)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// Waits until `n` bodies arrived; returns them.
    async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let bodies = self.bodies();
            if bodies.len() >= n {
                return bodies;
            }
            assert!(Instant::now() < deadline, "{} of {n} webhook(s) arrived in {timeout:?}: {bodies:?}", bodies.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn record(State(receiver): State<Receiver>, body: axum::Json<Value>) -> StatusCode {
    receiver.bodies.lock().unwrap().push(body.0);
    let mut statuses = receiver.statuses.lock().unwrap();
    let status = if statuses.len() > 1 { statuses.pop() } else { statuses.last().copied() };
    StatusCode::from_u16(status.unwrap_or(200)).unwrap()
}

fn config() -> Config {
    let mut config = test_config();
    config.webhooks.max_attempts = 3;
    config.webhooks.retry_initial = Duration::from_millis(50);
    config.webhooks.timeout = Duration::from_millis(500);
    config
}

/// Runs a `hello` job with `webhook_url` to the worker's `result`.
async fn hello_job(server: &TestServer, url: &str, result: Value) -> String {
    let job_id =
        server.create_job("/api/v1/jobs/hello", json!({"initial_data": {"name": "Ada"}, "webhook_url": url})).await;
    // One worker for all jobs of a test: registering again is harmless.
    let worker = server.worker("greeter");
    worker.register(&["greet"]).await;
    let task = worker.next_task(Duration::from_secs(10)).await;
    assert_eq!(task["job_id"], job_id.as_str());
    let (status, _) = worker.post_result(&task, result).await;
    assert_eq!(status, 200);
    job_id
}

#[tokio::test]
async fn a_finished_job_is_posted_once_with_its_history() {
    let server = TestServer::start_with(config()).await;
    let receiver = Receiver::start(&[200]).await;
    let job_id =
        hello_job(&server, &receiver.url, json!({"status": "success", "data": {"greeting": "Hello, Ada!"}})).await;
    server.wait_for_status(&job_id, "finished").await;
    let bodies = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        bodies[0],
        json!({
            "event": "job_finished",
            "job_id": job_id,
            "status": "finished",
            "result": {"greeting": "Hello, Ada!"},
            "error": null,
        })
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.bodies().len(), 1, "delivered exactly once");
}

#[tokio::test]
async fn failed_and_quarantined_jobs_name_their_event_and_error() {
    let server = TestServer::start_with(config()).await;
    let receiver = Receiver::start(&[200]).await;
    let invalid = json!({"status": "failure", "error": {"code": "INVALID_INPUT_ERROR", "message": "no name"}});
    let failed = hello_job(&server, &receiver.url, invalid).await;
    let permanent = json!({"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": "disk gone"}});
    let quarantined = hello_job(&server, &receiver.url, permanent).await;

    let bodies = receiver.wait_for(2, Duration::from_secs(10)).await;
    let of = |id: &str| bodies.iter().find(|b| b["job_id"] == id).cloned().unwrap();
    let failed = of(&failed);
    assert_eq!((&failed["event"], &failed["status"]), (&json!("job_failed"), &json!("failed")));
    assert_eq!(failed["error"], "Task failed due to invalid input: no name");
    let quarantined = of(&quarantined);
    assert_eq!((&quarantined["event"], &quarantined["status"]), (&json!("job_quarantined"), &json!("quarantined")));
    assert_eq!(quarantined["error"], "Task failed with permanent error: disk gone");
}

#[tokio::test]
async fn a_failing_receiver_gets_the_delivery_again_until_it_accepts() {
    let server = TestServer::start_with(config()).await;
    let receiver = Receiver::start(&[500, 503, 200]).await;
    let job_id = hello_job(&server, &receiver.url, json!({"status": "success"})).await;
    let bodies = receiver.wait_for(3, Duration::from_secs(10)).await;
    assert!(bodies.iter().all(|b| b["job_id"] == job_id.as_str() && b["event"] == "job_finished"), "{bodies:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.bodies().len(), 3, "no attempt after the accepted one, none beyond WEBHOOK_MAX_ATTEMPTS");
}

#[tokio::test]
async fn a_dead_receiver_delays_neither_jobs_nor_other_receivers() {
    let server = TestServer::start_with(config()).await;
    // A port nobody listens on, and a receiver that never answers.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_url = format!("http://{}/hook", hanging.local_addr().unwrap());
    let healthy = Receiver::start(&[200]).await;

    let started = Instant::now();
    let mut jobs = Vec::new();
    for url in [&dead_url, &hanging_url, &dead_url, &hanging_url] {
        jobs.push(hello_job(&server, url, json!({"status": "success"})).await);
    }
    let last = hello_job(&server, &healthy.url, json!({"status": "success"})).await;
    for job_id in jobs.iter().chain([&last]) {
        server.wait_for_status(job_id, "finished").await;
    }
    let bodies = healthy.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(bodies[0]["job_id"], last.as_str());
    // Three attempts on each dead receiver take ≥ 0.5 s × 3 + backoff; the
    // jobs and the healthy delivery did not wait for any of that.
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    drop(hanging);
}
