//! `GET /_public/metrics` end to end: jobs run through a real worker and a
//! trapping plugin, then the scrape is read with a Prometheus text parser.

use avtomatika_tests::{Auth, TestServer, one_busy_slot, test_config};
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;

/// Scrapes the server (no token); returns the text and its parse.
async fn scrape(server: &TestServer) -> (String, Scrape) {
    let answer = server.send(reqwest::Method::GET, "/_public/metrics", Auth::None, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.content_type.as_deref(), Some("text/plain; version=0.0.4"), "{answer:?}");
    let scrape = Scrape::parse(answer.text.lines().map(|line| Ok(line.to_owned()))).expect("the scrape parses");
    (answer.text, scrape)
}

/// `avtomatika_http_requests_total` for `route` and `status`, read from the
/// text: `prometheus-parse` skips samples whose label values contain `}`
/// (its line pattern stops at the first one), and route templates do.
fn requests(text: &str, route: &str, status: &str) -> Option<f64> {
    let prefix = format!(r#"avtomatika_http_requests_total{{route="{route}",status="{status}"}} "#);
    text.lines().find_map(|line| line.strip_prefix(&prefix)).map(|v| v.parse().expect("a number"))
}

/// The sample of `metric` whose labels include all of `labels`.
fn find<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(name, value)| s.labels.get(name) == Some(*value)))
}

/// The value of a counter or gauge; panics (with the samples) when it is missing.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(scrape, metric, labels).map(|s| &s.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        other => panic!("{metric}{labels:?}: {other:?} in {:#?}", scrape.samples),
    }
}

/// A histogram's observation count (its `+Inf` bucket).
fn histogram_count(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(scrape, metric, labels).map(|s| &s.value) {
        Some(Value::Histogram(buckets)) => {
            buckets.iter().find(|b| b.less_than == f64::INFINITY).map_or(0.0, |b| b.count)
        }
        other => panic!("{metric}{labels:?}: {other:?} in {:#?}", scrape.samples),
    }
}

#[tokio::test]
async fn a_job_run_by_a_worker_shows_in_the_scrape() {
    let (config, _dir) = one_busy_slot(test_config());
    let server = TestServer::start_with(config).await;
    let worker = server.worker("greeter");
    worker.register(&["greet"]).await;
    worker.run_hello("Ada").await;
    let unknown = server.send(reqwest::Method::GET, "/no/such/path", Auth::None, None).await;
    assert_eq!(unknown.status, 404);

    let (text, scrape) = scrape(&server).await;
    let hello = [("blueprint", "hello")];
    assert_eq!(value(&scrape, "avtomatika_jobs_created_total", &hello), 1.0);
    assert_eq!(value(&scrape, "avtomatika_jobs_created_total", &[("blueprint", "misbehave")]), 0.0);
    assert_eq!(value(&scrape, "avtomatika_jobs_ended_total", &[("blueprint", "hello"), ("status", "finished")]), 1.0);
    assert!(histogram_count(&scrape, "avtomatika_handler_duration_seconds", &hello) >= 1.0);
    assert_eq!(histogram_count(&scrape, "avtomatika_task_round_trip_seconds", &[("task_type", "greet")]), 1.0);
    assert_eq!(requests(&text, "/api/{version}/{endpoint}", "202"), Some(1.0), "{text}");
    assert!(requests(&text, "/api/v1/jobs/{job_id}", "200").is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(requests(&text, "/_worker/tasks/result", "200"), Some(1.0), "{text}");
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(value(&scrape, "avtomatika_http_requests_total", &unmatched), 1.0);
    assert_eq!(value(&scrape, "avtomatika_live_workers", &[]), 1.0);
    assert_eq!(value(&scrape, "avtomatika_jobs", &[("status", "finished")]), 1.0);
    assert_eq!(value(&scrape, "avtomatika_jobs_queued", &[]), 0.0);
    assert_eq!(value(&scrape, "avtomatika_webhook_deliveries_total", &[("outcome", "delivered")]), 0.0);
    assert_eq!(value(&scrape, "avtomatika_plugin_failures_total", &[("kind", "trap")]), 0.0);
    server.stop().await;
}

#[tokio::test]
async fn a_trapping_handler_counts_as_a_plugin_failure() {
    // One attempt (`job_max_retries` 0): the first trap quarantines the job.
    let (config, _dir) = one_busy_slot(test_config());
    let server = TestServer::start_with(config).await;
    let job_id = server.create_job("/api/v1/jobs/misbehave", json!({"mode": "trap"})).await;
    server.wait_for_status(&job_id, "quarantined").await;

    let (_, scrape) = scrape(&server).await;
    assert_eq!(value(&scrape, "avtomatika_plugin_failures_total", &[("kind", "trap")]), 1.0);
    assert_eq!(value(&scrape, "avtomatika_plugin_failures_total", &[("kind", "deadline")]), 0.0);
    let quarantined = [("blueprint", "misbehave"), ("status", "quarantined")];
    assert_eq!(value(&scrape, "avtomatika_jobs_ended_total", &quarantined), 1.0);
    assert!(histogram_count(&scrape, "avtomatika_handler_duration_seconds", &[("blueprint", "misbehave")]) >= 1.0);
    server.stop().await;
}
