//! Long-polls held open per worker on this instance. A worker holds a few
//! (the SDK keeps one per task slot); a caller opening thousands for one id
//! would hold as many connections and waiters, so past `WORKER_MAX_POLLS`
//! further polls are refused until one ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The open polls of every worker on this instance.
#[derive(Debug, Default, Clone)]
pub struct PollSlots {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open poll; the slot is given back when it is dropped, however the
/// poll ends (answered, timed out, or the connection closed).
#[derive(Debug)]
pub struct PollSlot {
    slots: PollSlots,
    worker_id: String,
}

impl PollSlots {
    /// A slot for one more poll of `worker_id`, unless it holds `max` already.
    pub fn acquire(&self, worker_id: &str, max: usize) -> Option<PollSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(worker_id.to_owned()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PollSlot { slots: self.clone(), worker_id: worker_id.to_owned() })
    }

    /// Polls open for `worker_id` now.
    pub fn open(&self, worker_id: &str) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).get(worker_id).copied().unwrap_or(0)
    }
}

impl Drop for PollSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.worker_id) {
            *count -= 1;
            // No entry outlives the worker's last poll.
            if *count == 0 {
                open.remove(&self.worker_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_worker_and_given_back() {
        let slots = PollSlots::default();
        let first = slots.acquire("w", 2).unwrap();
        let _second = slots.acquire("w", 2).unwrap();
        assert!(slots.acquire("w", 2).is_none(), "a third poll is refused");
        assert!(slots.acquire("other", 2).is_some(), "limits are per worker");
        drop(first);
        assert_eq!(slots.open("w"), 1);
        assert!(slots.acquire("w", 2).is_some());
        assert_eq!(slots.open("other"), 0, "entries go with the last poll");
        assert!(slots.open.lock().unwrap().len() <= 1);
    }
}
