//! The live channel to workers through the real server: WebSockets on
//! `/_worker/ws[/{id}]` (authentication, one socket per worker, cancel
//! pushed the moment a client cancels, progress coming up, bad input),
//! progress over `POST /_worker/events`, on memory and across two
//! instances on Redis; and the RXON generation's result layout, client
//! header and error codes.

use std::time::{Duration, Instant};

use avtomatika_tests::config::Config;
use avtomatika_tests::{Auth, CLIENT_TOKEN, TestServer, WORKER_TOKEN, manual_watcher_config, test_config};
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const HELLO: &str = "/api/v1/jobs/hello";

/// Opens `path` as a WebSocket with `headers`; the HTTP status when refused.
async fn open(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Result<Socket, u16> {
    let url = server.url(path).replacen("http", "ws", 1);
    let mut request = url.into_client_request().expect("a WebSocket request");
    for (name, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        request.headers_mut().insert(name, value.parse().expect("a header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("WebSocket to {path}: {e}"),
    }
}

async fn open_as(server: &TestServer, worker_id: &str) -> Socket {
    open(server, &format!("/_worker/ws/{worker_id}"), &[("X-Worker-Token", WORKER_TOKEN)]).await.expect("socket opens")
}

/// The next text message (pings skipped), within `timeout`.
async fn next_text(socket: &mut Socket, timeout: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Some(serde_json::from_str(&text).expect("JSON command")),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(Ok(other))) => panic!("unexpected message {other:?}"),
        }
    }
}

/// How the server closed `socket`: its close code, if it sent one.
async fn close_code(socket: &mut Socket) -> Option<CloseCode> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return None,
            Err(_) => panic!("the socket was not closed"),
        }
    }
}

async fn send_json(socket: &mut Socket, message: Value) {
    socket.send(Message::Text(message.to_string().into())).await.expect("send over the socket");
}

async fn cancel(server: &TestServer, job_id: &str) -> Value {
    let answer =
        server.send(Method::POST, &format!("/api/v1/jobs/{job_id}/cancel"), Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()
}

/// Waits until the job shows `progress`.
async fn wait_progress(server: &TestServer, job_id: &str, progress: f64) -> Value {
    server.wait_for(job_id, Duration::from_secs(10), |job| job["progress"].as_f64() == Some(progress)).await
}

#[tokio::test]
async fn sockets_are_authenticated_like_other_worker_routes() {
    let dir = tempfile::tempdir().unwrap();
    let workers = dir.path().join("workers.toml");
    std::fs::write(&workers, "[own]\ntoken = \"own-token\"\n").unwrap();
    let server = TestServer::start_with(Config { workers_config_path: Some(workers), ..test_config() }).await;

    // A worker with a token of its own is known by it, even on the bare route (1.0b3).
    let mut own = open(&server, "/_worker/ws", &[("X-Worker-Token", "own-token")]).await.expect("own token");
    // The global token must say which worker it is.
    assert_eq!(open(&server, "/_worker/ws", &[("X-Worker-Token", WORKER_TOKEN)]).await.err(), Some(400));
    let named = [("X-Worker-Token", WORKER_TOKEN), ("X-Worker-ID", "anon")];
    assert!(open(&server, "/_worker/ws", &named).await.is_ok(), "X-Worker-ID names it");
    assert!(open(&server, "/_worker/ws/anon-2", &[("X-Worker-Token", WORKER_TOKEN)]).await.is_ok());
    // No token, a wrong one, or another worker's id: refused.
    assert_eq!(open(&server, "/_worker/ws/anon", &[]).await.err(), Some(401));
    assert_eq!(open(&server, "/_worker/ws/anon", &[("X-Worker-Token", "wrong")]).await.err(), Some(401));
    assert_eq!(open(&server, "/_worker/ws/own", &[("X-Worker-Token", WORKER_TOKEN)]).await.err(), Some(401));
    assert_eq!(open(&server, "/_worker/ws/anon", &[("X-Worker-Token", "own-token")]).await.err(), Some(401));

    // A second socket for the same worker replaces the first.
    let _again = open(&server, "/_worker/ws/own", &[("X-Worker-Token", "own-token")]).await.expect("second socket");
    assert_eq!(close_code(&mut own).await, Some(CloseCode::Policy));
    server.stop().await;
}

/// One worker holding a `hello` task, with the job id and the task.
async fn held_task(server: &TestServer, worker_id: &str) -> (String, Value) {
    let worker = server.worker(worker_id);
    worker.register(&["greet"]).await;
    let job_id = server.create_job(HELLO, json!({"initial_data": {"name": "Ada"}})).await;
    let task = worker.next_task(Duration::from_secs(10)).await;
    assert_eq!(task["job_id"], job_id.as_str());
    (job_id, task)
}

#[tokio::test]
async fn a_cancel_is_pushed_to_the_workers_socket_at_once() {
    let server = TestServer::start().await;
    let (job_id, task) = held_task(&server, "sock").await;
    let mut socket = open_as(&server, "sock").await;

    let asked = Instant::now();
    assert_eq!(cancel(&server, &job_id).await, json!({"status": "cancellation_request_sent"}));
    let command = next_text(&mut socket, Duration::from_secs(2)).await.expect("a cancel command");
    let latency = asked.elapsed();
    // Both generations' keys: 1.0b3 reads `type`, rxon `command`.
    assert_eq!(command["type"], "cancel_task");
    assert_eq!(command["command"], "cancel_task");
    assert_eq!((&command["job_id"], &command["task_id"]), (&task["job_id"], &task["task_id"]));
    assert!(latency < Duration::from_secs(1), "pushed in {latency:?}");
    let (status, _) = server.worker("sock").post_result(&task, json!({"status": "cancelled"})).await;
    assert_eq!(status, 200);
    server.wait_for_status(&job_id, "cancelled").await;

    // Without a socket the worker sees the flag instead.
    drop(socket);
    let (job_id, task) = held_task(&server, "poller").await;
    assert_eq!(cancel(&server, &job_id).await, json!({"status": "cancellation_request_accepted"}));
    let flag = server
        .send(
            Method::GET,
            &format!("/_worker/workers/poller/jobs/{job_id}/tasks/{}", task["task_id"].as_str().unwrap()),
            Auth::Worker(WORKER_TOKEN),
            None,
        )
        .await;
    assert_eq!(flag.json()["cancellation_requested"], true, "{flag:?}");
    // The newest SDKs learn it from their heartbeat's answer instead: the
    // tasks they say they run that they should stop, once.
    let worker = server.worker("poller");
    let beat = json!({"status": "busy", "current_tasks": [task["task_id"], uuid::Uuid::new_v4()]});
    let answer = worker.heartbeat(Some(beat.clone())).await;
    assert_eq!(answer.json()["cancel_task_ids"], json!([task["task_id"]]), "{answer:?}");
    let again = worker.heartbeat(Some(beat)).await;
    assert!(again.json().get("cancel_task_ids").is_none(), "{again:?}");
    server.stop().await;
}

#[tokio::test]
async fn progress_comes_up_the_socket_in_every_generations_shape() {
    let server = TestServer::start().await;
    let (job_id, task) = held_task(&server, "reporter").await;
    let task_id = task["task_id"].as_str().unwrap();
    assert_eq!(server.job(&job_id).await["progress"], 0.0, "nothing reported yet");
    let mut socket = open_as(&server, "reporter").await;

    // 1.0b3
    send_json(
        &mut socket,
        json!({"type": "progress_update", "job_id": job_id, "task_id": task_id,
                                  "progress": 0.25, "message": "a quarter"}),
    )
    .await;
    let job = wait_progress(&server, &job_id, 0.25).await;
    assert_eq!(job["progress_message"], "a quarter");
    // rxon 1.0b2
    send_json(
        &mut socket,
        json!({"event": "progress_update", "job_id": job_id, "task_id": task_id,
                                  "progress": 0.5, "message": "half"}),
    )
    .await;
    wait_progress(&server, &job_id, 0.5).await;
    // rxon 1.0b17, over the socket and over HTTP
    let event = |progress: f64| {
        json!({"event_id": "e1", "worker_id": "reporter", "origin_worker_id": "reporter", "event_type": "progress",
               "payload": {"progress": progress, "message": "events"}, "target_job_id": job_id,
               "target_task_id": task_id})
    };
    send_json(&mut socket, event(0.75)).await;
    wait_progress(&server, &job_id, 0.75).await;
    let posted =
        server.send(Method::POST, "/_worker/events", Auth::Worker(WORKER_TOKEN), Some(&event(1.0).to_string())).await;
    assert_eq!((posted.status, posted.json()), (200, json!({"status": "event_accepted"})));
    wait_progress(&server, &job_id, 1.0).await;
    let listed = server.send(Method::GET, "/api/v1/jobs", Auth::Client(CLIENT_TOKEN), None).await.json();
    let row = listed.as_array().unwrap().iter().find(|job| job["id"] == job_id.as_str()).expect("listed").clone();
    assert_eq!((row["progress"].as_f64(), row["progress_message"].as_str()), (Some(1.0), Some("events")));

    // Another worker cannot report on this task.
    let mut forged = event(0.1);
    forged["worker_id"] = json!("intruder");
    let refused =
        server.send(Method::POST, "/_worker/events", Auth::Worker(WORKER_TOKEN), Some(&forged.to_string())).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let mut intruder = open_as(&server, "intruder").await;
    send_json(&mut intruder, json!({"type": "progress_update", "job_id": job_id, "task_id": task_id, "progress": 0.1}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.job(&job_id).await["progress"], 1.0, "the intruder's report was not kept");

    // The result ends the task; the job's next task starts again from 0.
    let (status, _) =
        server.worker("reporter").post_result(&task, json!({"status": "success", "data": {"greeting": "hi"}})).await;
    assert_eq!(status, 200);
    let done = server.wait_for_status(&job_id, "finished").await;
    assert_eq!(done["progress"], 1.0, "an ended job keeps its last report");
    server.stop().await;
}

#[tokio::test]
async fn bad_socket_input_is_bounded_and_loses_nothing() {
    let server = TestServer::start().await;
    let (job_id, task) = held_task(&server, "noisy").await;
    let task_id = task["task_id"].as_str().unwrap();
    let mut socket = open_as(&server, "noisy").await;
    // Unknown types, non-JSON and binary frames are ignored; the socket stays.
    send_json(&mut socket, json!({"type": "reticulate_splines"})).await;
    socket.send(Message::Text("not json".into())).await.unwrap();
    socket.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    // A flood: 5,000 reports in a burst are coalesced, the last one kept.
    for i in 1..=5000 {
        let progress = f64::from(i) / 5000.0;
        send_json(
            &mut socket,
            json!({"type": "progress_update", "job_id": job_id, "task_id": task_id,
                                      "progress": progress}),
        )
        .await;
    }
    wait_progress(&server, &job_id, 1.0).await;
    // The cancel still arrives on the same socket afterwards.
    assert_eq!(cancel(&server, &job_id).await["status"], "cancellation_request_sent");
    let command = next_text(&mut socket, Duration::from_secs(5)).await.expect("the cancel after the flood");
    assert_eq!(command["task_id"], task["task_id"]);
    // Other requests were served meanwhile.
    assert_eq!(server.send(Method::GET, "/_public/status", Auth::None, None).await.status, 200);
    // An oversized message (over 64 KiB) closes the socket.
    let huge = json!({"type": "progress_update", "message": "x".repeat(70 * 1024)});
    let _ = socket.send(Message::Text(huge.to_string().into())).await;
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::Size));
    // A worker whose socket dropped keeps getting tasks by polling.
    let job_id = server.create_job(HELLO, json!({"initial_data": {"name": "Bob"}})).await;
    let task = server.worker("noisy").next_task(Duration::from_secs(10)).await;
    assert_eq!(task["job_id"], job_id.as_str());
    server.stop().await;
}

#[tokio::test]
async fn sockets_are_closed_cleanly_on_shutdown() {
    let server = TestServer::start().await;
    server.worker("leaving").register(&["greet"]).await;
    let mut socket = open_as(&server, "leaving").await;
    assert_eq!(server.metric("avtomatika_worker_sockets").await, 1.0);
    let stop = tokio::spawn(server.stop());
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::Away));
    stop.await.unwrap();
}

/// Two instances on Redis (database 9, emptied first): the worker's socket is
/// on B, the client cancels on A; progress sent to B shows on A.
#[tokio::test]
async fn cancel_and_progress_cross_instances_on_redis() {
    const DB: u32 = 9;
    let client = redis::Client::open(format!("redis://127.0.0.1:6379/{DB}")).expect("a Redis URL");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis at 127.0.0.1:6379");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.expect("FLUSHDB");
    let start = |instance: &str| {
        TestServer::start_with(Config {
            redis: Some(avtomatika::config::RedisConfig { host: "127.0.0.1".into(), port: 6379, db: DB }),
            instance_id: instance.into(),
            ..manual_watcher_config()
        })
    };
    let (a, b) = (start("live-a").await, start("live-b").await);
    let (job_id, task) = held_task(&a, "far").await;
    let task_id = task["task_id"].as_str().unwrap();
    let mut socket = open_as(&b, "far").await;

    send_json(
        &mut socket,
        json!({"type": "progress_update", "job_id": job_id, "task_id": task_id,
                                  "progress": 0.5, "message": "from B"}),
    )
    .await;
    let job = wait_progress(&a, &job_id, 0.5).await;
    assert_eq!(job["progress_message"], "from B");

    let asked = Instant::now();
    assert_eq!(cancel(&a, &job_id).await["status"], "cancellation_request_sent");
    let command = next_text(&mut socket, Duration::from_secs(2)).await.expect("the cancel, through Redis");
    assert_eq!(command["task_id"], task["task_id"]);
    assert!(asked.elapsed() < Duration::from_secs(1), "pushed across instances in {:?}", asked.elapsed());

    // The worker moves its socket to A: B lets its own go.
    let _moved = open_as(&a, "far").await;
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::Policy));
    a.stop().await;
    b.stop().await;
}

/// `POST /_worker/auth/token` as `avtomatika_tests` sends it: `token`, and
/// `X-Worker-ID` when given.
async fn exchange(server: &TestServer, token: &str, worker_id: Option<&str>) -> (u16, Value) {
    let mut request = server.http.post(server.url("/_worker/auth/token")).header("X-Worker-Token", token);
    if let Some(id) = worker_id {
        request = request.header("X-Worker-ID", id);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn poll_with(server: &TestServer, worker_id: &str, token: &str) -> u16 {
    let path = format!("/_worker/workers/{worker_id}/tasks/next");
    let response = server.http.get(server.url(&path)).header("X-Worker-Token", token).send().await.unwrap();
    response.status().as_u16()
}

/// Short-lived access tokens: issued for a worker's own token (or the global
/// one naming the worker), good for that worker only, renewed by
/// themselves, revoked by `reload-workers`; on Redis, any instance accepts
/// what another issued.
#[tokio::test]
async fn access_tokens_are_issued_scoped_renewed_and_revoked() {
    const DB: u32 = 4;
    let client = redis::Client::open(format!("redis://127.0.0.1:6379/{DB}")).expect("a Redis URL");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis at 127.0.0.1:6379");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.expect("FLUSHDB");
    let dir = tempfile::tempdir().unwrap();
    let workers = dir.path().join("workers.toml");
    std::fs::write(&workers, "[own]\ntoken = \"own-token\"\n").unwrap();
    let start = |instance: &str| {
        TestServer::start_with(Config {
            redis: Some(avtomatika::config::RedisConfig { host: "127.0.0.1".into(), port: 6379, db: DB }),
            instance_id: instance.into(),
            workers_config_path: Some(workers.clone()),
            ..manual_watcher_config()
        })
    };
    let (a, b) = (start("sts-a").await, start("sts-b").await);

    let (status, issued) = exchange(&a, "own-token", None).await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!((issued["worker_id"].as_str(), issued["expires_in"].as_u64()), (Some("own"), Some(3600)));
    let token = issued["access_token"].as_str().unwrap().to_owned();
    assert!(!token.contains("own-token"), "the secret is not in the token");
    // Good for its worker, on either instance, for every worker route.
    let registration = json!({"worker_id": "own", "supported_tasks": ["greet"]}).to_string();
    let registered = b.send(Method::POST, "/_worker/workers/register", Auth::Worker(&token), Some(&registration)).await;
    assert_eq!(registered.status, 200, "{registered:?}");
    assert_eq!(poll_with(&b, "own", &token).await, 204);
    assert!(open(&b, "/_worker/ws", &[("X-Worker-Token", &token)]).await.is_ok(), "the socket knows it by its token");
    // Not for another worker, nor as a client token.
    assert_eq!(poll_with(&a, "someone-else", &token).await, 401);
    assert_eq!(server_get(&a, "/api/v1/jobs", &token).await, 401);
    // Forged or wrong tokens are refused.
    assert_eq!(poll_with(&a, "own", &format!("{token}0")).await, 401);
    assert_eq!(exchange(&a, "wrong", None).await.0, 401);
    // The global token must name the worker.
    assert_eq!(exchange(&a, WORKER_TOKEN, None).await.0, 400);
    let (status, anon) = exchange(&a, WORKER_TOKEN, Some("anon")).await;
    assert_eq!((status, anon["worker_id"].as_str()), (200, Some("anon")));
    assert_eq!(exchange(&a, WORKER_TOKEN, Some("own")).await.0, 401, "own has a token of its own");
    // An access token renews itself.
    let (status, renewed) = exchange(&b, &token, None).await;
    assert_eq!((status, renewed["worker_id"].as_str()), (200, Some("own")));
    let renewed = renewed["access_token"].as_str().unwrap().to_owned();

    // reload-workers on A revokes every access token, on B too.
    let reload = a.send(Method::POST, "/api/v1/admin/reload-workers", Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!(reload.status, 200, "{reload:?}");
    let started = Instant::now();
    while poll_with(&b, "own", &renewed).await != 401 {
        assert!(started.elapsed() < Duration::from_secs(7), "instance b still accepts a revoked token");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(poll_with(&a, "own", &token).await, 401);
    // The worker's own token still gets a new one.
    assert_eq!(exchange(&b, "own-token", None).await.0, 200);
    a.stop().await;
    b.stop().await;
}

async fn server_get(server: &TestServer, path: &str, client_token: &str) -> u16 {
    server.send(Method::GET, path, Auth::Client(client_token), None).await.status
}

#[tokio::test]
async fn the_rxon_generation_is_served_like_the_first() {
    let server = TestServer::start().await;
    // Clients written for RXON send X-Client-Token.
    let created = server
        .http
        .post(server.url(HELLO))
        .header("X-Client-Token", CLIENT_TOKEN)
        .json(&json!({"initial_data": {"name": "Ada"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let wrong = server.http.get(server.url("/api/v1/jobs")).header("X-Client-Token", "nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let job_id = created.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();

    // A flat result from rxon 1.0b17 leaves out `status` on success.
    let worker = server.worker("rx");
    worker.register(&["greet"]).await;
    let task = worker.next_task(Duration::from_secs(10)).await;
    assert_eq!(task["job_id"], job_id.as_str());
    let flat = json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": "rx",
                      "data": {"greeting": "flat"}});
    let without_header = worker.post_result_body(flat.clone()).await;
    assert_eq!(without_header.status, 400, "a 1.0b3 body saying nothing is refused: {without_header:?}");
    let accepted = server
        .http
        .post(server.url("/_worker/tasks/result"))
        .header("X-Worker-Token", WORKER_TOKEN)
        .header("X-RXON-Version", "1.0b17")
        .json(&flat)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let job = server.wait_for_status(&job_id, "finished").await;
    assert_eq!(job["state_history"]["greeting"], "flat");

    // The newer error codes, as the newest upstream treats them.
    for (code, status) in
        [("SECURITY_ERROR", "quarantined"), ("DEPENDENCY_ERROR", "quarantined"), ("INTEGRITY_MISMATCH_ERROR", "failed")]
    {
        let job_id = server.create_job(HELLO, json!({"initial_data": {"name": code}})).await;
        let task = worker.next_task(Duration::from_secs(10)).await;
        assert_eq!(task["job_id"], job_id.as_str());
        let failure = json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": "rx",
                             "status": "failure", "error": {"code": code, "message": "no"}});
        assert_eq!(worker.post_result_body(failure).await.status, 200);
        let job = server.wait_for_status(&job_id, status).await;
        assert!(job["error_message"].as_str().unwrap().contains(code), "{job:#}");
    }
    for code in ["TIMEOUT_ERROR", "RESOURCE_EXHAUSTED_ERROR", "INTERNAL_ERROR"] {
        let job_id = server.create_job(HELLO, json!({"initial_data": {"name": code}})).await;
        let task = worker.next_task(Duration::from_secs(10)).await;
        let failure = json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": "rx",
                             "status": "failure", "error": {"code": code, "message": "later"}});
        assert_eq!(worker.post_result_body(failure).await.status, 200);
        let again = worker.next_task(Duration::from_secs(10)).await;
        assert_eq!(again["job_id"], job_id.as_str(), "{code} is tried again");
        assert_ne!(again["task_id"], task["task_id"]);
        let (status, _) = worker.post_result(&again, json!({"status": "success", "data": {"greeting": "ok"}})).await;
        assert_eq!(status, 200);
        server.wait_for_status(&job_id, "finished").await;
    }
    server.stop().await;
}
