//! The live channel to workers (`/_worker/ws`, `POST /_worker/events`):
//! cancel commands pushed to the worker holding a task (or, without a
//! socket, held for its next heartbeat), and progress reports taken from it.

use serde_json::{Value, json};
use uuid::Uuid;

use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::auth::Client;
use crate::history::{JobEvent, JobEventKind};
use crate::model::{Job, JobId, Progress, TaskRecord, attach_progress};
use crate::storage::MAX_HELD_CANCELS;

/// A progress report as a worker sends it, before it is checked.
#[derive(Debug, Clone)]
pub struct ProgressReport {
    pub job_id: String,
    pub task_id: String,
    pub progress: f64,
    pub message: Option<String>,
}

impl Orchestrator {
    /// Asks the worker holding `task` of job `job_id` to stop it, over the
    /// worker's socket; `false` when the worker has none (it then sees the
    /// flag on its next look). Both SDK generations read the command: 1.0b3
    /// by `type`, the `rxon` ones by `command`.
    pub(super) async fn push_cancel(&self, job_id: JobId, task: &TaskRecord) -> bool {
        let Some(worker_id) = task.worker_id.as_deref() else { return false };
        let command = json!({
            "type": "cancel_task",
            "command": "cancel_task",
            "job_id": job_id,
            "task_id": task.task_id,
            "params": {},
        });
        let sent = match self.storage.send_to_worker(worker_id, &command.to_string()).await {
            Ok(sent) => sent,
            Err(e) => {
                tracing::warn!(%job_id, task_id = %task.task_id, worker_id, error = %e, "cannot push a cancel");
                false
            }
        };
        tracing::info!(%job_id, task_id = %task.task_id, worker_id, sent, "cancel for the worker holding the task");
        if !sent && let Err(e) = self.storage.hold_cancel(worker_id, task.task_id).await {
            tracing::warn!(%job_id, task_id = %task.task_id, worker_id, error = %e, "cannot hold a cancel");
        }
        sent
    }

    /// The tasks a heartbeat's `current_tasks` (the newest `rxon` SDKs send
    /// the task ids they run) that their worker was asked to stop and could
    /// not be told over a socket.
    pub(super) async fn cancels_for(&self, worker_id: &str, current_tasks: Option<&Value>) -> Vec<Uuid> {
        let Some(Value::Array(tasks)) = current_tasks else { return Vec::new() };
        let running: Vec<Uuid> = tasks.iter().take(MAX_HELD_CANCELS).filter_map(|t| t.as_str()?.parse().ok()).collect();
        match self.storage.take_cancels(worker_id, &running).await {
            Ok(cancels) => cancels,
            Err(e) => {
                tracing::warn!(worker_id, error = %e, "cannot read the cancels held for the worker");
                Vec::new()
            }
        }
    }

    /// Keeps a progress report from `worker_id`, which must hold the task
    /// the job waits on. One small write beside the job's record.
    pub async fn report_progress(&self, worker_id: &str, report: ProgressReport) -> OrchestratorResult<()> {
        let not_found =
            || OrchestratorError::NotFound(format!("task {} of job {} not found", report.task_id, report.job_id));
        let job_id: JobId = report.job_id.parse().map_err(|_| not_found())?;
        let task_id: Uuid = report.task_id.parse().map_err(|_| not_found())?;
        let progress =
            Progress::new(task_id, report.progress, report.message).map_err(OrchestratorError::BadRequest)?;
        let job = self.storage.get_job(job_id).await?.ok_or_else(not_found)?;
        let Some(task) = job.waiting_tasks().find(|task| task.task_id == task_id) else {
            // The task ended, timed out or was given to another worker: a
            // late report changes nothing.
            tracing::debug!(%job_id, %task_id, worker_id, "progress for a task the job no longer waits on; ignored");
            return Ok(());
        };
        if task.worker_id.as_deref() != Some(worker_id) {
            return Err(OrchestratorError::Forbidden(format!("task {task_id} was not given to worker {worker_id}")));
        }
        let event = self.history.prepare(|| {
            JobEvent::new(JobEventKind::TaskProgress, &job)
                .worker(worker_id.to_owned())
                .task(task_id)
                .context(json!({ "progress": progress.progress, "message": progress.message }))
        });
        if self.storage.record_progress(job_id, &progress).await? {
            self.history.record(event);
            tracing::debug!(%job_id, %task_id, worker_id, progress = progress.progress, "progress reported");
        }
        Ok(())
    }

    /// `client`'s job `id` (approval links signed) with its latest
    /// progress report; one storage round trip.
    pub async fn job_with_progress_for(
        &self,
        client: &Client,
        id: &str,
    ) -> OrchestratorResult<(Job, Option<Progress>)> {
        let not_found = || OrchestratorError::NotFound(format!("job {id} not found"));
        let id: JobId = id.parse().map_err(|_| not_found())?;
        match self.storage.job_with_progress(id).await? {
            Some((mut job, report)) if job.client == client.name => {
                self.sign_approval_links(&mut job);
                Ok((job, report))
            }
            _ => Err(not_found()),
        }
    }

    /// Adds each job's progress to its API form (`progress`,
    /// `progress_message`); one storage round trip for the lot.
    pub async fn with_progress(&self, jobs: &mut [Value]) -> OrchestratorResult<()> {
        let ids: Vec<Option<JobId>> =
            jobs.iter().map(|job| job.get("id").and_then(|id| id.as_str()).and_then(|id| id.parse().ok())).collect();
        let known: Vec<JobId> = ids.iter().flatten().copied().collect();
        let mut reports = self.storage.progress_of(&known).await?.into_iter();
        for (job, id) in jobs.iter_mut().zip(ids) {
            let report = id.and_then(|_| reports.next().flatten());
            attach_progress(job, report.as_ref());
        }
        Ok(())
    }
}
