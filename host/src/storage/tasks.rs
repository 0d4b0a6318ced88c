//! Per-worker task queues: what a worker's poll takes, and what a timeout or
//! a cancellation takes back before any poll did.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::StorageResult;
use crate::model::TaskPayload;

#[async_trait]
pub trait TaskQueues: Send + Sync {
    /// Waits up to `timeout` for a task queued for `worker_id`, highest priority first.
    async fn pop_task(&self, worker_id: &str, timeout: Duration) -> StorageResult<Option<TaskPayload>> {
        self.pop_task_until(worker_id, timeout, &CancellationToken::new()).await
    }

    /// [`TaskQueues::pop_task`], whose wait also ends when `stop` fires.
    /// Unlike dropping the call, which may cut off a pop Redis has already
    /// run (the task leaves the queue and its reply goes nowhere), `stop`
    /// ends the wait only between storage calls: a task taken is always returned.
    async fn pop_task_until(
        &self,
        worker_id: &str,
        timeout: Duration,
        stop: &CancellationToken,
    ) -> StorageResult<Option<TaskPayload>>;

    /// Takes task `task_id` back off `worker_id`'s queue if no poll has
    /// taken it yet. `true` when it was still queued: it is gone now and will
    /// never be handed out. `false` when a worker has it (or it never was queued).
    async fn withdraw_task(&self, worker_id: &str, task_id: Uuid) -> StorageResult<bool>;
}
