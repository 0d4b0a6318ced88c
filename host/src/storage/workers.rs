//! The worker registry: live workers with their load, liveness that lapses,
//! and the digests of workers' own tokens.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::StorageResult;
use crate::auth::TokenHash;
use crate::auth::access::AccessKey;
use crate::model::{JobId, WorkerInfo, WorkerPatch};

/// A worker whose liveness lapsed and was purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedWorker {
    pub worker_id: String,
    /// The tasks still queued for it, as (job, task), dropped with its queue.
    pub dropped: Vec<(JobId, Uuid)>,
}

/// A worker's reputation is the share of its last this-many judged results
/// that succeeded.
pub const REPUTATION_WINDOW: usize = 50;

/// The reputation of a window of outcomes, newest first; 1.0 for none.
pub fn reputation(outcomes: impl IntoIterator<Item = bool>) -> f64 {
    let (good, all) = outcomes.into_iter().fold((0u32, 0u32), |(good, all), ok| (good + u32::from(ok), all + 1));
    if all == 0 { 1.0 } else { f64::from(good) / f64::from(all) }
}

#[async_trait]
pub trait WorkerRegistry: Send + Sync {
    /// Adds or replaces a worker; it is live for `ttl`.
    async fn register_worker(&self, worker: WorkerInfo, ttl: Duration) -> StorageResult<()>;

    /// Renews a worker's liveness and applies `patch`; `None` for an unknown
    /// or expired worker.
    async fn refresh_worker(
        &self,
        worker_id: &str,
        patch: Option<WorkerPatch>,
        ttl: Duration,
    ) -> StorageResult<Option<WorkerInfo>>;

    /// Every live worker whose `supported_tasks` contains `task_type`, with
    /// its tasks in flight and reputation: what routing chooses from.
    async fn workers_for(&self, task_type: &str) -> StorageResult<Vec<WorkerInfo>>;

    /// Counts one judged result of `worker_id` into its reputation (the last
    /// [`REPUTATION_WINDOW`] count); unknown workers are left alone. Every
    /// instance sees the same figure.
    async fn record_outcome(&self, worker_id: &str, succeeded: bool) -> StorageResult<()>;

    /// Every live worker.
    async fn live_workers(&self) -> StorageResult<Vec<WorkerInfo>>;

    /// Whether `worker_id` is live: polls check it before storage holds a
    /// queue or a waiter for them.
    async fn is_worker_live(&self, worker_id: &str) -> StorageResult<bool>;

    /// The number of live workers (registration checks it against its limit).
    async fn live_worker_count(&self) -> StorageResult<usize>;

    /// Deletes the records, index entries and task queues of workers whose
    /// liveness lapsed; returns them with the tasks their queues still held,
    /// which no one will ever take now (the caller fails them over). Keeps
    /// storage from growing with every worker that ever registered.
    async fn purge_expired_workers(&self) -> StorageResult<Vec<PurgedWorker>>;

    /// Adjusts a worker's count of tasks in flight (never below zero).
    async fn add_in_flight(&self, worker_id: &str, delta: i32) -> StorageResult<()>;

    /// Replaces every individual worker token digest at once (start-up and
    /// `reload-workers`): a request sees either the old set or the new one.
    async fn replace_worker_tokens(&self, tokens: HashMap<String, TokenHash>) -> StorageResult<()>;

    /// The token digest of `worker_id`, if it has its own token.
    async fn worker_token(&self, worker_id: &str) -> StorageResult<Option<TokenHash>>;

    /// The worker whose own token has digest `hash`.
    async fn worker_for_token(&self, hash: &TokenHash) -> StorageResult<Option<String>>;

    /// The key worker access tokens are signed with, the same on every
    /// instance: made (at random) on first use.
    async fn access_key(&self) -> StorageResult<AccessKey>;

    /// Replaces the access token key (`reload-workers`): every access token
    /// signed before is refused from then on, on every instance.
    async fn rotate_access_key(&self) -> StorageResult<()>;
}

/// A new random access token key.
pub fn random_access_key() -> AccessKey {
    let mut key = [0u8; 32];
    // Two v4 UUIDs: 244 bits from the operating system's CSPRNG.
    key[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    key
}
