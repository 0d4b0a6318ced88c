//! Outgoing job webhooks (`spec/http-api.md`, "Webhooks"): one POST when a
//! job ends, sent in the background and retried with backoff.
//!
//! [`Webhooks::send`] only queues: the caller (the job's executor) never
//! waits for a receiver. Each delivery then waits for the slots of one POST
//! (`shares.rs`: its receiver host's, its client's, a global one), so one
//! client's slow or hanging receivers delay only that client's deliveries,
//! and a client past its queue share loses only its own. A delivery between
//! two attempts holds no slot.
//!
//! Only addresses the [`AddressPolicy`] accepts are connected to (`guard.rs`,
//! `resolver.rs`); a refused delivery is given up at once and counted apart.
//!
//! ```no_run
//! # async fn example(job: avtomatika::model::Job) {
//! use avtomatika::config::WebhookSettings;
//! use avtomatika::webhook::{Delivery, Webhooks};
//! use tokio_util::sync::CancellationToken;
//!
//! let webhooks = Webhooks::start(WebhookSettings::default(), CancellationToken::new());
//! if let Some(delivery) = Delivery::for_job(&job) {
//!     webhooks.send(delivery); // returns at once
//! }
//! # }
//! ```
//!
//! Logs name the job, its client and the receiver's host, never the whole
//! URL: its path or query may carry a token.

mod guard;
mod resolver;
mod shares;

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use self::guard::{AddressPolicy, Range, Refused, UrlProblem, parse_networks};
use self::resolver::{GuardedResolver, refused_host};
use self::shares::{Full, Limits, Shares, Ticket};
use crate::config::WebhookSettings;
use crate::model::{Job, JobId, JobStatus};

/// One webhook to send: `payload` POSTed as JSON to `url`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub job_id: JobId,
    /// The job's client: its deliveries share its queue share and slots.
    pub client: String,
    pub url: String,
    pub payload: Value,
}

impl Delivery {
    /// The spec's webhook for `job`: `None` while the job has not ended or
    /// when it was created without a `webhook_url`.
    pub fn for_job(job: &Job) -> Option<Self> {
        let url = job.webhook_url.as_deref()?;
        let event = match job.status {
            JobStatus::Finished => "job_finished",
            JobStatus::Failed | JobStatus::Error | JobStatus::Cancelled => "job_failed",
            JobStatus::Quarantined => "job_quarantined",
            JobStatus::Pending
            | JobStatus::Running
            | JobStatus::WaitingForWorker
            | JobStatus::WaitingForHuman
            | JobStatus::WaitingForParallelTasks
            | JobStatus::WaitingForChildJob => return None,
        };
        Some(Self {
            job_id: job.id,
            client: job.client.clone(),
            url: url.to_owned(),
            payload: json!({
                "event": event,
                "job_id": job.id.to_string(),
                "status": job.status.as_str(),
                "result": job.state_history,
                "error": job.error_message,
            }),
        })
    }

    /// The receiver's host and port, for logs (never the path or query).
    fn host(&self) -> UrlHost<'_> {
        UrlHost(&self.url)
    }

    /// The receiver host its lane is named after: the host without the
    /// port, since one machine can listen on any number of ports.
    fn lane(&self) -> String {
        url::Url::parse(&self.url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default()
    }
}

/// Renders a URL's `host[:port]` only; `<invalid url>` when it does not parse.
struct UrlHost<'a>(&'a str);

impl fmt::Display for UrlHost<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parsed = url::Url::parse(self.0).ok();
        match parsed.as_ref().and_then(|u| u.host_str().map(|h| (h, u.port()))) {
            Some((host, Some(port))) => write!(f, "{host}:{port}"),
            Some((host, None)) => f.write_str(host),
            None => f.write_str("<invalid url>"),
        }
    }
}

/// Running totals since [`Webhooks::start`], for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Deliveries a receiver answered with a 2xx.
    pub delivered: u64,
    /// Deliveries given up after their last attempt failed (or whose URL
    /// could not be used at all).
    pub given_up: u64,
    /// Deliveries refused by [`Webhooks::send`]: the client's queue share or
    /// the whole queue was full, or the service had stopped.
    pub dropped: u64,
    /// Deliveries never sent because their receiver's address is refused
    /// ([`AddressPolicy`], `WEBHOOK_ALLOWED_NETWORKS`).
    pub refused: u64,
    /// POST attempts made, successful or not.
    pub attempts: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    given_up: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    attempts: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The webhook delivery service. Cloning is cheap and every clone feeds the
/// same deliveries.
#[derive(Clone)]
pub struct Webhooks {
    service: Arc<Service>,
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhooks").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

struct Service {
    /// `None` when the client could not be built: every delivery is given up.
    client: Option<reqwest::Client>,
    settings: WebhookSettings,
    policy: AddressPolicy,
    shares: Arc<Shares>,
    counters: Counters,
    shutdown: CancellationToken,
    /// Where deliveries run: the runtime [`Webhooks::start`] was called on, so
    /// [`Webhooks::send`] works from any thread.
    runtime: tokio::runtime::Handle,
}

impl Webhooks {
    /// Starts the service on the current Tokio runtime (so call it from
    /// inside one). It runs until `shutdown` fires; deliveries still pending
    /// then are abandoned with a warning.
    pub fn start(settings: WebhookSettings, shutdown: CancellationToken) -> Self {
        let policy = AddressPolicy::new(&settings.allowed_networks);
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            // A receiver that never accepts (a filtered port) is given up
            // well before the whole attempt's limit.
            .connect_timeout(settings.connect_timeout())
            // A redirect would turn the POST into a GET, or send the payload
            // somewhere the job's creator did not name (nor the policy
            // checked): a 3xx is a failure.
            .redirect(reqwest::redirect::Policy::none())
            // Through a proxy (HTTP_PROXY and the like) the proxy would pick
            // the address, and the resolver would only ever see the proxy's.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() }))
            .build()
            .map_err(|e| {
                tracing::error!(error = %e.without_url(), "cannot set up the webhook HTTP client; webhooks will not be sent");
            })
            .ok();
        let shares = Shares::new(Limits {
            queue: settings.queue_capacity,
            client_queue: settings.queue_per_client,
            concurrency: settings.concurrency,
            per_client_concurrency: settings.per_client_concurrency,
            per_host_concurrency: settings.per_host_concurrency,
        });
        let runtime = tokio::runtime::Handle::current();
        let pending = shares.clone();
        let stopped = shutdown.clone();
        runtime.spawn(async move {
            stopped.cancelled().await;
            let abandoned = pending.pending();
            if abandoned > 0 {
                tracing::warn!(abandoned, "shutting down; pending webhook deliveries abandoned");
            }
        });
        let settings = WebhookSettings { max_attempts: settings.max_attempts.max(1), ..settings };
        Self {
            service: Arc::new(Service {
                client,
                settings,
                policy,
                shares,
                counters: Counters::default(),
                shutdown,
                runtime,
            }),
        }
    }

    /// Queues `delivery` and returns at once, never waiting: when its
    /// client's queue share or the whole queue is full (or the service has
    /// stopped) the delivery is dropped with a warning.
    pub fn send(&self, delivery: Delivery) {
        let service = &self.service;
        if service.shutdown.is_cancelled() {
            bump(&service.counters.dropped);
            tracing::warn!(job_id = %delivery.job_id, client = %delivery.client, url_host = %delivery.host(), "webhook service stopped; delivery dropped");
            return;
        }
        let ticket = match service.shares.take(&delivery.client, &delivery.lane()) {
            Ok(ticket) => ticket,
            Err(full) => {
                bump(&service.counters.dropped);
                let (queue, limit) = match full {
                    Full::Client(limit) => ("the client's share (WEBHOOK_QUEUE_PER_CLIENT)", limit),
                    Full::All(limit) => ("the queue (WEBHOOK_QUEUE_CAPACITY)", limit),
                };
                tracing::warn!(
                    job_id = %delivery.job_id, client = %delivery.client, url_host = %delivery.host(), limit,
                    "webhook delivery dropped: {queue} is full"
                );
                return;
            }
        };
        let service = service.clone();
        self.service.runtime.spawn(async move {
            tokio::select! {
                biased;
                () = service.shutdown.cancelled() => {
                    // Counted in the one warning `start` logs.
                    tracing::debug!(job_id = %delivery.job_id, url_host = %delivery.host(), "shutting down; webhook delivery abandoned");
                }
                () = service.deliver(&delivery, &ticket) => {}
            }
            drop(ticket);
        });
    }

    /// The address policy deliveries follow (`WEBHOOK_ALLOWED_NETWORKS`):
    /// job creation checks a `webhook_url` with it.
    pub fn policy(&self) -> &AddressPolicy {
        &self.service.policy
    }

    /// Totals so far.
    pub fn stats(&self) -> WebhookStats {
        let c = &self.service.counters;
        WebhookStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            given_up: c.given_up.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            attempts: c.attempts.load(Ordering::Relaxed),
        }
    }
}

impl Service {
    /// Tries `delivery` until a receiver takes it or the attempts run out.
    async fn deliver(&self, delivery: &Delivery, ticket: &Ticket) {
        let Some(client) = &self.client else {
            bump(&self.counters.given_up);
            tracing::warn!(job_id = %delivery.job_id, url_host = %delivery.host(), "no HTTP client; webhook given up");
            return;
        };
        // The URL was checked when the job was created, but the allow-list
        // may have changed since; a literal address never reaches the
        // resolver, so it is checked here.
        if let Err(problem) = self.policy.check_url(&delivery.url) {
            match problem {
                UrlProblem::Refused(refused) => self.refused(delivery, &refused),
                UrlProblem::Invalid(problem) => {
                    bump(&self.counters.given_up);
                    tracing::warn!(job_id = %delivery.job_id, url_host = %delivery.host(), problem, "webhook URL unusable; given up");
                }
            }
            return;
        }
        let max_attempts = self.settings.max_attempts;
        for attempt in 1..=max_attempts {
            let outcome = {
                // Held for the POST only, not for the wait before the next one.
                let Some(_slots) = ticket.slots().await else { return };
                bump(&self.counters.attempts);
                attempt_once(client, delivery).await
            };
            let problem = match outcome {
                Attempt::Delivered => {
                    bump(&self.counters.delivered);
                    tracing::debug!(job_id = %delivery.job_id, url_host = %delivery.host(), attempt, "webhook delivered");
                    return;
                }
                Attempt::Refused(refused) => {
                    self.refused(delivery, &refused);
                    return;
                }
                Attempt::Unusable(problem) => {
                    bump(&self.counters.given_up);
                    tracing::warn!(job_id = %delivery.job_id, url_host = %delivery.host(), problem, "webhook URL unusable; given up");
                    return;
                }
                Attempt::Failed(problem) => problem,
            };
            if attempt == max_attempts {
                bump(&self.counters.given_up);
                tracing::warn!(
                    job_id = %delivery.job_id,
                    url_host = %delivery.host(),
                    attempts = attempt,
                    problem,
                    "webhook not delivered; given up"
                );
                return;
            }
            let delay = retry_delay(&self.settings, attempt);
            tracing::debug!(
                job_id = %delivery.job_id,
                url_host = %delivery.host(),
                attempt,
                problem,
                retry_in_ms = delay.as_millis() as u64,
                "webhook attempt failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Counts and logs a delivery whose receiver's address is refused. It is
    /// not retried: the policy will refuse it again.
    fn refused(&self, delivery: &Delivery, refused: &dyn fmt::Display) {
        bump(&self.counters.refused);
        tracing::warn!(
            job_id = %delivery.job_id,
            client = %delivery.client,
            url_host = %delivery.host(),
            reason = %refused,
            "webhook not sent: the receiver's address is refused; WEBHOOK_ALLOWED_NETWORKS can allow it"
        );
    }
}

/// How one POST went.
enum Attempt {
    Delivered,
    /// Worth another try: no answer, a timeout or a non-2xx status.
    Failed(String),
    /// Never worth another try: the URL cannot be requested at all.
    Unusable(String),
    /// The receiver's host resolves only to refused addresses.
    Refused(String),
}

async fn attempt_once(client: &reqwest::Client, delivery: &Delivery) -> Attempt {
    match client.post(&delivery.url).json(&delivery.payload).send().await {
        // The body is not read: a receiver's answer is only its status.
        Ok(response) if response.status().is_success() => Attempt::Delivered,
        Ok(response) => Attempt::Failed(format!("status {}", response.status().as_u16())),
        Err(e) => match refused_host(&e) {
            Some(refused) => Attempt::Refused(refused.to_string()),
            None if e.is_builder() => Attempt::Unusable(describe(e)),
            None => Attempt::Failed(describe(e)),
        },
    }
}

/// An error and its causes, without the URL reqwest would print.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The wait after failed attempt number `attempt` (1-based): the initial delay
/// doubled `attempt - 1` times, capped at `retry_max`, plus up to a tenth more
/// so receivers coming back are not hit by every retry at once.
fn retry_delay(settings: &WebhookSettings, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
    let base = settings.retry_initial.saturating_mul(factor).min(settings.retry_max);
    let jitter_range = base.as_millis() as u64 / 10;
    let jitter = if jitter_range == 0 { 0 } else { RandomState::new().hash_one(attempt) % (jitter_range + 1) };
    base + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::time::Instant;

    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use serde_json::Map;

    use super::*;

    /// A test receiver: records when each POST arrived and its body, and
    /// answers `plan[n]` to the n-th (the last entry for every later one).
    #[derive(Clone)]
    struct Receiver {
        seen: Arc<Mutex<Vec<(Instant, Value)>>>,
        plan: Arc<Vec<Answer>>,
    }

    #[derive(Clone, Copy)]
    enum Answer {
        Status(u16),
        /// Never answers (within any test's lifetime).
        Hang,
    }

    impl Receiver {
        async fn start(plan: Vec<Answer>) -> (Self, String) {
            let receiver = Self { seen: Arc::default(), plan: Arc::new(plan) };
            let app = Router::new().route("/hook", post(receive)).with_state(receiver.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr: SocketAddr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            (receiver, format!("http://{addr}/hook?token=s3cret"))
        }

        fn seen(&self) -> Vec<(Instant, Value)> {
            self.seen.lock().unwrap().clone()
        }

        /// Waits (up to `limit`) until `n` POSTs have arrived.
        async fn wait_for(&self, n: usize, limit: Duration) -> Vec<(Instant, Value)> {
            let deadline = Instant::now() + limit;
            loop {
                let seen = self.seen();
                if seen.len() >= n || Instant::now() > deadline {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn receive(State(receiver): State<Receiver>, body: axum::Json<Value>) -> StatusCode {
        let n = {
            let mut seen = receiver.seen.lock().unwrap();
            seen.push((Instant::now(), body.0));
            seen.len()
        };
        let answer = receiver.plan.get(n - 1).or(receiver.plan.last()).copied().unwrap_or(Answer::Status(200));
        match answer {
            Answer::Status(code) => StatusCode::from_u16(code).unwrap(),
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                StatusCode::OK
            }
        }
    }

    /// The test receivers listen on 127.0.0.1, which is refused by default.
    fn settings() -> WebhookSettings {
        WebhookSettings {
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            retry_initial: Duration::from_millis(20),
            queue_capacity: 100,
            concurrency: 4,
            allowed_networks: parse_networks("127.0.0.0/8").unwrap(),
            ..WebhookSettings::default()
        }
    }

    fn delivery(url: &str, n: u64) -> Delivery {
        client_delivery("client", url, n)
    }

    fn client_delivery(client: &str, url: &str, n: u64) -> Delivery {
        Delivery {
            job_id: uuid::Uuid::new_v4(),
            client: client.to_owned(),
            url: url.to_owned(),
            payload: json!({"n": n}),
        }
    }

    /// Waits (up to `limit`) until `done` holds for the service's totals.
    async fn wait_for_stats(
        webhooks: &Webhooks,
        limit: Duration,
        done: impl Fn(&WebhookStats) -> bool,
    ) -> WebhookStats {
        let deadline = Instant::now() + limit;
        loop {
            let stats = webhooks.stats();
            if done(&stats) || Instant::now() > deadline {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn job(status: JobStatus, webhook_url: Option<&str>) -> Job {
        let mut job =
            Job::new("flow".into(), "client".into(), "start".into(), json!({}), webhook_url.map(str::to_owned));
        job.status = status;
        job
    }

    #[test]
    fn for_job_builds_the_spec_payload_for_each_ending() {
        for (status, event) in [
            (JobStatus::Finished, "job_finished"),
            (JobStatus::Failed, "job_failed"),
            (JobStatus::Error, "job_failed"),
            (JobStatus::Cancelled, "job_failed"),
            (JobStatus::Quarantined, "job_quarantined"),
        ] {
            let mut job = job(status, Some("https://example.test/hook?token=t"));
            job.state_history = Map::from_iter([("total".to_owned(), json!(42))]);
            if status != JobStatus::Finished {
                job.error_message = Some("it broke".into());
            }
            let delivery = Delivery::for_job(&job).unwrap_or_else(|| panic!("{status:?} sends no webhook"));
            assert_eq!((delivery.job_id, delivery.client.as_str()), (job.id, "client"));
            assert_eq!(delivery.url, "https://example.test/hook?token=t");
            let error = if status == JobStatus::Finished { Value::Null } else { json!("it broke") };
            assert_eq!(
                delivery.payload,
                json!({
                    "event": event,
                    "job_id": job.id.to_string(),
                    "status": status.as_str(),
                    "result": {"total": 42},
                    "error": error,
                }),
                "{status:?}"
            );
        }
    }

    #[test]
    fn for_job_sends_nothing_before_the_end_or_without_a_url() {
        for status in JobStatus::UNFINISHED {
            assert_eq!(Delivery::for_job(&job(status, Some("http://h/x"))), None, "{status:?}");
        }
        assert_eq!(Delivery::for_job(&job(JobStatus::Finished, None)), None);
    }

    #[test]
    fn logs_show_the_host_only() {
        let shown = |url: &str| UrlHost(url).to_string();
        assert_eq!(shown("https://user:pw@hooks.example.test/p/s3cret?token=s3cret"), "hooks.example.test");
        assert_eq!(shown("http://127.0.0.1:9000/hook?token=s3cret"), "127.0.0.1:9000");
        assert_eq!(shown("not a url s3cret"), "<invalid url>");
    }

    #[tokio::test]
    async fn error_descriptions_leave_the_url_out() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e =
            reqwest::Client::new().post(format!("http://127.0.0.1:{port}/p?token=s3cret")).send().await.unwrap_err();
        assert!(e.to_string().contains("s3cret"), "reqwest now hides the URL itself: {e}");
        let described = describe(e);
        assert!(!described.contains("s3cret") && !described.contains("/p"), "{described}");
        assert!(described.contains("error sending request"), "{described}");
    }

    #[test]
    fn retry_delays_double_up_to_the_cap_with_a_little_jitter() {
        let settings = WebhookSettings {
            retry_initial: Duration::from_millis(1000),
            retry_max: Duration::from_secs(5),
            ..WebhookSettings::default()
        };
        for (attempt, base_ms) in [(1, 1000), (2, 2000), (3, 4000), (4, 5000), (40, 5000)] {
            let delay = retry_delay(&settings, attempt).as_millis() as u64;
            assert!((base_ms..=base_ms + base_ms / 10).contains(&delay), "attempt {attempt}: {delay} ms");
        }
    }

    #[tokio::test]
    async fn a_delivery_arrives_once_with_its_payload() {
        let (receiver, url) = Receiver::start(vec![Answer::Status(200)]).await;
        let shutdown = CancellationToken::new();
        let webhooks = Webhooks::start(settings(), shutdown.clone());
        let mut job = job(JobStatus::Finished, Some(&url));
        job.state_history = Map::from_iter([("answer".to_owned(), json!({"x": [1, 2]}))]);
        let delivery = Delivery::for_job(&job).unwrap();
        webhooks.send(delivery.clone());
        let stats = wait_for_stats(&webhooks, Duration::from_secs(10), |s| s.delivered == 1).await;
        assert_eq!(stats, WebhookStats { delivered: 1, given_up: 0, dropped: 0, refused: 0, attempts: 1 });
        // Nothing more comes later.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = receiver.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1, delivery.payload);
        assert_eq!(seen[0].1["event"], "job_finished");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn failed_attempts_are_retried_with_growing_gaps() {
        let (receiver, url) =
            Receiver::start(vec![Answer::Status(500), Answer::Status(500), Answer::Status(200)]).await;
        let shutdown = CancellationToken::new();
        let initial = Duration::from_millis(100);
        let webhooks = Webhooks::start(
            WebhookSettings { max_attempts: 5, retry_initial: initial, ..settings() },
            shutdown.clone(),
        );
        webhooks.send(delivery(&url, 7));
        let stats = wait_for_stats(&webhooks, Duration::from_secs(20), |s| s.delivered == 1).await;
        assert_eq!(stats, WebhookStats { delivered: 1, given_up: 0, dropped: 0, refused: 0, attempts: 3 });
        let seen = receiver.seen();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|(_, body)| *body == json!({"n": 7})));
        // Each wait is at least the backoff; however loaded the machine, a
        // sleep never ends early.
        let (first_gap, second_gap) = (seen[1].0 - seen[0].0, seen[2].0 - seen[1].0);
        assert!(first_gap >= initial, "{first_gap:?}");
        assert!(second_gap >= initial * 2, "{second_gap:?}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_receiver_that_always_fails_gets_exactly_max_attempts() {
        let (receiver, url) = Receiver::start(vec![Answer::Status(500)]).await;
        let shutdown = CancellationToken::new();
        let webhooks = Webhooks::start(WebhookSettings { max_attempts: 3, ..settings() }, shutdown.clone());
        webhooks.send(delivery(&url, 1));
        let stats = wait_for_stats(&webhooks, Duration::from_secs(20), |s| s.given_up == 1).await;
        assert_eq!(stats, WebhookStats { delivered: 0, given_up: 1, dropped: 0, refused: 0, attempts: 3 });
        // A fourth attempt would have come 80 ms later (plus jitter).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(receiver.seen().len(), 3);
        assert_eq!(webhooks.stats().attempts, 3);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_hanging_receiver_does_not_hold_up_a_healthy_one() {
        let (hanging, hanging_url) = Receiver::start(vec![Answer::Hang]).await;
        let (healthy, healthy_url) = Receiver::start(vec![Answer::Status(200)]).await;
        let shutdown = CancellationToken::new();
        // The hanging delivery lasts 4 × 200 ms of timeouts plus
        // 300 + 600 + 1200 ms of backoff: 2.9 s at least.
        let webhooks = Webhooks::start(
            WebhookSettings {
                timeout: Duration::from_millis(200),
                max_attempts: 4,
                retry_initial: Duration::from_millis(300),
                concurrency: 2,
                ..settings()
            },
            shutdown.clone(),
        );
        webhooks.send(delivery(&hanging_url, 0));
        hanging.wait_for(1, Duration::from_secs(10)).await;
        let sent = Instant::now();
        webhooks.send(delivery(&healthy_url, 99));
        let seen = healthy.wait_for(1, Duration::from_secs(10)).await;
        assert_eq!(seen.len(), 1, "the healthy receiver got nothing");
        // Generous for a loaded machine, yet well short of the 2.9 s a
        // dispatcher that waited for the hanging delivery would take.
        let waited = seen[0].0 - sent;
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        // Each hanging attempt was cut off by the timeout and tried again.
        let stats = wait_for_stats(&webhooks, Duration::from_secs(20), |s| s.given_up == 1).await;
        assert_eq!(stats, WebhookStats { delivered: 1, given_up: 1, dropped: 0, refused: 0, attempts: 5 });
        assert_eq!(hanging.seen().len(), 4);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn no_more_than_concurrency_posts_are_in_flight() {
        let (hanging, url) = Receiver::start(vec![Answer::Hang]).await;
        let shutdown = CancellationToken::new();
        let webhooks = Webhooks::start(
            WebhookSettings { timeout: Duration::from_secs(60), concurrency: 2, ..settings() },
            shutdown.clone(),
        );
        for n in 0..5 {
            webhooks.send(delivery(&url, n));
        }
        assert_eq!(hanging.wait_for(2, Duration::from_secs(10)).await.len(), 2);
        // The others wait for a slot until the first attempts time out (60 s).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(hanging.seen().len(), 2);
        assert_eq!(webhooks.stats(), WebhookStats { delivered: 0, given_up: 0, dropped: 0, refused: 0, attempts: 2 });
        shutdown.cancel();
    }

    #[tokio::test]
    async fn send_on_a_full_queue_returns_at_once_and_drops() {
        let (hanging, url) = Receiver::start(vec![Answer::Hang]).await;
        let shutdown = CancellationToken::new();
        let webhooks = Webhooks::start(
            WebhookSettings { timeout: Duration::from_secs(60), queue_capacity: 2, concurrency: 1, ..settings() },
            shutdown.clone(),
        );
        // The first hangs and the second waits for its slot: both are
        // pending, so every later one finds the queue full.
        webhooks.send(delivery(&url, 0));
        hanging.wait_for(1, Duration::from_secs(10)).await;
        webhooks.send(delivery(&url, 1));
        let started = Instant::now();
        for n in 2..102 {
            webhooks.send(delivery(&url, n));
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "100 sends took {took:?}");
        assert_eq!(webhooks.stats().dropped, 100);
        assert_eq!(hanging.seen().len(), 1);
        shutdown.cancel();
        // Once stopped, a send still returns at once, dropping the delivery.
        tokio::time::sleep(Duration::from_millis(100)).await;
        webhooks.send(delivery(&url, 102));
        assert_eq!(webhooks.stats().dropped, 101);
    }

    #[tokio::test]
    async fn an_unreachable_receiver_is_given_up_after_max_attempts() {
        // A port nothing listens on: bind one, then free it.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let shutdown = CancellationToken::new();
        let initial = Duration::from_millis(20);
        let webhooks = Webhooks::start(
            WebhookSettings { max_attempts: 4, retry_initial: initial, ..settings() },
            shutdown.clone(),
        );
        let started = Instant::now();
        webhooks.send(delivery(&format!("http://127.0.0.1:{port}/hook"), 1));
        let stats = wait_for_stats(&webhooks, Duration::from_secs(20), |s| s.given_up == 1).await;
        assert_eq!(stats, WebhookStats { delivered: 0, given_up: 1, dropped: 0, refused: 0, attempts: 4 });
        // It waited between the attempts: 20 + 40 + 80 ms at least.
        assert!(started.elapsed() >= initial * 7, "{:?}", started.elapsed());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_unusable_url_is_given_up_without_retrying() {
        let shutdown = CancellationToken::new();
        let webhooks = Webhooks::start(WebhookSettings { max_attempts: 5, ..settings() }, shutdown.clone());
        webhooks.send(delivery("not a url", 1));
        webhooks.send(delivery("ftp://127.0.0.1/hook", 2));
        let stats = wait_for_stats(&webhooks, Duration::from_secs(10), |s| s.given_up == 2).await;
        assert_eq!(stats, WebhookStats { delivered: 0, given_up: 2, dropped: 0, refused: 0, attempts: 0 });
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_host_name_that_resolves_to_loopback_is_refused_at_delivery() {
        let (receiver, url) = Receiver::start(vec![Answer::Status(200)]).await;
        let port = url::Url::parse(&url).unwrap().port().unwrap();
        let shutdown = CancellationToken::new();
        let webhooks = Webhooks::start(
            WebhookSettings { allowed_networks: Vec::new(), max_attempts: 3, ..settings() },
            shutdown.clone(),
        );
        assert_eq!(
            webhooks.policy().check_url(&format!("http://localhost:{port}/hook")),
            Ok(()),
            "a name passes creation"
        );
        webhooks.send(delivery(&format!("http://localhost:{port}/hook?token=s3cret"), 1));
        let stats = wait_for_stats(&webhooks, Duration::from_secs(10), |s| s.refused == 1).await;
        assert_eq!((stats.refused, stats.delivered, stats.given_up), (1, 0, 0), "{stats:?}");
        assert_eq!(stats.attempts, 1, "refused addresses are not tried again");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(receiver.seen().is_empty(), "the receiver on 127.0.0.1 was reached");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_literal_refused_address_is_never_contacted() {
        let (receiver, url) = Receiver::start(vec![Answer::Status(200)]).await;
        let shutdown = CancellationToken::new();
        // Created while the allow-list let it through; refused after it changed.
        let webhooks =
            Webhooks::start(WebhookSettings { allowed_networks: Vec::new(), ..settings() }, shutdown.clone());
        let mapped = url.replace("127.0.0.1", "[::ffff:127.0.0.1]");
        webhooks.send(delivery(&url, 1));
        webhooks.send(delivery(&mapped, 2));
        let stats = wait_for_stats(&webhooks, Duration::from_secs(10), |s| s.refused == 2).await;
        assert_eq!(stats, WebhookStats { delivered: 0, given_up: 0, dropped: 0, refused: 2, attempts: 0 });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(receiver.seen().is_empty());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_allow_list_lets_a_host_name_through() {
        let (receiver, url) = Receiver::start(vec![Answer::Status(200)]).await;
        let port = url::Url::parse(&url).unwrap().port().unwrap();
        let shutdown = CancellationToken::new();
        // `localhost` may resolve to ::1 too, where nothing listens: only
        // 127.0.0.0/8 is allowed, so only 127.0.0.1 is tried.
        let webhooks = Webhooks::start(settings(), shutdown.clone());
        webhooks.send(delivery(&format!("http://localhost:{port}/hook"), 5));
        let stats = wait_for_stats(&webhooks, Duration::from_secs(10), |s| s.delivered == 1).await;
        assert_eq!(stats, WebhookStats { delivered: 1, given_up: 0, dropped: 0, refused: 0, attempts: 1 });
        assert_eq!(receiver.seen()[0].1, json!({"n": 5}));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (target, target_url) = Receiver::start(vec![Answer::Status(200)]).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let redirecting = format!("http://{}/hook", listener.local_addr().unwrap());
        let location = target_url.clone();
        let app = Router::new().route(
            "/hook",
            post(move || {
                let location = location.clone();
                async move { (StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, location)]) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let shutdown = CancellationToken::new();
        let webhooks = Webhooks::start(WebhookSettings { max_attempts: 2, ..settings() }, shutdown.clone());
        webhooks.send(delivery(&redirecting, 1));
        let stats = wait_for_stats(&webhooks, Duration::from_secs(10), |s| s.given_up == 1).await;
        assert_eq!(stats, WebhookStats { delivered: 0, given_up: 1, dropped: 0, refused: 0, attempts: 2 });
        assert!(target.seen().is_empty(), "the redirect was followed");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_hanging_host_takes_only_its_own_slots() {
        let (hanging, hanging_url) = Receiver::start(vec![Answer::Hang]).await;
        let (healthy, healthy_url) = Receiver::start(vec![Answer::Status(200)]).await;
        let shutdown = CancellationToken::new();
        let webhooks = Webhooks::start(
            WebhookSettings {
                timeout: Duration::from_secs(60),
                concurrency: 4,
                per_client_concurrency: 4,
                per_host_concurrency: 2,
                ..settings()
            },
            shutdown.clone(),
        );
        for n in 0..10 {
            webhooks.send(client_delivery("a", &hanging_url, n));
        }
        assert_eq!(hanging.wait_for(2, Duration::from_secs(10)).await.len(), 2);
        // Another client's delivery to the same host has a lane of its own,
        // and the eight waiting deliveries hold no global slot.
        webhooks.send(client_delivery("b", &healthy_url, 100));
        let seen = healthy.wait_for(1, Duration::from_secs(2)).await;
        assert_eq!(seen.len(), 1, "client b waited behind client a's hanging host");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(hanging.seen().len(), 2, "more than WEBHOOK_PER_HOST_CONCURRENCY POSTs to one host");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_client_past_its_queue_share_loses_only_its_own_deliveries() {
        let (hanging, hanging_url) = Receiver::start(vec![Answer::Hang]).await;
        let (healthy, healthy_url) = Receiver::start(vec![Answer::Status(200)]).await;
        let shutdown = CancellationToken::new();
        let webhooks = Webhooks::start(
            WebhookSettings {
                timeout: Duration::from_secs(60),
                queue_per_client: 3,
                queue_capacity: 100,
                ..settings()
            },
            shutdown.clone(),
        );
        for n in 0..5 {
            webhooks.send(client_delivery("a", &hanging_url, n));
        }
        assert_eq!(webhooks.stats().dropped, 2);
        hanging.wait_for(3, Duration::from_secs(10)).await;
        webhooks.send(client_delivery("b", &healthy_url, 100));
        let stats = wait_for_stats(&webhooks, Duration::from_secs(10), |s| s.delivered == 1).await;
        assert_eq!((stats.delivered, stats.dropped), (1, 2), "{stats:?}");
        assert_eq!(healthy.seen().len(), 1);
        shutdown.cancel();
    }
}
