//! In-process storage: the default when no Redis is configured.
//!
//! Not durable: everything is lost when the process stops. Jobs are kept in
//! their compact storage encoding (as Redis keeps them): a finished job takes
//! a few hundred bytes, and every read is a private copy no other task can
//! mutate.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{self, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::record::{Effects, VersionStep, decode_job, encode_job, lock};
use super::{
    BranchRecord, BranchResults, CLOSED_FAN_OUT_SECS, ChannelId, Coordination, DataStores, FollowUp, HELD_CANCEL_SECS,
    JobCounts, JobQueue, JobStore, JobTicket, Listings, MAX_HELD_CANCELS, ProgressReports, PurgedWorker,
    REPUTATION_WINDOW, Release, StorageResult, TaskQueues, WorkerChannels, WorkerRegistry, random_access_key,
    reputation,
};
use crate::auth::TokenHash;
use crate::auth::access::AccessKey;
use crate::model::{Job, JobId, JobStatus, Progress, TaskPayload, WorkerInfo, WorkerPatch};

/// The in-memory backend.
pub struct MemoryStorage {
    /// Jobs and their listing indexes, under one lock so they never disagree.
    jobs: Mutex<JobTable>,
    queue_tx: mpsc::UnboundedSender<JobId>,
    queue_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<JobId>>,
    /// Jobs sent on the queue and not yet handed out by `next_job`. Counted
    /// up before each send and down after each receive, so never below zero.
    queued: AtomicU64,
    parked: Mutex<HashMap<String, VecDeque<JobId>>>,
    tasks: Mutex<HashMap<String, TaskQueue>>,
    workers: Mutex<WorkerTable>,
    /// Swapped whole, so a reload is atomic for readers.
    worker_tokens: Mutex<Arc<WorkerTokens>>,
    access_key: Mutex<AccessKey>,
    /// Client → (period, attempts counted in it).
    quotas: Mutex<HashMap<String, (String, u64)>>,
    locks: Mutex<HashMap<String, (String, Instant)>>,
    /// Claimed schedule slots and when each claim lapses.
    slots: Mutex<HashMap<(String, i64), Instant>>,
    /// Round-robin counters by name.
    turns: Mutex<HashMap<String, u64>>,
    /// How long ended jobs are kept, and the ended jobs in the order they ended.
    retention: Duration,
    /// Each entry carries the job's version when it ended: a job revived
    /// since (an operator's retry) has moved past it and is not forgotten.
    ended: Mutex<VecDeque<(Instant, JobId, u64)>>,
    watch: Mutex<Watch>,
    /// Fan-out id → branch task id → result (JSON).
    branches: Mutex<HashMap<Uuid, HashMap<Uuid, String>>>,
    /// Closed fan-outs, refusing late results until their time is up.
    closed_fan_outs: Mutex<ClosedFanOuts>,
    /// Data store scope → key → value (JSON).
    data: Mutex<HashMap<String, HashMap<String, String>>>,
    /// Worker id → the inbox of its socket's writer.
    channels: Mutex<HashMap<String, (ChannelId, mpsc::Sender<String>)>>,
    next_channel: AtomicU64,
    /// Worker id → cancels held for its next heartbeat, and when each was held.
    held_cancels: Mutex<HashMap<String, HashMap<Uuid, Instant>>>,
}

/// Fan-outs closed in the last [`CLOSED_FAN_OUT_SECS`], oldest first so that
/// expired ones leave from the front.
#[derive(Default)]
struct ClosedFanOuts {
    ids: HashSet<Uuid>,
    by_time: VecDeque<(Instant, Uuid)>,
}

impl ClosedFanOuts {
    fn insert(&mut self, wait_id: Uuid, now: Instant) {
        self.expire(now);
        if self.ids.insert(wait_id) {
            self.by_time.push_back((now, wait_id));
        }
    }

    fn contains(&mut self, wait_id: Uuid, now: Instant) -> bool {
        self.expire(now);
        self.ids.contains(&wait_id)
    }

    fn expire(&mut self, now: Instant) {
        let lifetime = Duration::from_secs(CLOSED_FAN_OUT_SECS);
        while let Some(&(at, id)) = self.by_time.front() {
            if now.saturating_duration_since(at) < lifetime {
                break;
            }
            self.by_time.pop_front();
            self.ids.remove(&id);
        }
    }
}

/// Job ids, newest first: by a timestamp, descending, then by id.
type Newest = BTreeSet<(Reverse<DateTime<Utc>>, JobId)>;

/// Every stored job, with its status and client indexes.
#[derive(Default)]
struct JobTable {
    records: HashMap<JobId, StoredJob>,
    /// Status → its jobs, most recently updated first.
    by_status: BTreeMap<JobStatus, Newest>,
    /// Client → its jobs, most recently created first.
    by_client: HashMap<Arc<str>, Newest>,
}

impl JobTable {
    /// Stores a new `job` and indexes it.
    fn insert(&mut self, job: &Job, bytes: Box<[u8]>) {
        self.remove(job.id);
        let client: Arc<str> = job.client.as_str().into();
        self.by_status.entry(job.status).or_default().insert((Reverse(job.updated_at), job.id));
        self.by_client.entry(client.clone()).or_default().insert((Reverse(job.created_at), job.id));
        let stored = StoredJob {
            version: job.version,
            status: job.status,
            client,
            created_at: job.created_at,
            updated_at: job.updated_at,
            bytes,
            progress: None,
        };
        self.records.insert(job.id, stored);
    }

    /// Replaces the record of `job` if it is still at `expected`; returns
    /// whether it had ended before, or `None` when it changed meanwhile. The
    /// client index keys on the creation time, which never changes, so only
    /// the status index moves.
    fn update(&mut self, job: &Job, expected: u64, bytes: Box<[u8]>) -> Option<bool> {
        let stored = self.records.get_mut(&job.id).filter(|stored| stored.version == expected)?;
        let was_terminal = stored.status.is_terminal();
        let (old_status, old_updated) = (stored.status, stored.updated_at);
        stored.version = job.version;
        stored.status = job.status;
        stored.updated_at = job.updated_at;
        stored.bytes = bytes;
        if let Some(ids) = self.by_status.get_mut(&old_status) {
            ids.remove(&(Reverse(old_updated), job.id));
            if ids.is_empty() {
                self.by_status.remove(&old_status);
            }
        }
        self.by_status.entry(job.status).or_default().insert((Reverse(job.updated_at), job.id));
        Some(was_terminal)
    }

    /// Forgets job `id` and its index entries; dropping emptied index sets.
    fn remove(&mut self, id: JobId) {
        let Some(old) = self.records.remove(&id) else { return };
        if let Some(ids) = self.by_status.get_mut(&old.status) {
            ids.remove(&(Reverse(old.updated_at), id));
            if ids.is_empty() {
                self.by_status.remove(&old.status);
            }
        }
        if let Some(ids) = self.by_client.get_mut(&old.client) {
            ids.remove(&(Reverse(old.created_at), id));
            if ids.is_empty() {
                self.by_client.remove(&old.client);
            }
        }
    }
}

/// Jobs waiting on a task, by deadline, and each one's current deadline.
#[derive(Default)]
struct Watch {
    by_deadline: BTreeSet<(DateTime<Utc>, JobId)>,
    by_job: HashMap<JobId, DateTime<Utc>>,
}

#[derive(Default)]
struct WorkerTokens {
    by_id: HashMap<String, TokenHash>,
    by_hash: HashMap<TokenHash, String>,
}

/// A job's storage encoding, and what the indexes need of it in the clear
/// (so no update has to decode the old record).
struct StoredJob {
    version: u64,
    status: JobStatus,
    /// Shared with the client index.
    client: Arc<str>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    bytes: Box<[u8]>,
    /// The worker's latest progress report, kept beside the record.
    progress: Option<Box<Progress>>,
}

struct LiveWorker {
    info: WorkerInfo,
    expires: Instant,
    /// Judged results, newest first, at most `REPUTATION_WINDOW`.
    outcomes: VecDeque<bool>,
}

impl LiveWorker {
    fn is_live(&self, now: Instant) -> bool {
        self.expires > now
    }
}

/// Live workers, and which of them take each task type: a dispatch looks at
/// the workers of its task's type, never at the whole fleet.
#[derive(Default)]
struct WorkerTable {
    by_id: HashMap<String, LiveWorker>,
    by_type: HashMap<String, BTreeSet<String>>,
}

impl WorkerTable {
    fn get(&self, worker_id: &str) -> Option<&LiveWorker> {
        self.by_id.get(worker_id)
    }

    fn get_mut(&mut self, worker_id: &str) -> Option<&mut LiveWorker> {
        self.by_id.get_mut(worker_id)
    }

    fn contains_key(&self, worker_id: &str) -> bool {
        self.by_id.contains_key(worker_id)
    }

    fn values(&self) -> impl Iterator<Item = &LiveWorker> {
        self.by_id.values()
    }

    /// The workers listing `task_type`, live or not.
    fn of_type<'a>(&'a self, task_type: &str) -> impl Iterator<Item = &'a LiveWorker> {
        self.by_type.get(task_type).into_iter().flatten().filter_map(|id| self.by_id.get(id))
    }

    fn insert(&mut self, worker: LiveWorker) {
        let id = worker.info.worker_id.clone();
        self.remove(&id);
        self.index(&id, &worker.info.supported_tasks);
        self.by_id.insert(id, worker);
    }

    fn remove(&mut self, worker_id: &str) -> Option<LiveWorker> {
        let worker = self.by_id.remove(worker_id)?;
        self.unindex(worker_id, &worker.info.supported_tasks);
        Some(worker)
    }

    /// Moves `worker_id` from the types of `old` to those it lists now.
    fn reindex(&mut self, worker_id: &str, old: &[String]) {
        self.unindex(worker_id, old);
        let tasks = self.by_id.get(worker_id).map(|w| w.info.supported_tasks.clone()).unwrap_or_default();
        self.index(worker_id, &tasks);
    }

    fn index(&mut self, worker_id: &str, tasks: &[String]) {
        for task in tasks {
            self.by_type.entry(task.clone()).or_default().insert(worker_id.to_owned());
        }
    }

    fn unindex(&mut self, worker_id: &str, tasks: &[String]) {
        for task in tasks {
            if let Some(ids) = self.by_type.get_mut(task) {
                ids.remove(worker_id);
                if ids.is_empty() {
                    self.by_type.remove(task);
                }
            }
        }
    }
}

#[derive(Default)]
struct TaskQueue {
    heap: BinaryHeap<QueuedTask>,
    /// Wakes one waiting poll per pushed task; a push with no waiter leaves a
    /// permit, so a poll arriving just after it does not sleep.
    notify: Arc<Notify>,
    seq: u64,
}

struct QueuedTask {
    priority: i32,
    seq: u64,
    payload: TaskPayload,
}

impl Ord for QueuedTask {
    /// Higher priority first; FIFO within one priority.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.cmp(&other.priority).then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for QueuedTask {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for QueuedTask {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for QueuedTask {}

fn encode(job: &Job) -> StorageResult<Box<[u8]>> {
    encode_job(job).map(Vec::into_boxed_slice)
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStorage {
    pub fn new() -> Self {
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        Self {
            jobs: Mutex::default(),
            queue_tx,
            queue_rx: tokio::sync::Mutex::new(queue_rx),
            queued: AtomicU64::new(0),
            parked: Mutex::default(),
            tasks: Mutex::default(),
            workers: Mutex::default(),
            worker_tokens: Mutex::default(),
            access_key: Mutex::new(random_access_key()),
            quotas: Mutex::default(),
            locks: Mutex::default(),
            slots: Mutex::default(),
            turns: Mutex::default(),
            retention: Duration::from_secs(86_400),
            ended: Mutex::default(),
            watch: Mutex::default(),
            branches: Mutex::default(),
            closed_fan_outs: Mutex::default(),
            data: Mutex::default(),
            channels: Mutex::default(),
            next_channel: AtomicU64::new(0),
            held_cancels: Mutex::default(),
        }
    }

    /// Keeps ended jobs for `retention` (default one day), then forgets them.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Records that `id` ended at `version` and forgets jobs whose retention
    /// ran out (those still at the version they ended at).
    fn ended(&self, id: JobId, version: u64) {
        let now = Instant::now();
        let mut ended = lock(&self.ended);
        ended.push_back((now + self.retention, id, version));
        let mut expired = Vec::new();
        while let Some((at, _, _)) = ended.front()
            && *at <= now
        {
            if let Some((_, id, version)) = ended.pop_front() {
                expired.push((id, version));
            }
        }
        drop(ended);
        if !expired.is_empty() {
            let mut jobs = lock(&self.jobs);
            expired.retain(|(id, version)| jobs.records.get(id).is_some_and(|stored| stored.version == *version));
            for (id, _) in &expired {
                jobs.remove(*id);
            }
            drop(jobs);
            for (id, _) in expired {
                self.set_watch(id, None);
            }
        }
    }

    fn set_watch(&self, id: JobId, deadline: Option<DateTime<Utc>>) {
        let mut watch = lock(&self.watch);
        if let Some(old) = watch.by_job.remove(&id) {
            watch.by_deadline.remove(&(old, id));
        }
        if let Some(deadline) = deadline {
            watch.by_deadline.insert((deadline, id));
            watch.by_job.insert(id, deadline);
        }
    }

    fn enqueue(&self, id: JobId) {
        // Counted before the send, so `next_job` never counts it down first.
        self.queued.fetch_add(1, atomic::Ordering::SeqCst);
        // The receiver lives as long as `self`, so sending cannot fail.
        if self.queue_tx.send(id).is_err() {
            self.queued.fetch_sub(1, atomic::Ordering::SeqCst);
        }
    }

    /// Applies what an update of job `id` set in motion.
    fn apply(&self, id: JobId, effects: Effects) {
        if effects.enqueue {
            self.enqueue(id);
        }
        for (worker_id, task) in effects.pushes {
            self.push_task(&worker_id, task);
        }
        if !effects.parks.is_empty() {
            let mut parked = lock(&self.parked);
            for task_type in effects.parks {
                parked.entry(task_type).or_default().push_back(id);
            }
        }
    }

    fn push_task(&self, worker_id: &str, task: TaskPayload) {
        let notify = {
            let mut tasks = lock(&self.tasks);
            let queue = tasks.entry(worker_id.to_owned()).or_default();
            queue.seq += 1;
            let seq = queue.seq;
            queue.heap.push(QueuedTask { priority: task.priority, seq, payload: task });
            queue.notify.clone()
        };
        notify.notify_one();
        if let Some(worker) = lock(&self.workers).get_mut(worker_id) {
            worker.info.in_flight += 1;
        }
    }
}

#[async_trait]
impl JobStore for MemoryStorage {
    async fn create_job(&self, job: &Job) -> StorageResult<()> {
        let bytes = encode(job)?;
        lock(&self.jobs).insert(job, bytes);
        self.enqueue(job.id);
        Ok(())
    }

    async fn get_job(&self, id: JobId) -> StorageResult<Option<Job>> {
        let jobs = lock(&self.jobs);
        let Some(stored) = jobs.records.get(&id) else { return Ok(None) };
        decode_job(id, &stored.bytes).map(Some)
    }

    async fn update_job(&self, job: &mut Job, follow_up: FollowUp) -> StorageResult<bool> {
        let step = VersionStep::begin(job);
        let bytes = encode(step.job())?;
        let Some(was_terminal) = lock(&self.jobs).update(step.job(), step.expected(), bytes) else {
            return Ok(false);
        };
        let job = step.job();
        if job.status.is_terminal() {
            self.ended(job.id, job.version);
            // This update ended the job: its parent (waiting for it) runs next.
            if !was_terminal && let Some(parent) = job.parent_job_id {
                self.enqueue(parent);
            }
        }
        self.set_watch(job.id, job.task_deadline());
        self.apply(job.id, follow_up.into());
        step.applied();
        Ok(true)
    }

    async fn update_job_releasing(
        &self,
        job: &mut Job,
        follow_up: FollowUp,
        release: Release<'_>,
    ) -> StorageResult<bool> {
        let applied = self.update_job(job, follow_up).await?;
        if applied {
            self.add_in_flight(release.worker_id, -1).await?;
            if let Some(succeeded) = release.verdict {
                self.record_outcome(release.worker_id, succeeded).await?;
            }
        }
        Ok(applied)
    }

    async fn overdue_jobs(&self, now: DateTime<Utc>, max: usize) -> StorageResult<Vec<JobId>> {
        let watch = lock(&self.watch);
        Ok(watch.by_deadline.iter().take_while(|(deadline, _)| *deadline <= now).take(max).map(|(_, id)| *id).collect())
    }

    async fn unwatch(&self, id: JobId) -> StorageResult<()> {
        self.set_watch(id, None);
        Ok(())
    }
}

#[async_trait]
impl JobQueue for MemoryStorage {
    async fn next_job(&self, timeout: Duration) -> StorageResult<Option<JobTicket>> {
        let mut rx = self.queue_rx.lock().await;
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(job_id)) => {
                self.queued.fetch_sub(1, atomic::Ordering::SeqCst);
                Ok(Some(JobTicket { job_id, receipt: None }))
            }
            // The sender lives in `self`: a closed channel cannot happen, and a
            // timeout simply means the queue stayed empty.
            Ok(None) | Err(_) => Ok(None),
        }
    }

    async fn ack_job(&self, _ticket: JobTicket) -> StorageResult<()> {
        Ok(())
    }

    async fn take_parked(&self, task_type: &str, max: usize) -> StorageResult<Vec<JobId>> {
        let mut parked = lock(&self.parked);
        let Some(queue) = parked.get_mut(task_type) else { return Ok(Vec::new()) };
        let taken: Vec<JobId> = queue.drain(..max.min(queue.len())).collect();
        if queue.is_empty() {
            parked.remove(task_type);
        }
        Ok(taken)
    }
}

#[async_trait]
impl TaskQueues for MemoryStorage {
    async fn pop_task_until(
        &self,
        worker_id: &str,
        timeout: Duration,
        stop: &CancellationToken,
    ) -> StorageResult<Option<TaskPayload>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notify = {
                let mut tasks = lock(&self.tasks);
                if let Some(task) = tasks.get_mut(worker_id).and_then(|queue| queue.heap.pop()) {
                    return Ok(Some(task.payload));
                }
                // A look that will not wait leaves nothing behind.
                if tokio::time::Instant::now() >= deadline {
                    return Ok(None);
                }
                tasks.entry(worker_id.to_owned()).or_default().notify.clone()
            };
            tokio::select! {
                woken = tokio::time::timeout_at(deadline, notify.notified()) => {
                    if woken.is_err() {
                        return Ok(None);
                    }
                }
                () = stop.cancelled() => return Ok(None),
            }
        }
    }

    async fn withdraw_task(&self, worker_id: &str, task_id: Uuid) -> StorageResult<bool> {
        let withdrawn = {
            let mut tasks = lock(&self.tasks);
            let Some(queue) = tasks.get_mut(worker_id) else { return Ok(false) };
            let before = queue.heap.len();
            queue.heap.retain(|queued| queued.payload.task_id != task_id);
            queue.heap.len() < before
        };
        if withdrawn && let Some(worker) = lock(&self.workers).get_mut(worker_id) {
            // Its push counted it in flight; no worker will ever answer it.
            worker.info.in_flight = worker.info.in_flight.saturating_sub(1);
        }
        Ok(withdrawn)
    }
}

#[async_trait]
impl WorkerRegistry for MemoryStorage {
    async fn register_worker(&self, worker: WorkerInfo, ttl: Duration) -> StorageResult<()> {
        let expires = Instant::now() + ttl;
        let mut workers = lock(&self.workers);
        // Tasks already queued for this worker still count after a
        // re-registration, and its record of results stands.
        let (in_flight, outcomes) =
            workers.remove(&worker.worker_id).map_or((0, VecDeque::new()), |w| (w.info.in_flight, w.outcomes));
        let info = WorkerInfo { in_flight, reputation: reputation(outcomes.iter().copied()), ..worker };
        workers.insert(LiveWorker { info, expires, outcomes });
        Ok(())
    }

    async fn refresh_worker(
        &self,
        worker_id: &str,
        patch: Option<WorkerPatch>,
        ttl: Duration,
    ) -> StorageResult<Option<WorkerInfo>> {
        let now = Instant::now();
        let mut workers = lock(&self.workers);
        let Some(worker) = workers.get_mut(worker_id) else { return Ok(None) };
        if !worker.is_live(now) {
            workers.remove(worker_id);
            return Ok(None);
        }
        worker.expires = now + ttl;
        let Some(patch) = patch else { return Ok(Some(worker.info.clone())) };
        let old_tasks = patch.supported_tasks.as_ref().map(|_| worker.info.supported_tasks.clone());
        worker.info.apply(patch);
        let info = worker.info.clone();
        if let Some(old) = old_tasks {
            workers.reindex(worker_id, &old);
        }
        Ok(Some(info))
    }

    async fn workers_for(&self, task_type: &str) -> StorageResult<Vec<WorkerInfo>> {
        let now = Instant::now();
        Ok(lock(&self.workers).of_type(task_type).filter(|w| w.is_live(now)).map(|w| w.info.clone()).collect())
    }

    async fn record_outcome(&self, worker_id: &str, succeeded: bool) -> StorageResult<()> {
        if let Some(worker) = lock(&self.workers).get_mut(worker_id) {
            worker.outcomes.push_front(succeeded);
            worker.outcomes.truncate(REPUTATION_WINDOW);
            worker.info.reputation = reputation(worker.outcomes.iter().copied());
        }
        Ok(())
    }

    async fn live_workers(&self) -> StorageResult<Vec<WorkerInfo>> {
        let now = Instant::now();
        Ok(lock(&self.workers).values().filter(|w| w.is_live(now)).map(|w| w.info.clone()).collect())
    }

    async fn is_worker_live(&self, worker_id: &str) -> StorageResult<bool> {
        Ok(lock(&self.workers).get(worker_id).is_some_and(|w| w.is_live(Instant::now())))
    }

    async fn live_worker_count(&self) -> StorageResult<usize> {
        let now = Instant::now();
        Ok(lock(&self.workers).values().filter(|w| w.is_live(now)).count())
    }

    async fn purge_expired_workers(&self) -> StorageResult<Vec<PurgedWorker>> {
        let now = Instant::now();
        let mut workers = lock(&self.workers);
        let expired: Vec<String> =
            workers.values().filter(|w| !w.is_live(now)).map(|w| w.info.worker_id.clone()).collect();
        for id in &expired {
            workers.remove(id);
        }
        drop(workers);
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let live = lock(&self.workers);
        let mut tasks = lock(&self.tasks);
        let purged = expired
            .into_iter()
            .map(|worker_id| {
                let dropped = tasks
                    .remove(&worker_id)
                    .map(|queue| queue.heap.into_sorted_vec().into_iter().rev())
                    .into_iter()
                    .flatten()
                    .map(|queued| (queued.payload.job_id, queued.payload.task_id))
                    .collect();
                PurgedWorker { worker_id, dropped }
            })
            .collect();
        // Queues of ids that never registered, once empty.
        tasks.retain(|id, queue| live.contains_key(id) || !queue.heap.is_empty());
        Ok(purged)
    }

    async fn add_in_flight(&self, worker_id: &str, delta: i32) -> StorageResult<()> {
        if let Some(worker) = lock(&self.workers).get_mut(worker_id) {
            worker.info.in_flight = worker.info.in_flight.saturating_add_signed(delta);
        }
        Ok(())
    }

    async fn replace_worker_tokens(&self, tokens: HashMap<String, TokenHash>) -> StorageResult<()> {
        let by_hash = tokens.iter().map(|(id, hash)| (*hash, id.clone())).collect();
        *lock(&self.worker_tokens) = Arc::new(WorkerTokens { by_id: tokens, by_hash });
        Ok(())
    }

    async fn worker_token(&self, worker_id: &str) -> StorageResult<Option<TokenHash>> {
        Ok(lock(&self.worker_tokens).by_id.get(worker_id).copied())
    }

    async fn worker_for_token(&self, hash: &TokenHash) -> StorageResult<Option<String>> {
        Ok(lock(&self.worker_tokens).by_hash.get(hash).cloned())
    }

    async fn access_key(&self) -> StorageResult<AccessKey> {
        Ok(*lock(&self.access_key))
    }

    async fn rotate_access_key(&self) -> StorageResult<()> {
        *lock(&self.access_key) = random_access_key();
        Ok(())
    }
}

#[async_trait]
impl Coordination for MemoryStorage {
    async fn next_turn(&self, name: &str) -> StorageResult<u64> {
        let mut turns = lock(&self.turns);
        let turn = turns.entry(name.to_owned()).or_default();
        let current = *turn;
        *turn = turn.wrapping_add(1);
        Ok(current)
    }

    async fn take_quota(&self, client: &str, period: &str, limit: u64) -> StorageResult<bool> {
        let mut quotas = lock(&self.quotas);
        let (counted_period, used) = quotas.entry(client.to_owned()).or_insert_with(|| (period.to_owned(), 0));
        // Periods ("YYYY-MM") order as text. A new one restarts the count; a
        // request still carrying the previous one (it straddled the month
        // boundary) counts against the current period rather than resetting it.
        if period > counted_period.as_str() {
            *counted_period = period.to_owned();
            *used = 0;
        }
        if *used >= limit {
            return Ok(false);
        }
        *used += 1;
        Ok(true)
    }

    async fn claim_slot(&self, schedule: &str, slot: i64, ttl: Duration) -> StorageResult<bool> {
        let now = Instant::now();
        let mut slots = lock(&self.slots);
        slots.retain(|_, until| *until > now);
        match slots.entry((schedule.to_owned(), slot)) {
            std::collections::hash_map::Entry::Occupied(_) => Ok(false),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(now + ttl);
                Ok(true)
            }
        }
    }

    async fn try_lock(&self, name: &str, owner: &str, ttl: Duration) -> StorageResult<bool> {
        let now = Instant::now();
        let mut locks = lock(&self.locks);
        match locks.get(name) {
            Some((holder, until)) if holder != owner && *until > now => Ok(false),
            _ => {
                locks.insert(name.to_owned(), (owner.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn release_lock(&self, name: &str, owner: &str) -> StorageResult<bool> {
        let mut locks = lock(&self.locks);
        match locks.get(name) {
            Some((holder, until)) if holder == owner && *until > Instant::now() => {
                locks.remove(name);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl BranchResults for MemoryStorage {
    async fn record_branch_result(&self, wait_id: Uuid, task_id: Uuid, result: &str) -> StorageResult<BranchRecord> {
        // Checked under the results' lock, which `close_fan_out` also holds
        // while it closes: a result is either in the set it removes or refused.
        let mut branches = lock(&self.branches);
        if lock(&self.closed_fan_outs).contains(wait_id, Instant::now()) {
            return Ok(BranchRecord::Closed);
        }
        let results = branches.entry(wait_id).or_default();
        match results.entry(task_id) {
            std::collections::hash_map::Entry::Occupied(_) => Ok(BranchRecord::Duplicate),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(result.to_owned());
                Ok(BranchRecord::Recorded { answered: results.len() })
            }
        }
    }

    async fn branch_results(&self, wait_id: Uuid) -> StorageResult<HashMap<Uuid, String>> {
        Ok(lock(&self.branches).get(&wait_id).cloned().unwrap_or_default())
    }

    async fn close_fan_out(&self, wait_id: Uuid) -> StorageResult<()> {
        let mut branches = lock(&self.branches);
        branches.remove(&wait_id);
        lock(&self.closed_fan_outs).insert(wait_id, Instant::now());
        Ok(())
    }
}

#[async_trait]
impl DataStores for MemoryStorage {
    async fn data_get(&self, scope: &str, key: &str) -> StorageResult<Option<String>> {
        Ok(lock(&self.data).get(scope).and_then(|store| store.get(key)).cloned())
    }

    async fn data_set(&self, scope: &str, key: &str, value: &str) -> StorageResult<()> {
        lock(&self.data).entry(scope.to_owned()).or_default().insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    async fn data_delete(&self, scope: &str, key: &str) -> StorageResult<bool> {
        let mut data = lock(&self.data);
        let Some(store) = data.get_mut(scope) else { return Ok(false) };
        let existed = store.remove(key).is_some();
        if store.is_empty() {
            data.remove(scope);
        }
        Ok(existed)
    }

    async fn data_increment(&self, scope: &str, key: &str, delta: i64) -> StorageResult<Option<i64>> {
        let mut data = lock(&self.data);
        let current = match data.get(scope).and_then(|store| store.get(key)) {
            None => 0,
            // Only a JSON integer that fits an i64 counts: not "1.5", not "\"7\"".
            Some(value) => match serde_json::from_str::<i64>(value) {
                Ok(n) => n,
                Err(_) => return Ok(None),
            },
        };
        let Some(next) = current.checked_add(delta) else { return Ok(None) };
        data.entry(scope.to_owned()).or_default().insert(key.to_owned(), next.to_string());
        Ok(Some(next))
    }
}

#[async_trait]
impl Listings for MemoryStorage {
    async fn client_jobs(&self, client: &str, limit: usize, offset: usize) -> StorageResult<Vec<Job>> {
        // Copy the encodings under the lock; decode after it.
        let encoded: Vec<(JobId, Box<[u8]>)> = {
            let jobs = lock(&self.jobs);
            let Some(ids) = jobs.by_client.get(client) else { return Ok(Vec::new()) };
            ids.iter()
                .skip(offset)
                .take(limit)
                .filter_map(|(_, id)| jobs.records.get(id).map(|stored| (*id, stored.bytes.clone())))
                .collect()
        };
        encoded.into_iter().map(|(id, bytes)| decode_job(id, &bytes)).collect()
    }

    async fn jobs_with_status(&self, status: JobStatus, limit: usize, offset: usize) -> StorageResult<Vec<JobId>> {
        let jobs = lock(&self.jobs);
        let Some(ids) = jobs.by_status.get(&status) else { return Ok(Vec::new()) };
        Ok(ids.iter().skip(offset).take(limit).map(|(_, id)| *id).collect())
    }

    async fn job_counts(&self) -> StorageResult<JobCounts> {
        let by_status = lock(&self.jobs)
            .by_status
            .iter()
            .map(|(status, ids)| (*status, u64::try_from(ids.len()).unwrap_or(u64::MAX)))
            .collect();
        Ok(JobCounts { by_status, queued: self.queued.load(atomic::Ordering::SeqCst) })
    }
}

#[async_trait]
impl ProgressReports for MemoryStorage {
    async fn record_progress(&self, id: JobId, report: &Progress) -> StorageResult<bool> {
        let mut jobs = lock(&self.jobs);
        let Some(stored) = jobs.records.get_mut(&id) else { return Ok(false) };
        stored.progress = Some(Box::new(report.clone()));
        Ok(true)
    }

    async fn progress_of(&self, ids: &[JobId]) -> StorageResult<Vec<Option<Progress>>> {
        let jobs = lock(&self.jobs);
        Ok(ids.iter().map(|id| jobs.records.get(id).and_then(|s| s.progress.as_deref().cloned())).collect())
    }

    async fn job_with_progress(&self, id: JobId) -> StorageResult<Option<(Job, Option<Progress>)>> {
        let (bytes, progress) = {
            let jobs = lock(&self.jobs);
            let Some(stored) = jobs.records.get(&id) else { return Ok(None) };
            (stored.bytes.clone(), stored.progress.as_deref().cloned())
        };
        Ok(Some((decode_job(id, &bytes)?, progress)))
    }
}

#[async_trait]
impl WorkerChannels for MemoryStorage {
    async fn open_channel(&self, worker_id: &str, inbox: mpsc::Sender<String>) -> StorageResult<ChannelId> {
        let id = ChannelId(self.next_channel.fetch_add(1, atomic::Ordering::Relaxed));
        // The replaced entry's sender drops here, ending its socket's inbox.
        lock(&self.channels).insert(worker_id.to_owned(), (id, inbox));
        Ok(id)
    }

    async fn close_channel(&self, worker_id: &str, id: ChannelId) -> StorageResult<()> {
        let mut channels = lock(&self.channels);
        if channels.get(worker_id).is_some_and(|(open, _)| *open == id) {
            channels.remove(worker_id);
        }
        Ok(())
    }

    async fn send_to_worker(&self, worker_id: &str, message: &str) -> StorageResult<bool> {
        let channels = lock(&self.channels);
        Ok(channels.get(worker_id).is_some_and(|(_, inbox)| inbox.try_send(message.to_owned()).is_ok()))
    }

    async fn hold_cancel(&self, worker_id: &str, task_id: Uuid) -> StorageResult<()> {
        let now = Instant::now();
        let lifetime = Duration::from_secs(HELD_CANCEL_SECS);
        let mut held = lock(&self.held_cancels);
        let tasks = held.entry(worker_id.to_owned()).or_default();
        tasks.retain(|_, at| now.saturating_duration_since(*at) < lifetime);
        if tasks.len() < MAX_HELD_CANCELS {
            tasks.insert(task_id, now);
        }
        Ok(())
    }

    async fn take_cancels(&self, worker_id: &str, running: &[Uuid]) -> StorageResult<Vec<Uuid>> {
        let mut held = lock(&self.held_cancels);
        let Some(tasks) = held.get_mut(worker_id) else { return Ok(Vec::new()) };
        let taken: Vec<Uuid> = running.iter().filter(|task| tasks.remove(task).is_some()).copied().collect();
        if tasks.is_empty() {
            held.remove(worker_id);
        }
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn job() -> Job {
        Job::new("hello".into(), "default".into(), "start".into(), json!({}), None)
    }

    fn task(job_id: JobId, priority: i32) -> TaskPayload {
        TaskPayload {
            job_id,
            task_id: Uuid::new_v4(),
            task_type: "greet".into(),
            params: json!({}),
            priority,
            tracing_context: Default::default(),
        }
    }

    #[tokio::test]
    async fn updates_are_refused_from_a_stale_version() {
        let storage = MemoryStorage::new();
        let mut first = job();
        storage.create_job(&first).await.unwrap();
        let mut second = storage.get_job(first.id).await.unwrap().unwrap();

        first.current_state = "a".into();
        assert!(storage.update_job(&mut first, FollowUp::None).await.unwrap());
        assert_eq!(first.version, 1);

        second.current_state = "b".into();
        assert!(!storage.update_job(&mut second, FollowUp::None).await.unwrap());
        assert_eq!(second.version, 0, "a refused update leaves the caller's version alone");
        assert_eq!(storage.get_job(first.id).await.unwrap().unwrap().current_state, "a");
    }

    #[tokio::test]
    async fn created_and_enqueued_jobs_come_out_of_the_queue() {
        let storage = MemoryStorage::new();
        let mut job = job();
        storage.create_job(&job).await.unwrap();
        assert_eq!(storage.next_job(Duration::from_millis(10)).await.unwrap().unwrap().job_id, job.id);
        assert!(storage.next_job(Duration::from_millis(10)).await.unwrap().is_none());
        storage.update_job(&mut job, FollowUp::Enqueue).await.unwrap();
        assert_eq!(storage.next_job(Duration::from_millis(10)).await.unwrap().unwrap().job_id, job.id);
    }

    #[tokio::test]
    async fn tasks_pop_by_priority_then_in_order() {
        let storage = MemoryStorage::new();
        let id = Uuid::new_v4();
        let (low, high, high_later) = (task(id, 0), task(id, 5), task(id, 5));
        for t in [&low, &high, &high_later] {
            storage.push_task("w", t.clone());
        }
        let pop = || storage.pop_task("w", Duration::from_millis(10));
        assert_eq!(pop().await.unwrap().unwrap().task_id, high.task_id);
        assert_eq!(pop().await.unwrap().unwrap().task_id, high_later.task_id);
        assert_eq!(pop().await.unwrap().unwrap().task_id, low.task_id);
        assert!(pop().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_waiting_poll_wakes_when_a_task_is_queued() {
        let storage = Arc::new(MemoryStorage::new());
        let waiting = {
            let storage = storage.clone();
            tokio::spawn(async move { storage.pop_task("w", Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        let queued = task(Uuid::new_v4(), 0);
        let mut job = job();
        storage.create_job(&job).await.unwrap();
        let follow_up = FollowUp::push("w".into(), queued.clone());
        storage.update_job(&mut job, follow_up).await.unwrap();
        let popped = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();
        assert_eq!(popped.unwrap().task_id, queued.task_id);
    }

    #[tokio::test]
    async fn a_look_that_does_not_wait_leaves_no_queue_behind() {
        let storage = MemoryStorage::new();
        for i in 0..100 {
            assert!(storage.pop_task(&format!("made-up-{i}"), Duration::ZERO).await.unwrap().is_none());
        }
        assert!(lock(&storage.tasks).is_empty());
        assert!(!storage.is_worker_live("made-up-0").await.unwrap());
        assert_eq!(storage.live_worker_count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn workers_expire_and_carry_their_load() {
        let storage = MemoryStorage::new();
        let reg = serde_json::from_value(json!({"worker_id": "w", "supported_tasks": ["greet"]})).unwrap();
        storage
            .register_worker(WorkerInfo::from_registration("w".into(), reg), Duration::from_millis(50))
            .await
            .unwrap();
        storage.add_in_flight("w", 2).await.unwrap();
        let candidates = storage.workers_for("greet").await.unwrap();
        assert_eq!((candidates.len(), candidates[0].worker_id.as_str(), candidates[0].in_flight), (1, "w", 2));
        assert!(storage.workers_for("other").await.unwrap().is_empty());
        storage.add_in_flight("w", -5).await.unwrap();
        assert_eq!(storage.workers_for("greet").await.unwrap()[0].in_flight, 0);

        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(storage.workers_for("greet").await.unwrap().is_empty(), "expired workers get no tasks");
        assert!(storage.refresh_worker("w", None, Duration::from_secs(1)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn quotas_count_per_client_and_restart_each_period() {
        let storage = MemoryStorage::new();
        for _ in 0..3 {
            assert!(storage.take_quota("acme", "2026-11", 3).await.unwrap());
        }
        assert!(!storage.take_quota("acme", "2026-11", 3).await.unwrap());
        assert!(storage.take_quota("other", "2026-11", 3).await.unwrap(), "quotas are per client");
        assert!(storage.take_quota("acme", "2026-12", 3).await.unwrap(), "a new month starts afresh");
        assert!(storage.take_quota("acme", "2026-11", 3).await.unwrap(), "a late request counts in the new month");
        assert!(storage.take_quota("acme", "2026-12", 3).await.unwrap());
        assert!(!storage.take_quota("acme", "2026-12", 3).await.unwrap());
        assert!(!storage.take_quota("zero", "2026-12", 0).await.unwrap());
    }

    #[tokio::test]
    async fn concurrent_quota_takes_accept_exactly_the_limit() {
        let storage = Arc::new(MemoryStorage::new());
        let takes: Vec<_> = (0..64)
            .map(|_| {
                let storage = storage.clone();
                tokio::spawn(async move { storage.take_quota("acme", "2026-11", 17).await.unwrap() })
            })
            .collect();
        let mut accepted = 0;
        for take in takes {
            accepted += usize::from(take.await.unwrap());
        }
        assert_eq!(accepted, 17);
    }

    #[tokio::test]
    async fn worker_tokens_are_swapped_whole() {
        let storage = MemoryStorage::new();
        let one = crate::auth::hash("one");
        let two = crate::auth::hash("two");
        storage.replace_worker_tokens(HashMap::from([("w1".to_owned(), one)])).await.unwrap();
        assert_eq!(storage.worker_token("w1").await.unwrap(), Some(one));
        assert_eq!(storage.worker_for_token(&one).await.unwrap().as_deref(), Some("w1"));
        storage.replace_worker_tokens(HashMap::from([("w2".to_owned(), two)])).await.unwrap();
        assert_eq!(storage.worker_token("w1").await.unwrap(), None);
        assert_eq!(storage.worker_for_token(&one).await.unwrap(), None);
        assert_eq!(storage.worker_for_token(&two).await.unwrap().as_deref(), Some("w2"));
    }

    #[tokio::test]
    async fn expired_workers_are_purged_and_live_ones_kept() {
        let storage = MemoryStorage::new();
        for (id, ttl) in [("short", 30), ("long", 60_000)] {
            let reg = serde_json::from_value(json!({"worker_id": id, "supported_tasks": ["greet"]})).unwrap();
            storage
                .register_worker(WorkerInfo::from_registration(id.into(), reg), Duration::from_millis(ttl))
                .await
                .unwrap();
        }
        assert!(storage.purge_expired_workers().await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(storage.purge_expired_workers().await.unwrap().len(), 1);
        let live: Vec<String> = storage.live_workers().await.unwrap().into_iter().map(|w| w.worker_id).collect();
        assert_eq!(live, vec!["long".to_owned()]);
    }

    #[tokio::test]
    async fn locks_belong_to_one_owner_until_released_or_expired() {
        let storage = MemoryStorage::new();
        let ttl = Duration::from_millis(50);
        assert!(storage.try_lock("m", "a", ttl).await.unwrap());
        assert!(storage.try_lock("m", "a", ttl).await.unwrap(), "the owner renews");
        assert!(!storage.try_lock("m", "b", ttl).await.unwrap());
        assert!(!storage.release_lock("m", "b").await.unwrap());
        assert!(storage.release_lock("m", "a").await.unwrap());
        assert!(storage.try_lock("m", "b", ttl).await.unwrap());
        tokio::time::sleep(Duration::from_millis(70)).await;
        assert!(storage.try_lock("m", "a", ttl).await.unwrap(), "an expired lock is free");
    }

    #[tokio::test]
    async fn ended_jobs_are_forgotten_after_their_retention() {
        let storage = MemoryStorage::new().with_retention(Duration::from_millis(20));
        let mut ended = job();
        storage.create_job(&ended).await.unwrap();
        ended.end(crate::model::JobStatus::Finished, None);
        storage.update_job(&mut ended, FollowUp::None).await.unwrap();
        assert!(storage.get_job(ended.id).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Retention is enforced as later jobs end.
        let mut later = job();
        storage.create_job(&later).await.unwrap();
        later.end(crate::model::JobStatus::Failed, None);
        storage.update_job(&mut later, FollowUp::None).await.unwrap();
        assert!(storage.get_job(ended.id).await.unwrap().is_none());
        assert!(storage.get_job(later.id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn parked_jobs_are_taken_in_batches() {
        let storage = MemoryStorage::new();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let mut job = job();
            storage.create_job(&job).await.unwrap();
            storage.update_job(&mut job, FollowUp::park("greet".into())).await.unwrap();
            ids.push(job.id);
        }
        assert_eq!(storage.take_parked("greet", 2).await.unwrap(), ids[..2]);
        assert_eq!(storage.take_parked("greet", 2).await.unwrap(), ids[2..]);
        assert!(storage.take_parked("greet", 2).await.unwrap().is_empty());
    }
}
