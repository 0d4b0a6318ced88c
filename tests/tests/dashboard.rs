//! The operator dashboard (`/ui/`) in a real headless browser: Debian's
//! chromium driven through chromedriver (WebDriver) by fantoccini. The
//! browser is installed by `.ci/browser`, which the test runs itself when
//! chromedriver is missing; a browser that cannot start fails the test,
//! never skips it.
//!
//! With `AVTOMATIKA_SCREENSHOTS=1` the main pages are saved to
//! `docs/screenshots/*.png` (README, "Dashboard").

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use avtomatika_tests::config::{Config, HistoryDatabase};
use avtomatika_tests::{Auth, TestServer, WORKER_TOKEN, test_config};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(15);

const ACME: &str = "acme-dashboard-token-51c2";
const GLOBEX: &str = "globex-dashboard-token-9e07";
const CLIENTS: &str = r#"
[acme]
token = "acme-dashboard-token-51c2"

[globex]
token = "globex-dashboard-token-9e07"
"#;

/// chromedriver on a free port and one browser session on it; both end when
/// this is dropped (the driver is killed with the test process at the latest).
struct Browser {
    client: Client,
    _driver: Child,
}

impl Browser {
    async fn start() -> Self {
        ensure_installed().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port for chromedriver")
            .port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("{CHROMEDRIVER} exited at start ({status})");
            }
            if reqwest::get(format!("{url}/status")).await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "{CHROMEDRIVER} did not answer on port {port} in 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("chromium did not start under {CHROMEDRIVER}: {e}"));
        client.set_window_size(1280, 900).await.expect("window size");
        Self { client, _driver: driver }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The first element matching `css`, once there (up to 15 s).
    async fn until(&self, css: &str) -> fantoccini::elements::Element {
        match self.client.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) => panic!("no {css} in {WAIT:?} ({e}); the page said:\n{}", self.page_text().await),
        }
    }

    /// Waits until no element matches `css`.
    async fn until_gone(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.client.find_all(Locator::Css(css)).await.expect("find").is_empty() {
            assert!(Instant::now() < deadline, "{css} still there; the page said:\n{}", self.page_text().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element; tries again when a refresh replaced it between
    /// finding and clicking (the lists are redrawn every 2 s).
    async fn click(&self, css: &str) {
        let mut tries = 0;
        while let Err(e) = self.until(css).await.click().await {
            tries += 1;
            assert!(tries < 10, "click {css}: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element's text, tried again like [`click`](Self::click).
    async fn text(&self, css: &str) -> String {
        let mut tries = 0;
        loop {
            match self.until(css).await.text().await {
                Ok(text) => return text,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 10, "text of {css}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(e) => format!("(no body: {e})"),
        }
    }

    async fn session_token(&self) -> Value {
        self.client.execute("return sessionStorage.getItem('avtomatika.token');", vec![]).await.expect("script")
    }

    async fn log_in(&self, token: &str) {
        let field = self.until("#token").await;
        field.clear().await.expect("clear the token field");
        field.send_keys(token).await.expect("type the token");
        self.click("#login-button").await;
    }

    /// Saves the window as `docs/screenshots/<name>.png` when
    /// `AVTOMATIKA_SCREENSHOTS=1`, so an ordinary run rewrites no file.
    async fn screenshot(&self, name: &str) {
        if std::env::var("AVTOMATIKA_SCREENSHOTS").as_deref() != Ok("1") {
            return;
        }
        // The refresh after the elements appeared, and fonts, settle.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&dir).expect("docs/screenshots");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write the screenshot");
    }
}

/// Installs chromium and chromedriver with `.ci/browser` when they are missing.
async fn ensure_installed() {
    if Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/browser");
    let status = Command::new("bash").arg(script).stdout(Stdio::null()).status().await;
    if !matches!(status, Ok(s) if s.success()) || !Path::new(CHROMEDRIVER).exists() {
        panic!("cannot install chromium and chromedriver with {script}: {status:?}");
    }
}

struct Setup {
    server: TestServer,
    _dir: tempfile::TempDir,
}

async fn server() -> Setup {
    server_with(test_config()).await
}

/// `config` with the two clients, short polls and no retries.
async fn server_with(config: Config) -> Setup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let clients: PathBuf = dir.path().join("clients.toml");
    std::fs::write(&clients, CLIENTS).expect("clients.toml");
    let config = Config {
        clients_config_path: Some(clients),
        worker_poll_timeout: Duration::from_millis(500),
        job_max_retries: 0,
        ..config
    };
    Setup { server: TestServer::start_with(config).await, _dir: dir }
}

/// Creates a job as `token`'s client; returns its id.
async fn create(server: &TestServer, token: &str, endpoint: &str, body: Value) -> String {
    let answer = server.send(Method::POST, endpoint, Auth::Client(token), Some(&body.to_string())).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    answer.json()["job_id"].as_str().expect("job_id").to_owned()
}

async fn job(server: &TestServer, token: &str, id: &str) -> Value {
    let answer = server.send(Method::GET, &format!("/api/v1/jobs/{id}"), Auth::Client(token), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()
}

async fn wait_status(server: &TestServer, token: &str, id: &str, status: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let job = job(server, token, id).await;
        if job["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "job {id} is not {status}: {job:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Registers `worker_id` for `greet` and `publish`, with resources to show.
async fn register(server: &TestServer, worker_id: &str) {
    let body = json!({
        "worker_id": worker_id,
        "worker_type": "cpu",
        "supported_tasks": ["greet", "publish"],
        "max_concurrent_tasks": 4,
        "resources": {"cpu_cores": 8, "memory_gb": 16},
    });
    let answer = server
        .send(Method::POST, "/_worker/workers/register", Auth::Worker(WORKER_TOKEN), Some(&body.to_string()))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// Creates a `hello` job as acme, takes its task as `worker_id` and answers
/// with a permanent error: the job is quarantined.
async fn quarantined_job(server: &TestServer, worker_id: &str) -> String {
    let id = create(server, ACME, "/api/v1/jobs/hello", json!({"name": "Quinn"})).await;
    let worker = server.worker(worker_id);
    let task = worker.next_task(WAIT).await;
    assert_eq!(task["job_id"], id.as_str(), "{task:#}");
    let failure = json!({"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": "the input is bad"}});
    let (status, body) = worker.post_result(&task, failure).await;
    assert_eq!(status, 200, "{body}");
    wait_status(server, ACME, &id, "quarantined").await;
    id
}

/// The story that needs only what this branch serves: log-in, the job list
/// following a job, the job page with its graph, cancelling, isolation
/// between clients, workers, log-out.
#[tokio::test]
async fn an_operator_follows_and_cancels_jobs_in_the_browser() {
    let started = Instant::now();
    let Setup { server, _dir } = server().await;
    let browser = Browser::start().await;

    // `/` leads to the dashboard, which asks for a token first.
    browser.goto(&server.url("/")).await;
    browser.until("#login:not([hidden]) #token").await;
    assert!(browser.client.current_url().await.expect("url").path().ends_with("/ui/"));

    browser.log_in("not-a-token").await;
    let error = browser.text("#login-error:not([hidden])").await;
    assert!(error.contains("X-Avtomatika-Token"), "the API's message: {error}");
    assert_eq!(browser.session_token().await, Value::Null);

    browser.log_in(ACME).await;
    browser.until("#jobs-table").await;
    assert_eq!(browser.session_token().await, json!(ACME));

    // A job appears and follows its worker to the end.
    register(&server, "w-dash").await;
    let worker = server.worker("w-dash");
    let done = create(&server, ACME, "/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    browser.until(&format!("tr[data-job-id='{done}'][data-status='waiting_for_worker']")).await;
    let task = worker.next_task(WAIT).await;
    assert_eq!(task["job_id"], done.as_str());
    let (status, _) = worker.post_result(&task, json!({"status": "success", "data": {"greeting": "Hi Ada"}})).await;
    assert_eq!(status, 200);
    browser.until(&format!("tr[data-job-id='{done}'][data-status='finished']")).await;

    let quarantined = quarantined_job(&server, "w-dash").await;
    let to_cancel = create(&server, ACME, "/api/v1/jobs/hello", json!({"name": "Bob"})).await;
    let review = create(&server, ACME, "/api/v1/jobs/moderation", json!({"title": "Launch", "body": "Soon"})).await;
    let foreign = create(&server, GLOBEX, "/api/v1/jobs/hello", json!({"name": "Eve"})).await;
    for (id, status) in
        [(&quarantined, "quarantined"), (&to_cancel, "waiting_for_worker"), (&review, "waiting_for_human")]
    {
        browser.until(&format!("tr[data-job-id='{id}'][data-status='{status}']")).await;
    }
    // Another client's job is not listed.
    assert!(browser.client.find_all(Locator::Css(&format!("tr[data-job-id='{foreign}']"))).await.unwrap().is_empty());
    browser.screenshot("jobs").await;

    // The job page: its graph with the current state marked, then moved on.
    browser.click(&format!("tr[data-job-id='{review}'] a")).await;
    browser.until("#job-status[data-status='waiting_for_human']").await;
    browser.until("#graph svg g.state.current[data-state='review']").await;
    assert_eq!(browser.client.find_all(Locator::Css("#graph svg g.state")).await.unwrap().len(), 6);
    assert_eq!(browser.client.find_all(Locator::Css("#graph svg g.state.current")).await.unwrap().len(), 1);
    browser.until("#events .history-off").await;
    assert!(browser.client.find(Locator::Css("#cancel")).await.unwrap().is_displayed().await.unwrap());
    assert!(!browser.client.find(Locator::Css("#retry")).await.unwrap().is_displayed().await.unwrap());
    browser.screenshot("job").await;
    let approval = server
        .send(
            Method::POST,
            &format!("/_public/webhooks/approval/{review}"),
            Auth::None,
            Some(r#"{"decision": "approved"}"#),
        )
        .await;
    assert_eq!(approval.status, 200, "{approval:?}");
    browser.until("#graph svg g.state.current[data-state='publish']").await;
    assert_eq!(browser.text("#job-state").await, "publish");

    // Cancel with the button.
    browser.goto(&server.url(&format!("/ui/#/jobs/{to_cancel}"))).await;
    browser.until("#job-status[data-status='waiting_for_worker']").await;
    browser.click("#cancel").await;
    browser.until("#job-status[data-status='cancelled']").await;
    browser.until("#action-message.ok").await;
    wait_status(&server, ACME, &to_cancel, "cancelled").await;
    assert!(!browser.client.find(Locator::Css("#cancel")).await.unwrap().is_displayed().await.unwrap());

    // Another client's job answers as the API does: not found.
    browser.goto(&server.url(&format!("/ui/#/jobs/{foreign}"))).await;
    let refused = browser.text("#job-error:not([hidden])").await;
    assert!(refused.contains("not found"), "{refused}");

    browser.click("#nav a[data-page='workers']").await;
    browser.until("tr[data-worker-id='w-dash']").await;
    let row = browser.text("tr[data-worker-id='w-dash']").await;
    assert!(row.contains("greet") && row.contains("cpu_cores"), "{row}");
    browser.screenshot("workers").await;

    browser.click("#nav a[data-page='status']").await;
    browser.until("#status-counts .count[data-status='quarantined']").await;

    browser.click("#nav a[data-page='schedules']").await;
    browser.until("#schedules").await;

    // The quarantined job is listed with its Retry button.
    browser.click("#nav a[data-page='quarantined']").await;
    browser.until(&format!("button.retry[data-job-id='{quarantined}']")).await;

    browser.click("#logout").await;
    browser.until("#login:not([hidden])").await;
    assert_eq!(browser.session_token().await, Value::Null);

    let _ = browser.client.clone().close().await;
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(60), "the story took {:?}", started.elapsed());
}

/// The pages built on routes being added on `main`: job listing filters,
/// `POST /api/v1/jobs/{id}/retry` and `GET /api/v1/blueprints`.
#[tokio::test]
async fn an_operator_retries_filters_and_reads_blueprints_in_the_browser() {
    let Setup { server, _dir } = server().await;
    let browser = Browser::start().await;
    browser.goto(&server.url("/ui/")).await;
    browser.log_in(ACME).await;
    browser.until("#jobs-table").await;

    register(&server, "w-retry").await;
    let quarantined = quarantined_job(&server, "w-retry").await;
    let waiting = create(&server, ACME, "/api/v1/jobs/moderation", json!({"title": "Filters"})).await;
    browser.until(&format!("tr[data-job-id='{waiting}']")).await;

    // The status filter asks the server for quarantined jobs only.
    browser.click("#f-status option[value='quarantined']").await;
    browser.click("#job-filters button[type='submit']").await;
    browser.until_gone(&format!("tr[data-job-id='{waiting}']")).await;
    browser.until(&format!("tr[data-job-id='{quarantined}'][data-status='quarantined']")).await;
    browser.click("#clear-filters").await;
    browser.until(&format!("tr[data-job-id='{waiting}']")).await;

    // Retry from the quarantine page.
    browser.click("#nav a[data-page='quarantined']").await;
    browser.click(&format!("button.retry[data-job-id='{quarantined}']")).await;
    let answer = browser.text("#action-message:not([hidden])").await;
    assert!(answer.contains("retry_accepted"), "{answer}");
    browser.until_gone(&format!("button.retry[data-job-id='{quarantined}']")).await;
    let retried = job(&server, ACME, &quarantined).await;
    assert_ne!(retried["status"], "quarantined", "{retried:#}");

    // Retry of a job that is not quarantined shows the API's 409 message.
    browser.goto(&server.url(&format!("/ui/#/jobs/{waiting}"))).await;
    browser.until("#job-status[data-status='waiting_for_human']").await;
    // The button shows only for quarantined jobs; press it all the same.
    browser.client.execute("document.getElementById('retry').click();", vec![]).await.expect("script");
    let refused = browser.text("#action-message.error:not([hidden])").await;
    assert!(refused.starts_with("Retry failed:") && refused.len() > "Retry failed: ".len(), "{refused}");

    browser.click("#nav a[data-page='blueprints']").await;
    browser.until("section.blueprint[data-blueprint='moderation'] svg g.state[data-state='review']").await;
    browser.until("section.blueprint[data-blueprint='hello'] svg").await;
    browser.screenshot("blueprints").await;

    let _ = browser.client.clone().close().await;
    server.stop().await;
}

/// With history on, the job page lists the job's tasks and events and
/// shades the states it went through on the graph.
#[tokio::test]
async fn the_job_page_shows_tasks_events_and_visited_states_from_the_history() {
    let config = Config { history_database: Some(HistoryDatabase::SqliteMemory), ..test_config() };
    let Setup { server, _dir } = server_with(config).await;
    register(&server, "w-history").await;
    let worker = server.worker("w-history");
    let id = create(&server, ACME, "/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    let task = worker.next_task(WAIT).await;
    let (status, _) = worker.post_result(&task, json!({"status": "success", "data": {"greeting": "Hi"}})).await;
    assert_eq!(status, 200);
    wait_status(&server, ACME, &id, "finished").await;

    let browser = Browser::start().await;
    browser.goto(&server.url(&format!("/ui/#/jobs/{id}"))).await;
    browser.log_in(ACME).await;
    browser.until("#job-status[data-status='finished']").await;
    let task_id = task["task_id"].as_str().expect("task_id");
    let tasks = browser.text("#tasks table").await;
    assert!(tasks.contains(task_id) && tasks.contains("w-history"), "{tasks}");
    let events = browser.text("#events table").await;
    assert!(events.contains("task_dispatched") && events.contains("job_finished"), "{events}");
    // The graph is drawn again once the history named the states.
    browser.until("#graph svg g.state.visited[data-state='start']").await;
    browser.until("#graph svg g.state.current[data-state='finished']").await;
    assert!(browser.client.find_all(Locator::Css(".history-off")).await.expect("find").is_empty());
    // Ended, without a webhook: no Cancel, no Retry, no Re-send.
    for button in ["#cancel", "#retry", "#resend-webhook"] {
        let shown = browser.client.find(Locator::Css(button)).await.expect(button).is_displayed().await;
        assert!(!shown.expect("displayed"), "{button} is shown");
    }

    let _ = browser.client.clone().close().await;
    server.stop().await;
}

/// The routes the pages stand on, through the whole server (its router,
/// middleware and compression), without a browser.
#[tokio::test]
async fn the_server_serves_the_pages_and_svg_graphs() {
    let Setup { server, _dir } = server().await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");

    let root = http.get(server.url("/")).send().await.expect("GET /");
    assert!(root.status().is_redirection(), "{root:?}");
    assert_eq!(root.headers()["location"], "/ui/");
    let page = http.get(server.url("/ui/")).send().await.expect("GET /ui/");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().expect("ascii").to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"), "{csp}");
    assert!(page.text().await.expect("body").contains(r#"<script type="module" src="app.js">"#));
    let script = http.get(server.url("/ui/pages.js")).header("accept-encoding", "gzip").send().await.expect("GET");
    assert_eq!(script.headers()["content-encoding"], "gzip", "{script:?}");
    let etag = script.headers()["etag"].clone();
    let again = http.get(server.url("/ui/pages.js")).header("if-none-match", etag).send().await.expect("GET");
    assert_eq!(again.status(), 304);

    let graph = async |query: &str| {
        let path = format!("/api/v1/blueprints/moderation/graph{query}");
        server.send(Method::GET, &path, Auth::Client(ACME), None).await
    };
    let svg = graph("?format=svg&state=publish&visited=review").await;
    assert_eq!(svg.status, 200, "{svg:?}");
    assert_eq!(svg.content_type.as_deref(), Some("image/svg+xml; charset=utf-8"));
    assert!(svg.text.starts_with("<svg ") && svg.text.trim_end().ends_with("</svg>"), "{}", svg.text);
    assert!(svg.text.contains(r#"<g class="state current" data-state="publish">"#), "{}", svg.text);
    assert!(svg.text.contains(r#"<g class="state start visited" data-state="review">"#), "{}", svg.text);
    assert_eq!(svg.text.matches("class=\"transition\"").count(), 5, "{}", svg.text);
    let dot = graph("").await;
    assert!(dot.content_type.as_deref().is_some_and(|t| t.starts_with("text/vnd.graphviz")), "{dot:?}");
    assert!(graph("?format=png").await.assert_error(400).contains("png"));
    let anonymous = server.send(Method::GET, "/api/v1/blueprints/moderation/graph?format=svg", Auth::None, None).await;
    anonymous.assert_error(401);
    server.stop().await;
}
