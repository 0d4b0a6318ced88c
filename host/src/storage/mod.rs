//! Where the orchestrator's state lives: jobs, the job queue, per-worker task
//! queues, the worker registry, worker token digests and client quotas.
//!
//! [`Storage`] is the seam between the orchestration logic and a backend
//! (memory by default, Redis for production). Every method is one atomic step
//! for its backend: a job update and what must follow it (enqueueing the job,
//! queueing its task for a worker) land together or not at all, so a crash
//! between the two cannot strand a job.

mod memory;
mod redis;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::auth::TokenHash;
use crate::model::{Job, JobId, TaskPayload, WorkerInfo, WorkerPatch};

pub use memory::MemoryStorage;
pub use redis::RedisStorage;

/// A storage failure: the backend could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// What a job update sets in motion, applied atomically with it.
#[derive(Debug, Clone)]
pub enum FollowUp {
    /// Nothing: the job waits or has ended.
    None,
    /// Queue the job for the executor (its current state's handler runs next).
    Enqueue,
    /// Queue a task for a worker, waking one of its waiting polls, and count
    /// it among the worker's tasks in flight.
    PushTask { worker_id: String, task: TaskPayload },
    /// No live worker takes this task type yet: hold the job until one registers.
    Park { task_type: String },
}

/// What dispatch needs to know of a worker to choose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLoad {
    pub worker_id: String,
    pub idle: bool,
    pub in_flight: u32,
}

/// A dequeued job id, to be acknowledged once its step is recorded.
#[derive(Debug)]
pub struct JobTicket {
    pub job_id: JobId,
    /// Backend-specific receipt (a stream entry id for Redis).
    pub receipt: Option<String>,
}

/// The orchestrator's state. Object-safe: the server holds an `Arc<dyn Storage>`.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Stores a new job and queues it for the executor.
    async fn create_job(&self, job: &Job) -> StorageResult<()>;

    async fn get_job(&self, id: JobId) -> StorageResult<Option<Job>>;

    /// Replaces the stored job if it is still at `job.version`, then applies
    /// `follow_up`. On success `job.version` is bumped and `true` returned;
    /// `false` means someone else updated the job first and nothing changed.
    /// The same step keeps the watch index current: a job waiting on a task
    /// is indexed under the task's deadline, any other job is not.
    async fn update_job(&self, job: &mut Job, follow_up: FollowUp) -> StorageResult<bool>;

    /// Jobs whose task deadline is at or before `now`, earliest first, at most `max`.
    async fn overdue_jobs(&self, now: DateTime<Utc>, max: usize) -> StorageResult<Vec<JobId>>;

    /// Drops `id` from the watch index (its job no longer exists).
    async fn unwatch(&self, id: JobId) -> StorageResult<()>;

    /// [`update_job`](Storage::update_job) that, when applied, also gives back
    /// one of `worker_id`'s in-flight slots (its task was answered) — in the
    /// same atomic step where the backend can.
    async fn update_job_releasing(&self, job: &mut Job, follow_up: FollowUp, worker_id: &str) -> StorageResult<bool> {
        let applied = self.update_job(job, follow_up).await?;
        if applied {
            self.add_in_flight(worker_id, -1).await?;
        }
        Ok(applied)
    }

    /// Waits for the next queued job; `None` when `timeout` passes first.
    async fn next_job(&self, timeout: Duration) -> StorageResult<Option<JobTicket>>;

    /// Confirms that the step a ticket asked for has been recorded.
    async fn ack_job(&self, ticket: JobTicket) -> StorageResult<()>;

    /// Takes up to `max` jobs parked for lack of a worker taking `task_type`.
    async fn take_parked(&self, task_type: &str, max: usize) -> StorageResult<Vec<JobId>>;

    /// Waits up to `timeout` for a task queued for `worker_id`, highest priority first.
    async fn pop_task(&self, worker_id: &str, timeout: Duration) -> StorageResult<Option<TaskPayload>>;

    /// Adds or replaces a worker; it is live for `ttl`.
    async fn register_worker(&self, worker: WorkerInfo, ttl: Duration) -> StorageResult<()>;

    /// Renews a worker's liveness and applies `patch`; `None` for an unknown
    /// or expired worker.
    async fn refresh_worker(
        &self,
        worker_id: &str,
        patch: Option<WorkerPatch>,
        ttl: Duration,
    ) -> StorageResult<Option<WorkerInfo>>;

    /// The load of every live worker whose `supported_tasks` contains `task_type`.
    async fn candidates_for(&self, task_type: &str) -> StorageResult<Vec<WorkerLoad>>;

    /// Every live worker.
    async fn live_workers(&self) -> StorageResult<Vec<WorkerInfo>>;

    /// Deletes the records and index entries of workers whose liveness
    /// lapsed; returns how many. Keeps storage from growing with every
    /// worker that ever registered.
    async fn purge_expired_workers(&self) -> StorageResult<usize>;

    /// Adjusts a worker's count of tasks in flight (never below zero).
    async fn add_in_flight(&self, worker_id: &str, delta: i32) -> StorageResult<()>;

    /// Replaces every individual worker token digest at once (start-up and
    /// `reload-workers`): a request sees either the old set or the new one.
    async fn replace_worker_tokens(&self, tokens: HashMap<String, TokenHash>) -> StorageResult<()>;

    /// The token digest of `worker_id`, if it has its own token.
    async fn worker_token(&self, worker_id: &str) -> StorageResult<Option<TokenHash>>;

    /// The worker whose own token has digest `hash`.
    async fn worker_for_token(&self, hash: &TokenHash) -> StorageResult<Option<String>>;

    /// Counts one use of `client`'s quota for `period` (e.g. `2026-11`) if
    /// fewer than `limit` were counted; `false` when the quota is used up.
    /// Check and count are one atomic step.
    async fn take_quota(&self, client: &str, period: &str, limit: u64) -> StorageResult<bool>;

    /// Claims slot `slot` (Unix seconds) of schedule `schedule` for `ttl`;
    /// `true` for exactly one caller, however many instances ask.
    async fn claim_slot(&self, schedule: &str, slot: i64, ttl: Duration) -> StorageResult<bool>;

    /// Takes the lock `name` for `owner` for `ttl`, unless another owner holds
    /// it; taking a lock one already holds renews it. For loops that must run
    /// on one instance at a time.
    async fn try_lock(&self, name: &str, owner: &str, ttl: Duration) -> StorageResult<bool>;

    /// Releases `name` if `owner` still holds it.
    async fn release_lock(&self, name: &str, owner: &str) -> StorageResult<bool>;
}
