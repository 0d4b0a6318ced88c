//! The job queue: a Redis Stream read through a consumer group, one consumer
//! per instance, with acknowledgements held back to ride along with the next
//! job update. Entries a dead instance left unacknowledged are claimed by the
//! others once its liveness key lapses.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisError, Value as RedisValue};

use super::{RedisStorage, corrupt, unavailable};
use crate::model::JobId;
use crate::storage::record::lock;
use crate::storage::{JobQueue, JobTicket, StorageResult};

/// The executors' consumer group on the job stream.
pub(super) const GROUP: &str = "executors";

/// An unacknowledged job entry of an instance that is gone is claimed by
/// another once it has been idle this long.
const CLAIM_IDLE: Duration = Duration::from_secs(10);

/// How often an instance looks for such entries.
const CLAIM_EVERY: Duration = Duration::from_secs(2);

/// An instance renews its liveness key this often…
const INSTANCE_BEAT: Duration = Duration::from_secs(2);

/// …and is taken for gone once it has not for this long. Only then are its
/// unacknowledged entries claimed: a live instance may hold entries for long
/// (all its executor slots busy, or one long step), and claiming them would
/// run those steps twice.
const INSTANCE_TTL: Duration = Duration::from_secs(10);

/// Pending entries looked at per claim round, in pages of [`CLAIM_PAGE`].
const CLAIM_PAGES: usize = 10;

const CLAIM_PAGE: usize = 100;

/// Job entries read per stream round trip.
const READ_BATCH: usize = 32;

/// Acknowledgements held back at most before they are sent on their own.
const MAX_PENDING_ACKS: usize = 256;

/// Job entries read from the stream but not yet handed to the executor.
pub(super) struct Reader {
    pub(super) conn: ConnectionManager,
    pub(super) buffered: VecDeque<(String, JobId)>,
    pub(super) last_claim: Instant,
    /// Where re-reading this consumer's own unacknowledged entries continues
    /// (stream ids ascend); set at start-up (entries left by a previous run
    /// under the same `INSTANCE_ID`) and after a failed read, whose reply may
    /// have been lost after Redis had already assigned entries to us.
    pub(super) recover_from: Option<String>,
    /// Set while a blocking read of new entries is in flight. Still set at
    /// the next read means that read was dropped mid-wait (a `select!`, a
    /// shutdown): Redis may have handed it entries whose reply nobody read,
    /// so they sit in this consumer's pending list, and only a re-read of
    /// its own entries brings them back.
    pub(super) reading_new: bool,
}

/// Renews this instance's liveness key until the task is aborted.
pub(super) async fn keep_alive(mut conn: ConnectionManager, key: String) {
    loop {
        tokio::time::sleep(INSTANCE_BEAT).await;
        if let Err(e) = beat(&mut conn, &key).await {
            // Missed beats only matter past INSTANCE_TTL; the next one may land.
            tracing::warn!(error = %e, "cannot renew this instance's liveness in Redis");
        }
    }
}

pub(super) async fn beat(conn: &mut ConnectionManager, key: &str) -> Result<(), RedisError> {
    conn.set_options(
        key,
        1,
        redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(INSTANCE_TTL.as_millis() as u64)),
    )
    .await
}

/// Stream entries `[[id, [field, value, ...]], ...]` as (entry id, job id).
fn parse_entries(value: &RedisValue) -> StorageResult<Vec<(String, JobId)>> {
    let RedisValue::Array(entries) = value else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let RedisValue::Array(parts) = entry else { continue };
        let (Some(id), Some(RedisValue::Array(fields))) = (parts.first(), parts.get(1)) else { continue };
        let id: String = redis::from_redis_value_ref(id).map_err(corrupt)?;
        let mut job = None;
        for pair in fields.chunks(2) {
            if let [name, value] = pair
                && redis::from_redis_value_ref::<String>(name).ok().as_deref() == Some("job")
            {
                let text: String = redis::from_redis_value_ref(value).map_err(corrupt)?;
                job = Some(text.parse::<JobId>().map_err(|e| corrupt(format!("stream entry {id}: {e}")))?);
            }
        }
        match job {
            Some(job) => out.push((id, job)),
            None => tracing::warn!(entry = %id, "job stream entry without a job id skipped"),
        }
    }
    Ok(out)
}

#[async_trait]
impl JobQueue for RedisStorage {
    async fn next_job(&self, timeout: Duration) -> StorageResult<Option<JobTicket>> {
        let mut reader = self.reader.lock().await;
        if std::mem::take(&mut reader.reading_new) && reader.recover_from.is_none() {
            tracing::debug!("the last read was dropped while it waited; re-reading this instance's own entries");
            reader.recover_from = Some("0".to_owned());
        }
        if reader.last_claim.elapsed() >= CLAIM_EVERY {
            reader.last_claim = Instant::now();
            self.claim_abandoned(&mut reader).await?;
        }
        if reader.buffered.is_empty() {
            // About to wait for work: nothing should sit unacknowledged meanwhile.
            self.flush_acks().await?;
        }
        while reader.buffered.is_empty() {
            let own = reader.recover_from.clone();
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP").arg(GROUP).arg(&self.consumer).arg("COUNT").arg(READ_BATCH);
            if own.is_none() {
                read.arg("BLOCK").arg(timeout.as_millis().max(1) as u64);
            }
            read.arg("STREAMS").arg(self.keys.jobs()).arg(own.as_deref().unwrap_or(">"));
            reader.reading_new = own.is_none();
            let reply = read.query_async(&mut reader.conn).await;
            reader.reading_new = false;
            let reply: RedisValue = match reply {
                Ok(reply) => reply,
                Err(e) => {
                    reader.recover_from = Some("0".to_owned());
                    return Err(unavailable(e));
                }
            };
            let mut read_count = 0;
            // [[stream, [[id, fields], ...]]] or nil on timeout
            if let RedisValue::Array(streams) = reply {
                for stream in streams {
                    if let RedisValue::Array(parts) = stream
                        && let Some(entries) = parts.get(1)
                    {
                        let entries = parse_entries(entries)?;
                        read_count += entries.len();
                        reader.buffered.extend(entries);
                    }
                }
            }
            match own {
                // A blocking read of new entries: done, whatever it brought.
                None => break,
                // Own entries come back in batches after the cursor; a short
                // batch was the last, then new entries are read as usual.
                Some(_) => {
                    if read_count > 0 {
                        tracing::warn!(count = read_count, "resuming job entries this instance left unacknowledged");
                    }
                    reader.recover_from = match reader.buffered.back() {
                        Some((last, _)) if read_count == READ_BATCH => Some(last.clone()),
                        _ => None,
                    };
                }
            }
        }
        Ok(reader.buffered.pop_front().map(|(entry, job_id)| JobTicket { job_id, receipt: Some(entry) }))
    }

    async fn ack_job(&self, ticket: JobTicket) -> StorageResult<()> {
        let Some(entry) = ticket.receipt else { return Ok(()) };
        let full = {
            let mut pending = self.pending();
            pending.push(entry);
            pending.len() >= MAX_PENDING_ACKS
        };
        if full { self.flush_acks().await } else { Ok(()) }
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn leave(&self) -> StorageResult<()> {
        let flushed = self.flush_acks().await;
        // Gone from now on: other instances claim what it leaves pending
        // (entries read but never run) as soon as those are idle, rather than
        // once the liveness key lapses.
        self.heartbeat.abort();
        let _: i64 = self.conn().del(self.keys.instance(&self.consumer)).await.map_err(unavailable)?;
        flushed
    }

    async fn take_parked(&self, task_type: &str, max: usize) -> StorageResult<Vec<JobId>> {
        let Some(count) = std::num::NonZeroUsize::new(max) else { return Ok(Vec::new()) };
        let ids: Option<Vec<String>> =
            self.conn().lpop(self.keys.parked(task_type), Some(count)).await.map_err(unavailable)?;
        Ok(ids.unwrap_or_default().iter().filter_map(|id| id.parse().ok()).collect())
    }
}

impl RedisStorage {
    /// Claims job entries left unacknowledged for too long by instances that
    /// are gone (their liveness key lapsed). Never a live instance's — it may
    /// hold entries a long time, and would run them too — nor this one's
    /// own, which are buffered here or running.
    async fn claim_abandoned(&self, reader: &mut Reader) -> StorageResult<()> {
        let idle_ms = CLAIM_IDLE.as_millis() as u64;
        let mut alive: HashMap<String, bool> = HashMap::new();
        let mut abandoned: Vec<String> = Vec::new();
        let mut from = "-".to_owned();
        for _ in 0..CLAIM_PAGES {
            // [[id, consumer, idle ms, deliveries], ...], oldest first.
            let page: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(self.keys.jobs())
                .arg(GROUP)
                .arg("IDLE")
                .arg(idle_ms)
                .arg(&from)
                .arg("+")
                .arg(CLAIM_PAGE)
                .query_async(&mut reader.conn)
                .await
                .map_err(unavailable)?;
            for (entry, consumer, _, _) in &page {
                if *consumer == self.consumer {
                    continue;
                }
                let live = match alive.get(consumer) {
                    Some(&live) => live,
                    None => {
                        let live: bool = reader.conn.exists(self.keys.instance(consumer)).await.map_err(unavailable)?;
                        alive.insert(consumer.clone(), live);
                        live
                    }
                };
                if !live {
                    abandoned.push(entry.clone());
                }
            }
            match page.last() {
                Some((last, ..)) if page.len() == CLAIM_PAGE => from = format!("({last}"),
                _ => break,
            }
        }
        if abandoned.is_empty() {
            return Ok(());
        }
        // The idle check again, in the claim itself: an entry delivered anew
        // since the look above stays where it is.
        let claimed: RedisValue = redis::cmd("XCLAIM")
            .arg(self.keys.jobs())
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(idle_ms)
            .arg(&abandoned)
            .query_async(&mut reader.conn)
            .await
            .map_err(unavailable)?;
        let claimed = parse_entries(&claimed)?;
        if !claimed.is_empty() {
            let gone: Vec<&String> = alive.iter().filter(|(_, live)| !**live).map(|(name, _)| name).collect();
            tracing::warn!(count = claimed.len(), instances = ?gone, "claimed job entries abandoned by another instance");
        }
        reader.buffered.extend(claimed);
        Ok(())
    }

    pub(super) fn pending(&self) -> MutexGuard<'_, Vec<String>> {
        lock(&self.pending_acks)
    }

    /// Sends the held-back acknowledgements on their own. Acknowledged
    /// entries are deleted too, so the stream only ever holds work that is
    /// queued or in progress.
    ///
    /// The entries stay held until Redis has taken them: a caller whose
    /// future is dropped mid-send (the executor's read, cancelled when
    /// shutdown starts) must not lose them, or `leave` finds nothing to send
    /// and steps that ran are delivered again. Two flushes at once may send
    /// an entry twice, which XACK and XDEL take as a no-op.
    pub(super) async fn flush_acks(&self) -> StorageResult<()> {
        let entries = self.pending().clone();
        if entries.is_empty() {
            return Ok(());
        }
        let sent: Result<(), RedisError> = redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(self.keys.jobs())
            .arg(GROUP)
            .arg(&entries)
            .ignore()
            .cmd("XDEL")
            .arg(self.keys.jobs())
            .arg(&entries)
            .ignore()
            .query_async(&mut self.conn())
            .await;
        sent.map_err(unavailable)?;
        let sent: HashSet<String> = entries.into_iter().collect();
        self.pending().retain(|entry| !sent.contains(entry));
        Ok(())
    }
}
