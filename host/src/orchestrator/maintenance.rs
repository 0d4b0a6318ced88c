//! Housekeeping that one instance at a time does for all: purging workers
//! whose liveness lapsed, and failing over the tasks still queued for them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Orchestrator;
use crate::history::{WorkerEvent, WorkerEventKind};

impl Orchestrator {
    /// Sweeps every `WORKER_HEALTH_CHECK_INTERVAL_SECONDS` until `shutdown`.
    pub async fn run_maintenance(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.config.worker_health_check_interval;
        self.run_singleton("maintenance", every, every.saturating_mul(2), shutdown, async |this: &Orchestrator| {
            match this.storage.purge_expired_workers().await {
                Ok(purged) if purged.is_empty() => {}
                Ok(purged) => {
                    let ids: Vec<&str> = purged.iter().map(|p| p.worker_id.as_str()).collect();
                    tracing::info!(workers = ?ids, "purged workers whose liveness lapsed");
                    for worker in purged {
                        for (job_id, task_id) in &worker.dropped {
                            if let Err(e) = this.fail_over(&worker.worker_id, *job_id, *task_id).await {
                                // The job's task deadline still catches it.
                                tracing::warn!(%job_id, %task_id, error = %e, "cannot fail over a task; the watcher retries it");
                            }
                        }
                        this.history.worker(|| WorkerEvent::new(WorkerEventKind::TtlExpired, worker.worker_id, None));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "worker purge failed; retrying next round"),
            }
        })
        .await;
    }
}
