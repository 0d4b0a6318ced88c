//! Routing tasks to workers over HTTP, with workers registering as both SDK
//! generations do: a worker gets no more tasks than the
//! `max_concurrent_tasks` it declared and none while `busy`; the `routed`
//! blueprint's requirements, cost caps, strategies and task timeouts choose
//! the worker; each worker's reputation follows its results and is shown in
//! `GET /api/v1/workers`.

use std::time::Duration;

use avtomatika_tests::config::Config;
use avtomatika_tests::{
    Auth, CLIENT_TOKEN, TestServer, TestWorker, WORKER_TOKEN, blueprints_dir, manual_watcher_config,
};
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

const HELLO: &str = "/api/v1/jobs/hello";
const ROUTED: &str = "/api/v1/jobs/routed";
const TASK_WAIT: Duration = Duration::from_secs(10);

/// A server with `hello` and `routed`, polls of 300 ms and the watcher run
/// by hand. Keep the directory alive.
async fn server() -> (TestServer, TempDir) {
    let dir = blueprints_dir(&[
        ("hello.wasm", avtomatika_plugins::HELLO_COMPONENT),
        ("routed.wasm", avtomatika_plugins::ROUTED_COMPONENT),
    ]);
    let config = Config {
        blueprints_dir: Some(dir.path().to_owned()),
        worker_poll_timeout: Duration::from_millis(300),
        ..manual_watcher_config()
    };
    (TestServer::start_with(config).await, dir)
}

/// A GPU worker as `avtomatika-worker` 1.0b3 registers it.
fn gpu_b3(id: &str, cost: f64) -> Value {
    json!({"worker_id": id, "worker_type": "gpu", "supported_tasks": ["render"], "max_concurrent_tasks": 10,
           "cost_per_skill": {"render": cost}, "installed_models": [{"name": "sdxl", "version": "1.0"}],
           "hostname": id, "resources": {"cpu_cores": 16, "gpu_info": {"model": "NVIDIA RTX 4090", "vram_gb": 24}}})
}

/// A CPU worker as the `rxon`-based 1.0b5 registers it.
fn cpu_b5(id: &str, cost: f64) -> Value {
    json!({"worker_id": id, "worker_type": "cpu", "supported_tasks": ["render"],
           "resources": {"max_concurrent_tasks": 10, "cpu_cores": 4, "gpu_info": null},
           "installed_software": {"ffmpeg": "6.1"}, "installed_models": [],
           "capabilities": {"hostname": id, "ip_address": "127.0.0.1", "cost_per_skill": {"render": cost},
                            "s3_config_hash": null, "extra": null}})
}

/// Creates `n` routed jobs with `routing` (plus `task_type: render`).
async fn routed_jobs(server: &TestServer, n: usize, routing: Value) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(server.create_job(ROUTED, routing.clone()).await);
    }
    ids
}

/// How many tasks each of `workers` holds once everything dispatched was polled.
async fn shares(workers: &[&TestWorker<'_>]) -> Vec<usize> {
    let mut counts = Vec::new();
    for worker in workers {
        counts.push(drain(worker).await.len());
    }
    counts
}

async fn register(server: &TestServer, body: Value) {
    let answer = server
        .send(Method::POST, "/_worker/workers/register", Auth::Worker(WORKER_TOKEN), Some(&body.to_string()))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// The worker as `GET /api/v1/workers` lists it.
async fn listed(server: &TestServer, worker_id: &str) -> Value {
    let answer = server.send(Method::GET, "/api/v1/workers", Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let workers = answer.json();
    workers
        .as_array()
        .and_then(|all| all.iter().find(|w| w["worker_id"] == worker_id).cloned())
        .unwrap_or_else(|| panic!("worker {worker_id} is not listed: {workers:#}"))
}

/// Polls until no task comes; returns those that did.
async fn drain(worker: &TestWorker<'_>) -> Vec<Value> {
    let mut tasks = Vec::new();
    while let Some(task) = worker.poll().await {
        tasks.push(task);
    }
    tasks
}

#[tokio::test]
async fn a_worker_never_holds_more_tasks_than_it_declared_in_either_layout() {
    let (server, _dir) = server().await;
    // The rxon-based SDKs (1.0b5+) declare it under `resources`.
    register(
        &server,
        json!({"worker_id": "rxon", "worker_type": "cpu", "supported_tasks": ["greet"],
               "resources": {"max_concurrent_tasks": 2, "cpu_cores": 4, "gpu_info": null},
               "capabilities": {"hostname": "h", "cost_per_skill": {"greet": 0.5}}}),
    )
    .await;
    let worker = server.worker("rxon");
    let jobs: Vec<String> =
        futures::future::join_all((0..5).map(|i| server.create_job(HELLO, json!({"name": i})))).await;
    let first = drain(&worker).await;
    assert_eq!(first.len(), 2, "two in flight at most: {first:#?}");
    assert_eq!(listed(&server, "rxon").await["max_concurrent_tasks"], 2);

    // Answering one frees a slot, which the next parked task takes at once
    // (without waiting for the heartbeat the SDKs send right after).
    let (status, _) = worker.post_result(&first[0], json!({"data": {}})).await;
    assert_eq!(status, 200);
    let next = drain(&worker).await;
    assert_eq!(next.len(), 1, "one slot was free: {next:#?}");

    // Everything finishes, never more than two at a time.
    let mut held = vec![first[1].clone(), next[0].clone()];
    while let Some(task) = held.pop() {
        let (status, _) = worker.post_result(&task, json!({"data": {}})).await;
        assert_eq!(status, 200);
        held.extend(drain(&worker).await);
        assert!(held.len() <= 2, "{held:#?}");
    }
    for job_id in &jobs {
        server.wait_for_status(job_id, "finished").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_busy_worker_gets_nothing_until_it_reports_idle() {
    let (server, _dir) = server().await;
    // 1.0b3 declares it at the top level.
    register(
        &server,
        json!({"worker_id": "b3", "supported_tasks": ["greet"], "max_concurrent_tasks": 1,
                             "cost_per_skill": {"greet": 1.0}, "resources": {"cpu_cores": 2, "gpu_info": null}}),
    )
    .await;
    assert_eq!(
        server
            .worker("b3")
            .heartbeat(Some(json!({"status": "busy", "load": 1, "supported_tasks": ["greet"]})))
            .await
            .status,
        200
    );
    let worker = server.worker("b3");
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    assert!(worker.poll().await.is_none(), "a busy worker got a task");
    assert_eq!(server.job(&job_id).await["status"], "waiting_for_worker");

    assert_eq!(server.worker("b3").heartbeat(Some(json!({"status": "idle", "load": 0}))).await.status, 200);
    let task = worker.next_task(TASK_WAIT).await;
    assert_eq!(task["job_id"], job_id.as_str());
    worker.post_result(&task, json!({"data": {}})).await;
    server.wait_for_status(&job_id, "finished").await;
    server.stop().await;
}

#[tokio::test]
async fn reputation_follows_results_and_is_listed_with_resources() {
    let (server, _dir) = server().await;
    register(
        &server,
        json!({"worker_id": "flaky", "supported_tasks": ["greet"],
               "resources": {"max_concurrent_tasks": 4, "cpu_cores": 8, "gpu_info": {"model": "RTX 4090", "vram_gb": 24}},
               "installed_models": [{"name": "sdxl", "version": "1"}]}),
    )
    .await;
    let worker = server.worker("flaky");
    let listed_new = listed(&server, "flaky").await;
    assert_eq!(listed_new["reputation"], 1.0, "{listed_new:#}");
    assert_eq!(listed_new["resources"]["gpu_info"]["vram_gb"], 24, "{listed_new:#}");

    let answers = [
        json!({"data": {}}),
        json!({"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": "broken"}}),
        // Not the worker's fault: neither counts.
        json!({"status": "failure", "error": {"code": "INVALID_INPUT_ERROR", "message": "bad input"}}),
        json!({"status": "cancelled"}),
        json!({"data": {}}),
        json!({"status": "failure", "error": {"code": "SECURITY_ERROR", "message": "rxon code"}}),
    ];
    for answer in answers {
        let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
        let task = worker.next_task(TASK_WAIT).await;
        assert_eq!(task["job_id"], job_id.as_str());
        let (status, _) = worker.post_result(&task, answer).await;
        assert_eq!(status, 200);
    }
    // Two successes, two failures that count.
    assert_eq!(listed(&server, "flaky").await["reputation"], 0.5);
    server.stop().await;
}

#[tokio::test]
async fn a_vram_requirement_never_reaches_a_cpu_worker() {
    let (server, _dir) = server().await;
    register(&server, gpu_b3("gpu", 2.0)).await;
    register(&server, cpu_b5("cpu", 0.1)).await;
    let (gpu, cpu) = (server.worker("gpu"), server.worker("cpu"));
    let jobs = routed_jobs(&server, 6, json!({"requires": {"gpu_info": {"model": "rtx", "vram_gb": 16}}})).await;
    assert_eq!(shares(&[&cpu, &gpu]).await, [0, 6], "the cheaper CPU worker is not a GPU");
    // Without the requirement the cheap CPU worker wins (default strategy).
    routed_jobs(&server, 2, json!({})).await;
    assert_eq!(shares(&[&cpu, &gpu]).await, [2, 0]);
    assert_eq!(jobs.len(), 6);
    server.stop().await;
}

#[tokio::test]
async fn cost_caps_and_strategies_choose_among_qualified_workers() {
    let (server, _dir) = server().await;
    register(&server, gpu_b3("dear", 2.0)).await;
    register(&server, cpu_b5("cheap", 0.2)).await;
    register(&server, cpu_b5("mid", 0.5)).await;
    let (dear, cheap, mid) = (server.worker("dear"), server.worker("cheap"), server.worker("mid"));
    let all = [&dear, &cheap, &mid];

    routed_jobs(&server, 3, json!({"strategy": "cheapest"})).await;
    assert_eq!(shares(&all).await, [0, 3, 0]);
    // A cap below the cheapest-but-one leaves only `cheap`; the cap is on
    // what the worker charges for this task type.
    routed_jobs(&server, 2, json!({"strategy": "least_connections", "max_cost": 0.3})).await;
    assert_eq!(shares(&all).await, [0, 2, 0]);
    // Round robin takes turns in worker-id order: cheap, dear, mid.
    routed_jobs(&server, 6, json!({"strategy": "round_robin"})).await;
    assert_eq!(shares(&all).await, [2, 2, 2]);
    // Least connections goes to whoever holds the fewest (dear 2, cheap 7,
    // mid 2 now; ties by worker id).
    routed_jobs(&server, 3, json!({"strategy": "least_connections"})).await;
    assert_eq!(shares(&all).await, [2, 0, 1]);
    server.stop().await;
}

#[tokio::test]
async fn a_task_no_registered_worker_can_take_fails_its_job_saying_what_is_missing() {
    let (server, _dir) = server().await;
    register(&server, gpu_b3("gpu", 2.0)).await;
    register(&server, cpu_b5("cpu", 0.1)).await;
    let cases = [
        (json!({"requires": {"cpu_cores": 64}}), "cpu_cores >= 64 (2 workers)"),
        (json!({"requires": {"gpu_info": {"vram_gb": 80}}}), "gpu_info vram_gb >= 80 (2 workers)"),
        (json!({"max_cost": 0.01}), "max_cost 0.01 (2 workers)"),
        (json!({"requires": {"installed_software": {"ffmpeg": "7"}}}), "installed_software"),
    ];
    for (routing, missing) in cases {
        let job_id = server.create_job(ROUTED, routing.clone()).await;
        let job = server.wait_for_status(&job_id, "failed").await;
        let message = job["error_message"].as_str().unwrap_or_default();
        assert!(message.contains("render") && message.contains(missing), "{routing}: {message:?}");
    }
    // Without any worker of the type the task waits for one, as always.
    let job_id = server.create_job(ROUTED, json!({"task_type": "transcode", "requires": {"cpu_cores": 64}})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.job(&job_id).await["status"], "waiting_for_worker");
    server.stop().await;
}

#[tokio::test]
async fn best_value_moves_away_from_a_worker_whose_reputation_fell() {
    let (server, _dir) = server().await;
    register(&server, cpu_b5("flaky", 0.5)).await;
    let flaky = server.worker("flaky");
    for _ in 0..3 {
        let job_id = server.create_job(ROUTED, json!({"strategy": "best_value"})).await;
        let task = flaky.next_task(TASK_WAIT).await;
        let failure = json!({"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": "broken GPU"}});
        assert_eq!(flaky.post_result(&task, failure).await.0, 200);
        server.wait_for_status(&job_id, "quarantined").await;
    }
    assert_eq!(listed(&server, "flaky").await["reputation"], 0.0);
    // A dearer but reliable worker now gives better value.
    register(&server, cpu_b5("steady", 0.9)).await;
    let steady = server.worker("steady");
    routed_jobs(&server, 3, json!({"strategy": "best_value"})).await;
    assert_eq!(shares(&[&flaky, &steady]).await, [0, 3]);
    // Cheapest still ignores reputation.
    routed_jobs(&server, 1, json!({"strategy": "cheapest"})).await;
    assert_eq!(shares(&[&flaky, &steady]).await, [1, 0]);
    server.stop().await;
}

#[tokio::test]
async fn a_task_timeout_overrides_the_worker_timeout_and_counts_against_the_worker() {
    let (server, _dir) = server().await;
    register(&server, cpu_b5("slow", 0.5)).await;
    let slow = server.worker("slow");
    let job_id = server.create_job(ROUTED, json!({"timeout_seconds": 2})).await;
    let first = slow.next_task(TASK_WAIT).await;
    let dispatched = chrono::Utc::now();
    let round = |seconds: i64| server.orchestrator.time_out_overdue(dispatched + chrono::Duration::seconds(seconds));
    assert_eq!(round(1).await.unwrap(), 0, "within its 2 s");
    assert_eq!(round(3).await.unwrap(), 1, "past its 2 s, long before WORKER_TIMEOUT_SECONDS (300 s)");
    let second = slow.next_task(TASK_WAIT).await;
    assert_eq!(second["job_id"], job_id.as_str());
    assert_ne!(second["task_id"], first["task_id"], "dispatched again");
    assert_eq!(listed(&server, "slow").await["reputation"], 0.0, "the timeout counted against the worker");
    server.stop().await;
}

/// Two instances sharing Redis (database 11, emptied first) route alike:
/// one round-robin turn for both, requirements and caps from the records
/// every instance reads, one reputation per worker.
#[tokio::test]
async fn two_instances_on_redis_share_turns_records_and_reputation() {
    const DB: u32 = 11;
    let client = redis::Client::open(format!("redis://127.0.0.1:6379/{DB}")).expect("a Redis URL");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis at 127.0.0.1:6379");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.expect("FLUSHDB");
    let dir = blueprints_dir(&[("routed.wasm", avtomatika_plugins::ROUTED_COMPONENT)]);
    let start = |instance: &str| {
        TestServer::start_with(Config {
            blueprints_dir: Some(dir.path().to_owned()),
            worker_poll_timeout: Duration::from_millis(300),
            redis: Some(avtomatika::config::RedisConfig { host: "127.0.0.1".into(), port: 6379, db: DB }),
            instance_id: instance.into(),
            ..manual_watcher_config()
        })
    };
    let (a, b) = (start("routing-a").await, start("routing-b").await);
    register(&a, gpu_b3("gpu", 2.0)).await;
    register(&b, cpu_b5("cpu-1", 0.2)).await;
    register(&a, cpu_b5("cpu-2", 0.4)).await;
    let (gpu, cpu1, cpu2) = (a.worker("gpu"), b.worker("cpu-1"), a.worker("cpu-2"));

    // Jobs created alternately on each instance take turns over the two
    // workers under the cap, as one counter.
    for i in 0..6 {
        let server = if i % 2 == 0 { &a } else { &b };
        server.create_job(ROUTED, json!({"strategy": "round_robin", "max_cost": 1.0})).await;
    }
    assert_eq!(shares(&[&gpu, &cpu1, &cpu2]).await, [0, 3, 3]);
    // A VRAM requirement through either instance reaches the GPU node only.
    b.create_job(ROUTED, json!({"requires": {"gpu_info": {"vram_gb": 16}}})).await;
    a.create_job(ROUTED, json!({"requires": {"gpu_info": {"vram_gb": 16}}})).await;
    assert_eq!(shares(&[&gpu, &cpu1, &cpu2]).await, [2, 0, 0]);
    // A failure answered through B lowers the reputation A lists.
    let job_id = b.create_job(ROUTED, json!({"strategy": "cheapest"})).await;
    let task = cpu1.next_task(TASK_WAIT).await;
    assert_eq!(task["job_id"], job_id.as_str());
    let failure = json!({"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": "broken"}});
    assert_eq!(cpu1.post_result(&task, failure).await.0, 200);
    assert_eq!(listed(&a, "cpu-1").await["reputation"], 0.0);
    assert_eq!(listed(&b, "cpu-2").await["reputation"], 1.0);
    a.stop().await;
    b.stop().await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.expect("FLUSHDB");
}
