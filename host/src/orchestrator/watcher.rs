//! The watcher: tasks not answered in time. Runs every
//! `WATCHER_INTERVAL_SECONDS` on one instance at a time (a storage lock) and
//! looks at every job whose watch deadline ([`Job::task_deadline`]) passed:
//!
//! - a task no worker took within the job's `dispatch_timeout` is taken back
//!   off its queue and the job fails;
//! - a task without a result within the job's `result_timeout` fails the job;
//! - a task without a result within `WORKER_TIMEOUT_SECONDS` takes the
//!   transient-failure path (dispatched again, or the job quarantined once
//!   retries are spent; a parallel branch is recorded as `timeout`).
//!
//! This is also what recovers a task that a worker or an instance lost after
//! taking it off a queue: no result ever comes, the deadline passes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::parallel::Verdict;
use super::{Orchestrator, OrchestratorResult};
use crate::history::{JobEvent, JobEventKind};
use crate::model::{Job, JobId, JobStatus, TaskRecord};
use crate::storage::FollowUp;

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

    /// Deals with every job whose watch deadline is at or before `now`.
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
        let Some(job) = self.storage.get_job(id).await? else {
            return Ok(self.storage.unwatch(id).await?);
        };
        match job.task_deadline() {
            None => Ok(self.storage.unwatch(id).await?),
            // Answered or re-dispatched since the index was read.
            Some(deadline) if deadline > now => Ok(()),
            Some(_) if job.status == JobStatus::WaitingForParallelTasks => self.time_out_branches(job, now).await,
            Some(_) => self.time_out_task(job, now).await,
        }
    }

    async fn time_out_task(&self, mut job: Job, now: DateTime<Utc>) -> OrchestratorResult<()> {
        let Some(task) = job.current_task.clone() else { return Ok(self.storage.unwatch(job.id).await?) };
        match self.check_timeouts(&job, &task, now).await? {
            Verdict::Later(deadline) => {
                if let Some(current) = job.current_task.as_mut() {
                    current.deadline = deadline;
                }
                self.save(&mut job, FollowUp::None).await?;
            }
            Verdict::FailJob { message, release } => {
                let applied = if task.cancel_requested {
                    // The client asked to cancel it: that, not the timeout, ends the job.
                    self.end_cancelled(&mut job, &task).await?
                } else {
                    tracing::warn!(job_id = %job.id, task_id = %task.task_id, %message, "job failed");
                    let event = self.history.prepare(|| timed_out_event(&job, &task, &message));
                    job.end(JobStatus::Failed, Some(message));
                    let applied = self.save(&mut job, FollowUp::None).await?;
                    if applied {
                        self.history.record(event);
                    }
                    applied
                };
                if let (true, true, Some(worker)) = (applied, release, &task.worker_id) {
                    self.take_back(worker, &job, task.task_id).await?;
                    if !task.cancel_requested {
                        self.judge(worker, Some(false)).await;
                    }
                }
            }
            Verdict::Retry(cause) => {
                tracing::warn!(
                    job_id = %job.id, task_id = %task.task_id, worker_id = task.worker_id.as_deref().unwrap_or(""),
                    "task timed out"
                );
                let applied = if task.cancel_requested {
                    // Cancelled and then silent: nothing to retry.
                    self.end_cancelled(&mut job, &task).await?
                } else {
                    let event = self.history.prepare(|| timed_out_event(&job, &task, &cause));
                    let applied = self.retry_task(&mut job, &task, &cause).await?;
                    if applied {
                        self.history.record(event);
                    }
                    applied
                };
                if let (true, Some(worker)) = (applied, &task.worker_id) {
                    self.take_back(worker, &job, task.task_id).await?;
                    if !task.cancel_requested {
                        self.judge(worker, Some(false)).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends `worker_id`'s hold on task `task_id` of `job`, which has moved on
    /// without its result: a copy still queued (a slow worker's backlog, a
    /// dead worker's queue) is taken back, so it never runs after its retry
    /// and never waits for a worker that restarts under the same id; either
    /// way the worker's in-flight slot is given back.
    pub(super) async fn take_back(&self, worker_id: &str, job: &Job, task_id: Uuid) -> OrchestratorResult<()> {
        // Withdrawing gives the slot back itself.
        if self.storage.withdraw_task(worker_id, task_id).await? {
            tracing::info!(job_id = %job.id, %task_id, worker_id, "task taken back off the worker's queue");
        } else {
            self.storage.add_in_flight(worker_id, -1).await?;
        }
        Ok(())
    }

    /// Which of `task`'s timeouts have passed at `now`, the job-level ones first.
    pub(super) async fn check_timeouts(
        &self,
        job: &Job,
        task: &TaskRecord,
        now: DateTime<Utc>,
    ) -> OrchestratorResult<Verdict> {
        let age = (now - task.dispatched_at).to_std().unwrap_or(Duration::ZERO);
        let mut taken = false;
        if let Some(limit) = job.timeouts.dispatch_timeout()
            && age >= limit
        {
            taken = match &task.worker_id {
                None => false,
                // Withdrawing it also makes sure no worker takes it from now on.
                Some(worker) => !self.storage.withdraw_task(worker, task.task_id).await?,
            };
            if !taken {
                let message = format!(
                    "no worker took task {} within the job's dispatch_timeout ({})",
                    task.task_type,
                    seconds(limit)
                );
                return Ok(Verdict::FailJob { message, release: false });
            }
        }
        if let Some(limit) = job.timeouts.result_timeout()
            && age >= limit
        {
            let message =
                format!("no result for task {} within the job's result_timeout ({})", task.task_type, seconds(limit));
            return Ok(Verdict::FailJob { message, release: task.worker_id.is_some() });
        }
        match task.routing.timeout_seconds {
            Some(limit) if age >= Duration::from_secs(limit.into()) => {
                return Ok(Verdict::Retry(format!("no result within the task's timeout_seconds ({limit} s)")));
            }
            None if age >= self.config.worker_timeout => {
                return Ok(Verdict::Retry(format!(
                    "no result within WORKER_TIMEOUT_SECONDS ({})",
                    seconds(self.config.worker_timeout)
                )));
            }
            _ => {}
        }
        let next = self.next_deadline(job, task, taken).unwrap_or(DateTime::<Utc>::MAX_UTC);
        Ok(Verdict::Later(next.max(now + chrono::Duration::milliseconds(1))))
    }
}

/// The history's record of `task` running out of time (`cause` says which limit).
pub(super) fn timed_out_event(job: &Job, task: &TaskRecord, cause: &str) -> JobEvent {
    let event = JobEvent::new(JobEventKind::TaskTimedOut, job)
        .task(task.task_id)
        .attempt(task.retries + 1)
        .context(json!({ "task_type": task.task_type, "cause": cause }));
    match &task.worker_id {
        Some(worker) => event.worker(worker.clone()),
        None => event,
    }
}

fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}
