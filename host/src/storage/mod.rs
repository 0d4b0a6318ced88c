//! Where the orchestrator's state lives: jobs, the job queue, per-worker task
//! queues, the worker registry, worker token digests, client quotas, fan-out
//! results, the blueprints' data stores, the listings read from them, workers'
//! progress reports and the live channels to their sockets.
//!
//! [`Storage`] is the seam between the orchestration logic and a backend
//! (memory by default, Redis for production). It is split by concern into
//! one trait per file, so a part of the host that needs one concern (the
//! data-store capability needs only [`DataStores`]) gets only that. Every
//! method is one atomic step for its backend: a job update and what must
//! follow it (enqueueing the job, queueing its task for a worker) land
//! together or not at all, so a crash between the two cannot strand a job.

mod branches;
mod channels;
mod coordination;
mod data;
mod jobs;
mod listing;
mod memory;
mod progress;
mod queue;
mod record;
mod redis;
mod tasks;
mod workers;

pub use branches::{BranchRecord, BranchResults, CLOSED_FAN_OUT_SECS};
pub use channels::{ChannelId, HELD_CANCEL_SECS, INBOX_CAPACITY, MAX_HELD_CANCELS, WorkerChannels};
pub use coordination::Coordination;
pub use data::DataStores;
pub use jobs::{Assignment, FollowUp, JobStore, Release};
pub use listing::{JobCounts, Listings};
pub use memory::MemoryStorage;
pub use progress::ProgressReports;
pub use queue::{JobQueue, JobTicket};
pub use redis::RedisStorage;
pub use tasks::TaskQueues;
pub use workers::{PurgedWorker, REPUTATION_WINDOW, WorkerRegistry, random_access_key, reputation};

/// A storage failure: the backend could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// The orchestrator's whole state, every concern of one backend. Object-safe:
/// the server holds an `Arc<dyn Storage>`.
pub trait Storage:
    JobStore
    + JobQueue
    + TaskQueues
    + WorkerRegistry
    + Coordination
    + BranchResults
    + DataStores
    + Listings
    + ProgressReports
    + WorkerChannels
    + Send
    + Sync
    + 'static
{
}

impl<T> Storage for T where
    T: JobStore
        + JobQueue
        + TaskQueues
        + WorkerRegistry
        + Coordination
        + BranchResults
        + DataStores
        + Listings
        + ProgressReports
        + WorkerChannels
        + Send
        + Sync
        + 'static
{
}
