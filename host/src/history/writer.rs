//! The background writer: drains the event buffer into the database in
//! batches, holding on to a batch it could not write until it can.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Counters;
use super::event::Event;
use super::store::Store;

/// Most events one insert carries (well under both engines' bind limits).
const MAX_BATCH: usize = 512;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

pub(super) async fn run(
    store: Store,
    mut buffer: mpsc::Receiver<Event>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            n = buffer.recv_many(&mut batch, MAX_BATCH) => n,
            () = stop.cancelled() => break,
        };
        if received == 0 {
            break; // every sender is gone
        }
        if !write(&store, &batch, &counters, Some(&stop)).await {
            break;
        }
        batch.clear();
    }
    // Stopping: flush what is already buffered, a single attempt per batch.
    buffer.close();
    loop {
        if batch.is_empty() && buffer.recv_many(&mut batch, MAX_BATCH).await == 0 {
            break;
        }
        if !write(&store, &batch, &counters, None).await {
            tracing::warn!(events = batch.len(), "history writer stopping; events not written are lost");
            break;
        }
        batch.clear();
    }
    store.close().await;
}

/// Writes `batch`, retrying with backoff until it is written or `stop` fires
/// (`None`: one attempt). `true` once written.
async fn write(store: &Store, batch: &[Event], counters: &Counters, stop: Option<&CancellationToken>) -> bool {
    let mut delay = FIRST_RETRY;
    let mut failures = 0u32;
    loop {
        match store.insert(batch).await {
            Ok(()) => {
                counters.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                if failures > 0 {
                    tracing::info!(failures, events = batch.len(), "history database reachable again; writing resumed");
                }
                return true;
            }
            Err(e) => {
                counters.write_failures.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                // The first failure and then every tenth: a database that is
                // down for long must not flood the log.
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(error = %e, failures, events = batch.len(), "cannot write job history; retrying in {delay:?}");
                }
                let Some(stop) = stop else { return false };
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return false,
                }
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    }
}
