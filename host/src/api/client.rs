//! `/api/…`: the client API (client token).

use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{ApiPath, ClientAuth, body_bytes, parse_json};
use super::public::PageQuery;
use super::versions::AliasedFrom;
use super::{AppState, RouteLabel};
use crate::model::JobView;
use crate::orchestrator::Cancellation;
use crate::runtime::graph_svg::{MAX_SVG_STATES, Marks};

/// The client routes; the history route exists only when history is on
/// (the spec: "only when history storage is enabled").
pub fn routes(history: bool) -> Router<AppState> {
    let router =
        if history { Router::new().route("/api/v1/jobs/{job_id}/history", get(job_history)) } else { Router::new() };
    router
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{job_id}", get(get_job))
        .route("/api/v1/jobs/{job_id}/cancel", post(cancel_job))
        .route("/api/v1/dashboard", get(dashboard))
        .route("/api/v1/admin/reload-workers", post(reload_workers))
        .route("/api/v1/admin/reload-blueprints", post(reload_blueprints))
        .route("/api/v1/schedules", get(schedules))
        .route("/api/v1/blueprints/{name}/graph", get(blueprint_graph))
        .route("/api/v1/workers", get(workers))
}

/// The live workers as they registered and last reported, with their tasks in flight.
async fn workers(
    State(state): State<AppState>,
    ClientAuth(_): ClientAuth,
) -> Result<Json<Vec<crate::model::WorkerInfo>>, ApiError> {
    let mut workers =
        state.orchestrator.storage.live_workers().await.map_err(crate::orchestrator::OrchestratorError::from)?;
    workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    Ok(Json(workers))
}

/// `?format=svg&state=<current>&visited=a,b` of the graph route.
#[derive(Debug, Default, Deserialize)]
struct GraphQuery {
    format: Option<String>,
    state: Option<String>,
    visited: Option<String>,
}

/// The blueprint's declared state graph: Graphviz DOT, or with `format=svg`
/// an SVG drawing with `state` highlighted (the dashboard's job page).
async fn blueprint_graph(
    State(state): State<AppState>,
    ClientAuth(_): ClientAuth,
    ApiPath(name): ApiPath<String>,
    Query(query): Query<GraphQuery>,
) -> Result<Response, ApiError> {
    let blueprint = state
        .orchestrator
        .runtime
        .blueprint(&name)
        .ok_or_else(|| ApiError::NotFound(format!("blueprint {name} not found")))?;
    match query.format.as_deref() {
        None | Some("dot") => {
            Ok(([(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")], blueprint.graph.to_dot()).into_response())
        }
        Some("svg") => {
            let visited: Vec<String> = query
                .visited
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.is_empty())
                .take(MAX_SVG_STATES)
                .map(str::to_owned)
                .collect();
            let marks = Marks { current: query.state.as_deref(), visited: &visited };
            let svg = blueprint.graph.to_svg(marks).map_err(ApiError::Unprocessable)?;
            Ok(([(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8")], svg).into_response())
        }
        Some(other) => Err(ApiError::BadRequest(format!("format {other:?} is not one of dot, svg"))),
    }
}

async fn schedules(State(state): State<AppState>, ClientAuth(_): ClientAuth) -> Json<Value> {
    Json(Value::Array(state.orchestrator.schedules_view(chrono::Utc::now())))
}

async fn reload_workers(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
) -> Result<Json<Value>, ApiError> {
    let workers = state.orchestrator.reload_workers().await?;
    tracing::info!(client = %client.name, workers, "worker configs reloaded on request");
    Ok(Json(json!({ "status": "worker_configs_reloaded" })))
}

/// Reads `BLUEPRINTS_DIR` again; answers what changed, or 422 with the
/// reason the new set was refused (the running set then stays as it was).
async fn reload_blueprints(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
) -> Result<Json<Value>, ApiError> {
    let report = state.orchestrator.reload_blueprints().await?;
    tracing::info!(client = %client.name, changed = report.changed(), "blueprints reloaded on request");
    let mut body = serde_json::to_value(&report).map_err(|e| ApiError::Internal(e.into()))?;
    body["status"] = json!("blueprints_reloaded");
    Ok(Json(body))
}

/// The caller's jobs, newest first (`?limit=&offset=`).
async fn list_jobs(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    Query(query): Query<PageQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let mut jobs = state.orchestrator.list_jobs(&client, query.page()?).await?;
    state.orchestrator.with_progress(&mut jobs).await?;
    Ok(Json(jobs))
}

/// The job's history events in order (`?limit=&offset=`, up to 1000 at a
/// time, all of a typical job by default). Routed only when history is on.
async fn job_history(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    ApiPath(job_id): ApiPath<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let page = query.page_or(crate::orchestrator::MAX_LIMIT)?;
    Ok(Json(state.orchestrator.job_history(&client, &job_id, page).await?))
}

async fn cancel_job(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let outcome = state.orchestrator.cancel_job(&client, &job_id).await?;
    tracing::info!(%job_id, client = %client.name, ?outcome, "job cancellation requested");
    let status = match outcome {
        Cancellation::Requested { pushed: true } => "cancellation_request_sent",
        // Cancelled at once, or flagged for a worker without a socket.
        Cancellation::Done | Cancellation::Requested { pushed: false } => "cancellation_request_accepted",
    };
    Ok(Json(json!({ "status": status })))
}

async fn dashboard(State(state): State<AppState>, ClientAuth(_): ClientAuth) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.orchestrator.dashboard().await?))
}

async fn get_job(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (job, progress) = state.orchestrator.job_with_progress_for(&client, &job_id).await?;
    Ok(Json(JobView::new(&job, progress.as_ref())).into_response())
}

/// `POST /api/{version}/{endpoint}`, reached as the router's fallback: blueprint
/// endpoints are looked up at request time rather than registered as routes,
/// because `/api/v1/jobs/{job_id}` would otherwise capture `/api/v1/jobs/hello`.
pub async fn create_job(
    state: State<AppState>,
    client: Result<ClientAuth, ApiError>,
    request: Request,
) -> Result<Response, ApiError> {
    let miss = ApiError::NotFound(format!("no route for {} {}", request.method(), requested_path(&request)));
    create_job_or(state, client, request, miss).await
}

/// The method-not-allowed fallback: a `POST` to a path that a fixed route
/// takes with another method may still be a blueprint endpoint.
pub async fn create_job_or_405(
    state: State<AppState>,
    client: Result<ClientAuth, ApiError>,
    request: Request,
) -> Result<Response, ApiError> {
    create_job_or(state, client, request, ApiError::MethodNotAllowed).await
}

async fn create_job_or(
    State(state): State<AppState>,
    client: Result<ClientAuth, ApiError>,
    request: Request,
    miss: ApiError,
) -> Result<Response, ApiError> {
    let path = requested_path(&request).trim_end_matches('/');
    let blueprint = (request.method() == Method::POST)
        .then(|| state.orchestrator.runtime.by_endpoint(path))
        .flatten()
        .ok_or(miss)?;
    let created = async {
        let ClientAuth(client) = client?;
        if state.draining.is_cancelled() {
            return Err(ApiError::ShuttingDown);
        }
        let bytes = body_bytes(request, &state).await?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) { Value::Null } else { parse_json(&bytes)? };
        let job_id = state.orchestrator.create_job(&client, &blueprint, body).await?;
        Ok::<_, ApiError>((StatusCode::ACCEPTED, Json(json!({ "status": "accepted", "job_id": job_id }))))
    };
    let mut response = created.await.into_response();
    response.extensions_mut().insert(RouteLabel(CREATE_ROUTE));
    Ok(response)
}

/// The path the client sent: a client route under another API version was
/// rewritten to `/api/v1/` (`api::versions`), which is not what a
/// blueprint endpoint is looked up by.
fn requested_path(request: &Request) -> &str {
    match request.extensions().get::<AliasedFrom>() {
        Some(AliasedFrom(original)) => original,
        None => request.uri().path(),
    }
}

/// The route label of every blueprint endpoint in `avtomatika_http_requests_total`.
pub const CREATE_ROUTE: &str = "/api/{version}/{endpoint}";
