//! The orchestration logic: creating jobs, running their handlers, handing
//! tasks to workers and applying results. HTTP handlers call into this; it
//! talks to storage and the runtime and knows nothing of HTTP.

mod approval;
mod blueprints;
mod cancel;
mod children;
mod dispatch;
mod executor;
mod failover;
mod history;
mod jobs;
mod listing;
mod live;
mod maintenance;
mod operator;
mod parallel;
mod polls;
mod results;
mod routing;
mod singleton;
mod watcher;
mod workers;

pub use workers::RELOAD_WITHOUT_PATH;

use std::sync::Arc;

use crate::auth::Credentials;
use crate::config::Config;
use crate::config::schedules::Schedule;
use crate::files::TaskFiles;
use crate::history::{History, HistoryError};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::storage::{Storage, StorageError};
use crate::webhook::Webhooks;
pub use blueprints::{Reloads, short as short_version};

pub use cancel::Cancellation;
pub use listing::{DEFAULT_LIMIT, MAX_LIMIT, Page};
pub use live::ProgressReport;
pub use operator::WEBHOOK_RESEND_INTERVAL;
pub use polls::PollSlots;
pub use results::ResultAck;
pub use workers::Heartbeat;

/// An orchestration request that cannot be carried out, and why.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The job is not in a state the request applies to.
    #[error("{0}")]
    Conflict(String),
    /// A change that was refused and left things as they were (a blueprint
    /// set that does not load).
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    History(#[from] HistoryError),
}

pub type OrchestratorResult<T> = Result<T, OrchestratorError>;

/// The orchestrator's services, shared by the HTTP handlers and the executor.
pub struct Orchestrator {
    pub config: Config,
    pub storage: Arc<dyn Storage>,
    pub runtime: Runtime,
    pub credentials: Credentials,
    /// The schedules of `schedules.toml` (empty without one).
    pub schedules: Vec<Schedule>,
    /// Delivers `webhook_url` notifications in the background.
    pub webhooks: Webhooks,
    /// What `GET /_public/metrics` renders.
    pub metrics: Metrics,
    /// The job history (`HISTORY_DATABASE_URI`); records nothing when off.
    pub history: History,
    /// Jobs' files in S3 (`S3_ENDPOINT_URL`); `None` without S3.
    pub files: Option<TaskFiles>,
    /// Serialises blueprint reloads.
    pub reloads: Reloads,
    /// Long-polls open per worker on this instance (`WORKER_MAX_POLLS`).
    pub polls: PollSlots,
    /// Task types of which this instance parked a task because every
    /// qualified worker was full (see `Orchestrator::freed_slot`).
    pub parked_for_room: std::sync::Mutex<std::collections::HashSet<String>>,
}
