//! The store data of a blueprint instance and the limits its calls run under.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::files::TaskFiles;
use crate::storage::DataStores;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

/// The data of an instance's store: one field per granted capability, plus
/// the WASI context the guest's standard library links against. A pooled
/// instance serves many calls; [`Sandbox::begin_call`] resets what is per call.
pub struct Sandbox {
    /// Name of the blueprint being called (for logs).
    pub blueprint: Arc<str>,
    /// The job the current call runs for; unset during `describe`.
    pub job_id: Option<String>,
    /// The name of the client whose job the current call runs for (the key
    /// of its client-scoped data stores); unset during `describe`.
    pub client: Option<String>,
    pub limits: MemoryLimit,
    /// Where the blueprint's data stores live; unset during `describe` and in
    /// runtimes without storage (stores then answer `unavailable`).
    pub stores: Option<Arc<dyn DataStores>>,
    /// The job's files in S3; unset without S3 (calls answer `disabled`).
    pub files: Option<TaskFiles>,
    /// Time the call spent waiting on the host's I/O (S3), which is not
    /// charged to its CPU budget.
    pub host_wait: Duration,
    /// When the current call started: its CPU budget counts from here.
    pub call_started: Instant,
    /// The most the current call may take, S3 waits included
    /// (`PLUGIN_WALL_TIMEOUT_MS`).
    pub wall_limit: Duration,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl Sandbox {
    pub fn new(blueprint: Arc<str>, job_id: Option<String>, memory_bytes: usize) -> Self {
        // No preopened directories, environment, arguments or network (the
        // builder's defaults); stdio goes nowhere; clocks are frozen so a
        // handler's answer depends only on its input.
        let wasi = WasiCtx::builder().wall_clock(FrozenClock).monotonic_clock(FrozenClock).build();
        Self {
            blueprint,
            job_id,
            client: None,
            limits: MemoryLimit::new(memory_bytes),
            stores: None,
            files: None,
            host_wait: Duration::ZERO,
            call_started: Instant::now(),
            wall_limit: Duration::MAX,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// Readies the store for a call for `job_id` of `client`: a fresh CPU
    /// budget, no S3 wait carried over from an earlier call.
    pub fn begin_call(&mut self, job_id: String, client: String) {
        self.job_id = Some(job_id);
        self.client = Some(client);
        self.host_wait = Duration::ZERO;
        self.call_started = Instant::now();
    }

    /// Linear memory the instance has grown to (all its memories together).
    pub fn memory_bytes(&self) -> usize {
        self.limits.peak_bytes
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A clock that always reads zero: blueprints get no real time unless a
/// capability grants it.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// The error a call fails with when it outgrows its memory limit.
#[derive(Debug, thiserror::Error)]
#[error("plugin exceeded its memory limit of {} MiB", .limit_bytes >> 20)]
pub struct MemoryLimitExceeded {
    pub limit_bytes: usize,
}

/// The error a call fails with when it runs past its wall-clock limit.
#[derive(Debug, thiserror::Error)]
#[error("plugin exceeded its wall-clock limit of {} ms", .limit.as_millis())]
pub struct WallClockExceeded {
    pub limit: Duration,
}

/// The error a call fails with when it runs past its CPU deadline.
#[derive(Debug, thiserror::Error)]
#[error("plugin exceeded its CPU time limit of {} ms", .limit.as_millis())]
pub struct DeadlineExceeded {
    pub limit: Duration,
}

/// Caps linear memory growth, trapping (rather than failing `memory.grow`)
/// so the cause reaches the job's error message instead of a guest abort.
///
/// The limit is on the instance, not on each memory: a component may define
/// several memories (one per core module), and each growth is checked
/// against the sum of all of them, or k memories would get k times the limit.
pub struct MemoryLimit {
    limit_bytes: usize,
    /// What every memory of the instance has been allowed to grow to, together.
    total_bytes: usize,
    /// The largest total so far; the instance pool recycles instances that
    /// grew too much.
    peak_bytes: usize,
}

impl MemoryLimit {
    fn new(limit_bytes: usize) -> Self {
        Self { limit_bytes, total_bytes: 0, peak_bytes: 0 }
    }
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool> {
        // `current` is what this memory already counts for in the total (0
        // when it is being created).
        let total = self.total_bytes.saturating_sub(current).saturating_add(desired);
        if total > self.limit_bytes {
            return Err(MemoryLimitExceeded { limit_bytes: self.limit_bytes }.into());
        }
        self.total_bytes = total;
        self.peak_bytes = self.peak_bytes.max(total);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool> {
        // Tables hold function references; a blueprint has no business with
        // more than a few thousand.
        Ok(desired <= 100_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_memory_limit_is_on_all_memories_together() {
        let mut limit = MemoryLimit::new(10 * MIB);
        assert!(limit.memory_growing(0, 6 * MIB, None).unwrap());
        // A second memory of the same instance: alone it fits, together not.
        let refused = limit.memory_growing(0, 6 * MIB, None).unwrap_err();
        assert!(refused.downcast_ref::<MemoryLimitExceeded>().is_some(), "{refused}");
        assert!(limit.memory_growing(0, 4 * MIB, None).unwrap());
        // Growing the first memory counts only what it adds.
        assert!(limit.memory_growing(6 * MIB, 6 * MIB, None).unwrap());
        assert!(limit.memory_growing(6 * MIB, 7 * MIB, None).is_err());
        assert_eq!(limit.peak_bytes, 10 * MIB);
    }
}
