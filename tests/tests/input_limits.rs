//! What a caller controls is bounded and checked before it costs anything
//! (issue 15, security review findings 1, 5, 7, 11, 12): worker tokens are
//! checked before a body is read, each route has a body limit of its own,
//! identifiers and task lists are bounded, host-owned worker fields cannot
//! be forged, only registered workers may poll, and the public approval
//! route tells an anonymous caller nothing but a status code. All through
//! the real server over HTTP; the Redis case on database 8 (emptied first).

use std::time::Duration;

use avtomatika::config::{Limits, RedisConfig};
use avtomatika_tests::{Auth, TestServer, WORKER_TOKEN, test_config};
use reqwest::Method;
use serde_json::{Value, json};

const REGISTER: &str = "/_worker/workers/register";

fn register_body(worker_id: &str, extra: Value) -> String {
    let mut body = json!({"worker_id": worker_id, "worker_type": "t", "supported_tasks": ["greet"]});
    body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    body.to_string()
}

#[tokio::test]
async fn an_unknown_worker_token_is_refused_before_the_body_is_read() {
    let server = TestServer::start().await;
    // 8 MiB that is not even JSON: a parse would answer 400, a read of it
    // under the worker limit 413; the token alone decides first.
    let junk = "x".repeat(8 << 20);
    for path in [REGISTER, "/_worker/tasks/result"] {
        let answer = server.send(Method::POST, path, Auth::Worker("not-a-worker-token"), Some(&junk)).await;
        let message = answer.assert_error(401);
        assert!(message.contains("X-Worker-Token"), "{path}: {message}");
    }
    let answer = server.send(Method::PATCH, "/_worker/workers/w", Auth::Worker("nope"), Some(&junk)).await;
    answer.assert_error(401);
    server.stop().await;
}

#[tokio::test]
async fn each_route_has_a_body_limit_that_fits_it() {
    let server = TestServer::start().await;
    let big_extra = json!({"hostname": "h".repeat(70 << 10)});
    let message = server
        .send(Method::POST, REGISTER, Auth::Worker(WORKER_TOKEN), Some(&register_body("w", big_extra)))
        .await
        .assert_error(413);
    assert!(message.contains(&(64 << 10).to_string()), "the 413 names the route's limit: {message}");
    let heartbeat = json!({"status": "idle", "note": "n".repeat(70 << 10)}).to_string();
    server
        .send(Method::PATCH, "/_worker/workers/w", Auth::Worker(WORKER_TOKEN), Some(&heartbeat))
        .await
        .assert_error(413);
    let approval = json!({"decision": "approved", "pad": "p".repeat(5 << 10)}).to_string();
    let id = "00000000-0000-7000-8000-000000000000";
    server
        .send(Method::POST, &format!("/_public/webhooks/approval/{id}"), Auth::None, Some(&approval))
        .await
        .assert_error(413);
    // Results keep the general limit: a 1 MiB result body is read (and
    // refused for what it says, not for its size).
    let result = json!({"job_id": id, "task_id": id, "worker_id": "w", "result": {"status": "success",
                        "data": {"blob": "b".repeat(1 << 20)}}})
    .to_string();
    let answer = server.send(Method::POST, "/_worker/tasks/result", Auth::Worker(WORKER_TOKEN), Some(&result)).await;
    assert_eq!(answer.status, 404, "{answer:?}");
    server.stop().await;
}

#[tokio::test]
async fn worker_ids_task_lists_and_names_are_bounded() {
    let server = TestServer::start().await;
    let limits = Limits::default();
    let register =
        async |body: String| server.send(Method::POST, REGISTER, Auth::Worker(WORKER_TOKEN), Some(&body)).await;

    let long_id = "w".repeat(limits.name_bytes + 1);
    let message = register(register_body(&long_id, json!({}))).await.assert_error(400);
    assert!(message.contains("worker_id") && message.contains("MAX_NAME_BYTES"), "{message}");
    let message = register(register_body("bad\nid", json!({}))).await.assert_error(400);
    assert!(message.contains("control characters"), "{message}");

    let many: Vec<String> = (0..=limits.worker_supported_tasks).map(|i| format!("t{i}")).collect();
    let message = register(json!({"worker_id": "many", "supported_tasks": many}).to_string()).await.assert_error(400);
    assert!(message.contains("WORKER_MAX_SUPPORTED_TASKS"), "{message}");
    let message =
        register(json!({"worker_id": "long", "supported_tasks": ["t".repeat(limits.name_bytes + 1)]}).to_string())
            .await
            .assert_error(400);
    assert!(message.contains("MAX_NAME_BYTES"), "{message}");
    assert!(server.orchestrator.storage.live_workers().await.unwrap().is_empty(), "nothing refused was registered");

    // The same bounds hold for a heartbeat's update.
    assert_eq!(register(register_body("ok", json!({}))).await.status, 200);
    let update = json!({"supported_tasks": many}).to_string();
    let answer = server.send(Method::PATCH, "/_worker/workers/ok", Auth::Worker(WORKER_TOKEN), Some(&update)).await;
    answer.assert_error(400);
    // A poll path naming an over-long id is refused before storage sees it.
    let answer = server
        .send(Method::GET, &format!("/_worker/workers/{long_id}/tasks/next"), Auth::Worker(WORKER_TOKEN), None)
        .await;
    answer.assert_error(400);
    server.stop().await;
}

#[tokio::test]
async fn only_registered_workers_may_poll_and_each_holds_a_bounded_number_of_polls() {
    let mut config = test_config();
    config.limits.polls_per_worker = 2;
    config.worker_poll_timeout = Duration::from_secs(3);
    let server = TestServer::start_with(config).await;
    let poll = async |worker_id: &str| {
        server
            .send(Method::GET, &format!("/_worker/workers/{worker_id}/tasks/next"), Auth::Worker(WORKER_TOKEN), None)
            .await
    };

    for i in 0..50 {
        let message = poll(&format!("never-registered-{i}")).await.assert_error(404);
        assert!(message.contains("not registered"), "{message}");
    }
    // None of those polls left anything behind: the census shows no worker
    // and a registered worker's poll still waits its full time.
    assert_eq!(server.orchestrator.storage.live_worker_count().await.unwrap(), 0);

    let worker = server.worker("w");
    worker.register(&["greet"]).await;
    let (first, second, third) = tokio::join!(poll("w"), poll("w"), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        poll("w").await
    });
    let message = third.assert_error(429);
    assert!(message.contains("WORKER_MAX_POLLS"), "{message}");
    assert_eq!((first.status, second.status), (204, 204));
    assert_eq!(server.orchestrator.polls.open("w"), 0, "every slot was given back");
    assert_eq!(poll("w").await.status, 204, "slots free again once the polls ended");
    server.stop().await;
}

#[tokio::test]
async fn the_global_token_registers_a_bounded_number_of_workers() {
    let mut config = test_config();
    config.limits.workers_per_token = 3;
    let server = TestServer::start_with(config).await;
    let register = async |id: &str| {
        server.send(Method::POST, REGISTER, Auth::Worker(WORKER_TOKEN), Some(&register_body(id, json!({})))).await
    };
    for id in ["w1", "w2", "w3"] {
        assert_eq!(register(id).await.status, 200);
    }
    let message = register("w4").await.assert_error(429);
    assert!(message.contains("MAX_WORKERS_PER_TOKEN"), "{message}");
    assert_eq!(register("w2").await.status, 200, "a live worker may register again");
    server.stop().await;
}

/// A worker's body naming host-owned fields (`in_flight`, `worker_id`, …)
/// used to be stored beside the real ones: on Redis the record then failed
/// to decode, and the workers list, dashboard and metrics answered 500.
#[tokio::test]
async fn host_owned_worker_fields_cannot_be_forged_on_redis() {
    let client = redis::Client::open("redis://127.0.0.1:6379/8").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis at 127.0.0.1:6379");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    let mut config = test_config();
    config.redis = Some(RedisConfig { host: "127.0.0.1".into(), port: 6379, db: 8 });
    let server = TestServer::start_with(config).await;

    let forged = register_body(
        "evil",
        json!({"in_flight": 0, "status": "busy", "load": 9, "max_concurrent_tasks": 1,
                                              "hostname": "h1"}),
    );
    assert_eq!(server.send(Method::POST, REGISTER, Auth::Worker(WORKER_TOKEN), Some(&forged)).await.status, 200);
    let update = json!({"worker_id": "someone-else", "in_flight": 7, "region": "eu"}).to_string();
    let answer = server.send(Method::PATCH, "/_worker/workers/evil", Auth::Worker(WORKER_TOKEN), Some(&update)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["worker_id"], "evil");

    let client = Auth::Client(avtomatika_tests::CLIENT_TOKEN);
    let workers = server.send(Method::GET, "/api/v1/workers", client, None).await;
    assert_eq!(workers.status, 200, "{workers:?}");
    let text = workers.text.clone();
    assert_eq!(text.matches("\"worker_id\"").count(), 1, "one worker_id per worker: {text}");
    assert_eq!(text.matches("\"in_flight\"").count(), 1, "{text}");
    assert!(!text.contains("someone-else"), "{text}");
    let worker = &workers.json()[0];
    assert_eq!((worker["hostname"].as_str(), worker["region"].as_str()), (Some("h1"), Some("eu")), "{worker}");
    assert_eq!(server.send(Method::GET, "/api/v1/dashboard", client, None).await.status, 200);
    assert_eq!(server.send(Method::GET, "/_public/metrics", Auth::None, None).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_result_must_say_what_happened_in_either_layout() {
    let server = TestServer::start().await;
    let worker = server.worker("w");
    worker.register(&["greet"]).await;

    // Neither `result` nor a top-level `status`: refused, the job untouched.
    let job_id = server.create_job("/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    let task = worker.next_task(Duration::from_secs(10)).await;
    let ids = json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": "w"});
    let mut silent = ids.clone();
    silent["data"] = json!({"greeting": "lost"});
    let message = worker.post_result_body(silent).await.assert_error(400);
    assert!(message.contains("`result` is missing"), "{message}");
    assert_eq!(server.job(&job_id).await["status"], "waiting_for_worker");

    // The flat layout of `rxon`-based workers: its data reaches the job.
    let mut flat = ids.clone();
    flat["status"] = json!("success");
    flat["data"] = json!({"greeting": "Hello, Ada!"});
    flat["data_metadata"] = json!({});
    let answer = worker.post_result_body(flat).await;
    assert_eq!(answer.json()["status"], "result_accepted_success", "{answer:?}");
    let job = server.wait_for_status(&job_id, "finished").await;
    assert_eq!(job["state_history"]["greeting"], "Hello, Ada!");

    // …and its failures fail.
    let failing = server.create_job("/api/v1/jobs/hello", json!({"name": "Bob"})).await;
    let task = worker.next_task(Duration::from_secs(10)).await;
    let answer = worker
        .post_result_body(json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": "w",
                                 "status": "failure", "error": {"code": "INVALID_INPUT_ERROR", "message": "no"}}))
        .await;
    assert_eq!(answer.json()["status"], "result_accepted_failure", "{answer:?}");
    let job = server.wait_for(&failing, Duration::from_secs(10), |j| j["status"] == "failed").await;
    assert_eq!(job["status"], "failed", "{job:#}");
    server.stop().await;
}

/// A connection that sends half a request used to be held open forever.
#[tokio::test]
async fn half_sent_requests_are_cut_off_and_connections_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = test_config();
    config.limits.header_timeout = Duration::from_secs(2);
    config.limits.connections = 2;
    let server = TestServer::start_with(config).await;
    let addr = server.base.trim_start_matches("http://").to_owned();

    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"POST /_public/webhooks/approval/x HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), half.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a half-sent request open for 10 s");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());

    // Two connections that send nothing hold both slots; a third request
    // waits until one of them goes.
    let idle: Vec<_> = futures::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(&addr))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = {
        let status = server.send(Method::GET, "/_public/status", Auth::None, None);
        tokio::pin!(status);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut status).await.is_err(),
            "a third connection was served while two held the limit"
        );
        drop(idle);
        // The header deadline frees the slots too, but closing them is quicker.
        tokio::time::timeout(Duration::from_secs(5), status).await.expect("served once a slot is free")
    };
    assert_eq!(answer.status, 200);
    server.stop().await;
}
