//! The worker registry as workers use it: registration, heartbeats, task polls.

use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::auth::WorkerIdentity;
use crate::model::{TaskPayload, WorkerInfo, WorkerPatch, WorkerRegistration};

/// What a heartbeat did.
#[derive(Debug)]
pub enum Heartbeat {
    /// An empty ping renewed the worker's liveness.
    Refreshed,
    /// A JSON update was applied; the worker as now registered.
    Updated(Box<WorkerInfo>),
}

impl Orchestrator {
    pub async fn register_worker(
        &self,
        identity: &WorkerIdentity,
        registration: WorkerRegistration,
    ) -> OrchestratorResult<()> {
        let Some(worker_id) = registration.worker_id.clone().filter(|id| !id.is_empty()) else {
            return Err(OrchestratorError::BadRequest("Missing required field: worker_id".into()));
        };
        self.check_acts_as(identity, &worker_id)?;
        let worker = WorkerInfo::from_registration(worker_id.clone(), registration);
        let task_types = worker.supported_tasks.clone();
        self.storage.register_worker(worker, self.config.worker_ttl()).await?;
        tracing::info!(worker_id, supported_tasks = ?task_types, "worker registered");
        self.assign_parked(&task_types).await
    }

    /// Renews `worker_id`'s liveness and applies `patch` when given.
    pub async fn heartbeat(
        &self,
        identity: &WorkerIdentity,
        worker_id: &str,
        patch: Option<WorkerPatch>,
    ) -> OrchestratorResult<Heartbeat> {
        self.check_acts_as(identity, worker_id)?;
        let is_ping = patch.is_none();
        let worker = self
            .storage
            .refresh_worker(worker_id, patch, self.config.worker_ttl())
            .await?
            .ok_or_else(|| OrchestratorError::NotFound(format!("worker {worker_id} not found")))?;
        if is_ping {
            return Ok(Heartbeat::Refreshed);
        }
        if worker.is_idle() {
            self.assign_parked(&worker.supported_tasks).await?;
        }
        Ok(Heartbeat::Updated(Box::new(worker)))
    }

    /// Waits up to the poll timeout for a task queued for `worker_id`.
    pub async fn next_task(
        &self,
        identity: &WorkerIdentity,
        worker_id: &str,
    ) -> OrchestratorResult<Option<TaskPayload>> {
        self.check_acts_as(identity, worker_id)?;
        let task = self.storage.pop_task(worker_id, self.config.worker_poll_timeout).await?;
        if let Some(task) = &task {
            tracing::debug!(job_id = %task.job_id, task_id = %task.task_id, worker_id, "task handed to worker");
        }
        Ok(task)
    }

    /// Whether a caller holding `identity` may act as `worker_id`.
    fn check_acts_as(&self, identity: &WorkerIdentity, _worker_id: &str) -> OrchestratorResult<()> {
        match identity {
            WorkerIdentity::Global => Ok(()),
        }
    }
}
