//! `/_worker/…`: the worker API (worker token).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiBody, ApiJson, ApiPath, RxonVersion, WorkerAuth, WorkerIdHeader, body_limit};
use crate::config::Config;
use crate::model::{ResultWire, WorkerPatch, WorkerRegistration};
use crate::orchestrator::Heartbeat;

/// The longest a task poll waits while the server drains.
const DRAINING_POLL_WAIT: Duration = Duration::from_secs(1);

/// Registration and heartbeat bodies are small documents: they get
/// `WORKER_MAX_BODY_BYTES`, not the limit results and jobs need.
pub fn routes(config: &Config) -> Router<AppState> {
    let small = || body_limit(config.limits.worker_body_bytes, config.max_request_body_bytes);
    Router::new()
        .route("/_worker/workers/register", post(register).layer(small()))
        .route("/_worker/workers/{worker_id}", patch(heartbeat).layer(small()))
        .route("/_worker/workers/{worker_id}/tasks/next", get(next_task))
        .route("/_worker/tasks/result", post(result))
        .route("/_worker/workers/{worker_id}/jobs/{job_id}/tasks/{task_id}", get(task_status))
        .route("/_worker/auth/token", post(access_token).layer(small()))
}

async fn register(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    ApiJson(registration): ApiJson<WorkerRegistration>,
) -> Result<Json<Value>, ApiError> {
    state.orchestrator.register_worker(&token, registration).await?;
    Ok(Json(json!({ "status": "registered" })))
}

/// An empty body (or `{}`) is a ping; a JSON object updates the worker.
async fn heartbeat(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    ApiPath(worker_id): ApiPath<String>,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let patch = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        // Straight into the typed update: a non-object is refused by serde
        // without building a `Value` of the whole body first.
        serde_json::from_slice::<Option<WorkerPatch>>(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid worker update (a JSON object expected): {e}")))?
            .filter(|patch| !patch.is_empty())
    };
    Ok(match state.orchestrator.heartbeat(&token, &worker_id, patch).await? {
        Heartbeat::Refreshed => Json(json!({ "status": "ttl_refreshed" })).into_response(),
        Heartbeat::Updated { worker, cancel } if cancel.is_empty() => Json(worker).into_response(),
        // The newest `rxon` SDKs stop the tasks listed here.
        Heartbeat::Updated { worker, cancel } => {
            let mut body = serde_json::to_value(&worker).map_err(|e| ApiError::Internal(e.into()))?;
            body["cancel_task_ids"] = json!(cancel);
            Json(body).into_response()
        }
    })
}

async fn next_task(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    ApiPath(worker_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    // Polls parked when the drain starts answer at once, so they do not hold
    // the server open; the drain ends their wait rather than dropping the
    // call, which could lose a task Redis had just popped. Later ones still
    // get what is queued (on memory storage nothing else ever will), but wait
    // only briefly: long enough that a worker polling again at once does not spin.
    let draining = state.draining.is_cancelled();
    let timeout = state.orchestrator.config.worker_poll_timeout;
    let (wait, stop) = if draining {
        (timeout.min(DRAINING_POLL_WAIT), CancellationToken::new())
    } else {
        (timeout, state.draining.clone())
    };
    let task = state.orchestrator.next_task(&token, &worker_id, wait, &stop).await?;
    Ok(match task {
        Some(task) => Json(task).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn result(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    protocol: RxonVersion,
    ApiJson(wire): ApiJson<ResultWire>,
) -> Result<Json<Value>, ApiError> {
    let body = wire.into_body(protocol.0.is_some()).map_err(ApiError::BadRequest)?;
    let ack = state.orchestrator.accept_result(&token, body).await?;
    Ok(Json(json!({ "status": ack.as_str() })))
}

/// Whether the client asked to cancel a task this worker holds: workers
/// without a WebSocket poll this while they work.
async fn task_status(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    ApiPath((worker_id, job_id, task_id)): ApiPath<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let orchestrator = &state.orchestrator;
    let worker_id = orchestrator.authorize_worker(&token, Some(&worker_id)).await?;
    let cancelled = orchestrator.cancellation_requested(&worker_id, &job_id, &task_id).await?;
    Ok(Json(json!({ "job_id": job_id, "task_id": task_id, "cancellation_requested": cancelled })))
}

/// `POST /_worker/auth/token`, the STS exchange of the `rxon` SDKs: a
/// short-lived access token for the worker the presented token may act as
/// (its own token, the global one with `X-Worker-ID`, or a current access
/// token, which renews itself).
async fn access_token(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    WorkerIdHeader(claimed): WorkerIdHeader,
) -> Result<Json<Value>, ApiError> {
    let (worker_id, access_token, expires_in) =
        state.orchestrator.issue_access_token(&token, claimed.as_deref()).await?;
    Ok(Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "worker_id": worker_id,
    })))
}
