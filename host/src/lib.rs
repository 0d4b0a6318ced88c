//! Avtomatika: a job orchestration server whose workflow logic runs as
//! sandboxed WebAssembly components.
//!
//! [`App::new`] loads the configuration's blueprints and storage; [`App::serve`]
//! runs the HTTP API and the executor until a shutdown token fires. The binary
//! (`src/main.rs`) and the tests start the server the same way.

pub mod api;
pub mod auth;
pub mod config;
pub mod files;
pub mod history;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod orchestrator;
pub mod runtime;
pub mod scaffold;
pub mod scheduler;
pub mod server;
pub mod storage;
pub mod ui;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::AppState;
use crate::auth::{Credentials, is_default, worker_token_hashes};
use crate::config::clients::{self, ClientConfig};
use crate::config::file::FileError;
use crate::config::schedules::{self, Schedule};
use crate::config::workers::{self, WorkerTokenConfig};
use crate::config::{Config, DEFAULT_CLIENT_TOKEN, DEFAULT_WORKER_TOKEN};
use crate::files::TaskFiles;
use crate::history::{History, WriterHandle};
use crate::metrics::Metrics;
use crate::model::JobStatus;
use crate::orchestrator::{Orchestrator, PollSlots, Reloads};
use crate::runtime::cache::ComponentCache;
use crate::runtime::{LoadError, Runtime, Source};
use crate::storage::{MemoryStorage, RedisStorage, Storage, StorageError};
use crate::webhook::Webhooks;

/// The prefix of every key this server writes to Redis.
pub const REDIS_PREFIX: &str = "avtomatika";

/// How long a stopping server waits for the history writer to flush.
const HISTORY_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Blueprint(#[from] LoadError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot set up storage: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot set up the WebAssembly runtime: {0}")]
    Runtime(String),
    #[error("cannot open the job history database (HISTORY_DATABASE_URI, {target}): {source}")]
    History { target: String, source: history::HistoryError },
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// Everything start-up reads and checks — the configuration files and the
/// blueprints — before anything listens. `avtomatika check-config` stops here.
pub struct Setup {
    pub config: Config,
    pub runtime: Runtime,
    pub clients: Option<Vec<ClientConfig>>,
    pub workers: Option<Vec<WorkerTokenConfig>>,
    pub schedules: Vec<Schedule>,
}

impl Setup {
    /// Loads and validates the files named by `config` and compiles the blueprints.
    pub async fn load(config: Config) -> Result<Self, StartError> {
        let clients = match config.clients_config_path.as_deref().map(clients::load).transpose()? {
            Some(file) => {
                for warning in &file.warnings {
                    warning.log();
                }
                Some(file.clients)
            }
            None => None,
        };
        warn_about_default_tokens(&config, clients.is_some());
        let workers = config.workers_config_path.as_deref().map(workers::load).transpose()?;
        let cache = match &config.plugin_cache_dir {
            Some(dir) => ComponentCache::open(dir),
            None => ComponentCache::disabled(),
        };
        let runtime = Runtime::new(
            config.plugin_limits,
            config.plugin_instances.clone(),
            config.executor_max_concurrent_jobs,
            cache,
        )
        .map_err(|e| StartError::Runtime(format!("{e:#}")))?;
        let sources = match &config.blueprints_dir {
            Some(dir) => Source::read_dir(dir)?,
            None => Source::examples(),
        };
        runtime.load(sources).await?;
        let schedules = match &config.schedules_config_path {
            Some(path) => {
                let loaded = schedules::load(path)?;
                let file = path.display().to_string();
                schedules::check_blueprints(&loaded.schedules, &file, |name| runtime.blueprint(name).is_some())?;
                for warning in &loaded.warnings {
                    warning.log();
                }
                for schedule in loaded.schedules.iter().filter(|s| !s.enabled) {
                    tracing::info!(schedule = %schedule.name, file = %file, "schedule disabled (enabled = false): it creates no jobs");
                }
                loaded.schedules
            }
            None => Vec::new(),
        };
        Ok(Self { config, runtime, clients, workers, schedules })
    }

    /// What was loaded, for logs and `check-config`.
    pub fn summary(&self) -> String {
        let blueprints: Vec<String> = self.runtime.blueprints().iter().map(|b| b.name().to_owned()).collect();
        format!(
            "{} blueprint(s) [{}], {} client(s){}, {} worker token(s), {} schedule(s)",
            blueprints.len(),
            blueprints.join(", "),
            self.clients.as_ref().map_or(1, Vec::len),
            if self.clients.is_some() { "" } else { " (CLIENT_TOKEN)" },
            self.workers.as_ref().map_or(0, Vec::len),
            self.schedules.len(),
        )
    }
}

/// A configured server, ready to serve.
pub struct App {
    pub orchestrator: Arc<Orchestrator>,
    /// Stops webhook delivery and the history writer once the server has stopped.
    background_stop: CancellationToken,
    history_writer: Option<WriterHandle>,
}

impl App {
    /// Loads everything (see [`Setup::load`]) and sets up storage.
    pub async fn new(config: Config) -> Result<Self, StartError> {
        Self::from_setup(Setup::load(config).await?).await
    }

    pub async fn from_setup(setup: Setup) -> Result<Self, StartError> {
        let Setup { config, mut runtime, clients, workers, schedules } = setup;
        for blueprint in runtime.blueprints() {
            tracing::info!(
                blueprint = blueprint.name(),
                version = orchestrator::short_version(&blueprint.version),
                pooled = blueprint.pooled(),
                file = %blueprint.file,
                endpoint = blueprint.graph.endpoint.as_deref().unwrap_or(""),
                "blueprint loaded"
            );
        }
        let storage: Arc<dyn Storage> = match &config.redis {
            Some(redis) => {
                let storage =
                    RedisStorage::connect(redis, REDIS_PREFIX, &config.instance_id, config.job_retention).await?;
                tracing::info!(host = %redis.host, port = redis.port, db = redis.db, instance = %config.instance_id, "using Redis storage");
                Arc::new(storage)
            }
            None => Arc::new(MemoryStorage::new().with_retention(config.job_retention)),
        };
        runtime.attach_data_stores(storage.clone());
        let tokens = workers.as_deref().map(worker_token_hashes).unwrap_or_default();
        storage.replace_worker_tokens(tokens).await?;
        let credentials = Credentials::new(&config, clients);
        // Stops with the server (`serve`): webhook deliveries still queued
        // then are lost; the history writer flushes its buffer first.
        let background_stop = CancellationToken::new();
        let webhooks = Webhooks::start(config.webhooks.clone(), background_stop.clone());
        // No request is made here: S3 being down fails the jobs that need it,
        // not the server.
        let files = TaskFiles::new(&config, background_stop.clone());
        if let Some(files) = &files {
            tracing::info!(
                bucket = files.store().bucket(), max_concurrency = config.s3_max_concurrency,
                task_files_dir = %config.task_files_dir.display(), "S3 payload offloading enabled"
            );
            runtime.attach_files(files.clone());
        }
        let (history, history_writer) = match &config.history_database {
            Some(database) => {
                let (history, writer) =
                    History::open(database, config.history_buffer_size, config.tz, background_stop.clone())
                        .await
                        .map_err(|source| StartError::History { target: database.describe(), source })?;
                tracing::info!(database = %database.describe(), "job history enabled");
                (history, Some(writer))
            }
            None => (History::disabled(), None),
        };
        let metrics = Metrics::new(runtime.blueprints().iter().map(|b| b.name()))?;
        let reloads = Reloads::loaded_from(config.blueprints_dir.as_deref());
        let orchestrator = Arc::new(Orchestrator {
            config,
            storage,
            runtime,
            credentials,
            schedules,
            webhooks,
            metrics,
            history,
            files,
            reloads,
            polls: PollSlots::default(),
            parked_for_room: Default::default(),
        });
        Ok(Self { orchestrator, background_stop, history_writer })
    }

    /// Binds the configured `API_HOST:API_PORT`.
    pub async fn bind(&self) -> Result<TcpListener, StartError> {
        let config = &self.orchestrator.config;
        let addr = format!("{}:{}", config.api_host, config.api_port);
        TcpListener::bind(&addr).await.map_err(|source| StartError::Bind { addr, source })
    }

    /// Serves the API on `listener` and runs the executor until `shutdown`
    /// fires, then stops gracefully (see `drain`): within
    /// `SHUTDOWN_GRACE_SECONDS`, results are still taken and the handler
    /// steps already running finish; then held-back acknowledgements,
    /// webhooks and history are flushed.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let orchestrator = self.orchestrator;
        // Fires once the drain is over: HTTP and the background loops stop.
        let stop = CancellationToken::new();
        // With storage other instances share, new work is theirs from the
        // first moment; alone, this instance keeps running queued jobs
        // through the drain, or results taken then would lead nowhere.
        let stop_taking = if orchestrator.storage.is_shared() { shutdown.clone() } else { stop.clone() };
        let steps = TaskTracker::new();
        let executor = tokio::spawn(orchestrator.clone().run_executor(stop_taking, steps.clone()));
        let maintenance = tokio::spawn(orchestrator.clone().run_maintenance(stop.clone()));
        let watcher = tokio::spawn(orchestrator.clone().run_watcher(stop.clone()));
        // Schedules create jobs: none once stopping starts.
        let scheduler = tokio::spawn(orchestrator.clone().run_scheduler(shutdown.clone()));
        let upkeep = tokio::spawn(orchestrator.clone().run_blueprint_upkeep(stop.clone()));
        let addr: Option<SocketAddr> = listener.local_addr().ok();
        tracing::info!(addr = ?addr, "serving");
        let router = api::router(AppState { orchestrator: orchestrator.clone(), draining: shutdown.clone() });
        let limits = orchestrator.config.limits;
        let mut http = tokio::spawn(server::serve(listener, router, limits, stop.clone()));
        let early = tokio::select! {
            () = shutdown.cancelled() => None,
            served = &mut http => Some(served),
        };
        let grace = orchestrator.config.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        if early.is_none() {
            tracing::info!(grace_s = grace.as_secs(), "draining: no new jobs; results are still taken");
            drain(&orchestrator, &steps, deadline).await;
        }
        stop.cancel();
        if let Err(e) = executor.await {
            tracing::error!(error = %e, task = "executor", "background task stopped abnormally");
        }
        steps.close();
        if tokio::time::timeout_at(deadline, steps.wait()).await.is_err() {
            // Their queue entries stay unacknowledged: redelivered (Redis)
            // or lost with the process (memory).
            tracing::warn!(running = steps.len(), "handler steps still running at the end of the grace period");
        }
        if let Err(e) = orchestrator.storage.leave().await {
            tracing::warn!(error = %e, "cannot flush held-back acknowledgements; their steps will be redelivered");
        }
        for (name, task) in
            [("maintenance", maintenance), ("watcher", watcher), ("scheduler", scheduler), ("blueprint upkeep", upkeep)]
        {
            if let Err(e) = task.await {
                tracing::error!(error = %e, task = name, "background task stopped abnormally");
            }
        }
        let served = match early {
            Some(served) => served,
            None => http.await,
        }
        .map_err(std::io::Error::other);
        // Jobs that ended during the drain still get their deliveries queued
        // and their events recorded first.
        self.background_stop.cancel();
        if let Some(writer) = self.history_writer {
            writer.finish(HISTORY_FLUSH_TIMEOUT).await;
        }
        tracing::info!("stopped");
        served
    }
}

/// How often a draining server looks whether anything is left to wait for.
const DRAIN_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// The drain: until `deadline`, or earlier once no handler step runs and no
/// job is under way that this instance may still be needed for.
async fn drain(orchestrator: &Orchestrator, steps: &TaskTracker, deadline: tokio::time::Instant) {
    loop {
        if steps.is_empty() && !under_way(orchestrator).await {
            tracing::info!("drained: nothing left under way");
            return;
        }
        if tokio::time::Instant::now() + DRAIN_CHECK > deadline {
            tokio::time::sleep_until(deadline).await;
            tracing::info!("grace period over");
            return;
        }
        tokio::time::sleep(DRAIN_CHECK).await;
    }
}

/// Whether a job is under way that a draining instance waits for. Jobs
/// waiting on a worker count only while some worker holds a task: a result
/// can come only from one, and a task parked for want of a worker would
/// otherwise hold every shutdown for the whole grace period. Alone (memory
/// storage) jobs queued or running count too; with storage other instances
/// share, those are theirs to run, including the entries this instance read
/// but will not run. Jobs waiting for a person or a child job never count
/// (a child under way counts by itself).
async fn under_way(orchestrator: &Orchestrator) -> bool {
    let shared = orchestrator.storage.is_shared();
    let counts = match orchestrator.storage.job_counts().await {
        Ok(counts) => counts,
        Err(e) => {
            tracing::warn!(error = %e, "cannot count jobs while draining");
            return true;
        }
    };
    if !shared && counts.queued > 0 {
        return true;
    }
    let mut on_workers = false;
    for (status, _) in counts.by_status.iter().filter(|(_, n)| **n > 0) {
        match status {
            JobStatus::WaitingForWorker | JobStatus::WaitingForParallelTasks => on_workers = true,
            JobStatus::WaitingForHuman | JobStatus::WaitingForChildJob => {}
            status if !shared && !status.is_terminal() => return true,
            _ => {}
        }
    }
    if !on_workers {
        return false;
    }
    match orchestrator.storage.live_workers().await {
        Ok(workers) => workers.iter().any(|worker| worker.in_flight > 0),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list workers while draining");
            true
        }
    }
}

/// The documented default tokens are public knowledge: say so loudly.
fn warn_about_default_tokens(config: &Config, has_clients_file: bool) {
    if !has_clients_file && is_default(&config.client_token, DEFAULT_CLIENT_TOKEN) {
        tracing::warn!(
            "CLIENT_TOKEN is the documented default: anyone can create jobs. Set CLIENT_TOKEN or CLIENTS_CONFIG_PATH."
        );
    }
    if is_default(&config.global_worker_token, DEFAULT_WORKER_TOKEN) {
        tracing::warn!(
            "GLOBAL_WORKER_TOKEN is the documented default: anyone can act as a worker. Set GLOBAL_WORKER_TOKEN."
        );
    }
}
