//! `/_worker/…`: the worker API (worker token).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiBody, ApiJson, ApiPath, RxonVersion, WorkerAuth, WorkerIdHeader, worker_body_limit};
use super::openapi::{
    self as doc, BadRequest, Conflict, Forbidden, Internal, NotFound, PayloadTooLarge, TooManyRequests, Unauthorized,
    Unavailable, tags,
};
use crate::config::Config;
use crate::model::{ResultWire, WorkerPatch, WorkerRegistration};
use crate::orchestrator::Heartbeat;

/// The longest a task poll waits while the server drains.
const DRAINING_POLL_WAIT: Duration = Duration::from_secs(1);

/// Registration and heartbeat bodies are small documents: they get
/// `WORKER_MAX_BODY_BYTES`, not the limit results and jobs need.
pub fn routes(config: &Config) -> OpenApiRouter<AppState> {
    let small = || worker_body_limit(config);
    OpenApiRouter::new()
        .routes(routes!(register).layer(small()))
        .routes(routes!(heartbeat).layer(small()))
        .routes(routes!(next_task))
        .routes(routes!(result))
        .routes(routes!(task_status))
        .routes(routes!(access_token).layer(small()))
}

/// Registers (or re-registers) a worker and what it can do.
#[utoipa::path(
    post, path = "/_worker/workers/register", tag = tags::WORKER,
    security(("worker_token" = []), ("worker_access_token" = [])),
    request_body(content = doc::WorkerRegistration, content_type = "application/json"),
    responses(
        (status = 200, description = "Registered.", body = doc::StatusBody, example = json!({ "status": "registered" })),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn register(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    ApiJson(registration): ApiJson<WorkerRegistration>,
) -> Result<Json<Value>, ApiError> {
    state.orchestrator.register_worker(&token, registration).await?;
    Ok(Json(json!({ "status": "registered" })))
}

/// An empty body (or `{}`) is a ping; a JSON object updates the worker.
/// Each call renews the worker's liveness.
#[utoipa::path(
    patch, path = "/_worker/workers/{worker_id}", tag = tags::WORKER,
    security(("worker_token" = []), ("worker_access_token" = [])),
    params(("worker_id" = String, Path, description = "The worker's id.")),
    request_body(content = Option<doc::WorkerUpdate>, content_type = "application/json", description = "Optional: none is a ping."),
    responses(
        (status = 200, description = "`{\"status\": \"ttl_refreshed\"}` for a ping, else the updated worker \
            (with `cancel_task_ids` when the client asked to cancel tasks it holds).", body = doc::Worker),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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

/// Long-polls for the worker's next task, up to `WORKER_POLL_TIMEOUT_SECONDS`.
#[utoipa::path(
    get, path = "/_worker/workers/{worker_id}/tasks/next", tag = tags::WORKER,
    security(("worker_token" = []), ("worker_access_token" = [])),
    params(("worker_id" = String, Path, description = "The worker's id.")),
    responses(
        (status = 200, description = "A task for this worker.", body = doc::Task),
        (status = 204, description = "No task came within the poll timeout."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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

/// A task's result; the job moves on by the blueprint's transitions.
#[utoipa::path(
    post, path = "/_worker/tasks/result", tag = tags::WORKER,
    security(("worker_token" = []), ("worker_access_token" = [])),
    params(("X-RXON-Version" = Option<String>, Header, description = "Sent by the `rxon` SDKs: the result is in their flat layout.")),
    request_body(content = doc::TaskResult, content_type = "application/json"),
    responses(
        (status = 200, description = "`result_accepted_success`, `result_accepted_failure`, `result_accepted_cancelled` \
            or `parallel_branch_result_accepted`; a result for a task the job no longer waits on is ignored.",
         body = doc::StatusBody, example = json!({ "status": "result_accepted_success" })),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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
#[utoipa::path(
    get, path = "/_worker/workers/{worker_id}/jobs/{job_id}/tasks/{task_id}", tag = tags::WORKER,
    security(("worker_token" = []), ("worker_access_token" = [])),
    params(
        ("worker_id" = String, Path, description = "The worker's id."),
        ("job_id" = String, Path, description = "The job's id."),
        ("task_id" = String, Path, description = "The task's id."),
    ),
    responses(
        (status = 200, description = "Whether to stop the task.", body = doc::TaskCancellation),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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
#[utoipa::path(
    post, path = "/_worker/auth/token", tag = tags::WORKER,
    security(("worker_token" = []), ("worker_access_token" = [])),
    params(("X-Worker-ID" = Option<String>, Header, description = "The worker to act as, with the global worker token.")),
    responses(
        (status = 200, description = "A new access token.", body = doc::AccessToken),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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
