//! Cancelling jobs (`POST /api/v1/jobs/{id}/cancel`).
//!
//! - A job waiting for a worker: if no worker has taken the task yet, it is
//!   taken back off the queue and the job is cancelled at once; otherwise the
//!   task is flagged (`cancel_requested`, which the worker can read), a
//!   `cancel_task` command is pushed over the worker's WebSocket when it has
//!   one (on whichever instance), and the worker's answer decides — `cancelled` follows the task's `cancelled`
//!   transition or ends the job `cancelled`. A flagged task that times out or
//!   fails transiently is not retried: the job ends `cancelled`.
//! - A job waiting for a human, for parallel branches or for a child job is
//!   cancelled at once; branches still queued are taken back, and the child is
//!   cancelled too.
//! - Any other job (pending, running, or ended) cannot be cancelled: `409`.

use std::collections::HashSet;

use serde_json::json;
use uuid::Uuid;

use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::auth::Client;
use crate::history::{JobEvent, JobEventKind};
use crate::model::{Job, JobId, JobStatus, TaskRecord};
use crate::storage::FollowUp;

/// Attempts at cancelling a job that keeps changing underneath.
const MAX_CONFLICTS: usize = 8;

/// How a cancellation request was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// The job is cancelled.
    Done,
    /// A worker holds the task; it has been asked to stop: over its socket
    /// (`pushed`), else by the flag it polls.
    Requested { pushed: bool },
}

impl Orchestrator {
    /// Cancels `client`'s job `id`.
    pub async fn cancel_job(&self, client: &Client, id: &str) -> OrchestratorResult<Cancellation> {
        let job = self.job_for(client, id).await?;
        self.cancel(job.id, &client.name).await
    }

    /// Cancels job `id` (a client's job, or a child whose parent was
    /// cancelled); `by` is who asked, for the history.
    async fn cancel(&self, id: JobId, by: &str) -> OrchestratorResult<Cancellation> {
        // A task this call already took off its queue: on a retry after a
        // conflict it must still count as never taken.
        let mut withdrawn: Option<Uuid> = None;
        for _ in 0..MAX_CONFLICTS {
            let Some(mut job) = self.storage.get_job(id).await? else {
                return Err(OrchestratorError::NotFound(format!("job {id} not found")));
            };
            // Each arm returns once its update lands; a conflict tries again.
            match job.status {
                JobStatus::WaitingForWorker => {
                    let Some(task) = job.current_task.clone() else { return Err(not_cancellable(&job)) };
                    let queued = match &task.worker_id {
                        _ if withdrawn == Some(task.task_id) => true,
                        None => true,
                        Some(worker) => self.storage.withdraw_task(worker, task.task_id).await?,
                    };
                    let event = self.history.prepare(|| cancel_event(&job, &task, queued, by));
                    if queued {
                        withdrawn = Some(task.task_id);
                        tracing::info!(job_id = %id, task_id = %task.task_id, "task withdrawn before a worker took it");
                        if self.end_cancelled(&mut job, &task).await? {
                            self.history.record(event);
                            return Ok(Cancellation::Done);
                        }
                        // The job changed meanwhile and the task is off its queue.
                        continue;
                    }
                    if let Some(current) = job.current_task.as_mut() {
                        current.cancel_requested = true;
                    }
                    if self.save(&mut job, FollowUp::None).await? {
                        self.history.record(event);
                        tracing::info!(job_id = %id, task_id = %task.task_id, "worker asked to cancel its task");
                        let pushed = self.push_cancel(id, &task).await;
                        return Ok(Cancellation::Requested { pushed });
                    }
                }
                JobStatus::WaitingForHuman | JobStatus::WaitingForParallelTasks | JobStatus::WaitingForChildJob => {
                    let answered: HashSet<Uuid> = match &job.parallel {
                        Some(wait) => self.storage.branch_results(wait.wait_id).await?.into_keys().collect(),
                        None => HashSet::new(),
                    };
                    let child = job.child.as_ref().map(|c| c.job_id);
                    let fan_out = job.parallel.as_ref().map(|w| w.wait_id);
                    let waiting = job.status;
                    for task in job.parallel.iter_mut().flat_map(|w| w.branches.iter_mut()) {
                        task.cancel_requested = true;
                    }
                    let event = self.history.prepare(|| {
                        JobEvent::new(JobEventKind::CancellationRequested, &job)
                            .context(json!({ "while": waiting.as_str(), "by": by }))
                    });
                    job.end(JobStatus::Cancelled, Some(format!("cancelled by the client while {waiting}")));
                    let applied = self.save(&mut job, FollowUp::None).await?;
                    if applied {
                        self.history.record(event);
                        self.release_waiting_tasks_of(&job, waiting, |task| answered.contains(&task)).await?;
                        // Branches workers still run are stopped, not just ignored.
                        for branch in job.parallel.iter().flat_map(|w| w.branches.iter()) {
                            if !answered.contains(&branch.task_id) {
                                self.push_cancel(id, branch).await;
                            }
                        }
                        if let Some(wait_id) = fan_out {
                            self.storage.close_fan_out(wait_id).await?;
                        }
                        if let Some(child) = child {
                            self.cancel_child(child).await;
                        }
                        tracing::info!(job_id = %id, %waiting, "job cancelled");
                        return Ok(Cancellation::Done);
                    }
                }
                _ => return Err(not_cancellable(&job)),
            }
        }
        Err(OrchestratorError::Conflict(format!("job {id} kept changing; try again")))
    }

    async fn cancel_child(&self, child: JobId) {
        // A child that already ended is left as it is; one that is pending or
        // running is cancelled by the executor before its next step, since
        // its parent has ended.
        match Box::pin(self.cancel(child, "parent job")).await {
            Ok(_) => tracing::info!(job_id = %child, "child job cancelled with its parent"),
            Err(e) => tracing::info!(job_id = %child, reason = %e, "child job not cancelled"),
        }
    }

    /// Ends `job`, whose `task` was cancelled, by the task's `cancelled`
    /// transition when it declares one, else with status `cancelled`.
    pub(super) async fn end_cancelled(&self, job: &mut Job, task: &TaskRecord) -> OrchestratorResult<bool> {
        let follow_up = match task.transitions.get("cancelled") {
            Some(next) => self.move_on(job, next.clone(), None),
            None => {
                job.end(JobStatus::Cancelled, Some("task was cancelled".into()));
                FollowUp::None
            }
        };
        self.save(job, follow_up).await
    }

    /// Takes the tasks `job` waited on back from their workers' queues, or,
    /// where a worker already has one, gives back that worker's slot (the
    /// answer will be ignored). Skips tasks for which `answered` holds.
    pub(super) async fn release_waiting_tasks(
        &self,
        job: &Job,
        answered: impl Fn(Uuid) -> bool,
    ) -> OrchestratorResult<()> {
        self.release_waiting_tasks_of(job, job.status, answered).await
    }

    async fn release_waiting_tasks_of(
        &self,
        job: &Job,
        waiting: JobStatus,
        answered: impl Fn(Uuid) -> bool,
    ) -> OrchestratorResult<()> {
        let tasks: Vec<&TaskRecord> = match waiting {
            JobStatus::WaitingForWorker => job.current_task.iter().collect(),
            JobStatus::WaitingForParallelTasks => job.parallel.iter().flat_map(|w| w.branches.iter()).collect(),
            _ => Vec::new(),
        };
        for task in tasks.into_iter().filter(|t| !answered(t.task_id)) {
            if let Some(worker) = &task.worker_id
                && !self.storage.withdraw_task(worker, task.task_id).await?
            {
                self.storage.add_in_flight(worker, -1).await?;
            }
        }
        Ok(())
    }

    /// Whether the worker holding `task_id` of job `job_id` should stop.
    pub async fn cancellation_requested(
        &self,
        worker_id: &str,
        job_id: &str,
        task_id: &str,
    ) -> OrchestratorResult<bool> {
        let not_found = || OrchestratorError::NotFound(format!("task {task_id} of job {job_id} not found"));
        let job_id: JobId = job_id.parse().map_err(|_| not_found())?;
        let task_id: Uuid = task_id.parse().map_err(|_| not_found())?;
        let job = self.storage.get_job(job_id).await?.ok_or_else(not_found)?;
        let task = job.task(task_id).ok_or_else(not_found)?;
        if task.worker_id.as_deref() != Some(worker_id) {
            return Err(OrchestratorError::Forbidden(format!("task {task_id} was not given to worker {worker_id}")));
        }
        Ok(task.cancel_requested || job.status == JobStatus::Cancelled)
    }
}

/// The history's record of a cancellation of `task`'s job: `queued` when
/// the task was taken back before any worker had it.
fn cancel_event(job: &Job, task: &TaskRecord, queued: bool, by: &str) -> JobEvent {
    let event = JobEvent::new(JobEventKind::CancellationRequested, job)
        .task(task.task_id)
        .context(json!({ "while": job.status.as_str(), "task_withdrawn": queued, "by": by }));
    match &task.worker_id {
        Some(worker) => event.worker(worker.clone()),
        None => event,
    }
}

fn not_cancellable(job: &Job) -> OrchestratorError {
    OrchestratorError::Conflict(format!(
        "job {} is {} and cannot be cancelled; only a job waiting for a worker, a human, parallel branches or a child job can",
        job.id, job.status
    ))
}
