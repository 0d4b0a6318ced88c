//! Deleting an ended job's files in the background: after the retention
//! time, `jobs/{job_id}/` in S3 and `TASK_FILES_DIR/{job_id}/`, retried with
//! exponential backoff (as webhook deliveries are), never holding up the job.
//! Cleanups waiting when the server stops are abandoned with a log line:
//! their files stay until deleted by hand (or a bucket lifecycle rule).

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::TaskFiles;
use crate::config::CleanupSettings;
use crate::model::JobId;

/// Whether the job still stands as it ended, asked when its cleanup is due.
pub(super) type StillEnded = Box<dyn FnOnce() -> BoxFuture<'static, bool> + Send>;

/// The longest wait between two attempts.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Running totals of cleanups, for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupStats {
    /// Jobs whose files were deleted (or who had none).
    pub cleaned: u64,
    /// Jobs whose cleanup failed on every attempt.
    pub given_up: u64,
    /// Attempts made, successful or not.
    pub attempts: u64,
    /// Jobs running again when their cleanup was due (an operator retried
    /// them): their files were kept for the run.
    pub kept: u64,
    /// Cleanups scheduled and not yet done (waiting out the retention,
    /// running or waiting to retry).
    pub pending: u64,
}

#[derive(Debug, Default)]
struct Counters {
    cleaned: AtomicU64,
    given_up: AtomicU64,
    attempts: AtomicU64,
    kept: AtomicU64,
    pending: AtomicU64,
}

#[derive(Debug)]
pub(super) struct Cleanup {
    settings: CleanupSettings,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
}

impl Cleanup {
    pub(super) fn new(settings: CleanupSettings, shutdown: CancellationToken) -> Self {
        Self {
            settings: CleanupSettings { max_attempts: settings.max_attempts.max(1), ..settings },
            shutdown,
            counters: Arc::default(),
        }
    }

    pub(super) fn stats(&self) -> CleanupStats {
        let c = &self.counters;
        CleanupStats {
            cleaned: c.cleaned.load(Ordering::Relaxed),
            given_up: c.given_up.load(Ordering::Relaxed),
            attempts: c.attempts.load(Ordering::Relaxed),
            kept: c.kept.load(Ordering::Relaxed),
            pending: c.pending.load(Ordering::Relaxed),
        }
    }

    /// Spawns the job's cleanup on the current Tokio runtime and returns.
    /// Each waiting cleanup is one sleeping task; S3 requests among them are
    /// bounded by `S3_MAX_CONCURRENCY` like every other.
    pub(super) fn schedule(&self, job_id: JobId, files: TaskFiles, still_ended: StillEnded) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(%job_id, "no runtime to clean up the job's files on; they are kept");
            return;
        };
        let settings = self.settings;
        let shutdown = self.shutdown.clone();
        let counters = self.counters.clone();
        counters.pending.fetch_add(1, Ordering::Relaxed);
        runtime.spawn(async move {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    tracing::info!(%job_id, "shutting down; the job's files are not cleaned up");
                }
                () = run(job_id, &files, settings, &counters, still_ended) => {}
            }
            counters.pending.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn run(
    job_id: JobId,
    files: &TaskFiles,
    settings: CleanupSettings,
    counters: &Counters,
    still_ended: StillEnded,
) {
    if !settings.retention.is_zero() {
        tokio::time::sleep(settings.retention).await;
    }
    if !still_ended().await {
        counters.kept.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%job_id, "the job runs again; its files are kept");
        return;
    }
    for attempt in 1..=settings.max_attempts {
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        let problem = match files.clean(job_id).await {
            Ok(deleted) => {
                counters.cleaned.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%job_id, deleted, attempt, "job files cleaned up");
                return;
            }
            Err(problem) => problem,
        };
        if attempt == settings.max_attempts {
            counters.given_up.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%job_id, attempts = attempt, problem, "cannot clean up the job's files; given up");
            return;
        }
        let delay = retry_delay(settings.retry_initial, attempt);
        tracing::info!(
            %job_id, attempt, problem, retry_in_ms = delay.as_millis() as u64,
            "cleaning up the job's files failed; retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

/// The wait after failed attempt `attempt` (1-based): `initial` doubled
/// `attempt - 1` times, at most [`RETRY_MAX`], plus up to a tenth more.
fn retry_delay(initial: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
    let base = initial.saturating_mul(factor).min(RETRY_MAX);
    let jitter_range = base.as_millis() as u64 / 10;
    let jitter = if jitter_range == 0 { 0 } else { RandomState::new().hash_one(attempt) % (jitter_range + 1) };
    base + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_up_to_a_minute() {
        let initial = Duration::from_millis(100);
        let first = retry_delay(initial, 1);
        assert!(first >= initial && first <= initial + initial / 10, "{first:?}");
        let third = retry_delay(initial, 3);
        assert!(third >= initial * 4 && third <= initial * 4 + initial * 4 / 10, "{third:?}");
        let late = retry_delay(initial, 40);
        assert!(late >= RETRY_MAX && late <= RETRY_MAX + RETRY_MAX / 10, "{late:?}");
    }
}
