//! The executor's job queue: jobs whose current state's handler runs next,
//! and jobs parked until a worker for their task type registers.

use std::time::Duration;

use async_trait::async_trait;

use super::StorageResult;
use crate::model::JobId;

/// A dequeued job id, to be acknowledged once its step is recorded.
#[derive(Debug)]
pub struct JobTicket {
    pub job_id: JobId,
    /// Backend-specific receipt (a stream entry id for Redis).
    pub receipt: Option<String>,
}

#[async_trait]
pub trait JobQueue: Send + Sync {
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
}
