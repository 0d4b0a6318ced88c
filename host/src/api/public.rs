//! `/_public/…`: no authentication.

use axum::extract::{Query, State};
use axum::http::header;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, body_limit};
use crate::config::Config;
use crate::config::limits::APPROVAL_BODY_BYTES;
use crate::orchestrator::Page;

pub fn routes(config: &Config) -> Router<AppState> {
    Router::new()
        .route("/_public/status", get(status))
        .route(
            "/_public/webhooks/approval/{job_id}",
            post(approval).layer(body_limit(APPROVAL_BODY_BYTES, config.max_request_body_bytes)),
        )
        .route("/_public/jobs/quarantined", get(quarantined))
        .route("/_public/metrics", get(metrics))
}

async fn status() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The approval body: other fields are skipped unread.
#[derive(Debug, Deserialize)]
struct ApprovalBody {
    decision: Option<Value>,
}

/// `?signature=` of a signed approval link (`APPROVAL_SECRET`).
#[derive(Debug, Default, Deserialize)]
struct ApprovalQuery {
    signature: Option<String>,
}

/// A person's decision for a job waiting in `waiting_for_human`.
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
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
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
async fn quarantined(State(state): State<AppState>, Query(query): Query<PageQuery>) -> Result<Json<Value>, ApiError> {
    let ids = state.orchestrator.quarantined_jobs(query.page()?).await?;
    Ok(Json(json!(ids)))
}

/// Every metric in the Prometheus text exposition format.
async fn metrics(State(state): State<AppState>) -> Result<([(header::HeaderName, &'static str); 1], String), ApiError> {
    let orchestrator = &state.orchestrator;
    let snapshot = orchestrator.metrics_snapshot().await?;
    let text = orchestrator.metrics.render(&snapshot).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text))
}
