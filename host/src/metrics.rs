//! Prometheus metrics, served as text by `GET /_public/metrics`.
//!
//! One [`Metrics`] value owns its own [`Registry`] (no process-wide default
//! registry, so two servers in one test process do not share counts). Event
//! metrics are bumped where the event happens; the gauges that mirror storage
//! and the webhook totals are filled in when a scrape renders ([`Snapshot`]).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::history::HistoryStats;
use crate::model::JobStatus;
use crate::runtime::HandlerError;
use crate::runtime::cache::CacheStats;
use crate::storage::JobCounts;
use crate::webhook::WebhookStats;

/// The `Content-Type` of a scrape: the Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Handler calls take microseconds to the CPU deadline (seconds).
const HANDLER_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A task's round trip spans a worker's whole run: milliseconds to minutes.
const ROUND_TRIP_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The server's metrics and the registry that renders them. Label values
/// always match the label names declared here, so the `with_label_values`
/// lookups cannot fail.
pub struct Metrics {
    registry: Registry,
    jobs_created: IntCounterVec,
    jobs_ended: IntCounterVec,
    handler_duration: HistogramVec,
    task_round_trip: HistogramVec,
    plugin_failures: PluginFailures,
    http_requests: IntCounterVec,
    live_workers: IntGauge,
    /// Worker WebSockets open on this instance.
    worker_sockets: IntGauge,
    jobs: IntGaugeVec,
    jobs_queued: IntGauge,
    webhooks: WebhookCounters,
    history: HistoryCounters,
    plugin_cache: PluginCacheCounters,
    reloads_applied: IntCounter,
    reloads_refused: IntCounter,
    blueprint_versions: IntGaugeVec,
}

/// One pre-resolved counter per [`HandlerError`] variant.
struct PluginFailures {
    trap: IntCounter,
    deadline: IntCounter,
    memory: IntCounter,
    guest: IntCounter,
    contract: IntCounter,
}

/// Mirrors of [`WebhookStats`]; the lock keeps two scrapes from adding the
/// same increase twice.
struct WebhookCounters {
    delivered: IntCounter,
    given_up: IntCounter,
    dropped: IntCounter,
    refused: IntCounter,
    sync: Mutex<()>,
}

/// Mirrors of [`HistoryStats`], kept like [`WebhookCounters`].
struct HistoryCounters {
    depth: IntGauge,
    written: IntCounter,
    dropped: IntCounter,
    write_failures: IntCounter,
    sync: Mutex<()>,
}

/// Mirrors of the runtime's [`CacheStats`], kept like [`WebhookCounters`].
struct PluginCacheCounters {
    hit: IntCounter,
    miss: IntCounter,
    rebuilt: IntCounter,
    sync: Mutex<()>,
}

/// What a scrape reads from storage and the webhook service.
pub struct Snapshot {
    pub live_workers: usize,
    pub jobs: JobCounts,
    pub webhooks: WebhookStats,
    pub history: HistoryStats,
    pub plugin_cache: CacheStats,
    /// Blueprint versions loaded: the current set, and retired ones kept for
    /// the unfinished jobs that started on them.
    pub blueprint_versions: BlueprintVersions,
}

/// How many blueprint versions are loaded, by role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlueprintVersions {
    pub current: usize,
    pub retired: usize,
}

fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> prometheus::Result<M> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    /// Registers every metric, with a zero series for each of `blueprints` so
    /// dashboards see them before their first job. Fails only on an invalid
    /// or duplicate metric definition, i.e. a bug in this module.
    pub fn new<'a>(blueprints: impl IntoIterator<Item = &'a str>) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let r = &registry;
        let counter =
            |name: &str, help: &str, labels: &[&str]| register(r, IntCounterVec::new(Opts::new(name, help), labels)?);
        let histogram = |name: &str, help: &str, label: &str, buckets: &[f64]| {
            register(r, HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), &[label])?)
        };

        let jobs_created = counter("avtomatika_jobs_created_total", "Jobs created, by blueprint.", &["blueprint"])?;
        let jobs_ended = counter(
            "avtomatika_jobs_ended_total",
            "Jobs that reached a terminal status, by blueprint and status.",
            &["blueprint", "status"],
        )?;
        let handler_duration = histogram(
            "avtomatika_handler_duration_seconds",
            "Wall time of one blueprint handler call, by blueprint.",
            "blueprint",
            HANDLER_BUCKETS,
        )?;
        let task_round_trip = histogram(
            "avtomatika_task_round_trip_seconds",
            "Time from a task's dispatch to its accepted result, by task type.",
            "task_type",
            ROUND_TRIP_BUCKETS,
        )?;
        let failures = counter(
            "avtomatika_plugin_failures_total",
            "Handler calls that produced no usable outcome, by kind (trap, deadline, memory, guest, contract).",
            &["kind"],
        )?;
        let plugin_failures = PluginFailures {
            trap: failures.get_metric_with_label_values(&["trap"])?,
            deadline: failures.get_metric_with_label_values(&["deadline"])?,
            memory: failures.get_metric_with_label_values(&["memory"])?,
            guest: failures.get_metric_with_label_values(&["guest"])?,
            contract: failures.get_metric_with_label_values(&["contract"])?,
        };
        let http_requests = counter(
            "avtomatika_http_requests_total",
            "HTTP requests answered, by route template and status code.",
            &["route", "status"],
        )?;
        let live_workers =
            register(r, IntGauge::new("avtomatika_live_workers", "Workers whose liveness has not lapsed.")?)?;
        let worker_sockets =
            register(r, IntGauge::new("avtomatika_worker_sockets", "Worker WebSockets open on this instance.")?)?;
        let jobs = register(
            r,
            IntGaugeVec::new(Opts::new("avtomatika_jobs", "Jobs held by storage, by status."), &["status"])?,
        )?;
        let jobs_queued = register(r, IntGauge::new("avtomatika_jobs_queued", "Jobs queued for the executor.")?)?;
        let deliveries = counter(
            "avtomatika_webhook_deliveries_total",
            "Webhook deliveries by outcome (delivered, given_up, dropped, refused).",
            &["outcome"],
        )?;
        let webhooks = WebhookCounters {
            delivered: deliveries.get_metric_with_label_values(&["delivered"])?,
            given_up: deliveries.get_metric_with_label_values(&["given_up"])?,
            dropped: deliveries.get_metric_with_label_values(&["dropped"])?,
            refused: deliveries.get_metric_with_label_values(&["refused"])?,
            sync: Mutex::new(()),
        };
        let history = HistoryCounters {
            depth: register(
                r,
                IntGauge::new("avtomatika_history_buffer_depth", "History events waiting to be written.")?,
            )?,
            written: register(
                r,
                IntCounter::new("avtomatika_history_events_written_total", "History events written to the database.")?,
            )?,
            dropped: register(
                r,
                IntCounter::new(
                    "avtomatika_history_events_dropped_total",
                    "History events dropped because the buffer was full (HISTORY_BUFFER_SIZE).",
                )?,
            )?,
            write_failures: register(
                r,
                IntCounter::new(
                    "avtomatika_history_write_failures_total",
                    "Failed attempts at writing a batch of history events (each is retried).",
                )?,
            )?,
            sync: Mutex::new(()),
        };
        let cache = counter(
            "avtomatika_plugin_cache_total",
            "Blueprint component loads by plugin cache result (hit, miss, rebuilt); none while PLUGIN_CACHE_DIR is off.",
            &["result"],
        )?;
        let plugin_cache = PluginCacheCounters {
            hit: cache.get_metric_with_label_values(&["hit"])?,
            miss: cache.get_metric_with_label_values(&["miss"])?,
            rebuilt: cache.get_metric_with_label_values(&["rebuilt"])?,
            sync: Mutex::new(()),
        };
        let reloads = counter(
            "avtomatika_blueprint_reloads_total",
            "Blueprint set reloads (the admin endpoint or the directory watch), by result (applied, refused).",
            &["result"],
        )?;
        let reloads_applied = reloads.get_metric_with_label_values(&["applied"])?;
        let reloads_refused = reloads.get_metric_with_label_values(&["refused"])?;
        let blueprint_versions = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "avtomatika_blueprint_versions",
                    "Blueprint versions loaded, by state: current, or retired but kept for unfinished jobs.",
                ),
                &["state"],
            )?,
        )?;
        for blueprint in blueprints {
            jobs_created.get_metric_with_label_values(&[blueprint])?;
            handler_duration.get_metric_with_label_values(&[blueprint])?;
        }
        Ok(Self {
            registry,
            jobs_created,
            jobs_ended,
            handler_duration,
            task_round_trip,
            plugin_failures,
            http_requests,
            live_workers,
            worker_sockets,
            jobs,
            jobs_queued,
            webhooks,
            history,
            plugin_cache,
            reloads_applied,
            reloads_refused,
            blueprint_versions,
        })
    }

    /// A reload of the blueprint set was applied, or refused (the running
    /// set stayed).
    pub fn blueprint_reload(&self, applied: bool) {
        if applied { &self.reloads_applied } else { &self.reloads_refused }.inc();
    }

    pub fn job_created(&self, blueprint: &str) {
        self.jobs_created.with_label_values(&[blueprint]).inc();
    }

    pub fn job_ended(&self, blueprint: &str, status: JobStatus) {
        self.jobs_ended.with_label_values(&[blueprint, status.as_str()]).inc();
    }

    /// One handler call of `blueprint` took `elapsed`, whatever its outcome.
    pub fn handler_ran(&self, blueprint: &str, elapsed: Duration) {
        self.handler_duration.with_label_values(&[blueprint]).observe(elapsed.as_secs_f64());
    }

    pub fn plugin_failed(&self, error: &HandlerError) {
        let counter = match error {
            HandlerError::Trap(_) => &self.plugin_failures.trap,
            // Both are deadlines; one label keeps the series' cardinality.
            HandlerError::Deadline(_) | HandlerError::WallClock(_) => &self.plugin_failures.deadline,
            HandlerError::Memory(_) => &self.plugin_failures.memory,
            HandlerError::Guest(_) => &self.plugin_failures.guest,
            HandlerError::Contract(_) => &self.plugin_failures.contract,
        };
        counter.inc();
    }

    /// A result for a task of `task_type` was accepted `elapsed` after its dispatch.
    pub fn task_round_trip(&self, task_type: &str, elapsed: Duration) {
        self.task_round_trip.with_label_values(&[task_type]).observe(elapsed.as_secs_f64());
    }

    /// One HTTP request to `route` (a path template) was answered with `status`.
    /// A worker socket opened (`1`) or closed (`-1`).
    pub fn worker_socket(&self, change: i64) {
        self.worker_sockets.add(change);
    }

    pub fn http_request(&self, route: &str, status: &str) {
        self.http_requests.with_label_values(&[route, status]).inc();
    }

    /// Renders every metric in the text exposition format, after setting the
    /// scrape-time values from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> prometheus::Result<String> {
        self.live_workers.set(gauge_value(snapshot.live_workers as u64));
        self.jobs_queued.set(gauge_value(snapshot.jobs.queued));
        for status in JobStatus::ALL {
            let count = snapshot.jobs.by_status.get(&status).copied().unwrap_or(0);
            self.jobs.with_label_values(&[status.as_str()]).set(gauge_value(count));
        }
        self.webhooks.catch_up(&snapshot.webhooks);
        self.history.catch_up(&snapshot.history);
        self.plugin_cache.catch_up(&snapshot.plugin_cache);
        let versions = snapshot.blueprint_versions;
        self.blueprint_versions.with_label_values(&["current"]).set(gauge_value(versions.current as u64));
        self.blueprint_versions.with_label_values(&["retired"]).set(gauge_value(versions.retired as u64));
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

impl WebhookCounters {
    /// Adds to each counter what the webhook service counted since the last scrape.
    fn catch_up(&self, stats: &WebhookStats) {
        let _guard = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        add_missing(&[
            (&self.delivered, stats.delivered),
            (&self.given_up, stats.given_up),
            (&self.dropped, stats.dropped),
            (&self.refused, stats.refused),
        ]);
    }
}

impl HistoryCounters {
    fn catch_up(&self, stats: &HistoryStats) {
        let _guard = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        self.depth.set(gauge_value(stats.depth));
        add_missing(&[
            (&self.written, stats.written),
            (&self.dropped, stats.dropped),
            (&self.write_failures, stats.write_failures),
        ]);
    }
}

impl PluginCacheCounters {
    fn catch_up(&self, stats: &CacheStats) {
        let _guard = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        add_missing(&[(&self.hit, stats.hits), (&self.miss, stats.misses), (&self.rebuilt, stats.rebuilt)]);
    }
}

/// Raises each counter to its service's running total.
fn add_missing(counters: &[(&IntCounter, u64)]) {
    for (counter, total) in counters {
        counter.inc_by(total.saturating_sub(counter.get()));
    }
}

fn gauge_value(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics_and_scrape_values() {
        let metrics = Metrics::new(["hello"]).unwrap();
        metrics.job_created("hello");
        metrics.job_ended("hello", JobStatus::Finished);
        metrics.plugin_failed(&HandlerError::Deadline(Duration::from_millis(5)));
        metrics.http_request("/api/v1/jobs/{job_id}", "200");
        let jobs = JobCounts { queued: 3, by_status: [(JobStatus::Running, 2)].into() };
        let webhooks = WebhookStats { delivered: 4, given_up: 1, dropped: 0, refused: 2, attempts: 6 };
        let plugin_cache = CacheStats { hits: 2, misses: 1, rebuilt: 0 };
        let blueprint_versions = BlueprintVersions { current: 3, retired: 1 };
        let snapshot = Snapshot {
            live_workers: 1,
            jobs,
            webhooks,
            history: HistoryStats::default(),
            plugin_cache,
            blueprint_versions,
        };
        metrics.blueprint_reload(true);
        metrics.blueprint_reload(false);
        metrics.blueprint_reload(false);
        let text = metrics.render(&snapshot).unwrap();
        for line in [
            r#"avtomatika_jobs_created_total{blueprint="hello"} 1"#,
            r#"avtomatika_jobs_ended_total{blueprint="hello",status="finished"} 1"#,
            r#"avtomatika_plugin_failures_total{kind="deadline"} 1"#,
            r#"avtomatika_plugin_failures_total{kind="trap"} 0"#,
            r#"avtomatika_http_requests_total{route="/api/v1/jobs/{job_id}",status="200"} 1"#,
            r#"avtomatika_handler_duration_seconds_count{blueprint="hello"} 0"#,
            "avtomatika_live_workers 1",
            "avtomatika_jobs_queued 3",
            r#"avtomatika_jobs{status="running"} 2"#,
            r#"avtomatika_jobs{status="pending"} 0"#,
            r#"avtomatika_webhook_deliveries_total{outcome="delivered"} 4"#,
            r#"avtomatika_webhook_deliveries_total{outcome="refused"} 2"#,
            r#"avtomatika_plugin_cache_total{result="hit"} 2"#,
            r#"avtomatika_plugin_cache_total{result="miss"} 1"#,
            r#"avtomatika_plugin_cache_total{result="rebuilt"} 0"#,
            r#"avtomatika_blueprint_reloads_total{result="applied"} 1"#,
            r#"avtomatika_blueprint_reloads_total{result="refused"} 2"#,
            r#"avtomatika_blueprint_versions{state="current"} 3"#,
            r#"avtomatika_blueprint_versions{state="retired"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // A second scrape does not count the same deliveries again.
        let text = metrics.render(&snapshot).unwrap();
        assert!(text.contains(r#"avtomatika_webhook_deliveries_total{outcome="delivered"} 4"#), "{text}");
    }
}
