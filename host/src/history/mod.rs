//! Job history (`HISTORY_DATABASE_URI`): every step of every job and every
//! worker registration change, kept in SQLite or PostgreSQL for operators.
//!
//! Recording never waits for the database. [`History::job`] and
//! [`History::worker`] put the event in a bounded buffer and return; one
//! background writer per instance takes whatever has accumulated and inserts
//! it as one batch. While the database is slow or gone the writer retries the
//! same batch with backoff and the buffer absorbs new events; only when the
//! buffer is full are events dropped — counted
//! (`avtomatika_history_events_dropped_total`) and logged, never silently.
//! Disabled, recording costs one branch: the event is never even built.

mod event;
mod store;
mod writer;

pub use event::{Event, JobEvent, JobEventKind, WorkerEvent, WorkerEventKind};
pub use store::{EventRow, JobRow};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::HistoryDatabase;
use crate::model::{JobFilter, JobId};
use store::Store;

/// Why the history could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("history database: {0}")]
pub struct HistoryError(#[from] sqlx::Error);

/// Counters the metrics scrape reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Events waiting in the buffer (including the batch being written).
    pub depth: u64,
    pub written: u64,
    pub dropped: u64,
    pub write_failures: u64,
}

/// The handle the orchestrator records through; cheap to clone.
#[derive(Clone, Default)]
pub struct History {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    buffer: mpsc::Sender<Event>,
    store: Store,
    tz: Tz,
    /// The last timestamp handed out, so that one instance's events never
    /// share or go back in time even if the wall clock does.
    last_us: AtomicI64,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    write_failures: AtomicU64,
    /// When a drop was last logged (ms since `epoch`), to log at most once a second.
    last_drop_log_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

/// The background writer's task; await it after cancelling its token to
/// let it flush what is buffered.
pub struct WriterHandle(JoinHandle<()>);

impl WriterHandle {
    /// Waits for the writer to flush, at most `timeout`.
    pub async fn finish(self, timeout: Duration) {
        if tokio::time::timeout(timeout, self.0).await.is_err() {
            tracing::warn!("history writer did not flush within {timeout:?}; buffered events are lost");
        }
    }
}

impl History {
    /// History off: nothing is recorded and the history endpoint is absent.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Opens `database`, applies its migrations and starts the writer, which
    /// drains the buffer and stops once `stop` fires.
    pub async fn open(
        database: &HistoryDatabase,
        buffer: usize,
        tz: Tz,
        stop: CancellationToken,
    ) -> Result<(Self, WriterHandle), HistoryError> {
        let store = Store::open(database).await?;
        let (sender, receiver) = mpsc::channel(buffer.max(1));
        let counters = Arc::new(Counters::default());
        let writer = tokio::spawn(writer::run(store.clone(), receiver, counters.clone(), stop));
        let inner = Inner { buffer: sender, store, tz, last_us: AtomicI64::new(0), counters };
        Ok((Self { inner: Some(Arc::new(inner)) }, WriterHandle(writer)))
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Records the job event `event` builds (called only when history is on).
    pub fn job(&self, event: impl FnOnce() -> JobEvent) {
        self.record(self.prepare(event));
    }

    /// Builds and timestamps a job event now, to [`record`](Self::record)
    /// once the change it describes is stored: an update that loses a race
    /// then leaves no event, and events recorded meanwhile (the job's end)
    /// still sort after it. `None` when history is off.
    pub fn prepare(&self, event: impl FnOnce() -> JobEvent) -> Option<JobEvent> {
        let inner = self.inner.as_ref()?;
        Some(JobEvent { at_us: inner.now_us(), ..event() })
    }

    /// Records an event made by [`prepare`](Self::prepare).
    pub fn record(&self, event: Option<JobEvent>) {
        if let (Some(inner), Some(event)) = (&self.inner, event) {
            inner.push(Event::Job(Box::new(event)));
        }
    }

    /// Records the worker event `event` builds (called only when history is on).
    pub fn worker(&self, event: impl FnOnce() -> WorkerEvent) {
        self.record_worker(self.prepare_worker(event));
    }

    /// [`prepare`](Self::prepare) for worker events.
    pub fn prepare_worker(&self, event: impl FnOnce() -> WorkerEvent) -> Option<WorkerEvent> {
        let inner = self.inner.as_ref()?;
        Some(WorkerEvent { at_us: inner.now_us(), ..event() })
    }

    /// Records an event made by [`prepare_worker`](Self::prepare_worker).
    pub fn record_worker(&self, event: Option<WorkerEvent>) {
        if let (Some(inner), Some(event)) = (&self.inner, event) {
            inner.push(Event::Worker(event));
        }
    }

    /// `job_id`'s events in order, rendered for the API with timestamps in
    /// `TZ`. `None` when history is off.
    pub async fn job_events(
        &self,
        job_id: JobId,
        limit: usize,
        offset: usize,
    ) -> Option<Result<Vec<Value>, HistoryError>> {
        let inner = self.inner.as_ref()?;
        Some(match inner.store.job_events(job_id, limit, offset).await {
            Ok(rows) => Ok(rows.into_iter().map(|row| render(row, inner.tz)).collect()),
            Err(e) => Err(e.into()),
        })
    }

    /// The history's row of `job_id` (who owns it, its last status).
    pub async fn job_row(&self, job_id: JobId) -> Option<Result<Option<JobRow>, HistoryError>> {
        let inner = self.inner.as_ref()?;
        Some(inner.store.job(job_id).await.map_err(Into::into))
    }

    /// `client`'s jobs passing `filter` as the history knows them, newest first.
    pub async fn client_jobs(
        &self,
        client: &str,
        filter: &JobFilter,
        limit: usize,
        offset: usize,
    ) -> Option<Result<Vec<JobRow>, HistoryError>> {
        let inner = self.inner.as_ref()?;
        Some(inner.store.client_jobs(client, filter, limit, offset).await.map_err(Into::into))
    }

    /// Jobs per status over everything the history has seen.
    pub async fn status_counts(&self) -> Option<Result<HashMap<String, u64>, HistoryError>> {
        let inner = self.inner.as_ref()?;
        Some(inner.store.status_counts().await.map_err(Into::into))
    }

    /// Zero when history is off.
    pub fn stats(&self) -> HistoryStats {
        let Some(inner) = &self.inner else { return HistoryStats::default() };
        let c = &inner.counters;
        let written = c.written.load(Ordering::Relaxed);
        let dropped = c.dropped.load(Ordering::Relaxed);
        HistoryStats {
            depth: c.queued.load(Ordering::Relaxed).saturating_sub(written),
            written,
            dropped,
            write_failures: c.write_failures.load(Ordering::Relaxed),
        }
    }

    /// Renders a stored timestamp in `TZ` (for rows read outside `job_events`).
    pub fn render_time(&self, at_us: i64) -> Option<String> {
        self.inner.as_ref().map(|inner| timestamp(at_us, inner.tz))
    }
}

impl Inner {
    fn now_us(&self) -> i64 {
        let now = Utc::now().timestamp_micros();
        let previous = self
            .last_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1)))
            .unwrap_or(now);
        now.max(previous + 1)
    }

    fn push(&self, event: Event) {
        // Full, or closed because the writer stopped (shutdown): dropped either way.
        match self.buffer.try_send(event) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(refused) => self.counters.dropped_one(&refused.into_inner()),
        }
    }
}

impl Counters {
    fn dropped_one(&self, event: &Event) {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let epoch = *self.epoch.get_or_init(Instant::now);
        let now_ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_drop_log_ms.load(Ordering::Relaxed);
        if (dropped == 1 || now_ms.saturating_sub(last) >= 1000)
            && self.last_drop_log_ms.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let (kind, id) = match event {
                Event::Job(e) => (e.kind.as_str(), e.job_id.to_string()),
                Event::Worker(e) => (e.kind.as_str(), e.worker_id.clone()),
            };
            tracing::warn!(
                dropped_total = dropped,
                event_type = kind,
                id,
                "history buffer full (HISTORY_BUFFER_SIZE): events are being dropped; the history database is slow or unreachable"
            );
        }
    }
}

fn timestamp(at_us: i64, tz: Tz) -> String {
    DateTime::<Utc>::from_timestamp_micros(at_us)
        .unwrap_or_default()
        .with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// An event as the API shows it (the Python orchestrator's field names).
fn render(row: EventRow, tz: Tz) -> Value {
    let context = row.context_snapshot.map(|text| serde_json::from_str(&text).unwrap_or(Value::String(text)));
    json!({
        "event_id": row.event_id,
        "job_id": row.job_id,
        "timestamp": timestamp(row.at_us, tz),
        "event_type": row.event_type,
        "state": row.state,
        "previous_state": row.previous_state,
        "next_state": row.next_state,
        "worker_id": row.worker_id,
        "task_id": row.task_id,
        "attempt_number": row.attempt_number,
        "duration_ms": row.duration_ms,
        "context_snapshot": context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_in_the_zone_with_its_offset() {
        // 2026-01-15T12:00:00Z
        let at = 1_768_478_400_000_000 + 123_456;
        assert_eq!(timestamp(at, Tz::UTC), "2026-01-15T12:00:00.123456+00:00");
        assert_eq!(timestamp(at, chrono_tz::Asia::Tokyo), "2026-01-15T21:00:00.123456+09:00");
        assert_eq!(timestamp(at, chrono_tz::America::New_York), "2026-01-15T07:00:00.123456-05:00");
    }

    #[test]
    fn rendered_events_parse_their_context() {
        let row = EventRow {
            event_id: "e".into(),
            job_id: "j".into(),
            at_us: 0,
            event_type: "task_finished".into(),
            state: Some("s".into()),
            previous_state: None,
            next_state: None,
            worker_id: Some("w".into()),
            task_id: None,
            attempt_number: Some(2),
            duration_ms: Some(1.5),
            context_snapshot: Some(r#"{"status":"success"}"#.into()),
        };
        let value = render(row, Tz::UTC);
        assert_eq!(value["context_snapshot"]["status"], "success");
        assert_eq!(value["timestamp"], "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(value["attempt_number"], 2);
        assert!(value["previous_state"].is_null());
    }
}
