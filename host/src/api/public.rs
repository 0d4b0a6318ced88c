//! `/_public/…`: no authentication.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, body_limit};
use super::openapi::{
    self as doc, BadRequest, Conflict, Forbidden, Internal, NotFound, PayloadTooLarge, Unavailable, tags,
};
use crate::config::Config;
use crate::config::limits::APPROVAL_BODY_BYTES;
use crate::orchestrator::Page;

pub fn routes(config: &Config) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(approval).layer(body_limit(APPROVAL_BODY_BYTES, config.max_request_body_bytes)))
        .routes(routes!(quarantined))
        .routes(routes!(metrics))
}

/// Whether the server answers.
#[utoipa::path(
    get, path = "/_public/status", tag = tags::PUBLIC,
    responses((status = 200, description = "Up.", body = doc::StatusBody, example = json!({ "status": "ok" }))),
)]
async fn status() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The approval body: other fields are skipped unread.
#[derive(Debug, Deserialize)]
struct ApprovalBody {
    decision: Option<Value>,
}

/// `?signature=` of a signed approval link (`APPROVAL_SECRET`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ApprovalQuery {
    /// The signature of a signed approval link; required when `APPROVAL_SECRET` is set.
    signature: Option<String>,
}

/// A person's decision for a job waiting in `waiting_for_human`.
#[utoipa::path(
    post, path = "/_public/webhooks/approval/{job_id}", tag = tags::PUBLIC,
    params(("job_id" = String, Path, description = "The job waiting for a decision."), ApprovalQuery),
    request_body(content = doc::ApprovalDecision, content_type = "application/json"),
    responses(
        (status = 200, description = "The decision was taken.", body = doc::ApprovalReceived),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn approval(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<String>,
    Query(query): Query<ApprovalQuery>,
    ApiJson(body): ApiJson<ApprovalBody>,
) -> Result<Json<Value>, ApiError> {
    let decision = match &body.decision {
        Some(Value::String(decision)) if !decision.is_empty() => decision.as_str(),
        _ => return Err(ApiError::BadRequest("decision is required in body (a non-empty string)".into())),
    };
    let job_id = state.orchestrator.decide(&job_id, decision, query.signature.as_deref()).await?;
    Ok(Json(json!({ "status": "approval_received", "job_id": job_id })))
}

/// `limit` / `offset` of a listing, as given.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many at most (default 100, at most 1000).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// How many to skip.
    #[param(value_type = Option<u32>)]
    offset: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> Result<Page, ApiError> {
        self.page_or(crate::orchestrator::DEFAULT_LIMIT)
    }

    /// [`page`](Self::page) with another default `limit`.
    pub fn page_or(&self, default_limit: usize) -> Result<Page, ApiError> {
        Ok(Page::from_query(self.limit.as_deref(), self.offset.as_deref(), default_limit)?)
    }
}

/// Ids of quarantined jobs, most recent first. Ids only: this route has no
/// authentication, and a job's data belongs to its client.
#[utoipa::path(
    get, path = "/_public/jobs/quarantined", tag = tags::PUBLIC, params(PageQuery),
    responses(
        (status = 200, description = "Job ids.", body = Vec<String>),
        (status = 400, response = BadRequest),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn quarantined(State(state): State<AppState>, Query(query): Query<PageQuery>) -> Result<Json<Value>, ApiError> {
    let ids = state.orchestrator.quarantined_jobs(query.page()?).await?;
    Ok(Json(json!(ids)))
}

/// Every metric in the Prometheus text exposition format.
#[utoipa::path(
    get, path = "/_public/metrics", tag = tags::PUBLIC,
    responses(
        (status = 200, description = "Prometheus text exposition.", content_type = "text/plain; version=0.0.4", body = String),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn metrics(State(state): State<AppState>) -> Result<([(header::HeaderName, &'static str); 1], String), ApiError> {
    let orchestrator = &state.orchestrator;
    let snapshot = orchestrator.metrics_snapshot().await?;
    let text = orchestrator.metrics.render(&snapshot).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text))
}
