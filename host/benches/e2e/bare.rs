//! The yardstick of `e2e --bare` / `--compare-bare`: a bare in-memory axum
//! server speaking the four requests a `hello` job costs (create, status,
//! next task, result) with a map and a queue and no orchestration at all —
//! no blueprint, no record encoding, no indexes, no history. What the real
//! server spends beyond it per job is the cost of what it does (issue 19).
//! Run by the e2e bench as a child process of its own executable
//! (`--serve-bare PORT`), so its CPU is read from `/proc` like the server's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{CLIENT_TOKEN, WORKER_TOKEN};

/// How long a poll for a task waits, as `WORKER_POLL_TIMEOUT_SECONDS` in the bench.
const POLL: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Shared {
    jobs: Mutex<HashMap<Uuid, Value>>,
    tasks: Mutex<VecDeque<Value>>,
    task_ready: Notify,
}

type S = State<Arc<Shared>>;

fn allowed(headers: &HeaderMap, header: &str, token: &str) -> bool {
    headers.get(header).is_some_and(|v| v.as_bytes() == token.as_bytes())
}

async fn create(State(shared): S, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !allowed(&headers, "x-avtomatika-token", CLIENT_TOKEN) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let (job_id, task_id) = (Uuid::now_v7(), Uuid::new_v4());
    let job = json!({
        "id": job_id, "blueprint_name": "hello", "client": "bench", "current_state": "start",
        "status": "waiting_for_worker", "initial_data": body, "state_history": {},
    });
    lock(&shared.jobs).insert(job_id, job);
    let task = json!({ "job_id": job_id, "task_id": task_id, "type": "greet", "params": body, "priority": 0 });
    lock(&shared.tasks).push_back(task);
    shared.task_ready.notify_one();
    (StatusCode::ACCEPTED, Json(json!({ "status": "accepted", "job_id": job_id }))).into_response()
}

async fn status(State(shared): S, headers: HeaderMap, Path(id): Path<Uuid>) -> Response {
    if !allowed(&headers, "x-avtomatika-token", CLIENT_TOKEN) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match lock(&shared.jobs).get(&id) {
        Some(job) => Json(job.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn next_task(State(shared): S, headers: HeaderMap) -> Response {
    if !allowed(&headers, "x-worker-token", WORKER_TOKEN) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let deadline = tokio::time::Instant::now() + POLL;
    loop {
        // Registered before the queue is looked at, so a push in between wakes it.
        let ready = shared.task_ready.notified();
        if let Some(task) = lock(&shared.tasks).pop_front() {
            return Json(task).into_response();
        }
        if tokio::time::timeout_at(deadline, ready).await.is_err() {
            return StatusCode::NO_CONTENT.into_response();
        }
    }
}

async fn result(State(shared): S, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !allowed(&headers, "x-worker-token", WORKER_TOKEN) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(id) = body["job_id"].as_str().and_then(|id| id.parse::<Uuid>().ok()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut jobs = lock(&shared.jobs);
    let Some(job) = jobs.get_mut(&id) else { return StatusCode::NOT_FOUND.into_response() };
    job["status"] = json!("finished");
    job["current_state"] = json!("finished");
    job["state_history"] = body["result"]["data"].clone();
    Json(json!({ "status": "result_accepted_success" })).into_response()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves on 127.0.0.1:`port` until killed.
pub fn serve(port: u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let app = Router::new()
            .route("/_public/status", get(|| async { Json(json!({ "status": "ok" })) }))
            .route("/_worker/workers/register", post(|| async { Json(json!({ "status": "registered" })) }))
            .route("/api/v1/jobs/hello", post(create))
            .route("/api/v1/jobs/{id}", get(status))
            .route("/_worker/workers/{worker_id}/tasks/next", get(next_task))
            .route("/_worker/tasks/result", post(result))
            .with_state(Arc::new(Shared::default()));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the bare server");
        axum::serve(listener, app).await.expect("serve");
    });
}
