//! `GET /_worker/ws[/{worker_id}]` and `POST /_worker/events`: the live
//! channel to workers. Cancel commands go down the socket the moment a
//! client cancels; progress reports come up it (or, from the newest `rxon`
//! SDKs, as events over HTTP).
//!
//! Both SDK generations speak here: `avtomatika-worker` 1.0b3 connects to
//! `/_worker/ws` with only its token and sends `{"type": "progress_update",
//! …}`; `rxon` 1.0b2 sends `{"event": "progress_update", …}`; `rxon` 1.0b17
//! connects to `/_worker/ws/{id}` and sends worker events
//! `{"event_type": "progress", "payload": {"progress", "message"},
//! "target_job_id", "target_task_id", …}`.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, WorkerAuth, WorkerIdHeader};
use super::openapi::{
    self as doc, BadRequest, Forbidden, Internal, NotFound, PayloadTooLarge, Unauthorized, Unavailable, tags,
};
use crate::orchestrator::ProgressReport;
use crate::storage::INBOX_CAPACITY;

/// Largest message a worker may send over its socket; a larger one closes it.
pub const MAX_WS_MESSAGE_BYTES: usize = 64 * 1024;
/// A socket's read and write buffers (they grow for a larger message).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024;
/// How often the server pings an idle socket.
const PING_EVERY: Duration = Duration::from_secs(20);
/// A socket that sent nothing (not even a pong) for this long is closed.
const SILENT_FOR: Duration = Duration::from_secs(60);
/// Progress reports are written at most this often per socket: the latest
/// report of each task in the meantime is kept, earlier ones are dropped,
/// so a flood costs at most one write per task per interval.
const PROGRESS_FLUSH: Duration = Duration::from_millis(100);
/// Tasks whose progress one socket may have waiting for the next write.
const MAX_PENDING_TASKS: usize = 256;

pub fn routes(config: &crate::config::Config) -> OpenApiRouter<AppState> {
    let small = || super::extract::worker_body_limit(config);
    OpenApiRouter::new()
        .routes(routes!(connect_anonymous))
        .routes(routes!(connect_named))
        .routes(routes!(event).layer(small()))
}

/// The worker's live channel, as a WebSocket (`Upgrade: websocket`). Server
/// to worker: `{"type": "cancel_task", "command": "cancel_task", "job_id",
/// "task_id"}`; worker to server: progress, `{"type": "progress_update", …}`,
/// `{"event": "progress_update", …}` or `{"event_type": "progress", …}`.
#[utoipa::path(
    get, path = "/_worker/ws/{worker_id}", tag = tags::WORKER,
    security(("worker_token" = []), ("worker_access_token" = [])),
    params(("worker_id" = String, Path, description = "The worker's id.")),
    responses(
        (status = 101, description = "Switching protocols: the socket is open."),
        (status = 426, description = "Not a WebSocket upgrade request (axum's plain-text answer)."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn connect_named(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    Path(worker_id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let worker_id = state.orchestrator.authorize_worker(&token, Some(&worker_id)).await?;
    Ok(accept(state, worker_id, upgrade))
}

/// 1.0b3 names no worker: its own token does, or the `X-Worker-ID` header.
#[utoipa::path(
    get, path = "/_worker/ws", tag = tags::WORKER,
    security(("worker_token" = []), ("worker_access_token" = [])),
    params(("X-Worker-ID" = Option<String>, Header, description = "The worker, when the token is the global one.")),
    responses(
        (status = 101, description = "Switching protocols: the socket is open (messages as for `/_worker/ws/{worker_id}`)."),
        (status = 426, description = "Not a WebSocket upgrade request (axum's plain-text answer)."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn connect_anonymous(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    WorkerIdHeader(claimed): WorkerIdHeader,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let claimed = claimed.as_deref();
    let worker_id = match state.orchestrator.authorize_worker(&token, claimed).await {
        Err(crate::orchestrator::OrchestratorError::BadRequest(_)) if claimed.is_none() => {
            return Err(ApiError::BadRequest(
                "the global worker token does not say which worker this is: connect to /_worker/ws/{worker_id} \
                 or send the X-Worker-ID header (a worker with a token of its own is known by it)"
                    .into(),
            ));
        }
        other => other?,
    };
    Ok(accept(state, worker_id, upgrade))
}

fn accept(state: AppState, worker_id: String, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        // tungstenite's 128 KiB default buffers cost ~130 KB per idle
        // socket; the messages here are small (BENCHMARKS.md (k)).
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES)
        // A worker that stops reading gets its socket closed, not an
        // ever-growing buffer here.
        .max_write_buffer_size(MAX_WS_MESSAGE_BYTES * 4)
        .max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        .on_failed_upgrade(|e| tracing::info!(error = %e, "worker WebSocket upgrade failed"))
        .on_upgrade(move |socket| serve(state, worker_id, socket))
}

/// Why a socket's loop ended, and what the worker is told.
enum Closing {
    Replaced,
    Shutdown,
    Silent,
    /// The worker sent a message over [`MAX_WS_MESSAGE_BYTES`].
    TooLarge,
    /// The worker closed it or the connection broke: nothing to send.
    Gone,
}

async fn serve(state: AppState, worker_id: String, mut socket: WebSocket) {
    let (inbox_tx, mut inbox) = mpsc::channel::<String>(INBOX_CAPACITY);
    let storage = state.orchestrator.storage.clone();
    let channel = match storage.open_channel(&worker_id, inbox_tx).await {
        Ok(channel) => channel,
        Err(e) => {
            tracing::warn!(worker_id, error = %e, "cannot open the worker's channel; closing its socket");
            let _ = socket.send(close(close_code::AGAIN, "storage unavailable; reconnect later")).await;
            return;
        }
    };
    state.orchestrator.metrics.worker_socket(1);
    tracing::info!(worker_id, "worker socket connected");

    let mut pending: HashMap<String, ProgressReport> = HashMap::new();
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut flush = tokio::time::interval(PROGRESS_FLUSH);
    let mut last_heard = tokio::time::Instant::now();
    let mut ignored = 0u64;
    let closing = loop {
        tokio::select! {
            command = inbox.recv() => match command {
                Some(command) => {
                    if socket.send(Message::Text(command.into())).await.is_err() {
                        break Closing::Gone;
                    }
                }
                None => break Closing::Replaced,
            },
            message = socket.recv() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => break if too_large(e) { Closing::TooLarge } else { Closing::Gone },
                    None => break Closing::Gone,
                };
                last_heard = tokio::time::Instant::now();
                match message {
                    Message::Text(text) => match serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}")).and_then(|m| progress_in(&m)) {
                        Ok(Some(report)) => {
                            if pending.len() < MAX_PENDING_TASKS || pending.contains_key(&report.task_id) {
                                pending.insert(report.task_id.clone(), report);
                            }
                        }
                        Ok(None) => {}
                        Err(why) => {
                            ignored += 1;
                            // Once, then every thousandth: a flood must not flood the log.
                            if ignored % 1000 == 1 {
                                tracing::info!(worker_id, why, ignored, "worker socket message ignored");
                            }
                        }
                    },
                    Message::Close(_) => break Closing::Gone,
                    // Pongs only prove the worker is there; tungstenite answers pings.
                    Message::Ping(_) | Message::Pong(_) | Message::Binary(_) => {}
                }
            }
            _ = flush.tick(), if !pending.is_empty() => {
                write_progress(&state, &worker_id, &mut pending).await;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENT_FOR {
                    break Closing::Silent;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break Closing::Gone;
                }
            }
            () = state.draining.cancelled() => break Closing::Shutdown,
        }
    };
    write_progress(&state, &worker_id, &mut pending).await;
    let farewell = match closing {
        Closing::Replaced => Some(close(close_code::POLICY, "replaced by a newer connection of this worker")),
        Closing::Shutdown => Some(close(close_code::AWAY, "server shutting down")),
        Closing::Silent => Some(close(close_code::AWAY, "no pong in time")),
        Closing::TooLarge => Some(close(close_code::SIZE, "message over 64 KiB")),
        Closing::Gone => None,
    };
    if let Some(farewell) = farewell {
        let _ = socket.send(farewell).await;
    }
    if let Err(e) = storage.close_channel(&worker_id, channel).await {
        tracing::warn!(worker_id, error = %e, "cannot close the worker's channel");
    }
    state.orchestrator.metrics.worker_socket(-1);
    tracing::info!(worker_id, "worker socket closed");
}

/// Whether a receive failed because the worker's message was over the limit.
fn too_large(error: axum::Error) -> bool {
    let error = error.into_inner();
    matches!(error.downcast_ref::<tungstenite::Error>(), Some(tungstenite::Error::Capacity(_)))
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

async fn write_progress(state: &AppState, worker_id: &str, pending: &mut HashMap<String, ProgressReport>) {
    for (_, report) in pending.drain() {
        let (job_id, task_id) = (report.job_id.clone(), report.task_id.clone());
        if let Err(e) = state.orchestrator.report_progress(worker_id, report).await {
            tracing::info!(worker_id, job_id, task_id, error = %e, "progress report refused");
        }
    }
}

/// The progress report in a worker's message, in any generation's shape;
/// `Ok(None)` for a message of another kind this server knows but does not
/// act on; `Err` for one it cannot read.
fn progress_in(message: &Value) -> Result<Option<ProgressReport>, String> {
    let kind = ["type", "event", "event_type"]
        .iter()
        .find_map(|key| message.get(key).and_then(Value::as_str))
        .ok_or("no `type`, `event` or `event_type`")?;
    match kind {
        "progress_update" => report(message, message, "job_id", "task_id").map(Some),
        "progress" => {
            let payload = message.get("payload").ok_or("a progress event without `payload`")?;
            report(message, payload, "target_job_id", "target_task_id").map(Some)
        }
        other => Err(format!("unknown message type {:?}", truncate(other))),
    }
}

fn report(ids: &Value, values: &Value, job_key: &str, task_key: &str) -> Result<ProgressReport, String> {
    let text = |value: &Value, key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    Ok(ProgressReport {
        job_id: text(ids, job_key).ok_or_else(|| format!("no `{job_key}`"))?,
        task_id: text(ids, task_key).ok_or_else(|| format!("no `{task_key}`"))?,
        progress: values.get("progress").and_then(Value::as_f64).ok_or("no numeric `progress`")?,
        message: text(values, "message"),
    })
}

fn truncate(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `POST /_worker/events` (the newest `rxon` SDKs send progress here when
/// they have no socket): `{"worker_id", "event_type", "payload",
/// "target_job_id", "target_task_id", …}`. Progress is kept; other event
/// types are accepted and not acted on.
/// A worker event over HTTP: progress of a task, from the newest `rxon` SDKs.
#[utoipa::path(
    post, path = "/_worker/events", tag = tags::WORKER,
    security(("worker_token" = []), ("worker_access_token" = [])),
    params(("X-Worker-ID" = Option<String>, Header, description = "The worker, when the body does not name it.")),
    request_body(content = doc::WorkerEvent, content_type = "application/json"),
    responses(
        (status = 200, description = "Taken.", body = doc::StatusBody, example = json!({ "status": "event_accepted" })),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn event(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    WorkerIdHeader(header): WorkerIdHeader,
    ApiJson(event): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let claimed = event.get("worker_id").and_then(Value::as_str).or(header.as_deref()).filter(|id| !id.is_empty());
    let worker_id = state.orchestrator.authorize_worker(&token, claimed).await?;
    match progress_in(&event) {
        Ok(Some(report)) => state.orchestrator.report_progress(&worker_id, report).await?,
        Ok(None) => {}
        Err(why) if event.get("event_type").is_some() => {
            tracing::debug!(worker_id, why, "worker event not acted on");
        }
        Err(why) => return Err(ApiError::BadRequest(format!("invalid worker event: {why}"))),
    }
    Ok(Json(json!({ "status": "event_accepted" })))
}
