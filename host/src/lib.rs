//! Avtomatika: a job orchestration server whose workflow logic runs as
//! sandboxed WebAssembly components.
//!
//! [`App::new`] loads the configuration's blueprints and storage; [`App::serve`]
//! runs the HTTP API and the executor until a shutdown token fires. The binary
//! (`src/main.rs`) and the tests start the server the same way.

pub mod api;
pub mod auth;
pub mod config;
pub mod logging;
pub mod model;
pub mod orchestrator;
pub mod runtime;
pub mod storage;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::config::Config;
use crate::orchestrator::Orchestrator;
use crate::runtime::{LoadError, Runtime, Source};
use crate::storage::MemoryStorage;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Blueprint(#[from] LoadError),
    #[error("cannot set up the WebAssembly runtime: {0}")]
    Runtime(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// A configured server, ready to serve.
pub struct App {
    pub orchestrator: Arc<Orchestrator>,
}

impl App {
    /// Compiles and validates the blueprints and sets up storage.
    pub async fn new(config: Config) -> Result<Self, StartError> {
        let mut runtime = Runtime::new(config.plugin_limits, config.executor_max_concurrent_jobs)
            .map_err(|e| StartError::Runtime(format!("{e:#}")))?;
        let sources = match &config.blueprints_dir {
            Some(dir) => Source::read_dir(dir)?,
            None => Source::examples(),
        };
        runtime.load(sources).await?;
        for blueprint in runtime.blueprints() {
            tracing::info!(
                blueprint = blueprint.name(),
                file = %blueprint.file,
                endpoint = blueprint.graph.endpoint.as_deref().unwrap_or(""),
                "blueprint loaded"
            );
        }
        let storage = Arc::new(MemoryStorage::new());
        Ok(Self { orchestrator: Arc::new(Orchestrator::new(config, storage, runtime)) })
    }

    /// Binds the configured `API_HOST:API_PORT`.
    pub async fn bind(&self) -> Result<TcpListener, StartError> {
        let config = &self.orchestrator.config;
        let addr = format!("{}:{}", config.api_host, config.api_port);
        TcpListener::bind(&addr).await.map_err(|source| StartError::Bind { addr, source })
    }

    /// Serves the API on `listener` and runs the executor until `shutdown`
    /// fires, then drains in-flight requests.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let executor = tokio::spawn(self.orchestrator.clone().run_executor(shutdown.clone()));
        let addr: Option<SocketAddr> = listener.local_addr().ok();
        tracing::info!(addr = ?addr, "serving");
        let router = api::router(AppState { orchestrator: self.orchestrator, shutdown: shutdown.clone() });
        let served = axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(e) = executor.await {
            tracing::error!(error = %e, "executor stopped abnormally");
        }
        served
    }
}
