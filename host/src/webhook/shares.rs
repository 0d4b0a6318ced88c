//! How webhook deliveries share the service, so that one client cannot
//! starve the others (review finding 2: a client's hanging receivers used to
//! hold every POST slot, and its backlog filled the one queue for everyone).
//!
//! - Queue: a client may have [`Limits::client_queue`] deliveries pending
//!   (waiting, in flight or between attempts), all clients together
//!   [`Limits::queue`]. A client past its share loses only its own deliveries.
//! - Slots: a POST needs a slot of its lane (one client's deliveries to one
//!   receiver host, whatever the port), then one of its client's, then a
//!   global one, taken in that order: a delivery waiting for a busy host or a
//!   busy client holds none of the slots others need. Semaphores hand slots
//!   out first come, first served.
//!
//! A lane or client entry lives only while it has pending deliveries, so the
//! maps stay as small as the queue, whatever hosts clients name.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits, read from `WebhookSettings`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) queue: usize,
    pub(super) client_queue: usize,
    pub(super) concurrency: usize,
    pub(super) per_client_concurrency: usize,
    pub(super) per_host_concurrency: usize,
}

pub(super) struct Shares {
    limits: Limits,
    global: Arc<Semaphore>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pending: usize,
    clients: HashMap<String, Entry>,
    lanes: HashMap<(String, String), Entry>,
}

/// A client's or a lane's pending deliveries and its slots.
struct Entry {
    pending: usize,
    slots: Arc<Semaphore>,
}

/// Why a delivery was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// The client has `WEBHOOK_QUEUE_PER_CLIENT` deliveries pending.
    Client(usize),
    /// All clients together have `WEBHOOK_QUEUE_CAPACITY`.
    All(usize),
}

/// A pending delivery's place: given back when dropped.
pub(super) struct Ticket {
    shares: Arc<Shares>,
    client: String,
    host: String,
    client_slots: Arc<Semaphore>,
    lane_slots: Arc<Semaphore>,
}

/// The slots one POST holds; released when dropped.
pub(super) struct Slots {
    _lane: OwnedSemaphorePermit,
    _client: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

/// Tokio's semaphores take at most `MAX_PERMITS`, and at least one is
/// needed for anything to be sent (the configuration already refuses 0).
fn permits(n: usize) -> usize {
    n.clamp(1, Semaphore::MAX_PERMITS)
}

impl Shares {
    pub(super) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            global: Arc::new(Semaphore::new(permits(limits.concurrency))),
            limits,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deliveries pending, all clients together.
    pub(super) fn pending(&self) -> usize {
        self.state().pending
    }

    /// A place for one more delivery of `client` to `host`, if its share
    /// and the whole queue have room.
    pub(super) fn take(self: &Arc<Self>, client: &str, host: &str) -> Result<Ticket, Full> {
        let limits = self.limits;
        let mut state = self.state();
        if state.clients.get(client).is_some_and(|c| c.pending >= limits.client_queue) {
            return Err(Full::Client(limits.client_queue));
        }
        if state.pending >= limits.queue {
            return Err(Full::All(limits.queue));
        }
        state.pending += 1;
        let client_slots = join(&mut state.clients, client.to_owned(), limits.per_client_concurrency);
        let lane_slots = join(&mut state.lanes, (client.to_owned(), host.to_owned()), limits.per_host_concurrency);
        Ok(Ticket { shares: self.clone(), client: client.to_owned(), host: host.to_owned(), client_slots, lane_slots })
    }
}

/// Counts one more pending delivery in `key`'s entry; returns its slots.
fn join<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Entry>, key: K, concurrency: usize) -> Arc<Semaphore> {
    let entry =
        map.entry(key).or_insert_with(|| Entry { pending: 0, slots: Arc::new(Semaphore::new(permits(concurrency))) });
    entry.pending += 1;
    entry.slots.clone()
}

/// Counts one pending delivery less in `key`'s entry, dropping it at zero.
fn leave<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Entry>, key: K) {
    if let MapEntry::Occupied(mut entry) = map.entry(key) {
        entry.get_mut().pending = entry.get().pending.saturating_sub(1);
        if entry.get().pending == 0 {
            entry.remove();
        }
    }
}

impl Ticket {
    /// Waits for the slots of one POST: the lane's, the client's, then a
    /// global one. `None` once the semaphores are closed (never, today).
    pub(super) async fn slots(&self) -> Option<Slots> {
        let lane = self.lane_slots.clone().acquire_owned().await.ok()?;
        let client = self.client_slots.clone().acquire_owned().await.ok()?;
        let global = self.shares.global.clone().acquire_owned().await.ok()?;
        Some(Slots { _lane: lane, _client: client, _global: global })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.shares.state();
        state.pending = state.pending.saturating_sub(1);
        let client = std::mem::take(&mut self.client);
        let host = std::mem::take(&mut self.host);
        leave(&mut state.clients, client.clone());
        leave(&mut state.lanes, (client, host));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { queue: 5, client_queue: 3, concurrency: 4, per_client_concurrency: 2, per_host_concurrency: 1 }
    }

    #[test]
    fn a_client_past_its_share_loses_only_its_own_deliveries() {
        let shares = Shares::new(limits());
        let a: Vec<Ticket> = (0..3).map(|_| shares.take("a", "h").unwrap()).collect();
        assert_eq!(shares.take("a", "other-host").err(), Some(Full::Client(3)));
        let b: Vec<Ticket> = (0..2).map(|_| shares.take("b", "h").unwrap()).collect();
        assert_eq!(shares.take("c", "h").err(), Some(Full::All(5)), "the whole queue is full");
        drop(a);
        assert_eq!(shares.pending(), 2);
        assert!(shares.take("a", "h").is_ok(), "room again once its deliveries are done");
        drop(b);
        let state = shares.state();
        assert_eq!((state.pending, state.clients.len(), state.lanes.len()), (0, 0, 0), "entries are dropped");
    }

    #[tokio::test]
    async fn a_busy_lane_or_client_holds_no_global_slot() {
        let shares = Shares::new(Limits { client_queue: 10, ..limits() });
        let first = shares.take("a", "slow").unwrap();
        let second = shares.take("a", "slow").unwrap();
        let _held = first.slots().await.unwrap();
        // The lane has one slot: the second waits, holding nothing else.
        let waiting = tokio::spawn(async move { second.slots().await.map(|_| ()) });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        assert_eq!(shares.global.available_permits(), 3);
        // Client a has two slots: a second host gets the other, a third waits.
        let other = shares.take("a", "other").unwrap();
        let _other_held = other.slots().await.unwrap();
        let third = shares.take("a", "third").unwrap();
        let blocked = tokio::spawn(async move { third.slots().await.map(|_| ()) });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!blocked.is_finished());
        assert_eq!(shares.global.available_permits(), 2, "two for client b and others");
        let b = shares.take("b", "slow").unwrap();
        assert!(b.slots().await.is_some(), "client b is not held up by a's lane or a's share");
        waiting.abort();
        blocked.abort();
    }
}
