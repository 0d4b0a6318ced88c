//! Handing tasks to workers: choosing one, queueing the task for it, and
//! holding tasks no live worker takes until one registers.

use chrono::{DateTime, Utc};
use serde_json::Map;
use uuid::Uuid;

use super::{Orchestrator, OrchestratorResult};
use crate::model::{Job, JobId, JobStatus, TaskPayload, TaskRecord};
use crate::runtime::TaskSpec;
use crate::storage::{FollowUp, WorkerLoad};

/// Parked jobs taken per storage round trip when a worker appears.
const PARKED_BATCH: usize = 64;

impl Orchestrator {
    /// Sends `spec` to a worker as a new task of `job` (its `retries`-th retry),
    /// or parks the job while no live worker takes the task type. Returns
    /// whether the job update was applied.
    pub(super) async fn dispatch(&self, job: &mut Job, spec: TaskSpec, retries: u32) -> OrchestratorResult<bool> {
        let now = Utc::now();
        let timeout = chrono::Duration::from_std(self.config.worker_timeout).unwrap_or(chrono::Duration::MAX);
        let task = TaskRecord {
            task_id: Uuid::new_v4(),
            task_type: spec.task_type,
            params: spec.params,
            priority: spec.priority,
            transitions: spec.transitions,
            worker_id: None,
            retries,
            dispatched_at: now,
            deadline: now.checked_add_signed(timeout).unwrap_or(DateTime::<Utc>::MAX_UTC),
            cancel_requested: false,
        };
        job.status = JobStatus::WaitingForWorker;
        job.current_task = Some(task);
        self.assign(job).await
    }

    /// A transient failure of `task` (the worker said so, or it timed out):
    /// dispatch it again, or quarantine the job once `JOB_MAX_RETRIES`
    /// retries are spent. Returns whether the job update was applied.
    pub(super) async fn retry_task(&self, job: &mut Job, task: &TaskRecord, cause: &str) -> OrchestratorResult<bool> {
        if task.retries < self.config.job_max_retries {
            tracing::info!(job_id = %job.id, task_id = %task.task_id, retry = task.retries + 1, "dispatching the task again");
            let spec = TaskSpec {
                task_type: task.task_type.clone(),
                params: task.params.clone(),
                transitions: task.transitions.clone(),
                priority: task.priority,
            };
            return self.dispatch(job, spec, task.retries + 1).await;
        }
        let message = format!("Task {} failed after {} retries: {cause}", task.task_type, task.retries);
        tracing::error!(job_id = %job.id, task_id = %task.task_id, %message, "job quarantined");
        job.end(JobStatus::Quarantined, Some(message));
        Ok(self.storage.update_job(job, FollowUp::None).await?)
    }

    /// Queues the job's current task for the best live worker, or parks it.
    async fn assign(&self, job: &mut Job) -> OrchestratorResult<bool> {
        let Some(task) = job.current_task.as_mut() else { return Ok(false) };
        let follow_up = match self.choose_worker(&task.task_type).await? {
            Some(worker_id) => {
                task.worker_id = Some(worker_id.clone());
                let payload = TaskPayload {
                    job_id: job.id,
                    task_id: task.task_id,
                    task_type: task.task_type.clone(),
                    params: task.params.clone(),
                    priority: task.priority,
                    tracing_context: Map::new(),
                };
                FollowUp::push(worker_id, payload)
            }
            None => FollowUp::park(task.task_type.clone()),
        };
        let (task_id, task_type, worker) = (task.task_id, task.task_type.clone(), task.worker_id.clone());
        let applied = self.storage.update_job(job, follow_up).await?;
        match (&worker, applied) {
            (Some(worker), true) => {
                tracing::debug!(job_id = %job.id, %task_id, task_type, worker_id = %worker, "task dispatched")
            }
            (None, true) => tracing::info!(
                job_id = %job.id, %task_id, task_type,
                "no live worker takes this task type; the task waits for one to register"
            ),
            (_, false) => tracing::debug!(job_id = %job.id, %task_id, "job changed concurrently; dispatch dropped"),
        }
        Ok(applied)
    }

    /// The live worker for `task_type`: idle before busy, then fewest tasks in flight.
    async fn choose_worker(&self, task_type: &str) -> OrchestratorResult<Option<String>> {
        let candidates = self.storage.candidates_for(task_type).await?;
        Ok(best(candidates))
    }

    /// Gives tasks parked for any of `task_types` to live workers, now that
    /// one that takes them has registered or said it is available.
    pub(super) async fn assign_parked(&self, task_types: &[String]) -> OrchestratorResult<()> {
        for task_type in task_types {
            loop {
                let parked = self.storage.take_parked(task_type, PARKED_BATCH).await?;
                if parked.is_empty() {
                    break;
                }
                for job_id in parked {
                    self.assign_parked_job(job_id, task_type).await?;
                }
            }
        }
        Ok(())
    }

    async fn assign_parked_job(&self, job_id: JobId, task_type: &str) -> OrchestratorResult<()> {
        let Some(mut job) = self.storage.get_job(job_id).await? else { return Ok(()) };
        let still_waiting = job.status == JobStatus::WaitingForWorker
            && job.current_task.as_ref().is_some_and(|t| t.worker_id.is_none() && t.task_type == task_type);
        if still_waiting {
            self.assign(&mut job).await?;
        }
        Ok(())
    }
}

fn best(candidates: Vec<WorkerLoad>) -> Option<String> {
    candidates.into_iter().min_by_key(|w| (!w.idle, w.in_flight)).map(|w| w.worker_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(id: &str, idle: bool, in_flight: u32) -> WorkerLoad {
        WorkerLoad { worker_id: id.into(), idle, in_flight }
    }

    #[test]
    fn idle_workers_with_fewest_tasks_in_flight_win() {
        assert_eq!(best(vec![]), None);
        assert_eq!(best(vec![load("busy", false, 0), load("idle", true, 5)]).as_deref(), Some("idle"));
        assert_eq!(best(vec![load("a", true, 3), load("b", true, 1), load("c", true, 2)]).as_deref(), Some("b"));
    }
}
