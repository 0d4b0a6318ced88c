//! The HTTP surface of `spec/http-api.md`, through real HTTP: authentication,
//! error format, request parsing, worker registration and heartbeats, the
//! task long-poll and how tasks are matched to workers.

use std::time::{Duration, Instant};

use avtomatika_tests::config::Config;
use avtomatika_tests::{Auth, CLIENT_TOKEN, TestServer, WORKER_TOKEN, test_config};
use reqwest::Method;
use serde_json::{Value, json};

/// Short polls, small bodies: every test here runs in a second or two.
/// Jobs here name `http://127.0.0.1:9/hook` (discard) as their webhook,
/// which only `WEBHOOK_ALLOWED_NETWORKS` lets through.
fn config() -> Config {
    let mut config =
        Config { worker_poll_timeout: Duration::from_secs(1), max_request_body_bytes: 1024, ..test_config() };
    config.webhooks.allowed_networks = avtomatika::webhook::parse_networks("127.0.0.0/8").unwrap();
    config
}

async fn server() -> TestServer {
    TestServer::start_with(config()).await
}

const HELLO: &str = "/api/v1/jobs/hello";
const RESULT: &str = "/_worker/tasks/result";
const REGISTER: &str = "/_worker/workers/register";

fn registration(worker_id: &str) -> String {
    json!({"worker_id": worker_id, "worker_type": "test", "supported_tasks": ["greet"], "max_concurrent_tasks": 1})
        .to_string()
}

#[tokio::test]
async fn public_status_is_ok_without_a_token() {
    let server = server().await;
    let answer = server.send(Method::GET, "/_public/status", Auth::None, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), json!({"status": "ok"}));
    server.stop().await;
}

#[tokio::test]
async fn client_endpoints_refuse_missing_and_wrong_tokens() {
    let server = server().await;
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    let job_path = format!("/api/v1/jobs/{job_id}");
    let bad =
        [Auth::None, Auth::Client("wrong"), Auth::Client(""), Auth::Client(WORKER_TOKEN), Auth::Worker(CLIENT_TOKEN)];
    for auth in bad {
        let answer = server.send(Method::POST, HELLO, auth, Some(r#"{"name": "Eve"}"#)).await;
        answer.assert_error(401);
        let answer = server.send(Method::GET, &job_path, auth, None).await;
        answer.assert_error(401);
    }
    // The right token still works for the same job.
    let answer = server.send(Method::GET, &job_path, Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["id"], job_id.as_str());
    server.stop().await;
}

#[tokio::test]
async fn worker_endpoints_refuse_missing_and_wrong_tokens() {
    let server = server().await;
    let worker = server.worker("w-auth");
    worker.register(&["greet"]).await;
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    let task = worker.next_task(Duration::from_secs(10)).await;
    let result = json!({"job_id": job_id, "task_id": task["task_id"], "worker_id": "w-auth", "result": {}}).to_string();

    let bad =
        [Auth::None, Auth::Worker("wrong"), Auth::Worker(""), Auth::Worker(CLIENT_TOKEN), Auth::Client(WORKER_TOKEN)];
    for auth in bad {
        server.send(Method::POST, REGISTER, auth, Some(&registration("w-auth"))).await.assert_error(401);
        server.send(Method::PATCH, "/_worker/workers/w-auth", auth, None).await.assert_error(401);
        server
            .send(Method::PATCH, "/_worker/workers/w-auth", auth, Some(r#"{"status":"busy"}"#))
            .await
            .assert_error(401);
        server.send(Method::GET, "/_worker/workers/w-auth/tasks/next", auth, None).await.assert_error(401);
        server.send(Method::POST, RESULT, auth, Some(&result)).await.assert_error(401);
    }
    // None of the refused calls touched the job.
    let job = server.job(&job_id).await;
    assert_eq!(job["status"], "waiting_for_worker", "{job:#}");

    let (status, body) = worker.post_result(&task, json!({"status": "success"})).await;
    assert_eq!((status, body), (200, json!({"status": "result_accepted_success"})));
    server.wait_for_status(&job_id, "finished").await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_json_is_a_json_400() {
    let server = server().await;
    let worker = server.worker("w-json");
    worker.register(&["greet"]).await;
    for body in ["{", "{\"name\": }", "not json", "{\"a\":1}}"] {
        server.send(Method::POST, HELLO, Auth::Client(CLIENT_TOKEN), Some(body)).await.assert_error(400);
        server.send(Method::POST, REGISTER, Auth::Worker(WORKER_TOKEN), Some(body)).await.assert_error(400);
        server.send(Method::POST, RESULT, Auth::Worker(WORKER_TOKEN), Some(body)).await.assert_error(400);
        server
            .send(Method::PATCH, "/_worker/workers/w-json", Auth::Worker(WORKER_TOKEN), Some(body))
            .await
            .assert_error(400);
    }
    // Well-formed JSON that is not a create body.
    for body in ["[1, 2]", "\"Ada\"", "7", r#"{"initial_data": 5}"#, r#"{"webhook_url": "ftp://x/y"}"#] {
        let answer = server.send(Method::POST, HELLO, Auth::Client(CLIENT_TOKEN), Some(body)).await;
        assert_eq!(answer.status, 400, "create with {body}: {answer:?}");
        answer.assert_error(400);
    }
    // An empty body is an empty initial_data.
    let answer = server.send(Method::POST, HELLO, Auth::Client(CLIENT_TOKEN), Some("")).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let job = server.job(answer.json()["job_id"].as_str().unwrap()).await;
    assert_eq!(job["initial_data"], json!({}), "{job:#}");
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_a_json_413() {
    let server = server().await;
    let worker = server.worker("w-big");
    worker.register(&["greet"]).await;
    // Valid JSON, just too large (the limit is 1024 bytes).
    let big = json!({"worker_id": "w-big", "padding": "x".repeat(4096)}).to_string();
    server.send(Method::POST, HELLO, Auth::Client(CLIENT_TOKEN), Some(&big)).await.assert_error(413);
    server.send(Method::POST, REGISTER, Auth::Worker(WORKER_TOKEN), Some(&big)).await.assert_error(413);
    server.send(Method::POST, RESULT, Auth::Worker(WORKER_TOKEN), Some(&big)).await.assert_error(413);
    // A body just under the limit is fine.
    let small = json!({"name": "x".repeat(900)}).to_string();
    assert!(small.len() < 1024);
    let answer = server.send(Method::POST, HELLO, Auth::Client(CLIENT_TOKEN), Some(&small)).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    server.stop().await;
}

#[tokio::test]
async fn heartbeat_bodies_over_the_limit_are_a_json_413() {
    let server = server().await;
    let worker = server.worker("w-big");
    worker.register(&["greet"]).await;
    let big = json!({"status": "idle", "padding": "x".repeat(4096)}).to_string();
    let answer = server.send(Method::PATCH, "/_worker/workers/w-big", Auth::Worker(WORKER_TOKEN), Some(&big)).await;
    answer.assert_error(413);
    server.stop().await;
}

#[tokio::test]
async fn unknown_jobs_and_endpoints_are_a_json_404() {
    let server = server().await;
    let random = uuid::Uuid::new_v4();
    for id in [random.to_string(), "not-a-uuid".to_owned(), "12345".to_owned()] {
        server
            .send(Method::GET, &format!("/api/v1/jobs/{id}"), Auth::Client(CLIENT_TOKEN), None)
            .await
            .assert_error(404);
    }
    for (method, path) in [
        (Method::GET, "/nope"),
        (Method::POST, "/nope"),
        (Method::GET, "/api/v2/jobs/hello/extra"),
        (Method::GET, "/_public/nope"),
        (Method::POST, "/_worker/nope"),
    ] {
        let answer = server.send(method.clone(), path, Auth::Client(CLIENT_TOKEN), Some("{}")).await;
        assert_eq!(answer.status, 404, "{method} {path}: {answer:?}");
        answer.assert_error(404);
    }
    // `POST /api/v1/jobs/{x}` for a name no blueprint has: the path is also
    // `GET /api/v1/jobs/{job_id}`, so 405 is as right as 404 — but JSON either way.
    let answer =
        server.send(Method::POST, "/api/v1/jobs/no_such_blueprint", Auth::Client(CLIENT_TOKEN), Some("{}")).await;
    assert!(matches!(answer.status, 404 | 405), "{answer:?}");
    answer.assert_error(answer.status);
    server.stop().await;
}

/// Every error the API produces is in the spec's `{"error": …}` format, even
/// those raised by request parsing before a handler runs.
#[tokio::test]
async fn path_decoding_errors_are_json() {
    let server = server().await;
    // `%FF` is not UTF-8 once percent-decoded: no job can have this id.
    let answer = server.send(Method::GET, "/api/v1/jobs/%FF", Auth::Client(CLIENT_TOKEN), None).await;
    assert!(matches!(answer.status, 400 | 404), "{answer:?}");
    answer.assert_error(answer.status);
    server.stop().await;
}

#[tokio::test]
async fn create_body_with_initial_data_and_webhook_vs_bare_body() {
    let server = server().await;
    let wrapped = server
        .create_job(HELLO, json!({"initial_data": {"name": "Ada"}, "webhook_url": "http://127.0.0.1:9/hook"}))
        .await;
    let job = server.job(&wrapped).await;
    assert_eq!(job["initial_data"], json!({"name": "Ada"}), "{job:#}");
    assert_eq!(job["webhook_url"], "http://127.0.0.1:9/hook", "{job:#}");
    assert_eq!(job["blueprint_name"], "hello");
    assert_eq!(job["id"], wrapped.as_str());

    let bare = server.create_job(HELLO, json!({"name": "Grace", "extra": [1, 2]})).await;
    let job = server.job(&bare).await;
    assert_eq!(job["initial_data"], json!({"name": "Grace", "extra": [1, 2]}), "{job:#}");
    assert!(job["webhook_url"].is_null(), "{job:#}");

    // Only `initial_data`: no webhook.
    let only = server.create_job(HELLO, json!({"initial_data": {"name": "Lin"}})).await;
    let job = server.job(&only).await;
    assert_eq!(job["initial_data"], json!({"name": "Lin"}), "{job:#}");
    assert!(job["webhook_url"].is_null(), "{job:#}");

    // The job state carries the fields the spec promises.
    for key in ["id", "blueprint_name", "current_state", "status", "initial_data", "state_history", "webhook_url"] {
        assert!(job.get(key).is_some(), "job state lacks {key}: {job:#}");
    }
    server.stop().await;
}

#[tokio::test]
async fn job_state_never_shows_a_token() {
    let server = server().await;
    let worker = server.worker("w-secret");
    worker.register(&["greet"]).await;
    let job_id = server
        .create_job(HELLO, json!({"initial_data": {"name": "Ada"}, "webhook_url": "http://127.0.0.1:9/hook"}))
        .await;
    let check = |text: &str| {
        assert!(!text.contains(CLIENT_TOKEN), "job state shows the client token: {text}");
        assert!(!text.contains(WORKER_TOKEN), "job state shows the worker token: {text}");
    };
    check(&server.job_text(&job_id).await);
    let task = worker.next_task(Duration::from_secs(10)).await;
    check(&server.job_text(&job_id).await);
    worker.post_result(&task, json!({"data": {"greeting": "hi"}})).await;
    server.wait_for_status(&job_id, "finished").await;
    check(&server.job_text(&job_id).await);
    server.stop().await;
}

#[tokio::test]
async fn registration_needs_a_worker_id() {
    let server = server().await;
    for body in [json!({"worker_type": "test", "supported_tasks": ["greet"]}), json!({"worker_id": ""}), json!({})] {
        let answer = server.send(Method::POST, REGISTER, Auth::Worker(WORKER_TOKEN), Some(&body.to_string())).await;
        answer.assert_error(400);
    }
    let answer = server.send(Method::POST, REGISTER, Auth::Worker(WORKER_TOKEN), Some(&registration("w-ok"))).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), json!({"status": "registered"}));
    server.stop().await;
}

#[tokio::test]
async fn heartbeats_ping_update_and_know_their_worker() {
    let server = server().await;
    let worker = server.worker("w-beat");
    worker.register(&["other"]).await;

    let ping = worker.heartbeat(None).await;
    assert_eq!(ping.status, 200, "{ping:?}");
    assert_eq!(ping.json(), json!({"status": "ttl_refreshed"}));
    // `{}` is a ping too.
    let ping = worker.heartbeat(Some(json!({}))).await;
    assert_eq!(ping.status, 200, "{ping:?}");
    assert_eq!(ping.json(), json!({"status": "ttl_refreshed"}));

    let update = worker.heartbeat(Some(json!({"status": "busy", "load": 1, "supported_tasks": ["greet"]}))).await;
    assert_eq!(update.status, 200, "{update:?}");
    let body = update.json();
    assert_eq!(body["worker_id"], "w-beat", "{body:#}");
    assert_eq!(body["status"], "busy", "{body:#}");
    assert_eq!(body["load"].as_f64(), Some(1.0), "{body:#}");
    assert_eq!(body["supported_tasks"], json!(["greet"]), "{body:#}");
    assert_eq!(body["worker_type"], "test", "{body:#}");

    // The update is kept: a second partial update sees the first.
    let update = worker.heartbeat(Some(json!({"load": 0.5}))).await;
    let body = update.json();
    assert_eq!(body["status"], "busy", "{body:#}");
    assert_eq!(body["load"].as_f64(), Some(0.5), "{body:#}");
    assert_eq!(body["supported_tasks"], json!(["greet"]), "{body:#}");

    // The new supported_tasks is what matching uses: a greet task reaches
    // it once it reports idle (a busy worker gets none).
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    assert!(worker.poll().await.is_none(), "a busy worker got a task");
    assert_eq!(worker.heartbeat(Some(json!({"status": "idle"}))).await.status, 200);
    let task = worker.next_task(Duration::from_secs(10)).await;
    assert_eq!(task["job_id"], job_id.as_str());

    for body in [None, Some(json!({"status": "idle"}))] {
        let answer = server.worker("w-ghost").heartbeat(body).await;
        answer.assert_error(404);
    }
    // `POST /api/v1/jobs/{x}` for a name no blueprint has: the path is also
    // `GET /api/v1/jobs/{job_id}`, so 405 is as right as 404 — but JSON either way.
    let answer =
        server.send(Method::POST, "/api/v1/jobs/no_such_blueprint", Auth::Client(CLIENT_TOKEN), Some("{}")).await;
    assert!(matches!(answer.status, 404 | 405), "{answer:?}");
    answer.assert_error(answer.status);
    server.stop().await;
}

#[tokio::test]
async fn a_poll_with_no_task_answers_204_after_the_poll_timeout() {
    let server = server().await;
    let worker = server.worker("w-idle");
    worker.register(&["greet"]).await;
    let started = Instant::now();
    let answer = server.send(Method::GET, "/_worker/workers/w-idle/tasks/next", Auth::Worker(WORKER_TOKEN), None).await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 204, "{answer:?}");
    assert!(answer.text.is_empty(), "a 204 has no body: {answer:?}");
    assert!(elapsed >= Duration::from_millis(900), "the poll should wait ~1 s, answered after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "the poll should wait ~1 s, answered after {elapsed:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_waiting_poll_is_woken_as_soon_as_a_task_is_queued() {
    let poll_timeout = Duration::from_secs(10);
    let server = TestServer::start_with(Config { worker_poll_timeout: poll_timeout, ..config() }).await;
    server.worker("w-wake").register(&["greet"]).await;

    let poll = server.http.get(server.url("/_worker/workers/w-wake/tasks/next")).header("X-Worker-Token", WORKER_TOKEN);
    let waiting = tokio::spawn(async move {
        let response = poll.send().await.expect("poll request");
        let status = response.status().as_u16();
        let body: Value = if status == 200 { response.json().await.expect("task is JSON") } else { Value::Null };
        (status, body, Instant::now())
    });
    // Nothing the server exposes says a poll is parked, so give the request a
    // moment to reach it, and check that it is indeed still waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the poll returned before any task existed");

    let created = Instant::now();
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    let (status, task, answered) =
        tokio::time::timeout(poll_timeout * 2, waiting).await.expect("the poll answers").expect("poll task");
    let latency = answered.duration_since(created);
    assert_eq!(status, 200, "the waiting poll should get the task");
    assert_eq!(task["job_id"], job_id.as_str(), "{task:#}");
    assert_eq!(task["type"], "greet", "{task:#}");
    for key in ["job_id", "task_id", "type", "params", "priority", "tracing_context"] {
        assert!(task.get(key).is_some(), "task lacks {key}: {task:#}");
    }
    // W3C trace context: the job's trace (its id), the task's span.
    let traceparent = task["tracing_context"]["traceparent"].as_str().unwrap_or_default();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent:?}");
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{traceparent:?}");
    assert_eq!(parts[1], job_id.replace('-', ""), "the trace id is the job id");
    assert_eq!(parts[2], &task["task_id"].as_str().unwrap().replace('-', "")[..16], "the span id is the task's");
    assert!(latency < Duration::from_secs(2), "the poll was answered {latency:?} after the job was created");
    server.stop().await;
}

#[tokio::test]
async fn a_job_waits_for_a_worker_that_registers_later() {
    let server = server().await;
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    let job = server.wait_for_status(&job_id, "waiting_for_worker").await;
    assert_eq!(job["current_task"]["type"], "greet", "{job:#}");
    assert!(job["current_task"]["worker_id"].is_null(), "no worker exists yet: {job:#}");

    let worker = server.worker("w-late");
    worker.register(&["greet"]).await;
    let task = worker.next_task(Duration::from_secs(10)).await;
    assert_eq!(task["job_id"], job_id.as_str(), "{task:#}");
    assert_eq!(task["params"], json!({"name": "Ada"}), "{task:#}");
    let job = server.job(&job_id).await;
    assert_eq!(job["current_task"]["worker_id"], "w-late", "{job:#}");

    let (status, _) = worker.post_result(&task, json!({"status": "success", "data": {"greeting": "Hi"}})).await;
    assert_eq!(status, 200);
    server.wait_for_status(&job_id, "finished").await;
    server.stop().await;
}

#[tokio::test]
async fn tasks_only_go_to_workers_that_take_their_type() {
    let server = server().await;
    let other = server.worker("w-other");
    let greet = server.worker("w-greet");
    other.register(&["other"]).await;
    greet.register(&["greet"]).await;

    let jobs = [
        server.create_job(HELLO, json!({"name": "A"})).await,
        server.create_job(HELLO, json!({"name": "B"})).await,
        server.create_job(HELLO, json!({"name": "C"})).await,
    ];
    let mut seen = Vec::new();
    for _ in &jobs {
        let task = greet.next_task(Duration::from_secs(10)).await;
        assert_eq!(task["type"], "greet");
        seen.push(task["job_id"].as_str().unwrap().to_owned());
    }
    seen.sort();
    let mut expected = jobs.to_vec();
    expected.sort();
    assert_eq!(seen, expected);
    other.assert_no_task().await;
    for job_id in &jobs {
        let job = server.job(job_id).await;
        assert_eq!(job["current_task"]["worker_id"], "w-greet", "{job:#}");
    }
    server.stop().await;
}

/// `pipeline`'s `publish` task has priority 5, its `fetch` task 0: a publish
/// task queued after a fetch task for the same worker is handed out first.
#[tokio::test]
async fn higher_priority_tasks_are_handed_out_first() {
    let server = server().await;
    let worker = server.worker("w-prio");
    worker.register(&["fetch", "publish"]).await;

    let first = server.create_job("/api/v1/jobs/pipeline", json!({"url": "https://a.example"})).await;
    let fetch_first = worker.next_task(Duration::from_secs(10)).await;
    assert_eq!((fetch_first["job_id"].as_str(), fetch_first["type"].as_str()), (Some(first.as_str()), Some("fetch")));

    // A second job's fetch task (priority 0) waits in the worker's queue…
    let second = server.create_job("/api/v1/jobs/pipeline", json!({"url": "https://b.example"})).await;
    server.wait_for_status(&second, "waiting_for_worker").await;
    // …when the first job's publish task (priority 5) is queued behind it.
    let (status, _) = worker.post_result(&fetch_first, json!({"data": {"content": "abc"}})).await;
    assert_eq!(status, 200);
    server
        .wait_for(&first, Duration::from_secs(10), |j| {
            j["current_state"] == "publish" && j["status"] == "waiting_for_worker"
        })
        .await;

    let next = worker.next_task(Duration::from_secs(10)).await;
    assert_eq!(next["type"], "publish", "the priority-5 task should come first: {next:#}");
    assert_eq!(next["priority"], 5);
    assert_eq!(next["job_id"], first.as_str());
    let after = worker.next_task(Duration::from_secs(10)).await;
    assert_eq!(after["type"], "fetch", "{after:#}");
    assert_eq!(after["job_id"], second.as_str());
    assert_eq!(after["priority"], 0);
    server.stop().await;
}

#[tokio::test]
async fn wrong_methods_are_json_errors() {
    let server = server().await;
    let job_id = server.create_job(HELLO, json!({})).await;
    let answer = server.send(Method::DELETE, &format!("/api/v1/jobs/{job_id}"), Auth::Client(CLIENT_TOKEN), None).await;
    answer.assert_error(405);
    let answer = server.send(Method::GET, REGISTER, Auth::Worker(WORKER_TOKEN), None).await;
    assert!(matches!(answer.status, 404 | 405), "{answer:?}");
    answer.assert_error(answer.status);
    server.stop().await;
}

/// `GET /api/v1/blueprints/{name}/graph`: DOT for a loaded blueprint, 404 for
/// an unknown one, 401 without a client token.
#[tokio::test]
async fn blueprint_graphs_render_as_dot() {
    let server = TestServer::start().await;
    let response = server
        .http
        .get(server.url("/api/v1/blueprints/pipeline/graph"))
        .header("X-Avtomatika-Token", avtomatika_tests::CLIENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/vnd.graphviz; charset=utf-8");
    let dot = response.text().await.unwrap();
    assert!(dot.starts_with("digraph \"pipeline\" {"), "{dot}");
    for edge in ["\"fetch\" -> \"transform\"", "\"transform\" -> \"publish\"", "\"publish\" -> \"finished\""] {
        assert!(dot.contains(edge), "{edge} missing from {dot}");
    }
    let unknown = server
        .http
        .get(server.url("/api/v1/blueprints/nope/graph"))
        .header("X-Avtomatika-Token", avtomatika_tests::CLIENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let anonymous = server.http.get(server.url("/api/v1/blueprints/pipeline/graph")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    server.stop().await;
}

/// `GET /api/v1/workers`: the live workers with what they reported; a worker
/// whose liveness lapsed is not listed.
#[tokio::test]
async fn live_workers_are_listed() {
    let mut config = avtomatika_tests::test_config();
    config.worker_health_check_interval = Duration::from_millis(150);
    let server = TestServer::start_with(config).await;
    server.worker("w-list-b").register(&["greet"]).await;
    server.worker("w-list-a").register(&["fetch", "publish"]).await;
    let list = |server: &TestServer| {
        let request = server
            .http
            .get(server.url("/api/v1/workers"))
            .header("X-Avtomatika-Token", avtomatika_tests::CLIENT_TOKEN)
            .send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let workers = list(&server).await;
    let ids: Vec<&str> = workers.as_array().unwrap().iter().map(|w| w["worker_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["w-list-a", "w-list-b"]);
    assert_eq!(workers[0]["supported_tasks"], json!(["fetch", "publish"]));
    assert_eq!(workers[0]["in_flight"], 0);
    // Liveness is twice the health-check interval: 300 ms here.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(list(&server).await, json!([]));
    let anonymous = server.http.get(server.url("/api/v1/workers")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    server.stop().await;
}
