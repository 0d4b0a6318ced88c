//! Loops that one instance at a time runs for all (the watcher, the
//! maintenance sweep): each round is taken only under a storage lock, so with
//! several instances on one Redis exactly one of them acts per round.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Orchestrator;

impl Orchestrator {
    /// Every `every` until `shutdown`: take (or renew) lock `name` for `hold`
    /// and, if this instance holds it, run `round`. The lock is released on
    /// the way out so another instance takes over at once.
    pub(super) async fn run_singleton(
        &self,
        name: &'static str,
        every: Duration,
        hold: Duration,
        shutdown: CancellationToken,
        round: impl AsyncFn(&Orchestrator),
    ) {
        let owner = &self.config.instance_id;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => break,
            }
            match self.storage.try_lock(name, owner, hold).await {
                Ok(true) => round(self).await,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, lock = name, "cannot take the lock; retrying next round"),
            }
        }
        if let Err(e) = self.storage.release_lock(name, owner).await {
            tracing::debug!(error = %e, lock = name, "cannot release the lock");
        }
    }
}
