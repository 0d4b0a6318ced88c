//! Redis storage: the production backend, shared by every instance.
//!
//! Each multi-key change is one Lua script (in `lua/`, each listing its KEYS
//! and ARGV), so a job update and what follows from it land atomically and
//! two instances racing on one job cannot both win. Jobs are queued on a
//! Redis Stream read through a consumer group, one consumer per instance;
//! entries a dead instance left unacknowledged are claimed by the others.
//! Long-polls wait on a per-instance pub/sub subscription that announces
//! every task pushed for a worker, on whichever instance it was created.
//! Jobs are indexed by status and by client in sorted sets that the same
//! scripts keep current; entries of ended jobs whose retention lapsed are
//! dropped as the indexes are read.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, RedisError, Script, Value as RedisValue};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    Assignment, BranchRecord, BranchResults, CLOSED_FAN_OUT_SECS, Coordination, DataStores, FollowUp, JobCounts,
    JobQueue, JobStore, JobTicket, Listings, PurgedWorker, StorageError, StorageResult, TaskQueues, WorkerLoad,
    WorkerRegistry,
};
use crate::auth::TokenHash;
use crate::config::RedisConfig;
use crate::model::{Job, JobId, JobStatus, TaskPayload, WorkerInfo, WorkerPatch};

/// The executors' consumer group on the job stream.
const GROUP: &str = "executors";
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
/// A waiting long-poll re-checks its queue this often even without a
/// wake-up, covering messages lost while the subscription reconnected.
const WAKE_SAFETY_NET: Duration = Duration::from_secs(5);
/// Longest a cached worker token digest is trusted without a reload notice.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
/// Cached worker token lookups kept at most.
const TOKEN_CACHE_MAX: usize = 10_000;
/// Read-patch-write rounds a heartbeat tries when its worker keeps changing.
const MAX_WORKER_CONFLICTS: usize = 32;
/// Acknowledgements held back at most before they are sent on their own.
const MAX_PENDING_ACKS: usize = 256;
/// Quota counters outlive their month by a few days, then go.
const QUOTA_TTL_SECS: u64 = 40 * 86_400;
/// One job ending in this many also drops the index entries of ended jobs
/// whose retention lapsed (see `update`).
const PRUNE_EVERY: u128 = 16;
/// A fan-out's branch results outlive its last answer by this much, then go
/// (the job moved on without clearing them, or was lost).
const BRANCH_RESULTS_TTL_SECS: u64 = 7 * 86_400;
/// The one field a closed fan-out's result hash keeps (see record_branch.lua).
const CLOSED_FIELD: &str = "closed";

struct Scripts {
    create_job: Script,
    update_job: Script,
    store_worker: Script,
    ping_worker: Script,
    candidates: Script,
    live_workers: Script,
    purge_workers: Script,
    add_in_flight: Script,
    replace_tokens: Script,
    take_quota: Script,
    release_lock: Script,
    withdraw_task: Script,
    record_branch: Script,
    list_jobs: Script,
    worker_census: Script,
}

impl Scripts {
    fn load() -> Self {
        Self {
            create_job: Script::new(include_str!("lua/create_job.lua")),
            update_job: Script::new(include_str!("lua/update_job.lua")),
            store_worker: Script::new(include_str!("lua/store_worker.lua")),
            ping_worker: Script::new(include_str!("lua/ping_worker.lua")),
            candidates: Script::new(include_str!("lua/candidates.lua")),
            live_workers: Script::new(include_str!("lua/live_workers.lua")),
            purge_workers: Script::new(include_str!("lua/purge_workers.lua")),
            add_in_flight: Script::new(include_str!("lua/add_in_flight.lua")),
            replace_tokens: Script::new(include_str!("lua/replace_tokens.lua")),
            take_quota: Script::new(include_str!("lua/take_quota.lua")),
            release_lock: Script::new(include_str!("lua/release_lock.lua")),
            withdraw_task: Script::new(include_str!("lua/withdraw_task.lua")),
            record_branch: Script::new(include_str!("lua/record_branch.lua")),
            list_jobs: Script::new(include_str!("lua/list_jobs.lua")),
            worker_census: Script::new(include_str!("lua/worker_census.lua")),
        }
    }
}

/// Key names under one prefix, so several deployments (or tests) can share a server.
struct Keys {
    prefix: String,
}

impl Keys {
    fn job(&self, id: JobId) -> String {
        format!("{}:job:{id}", self.prefix)
    }
    fn job_prefix(&self) -> String {
        format!("{}:job:", self.prefix)
    }
    /// Jobs with one status, scored by `updated_at` in µs.
    fn status(&self, status: JobStatus) -> String {
        format!("{}{status}", self.status_prefix())
    }
    fn status_prefix(&self) -> String {
        format!("{}:status:", self.prefix)
    }
    /// Ended jobs by end time in µs, each as its id followed by the key of
    /// its client's index, so that index loses it when its retention lapses.
    fn ended(&self) -> String {
        format!("{}:ended", self.prefix)
    }
    /// One client's jobs, scored by `created_at` in µs.
    fn client_jobs(&self, client: &str) -> String {
        format!("{}:client:{client}", self.prefix)
    }
    /// One fan-out's branch results: task id → result JSON.
    fn branches(&self, wait_id: Uuid) -> String {
        format!("{}:branches:{wait_id}", self.prefix)
    }
    /// One data store (`{blueprint}/{store}`): key → JSON.
    fn data(&self, scope: &str) -> String {
        format!("{}:data:{scope}", self.prefix)
    }
    fn watch(&self) -> String {
        format!("{}:watch", self.prefix)
    }
    fn jobs(&self) -> String {
        format!("{}:jobs", self.prefix)
    }
    fn tasks(&self, worker_id: &str) -> String {
        format!("{}:tasks:{worker_id}", self.prefix)
    }
    fn task_seq(&self) -> String {
        format!("{}:taskseq", self.prefix)
    }
    fn wake(&self) -> String {
        format!("{}:wake", self.prefix)
    }
    fn tokens_changed(&self) -> String {
        format!("{}:tokens", self.prefix)
    }
    fn worker(&self, worker_id: &str) -> String {
        format!("{}:worker:{worker_id}", self.prefix)
    }
    fn worker_prefix(&self) -> String {
        format!("{}:worker:", self.prefix)
    }
    fn live(&self) -> String {
        format!("{}:workers", self.prefix)
    }
    fn task_type(&self, task_type: &str) -> String {
        format!("{}:tasktype:{task_type}", self.prefix)
    }
    fn task_type_prefix(&self) -> String {
        format!("{}:tasktype:", self.prefix)
    }
    fn parked(&self, task_type: &str) -> String {
        format!("{}:parked:{task_type}", self.prefix)
    }
    fn tokens_by_id(&self) -> String {
        format!("{}:worker_tokens", self.prefix)
    }
    fn tokens_by_hash(&self) -> String {
        format!("{}:worker_tokens_by_hash", self.prefix)
    }
    fn quota(&self, client: &str) -> String {
        format!("{}:quota:{client}", self.prefix)
    }
    fn slot(&self, schedule: &str, slot: i64) -> String {
        format!("{}:slot:{schedule}:{slot}", self.prefix)
    }
    fn lock(&self, name: &str) -> String {
        format!("{}:lock:{name}", self.prefix)
    }
    /// Present while the instance (job stream consumer) of that name is alive.
    fn instance(&self, consumer: &str) -> String {
        format!("{}:instance:{consumer}", self.prefix)
    }
}

/// Long-polls waiting on this instance, by worker id.
#[derive(Default)]
struct Waiters {
    by_worker: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.by_worker.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn for_worker(&self, worker_id: &str) -> Arc<Notify> {
        self.lock().entry(worker_id.to_owned()).or_default().clone()
    }

    fn wake(&self, worker_id: &str) {
        if let Some(notify) = self.lock().get(worker_id) {
            notify.notify_one();
        }
    }

    /// Drops the entry once no poll holds it any more.
    fn release(&self, worker_id: &str, notify: Arc<Notify>) {
        let mut map = self.lock();
        drop(notify);
        if map.get(worker_id).is_some_and(|n| Arc::strong_count(n) == 1) {
            map.remove(worker_id);
        }
    }
}

/// Worker token digests as last read, so the lookup every worker request
/// makes is not a Redis round trip. A reload clears it on the instance that
/// did it and, through pub/sub, on every other; should that message be lost
/// (a reconnect), entries still lapse after [`TOKEN_CACHE_TTL`].
#[derive(Default)]
struct TokenCache {
    by_id: Mutex<HashMap<String, (Option<TokenHash>, Instant)>>,
    by_hash: Mutex<HashMap<TokenHash, (Option<String>, Instant)>>,
}

impl TokenCache {
    fn get<K: std::hash::Hash + Eq, V: Clone>(map: &Mutex<HashMap<K, (V, Instant)>>, key: &K) -> Option<V> {
        let map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(key).filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL).map(|(v, _)| v.clone())
    }

    fn put<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, (V, Instant)>>, key: K, value: V) {
        let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Bounded by the workers that exist; a flood of made-up ids only
        // resets the cache.
        if map.len() >= TOKEN_CACHE_MAX {
            map.clear();
        }
        map.insert(key, (value, Instant::now()));
    }

    fn clear(&self) {
        self.by_id.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
        self.by_hash.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }
}

/// Job entries read from the stream but not yet handed to the executor.
struct Reader {
    conn: ConnectionManager,
    buffered: VecDeque<(String, JobId)>,
    last_claim: Instant,
    /// Where re-reading this consumer's own unacknowledged entries continues
    /// (stream ids ascend); set at start-up (entries left by a previous run
    /// under the same `INSTANCE_ID`) and after a failed read, whose reply may
    /// have been lost after Redis had already assigned entries to us.
    recover_from: Option<String>,
}

/// The Redis backend.
pub struct RedisStorage {
    conn: ConnectionManager,
    reader: tokio::sync::Mutex<Reader>,
    keys: Keys,
    scripts: Scripts,
    consumer: String,
    retention: Duration,
    waiters: Arc<Waiters>,
    tokens: Arc<TokenCache>,
    /// Acknowledgements not yet sent: they ride along with the next job
    /// update (or go out before the next stream read), which saves a round
    /// trip per job. One lost with a crash only means a redelivery, which the
    /// job's status makes harmless.
    pending_acks: Mutex<Vec<String>>,
    subscriber: tokio::task::JoinHandle<()>,
    /// Keeps this instance's liveness key ([`Keys::instance`]) alive.
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for RedisStorage {
    fn drop(&mut self) {
        self.subscriber.abort();
        self.heartbeat.abort();
    }
}

fn unavailable(error: RedisError) -> StorageError {
    StorageError::Unavailable(format!("redis: {error}"))
}

fn corrupt(what: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("redis: {what}"))
}

impl RedisStorage {
    /// Connects, checks the server answers, and sets up the job stream's
    /// consumer group. `prefix` namespaces every key; `consumer` names this
    /// instance in the group (`INSTANCE_ID`).
    pub async fn connect(
        config: &RedisConfig,
        prefix: &str,
        consumer: &str,
        retention: Duration,
    ) -> StorageResult<Self> {
        let url = format!("redis://{}:{}/{}", config.host, config.port, config.db);
        let client = Client::open(url.as_str()).map_err(unavailable)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let reach = |e: RedisError| {
            StorageError::Unavailable(format!(
                "cannot reach Redis at {}:{} (db {}): {e}",
                config.host, config.port, config.db
            ))
        };
        let mut conn = client.get_connection_manager_with_config(manager_config.clone()).await.map_err(reach)?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(reach)?;
        // Blocking stream reads get a connection of their own so they never
        // hold up other commands.
        let reader = client.get_connection_manager_with_config(manager_config).await.map_err(reach)?;

        let keys = Keys { prefix: prefix.to_owned() };
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys.jobs())
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(unavailable(e)),
        }

        let waiters = Arc::new(Waiters::default());
        let tokens = Arc::new(TokenCache::default());
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        let channels = Channels { wake: keys.wake(), tokens: keys.tokens_changed() };
        let subscriber = tokio::spawn(subscribe(client, channels, waiters.clone(), tokens.clone(), ready));
        // Alive before the first read, so no other instance claims what it reads.
        let instance_key = keys.instance(consumer);
        beat(&mut conn, &instance_key).await.map_err(unavailable)?;
        let heartbeat = tokio::spawn(keep_alive(conn.clone(), instance_key));
        // Polls that start before the subscription would rely on the safety
        // net alone; wait for it briefly (it only fails if Redis just went away).
        if tokio::time::timeout(Duration::from_secs(2), subscribed).await.is_err() {
            tracing::warn!("task wake-up subscription not ready yet; long-polls re-check every {WAKE_SAFETY_NET:?}");
        }
        Ok(Self {
            conn,
            reader: tokio::sync::Mutex::new(Reader {
                conn: reader,
                buffered: VecDeque::new(),
                last_claim: Instant::now(),
                recover_from: Some("0".to_owned()),
            }),
            keys,
            scripts: Scripts::load(),
            consumer: consumer.to_owned(),
            retention,
            waiters,
            tokens,
            pending_acks: Mutex::default(),
            subscriber,
            heartbeat,
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

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
}

/// Renews this instance's liveness key until the task is aborted.
async fn keep_alive(mut conn: ConnectionManager, key: String) {
    loop {
        tokio::time::sleep(INSTANCE_BEAT).await;
        if let Err(e) = beat(&mut conn, &key).await {
            // Missed beats only matter past INSTANCE_TTL; the next one may land.
            tracing::warn!(error = %e, "cannot renew this instance's liveness in Redis");
        }
    }
}

async fn beat(conn: &mut ConnectionManager, key: &str) -> Result<(), RedisError> {
    conn.set_options(
        key,
        1,
        redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(INSTANCE_TTL.as_millis() as u64)),
    )
    .await
}

/// The pub/sub channels an instance listens on.
struct Channels {
    /// Payload: the worker id a task was queued for.
    wake: String,
    /// Any payload: the worker tokens were reloaded.
    tokens: String,
}

/// Listens for task wake-ups and token reloads; reconnects when the
/// subscription drops.
async fn subscribe(
    client: Client,
    channels: Channels,
    waiters: Arc<Waiters>,
    tokens: Arc<TokenCache>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&[&channels.wake, &channels.tokens]).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    // Whatever changed while disconnected is read afresh.
                    tokens.clear();
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        if message.get_channel_name() == channels.tokens {
                            tokens.clear();
                        } else if let Ok(worker_id) = message.get_payload::<String>() {
                            waiters.wake(&worker_id);
                        }
                    }
                    tracing::warn!("Redis subscription ended; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to Redis notifications; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot connect for Redis notifications; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
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

/// Whether Redis refused an increment because the stored value is not an
/// integer or the result would overflow (`ERR hash value is not an integer`,
/// `ERR increment or decrement would overflow`).
fn is_not_an_integer(error: &RedisError) -> bool {
    error.code() == Some("ERR")
        && error.detail().is_some_and(|detail| detail.contains("not an integer") || detail.contains("overflow"))
}

fn encode_job(job: &Job) -> StorageResult<Vec<u8>> {
    job.encode().map_err(StorageError::Corrupt)
}

impl RedisStorage {
    /// Whether `worker_id` is live and how many workers are, in one script
    /// on Redis' clock (both are O(log n) on the liveness index).
    async fn worker_census(&self, worker_id: &str) -> StorageResult<(bool, usize)> {
        let (live, count): (i64, u64) = self
            .scripts
            .worker_census
            .key(self.keys.live())
            .arg(worker_id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((live == 1, usize::try_from(count).unwrap_or(usize::MAX)))
    }
}

fn worker_record(info: &WorkerInfo) -> StorageResult<String> {
    serde_json::to_string(info).map_err(|e| corrupt(format!("worker {}: {e}", info.worker_id)))
}

fn hex(hash: &TokenHash) -> String {
    ::hex::encode(hash)
}

fn unhex(text: &str) -> Option<TokenHash> {
    let mut out = [0u8; 32];
    ::hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[async_trait]
impl JobStore for RedisStorage {
    async fn create_job(&self, job: &Job) -> StorageResult<()> {
        let bytes = encode_job(job)?;
        let _: i64 = self
            .scripts
            .create_job
            .key(self.keys.job(job.id))
            .key(self.keys.jobs())
            .key(self.keys.status(job.status))
            .key(self.keys.client_jobs(&job.client))
            .arg(job.version)
            .arg(bytes)
            .arg(job.id.to_string())
            .arg(job.status.as_str())
            .arg(job.updated_at.timestamp_micros())
            .arg(job.created_at.timestamp_micros())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get_job(&self, id: JobId) -> StorageResult<Option<Job>> {
        let bytes: Option<Vec<u8>> = self.conn().hget(self.keys.job(id), "d").await.map_err(unavailable)?;
        bytes.map(|b| Job::decode(&b).map_err(|e| corrupt(format!("job {id}: {e}")))).transpose()
    }

    async fn update_job(&self, job: &mut Job, follow_up: FollowUp) -> StorageResult<bool> {
        self.update(job, follow_up, None).await
    }

    async fn update_job_releasing(&self, job: &mut Job, follow_up: FollowUp, worker_id: &str) -> StorageResult<bool> {
        self.update(job, follow_up, Some(worker_id)).await
    }

    async fn overdue_jobs(&self, now: chrono::DateTime<chrono::Utc>, max: usize) -> StorageResult<Vec<JobId>> {
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.watch())
            .arg("-inf")
            .arg(now.timestamp_millis())
            .arg("LIMIT")
            .arg(0)
            .arg(max)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    async fn unwatch(&self, id: JobId) -> StorageResult<()> {
        let _: i64 = self.conn().zrem(self.keys.watch(), id.to_string()).await.map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl JobQueue for RedisStorage {
    async fn next_job(&self, timeout: Duration) -> StorageResult<Option<JobTicket>> {
        let mut reader = self.reader.lock().await;
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
            let reply: RedisValue = match read.query_async(&mut reader.conn).await {
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

#[async_trait]
impl TaskQueues for RedisStorage {
    async fn pop_task_until(
        &self,
        worker_id: &str,
        timeout: Duration,
        stop: &CancellationToken,
    ) -> StorageResult<Option<TaskPayload>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let notify = self.waiters.for_worker(worker_id);
        let key = self.keys.tasks(worker_id);
        let result = loop {
            // Register interest before looking, so a push between the look
            // and the wait still wakes this poll.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let popped: Vec<(Vec<u8>, f64)> = match self.conn().zpopmin(&key, 1).await {
                Ok(popped) => popped,
                Err(e) => break Err(unavailable(e)),
            };
            if let Some((member, _)) = popped.into_iter().next() {
                break member
                    .get(20..)
                    .ok_or_else(|| corrupt("task entry too short"))
                    .and_then(|payload| {
                        serde_json::from_slice(payload).map_err(|e| corrupt(format!("task entry: {e}")))
                    })
                    .map(Some);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break Ok(None);
            }
            let wait = (deadline - now).min(WAKE_SAFETY_NET);
            tokio::select! {
                _ = tokio::time::timeout(wait, notified) => {}
                () = stop.cancelled() => break Ok(None),
            }
        };
        self.waiters.release(worker_id, notify);
        result
    }

    async fn withdraw_task(&self, worker_id: &str, task_id: Uuid) -> StorageResult<bool> {
        let withdrawn: i64 = self
            .scripts
            .withdraw_task
            .key(self.keys.tasks(worker_id))
            .key(self.keys.worker(worker_id))
            .arg(task_id.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(withdrawn == 1)
    }
}

#[async_trait]
impl WorkerRegistry for RedisStorage {
    async fn register_worker(&self, worker: WorkerInfo, ttl: Duration) -> StorageResult<()> {
        self.store_worker(&worker, ttl, "register", "").await?;
        Ok(())
    }

    async fn refresh_worker(
        &self,
        worker_id: &str,
        patch: Option<WorkerPatch>,
        ttl: Duration,
    ) -> StorageResult<Option<WorkerInfo>> {
        let ttl_ms = ttl.as_millis() as u64;
        let Some(patch) = patch else {
            let live: i64 = self
                .scripts
                .ping_worker
                .key(self.keys.worker(worker_id))
                .key(self.keys.live())
                .arg(worker_id)
                .arg(ttl_ms)
                .arg(self.keys.task_type_prefix())
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            if live == 0 {
                return Ok(None);
            }
            return self.worker_info(worker_id).await;
        };
        // Read, patch, write back unless the record changed meanwhile (a
        // concurrent heartbeat or re-registration); then read again.
        for _ in 0..MAX_WORKER_CONFLICTS {
            let Some((mut worker, rev)) = self.worker_record_rev(worker_id).await? else { return Ok(None) };
            worker.apply(patch.clone());
            match self.store_worker(&worker, ttl, "refresh", &rev).await? {
                -2 => continue,
                n if n < 0 => return Ok(None),
                in_flight => {
                    worker.in_flight = u32::try_from(in_flight).unwrap_or(0);
                    return Ok(Some(worker));
                }
            }
        }
        Err(StorageError::Unavailable(format!("worker {worker_id} kept changing during a heartbeat; try again")))
    }

    async fn candidates_for(&self, task_type: &str) -> StorageResult<Vec<WorkerLoad>> {
        let flat: Vec<String> = self
            .scripts
            .candidates
            .key(self.keys.task_type(task_type))
            .key(self.keys.live())
            .arg(self.keys.worker_prefix())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(flat
            .chunks(3)
            .filter_map(|c| match c {
                [id, status, in_flight] => Some(WorkerLoad {
                    worker_id: id.clone(),
                    idle: status == "idle",
                    in_flight: in_flight.parse().unwrap_or(0),
                }),
                _ => None,
            })
            .collect())
    }

    async fn live_workers(&self) -> StorageResult<Vec<WorkerInfo>> {
        let flat: Vec<String> = self
            .scripts
            .live_workers
            .key(self.keys.live())
            .arg(self.keys.worker_prefix())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        flat.chunks(2)
            .filter_map(|c| match c {
                [record, in_flight] => Some((record, in_flight)),
                _ => None,
            })
            .map(|(record, in_flight)| {
                let mut info: WorkerInfo =
                    serde_json::from_str(record).map_err(|e| corrupt(format!("worker record: {e}")))?;
                info.in_flight = in_flight.parse().unwrap_or(0);
                Ok(info)
            })
            .collect()
    }

    async fn is_worker_live(&self, worker_id: &str) -> StorageResult<bool> {
        Ok(self.worker_census(worker_id).await?.0)
    }

    async fn live_worker_count(&self) -> StorageResult<usize> {
        Ok(self.worker_census("").await?.1)
    }

    async fn purge_expired_workers(&self) -> StorageResult<Vec<PurgedWorker>> {
        let flat: Vec<String> = self
            .scripts
            .purge_workers
            .key(self.keys.live())
            .arg(self.keys.worker_prefix())
            .arg(self.keys.task_type_prefix())
            .arg(self.keys.tasks(""))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        // worker id, n, then n (job id, task id) pairs; per purged worker.
        let mut purged = Vec::new();
        let mut rest = flat.into_iter();
        while let Some(worker_id) = rest.next() {
            let count: usize =
                rest.next().and_then(|n| n.parse().ok()).ok_or_else(|| corrupt("purge_workers: bad reply"))?;
            let mut dropped = Vec::with_capacity(count);
            for _ in 0..count {
                let (Some(job), Some(task)) = (rest.next(), rest.next()) else {
                    return Err(corrupt("purge_workers: short reply"));
                };
                match (job.parse(), task.parse()) {
                    (Ok(job_id), Ok(task_id)) => dropped.push((job_id, task_id)),
                    _ => tracing::warn!(worker_id, job, task, "dropped task entry without readable ids"),
                }
            }
            purged.push(PurgedWorker { worker_id, dropped });
        }
        Ok(purged)
    }

    async fn add_in_flight(&self, worker_id: &str, delta: i32) -> StorageResult<()> {
        let _: i64 = self
            .scripts
            .add_in_flight
            .key(self.keys.worker(worker_id))
            .arg(delta)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn replace_worker_tokens(&self, tokens: HashMap<String, TokenHash>) -> StorageResult<()> {
        let mut call = self.scripts.replace_tokens.key(self.keys.tokens_by_id());
        call.key(self.keys.tokens_by_hash());
        for (worker_id, hash) in &tokens {
            call.arg(worker_id).arg(hex(hash));
        }
        let _: i64 = call.invoke_async(&mut self.conn()).await.map_err(unavailable)?;
        self.tokens.clear();
        let _: i64 = self.conn().publish(self.keys.tokens_changed(), "reloaded").await.map_err(unavailable)?;
        Ok(())
    }

    async fn worker_token(&self, worker_id: &str) -> StorageResult<Option<TokenHash>> {
        if let Some(cached) = TokenCache::get(&self.tokens.by_id, &worker_id.to_owned()) {
            return Ok(cached);
        }
        let hash: Option<String> = self.conn().hget(self.keys.tokens_by_id(), worker_id).await.map_err(unavailable)?;
        let hash = hash.as_deref().and_then(unhex);
        TokenCache::put(&self.tokens.by_id, worker_id.to_owned(), hash);
        Ok(hash)
    }

    async fn worker_for_token(&self, hash: &TokenHash) -> StorageResult<Option<String>> {
        if let Some(cached) = TokenCache::get(&self.tokens.by_hash, hash) {
            return Ok(cached);
        }
        let worker: Option<String> =
            self.conn().hget(self.keys.tokens_by_hash(), hex(hash)).await.map_err(unavailable)?;
        TokenCache::put(&self.tokens.by_hash, *hash, worker.clone());
        Ok(worker)
    }
}

#[async_trait]
impl Coordination for RedisStorage {
    async fn take_quota(&self, client: &str, period: &str, limit: u64) -> StorageResult<bool> {
        let taken: i64 = self
            .scripts
            .take_quota
            .key(self.keys.quota(client))
            .arg(period)
            .arg(limit)
            .arg(QUOTA_TTL_SECS)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(taken == 1)
    }

    async fn claim_slot(&self, schedule: &str, slot: i64, ttl: Duration) -> StorageResult<bool> {
        let claimed: Option<String> = redis::cmd("SET")
            .arg(self.keys.slot(schedule, slot))
            .arg(&self.consumer)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(claimed.is_some())
    }

    async fn try_lock(&self, name: &str, owner: &str, ttl: Duration) -> StorageResult<bool> {
        let key = self.keys.lock(name);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let taken: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if taken.is_some() {
            return Ok(true);
        }
        // Held already: renew it if it is ours.
        let renewed: i64 = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
        )
        .key(&key)
        .arg(owner)
        .arg(ttl_ms)
        .invoke_async(&mut self.conn())
        .await
        .map_err(unavailable)?;
        Ok(renewed == 1)
    }

    async fn release_lock(&self, name: &str, owner: &str) -> StorageResult<bool> {
        let released: i64 = self
            .scripts
            .release_lock
            .key(self.keys.lock(name))
            .arg(owner)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(released == 1)
    }
}

#[async_trait]
impl BranchResults for RedisStorage {
    async fn record_branch_result(&self, wait_id: Uuid, task_id: Uuid, result: &str) -> StorageResult<BranchRecord> {
        let answered: i64 = self
            .scripts
            .record_branch
            .key(self.keys.branches(wait_id))
            .arg(task_id.to_string())
            .arg(result)
            .arg(BRANCH_RESULTS_TTL_SECS)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(match answered {
            -2 => BranchRecord::Closed,
            answered => usize::try_from(answered)
                .map_or(BranchRecord::Duplicate, |answered| BranchRecord::Recorded { answered }),
        })
    }

    async fn branch_results(&self, wait_id: Uuid) -> StorageResult<HashMap<Uuid, String>> {
        let results: HashMap<String, String> =
            self.conn().hgetall(self.keys.branches(wait_id)).await.map_err(unavailable)?;
        results
            .into_iter()
            .filter(|(field, _)| field != CLOSED_FIELD)
            .map(|(task_id, result)| {
                let task_id =
                    task_id.parse().map_err(|e| corrupt(format!("branch result of fan-out {wait_id}: {e}")))?;
                Ok((task_id, result))
            })
            .collect()
    }

    async fn close_fan_out(&self, wait_id: Uuid) -> StorageResult<()> {
        let key = self.keys.branches(wait_id);
        let () = redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset(&key, CLOSED_FIELD, 1)
            .ignore()
            .expire(&key, CLOSED_FAN_OUT_SECS as i64)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl DataStores for RedisStorage {
    async fn data_get(&self, scope: &str, key: &str) -> StorageResult<Option<String>> {
        self.conn().hget(self.keys.data(scope), key).await.map_err(unavailable)
    }

    async fn data_set(&self, scope: &str, key: &str, value: &str) -> StorageResult<()> {
        let _: i64 = self.conn().hset(self.keys.data(scope), key, value).await.map_err(unavailable)?;
        Ok(())
    }

    async fn data_delete(&self, scope: &str, key: &str) -> StorageResult<bool> {
        let deleted: i64 = self.conn().hdel(self.keys.data(scope), key).await.map_err(unavailable)?;
        Ok(deleted == 1)
    }

    async fn data_increment(&self, scope: &str, key: &str, delta: i64) -> StorageResult<Option<i64>> {
        // The value is stored as decimal text, which is also its JSON.
        match self.conn().hincr(self.keys.data(scope), key, delta).await {
            Ok(value) => Ok(Some(value)),
            Err(e) if is_not_an_integer(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[async_trait]
impl Listings for RedisStorage {
    async fn client_jobs(&self, client: &str, limit: usize, offset: usize) -> StorageResult<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let encoded: Vec<Vec<u8>> = self
            .scripts
            .list_jobs
            .key(self.keys.client_jobs(client))
            .arg(self.keys.job_prefix())
            .arg(offset)
            .arg(limit)
            .arg("jobs")
            .arg("")
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        encoded.iter().map(|bytes| Job::decode(bytes).map_err(|e| corrupt(format!("job of {client}: {e}")))).collect()
    }

    async fn jobs_with_status(&self, status: JobStatus, limit: usize, offset: usize) -> StorageResult<Vec<JobId>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let cutoff = if status.is_terminal() { self.ended_cutoff().to_string() } else { String::new() };
        let ids: Vec<String> = self
            .scripts
            .list_jobs
            .key(self.keys.status(status))
            .arg(self.keys.job_prefix())
            .arg(offset)
            .arg(limit)
            .arg("ids")
            .arg(cutoff)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        ids.iter().map(|id| id.parse().map_err(|e| corrupt(format!("{status} index entry {id}: {e}")))).collect()
    }

    async fn job_counts(&self) -> StorageResult<JobCounts> {
        // Acknowledged entries are deleted from the stream; send the held-back
        // acknowledgements first so that the stream holds exactly the jobs
        // queued or in progress.
        self.flush_acks().await?;
        let cutoff = self.ended_cutoff();
        let mut pipe = redis::pipe();
        for status in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            pipe.cmd("ZREMRANGEBYSCORE").arg(self.keys.status(status)).arg("-inf").arg(format!("({cutoff}")).ignore();
        }
        for status in JobStatus::ALL {
            pipe.zcard(self.keys.status(status));
        }
        pipe.xlen(self.keys.jobs());
        let mut counts: Vec<u64> = pipe.query_async(&mut self.conn()).await.map_err(unavailable)?;
        let queued = counts.pop().ok_or_else(|| corrupt("job counts: short reply"))?;
        if counts.len() != JobStatus::ALL.len() {
            return Err(corrupt("job counts: short reply"));
        }
        let by_status = JobStatus::ALL.into_iter().zip(counts).filter(|&(_, n)| n > 0).collect();
        Ok(JobCounts { by_status, queued })
    }
}

impl RedisStorage {
    /// One job update script call; `release` names a worker whose in-flight
    /// count drops by one in the same step.
    async fn update(&self, job: &mut Job, follow_up: FollowUp, release: Option<&str>) -> StorageResult<bool> {
        let expected = job.version;
        job.version += 1;
        job.updated_at = chrono::Utc::now();
        let prepared = encode_job(job).and_then(|bytes| Ok((bytes, Dispatch::new(follow_up)?)));
        let (bytes, dispatch) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                job.version = expected;
                return Err(e);
            }
        };
        let ended = job.status.is_terminal();
        let retention_ms = if ended { self.retention.as_millis().max(1) as u64 } else { 0 };
        let score = job.updated_at.timestamp_micros();
        // Ended jobs' index entries are pruned by score when listed or
        // counted; one in every PRUNE_EVERY endings also prunes here, so the
        // index stays bounded where nothing reads it, at a fraction of a
        // command per job.
        let prune = ended && job.id.as_u128().is_multiple_of(PRUNE_EVERY);
        let cutoff = if prune { (score - self.retention_micros()).to_string() } else { String::new() };
        let wake_parent = job.parent_job_id.filter(|_| ended).map_or_else(String::new, |id| id.to_string());

        let mut call = self.scripts.update_job.key(self.keys.job(job.id));
        call.key(self.keys.jobs())
            .key(self.keys.task_seq())
            .key(self.keys.watch())
            .key(self.keys.worker(release.unwrap_or("-")))
            .key(self.keys.status(job.status));
        for (worker_id, _, _) in &dispatch.pushes {
            call.key(self.keys.tasks(worker_id)).key(self.keys.worker(worker_id));
        }
        for task_type in &dispatch.parks {
            call.key(self.keys.parked(task_type));
        }
        call.arg(expected)
            .arg(bytes)
            .arg(retention_ms)
            .arg(job.task_deadline().map_or_else(String::new, |d| d.timestamp_millis().to_string()))
            .arg(job.id.to_string())
            .arg(if release.is_some() { "1" } else { "0" })
            .arg(GROUP)
            .arg(if dispatch.enqueue { "1" } else { "0" })
            .arg(job.status.as_str())
            .arg(self.keys.status_prefix())
            .arg(score)
            .arg(cutoff)
            .arg(wake_parent)
            .arg(self.keys.wake())
            .arg(self.keys.ended())
            .arg(self.keys.client_jobs(&job.client))
            .arg(dispatch.pushes.len())
            .arg(dispatch.parks.len());
        for (worker_id, score, payload) in &dispatch.pushes {
            call.arg(score).arg(payload).arg(worker_id);
        }
        let acks = std::mem::take(&mut *self.pending());
        for entry in &acks {
            call.arg(entry);
        }
        let applied: i64 = match call.invoke_async(&mut self.conn()).await {
            Ok(applied) => applied,
            Err(e) => {
                self.pending().extend(acks);
                job.version = expected;
                return Err(unavailable(e));
            }
        };
        if applied == 0 {
            job.version = expected;
        }
        Ok(applied == 1)
    }

    fn retention_micros(&self) -> i64 {
        i64::try_from(self.retention.as_micros()).unwrap_or(i64::MAX)
    }

    /// The score below which an ended job's index entry has outlived its
    /// retention (its job hash has expired or is about to).
    fn ended_cutoff(&self) -> i64 {
        chrono::Utc::now().timestamp_micros().saturating_sub(self.retention_micros())
    }
}

/// A follow-up in the shape `update_job.lua` takes it.
#[derive(Default)]
struct Dispatch {
    enqueue: bool,
    /// Worker id, score (-priority) and encoded payload per pushed task.
    pushes: Vec<(String, i64, Vec<u8>)>,
    /// Distinct task types to park the job under, first-named first.
    parks: Vec<String>,
}

impl Dispatch {
    fn new(follow_up: FollowUp) -> StorageResult<Self> {
        let mut dispatch = Self::default();
        match follow_up {
            FollowUp::None => {}
            FollowUp::Enqueue => dispatch.enqueue = true,
            FollowUp::Dispatch(assignments) => {
                let mut parked = BTreeSet::new();
                for assignment in assignments {
                    match assignment {
                        Assignment::Push { worker_id, task } => {
                            let payload = serde_json::to_vec(&task)
                                .map_err(|e| corrupt(format!("task {}: {e}", task.task_id)))?;
                            dispatch.pushes.push((worker_id, -i64::from(task.priority), payload));
                        }
                        Assignment::Park { task_type } => {
                            if parked.insert(task_type.clone()) {
                                dispatch.parks.push(task_type);
                            }
                        }
                    }
                }
            }
        }
        Ok(dispatch)
    }
}

impl RedisStorage {
    fn pending(&self) -> MutexGuard<'_, Vec<String>> {
        self.pending_acks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
    async fn flush_acks(&self) -> StorageResult<()> {
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

    /// Runs `store_worker.lua` in `mode` (`register` or `refresh`); returns the
    /// worker's in-flight count, or -1 when a refresh found it gone.
    async fn store_worker(&self, worker: &WorkerInfo, ttl: Duration, mode: &str, rev: &str) -> StorageResult<i64> {
        let mut call = self.scripts.store_worker.key(self.keys.worker(&worker.worker_id));
        call.key(self.keys.live())
            .arg(&worker.worker_id)
            .arg(worker_record(worker)?)
            .arg(&worker.status)
            .arg(ttl.as_millis() as u64)
            .arg(self.keys.task_type_prefix())
            .arg(mode)
            .arg(rev);
        for task in &worker.supported_tasks {
            call.arg(task);
        }
        call.invoke_async(&mut self.conn()).await.map_err(unavailable)
    }

    async fn worker_info(&self, worker_id: &str) -> StorageResult<Option<WorkerInfo>> {
        Ok(self.worker_record_rev(worker_id).await?.map(|(info, _)| info))
    }

    /// A worker's record with its in-flight count, and the record's revision.
    async fn worker_record_rev(&self, worker_id: &str) -> StorageResult<Option<(WorkerInfo, String)>> {
        let (record, in_flight, rev): (Option<String>, Option<u32>, Option<String>) = redis::cmd("HMGET")
            .arg(self.keys.worker(worker_id))
            .arg("info")
            .arg("in_flight")
            .arg("rev")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Some(record) = record else { return Ok(None) };
        let mut info: WorkerInfo =
            serde_json::from_str(&record).map_err(|e| corrupt(format!("worker {worker_id}: {e}")))?;
        info.in_flight = in_flight.unwrap_or(0);
        Ok(Some((info, rev.unwrap_or_else(|| "0".to_owned()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_digests_survive_hex() {
        let hash = crate::auth::hash("token");
        assert_eq!(unhex(&hex(&hash)), Some(hash));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }

    /// `withdraw_task.lua` takes a queued task's first `"task_id"` for its
    /// own: serde writes the fields in declaration order, before the params.
    #[test]
    fn a_task_entry_names_its_own_id_first() {
        let own = Uuid::new_v4();
        let task = TaskPayload {
            job_id: Uuid::new_v4(),
            task_id: own,
            task_type: "greet".into(),
            params: serde_json::json!({"task_id": Uuid::new_v4().to_string()}),
            priority: 0,
            tracing_context: serde_json::Map::new(),
        };
        let json = serde_json::to_string(&task).unwrap();
        let at = json.find("\"task_id\":\"").unwrap();
        assert_eq!(json.get(at + 11..at + 47), Some(own.to_string().as_str()));
    }
}
