//! The watcher: tasks not answered by their deadline (`WORKER_TIMEOUT_SECONDS`
//! after dispatch) take the transient-failure path — dispatched again, or the
//! job quarantined once retries are spent. Runs every
//! `WATCHER_INTERVAL_SECONDS` on one instance at a time (a storage lock).
//!
//! This is also what recovers a task that a worker or an instance lost after
//! taking it off a queue: no result ever comes, the deadline passes.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{Orchestrator, OrchestratorResult};
use crate::model::{JobId, JobStatus};

/// Overdue jobs handled per storage round trip.
const BATCH: usize = 100;

impl Orchestrator {
    pub async fn run_watcher(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.config.watcher_interval;
        self.run_singleton("watcher", every, every * 3, shutdown, async |this: &Orchestrator| {
            if let Err(e) = this.time_out_overdue(Utc::now()).await {
                tracing::warn!(error = %e, "watcher round failed; retrying next round");
            }
        })
        .await;
    }

    /// Times out every task whose deadline is at or before `now`.
    pub async fn time_out_overdue(&self, now: DateTime<Utc>) -> OrchestratorResult<usize> {
        let mut handled = 0;
        loop {
            let overdue = self.storage.overdue_jobs(now, BATCH).await?;
            let last_batch = overdue.len() < BATCH;
            for id in overdue {
                self.time_out(id, now).await?;
                handled += 1;
            }
            if last_batch {
                return Ok(handled);
            }
        }
    }

    async fn time_out(&self, id: JobId, now: DateTime<Utc>) -> OrchestratorResult<()> {
        let Some(mut job) = self.storage.get_job(id).await? else {
            return Ok(self.storage.unwatch(id).await?);
        };
        let Some(task) = job.current_task.clone() else { return Ok(self.storage.unwatch(id).await?) };
        if job.status != JobStatus::WaitingForWorker || task.deadline > now {
            // Answered or re-dispatched since the index was read.
            return Ok(());
        }
        tracing::warn!(job_id = %id, task_id = %task.task_id, worker_id = task.worker_id.as_deref().unwrap_or(""), "task timed out");
        let cause = format!("no result within WORKER_TIMEOUT_SECONDS ({} s)", self.config.worker_timeout.as_secs());
        if self.retry_task(&mut job, &task, &cause).await?
            && let Some(worker) = &task.worker_id
        {
            self.storage.add_in_flight(worker, -1).await?;
        }
        Ok(())
    }
}
