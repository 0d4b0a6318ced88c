//! The worker registry as workers use it: registration, heartbeats, task polls.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::auth::{WorkerToken, access, same, worker_token_hashes};
use crate::config::workers;
use crate::history::{WorkerEvent, WorkerEventKind};
use crate::model::{TaskPayload, WorkerInfo, WorkerPatch, WorkerRegistration};

/// The answer to a reload when no `workers.toml` is configured.
pub const RELOAD_WITHOUT_PATH: &str = "WORKERS_CONFIG_PATH is not set, cannot reload worker configs";

/// What a heartbeat did.
#[derive(Debug)]
pub enum Heartbeat {
    /// An empty ping renewed the worker's liveness.
    Refreshed,
    /// A JSON update was applied: the worker as now registered, and the
    /// tasks it runs that it should stop (`cancel_task_ids`).
    Updated { worker: Box<WorkerInfo>, cancel: Vec<uuid::Uuid> },
}

impl Orchestrator {
    pub async fn register_worker(
        &self,
        token: &WorkerToken,
        registration: WorkerRegistration,
    ) -> OrchestratorResult<()> {
        let claimed = registration.worker_id.as_deref().filter(|id| !id.is_empty());
        let worker_id = self.authorize_worker(token, claimed).await?;
        registration.check(&self.config.limits).map_err(OrchestratorError::BadRequest)?;
        if self.credentials.is_global_worker(token) {
            // Every id the global token names is a worker record, index
            // entries and a queue: their number is what it may claim.
            let limit = self.config.limits.workers_per_token;
            let live_workers = self.storage.live_worker_count().await?;
            if live_workers >= limit && !self.storage.is_worker_live(&worker_id).await? {
                tracing::warn!(worker_id, live_workers, "registration refused: worker limit");
                return Err(OrchestratorError::QuotaExceeded(format!(
                    "{limit} workers are registered already (MAX_WORKERS_PER_TOKEN); \
                     a new worker id is refused until one expires"
                )));
            }
        }
        let worker = WorkerInfo::from_registration(worker_id.clone(), registration);
        let task_types = worker.supported_tasks.clone();
        let event = self.history.prepare_worker(|| {
            WorkerEvent::new(WorkerEventKind::Registered, worker_id.clone(), serde_json::to_value(&worker).ok())
        });
        self.storage.register_worker(worker, self.config.worker_ttl()).await?;
        self.history.record_worker(event);
        tracing::info!(worker_id, supported_tasks = ?task_types, "worker registered");
        self.assign_parked(&task_types).await
    }

    /// Renews `worker_id`'s liveness and applies `patch` when given.
    pub async fn heartbeat(
        &self,
        token: &WorkerToken,
        worker_id: &str,
        patch: Option<WorkerPatch>,
    ) -> OrchestratorResult<Heartbeat> {
        self.authorize_worker(token, Some(worker_id)).await?;
        if let Some(patch) = &patch {
            patch.check(&self.config.limits).map_err(OrchestratorError::BadRequest)?;
        }
        let is_ping = patch.is_none();
        let running = patch.as_ref().and_then(|p| p.extra.get("current_tasks")).cloned();
        let worker = self
            .storage
            .refresh_worker(worker_id, patch, self.config.worker_ttl())
            .await?
            .ok_or_else(|| OrchestratorError::NotFound(format!("worker {worker_id} not found")))?;
        if is_ping {
            return Ok(Heartbeat::Refreshed);
        }
        self.history
            .worker(|| WorkerEvent::new(WorkerEventKind::StatusUpdate, worker_id, serde_json::to_value(&worker).ok()));
        if worker.is_idle() {
            self.assign_parked(&worker.supported_tasks).await?;
        }
        let cancel = self.cancels_for(worker_id, running.as_ref()).await;
        Ok(Heartbeat::Updated { worker: Box::new(worker), cancel })
    }

    /// Waits up to `wait` for a task queued for `worker_id`. Only a
    /// live (registered) worker may wait: storage keeps a queue and a waiter
    /// for whoever waits, so made-up ids would each leave one behind.
    pub async fn next_task(
        &self,
        token: &WorkerToken,
        worker_id: &str,
        wait: Duration,
        stop: &CancellationToken,
    ) -> OrchestratorResult<Option<TaskPayload>> {
        self.authorize_worker(token, Some(worker_id)).await?;
        let _slot = self.polls.acquire(worker_id, self.config.limits.polls_per_worker).ok_or_else(|| {
            OrchestratorError::QuotaExceeded(format!(
                "worker {worker_id} holds {} polls already (WORKER_MAX_POLLS)",
                self.config.limits.polls_per_worker
            ))
        })?;
        // A task already queued is handed out without the liveness read: it
        // was pushed to this id because the worker was live, which keeps the
        // busy path at one storage call.
        if let Some(task) = self.storage.pop_task(worker_id, Duration::ZERO).await? {
            tracing::debug!(job_id = %task.job_id, task_id = %task.task_id, worker_id, "task handed to worker");
            return Ok(Some(task));
        }
        if !self.storage.is_worker_live(worker_id).await? {
            return Err(OrchestratorError::NotFound(format!(
                "worker {worker_id} is not registered (or its liveness lapsed); register before polling"
            )));
        }
        let task = self.storage.pop_task_until(worker_id, wait, stop).await?;
        if let Some(task) = &task {
            tracing::debug!(job_id = %task.job_id, task_id = %task.task_id, worker_id, "task handed to worker");
        }
        Ok(task)
    }

    /// The worker a request holding `token` acts as. A worker with its own
    /// token (`workers.toml`) must present it, the global token never lets it
    /// in; any other worker id needs the global token. Without a claimed id
    /// the worker is known from its own token alone.
    pub async fn authorize_worker(&self, token: &WorkerToken, claimed: Option<&str>) -> OrchestratorResult<String> {
        if let Some(worker_id) = claimed {
            self.config.limits.check_name("worker_id", worker_id).map_err(OrchestratorError::BadRequest)?;
        }
        let hash = match token {
            WorkerToken::Access { worker_id } => {
                return match claimed {
                    Some(claimed) if claimed != worker_id => {
                        tracing::warn!(worker_id = claimed, "access token of another worker rejected");
                        Err(OrchestratorError::Unauthorized(format!("invalid token for worker {claimed}")))
                    }
                    _ => Ok(worker_id.clone()),
                };
            }
            WorkerToken::Secret(hash) => hash,
        };
        let Some(worker_id) = claimed else {
            if let Some(worker_id) = self.storage.worker_for_token(hash).await? {
                return Ok(worker_id);
            }
            return Err(if self.credentials.is_global_worker(token) {
                OrchestratorError::BadRequest("worker_id is required".into())
            } else {
                OrchestratorError::Unauthorized("invalid worker token".into())
            });
        };
        let allowed = match self.storage.worker_token(worker_id).await? {
            Some(own) => same(&own, hash),
            None => self.credentials.is_global_worker(token),
        };
        if allowed {
            Ok(worker_id.to_owned())
        } else {
            tracing::warn!(worker_id, "worker token rejected");
            Err(OrchestratorError::Unauthorized(format!("invalid token for worker {worker_id}")))
        }
    }

    /// A short-lived access token for the worker `token` may act as
    /// (`POST /_worker/auth/token`), and its lifetime in seconds.
    pub async fn issue_access_token(
        &self,
        token: &WorkerToken,
        claimed: Option<&str>,
    ) -> OrchestratorResult<(String, String, u64)> {
        let worker_id = self.authorize_worker(token, claimed).await?;
        let key = self.storage.access_key().await?;
        let token = access::issue(&key, &worker_id, unix_now());
        tracing::info!(worker_id, "worker access token issued");
        Ok((worker_id, token, access::ACCESS_TOKEN_TTL.as_secs()))
    }

    /// The worker an access token was issued to, if it is genuine, current,
    /// and issued since the last `reload-workers`.
    pub async fn verify_access_token(&self, token: &str) -> OrchestratorResult<Option<String>> {
        let key = self.storage.access_key().await?;
        Ok(access::verify(&key, token, unix_now()))
    }

    /// Re-reads `workers.toml` and swaps in its token digests; on any error
    /// the tokens in force stay as they were.
    pub async fn reload_workers(&self) -> OrchestratorResult<usize> {
        let Some(path) = &self.config.workers_config_path else {
            return Err(OrchestratorError::BadRequest(RELOAD_WITHOUT_PATH.into()));
        };
        let workers = workers::load(path).map_err(|e| OrchestratorError::BadRequest(e.to_string()))?;
        let count = workers.len();
        self.storage.replace_worker_tokens(worker_token_hashes(&workers)).await?;
        // Access tokens issued under the old set go with it.
        self.storage.rotate_access_key().await?;
        tracing::info!(workers = count, "worker tokens reloaded; access tokens issued before are revoked");
        Ok(count)
    }
}

fn unix_now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default()
}
