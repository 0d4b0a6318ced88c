//! Client quotas, schedule slots and locks.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::{RedisStorage, unavailable};
use crate::storage::{Coordination, StorageResult};

/// Quota counters outlive their month by a few days, then go.
const QUOTA_TTL_SECS: u64 = 40 * 86_400;

#[async_trait]
impl Coordination for RedisStorage {
    async fn take_quota(&self, client: &str, period: &str, limit: u64) -> StorageResult<bool> {
        let taken: i64 = self
            .scripts
            .take_quota
            .key(self.keys.quota(client))
            .arg(period)
            .arg(limit)
            .arg(QUOTA_TTL_SECS)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(taken == 1)
    }

    async fn claim_slot(&self, schedule: &str, slot: i64, ttl: Duration) -> StorageResult<bool> {
        let claimed: Option<String> = redis::cmd("SET")
            .arg(self.keys.slot(schedule, slot))
            .arg(&self.consumer)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(claimed.is_some())
    }

    async fn try_lock(&self, name: &str, owner: &str, ttl: Duration) -> StorageResult<bool> {
        let key = self.keys.lock(name);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let taken: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if taken.is_some() {
            return Ok(true);
        }
        // Held already: renew it if it is ours.
        let renewed: i64 = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
        )
        .key(&key)
        .arg(owner)
        .arg(ttl_ms)
        .invoke_async(&mut self.conn())
        .await
        .map_err(unavailable)?;
        Ok(renewed == 1)
    }

    async fn next_turn(&self, name: &str) -> StorageResult<u64> {
        let turn: u64 = self.conn().incr(self.keys.turn(name), 1).await.map_err(unavailable)?;
        // INCR counts from 1; turns count from 0.
        Ok(turn.wrapping_sub(1))
    }

    async fn release_lock(&self, name: &str, owner: &str) -> StorageResult<bool> {
        let released: i64 = self
            .scripts
            .release_lock
            .key(self.keys.lock(name))
            .arg(owner)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(released == 1)
    }
}
