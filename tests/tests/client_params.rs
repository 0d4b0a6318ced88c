//! A client's configuration reaches the blueprint: `clients.toml`'s name,
//! plan and every other field arrive in the handler's `job-context.client`,
//! as do the keys of a `params` table (the Python orchestrator's form).

use std::io::Write;

use avtomatika_tests::{TestServer, test_config};
use serde_json::{Value, json};

/// Runs a `misbehave` job in mode `ok` as the client holding `token`, to its end.
async fn finished_job(server: &TestServer, token: &str) -> Value {
    let response = server
        .http
        .post(server.url("/api/v1/jobs/misbehave"))
        .header("X-Avtomatika-Token", token)
        .json(&json!({"mode": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
    loop {
        let job: Value = server
            .http
            .get(server.url(&format!("/api/v1/jobs/{job_id}")))
            .header("X-Avtomatika-Token", token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "finished" {
            return job;
        }
        assert!(job["status"] != "quarantined", "{job:#}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn client_name_plan_and_params_reach_the_handler() {
    let blueprints = tempfile::tempdir().unwrap();
    std::fs::copy(avtomatika_plugins::MISBEHAVE_COMPONENT, blueprints.path().join("misbehave.wasm")).unwrap();
    let mut clients = tempfile::NamedTempFile::new().unwrap();
    write!(
        clients,
        r#"
        [acme]
        token = "acme-token-1f9e"
        plan = "premium"
        monthly_attempts = 10
        languages = ["en", "de"]
        limits = {{ daily = 5, burst = 1.5 }}
        priority_support = true
        "#
    )
    .unwrap();
    let mut config = test_config();
    config.blueprints_dir = Some(blueprints.path().to_owned());
    config.clients_config_path = Some(clients.path().to_owned());
    let server = TestServer::start_with(config).await;

    let job = finished_job(&server, "acme-token-1f9e").await;
    assert_eq!(job["client"], "acme");
    assert_eq!(
        job["state_history"]["client"],
        json!({
            "name": "acme",
            "plan": "premium",
            "params": {"languages": ["en", "de"], "limits": {"daily": 5, "burst": 1.5}, "priority_support": true},
        })
    );
    assert!(!job.to_string().contains("acme-token-1f9e"), "the token never reaches the job");
    server.stop().await;
}

/// The published example application's `example_clients.toml` nests the
/// parameters under `params`; the blueprint sees them as its own keys.
#[tokio::test]
async fn a_params_table_reaches_the_handler_as_params() {
    let blueprints = tempfile::tempdir().unwrap();
    std::fs::copy(avtomatika_plugins::MISBEHAVE_COMPONENT, blueprints.path().join("misbehave.wasm")).unwrap();
    let mut clients = tempfile::NamedTempFile::new().unwrap();
    write!(
        clients,
        r#"
[limited-client]
token = "limited-access-token"
plan = "basic"
params = {{ languages = ["en"], features = ["basic_transcode"] }}
monthly_attempts = 2
"#
    )
    .unwrap();
    let mut config = test_config();
    config.blueprints_dir = Some(blueprints.path().to_owned());
    config.clients_config_path = Some(clients.path().to_owned());
    let server = TestServer::start_with(config).await;

    let job = finished_job(&server, "limited-access-token").await;
    assert_eq!(
        job["state_history"]["client"],
        json!({
            "name": "limited-client",
            "plan": "basic",
            "params": {"languages": ["en"], "features": ["basic_transcode"]},
        })
    );
    server.stop().await;
}
