//! Applying a worker's result to its job ("Result semantics" in the HTTP spec).

use std::sync::PoisonError;

use serde_json::{Value, json};
use uuid::Uuid;

use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::auth::WorkerToken;
use crate::history::{JobEvent, JobEventKind};
use crate::model::{
    ErrorCode, FailureEffect, Job, JobId, JobStatus, ResultError, ResultStatus, TaskRecord, WorkerResult,
    WorkerResultBody,
};
use crate::storage::{FollowUp, Release};

/// What a result says of its worker's reliability. Successes (and custom
/// statuses) count for it; a code that quarantines the job (the worker could
/// not or would not do the work), or one this orchestrator does not know,
/// against it. Codes that retry or fail the job (the moment or the input was
/// at fault, not the worker) and a cancellation do not count.
pub(super) fn verdict(result: &WorkerResult) -> Option<bool> {
    match &result.status {
        ResultStatus::Success | ResultStatus::Custom(_) => Some(true),
        ResultStatus::Cancelled => None,
        ResultStatus::Failure => match result.error.as_ref().and_then(ResultError::code) {
            Some(ErrorCode::Other(_)) => Some(false),
            Some(code) if code.effect() == FailureEffect::Quarantine => Some(false),
            _ => None,
        },
    }
}

/// Attempts at applying one result when the job keeps changing underneath.
const MAX_CONFLICTS: usize = 8;

/// How a result was taken; the wire `status` of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultAck {
    Success,
    Failure,
    Cancelled,
    /// A parallel branch's result was recorded.
    Branch,
    /// The job no longer waits on this task (stale, duplicate or timed out):
    /// nothing changed.
    Ignored,
}

impl ResultAck {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "result_accepted_success",
            Self::Failure => "result_accepted_failure",
            Self::Cancelled => "result_accepted_cancelled",
            Self::Branch => "parallel_branch_result_accepted",
            Self::Ignored => "result_ignored",
        }
    }
}

impl Orchestrator {
    /// Applies a result posted by a worker holding `token`.
    pub async fn accept_result(&self, token: &WorkerToken, body: WorkerResultBody) -> OrchestratorResult<ResultAck> {
        let claimed = body.worker_id.as_deref().filter(|id| !id.is_empty());
        let worker_id = self.authorize_worker(token, claimed).await?;
        let worker_id = worker_id.as_str();
        let (Some(job_id), Some(task_id)) = (body.job_id.as_deref(), body.task_id.as_deref()) else {
            return Err(OrchestratorError::BadRequest("job_id and task_id are required".into()));
        };
        let not_found = || OrchestratorError::NotFound(format!("job {job_id} not found"));
        let job_id: JobId = job_id.parse().map_err(|_| not_found())?;
        // A task id that is not a UUID was never issued: it cannot be current.
        let task_id: Option<Uuid> = task_id.parse().ok();

        for _ in 0..MAX_CONFLICTS {
            let mut job = self.storage.get_job(job_id).await?.ok_or_else(not_found)?;
            let current = job.waiting_tasks().find(|task| Some(task.task_id) == task_id);
            let Some(task) = current.cloned() else {
                tracing::info!(%job_id, task_id = body.task_id.as_deref(), worker_id, "stale or duplicate result ignored");
                return Ok(ResultAck::Ignored);
            };
            if task.worker_id.as_deref() != Some(worker_id) {
                return Err(OrchestratorError::Forbidden(format!(
                    "task {} was not given to worker {worker_id}",
                    task.task_id
                )));
            }
            if job.status == JobStatus::WaitingForParallelTasks {
                return self.accept_for_branch(&job, &task, worker_id, &body).await;
            }
            let event = self.history.prepare(|| self.result_event(&job, &task, worker_id, &body.result));
            let (ack, follow_up) = self.apply(&mut job, &task, &body.result).await?;
            let verdict = verdict(&body.result);
            let applied = match follow_up {
                Applied::Store(follow_up) => {
                    self.save_releasing(&mut job, follow_up, Release { worker_id, verdict }).await?
                }
                Applied::Stored(applied) => {
                    if applied {
                        self.storage.add_in_flight(worker_id, -1).await?;
                        self.judge(worker_id, verdict).await;
                    }
                    applied
                }
            };
            if applied {
                self.history.record(event);
                self.task_round_trip(&task);
                self.freed_slot(&task.task_type).await?;
                tracing::debug!(%job_id, task_id = %task.task_id, worker_id, status = %job.status, "result applied");
                return Ok(ack);
            }
        }
        tracing::warn!(%job_id, "job kept changing while a result was applied; result ignored");
        Ok(ResultAck::Ignored)
    }

    async fn accept_for_branch(
        &self,
        job: &Job,
        branch: &TaskRecord,
        worker_id: &str,
        body: &WorkerResultBody,
    ) -> OrchestratorResult<ResultAck> {
        if self.accept_branch_result(job, branch, worker_id, &body.result).await? {
            Ok(ResultAck::Branch)
        } else {
            tracing::info!(job_id = %job.id, task_id = %branch.task_id, worker_id, "duplicate branch result ignored");
            Ok(ResultAck::Ignored)
        }
    }

    /// Changes `job` as `result` demands and says what the storage update must
    /// set in motion.
    async fn apply(
        &self,
        job: &mut Job,
        task: &TaskRecord,
        result: &WorkerResult,
    ) -> OrchestratorResult<(ResultAck, Applied)> {
        match &result.status {
            ResultStatus::Failure => {
                let code = result.error.as_ref().and_then(ResultError::code).unwrap_or(&ErrorCode::Transient);
                let message = result.error.as_ref().map_or("no error details provided", |e| e.message());
                let applied = match (code, code.effect()) {
                    (ErrorCode::Permanent, _) => {
                        job.end(JobStatus::Quarantined, Some(format!("Task failed with permanent error: {message}")));
                        Applied::Store(FollowUp::None)
                    }
                    (code, FailureEffect::Quarantine) => {
                        let code = code.as_str();
                        job.end(
                            JobStatus::Quarantined,
                            Some(format!("Task failed with permanent error ({code}): {message}")),
                        );
                        Applied::Store(FollowUp::None)
                    }
                    (ErrorCode::InvalidInput, _) => {
                        job.end(JobStatus::Failed, Some(format!("Task failed due to invalid input: {message}")));
                        Applied::Store(FollowUp::None)
                    }
                    (code, FailureEffect::Fail) => {
                        let code = code.as_str();
                        job.end(JobStatus::Failed, Some(format!("Task failed ({code}): {message}")));
                        Applied::Store(FollowUp::None)
                    }
                    // A task the client cancelled is not tried again.
                    _ if task.cancel_requested => Applied::Stored(self.end_cancelled(job, task).await?),
                    // TRANSIENT_ERROR and its kin, and any code this orchestrator does not know.
                    _ => {
                        tracing::warn!(
                            job_id = %job.id, task_id = %task.task_id, code = code.as_str(), message, "task failed"
                        );
                        Applied::Stored(self.retry_task(job, task, message).await?)
                    }
                };
                Ok((ResultAck::Failure, applied))
            }
            ResultStatus::Cancelled => {
                let follow_up = match task.transitions.get("cancelled") {
                    Some(next) => self.move_on(job, next.clone(), result.data.as_ref()),
                    None => {
                        job.end(JobStatus::Cancelled, Some("task was cancelled by the worker".into()));
                        FollowUp::None
                    }
                };
                Ok((ResultAck::Cancelled, Applied::Store(follow_up)))
            }
            other => {
                let other = other.as_str();
                let follow_up = match task.transitions.get(other) {
                    Some(next) => self.move_on(job, next.clone(), result.data.as_ref()),
                    None => {
                        job.end(JobStatus::Failed, Some(format!("Worker returned unhandled status: {other}")));
                        FollowUp::None
                    }
                };
                Ok((ResultAck::Success, Applied::Store(follow_up)))
            }
        }
    }

    /// The history's record of a result for `task` (or a branch).
    pub(super) fn result_event(
        &self,
        job: &Job,
        task: &TaskRecord,
        worker_id: &str,
        result: &WorkerResult,
    ) -> JobEvent {
        let elapsed = (chrono::Utc::now() - task.dispatched_at).to_std().unwrap_or_default();
        JobEvent::new(JobEventKind::TaskFinished, job)
            .worker(worker_id)
            .task(task.task_id)
            .attempt(task.retries + 1)
            .duration(elapsed)
            .context(json!({
                "task_type": task.task_type,
                "status": result.status.as_str(),
                "error": result.error.as_ref().map(|e| json!({ "code": e.code(), "message": e.message() })),
                "data": result.data,
            }))
    }

    /// Counts a worker's result into its reputation: `Some(true)` succeeded,
    /// `Some(false)` counts against it, `None` does not count. Best effort:
    /// a storage error here never fails the result it follows.
    pub(super) async fn judge(&self, worker_id: &str, verdict: Option<bool>) {
        let Some(succeeded) = verdict else { return };
        if let Err(e) = self.storage.record_outcome(worker_id, succeeded).await {
            tracing::warn!(worker_id, error = %e, "cannot record the worker's result for its reputation");
        }
    }

    /// A worker just gave back a slot: tasks of `task_type` this instance
    /// parked because every qualified worker was full may fit now. Only
    /// then is the parked list read, which keeps a storage round trip off
    /// every result. Tasks another instance parked wait for the worker's
    /// next idle heartbeat (the SDKs send one right after each task).
    pub(super) async fn freed_slot(&self, task_type: &str) -> OrchestratorResult<()> {
        let parked = self.parked_for_room.lock().unwrap_or_else(PoisonError::into_inner).remove(task_type);
        if parked { self.assign_parked(&[task_type.to_owned()]).await } else { Ok(()) }
    }

    /// Observes how long `task` took from its dispatch to its accepted result.
    pub(super) fn task_round_trip(&self, task: &TaskRecord) {
        let elapsed = (chrono::Utc::now() - task.dispatched_at).to_std().unwrap_or_default();
        self.metrics.task_round_trip(&task.task_type, elapsed);
    }

    /// Merges the result's data and moves the job to `state`.
    pub(super) fn move_on(&self, job: &mut Job, state: String, data: Option<&Value>) -> FollowUp {
        match data {
            Some(Value::Object(data)) => job.merge_history(data.clone()),
            None | Some(Value::Null) => {}
            Some(_) => tracing::warn!(job_id = %job.id, "result data is not a JSON object; not merged"),
        }
        let Some(blueprint) = self.graph_of(job) else {
            job.end(JobStatus::Failed, Some(format!("blueprint {:?} is not loaded", job.blueprint_name)));
            return FollowUp::None;
        };
        if self.enter_state(&blueprint, job, state) { FollowUp::Enqueue } else { FollowUp::None }
    }
}

/// Whether the job still has to be stored, or a re-dispatch already did.
enum Applied {
    Store(FollowUp),
    Stored(bool),
}
