//! Blueprint versions and hot reload through the real HTTP API: a job
//! finishes on the version it started on while new jobs get the newest, a
//! retired version is unloaded once no job needs it, creation endpoints
//! follow the loaded set, a set that does not load (or drops a scheduled
//! blueprint) is refused whole, and
//! `BLUEPRINTS_WATCH_INTERVAL_SECONDS` picks up a changed directory.

use std::path::Path;
use std::time::{Duration, Instant};

use avtomatika_plugins::{HELLO_COMPONENT, PIPELINE_COMPONENT, VERSIONED_V1_COMPONENT, VERSIONED_V2_COMPONENT};
use avtomatika_tests::config::Config;
use avtomatika_tests::{Answer, Auth, CLIENT_TOKEN, TestServer, blueprints_dir, test_config};
use reqwest::Method;
use serde_json::{Value, json};

fn config_for(dir: &Path) -> Config {
    Config { blueprints_dir: Some(dir.to_owned()), ..test_config() }
}

async fn reload(server: &TestServer) -> Answer {
    server.send(Method::POST, "/api/v1/admin/reload-blueprints", Auth::Client(CLIENT_TOKEN), None).await
}

fn names(report: &Value, list: &str) -> Vec<String> {
    report[list]
        .as_array()
        .map_or_else(Vec::new, |l| l.iter().map(|b| b["name"].as_str().unwrap_or_default().to_owned()).collect())
}

fn copy(source: &str, dir: &Path, name: &str) {
    std::fs::copy(source, dir.join(name)).unwrap_or_else(|e| panic!("copying {source}: {e}"));
}

#[tokio::test]
async fn a_running_job_finishes_on_its_version_while_new_jobs_get_the_newest() {
    let dir = blueprints_dir(&[("versioned.wasm", VERSIONED_V1_COMPONENT)]);
    let server = TestServer::start_with(config_for(dir.path())).await;
    let worker = server.worker("w1");
    worker.register(&["work"]).await;

    let old = server.create_job("/api/v1/jobs/versioned", json!({ "wait": true })).await;
    server.wait_for_status(&old, "waiting_for_worker").await;
    let v1 = server.job(&old).await["blueprint_version"].as_str().expect("job records its version").to_owned();
    assert_eq!(v1.len(), 64, "the version is the component's SHA-256: {v1}");

    copy(VERSIONED_V2_COMPONENT, dir.path(), "versioned.wasm");
    let answer = reload(&server).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let report = answer.json();
    assert_eq!(report["status"], "blueprints_reloaded");
    assert_eq!(names(&report, "updated"), ["versioned"], "{report:#}");
    let v2 = report["updated"][0]["version"].as_str().expect("new version").to_owned();
    assert_ne!(v1, v2);

    let new = server.create_job("/api/v1/jobs/versioned", json!({})).await;
    let new = server.wait_for_status(&new, "finished").await;
    assert_eq!(new["blueprint_version"], v2.as_str());
    assert_eq!(new["state_history"]["ran_on"], "v2");

    // The old job's remaining handler runs on v1, which is retired but kept.
    assert_eq!(server.orchestrator.runtime.retired_versions(), [("versioned".to_owned(), v1.clone())]);
    assert_eq!(server.metric(r#"avtomatika_blueprint_versions{state="retired"}"#).await, 1.0);
    assert_eq!(server.metric(r#"avtomatika_blueprint_versions{state="current"}"#).await, 1.0);
    assert!(server.orchestrator.unload_retired_versions_after(Duration::ZERO).await.is_empty(), "v1 is in use");
    let task = worker.next_task(Duration::from_secs(5)).await;
    assert_eq!(task["job_id"], old.as_str());
    worker.post_result(&task, json!({ "status": "success" })).await;
    let old = server.wait_for_status(&old, "finished").await;
    assert_eq!(old["state_history"]["ran_on"], "v1", "{old:#}");
    assert_eq!(old["blueprint_version"], v1.as_str());

    // No job needs v1 any more: the sweep unloads it.
    let unloaded = server.orchestrator.unload_retired_versions_after(Duration::ZERO).await;
    assert_eq!(unloaded, [("versioned".to_owned(), v1)]);
    assert!(server.orchestrator.runtime.retired_versions().is_empty());
    assert_eq!(server.metric(r#"avtomatika_blueprint_versions{state="retired"}"#).await, 0.0);
    server.stop().await;
}

#[tokio::test]
async fn retired_versions_stay_for_the_grace_period() {
    let dir = blueprints_dir(&[("versioned.wasm", VERSIONED_V1_COMPONENT)]);
    let server = TestServer::start_with(config_for(dir.path())).await;
    copy(VERSIONED_V2_COMPONENT, dir.path(), "versioned.wasm");
    assert_eq!(reload(&server).await.status, 200);
    // No job uses v1, but a job created on it a moment ago may not be stored yet.
    assert!(server.orchestrator.unload_retired_versions().await.is_empty());
    assert_eq!(server.orchestrator.runtime.retired_versions().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn endpoints_follow_the_loaded_set() {
    let dir = blueprints_dir(&[("pipeline.wasm", PIPELINE_COMPONENT)]);
    let server = TestServer::start_with(config_for(dir.path())).await;
    let create_hello = || server.send(Method::POST, "/api/v1/jobs/hello", Auth::Client(CLIENT_TOKEN), Some("{}"));
    // No such endpoint: `/api/v1/jobs/{id}` answers GET only.
    assert_eq!(create_hello().await.status, 405);

    copy(HELLO_COMPONENT, dir.path(), "hello.wasm");
    let report = reload(&server).await.json();
    assert_eq!(names(&report, "added"), ["hello"], "{report:#}");
    assert_eq!(names(&report, "unchanged"), ["pipeline"], "{report:#}");
    let created = create_hello().await;
    assert_eq!(created.status, 202, "{created:?}");
    server.wait_for_status(created.json()["job_id"].as_str().expect("job id"), "waiting_for_worker").await;

    // A removed blueprint's endpoint goes; a job already waiting on it still ends.
    let waiting = server.create_job("/api/v1/jobs/pipeline", json!({ "url": "https://example.com" })).await;
    server.wait_for_status(&waiting, "waiting_for_worker").await;
    std::fs::remove_file(dir.path().join("pipeline.wasm")).expect("remove pipeline");
    let report = reload(&server).await.json();
    assert_eq!(names(&report, "removed"), ["pipeline"], "{report:#}");
    let gone = server.send(Method::POST, "/api/v1/jobs/pipeline", Auth::Client(CLIENT_TOKEN), Some("{}")).await;
    assert_eq!(gone.status, 405, "{gone:?}");
    let worker = server.worker("w1");
    worker.register(&["fetch"]).await;
    let task = worker.next_task(Duration::from_secs(5)).await;
    worker.post_result(&task, json!({ "status": "success", "data": { "content": "abc" } })).await;
    let job = server.wait_for(&waiting, Duration::from_secs(10), |j| j["current_state"] == "publish").await;
    assert_eq!(job["state_history"]["length"], 3, "the removed blueprint's handler still ran: {job:#}");
    server.stop().await;
}

#[tokio::test]
async fn a_set_that_does_not_load_is_refused_and_the_running_set_stays() {
    let dir = blueprints_dir(&[("hello.wasm", HELLO_COMPONENT)]);
    let server = TestServer::start_with(config_for(dir.path())).await;

    std::fs::write(dir.path().join("broken.wasm"), b"\0asm not really").expect("write broken");
    let error = reload(&server).await.assert_error(422);
    assert!(error.contains("broken.wasm") && error.contains("not a valid WebAssembly component"), "{error}");

    std::fs::remove_file(dir.path().join("broken.wasm")).expect("remove broken");
    copy(HELLO_COMPONENT, dir.path(), "hello-again.wasm");
    let error = reload(&server).await.assert_error(422);
    assert!(error.contains("hello-again.wasm") && error.contains("already used"), "{error}");

    // Still the set it started with.
    let job = server.create_job("/api/v1/jobs/hello", json!({ "name": "Ada" })).await;
    server.wait_for_status(&job, "waiting_for_worker").await;
    std::fs::remove_file(dir.path().join("hello-again.wasm")).expect("remove copy");
    let report = reload(&server).await.json();
    assert_eq!(names(&report, "unchanged"), ["hello"], "{report:#}");

    let anonymous = server.send(Method::POST, "/api/v1/admin/reload-blueprints", Auth::None, None).await;
    anonymous.assert_error(401);
    assert_eq!(server.metric(r#"avtomatika_blueprint_reloads_total{result="refused"}"#).await, 2.0);
    assert_eq!(server.metric(r#"avtomatika_blueprint_reloads_total{result="applied"}"#).await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn a_set_without_a_scheduled_blueprint_is_refused() {
    let dir = blueprints_dir(&[("hello.wasm", HELLO_COMPONENT), ("pipeline.wasm", PIPELINE_COMPONENT)]);
    let schedules = dir.path().join("schedules.toml");
    // Hourly: the schedule must exist, not fire during the test.
    std::fs::write(&schedules, "[greet]\nblueprint = \"hello\"\ninterval_seconds = 3600\n").expect("schedules");
    let config = Config { schedules_config_path: Some(schedules), ..config_for(dir.path()) };
    let server = TestServer::start_with(config).await;

    std::fs::remove_file(dir.path().join("hello.wasm")).expect("remove hello");
    let error = reload(&server).await.assert_error(422);
    assert!(error.contains("schedule \"greet\"") && error.contains("\"hello\""), "{error}");
    // The running set stays: hello still takes jobs.
    let job = server.create_job("/api/v1/jobs/hello", json!({ "name": "Ada" })).await;
    server.wait_for_status(&job, "waiting_for_worker").await;

    // Removing a blueprint no schedule runs is fine.
    copy(HELLO_COMPONENT, dir.path(), "hello.wasm");
    std::fs::remove_file(dir.path().join("pipeline.wasm")).expect("remove pipeline");
    let report = reload(&server).await.json();
    assert_eq!(names(&report, "removed"), ["pipeline"], "{report:#}");
    assert_eq!(names(&report, "unchanged"), ["hello"], "{report:#}");
    server.stop().await;
}

#[tokio::test]
async fn a_watched_directory_is_reloaded_when_it_changes() {
    let dir = blueprints_dir(&[("hello.wasm", HELLO_COMPONENT)]);
    let config = Config { blueprints_watch: Some(Duration::from_secs(1)), ..config_for(dir.path()) };
    let server = TestServer::start_with(config).await;
    copy(VERSIONED_V1_COMPONENT, dir.path(), "versioned.wasm");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = server.send(Method::POST, "/api/v1/jobs/versioned", Auth::Client(CLIENT_TOKEN), Some("{}")).await;
        if answer.status == 202 {
            break;
        }
        assert!(Instant::now() < deadline, "the new blueprint never appeared: {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

/// A job whose version was unloaded (as after a restart with a new file in
/// `BLUEPRINTS_DIR`) gets it back from the plugin cache; without the cache
/// it fails, naming the version, rather than running on other code.
async fn job_after_its_version_is_gone(plugin_cache_dir: Option<std::path::PathBuf>) -> Value {
    let dir = blueprints_dir(&[("versioned.wasm", VERSIONED_V1_COMPONENT)]);
    let server = TestServer::start_with(Config { plugin_cache_dir, ..config_for(dir.path()) }).await;
    let worker = server.worker("w1");
    worker.register(&["work"]).await;
    let job_id = server.create_job("/api/v1/jobs/versioned", json!({ "wait": true })).await;
    server.wait_for_status(&job_id, "waiting_for_worker").await;
    copy(VERSIONED_V2_COMPONENT, dir.path(), "versioned.wasm");
    assert_eq!(reload(&server).await.status, 200);
    let forgotten = server.orchestrator.runtime.unload_retired(Duration::ZERO, |_, _| false);
    assert_eq!(forgotten.len(), 1, "v1 was retired and is now unloaded");

    let task = worker.next_task(Duration::from_secs(5)).await;
    worker.post_result(&task, json!({ "status": "success" })).await;
    let job = server
        .wait_for(&job_id, Duration::from_secs(20), |j| {
            matches!(j["status"].as_str(), Some("finished" | "failed" | "quarantined"))
        })
        .await;
    server.stop().await;
    job
}

#[tokio::test]
async fn a_version_gone_from_memory_comes_back_from_the_plugin_cache() {
    let cache = tempfile::tempdir().expect("cache dir");
    let job = job_after_its_version_is_gone(Some(cache.path().join("plugins"))).await;
    assert_eq!(job["status"], "finished", "{job:#}");
    assert_eq!(job["state_history"]["ran_on"], "v1", "{job:#}");
}

#[tokio::test]
async fn a_version_found_nowhere_fails_the_job_naming_it() {
    let job = job_after_its_version_is_gone(None).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    let message = job["error_message"].as_str().unwrap_or_default();
    let version = job["blueprint_version"].as_str().expect("version");
    assert!(message.contains("is no longer loaded") && message.contains(&version[..12]), "{job:#}");
}
