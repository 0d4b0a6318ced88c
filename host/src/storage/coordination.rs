//! What instances agree on through storage: client quotas, schedule slots
//! claimed once, and locks for loops that run on one instance at a time.

use std::time::Duration;

use async_trait::async_trait;

use super::StorageResult;

#[async_trait]
pub trait Coordination: Send + Sync {
    /// Counts one use of `client`'s quota for `period` (e.g. `2026-11`) if
    /// fewer than `limit` were counted; `false` when the quota is used up.
    /// Check and count are one atomic step.
    async fn take_quota(&self, client: &str, period: &str, limit: u64) -> StorageResult<bool>;

    /// Claims slot `slot` (Unix seconds) of schedule `schedule` for `ttl`;
    /// `true` for exactly one caller, however many instances ask.
    async fn claim_slot(&self, schedule: &str, slot: i64, ttl: Duration) -> StorageResult<bool>;

    /// Takes the lock `name` for `owner` for `ttl`, unless another owner holds
    /// it; taking a lock one already holds renews it.
    async fn try_lock(&self, name: &str, owner: &str, ttl: Duration) -> StorageResult<bool>;

    /// Releases `name` if `owner` still holds it.
    async fn release_lock(&self, name: &str, owner: &str) -> StorageResult<bool>;

    /// The next value (from 0) of counter `name`, shared by every instance:
    /// round-robin dispatch takes turns by it.
    async fn next_turn(&self, name: &str) -> StorageResult<u64>;
}
