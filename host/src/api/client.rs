//! `/api/…`: the client API (client token).

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{ApiPath, ClientAuth, body_bytes, parse_json};
use super::openapi::{
    self as doc, BadRequest, Conflict, Internal, NotFound, TooManyRequests, Unauthorized, Unavailable, Unprocessable,
    tags,
};
use super::public::PageQuery;
use super::versions::AliasedFrom;
use super::{AppState, RouteLabel};
use crate::model::{JobFilter, JobView};
use crate::orchestrator::Cancellation;
use crate::runtime::EndKind;
use crate::runtime::graph_svg::{MAX_SVG_STATES, Marks};

/// The client routes; the history route exists only when history is on
/// (the spec: "only when history storage is enabled").
pub fn routes(history: bool) -> OpenApiRouter<AppState> {
    let router = if history { OpenApiRouter::new().routes(routes!(job_history)) } else { OpenApiRouter::new() };
    router
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(retry_job))
        .routes(routes!(resend_webhook))
        .routes(routes!(dashboard))
        .routes(routes!(reload_workers))
        .routes(routes!(reload_blueprints))
        .routes(routes!(schedules))
        .routes(routes!(blueprints))
        .routes(routes!(blueprint_graph))
        .routes(routes!(workers))
}

/// The live workers as they registered and last reported, with their tasks in flight.
#[utoipa::path(
    get, path = "/api/v1/workers", tag = tags::ADMIN,
    security(("client_token" = []), ("client_token_rxon" = [])),
    responses(
        (status = 200, description = "The live workers, by id.", body = Vec<doc::Worker>),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct GraphQuery {
    /// `dot` (the default) or `svg`.
    format: Option<String>,
    /// With `svg`: the state to highlight (a job's current state).
    state: Option<String>,
    /// With `svg`: comma-separated states to shade (those a job went through).
    visited: Option<String>,
}

/// The blueprint's declared state graph: Graphviz DOT, or with `format=svg`
/// an SVG drawing with `state` highlighted (the dashboard's job page).
#[utoipa::path(
    get, path = "/api/v1/blueprints/{name}/graph", tag = tags::ADMIN,
    security(("client_token" = []), ("client_token_rxon" = [])),
    params(("name" = String, Path, description = "A loaded blueprint's name."), GraphQuery),
    responses(
        (status = 200, description = "Graphviz DOT, or SVG with `format=svg`.", content(
            (String = "text/vnd.graphviz; charset=utf-8"),
            (String = "image/svg+xml; charset=utf-8"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
    ),
)]
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

/// The scheduled jobs of the loaded blueprints and when each runs next.
#[utoipa::path(
    get, path = "/api/v1/schedules", tag = tags::ADMIN,
    security(("client_token" = []), ("client_token_rxon" = [])),
    responses(
        (status = 200, description = "Each schedule with its next run in `TZ`.", body = Vec<Object>),
        (status = 401, response = Unauthorized),
    ),
)]
async fn schedules(State(state): State<AppState>, ClientAuth(_): ClientAuth) -> Json<Value> {
    Json(Value::Array(state.orchestrator.schedules_view(chrono::Utc::now())))
}

/// Reads `WORKERS_CONFIG_PATH` (`workers.toml`) again.
#[utoipa::path(
    post, path = "/api/v1/admin/reload-workers", tag = tags::ADMIN,
    security(("client_token" = []), ("client_token_rxon" = [])),
    responses(
        (status = 200, description = "Reloaded.", body = doc::StatusBody, example = json!({ "status": "worker_configs_reloaded" })),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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
#[utoipa::path(
    post, path = "/api/v1/admin/reload-blueprints", tag = tags::ADMIN,
    security(("client_token" = []), ("client_token_rxon" = [])),
    responses(
        (status = 200, description = "What changed: each list holds `{\"name\", \"version\"}`.", body = Object,
         example = json!({ "status": "blueprints_reloaded", "added": [], "updated": [{ "name": "hello", "version": "9f2c…" }], "removed": [], "unchanged": [] })),
        (status = 401, response = Unauthorized),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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

/// `GET /api/v1/jobs`'s query: the page and the filter.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(flatten)]
    page: PageQuery,
    status: Option<String>,
    blueprint: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// The caller's jobs, newest first (`?limit=&offset=`), those passing the
/// filter when one is given (`?status=a,b&blueprint=&since=&until=`).
#[utoipa::path(
    get, path = "/api/v1/jobs", tag = tags::JOBS,
    security(("client_token" = []), ("client_token_rxon" = [])),
    params(
        PageQuery,
        ("status" = Option<String>, Query, description = "Comma-separated job statuses; any of them matches."),
        ("blueprint" = Option<String>, Query, description = "A blueprint name (at most `MAX_NAME_BYTES`)."),
        ("since" = Option<String>, Query, description = "Created at or after this RFC 3339 time."),
        ("until" = Option<String>, Query, description = "Created at or before this RFC 3339 time."),
    ),
    responses(
        (status = 200, description = "The jobs passing the filter, newest first.", body = Vec<doc::Job>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn list_jobs(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let filter = JobFilter::parse(
        query.status.as_deref(),
        query.blueprint.as_deref(),
        query.since.as_deref(),
        query.until.as_deref(),
        state.orchestrator.config.limits.name_bytes,
    )
    .map_err(ApiError::BadRequest)?;
    let mut jobs = state.orchestrator.list_jobs(&client, &filter, query.page.page()?).await?;
    state.orchestrator.with_progress(&mut jobs).await?;
    Ok(Json(jobs))
}

/// Runs a quarantined job again from the state it stopped in: its handler
/// runs anew. Recorded in the history as `job_retried` with who asked.
#[utoipa::path(
    post, path = "/api/v1/jobs/{job_id}/retry", tag = tags::JOBS,
    security(("client_token" = []), ("client_token_rxon" = [])),
    params(("job_id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job runs again.", body = doc::JobAck, example = json!({ "status": "retry_accepted", "job_id": "0193b6de-7d2e-7a31-9b1c-2f0c5e8a4d10" })),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn retry_job(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let job_id = state.orchestrator.retry_job(&client, &job_id).await?;
    Ok(Json(json!({ "status": "retry_accepted", "job_id": job_id })))
}

/// Queues an ended job's webhook again, at most once every 10 s per job.
/// Recorded in the history as `webhook_resent` with who asked.
#[utoipa::path(
    post, path = "/api/v1/jobs/{job_id}/webhook", tag = tags::JOBS,
    security(("client_token" = []), ("client_token_rxon" = [])),
    params(("job_id" = String, Path, description = "The job's id.")),
    responses(
        (status = 202, description = "The webhook is queued for delivery.", body = doc::JobAck, example = json!({ "status": "webhook_queued", "job_id": "0193b6de-7d2e-7a31-9b1c-2f0c5e8a4d10" })),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn resend_webhook(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    ApiPath(job_id): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let job_id = state.orchestrator.resend_webhook(&client, &job_id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "status": "webhook_queued", "job_id": job_id }))))
}

/// The loaded blueprints, by name: version (the component's SHA-256),
/// endpoint and states.
#[utoipa::path(
    get, path = "/api/v1/blueprints", tag = tags::ADMIN,
    security(("client_token" = []), ("client_token_rxon" = [])),
    responses(
        (status = 200, description = "The loaded blueprints, by name.", body = Vec<BlueprintSummary>),
        (status = 401, response = Unauthorized),
    ),
)]
async fn blueprints(State(state): State<AppState>, ClientAuth(_): ClientAuth) -> Json<Vec<BlueprintSummary>> {
    Json(state.orchestrator.runtime.blueprints().iter().map(|b| BlueprintSummary::of(b)).collect())
}

/// One entry of `GET /api/v1/blueprints`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct BlueprintSummary {
    name: String,
    version: String,
    endpoint: Option<String>,
    api_version: Option<String>,
    start: String,
    states: Vec<StateSummary>,
}

/// A blueprint state: `end` is `finished` or `failed` on an end state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct StateSummary {
    name: String,
    end: Option<&'static str>,
    transitions: Vec<String>,
}

impl BlueprintSummary {
    fn of(blueprint: &crate::runtime::Blueprint) -> Self {
        let graph = &blueprint.graph;
        let states = graph
            .states
            .iter()
            .map(|(name, node)| StateSummary {
                name: name.clone(),
                end: node.end.map(|end| match end {
                    EndKind::Finished => "finished",
                    EndKind::Failed => "failed",
                }),
                transitions: node.transitions.iter().cloned().collect(),
            })
            .collect();
        Self {
            name: graph.name.clone(),
            version: blueprint.version.clone(),
            endpoint: graph.endpoint.clone(),
            api_version: graph.api_version.clone(),
            start: graph.start.clone(),
            states,
        }
    }
}

/// The job's history events in order (`?limit=&offset=`, up to 1000 at a
/// time, all of a typical job by default). Routed only when history is on.
#[utoipa::path(
    get, path = "/api/v1/jobs/{job_id}/history", tag = tags::JOBS,
    security(("client_token" = []), ("client_token_rxon" = [])),
    params(("job_id" = String, Path, description = "The job's id."), PageQuery),
    responses(
        (status = 200, description = "The job's history events, oldest first.", body = Vec<Object>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn job_history(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    ApiPath(job_id): ApiPath<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let page = query.page_or(crate::orchestrator::MAX_LIMIT)?;
    Ok(Json(state.orchestrator.job_history(&client, &job_id, page).await?))
}

/// Asks to cancel the job: pushed to its worker over the worker's WebSocket
/// (`cancellation_request_sent`), or flagged for the worker to poll
/// (`cancellation_request_accepted`); a job not yet at a worker ends at once.
#[utoipa::path(
    post, path = "/api/v1/jobs/{job_id}/cancel", tag = tags::JOBS,
    security(("client_token" = []), ("client_token_rxon" = [])),
    params(("job_id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "`cancellation_request_sent` or `cancellation_request_accepted`.", body = doc::StatusBody, example = json!({ "status": "cancellation_request_sent" })),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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

/// Counts of workers and of jobs per status.
#[utoipa::path(
    get, path = "/api/v1/dashboard", tag = tags::ADMIN,
    security(("client_token" = []), ("client_token_rxon" = [])),
    responses(
        (status = 200, description = "Counts.", body = Object, example = json!({ "workers": { "total": 2 }, "jobs": { "queued": 1, "running": 3, "finished": 10 } })),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn dashboard(State(state): State<AppState>, ClientAuth(_): ClientAuth) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.orchestrator.dashboard().await?))
}

/// The job's full state, with its progress.
#[utoipa::path(
    get, path = "/api/v1/jobs/{job_id}", tag = tags::JOBS,
    security(("client_token" = []), ("client_token_rxon" = [])),
    params(("job_id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job.", body = doc::Job),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
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
