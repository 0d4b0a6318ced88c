//! Live channels to workers across instances: each instance subscribes, on
//! a pub/sub connection of its own, to the channel of every worker whose
//! socket it holds, so a `PUBLISH` reaches exactly the instance that holds
//! the socket and its count says whether any did.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::Client;
use redis::aio::PubSubSink;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{RedisStorage, unavailable};
use crate::storage::record::lock;
use crate::storage::{ChannelId, HELD_CANCEL_SECS, MAX_HELD_CANCELS, StorageResult, WorkerChannels};

/// Marks a control message: JSON for a worker never starts with it. The
/// only one, `REPLACED` + instance, tells other instances that the worker's
/// socket is now held by that instance.
const CONTROL: char = '\u{0}';

type Inboxes = HashMap<String, (ChannelId, mpsc::Sender<String>)>;

/// This instance's sockets and its subscription for them.
pub(super) struct Sockets {
    instance: String,
    /// `{prefix}:ws:`; a worker's channel is this and its id.
    channel_prefix: String,
    local: Arc<Mutex<Inboxes>>,
    next: AtomicU64,
    /// The live subscription's command side; `None` while reconnecting (the
    /// reconnect subscribes to every local channel afresh).
    sink: Arc<tokio::sync::Mutex<Option<PubSubSink>>>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Sockets {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Sockets {
    pub(super) fn start(client: Client, channel_prefix: String, instance: String) -> Self {
        let local: Arc<Mutex<Inboxes>> = Arc::default();
        let sink = Arc::new(tokio::sync::Mutex::new(None));
        let listener =
            tokio::spawn(listen(client, channel_prefix.clone(), instance.clone(), local.clone(), sink.clone()));
        Self { instance, channel_prefix, local, next: AtomicU64::new(0), sink, listener }
    }

    fn channel(&self, worker_id: &str) -> String {
        format!("{}{worker_id}", self.channel_prefix)
    }

    /// Subscribes to or leaves a worker's channel on the live subscription.
    /// Without one nothing is lost: the reconnect subscribes to what is local then.
    async fn follow(&self, channel: String, on: bool) {
        if let Some(sink) = self.sink.lock().await.as_mut() {
            let done = if on { sink.subscribe(&channel).await } else { sink.unsubscribe(&channel).await };
            if let Err(e) = done {
                tracing::warn!(channel, error = %e, "cannot change the worker socket subscription");
            }
        }
    }
}

async fn listen(
    client: Client,
    prefix: String,
    instance: String,
    local: Arc<Mutex<Inboxes>>,
    sink_slot: Arc<tokio::sync::Mutex<Option<PubSubSink>>>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                let (mut sink, mut stream) = pubsub.split();
                // Under the slot's lock: a channel opened meanwhile is either
                // in this list or subscribed by `follow` once the sink is in.
                let mut slot = sink_slot.lock().await;
                let held: Vec<String> = lock(&local).keys().map(|id| format!("{prefix}{id}")).collect();
                let resubscribed = if held.is_empty() { Ok(()) } else { sink.subscribe(&held).await };
                match resubscribed {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        *slot = Some(sink);
                        drop(slot);
                        while let Some(message) = stream.next().await {
                            let channel = message.get_channel_name();
                            let Some(worker_id) = channel.strip_prefix(prefix.as_str()) else { continue };
                            let Ok(payload) = message.get_payload::<String>() else { continue };
                            deliver(&local, worker_id, payload, &instance);
                        }
                        *sink_slot.lock().await = None;
                        tracing::warn!("worker socket subscription ended; reconnecting");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe to worker socket channels; retrying"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect for worker socket channels; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn deliver(local: &Mutex<Inboxes>, worker_id: &str, payload: String, instance: &str) {
    let mut local = lock(local);
    if let Some(holder) = payload.strip_prefix(CONTROL) {
        // Another instance took the worker's socket: the one here is stale.
        // The channel is left when its socket's task closes it.
        if holder != instance && local.remove(worker_id).is_some() {
            tracing::info!(worker_id, holder, "worker socket moved to another instance; closing it here");
        }
        return;
    }
    if let Some((_, inbox)) = local.get(worker_id)
        && inbox.try_send(payload).is_err()
    {
        tracing::warn!(worker_id, "worker socket inbox full or closed; message dropped");
    }
}

#[async_trait]
impl WorkerChannels for RedisStorage {
    async fn open_channel(&self, worker_id: &str, inbox: mpsc::Sender<String>) -> StorageResult<ChannelId> {
        let sockets = &self.sockets;
        let id = ChannelId(sockets.next.fetch_add(1, Ordering::Relaxed));
        let channel = sockets.channel(worker_id);
        // Whoever held the worker's socket before lets it go.
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(format!("{CONTROL}{}", sockets.instance))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let fresh = lock(&sockets.local).insert(worker_id.to_owned(), (id, inbox)).is_none();
        if fresh {
            sockets.follow(channel, true).await;
        }
        Ok(id)
    }

    async fn close_channel(&self, worker_id: &str, id: ChannelId) -> StorageResult<()> {
        let sockets = &self.sockets;
        // Ours: leave the channel. Gone already (replaced from another
        // instance): leave it too. A newer socket's here: keep it.
        let leave = {
            let mut local = lock(&sockets.local);
            match local.get(worker_id) {
                Some((open, _)) if *open == id => local.remove(worker_id).is_some(),
                Some(_) => false,
                None => true,
            }
        };
        if leave {
            sockets.follow(sockets.channel(worker_id), false).await;
        }
        Ok(())
    }

    async fn send_to_worker(&self, worker_id: &str, message: &str) -> StorageResult<bool> {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(self.sockets.channel(worker_id))
            .arg(message)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(receivers > 0)
    }

    async fn hold_cancel(&self, worker_id: &str, task_id: Uuid) -> StorageResult<()> {
        let key = self.keys.held_cancels(worker_id);
        let _: i64 = self
            .scripts
            .hold_cancel
            .key(key)
            .arg(task_id.to_string())
            .arg(MAX_HELD_CANCELS)
            .arg(HELD_CANCEL_SECS)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take_cancels(&self, worker_id: &str, running: &[Uuid]) -> StorageResult<Vec<Uuid>> {
        if running.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self.scripts.take_cancels.key(self.keys.held_cancels(worker_id));
        for task in running {
            call.arg(task.to_string());
        }
        let taken: Vec<String> = call.invoke_async(&mut self.conn()).await.map_err(unavailable)?;
        Ok(taken.iter().filter_map(|id| id.parse().ok()).collect())
    }
}
