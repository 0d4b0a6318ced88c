//! The real Python worker SDK (`avtomatika-worker` from PyPI, pinned in
//! `examples/python-worker/requirements.txt`) running
//! `examples/python-worker/worker.py` against the server, unchanged.
//!
//! The test prepares its own virtualenv under the cargo target directory, so a
//! plain `cargo test` works on a fresh machine that has `python3` and can reach
//! PyPI. Without them the test fails; it never skips.

use std::time::{Duration, Instant};

use avtomatika_tests::python::{
    JOB_TIMEOUT, PythonWorker, TERMINAL, pinned_version, sdk_python, wait_until_done, worker_id,
};
use avtomatika_tests::s3::{ACCESS_KEY, SECRET_KEY, TestS3};
use avtomatika_tests::{Auth, CLIENT_TOKEN, TestServer, test_config};
use futures::future::join_all;
use serde_json::{Value, json};

#[tokio::test]
async fn python_sdk_worker_greets() {
    sdk_python(&pinned_version());
    let server = TestServer::start().await;
    // The job is created before the worker is up: it waits for the worker to register.
    let job_id = server.create_job("/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    let mut worker = PythonWorker::spawn(&server, &worker_id("greets"));

    let job = wait_until_done(&server, &mut worker, &job_id).await;
    assert_eq!(job["status"], "finished", "{job:#}");
    assert_eq!(job["current_state"], "finished", "{job:#}");
    assert_eq!(job["state_history"]["greeting"], "Hello, Ada!", "{job:#}");

    // Many jobs at once: more than the SDK's 10 concurrent tasks.
    let names: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    let ids = join_all(names.iter().map(|name| server.create_job("/api/v1/jobs/hello", json!({"name": name})))).await;
    for (name, job_id) in names.iter().zip(&ids) {
        let job = wait_until_done(&server, &mut worker, job_id).await;
        assert_eq!(job["status"], "finished", "{job:#}");
        assert_eq!(job["state_history"]["greeting"], format!("Hello, {name}!"), "{job:#}");
    }

    worker.assert_running();
    drop(worker);
    server.stop().await;
}

#[tokio::test]
async fn python_sdk_worker_rejects_a_missing_name_as_invalid_input() {
    sdk_python(&pinned_version());
    let server = TestServer::start().await;
    let mut worker = PythonWorker::spawn(&server, &worker_id("invalid"));

    for body in [json!({"name": ""}), json!({})] {
        let job_id = server.create_job("/api/v1/jobs/hello", body.clone()).await;
        let job = wait_until_done(&server, &mut worker, &job_id).await;
        assert_eq!(job["status"], "failed", "{body}: {job:#}");
        let message = job["error_message"].as_str().unwrap_or_default();
        assert!(
            message.to_lowercase().contains("invalid input") && message.contains("name is required"),
            "{body}: error_message should report the worker's INVALID_INPUT_ERROR: {job:#}"
        );
        assert!(job["state_history"].get("greeting").is_none(), "{body}: {job:#}");
    }

    worker.assert_running();
    drop(worker);
    server.stop().await;
}

/// Issue 8's compatibility check: the SDK downloads the `s3://` input the
/// `uppercase` blueprint put in the task's params, and uploads the file its
/// handler returns, answering with its `s3://` URI, which the blueprint moves
/// into the job's folder; the client then downloads it over HTTP.
#[tokio::test]
async fn python_sdk_worker_moves_files_through_s3() {
    sdk_python(&pinned_version());
    let s3 = TestS3::new().await;
    let mut config = s3.config(test_config());
    config.task_files_cleanup.retention = Duration::from_secs(3);
    let server = TestServer::start_with(config).await;
    let worker_files = tempfile::tempdir().expect("the worker's TASK_FILES_DIR");
    let env = [
        ("S3_ENDPOINT_URL", s3.endpoint.clone()),
        ("S3_ACCESS_KEY", ACCESS_KEY.to_owned()),
        ("S3_SECRET_KEY", SECRET_KEY.to_owned()),
        ("S3_DEFAULT_BUCKET", s3.bucket.clone()),
        ("S3_REGION", "us-east-1".to_owned()),
        ("TASK_FILES_DIR", worker_files.path().display().to_string()),
    ];
    let mut worker = PythonWorker::spawn_script(&server, &worker_id("files"), "file_worker.py", &env);

    let text = "payloads travel through s3, ünïcode included";
    let job_id = server.create_job("/api/v1/jobs/uppercase", json!({ "text": text })).await;
    let job = wait_until_done(&server, &mut worker, &job_id).await;
    assert_eq!(job["status"], "finished", "{job:#}");
    let history = &job["state_history"];
    let prefix = format!("s3://{}/jobs/{job_id}/", s3.bucket);
    assert_eq!(history["input"], format!("{prefix}input.txt"), "{job:#}");
    assert_eq!(history["output"], format!("{prefix}output.txt"), "{job:#}");
    assert_eq!(history["preview"], text.to_uppercase(), "{job:#}");
    assert_eq!(history["bytes"], text.len(), "{job:#}");

    // The worker's upload was moved into the job's folder: nothing is left
    // at the top of the bucket, and the client can download the output.
    let keys = s3.keys("").await;
    assert_eq!(keys, vec![format!("jobs/{job_id}/input.txt"), format!("jobs/{job_id}/output.txt")]);
    let answer = server
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{job_id}/files/output.txt"),
            Auth::Client(CLIENT_TOKEN),
            None,
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.text, text.to_uppercase());

    // And once the retention has passed, the job's folder is gone.
    s3.wait_until_empty(&format!("jobs/{job_id}/"), Duration::from_secs(30)).await;
    worker.assert_running();
    drop(worker);
    server.stop().await;
}

/// An `s3://` input that is gone by the time the worker fetches it: the
/// SDK's download fails, the task is retried, and the job ends quarantined
/// with the worker's message naming the missing object.
#[tokio::test]
async fn python_sdk_worker_reports_a_missing_s3_input() {
    sdk_python(&pinned_version());
    let s3 = TestS3::new().await;
    let mut config = s3.config(test_config());
    config.job_max_retries = 1;
    let server = TestServer::start_with(config).await;
    let job_id = server.create_job("/api/v1/jobs/uppercase", json!({})).await;
    server.wait_for_status(&job_id, "waiting_for_human").await;
    let put = server
        .http
        .put(server.url(&format!("/api/v1/jobs/{job_id}/files/input.txt")))
        .header("X-Avtomatika-Token", CLIENT_TOKEN)
        .body("soon gone")
        .send()
        .await
        .expect("upload");
    assert_eq!(put.status(), 201);
    let decided = server
        .send(
            reqwest::Method::POST,
            &format!("/_public/webhooks/approval/{job_id}"),
            Auth::None,
            Some(r#"{"decision":"uploaded"}"#),
        )
        .await;
    assert_eq!(decided.status, 200, "{decided:?}");
    // The task waits for a worker; its input disappears before one comes.
    server.wait_for_status(&job_id, "waiting_for_worker").await;
    s3.store.delete(&format!("jobs/{job_id}/input.txt")).await.expect("delete the input");

    let worker_files = tempfile::tempdir().expect("the worker's TASK_FILES_DIR");
    let env = [
        ("S3_ENDPOINT_URL", s3.endpoint.clone()),
        ("S3_ACCESS_KEY", ACCESS_KEY.to_owned()),
        ("S3_SECRET_KEY", SECRET_KEY.to_owned()),
        ("S3_DEFAULT_BUCKET", s3.bucket.clone()),
        ("TASK_FILES_DIR", worker_files.path().display().to_string()),
    ];
    let mut worker = PythonWorker::spawn_script(&server, &worker_id("missing"), "file_worker.py", &env);
    let job = wait_until_done(&server, &mut worker, &job_id).await;
    assert_eq!(job["status"], "quarantined", "{job:#}");
    let message = job["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("input.txt") && message.to_lowercase().contains("not found"), "{job:#}");
    worker.assert_running();
    drop(worker);
    server.stop().await;
}

/// Issue 16's routing with real SDK workers (`render_worker.py`), three of
/// them declaring resources and costs through the SDK's own environment
/// variables: a GPU node (dear), two CPU nodes (cheap and mid); later a
/// fourth, cheapest of all but broken. Workers talk to `workers_at`, jobs
/// are created on `jobs_at` (the same server, or another instance on Redis).
/// Tasks of the `routed` blueprint say what they need; `rendered_by` says who
/// did them.
async fn routing_scenario(workers_at: &TestServer, jobs_at: &TestServer, tag: &str) {
    let env = |gpu: bool, cost: f64| {
        let mut env = vec![("COST_PER_SKILL", json!({ "render": cost }).to_string()), ("CPU_CORES", "4".to_owned())];
        if gpu {
            env.extend([
                ("GPU_MODEL", "NVIDIA RTX 4090".to_owned()),
                ("GPU_VRAM_GB", "24".to_owned()),
                ("CPU_CORES", "16".to_owned()),
            ]);
        }
        env
    };
    let ids = [worker_id(&format!("{tag}-gpu")), worker_id(&format!("{tag}-cheap")), worker_id(&format!("{tag}-mid"))];
    let mut workers = vec![
        PythonWorker::spawn_script(workers_at, &ids[0], "render_worker.py", &env(true, 2.0)),
        PythonWorker::spawn_script(workers_at, &ids[1], "render_worker.py", &env(false, 0.2)),
        PythonWorker::spawn_script(workers_at, &ids[2], "render_worker.py", &env(false, 0.5)),
    ];
    let listed = |id: String| async move {
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            let answer = jobs_at.send(reqwest::Method::GET, "/api/v1/workers", Auth::Client(CLIENT_TOKEN), None).await;
            let all = answer.json().as_array().cloned().unwrap_or_default();
            if let Some(worker) = all.into_iter().find(|w| w["worker_id"] == id.as_str()) {
                return worker;
            }
            assert!(Instant::now() < deadline, "worker {id} did not register");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Every worker registered, as the SDK describes itself.
    let gpu = listed(ids[0].clone()).await;
    assert_eq!(gpu["resources"]["gpu_info"]["vram_gb"], 24, "{gpu:#}");
    assert_eq!(gpu["cost_per_skill"]["render"], 2.0, "{gpu:#}");
    for id in &ids[1..] {
        listed(id.clone()).await;
    }
    let run = |routing: Value| async move {
        let job_id = jobs_at.create_job("/api/v1/jobs/routed", routing).await;
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            let job = jobs_at.job(&job_id).await;
            if job["status"].as_str().is_some_and(|status| TERMINAL.contains(&status)) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {job_id} did not end: {job:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let by = |job: &Value| job["state_history"]["rendered_by"].as_str().unwrap_or("").to_owned();
    for _ in 0..3 {
        let job = run(json!({"requires": {"gpu_info": {"model": "RTX", "vram_gb": 16}}})).await;
        assert_eq!((job["status"].as_str(), by(&job)), (Some("finished"), ids[0].clone()), "{job:#}");
    }
    for _ in 0..3 {
        let job = run(json!({"strategy": "cheapest"})).await;
        assert_eq!(by(&job), ids[1], "{job:#}");
    }
    for _ in 0..4 {
        let job = run(json!({"strategy": "round_robin", "max_cost": 1.0})).await;
        assert!(ids[1..].contains(&by(&job)), "the GPU node costs more than 1.0: {job:#}");
    }
    let job = run(json!({"requires": {"cpu_cores": 64}})).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert!(job["error_message"].as_str().unwrap_or("").contains("cpu_cores >= 64 (3 workers)"), "{job:#}");

    // The cheapest node of all is broken: best value sends it the next task,
    // its PERMANENT_ERROR drops its reputation, and best value moves away.
    let broken = worker_id(&format!("{tag}-broken"));
    let mut broken_env = env(false, 0.05);
    broken_env.push(("RENDER_FAILS", "1".to_owned()));
    workers.push(PythonWorker::spawn_script(workers_at, &broken, "render_worker.py", &broken_env));
    listed(broken.clone()).await;
    let job = run(json!({"strategy": "best_value"})).await;
    assert_eq!(job["status"], "quarantined", "{job:#}");
    assert!(job["error_message"].as_str().unwrap_or("").contains("is broken"), "{job:#}");
    assert_eq!(listed(broken.clone()).await["reputation"], 0.0);
    for _ in 0..3 {
        let job = run(json!({"strategy": "best_value"})).await;
        assert_eq!((job["status"].as_str(), by(&job)), (Some("finished"), ids[1].clone()), "{job:#}");
    }
    workers.iter_mut().for_each(PythonWorker::assert_running);
}

fn routed_config(dir: &std::path::Path) -> avtomatika_tests::config::Config {
    avtomatika_tests::config::Config { blueprints_dir: Some(dir.to_owned()), ..test_config() }
}

#[tokio::test]
async fn python_sdk_workers_are_routed_by_resources_cost_and_reputation() {
    sdk_python(&pinned_version());
    let dir = avtomatika_tests::blueprints_dir(&[("routed.wasm", avtomatika_plugins::ROUTED_COMPONENT)]);
    let server = TestServer::start_with(routed_config(dir.path())).await;
    routing_scenario(&server, &server, "mem").await;
    server.stop().await;
}

/// The same with two instances sharing Redis (database 10, emptied first):
/// the SDK workers talk to one, jobs are created on the other.
#[tokio::test]
async fn python_sdk_workers_are_routed_alike_across_two_instances_on_redis() {
    sdk_python(&pinned_version());
    const DB: u32 = 10;
    let client = redis::Client::open(format!("redis://127.0.0.1:6379/{DB}")).expect("a Redis URL");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis at 127.0.0.1:6379");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.expect("FLUSHDB");
    let dir = avtomatika_tests::blueprints_dir(&[("routed.wasm", avtomatika_plugins::ROUTED_COMPONENT)]);
    let start = |instance: &str| {
        let mut config = routed_config(dir.path());
        config.redis = Some(avtomatika::config::RedisConfig { host: "127.0.0.1".into(), port: 6379, db: DB });
        config.instance_id = instance.into();
        TestServer::start_with(config)
    };
    let (a, b) = (start("py-routing-a").await, start("py-routing-b").await);
    routing_scenario(&a, &b, "redis").await;
    a.stop().await;
    b.stop().await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.expect("FLUSHDB");
}
