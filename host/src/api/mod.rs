//! The HTTP API (`spec/http-api.md`): public, client and worker routes, and
//! the middleware around them.

mod client;
mod error;
mod extract;
mod files;
pub mod openapi;
mod public;
mod versions;
mod worker;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{HeaderName, Request};
use axum::middleware::{Next, from_fn_with_state, map_request_with_state};
use axum::response::Response;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

pub use error::ApiError;

use crate::orchestrator::Orchestrator;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub orchestrator: Arc<Orchestrator>,
    /// Fires when the server starts stopping (the drain, see `App::serve`):
    /// job creation answers 503, long-polls answer at once instead of
    /// holding the server open, results and heartbeats are still taken.
    pub draining: CancellationToken,
}

/// The whole API with its middleware.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    // Outermost first: the id is set before the trace span reads it, and
    // copied to the response after the handler ran.
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
        }))
        .layer(PropagateRequestIdLayer::new(request_id));

    let slot = openapi::DocumentSlot::default();
    let (routes, document) = route_table(&state, slot.clone()).split_for_parts();
    // The slot is new and this is its one fill.
    let _ = slot.set(openapi::Document::new(document));
    let api = routes
        .fallback(client::create_job)
        .method_not_allowed_fallback(client::create_job_or_405)
        .layer(DefaultBodyLimit::max(state.orchestrator.config.max_request_body_bytes))
        .layer(from_fn_with_state(state.clone(), count_request))
        .layer(middleware)
        .with_state(state.clone());
    // The version aliases rewrite the path before `api` routes it: a layer
    // on `api` itself would run after its routing.
    Router::new().fallback_service(api).layer(map_request_with_state(state, versions::alias))
}

/// Every route this server serves, each documented where its handler is
/// (`openapi`): the router and the OpenAPI document both come from here,
/// and no route is added anywhere else. The job file routes exist only with
/// S3, the history route only with history.
fn route_table(state: &AppState, document: openapi::DocumentSlot) -> OpenApiRouter<AppState> {
    let config = &state.orchestrator.config;
    let files = if state.orchestrator.files.is_some() { files::routes() } else { OpenApiRouter::new() };
    OpenApiRouter::new()
        .merge(public::routes(config).layer(compression()))
        .merge(openapi::routes(document).layer(compression()))
        .merge(crate::ui::routes().layer(compression()))
        .merge(files)
        .merge(client::routes(state.orchestrator.history.is_enabled()).layer(compression()))
        .merge(worker::routes(config))
        .merge(ws::routes(config))
}

/// gzip or zstd, as the caller's `Accept-Encoding` asks, for what the client
/// and public routes answer (JSON, metrics text): a 1,000-job listing shrinks
/// about tenfold (BENCHMARKS.md (l)). Not for the worker routes, whose
/// long-poll answers are small and latency-bound and whose WebSocket upgrade
/// must pass untouched, nor for job files (streamed, often compressed already).
/// Bodies under 32 bytes and images are left as they are (tower-http's rule).
fn compression() -> CompressionLayer {
    CompressionLayer::new().gzip(true).zstd(true)
}

/// The route label of a response whose request no fixed route matched but a
/// handler recognised (blueprint endpoints are served by the fallback).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteLabel(pub &'static str);

/// Counts each answered request by route template and status code. Requests
/// no route took are counted under `unmatched`, so a scan of random paths
/// cannot add series.
async fn count_request(State(state): State<AppState>, request: axum::extract::Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = match (response.extensions().get::<RouteLabel>(), &matched) {
        (Some(RouteLabel(route)), _) => route,
        (None, Some(path)) => path.as_str(),
        (None, None) => "unmatched",
    };
    state.orchestrator.metrics.http_request(route, response.status().as_str());
    response
}
