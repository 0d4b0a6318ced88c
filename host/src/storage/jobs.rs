//! Job records: create, read, versioned update with what must follow it, and
//! the watch index of jobs waiting on tasks.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StorageResult;
use crate::model::{Job, JobId, TaskPayload};

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

/// The worker whose answer an update applies.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    pub worker_id: &'a str,
    /// What the answer says of the worker's reliability (see
    /// `WorkerRegistry::record_outcome`); `None` does not count.
    pub verdict: Option<bool>,
}

#[async_trait]
pub trait JobStore: Send + Sync {
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

    /// [`update_job`](JobStore::update_job) that, when applied, also gives
    /// back one of the answering worker's in-flight slots and counts its
    /// verdict into its reputation, in the same atomic step where the backend
    /// can (one round trip per result, not three).
    async fn update_job_releasing(
        &self,
        job: &mut Job,
        follow_up: FollowUp,
        release: Release<'_>,
    ) -> StorageResult<bool>;

    /// Jobs whose task deadline is at or before `now`, earliest first, at most `max`.
    async fn overdue_jobs(&self, now: DateTime<Utc>, max: usize) -> StorageResult<Vec<JobId>>;

    /// Drops `id` from the watch index (its job no longer exists).
    async fn unwatch(&self, id: JobId) -> StorageResult<()>;
}
