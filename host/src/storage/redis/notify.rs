//! Wake-ups across instances: a per-instance pub/sub subscription that
//! announces every task pushed for a worker (waking the long-polls waiting
//! here) and every reload of the worker tokens (clearing the token cache).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::Client;
use tokio::sync::Notify;

use crate::auth::TokenHash;
use crate::auth::access::AccessKey;
use crate::storage::record::lock;

/// A waiting long-poll re-checks its queue this often even without a
/// wake-up, covering messages lost while the subscription reconnected.
pub(super) const WAKE_SAFETY_NET: Duration = Duration::from_secs(5);

/// Longest a cached worker token digest is trusted without a reload notice.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);

/// Cached worker token lookups kept at most.
const TOKEN_CACHE_MAX: usize = 10_000;

/// Long-polls waiting on this instance, by worker id.
#[derive(Default)]
pub(super) struct Waiters {
    by_worker: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Waiters {
    pub(super) fn for_worker(&self, worker_id: &str) -> Arc<Notify> {
        lock(&self.by_worker).entry(worker_id.to_owned()).or_default().clone()
    }

    pub(super) fn wake(&self, worker_id: &str) {
        if let Some(notify) = lock(&self.by_worker).get(worker_id) {
            notify.notify_one();
        }
    }

    /// Drops the entry once no poll holds it any more.
    pub(super) fn release(&self, worker_id: &str, notify: Arc<Notify>) {
        let mut map = lock(&self.by_worker);
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
pub(super) struct TokenCache {
    pub(super) by_id: Mutex<HashMap<String, (Option<TokenHash>, Instant)>>,
    pub(super) by_hash: Mutex<HashMap<TokenHash, (Option<String>, Instant)>>,
    /// The access token key as last read; a rotation clears it like a reload.
    access_key: Mutex<Option<(AccessKey, Instant)>>,
}

impl TokenCache {
    pub(super) fn get<K: std::hash::Hash + Eq, V: Clone>(map: &Mutex<HashMap<K, (V, Instant)>>, key: &K) -> Option<V> {
        let map = lock(map);
        map.get(key).filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL).map(|(v, _)| v.clone())
    }

    pub(super) fn put<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, (V, Instant)>>, key: K, value: V) {
        let mut map = lock(map);
        // Bounded by the workers that exist; a flood of made-up ids only
        // resets the cache.
        if map.len() >= TOKEN_CACHE_MAX {
            map.clear();
        }
        map.insert(key, (value, Instant::now()));
    }

    pub(super) fn access_key(&self) -> Option<AccessKey> {
        lock(&self.access_key).filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL).map(|(key, _)| key)
    }

    pub(super) fn keep_access_key(&self, key: AccessKey) {
        *lock(&self.access_key) = Some((key, Instant::now()));
    }

    pub(super) fn clear(&self) {
        lock(&self.by_id).clear();
        lock(&self.by_hash).clear();
        *lock(&self.access_key) = None;
    }
}

/// The pub/sub channels an instance listens on.
pub(super) struct Channels {
    /// Payload: the worker id a task was queued for.
    pub(super) wake: String,
    /// Any payload: the worker tokens were reloaded.
    pub(super) tokens: String,
}

/// Listens for task wake-ups and token reloads; reconnects when the
/// subscription drops.
pub(super) async fn subscribe(
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
