//! The HTTP API (`spec/http-api.md`): public, client and worker routes, and
//! the middleware around them.

mod client;
mod error;
mod extract;
mod public;
mod worker;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::orchestrator::Orchestrator;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub orchestrator: Arc<Orchestrator>,
    /// Fires on shutdown, so long-polls answer at once instead of holding
    /// the server open.
    pub shutdown: CancellationToken,
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

    Router::new()
        .merge(public::routes())
        .merge(client::routes())
        .merge(worker::routes())
        .fallback(client::create_job)
        .method_not_allowed_fallback(client::create_job_or_405)
        .layer(DefaultBodyLimit::max(state.orchestrator.config.max_request_body_bytes))
        .layer(middleware)
        .with_state(state)
}
