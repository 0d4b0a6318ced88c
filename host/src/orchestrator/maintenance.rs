//! Housekeeping that one instance at a time does for all: purging workers
//! whose liveness lapsed.

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
                    tracing::info!(workers = ?purged, "purged workers whose liveness lapsed");
                    for worker_id in purged {
                        this.history.worker(|| WorkerEvent::new(WorkerEventKind::TtlExpired, worker_id, None));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "worker purge failed; retrying next round"),
            }
        })
        .await;
    }
}
