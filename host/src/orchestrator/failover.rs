//! Failing over the tasks an expired worker's queue still held: no one will
//! ever take them, so they take the transient-failure path at once instead
//! of waiting out `WORKER_TIMEOUT_SECONDS` (dispatched again, or the job
//! quarantined once its retries are spent; a parallel branch is recorded as
//! `timeout`).

use serde_json::{Value, json};
use uuid::Uuid;

use super::parallel::TIMEOUT_STATUS;
use super::watcher::timed_out_event;
use super::{Orchestrator, OrchestratorResult};
use crate::model::{JobId, JobStatus};

impl Orchestrator {
    /// Task `task_id` of job `job_id` was dropped with purged worker
    /// `worker_id`'s queue (the worker's slots went with its record).
    pub(super) async fn fail_over(&self, worker_id: &str, job_id: JobId, task_id: Uuid) -> OrchestratorResult<()> {
        let Some(mut job) = self.storage.get_job(job_id).await? else { return Ok(()) };
        let held = job.waiting_tasks().find(|t| t.task_id == task_id && t.worker_id.as_deref() == Some(worker_id));
        // Answered, timed out or cancelled since: nothing waits on it.
        let Some(task) = held.cloned() else { return Ok(()) };
        let cause = format!("worker {worker_id} expired with the task still queued");
        tracing::warn!(%job_id, %task_id, worker_id, "task queued for an expired worker; failing it over");
        let event = self.history.prepare(|| timed_out_event(&job, &task, &cause));
        let applied = if job.status == JobStatus::WaitingForParallelTasks {
            let error = json!({ "code": "TIMEOUT", "message": cause });
            self.record_branch(&job, &task, TIMEOUT_STATUS, Value::Null, error).await?
        } else if task.cancel_requested {
            // Cancelled and never taken: nothing to retry.
            return self.end_cancelled(&mut job, &task).await.map(|_| ());
        } else {
            self.retry_task(&mut job, &task, &cause).await?
        };
        if applied {
            self.history.record(event);
        }
        Ok(())
    }
}
