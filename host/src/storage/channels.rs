//! Live channels to workers: a message for a worker reaches the instance
//! that holds the worker's WebSocket, whichever instance sends it.
//!
//! An instance opens a worker's channel when the worker's socket connects
//! and closes it when the socket goes. A worker has one channel: opening it
//! anywhere closes the one held before (that instance's inbox ends), so a
//! worker that reconnects to another instance is not reached twice.

use async_trait::async_trait;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::StorageResult;

/// Cancels held for one worker without a socket, at most (the oldest
/// worker-held tasks are not more than a worker's concurrency).
pub const MAX_HELD_CANCELS: usize = 1024;

/// How long a held cancel waits for the worker's heartbeat.
pub const HELD_CANCEL_SECS: u64 = 86_400;

/// Messages waiting for one socket's writer, at most.
pub const INBOX_CAPACITY: usize = 64;

/// Which opening of a worker's channel: a socket closing must not close the
/// channel its successor opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelId(pub u64);

#[async_trait]
pub trait WorkerChannels: Send + Sync {
    /// Opens `worker_id`'s channel on this instance: messages for the worker
    /// arrive in `inbox` until the channel is closed or opened again
    /// (here or on another instance), when `inbox`'s sender is dropped.
    async fn open_channel(&self, worker_id: &str, inbox: mpsc::Sender<String>) -> StorageResult<ChannelId>;

    /// Closes `worker_id`'s channel if `id` is still the one open here.
    async fn close_channel(&self, worker_id: &str, id: ChannelId) -> StorageResult<()>;

    /// Sends `message` to `worker_id`'s socket; `false` when no instance
    /// holds one (or its inbox is full), so the caller can fall back.
    async fn send_to_worker(&self, worker_id: &str, message: &str) -> StorageResult<bool>;

    /// Holds a cancel for `worker_id`'s task `task_id` that no socket
    /// carried, for the worker's next heartbeat (the newest `rxon` SDKs
    /// stop the tasks a heartbeat answer lists in `cancel_task_ids`).
    async fn hold_cancel(&self, worker_id: &str, task_id: Uuid) -> StorageResult<()>;

    /// Of `running` (the tasks the worker says it runs), those it was asked
    /// to stop; they are forgotten once taken.
    async fn take_cancels(&self, worker_id: &str, running: &[Uuid]) -> StorageResult<Vec<Uuid>>;
}
