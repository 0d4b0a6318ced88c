//! Data stores through the real server and the `counter` example: values
//! outlive jobs, keys are separate, `increment` is atomic under concurrent
//! jobs, and a refused request reaches the blueprint as an error it can
//! report (`misbehave`'s `store-bad` mode).

use std::time::Duration;

use avtomatika_tests::config::Config;
use avtomatika_tests::{TestServer, blueprints_dir, test_config};
use futures::future::join_all;
use serde_json::{Value, json};

const COUNTER: &str = "/api/v1/jobs/counter";
const WAIT: Duration = Duration::from_secs(30);

/// Runs one counter job to its end; returns its state history.
async fn visit(server: &TestServer, body: Value) -> Value {
    let job_id = server.create_job(COUNTER, body).await;
    let job = server.wait_for(&job_id, WAIT, |j| !matches!(j["status"].as_str(), Some("pending" | "running"))).await;
    assert_eq!(
        (job["status"].as_str(), job["current_state"].as_str()),
        (Some("finished"), Some("finished")),
        "{job:#}"
    );
    job["state_history"].clone()
}

#[tokio::test]
async fn counts_grow_across_jobs_and_each_visitor_sees_the_previous_one() {
    let server = TestServer::start().await;
    let expected = [
        (json!({"page": "about", "name": "Ada"}), json!({"count": 1, "previous_visitor": null})),
        (json!({"page": "about", "name": "Bob"}), json!({"count": 2, "previous_visitor": "Ada"})),
        (json!({"page": "about", "name": "Cy"}), json!({"count": 3, "previous_visitor": "Bob"})),
        // `name` defaults to `anonymous`.
        (json!({"page": "about"}), json!({"count": 4, "previous_visitor": "Cy"})),
        (json!({"page": "about", "name": "Dee"}), json!({"count": 5, "previous_visitor": "anonymous"})),
    ];
    for (body, history) in expected {
        assert_eq!(visit(&server, body.clone()).await, history, "{body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn pages_are_counted_apart() {
    let server = TestServer::start().await;
    let visits = [("about", 1), ("contact", 1), ("about", 2), ("home", 1), ("about", 3), ("contact", 2)];
    for (page, count) in visits {
        let history = visit(&server, json!({"page": page})).await;
        assert_eq!(history["count"], count, "page {page}: {history}");
    }
    // `page` defaults to `home`.
    assert_eq!(visit(&server, json!({})).await["count"], 2);
    // A page named like the other store's key is just a page.
    assert_eq!(visit(&server, json!({"page": "last_visitor", "name": "Eve"})).await["count"], 1);
    let history = visit(&server, json!({"page": "about", "name": "Fay"})).await;
    assert_eq!(history, json!({"count": 4, "previous_visitor": "Eve"}));
    server.stop().await;
}

#[tokio::test]
async fn reset_deletes_the_counter() {
    let server = TestServer::start().await;
    // Nothing to delete on a page never visited.
    let history = visit(&server, json!({"page": "fresh", "reset": true})).await;
    assert_eq!((history["deleted"].clone(), history["count"].clone()), (json!(false), json!(1)), "{history}");

    for count in [1, 2, 3] {
        assert_eq!(visit(&server, json!({"page": "busy"})).await["count"], count);
    }
    let history = visit(&server, json!({"page": "busy", "reset": true})).await;
    assert_eq!((history["deleted"].clone(), history["count"].clone()), (json!(true), json!(1)), "{history}");
    assert_eq!(visit(&server, json!({"page": "busy"})).await["count"], 2);
    // Without `reset`, nothing says `deleted`; other pages were not touched.
    let history = visit(&server, json!({"page": "fresh"})).await;
    assert_eq!(history["count"], 2, "{history}");
    assert!(history.get("deleted").is_none(), "{history}");
    server.stop().await;
}

/// 30 jobs on one page at once: every increment counts, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_increment_atomically() {
    const JOBS: i64 = 30;
    let server = TestServer::start().await;
    let names: Vec<String> = (0..JOBS).map(|i| format!("visitor-{i}")).collect();
    let histories = join_all(names.iter().map(|name| visit(&server, json!({"page": "launch", "name": name})))).await;

    let mut counts: Vec<i64> = histories.iter().map(|h| h["count"].as_i64().expect("a count")).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=JOBS).collect::<Vec<_>>(), "{histories:#?}");
    for history in &histories {
        let previous = &history["previous_visitor"];
        assert!(previous.is_null() || names.iter().any(|n| previous == n), "{history}");
    }
    assert_eq!(visit(&server, json!({"page": "launch"})).await["count"], JOBS + 1);
    server.stop().await;
}

/// A request the host refuses (an empty store name) comes back to the
/// blueprint as a store error, not a trap: `misbehave` fails its job with it.
#[tokio::test]
async fn a_refused_store_request_reaches_the_blueprint_as_an_error() {
    let dir = blueprints_dir(&[
        ("misbehave.wasm", avtomatika_plugins::MISBEHAVE_COMPONENT),
        ("counter.wasm", avtomatika_plugins::COUNTER_COMPONENT),
    ]);
    let config = Config { blueprints_dir: Some(dir.path().to_owned()), job_max_retries: 1, ..test_config() };
    let server = TestServer::start_with(config).await;

    let job_id = server.create_job("/api/v1/jobs/misbehave", json!({"mode": "store-bad"})).await;
    let job = server.wait_for(&job_id, WAIT, |j| !matches!(j["status"].as_str(), Some("pending" | "running"))).await;
    assert_eq!(job["status"], "failed", "failed by the blueprint, not quarantined by the host: {job:#}");
    assert_eq!(job["current_state"], "start", "{job:#}");
    assert_eq!(
        job["error_message"], "store-bad: data store request refused: the store name is empty",
        "the message names the refused request: {job:#}"
    );
    assert_eq!(job["handler_failures"], 0, "no handler call failed: {job:#}");

    // The stores still serve the next job.
    assert_eq!(visit(&server, json!({"page": "after"})).await["count"], 1);
    server.stop().await;
}

/// Review finding 13: `counter` keeps what a client sent in client-scoped
/// stores, so through HTTP client B never reads client A's visitor name,
/// and each client counts its own pages; A's own later jobs still see A's.
#[tokio::test]
async fn one_clients_values_never_reach_another_client() {
    use avtomatika_tests::Auth;
    const ALICE: &str = "alice-token-5e1b";
    const BOB: &str = "bob-token-08ac";
    let clients = tempfile::tempdir().expect("a directory for clients.toml");
    let clients_file = clients.path().join("clients.toml");
    std::fs::write(&clients_file, format!("[alice]\ntoken = \"{ALICE}\"\n\n[bob]\ntoken = \"{BOB}\"\n"))
        .expect("write clients.toml");
    let server = TestServer::start_with(Config { clients_config_path: Some(clients_file), ..test_config() }).await;
    let visit_as = async |token: &str, body: Value| {
        let created = server.send(reqwest::Method::POST, COUNTER, Auth::Client(token), Some(&body.to_string())).await;
        assert_eq!(created.status, 202, "{created:?}");
        let job_id = created.json()["job_id"].as_str().expect("job_id").to_owned();
        let path = format!("/api/v1/jobs/{job_id}");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let job = server.send(reqwest::Method::GET, &path, Auth::Client(token), None).await.json();
            if !matches!(job["status"].as_str(), Some("pending" | "running")) {
                assert_eq!(job["status"], "finished", "{job:#}");
                return job["state_history"].clone();
            }
            assert!(std::time::Instant::now() < deadline, "{job:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    let secret = "alice: meeting with ACME re merger";
    assert_eq!(
        visit_as(ALICE, json!({"page": "p", "name": secret})).await,
        json!({"count": 1, "previous_visitor": null})
    );
    assert_eq!(
        visit_as(BOB, json!({"page": "p", "name": "bob"})).await,
        json!({"count": 1, "previous_visitor": null}),
        "bob must not see alice's visit"
    );
    assert_eq!(visit_as(BOB, json!({"page": "p"})).await, json!({"count": 2, "previous_visitor": "bob"}));
    assert_eq!(visit_as(ALICE, json!({"page": "p"})).await, json!({"count": 2, "previous_visitor": secret}));
    server.stop().await;
}
