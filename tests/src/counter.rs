//! What every port of the Rust `counter` example (`counter-js`,
//! `counter-py`) must do through the real server: the same histories the
//! Rust one gives in `data_stores.rs`, atomic increments under concurrent
//! jobs, and a store request the host refuses failing the handler with the
//! host's reason rather than trapping.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::TestServer;

const WAIT: Duration = Duration::from_secs(60);
const TERMINAL: [&str; 5] = ["finished", "failed", "cancelled", "error", "quarantined"];

/// Runs one job at `endpoint` to its end; returns the job.
async fn run(server: &TestServer, endpoint: &str, body: Value) -> Value {
    let job_id = server.create_job(endpoint, body).await;
    server.wait_for(&job_id, WAIT, |j| TERMINAL.iter().any(|t| j["status"] == *t)).await
}

/// Runs one visit to its end; returns its state history.
async fn visit(server: &TestServer, endpoint: &str, body: Value) -> Value {
    let job = run(server, endpoint, body).await;
    assert_eq!(
        (job["status"].as_str(), job["current_state"].as_str()),
        (Some("finished"), Some("finished")),
        "{job:#}"
    );
    job["state_history"].clone()
}

/// Checks the counter blueprint at `endpoint` on a server whose stores it has
/// not used yet, under `JOB_MAX_RETRIES` = 1.
pub async fn behaves_like_the_rust_counter(server: &TestServer, endpoint: &str) {
    let expected = [
        (json!({"page": "about", "name": "Ada"}), json!({"count": 1, "previous_visitor": null})),
        (json!({"page": "about", "name": "Bob"}), json!({"count": 2, "previous_visitor": "Ada"})),
        // `name` defaults to `anonymous`, `page` to `home`.
        (json!({"page": "about"}), json!({"count": 3, "previous_visitor": "Bob"})),
        (json!({}), json!({"count": 1, "previous_visitor": "anonymous"})),
        (json!({"page": "about", "name": "Cy"}), json!({"count": 4, "previous_visitor": "anonymous"})),
        // Nothing to delete on a page never visited; a reset restarts at 1.
        (
            json!({"page": "fresh", "reset": true, "name": "Dee"}),
            json!({"deleted": false, "count": 1, "previous_visitor": "Cy"}),
        ),
        (
            json!({"page": "about", "reset": true, "name": "Eve"}),
            json!({"deleted": true, "count": 1, "previous_visitor": "Dee"}),
        ),
    ];
    for (body, history) in expected {
        assert_eq!(visit(server, endpoint, body.clone()).await, history, "{endpoint} {body}");
    }

    // 12 jobs on one page at once: every increment counts, none twice.
    let jobs = (0..12).map(|i| visit(server, endpoint, json!({"page": "launch", "name": format!("v{i}")})));
    let mut counts: Vec<i64> = join_all(jobs).await.iter().map(|h| h["count"].as_i64().unwrap_or(-1)).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=12).collect::<Vec<_>>(), "{endpoint}");

    // An empty page is an empty store key, which the host refuses: the
    // handler fails with the host's reason, and retries run out.
    let job = run(server, endpoint, json!({"page": ""})).await;
    assert_eq!(job["status"], "quarantined", "{job:#}");
    let message = job["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("invalid") && message.contains("key"), "{endpoint}: {message:?}");
    // The stores still serve the next job.
    assert_eq!(visit(server, endpoint, json!({"page": "about"})).await["count"], 2, "{endpoint}");
}
