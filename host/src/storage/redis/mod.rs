//! Redis storage: the production backend, shared by every instance.
//!
//! Each multi-key change is one Lua script (in `lua/`, each listing its KEYS
//! and ARGV), so a job update and what follows from it land atomically and
//! two instances racing on one job cannot both win. Jobs are queued on a
//! Redis Stream read through a consumer group, one consumer per instance;
//! entries a dead instance left unacknowledged are claimed by the others.
//! Long-polls wait on a per-instance pub/sub subscription that announces
//! every task pushed for a worker, on whichever instance it was created;
//! messages for a worker's WebSocket travel on a channel per worker.
//! Jobs are indexed by status and by client in sorted sets that the same
//! scripts keep current; entries of ended jobs whose retention lapsed are
//! dropped as the indexes are read.

mod branches;
mod channels;
mod coordination;
mod data;
mod jobs;
mod keys;
mod listing;
mod notify;
mod progress;
mod scripts;
mod stream;
mod tasks;
mod workers;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};

use super::{StorageError, StorageResult};
use crate::config::RedisConfig;

use keys::Keys;
use notify::{Channels, TokenCache, WAKE_SAFETY_NET, Waiters, subscribe};
use scripts::Scripts;
use stream::{GROUP, Reader, beat, keep_alive};

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
    /// Decoded worker records, for dispatch.
    records: workers::RecordCache,
    /// Acknowledgements not yet sent: they ride along with the next job
    /// update (or go out before the next stream read), which saves a round
    /// trip per job. One lost with a crash only means a redelivery, which the
    /// job's status makes harmless.
    pending_acks: Mutex<Vec<String>>,
    subscriber: tokio::task::JoinHandle<()>,
    /// Workers' sockets held here, reachable from every instance.
    sockets: channels::Sockets,
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
        let subscriber = tokio::spawn(subscribe(client.clone(), channels, waiters.clone(), tokens.clone(), ready));
        let sockets = channels::Sockets::start(client, keys.worker_channel_prefix(), consumer.to_owned());
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
                reading_new: false,
            }),
            keys,
            scripts: Scripts::load(),
            consumer: consumer.to_owned(),
            retention,
            waiters,
            tokens,
            records: workers::RecordCache::default(),
            pending_acks: Mutex::default(),
            subscriber,
            sockets,
            heartbeat,
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

impl RedisStorage {
    fn retention_micros(&self) -> i64 {
        i64::try_from(self.retention.as_micros()).unwrap_or(i64::MAX)
    }

    /// The score below which an ended job's index entry has outlived its
    /// retention (its job hash has expired or is about to).
    fn ended_cutoff(&self) -> i64 {
        chrono::Utc::now().timestamp_micros().saturating_sub(self.retention_micros())
    }
}
