//! Live instances of one blueprint version, kept between handler calls.
//!
//! Instantiating a component copies in its initial heap: cheap for a Rust
//! blueprint, but a call on a fresh JavaScript or Python instance, whose
//! interpreter comes with it, costs 1.2–3.2 ms against ~0.1 ms on a live one
//! (BENCHMARKS.md (g)). So calls borrow an instance from a small pool and give
//! it back when they succeed.
//!
//! An instance is never given back after a trap, a CPU deadline or a memory
//! failure (its state may be half-written), after `PLUGIN_POOL_MAX_CALLS`
//! calls (slow leaks in a guest's runtime), or once its memory has grown by
//! more than a quarter of `PLUGIN_MEMORY_LIMIT_MB` since it was created (a
//! handler caching per-job data). The price is that module-level state of a
//! guest outlives a call; a blueprint that must not share anything between
//! jobs is named in `PLUGIN_FRESH_INSTANCE_BLUEPRINTS` and gets a fresh
//! instance for every call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::Store;

use super::compat::Handler;
use super::sandbox::Sandbox;

/// An instance and the store it lives in.
pub struct Live {
    pub store: Store<Sandbox>,
    pub instance: Handler,
    calls: u32,
    /// Memory size right after instantiation, the base growth is measured from.
    base_memory: usize,
}

impl Live {
    pub fn new(store: Store<Sandbox>, instance: Handler) -> Self {
        let base_memory = store.data().memory_bytes();
        Self { store, instance, calls: 0, base_memory }
    }

    /// Readies the instance for a call for `job_id` of `client`.
    pub fn begin_call(&mut self, job_id: String, client: String) {
        self.calls = self.calls.saturating_add(1);
        self.store.data_mut().begin_call(job_id, client);
        // The epoch callback runs once per tick from here on; each call
        // starts with a full tick.
        self.store.set_epoch_deadline(1);
    }

    fn grown_bytes(&self) -> usize {
        self.store.data().memory_bytes().saturating_sub(self.base_memory)
    }
}

/// How many idle instances all blueprints together may keep. Each holds a
/// slot of the engine's pooling allocator, which is sized for this many on
/// top of the calls that may run at once.
pub struct IdleBudget {
    capacity: usize,
    used: AtomicUsize,
}

impl IdleBudget {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self { capacity, used: AtomicUsize::new(0) })
    }

    fn reserve(&self) -> bool {
        self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.capacity).then_some(n + 1)).is_ok()
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The idle instances of one blueprint version.
pub struct Instances {
    idle: Mutex<Vec<Live>>,
    /// Idle instances kept; 0: every call gets a fresh instance.
    keep: usize,
    max_calls: u32,
    max_growth: usize,
    budget: Arc<IdleBudget>,
}

impl Instances {
    pub fn new(keep: usize, max_calls: u32, memory_limit: usize, budget: Arc<IdleBudget>) -> Self {
        Self { idle: Mutex::new(Vec::with_capacity(keep)), keep, max_calls, max_growth: memory_limit / 4, budget }
    }

    /// Whether calls share live instances (or each gets a fresh one).
    pub fn pooled(&self) -> bool {
        self.keep > 0
    }

    /// An idle instance, if one is waiting.
    pub fn take(&self) -> Option<Live> {
        if !self.pooled() {
            return None;
        }
        let live = self.lock().pop()?;
        self.budget.release(1);
        Some(live)
    }

    /// Keeps `live` for a later call, unless it is worn out or the pool is full.
    pub fn give_back(&self, live: Live) {
        if !self.pooled() || live.calls >= self.max_calls || live.grown_bytes() > self.max_growth {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < self.keep && self.budget.reserve() {
            idle.push(live);
        }
        // Otherwise `live` drops here, after the lock: dropping a store
        // returns its slot to the allocator, which takes a while.
    }

    /// Idle instances right now (for tests and metrics).
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Live>> {
        // A panic while holding the lock leaves a valid Vec behind.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Instances {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.budget.release(idle.len());
    }
}

#[cfg(test)]
mod tests {
    use super::IdleBudget;

    #[test]
    fn the_idle_budget_caps_instances_across_pools_and_refills_as_they_leave() {
        let budget = IdleBudget::new(2);
        assert!(budget.reserve() && budget.reserve());
        assert!(!budget.reserve(), "a third idle instance is over the budget");
        budget.release(1);
        assert!(budget.reserve(), "a slot freed by a taken instance is reusable");
        assert!(!budget.reserve());
        budget.release(2);
        assert!(budget.reserve() && budget.reserve() && !budget.reserve());
    }
}
