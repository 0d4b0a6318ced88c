//! `PLUGIN_CACHE_DIR` end to end: two servers started one after the other on
//! the same cache directory; the second deserializes what the first compiled,
//! shows it in its metrics, and runs jobs with it.

use std::path::Path;

use avtomatika_tests::config::Config;
use avtomatika_tests::{TestServer, blueprints_dir, test_config};

/// `avtomatika_plugin_cache_total{result="…"}` from a scrape.
async fn cache_metric(server: &TestServer, result: &str) -> f64 {
    server.metric(&format!(r#"avtomatika_plugin_cache_total{{result="{result}"}}"#)).await
}

/// Runs one `hello` job through a worker to `finished`.
async fn run_hello(server: &TestServer) {
    let worker = server.worker("greeter");
    worker.register(&["greet"]).await;
    worker.run_hello("Ada").await;
}

fn entries(dir: &Path) -> Vec<(String, std::time::SystemTime)> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .expect("the cache directory exists")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().modified().unwrap())
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_restart_on_the_same_cache_directory_deserializes_instead_of_compiling() {
    let blueprints = blueprints_dir(&[
        ("hello.wasm", avtomatika_plugins::HELLO_COMPONENT),
        ("misbehave.wasm", avtomatika_plugins::MISBEHAVE_COMPONENT),
    ]);
    let cache = tempfile::tempdir().unwrap();
    // Created by the server, as a fresh ~/.cache/avtomatika would be.
    let cache_dir = cache.path().join("avtomatika");
    let config = || Config {
        blueprints_dir: Some(blueprints.path().to_owned()),
        plugin_cache_dir: Some(cache_dir.clone()),
        ..test_config()
    };

    let first = TestServer::start_with(config()).await;
    assert_eq!(cache_metric(&first, "miss").await, 2.0);
    assert_eq!(cache_metric(&first, "hit").await, 0.0);
    run_hello(&first).await;
    first.stop().await;
    let written = entries(&cache_dir);
    assert_eq!(written.len(), 2, "one entry per component: {written:?}");
    assert!(written.iter().all(|(name, _)| name.ends_with(".cwasm")), "{written:?}");

    let second = TestServer::start_with(config()).await;
    assert_eq!(cache_metric(&second, "hit").await, 2.0);
    assert_eq!(cache_metric(&second, "miss").await, 0.0);
    assert_eq!(cache_metric(&second, "rebuilt").await, 0.0);
    run_hello(&second).await;
    second.stop().await;
    assert_eq!(entries(&cache_dir), written, "hits leave the entries as they were");
}

#[tokio::test]
async fn without_a_cache_directory_nothing_is_counted() {
    let server = TestServer::start_with(Config { plugin_cache_dir: None, ..test_config() }).await;
    assert_eq!(cache_metric(&server, "hit").await + cache_metric(&server, "miss").await, 0.0);
}
