//! Avtomatika's published example application (`tests/fixtures/full-example/`,
//! its files unchanged): the server starts with its `example_clients.toml`
//! and `example_workers.toml`, a worker signs in with the token that file
//! gives it, and the example's own `client.py` creates a job with
//! `X-Client-Token`, watches its progress bar fill and sees it finish.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use avtomatika_tests::config::Config;
use avtomatika_tests::python::{PythonWorker, SDK_NEWEST, sdk_python};
use avtomatika_tests::{TestServer, blueprints_dir, test_config};
use tokio::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/full-example").join(name)
}

#[tokio::test]
async fn the_example_client_sees_its_job_progress_and_finish() {
    let python = sdk_python(SDK_NEWEST);
    let dir = blueprints_dir(&[("routed.wasm", avtomatika_plugins::ROUTED_COMPONENT)]);
    let server = TestServer::start_with(Config {
        blueprints_dir: Some(dir.path().to_owned()),
        clients_config_path: Some(fixture("example_clients.toml")),
        workers_config_path: Some(fixture("example_workers.toml")),
        ..test_config()
    })
    .await;
    // `cpu-worker-01` with the token example_workers.toml gives it.
    let env =
        [("WORKER_ENABLE_WEBSOCKETS", "true".to_owned()), ("WORKER_TOKEN", "super-secret-cpu-worker-token".to_owned())];
    let mut worker = PythonWorker::spawn_sdk(SDK_NEWEST, &server, "cpu-worker-01", "live_worker.py", &env);

    // The client as published; only its documented variables point it here.
    // (`routed` dispatches a `render` task for a body without `task_type`.)
    let client = Command::new(&python)
        .arg(fixture("client.py"))
        .env("ORCHESTRATOR_URL", &server.base)
        .env("BLUEPRINT_NAME", "routed")
        .env("WEBHOOK_URL", "https://webhook.example.invalid/webhook")
        .env_remove("CLIENT_TOKEN")
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .expect("the client finished within a minute")
        .expect("the client ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    worker.assert_running();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("Job created!"), "{stdout}");
    for seen in ["25.0%", "50.0%", "100.0%", "rendering: 50 %"] {
        assert!(stdout.contains(seen), "the progress bar never showed {seen}:\n{stdout}");
    }
    assert!(stdout.contains("Final Status: finished"), "{stdout}");
    assert!(stdout.contains("Result: rendered and analysed"), "{stdout}");
    drop(worker);
    server.stop().await;
}
