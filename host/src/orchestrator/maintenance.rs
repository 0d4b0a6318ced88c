//! Housekeeping that one instance at a time does for all: purging workers
//! whose liveness lapsed. Guarded by a storage lock, so with several
//! instances on one Redis exactly one of them sweeps per round.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Orchestrator;

const LOCK: &str = "maintenance";

impl Orchestrator {
    /// Sweeps every `WORKER_HEALTH_CHECK_INTERVAL_SECONDS` until `shutdown`.
    pub async fn run_maintenance(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.config.worker_health_check_interval;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => break,
            }
            self.sweep(every * 2).await;
        }
        if let Err(e) = self.storage.release_lock(LOCK, &self.config.instance_id).await {
            tracing::debug!(error = %e, "cannot release the maintenance lock");
        }
    }

    /// One round: take (or renew) the lock for `hold`, then purge.
    async fn sweep(&self, hold: Duration) {
        match self.storage.try_lock(LOCK, &self.config.instance_id, hold).await {
            Ok(true) => match self.storage.purge_expired_workers().await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged workers whose liveness lapsed"),
                Err(e) => tracing::warn!(error = %e, "worker purge failed; retrying next round"),
            },
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot take the maintenance lock; retrying next round"),
        }
    }
}
