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

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::auth::TokenHash;
use uuid::Uuid;

use crate::model::{Job, JobId, JobStatus, TaskPayload, WorkerInfo, WorkerPatch};

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
    /// Hand out the job's tasks (one, or a parallel step's branches).
    Dispatch(Vec<Assignment>),
}

impl FollowUp {
    /// One task for one worker.
    pub fn push(worker_id: String, task: TaskPayload) -> Self {
        Self::Dispatch(vec![Assignment::Push { worker_id, task }])
    }

    /// Hold the job until a worker taking `task_type` registers.
    pub fn park(task_type: String) -> Self {
        Self::Dispatch(vec![Assignment::Park { task_type }])
    }
}

/// Where one dispatched task goes.
#[derive(Debug, Clone)]
pub enum Assignment {
    /// Queue the task for a worker, waking one of its waiting polls, and
    /// count it among the worker's tasks in flight.
    Push { worker_id: String, task: TaskPayload },
    /// No live worker takes this task type yet: hold the job until one
    /// registers (the job is parked once per type, however many tasks).
    Park { task_type: String },
}

/// How long a closed fan-out refuses late results. A late copy has read the
/// job while it still waited, so it arrives within one request's time; the
/// margin is wide because the cost is one small entry per fan-out.
pub const CLOSED_FAN_OUT_SECS: u64 = 300;

/// What recording one parallel branch's result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchRecord {
    /// The branch already had a result; nothing changed.
    Duplicate,
    /// Recorded; `answered` branches of the fan-out have a result now,
    /// this one included. Exactly one caller sees the count reach the
    /// number of branches.
    Recorded { answered: usize },
    /// The fan-out was closed (joined, failed or cancelled); nothing changed.
    Closed,
}

/// Per-status job counts and the executor queue's length, for the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Jobs storage holds, by status (ended jobs until their retention lapses).
    pub by_status: BTreeMap<JobStatus, u64>,
    /// Jobs queued for the executor.
    pub queued: u64,
}

/// What dispatch needs to know of a worker to choose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLoad {
    pub worker_id: String,
    pub idle: bool,
    pub in_flight: u32,
}

/// A worker whose liveness lapsed and was purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedWorker {
    pub worker_id: String,
    /// The tasks still queued for it, as (job, task), dropped with its queue.
    pub dropped: Vec<(JobId, Uuid)>,
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
    /// The same step keeps the indexes current: the watch index (a job
    /// waiting on tasks is indexed under [`Job::task_deadline`], any other
    /// job is not) and the status index. When the update ends a job that
    /// has a parent (`parent_job_id`), the parent is queued for the
    /// executor in the same step, so a parent can never miss its child's end.
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

    /// Whether other instances share this storage and take over its queued
    /// jobs: a stopping server then leaves new work to them at once.
    fn is_shared(&self) -> bool {
        false
    }

    /// This instance is on its way out: sends what the backend holds back to
    /// save round trips (Redis: acknowledgements, whose loss would have the
    /// steps' queue entries delivered again) and lets other instances take
    /// over the queue entries it leaves at once.
    async fn leave(&self) -> StorageResult<()> {
        Ok(())
    }

    /// Takes up to `max` jobs parked for lack of a worker taking `task_type`.
    async fn take_parked(&self, task_type: &str, max: usize) -> StorageResult<Vec<JobId>>;

    /// Waits up to `timeout` for a task queued for `worker_id`, highest priority first.
    async fn pop_task(&self, worker_id: &str, timeout: Duration) -> StorageResult<Option<TaskPayload>> {
        self.pop_task_until(worker_id, timeout, &CancellationToken::new()).await
    }

    /// [`Storage::pop_task`], whose wait also ends when `stop` fires. Unlike
    /// dropping the call, which may cut off a pop Redis has already run (the
    /// task leaves the queue and its reply goes nowhere), `stop` ends the
    /// wait only between storage calls: a task taken is always returned.
    async fn pop_task_until(
        &self,
        worker_id: &str,
        timeout: Duration,
        stop: &CancellationToken,
    ) -> StorageResult<Option<TaskPayload>>;

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

    /// Whether `worker_id` is live: polls check it before storage holds a
    /// queue or a waiter for them.
    async fn is_worker_live(&self, worker_id: &str) -> StorageResult<bool>;

    /// The number of live workers (registration checks it against its limit).
    async fn live_worker_count(&self) -> StorageResult<usize>;

    /// Deletes the records, index entries and task queues of workers whose
    /// liveness lapsed; returns them with the tasks their queues still held,
    /// which no one will ever take now (the caller fails them over). Keeps
    /// storage from growing with every worker that ever registered.
    async fn purge_expired_workers(&self) -> StorageResult<Vec<PurgedWorker>>;

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

    // --- Dispatch timeouts and cancellation ---

    /// Takes task `task_id` back off `worker_id`'s queue if no poll has
    /// taken it yet. `true` when it was still queued: it is gone now and will
    /// never be handed out. `false` when a worker has it (or it never was queued).
    async fn withdraw_task(&self, worker_id: &str, task_id: Uuid) -> StorageResult<bool>;

    // --- Parallel branches ---

    /// Records `result` (JSON) for branch `task_id` of fan-out `wait_id`
    /// unless that branch has one already. Results live apart from the job
    /// record, so branches answering at once never conflict.
    async fn record_branch_result(&self, wait_id: Uuid, task_id: Uuid, result: &str) -> StorageResult<BranchRecord>;

    /// Every result recorded for fan-out `wait_id`: task id → JSON.
    async fn branch_results(&self, wait_id: Uuid) -> StorageResult<HashMap<Uuid, String>>;

    /// Forgets fan-out `wait_id`'s results (its job has moved on) and refuses
    /// any result recorded for it from now on, for at least
    /// [`CLOSED_FAN_OUT_SECS`]: a copy of the last branch's result that read
    /// the job before the join must not start the set again and count twice.
    async fn close_fan_out(&self, wait_id: Uuid) -> StorageResult<()>;

    // --- Data stores (the blueprints' key-value stores) ---

    /// The value (JSON) under `key` in store `scope` (`{blueprint}/{store}`).
    async fn data_get(&self, scope: &str, key: &str) -> StorageResult<Option<String>>;

    /// Sets `key` in store `scope` to `value` (JSON).
    async fn data_set(&self, scope: &str, key: &str, value: &str) -> StorageResult<()>;

    /// Deletes `key` from store `scope`; `true` when it existed.
    async fn data_delete(&self, scope: &str, key: &str) -> StorageResult<bool>;

    /// Adds `delta` to the integer under `key` (a missing key counts as 0)
    /// in one atomic step and returns the new value; `None` (and nothing
    /// changed) when the stored value is not an integer or would overflow.
    async fn data_increment(&self, scope: &str, key: &str, delta: i64) -> StorageResult<Option<i64>>;

    // --- Listings ---

    /// `client`'s jobs, newest first, skipping `offset`, at most `limit`.
    async fn client_jobs(&self, client: &str, limit: usize, offset: usize) -> StorageResult<Vec<Job>>;

    /// Ids of jobs with `status`, most recently updated first.
    async fn jobs_with_status(&self, status: JobStatus, limit: usize, offset: usize) -> StorageResult<Vec<JobId>>;

    /// Per-status counts and the executor queue's length.
    async fn job_counts(&self) -> StorageResult<JobCounts>;
}
