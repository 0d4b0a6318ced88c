//! Job webhooks end to end: a job created with `webhook_url` is POSTed to a
//! real receiver when it ends (spec "Webhooks"), retried when the receiver
//! fails, and a dead receiver never holds up jobs. Internal addresses are
//! refused unless `WEBHOOK_ALLOWED_NETWORKS` allows them, and one client's
//! hanging receivers do not delay another client's webhooks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avtomatika::config::Config;
use avtomatika::webhook::parse_networks;
use avtomatika_tests::{Auth, TestServer, test_config};
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

/// The receivers here listen on 127.0.0.1, which webhooks may only reach
/// when `WEBHOOK_ALLOWED_NETWORKS` allows it.
fn config() -> Config {
    let mut config = test_config();
    config.webhooks.allowed_networks = parse_networks("127.0.0.0/8").unwrap();
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

/// Two tenants of `clients.toml`.
const CLIENTS: &str = "[tenant-a]\ntoken = \"tenant-a-token\"\n\n[tenant-b]\ntoken = \"tenant-b-token\"\n";
const TENANT_A: &str = "tenant-a-token";
const TENANT_B: &str = "tenant-b-token";

/// A receiver that accepts connections and never answers, so every attempt
/// to it lasts the whole `WEBHOOK_TIMEOUT_SECONDS` (the review's tarpit).
struct Tarpit {
    url: String,
    accepted: Arc<AtomicUsize>,
}

impl Tarpit {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        Self { url, accepted }
    }
}

/// Creates a `moderation` job as the client holding `token`: without a
/// title it fails in its first step, so its webhook goes out at once and no
/// worker is needed.
async fn moderation_job(server: &TestServer, token: &str, webhook_url: &str) -> String {
    let body = json!({"initial_data": {}, "webhook_url": webhook_url}).to_string();
    let answer = server.send(reqwest::Method::POST, "/api/v1/jobs/moderation", Auth::Client(token), Some(&body)).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    answer.json()["job_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn one_tenants_tarpit_does_not_delay_another_tenants_webhook() {
    let files = tempfile::tempdir().unwrap();
    let clients = files.path().join("clients.toml");
    std::fs::write(&clients, CLIENTS).unwrap();
    let mut config = config();
    config.clients_config_path = Some(clients);
    config.webhooks.timeout = Duration::from_secs(2);
    config.webhooks.max_attempts = 2;
    let server = TestServer::start_with(config).await;
    let tarpit = Tarpit::start().await;

    // Tenant A's 48 jobs end at once, and each delivery hangs for 2 s per
    // attempt: three times the 16 global slots.
    for _ in 0..48 {
        moderation_job(&server, TENANT_A, &tarpit.url).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while tarpit.accepted.load(Ordering::SeqCst) < 4 {
        assert!(Instant::now() < deadline, "the tarpit deliveries never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let victim = Receiver::start(&[200]).await;
    let started = Instant::now();
    let job_id = moderation_job(&server, TENANT_B, &victim.url).await;
    let bodies = victim.wait_for(1, Duration::from_secs(30)).await;
    let waited = started.elapsed();
    eprintln!("tenant B's webhook arrived {waited:?} after its job was created");
    assert_eq!(bodies[0]["job_id"], job_id.as_str());
    // Its job ends within milliseconds; a shared FIFO of slots makes it wait
    // for two rounds of 2 s timeouts.
    assert!(waited < Duration::from_millis(1500), "tenant B waited {waited:?} behind tenant A's tarpit");
}

#[tokio::test]
async fn webhook_urls_to_internal_addresses_are_refused_at_creation() {
    // No WEBHOOK_ALLOWED_NETWORKS.
    let server = TestServer::start().await;
    for (url, rule) in [
        ("http://127.0.0.1:8080/internal/admin?op=drop", "127.0.0.1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://[::1]:8080/hook", "::1 is a loopback address"),
        (
            "http://[::ffff:127.0.0.1]:8080/hook",
            "::ffff:127.0.0.1 is a loopback address (it carries the IPv4 address 127.0.0.1)",
        ),
        ("http://10.0.0.7/hook", "10.0.0.7 is a private address"),
        ("http://192.168.1.1/hook", "192.168.1.1 is a private address"),
        ("http://100.64.0.1/hook", "100.64.0.1 is a shared (carrier-grade NAT) address"),
        ("http://[fd00::1]/hook", "fd00::1 is a unique-local address"),
        ("http://0.0.0.0:8080/hook", "0.0.0.0 is an unspecified address"),
    ] {
        let body = json!({"initial_data": {}, "webhook_url": url}).to_string();
        let answer = server
            .send(
                reqwest::Method::POST,
                "/api/v1/jobs/moderation",
                Auth::Client(avtomatika_tests::CLIENT_TOKEN),
                Some(&body),
            )
            .await;
        let message = answer.assert_error(400);
        assert_eq!(message, format!("webhook_url: {rule}; set WEBHOOK_ALLOWED_NETWORKS to allow it"), "{url}");
    }
    for (url, rule) in [
        ("ftp://hooks.example.com/hook", "scheme \"ftp\" is not allowed"),
        ("https://hooks.example.com@127.0.0.1/hook", "user name or password"),
    ] {
        let body = json!({"initial_data": {}, "webhook_url": url}).to_string();
        let answer = server
            .send(
                reqwest::Method::POST,
                "/api/v1/jobs/moderation",
                Auth::Client(avtomatika_tests::CLIENT_TOKEN),
                Some(&body),
            )
            .await;
        let message = answer.assert_error(400);
        assert!(message.starts_with("webhook_url: ") && message.contains(rule), "{url}: {message}");
    }
}

#[tokio::test]
async fn a_host_name_resolving_to_loopback_is_refused_at_delivery_unless_allowed() {
    let receiver = Receiver::start(&[200]).await;
    let port = reqwest::Url::parse(&receiver.url).unwrap().port().unwrap();
    let by_name = format!("http://localhost:{port}/hook?secret=s3cr3t");
    let refused = r#"avtomatika_webhook_deliveries_total{outcome="refused"}"#;

    // Without the allow-list the name passes creation (it is resolved only
    // when the webhook is sent), and the delivery never reaches the receiver.
    let server = TestServer::start().await;
    let job_id = moderation_job(&server, avtomatika_tests::CLIENT_TOKEN, &by_name).await;
    server.wait_for_status(&job_id, "failed").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric(refused).await < 1.0 {
        assert!(Instant::now() < deadline, "the delivery was not refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.bodies().is_empty(), "a refused delivery reached the receiver: {:?}", receiver.bodies());
    assert_eq!(server.metric(r#"avtomatika_webhook_deliveries_total{outcome="delivered"}"#).await, 0.0);
    server.stop().await;

    // With 127.0.0.0/8 allowed, the same delivery arrives.
    let server = TestServer::start_with(config()).await;
    let job_id = moderation_job(&server, avtomatika_tests::CLIENT_TOKEN, &by_name).await;
    let bodies = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(bodies[0]["job_id"], job_id.as_str());
    assert_eq!(server.metric(refused).await, 0.0);
}
