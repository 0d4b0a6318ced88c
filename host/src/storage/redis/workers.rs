//! The worker registry: records with a revision for conflict-free
//! heartbeats, a liveness index scored by expiry, per-task-type indexes, and
//! worker token digests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::notify::TokenCache;
use super::{RedisStorage, corrupt, unavailable};
use crate::auth::TokenHash;
use crate::auth::access::AccessKey;
use crate::model::{WorkerInfo, WorkerPatch};
use crate::storage::record::lock;
use crate::storage::{
    PurgedWorker, REPUTATION_WINDOW, StorageError, StorageResult, WorkerRegistry, random_access_key, reputation,
};

/// Read-patch-write rounds a heartbeat tries when its worker keeps changing.
const MAX_WORKER_CONFLICTS: usize = 32;

fn worker_record(info: &WorkerInfo) -> StorageResult<String> {
    serde_json::to_string(info).map_err(|e| corrupt(format!("worker {}: {e}", info.worker_id)))
}

fn hex(hash: &TokenHash) -> String {
    ::hex::encode(hash)
}

fn unhex(text: &str) -> Option<TokenHash> {
    let mut out = [0u8; 32];
    ::hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[async_trait]
impl WorkerRegistry for RedisStorage {
    async fn register_worker(&self, worker: WorkerInfo, ttl: Duration) -> StorageResult<()> {
        self.store_worker(&worker, ttl, "register", "").await?;
        Ok(())
    }

    async fn refresh_worker(
        &self,
        worker_id: &str,
        patch: Option<WorkerPatch>,
        ttl: Duration,
    ) -> StorageResult<Option<WorkerInfo>> {
        let ttl_ms = ttl.as_millis() as u64;
        let Some(patch) = patch else {
            let live: i64 = self
                .scripts
                .ping_worker
                .key(self.keys.worker(worker_id))
                .key(self.keys.live())
                .arg(worker_id)
                .arg(ttl_ms)
                .arg(self.keys.task_type_prefix())
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            if live == 0 {
                return Ok(None);
            }
            return self.worker_info(worker_id).await;
        };
        // Read, patch, write back unless the record changed meanwhile (a
        // concurrent heartbeat or re-registration); then read again.
        for _ in 0..MAX_WORKER_CONFLICTS {
            let Some((mut worker, rev)) = self.worker_record_rev(worker_id).await? else { return Ok(None) };
            worker.apply(patch.clone());
            match self.store_worker(&worker, ttl, "refresh", &rev).await? {
                -2 => continue,
                n if n < 0 => return Ok(None),
                in_flight => {
                    worker.in_flight = u32::try_from(in_flight).unwrap_or(0);
                    return Ok(Some(worker));
                }
            }
        }
        Err(StorageError::Unavailable(format!("worker {worker_id} kept changing during a heartbeat; try again")))
    }

    async fn live_workers(&self) -> StorageResult<Vec<WorkerInfo>> {
        let flat: Vec<String> = self
            .scripts
            .live_workers
            .key(self.keys.live())
            .arg(self.keys.worker_prefix())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        decode_workers(&flat)
    }

    async fn workers_for(&self, task_type: &str) -> StorageResult<Vec<WorkerInfo>> {
        let flat: Vec<String> = self
            .scripts
            .candidates
            .key(self.keys.task_type(task_type))
            .key(self.keys.live())
            .arg(self.keys.worker_prefix())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut found = Vec::with_capacity(flat.len() / 4);
        let mut missing = Vec::new();
        for entry in flat.chunks(4) {
            let [id, rev, in_flight, outcomes] = entry else { continue };
            let cached = self.records.get(id, rev);
            if cached.is_none() {
                missing.push(id.as_str());
            }
            found.push((id, cached, in_flight.parse().unwrap_or(0), outcomes));
        }
        if !missing.is_empty() {
            self.fetch_records(&missing).await?;
        }
        let mut workers = Vec::with_capacity(found.len());
        for (id, cached, in_flight, outcomes) in found {
            // A record gone since the script ran belongs to a worker that
            // just expired or was purged: not a candidate any more.
            let Some(record) = cached.or_else(|| self.records.get_any(id)) else { continue };
            let mut info = WorkerInfo::clone(&record);
            info.in_flight = in_flight;
            info.reputation = reputation(outcomes.bytes().map(|b| b == b'1'));
            workers.push(info);
        }
        Ok(workers)
    }

    async fn record_outcome(&self, worker_id: &str, succeeded: bool) -> StorageResult<()> {
        let _: i64 = self
            .scripts
            .record_outcome
            .key(self.keys.worker(worker_id))
            .arg(if succeeded { "1" } else { "0" })
            .arg(REPUTATION_WINDOW)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn is_worker_live(&self, worker_id: &str) -> StorageResult<bool> {
        Ok(self.worker_census(worker_id).await?.0)
    }

    async fn live_worker_count(&self) -> StorageResult<usize> {
        Ok(self.worker_census("").await?.1)
    }

    async fn purge_expired_workers(&self) -> StorageResult<Vec<PurgedWorker>> {
        let flat: Vec<String> = self
            .scripts
            .purge_workers
            .key(self.keys.live())
            .arg(self.keys.worker_prefix())
            .arg(self.keys.task_type_prefix())
            .arg(self.keys.tasks(""))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        // worker id, n, then n (job id, task id) pairs; per purged worker.
        let mut purged = Vec::new();
        let mut rest = flat.into_iter();
        while let Some(worker_id) = rest.next() {
            let count: usize =
                rest.next().and_then(|n| n.parse().ok()).ok_or_else(|| corrupt("purge_workers: bad reply"))?;
            let mut dropped = Vec::with_capacity(count);
            for _ in 0..count {
                let (Some(job), Some(task)) = (rest.next(), rest.next()) else {
                    return Err(corrupt("purge_workers: short reply"));
                };
                match (job.parse(), task.parse()) {
                    (Ok(job_id), Ok(task_id)) => dropped.push((job_id, task_id)),
                    _ => tracing::warn!(worker_id, job, task, "dropped task entry without readable ids"),
                }
            }
            purged.push(PurgedWorker { worker_id, dropped });
        }
        Ok(purged)
    }

    async fn add_in_flight(&self, worker_id: &str, delta: i32) -> StorageResult<()> {
        let _: i64 = self
            .scripts
            .add_in_flight
            .key(self.keys.worker(worker_id))
            .arg(delta)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn replace_worker_tokens(&self, tokens: HashMap<String, TokenHash>) -> StorageResult<()> {
        let mut call = self.scripts.replace_tokens.key(self.keys.tokens_by_id());
        call.key(self.keys.tokens_by_hash());
        for (worker_id, hash) in &tokens {
            call.arg(worker_id).arg(hex(hash));
        }
        let _: i64 = call.invoke_async(&mut self.conn()).await.map_err(unavailable)?;
        self.tokens.clear();
        let _: i64 = self.conn().publish(self.keys.tokens_changed(), "reloaded").await.map_err(unavailable)?;
        Ok(())
    }

    async fn worker_token(&self, worker_id: &str) -> StorageResult<Option<TokenHash>> {
        if let Some(cached) = TokenCache::get(&self.tokens.by_id, &worker_id.to_owned()) {
            return Ok(cached);
        }
        let hash: Option<String> = self.conn().hget(self.keys.tokens_by_id(), worker_id).await.map_err(unavailable)?;
        let hash = hash.as_deref().and_then(unhex);
        TokenCache::put(&self.tokens.by_id, worker_id.to_owned(), hash);
        Ok(hash)
    }

    async fn worker_for_token(&self, hash: &TokenHash) -> StorageResult<Option<String>> {
        if let Some(cached) = TokenCache::get(&self.tokens.by_hash, hash) {
            return Ok(cached);
        }
        let worker: Option<String> =
            self.conn().hget(self.keys.tokens_by_hash(), hex(hash)).await.map_err(unavailable)?;
        TokenCache::put(&self.tokens.by_hash, *hash, worker.clone());
        Ok(worker)
    }

    async fn access_key(&self) -> StorageResult<AccessKey> {
        if let Some(key) = self.tokens.access_key() {
            return Ok(key);
        }
        // The first instance to ask makes it; the others read that one.
        let fresh = hex(&random_access_key());
        let _: Option<String> = redis::cmd("SET")
            .arg(self.keys.access_key())
            .arg(&fresh)
            .arg("NX")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let stored: Option<String> = self.conn().get(self.keys.access_key()).await.map_err(unavailable)?;
        let key = stored.as_deref().and_then(unhex).ok_or_else(|| corrupt("the access token key"))?;
        self.tokens.keep_access_key(key);
        Ok(key)
    }

    async fn rotate_access_key(&self) -> StorageResult<()> {
        let _: () = self.conn().set(self.keys.access_key(), hex(&random_access_key())).await.map_err(unavailable)?;
        self.tokens.clear();
        let _: i64 = self.conn().publish(self.keys.tokens_changed(), "rotated").await.map_err(unavailable)?;
        Ok(())
    }
}

impl RedisStorage {
    /// Whether `worker_id` is live and how many workers are, in one script
    /// on Redis' clock (both are O(log n) on the liveness index).
    pub(super) async fn worker_census(&self, worker_id: &str) -> StorageResult<(bool, usize)> {
        let (live, count): (i64, u64) = self
            .scripts
            .worker_census
            .key(self.keys.live())
            .arg(worker_id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((live == 1, usize::try_from(count).unwrap_or(usize::MAX)))
    }

    /// Runs `store_worker.lua` in `mode` (`register` or `refresh`); returns the
    /// worker's in-flight count, or -1 when a refresh found it gone.
    pub(super) async fn store_worker(
        &self,
        worker: &WorkerInfo,
        ttl: Duration,
        mode: &str,
        rev: &str,
    ) -> StorageResult<i64> {
        let mut call = self.scripts.store_worker.key(self.keys.worker(&worker.worker_id));
        call.key(self.keys.live())
            .arg(&worker.worker_id)
            .arg(worker_record(worker)?)
            .arg(worker.status.as_str())
            .arg(ttl.as_millis() as u64)
            .arg(self.keys.task_type_prefix())
            .arg(mode)
            .arg(rev);
        for task in &worker.supported_tasks {
            call.arg(task);
        }
        call.invoke_async(&mut self.conn()).await.map_err(unavailable)
    }

    async fn worker_info(&self, worker_id: &str) -> StorageResult<Option<WorkerInfo>> {
        Ok(self.worker_record_rev(worker_id).await?.map(|(info, _)| info))
    }

    /// A worker's record with its in-flight count, and the record's revision.
    async fn worker_record_rev(&self, worker_id: &str) -> StorageResult<Option<(WorkerInfo, String)>> {
        let (record, in_flight, rev, outcomes): (Option<String>, Option<u32>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(self.keys.worker(worker_id))
                .arg("info")
                .arg("in_flight")
                .arg("rev")
                .arg("outcomes")
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
        let Some(record) = record else { return Ok(None) };
        let info = decode_worker(&record, in_flight.unwrap_or(0), outcomes.as_deref().unwrap_or(""))?;
        Ok(Some((info, rev.unwrap_or_else(|| "0".to_owned()))))
    }
}

/// Decoded worker records by revision, so a dispatch decodes only the
/// records that changed since it last looked (a heartbeat or registration
/// bumps the revision). Bounded by the workers that exist; past
/// [`MAX_CACHED_RECORDS`] it starts afresh.
#[derive(Default)]
pub(super) struct RecordCache {
    by_id: Mutex<HashMap<String, (String, Arc<WorkerInfo>)>>,
}

/// Worker records kept decoded at most.
const MAX_CACHED_RECORDS: usize = 100_000;

impl RecordCache {
    fn get(&self, worker_id: &str, rev: &str) -> Option<Arc<WorkerInfo>> {
        lock(&self.by_id).get(worker_id).filter(|(cached, _)| cached == rev).map(|(_, info)| info.clone())
    }

    /// Whatever revision is kept (just fetched, possibly newer than asked).
    fn get_any(&self, worker_id: &str) -> Option<Arc<WorkerInfo>> {
        lock(&self.by_id).get(worker_id).map(|(_, info)| info.clone())
    }

    fn put(&self, worker_id: &str, rev: String, info: WorkerInfo) {
        let mut map = lock(&self.by_id);
        if map.len() >= MAX_CACHED_RECORDS {
            map.clear();
        }
        map.insert(worker_id.to_owned(), (rev, Arc::new(info)));
    }
}

impl RedisStorage {
    /// Reads and decodes the records of `worker_ids` into the record cache,
    /// in one round trip.
    async fn fetch_records(&self, worker_ids: &[&str]) -> StorageResult<()> {
        let mut pipe = redis::pipe();
        for id in worker_ids {
            pipe.cmd("HMGET").arg(self.keys.worker(id)).arg("info").arg("rev");
        }
        let rows: Vec<(Option<String>, Option<String>)> =
            pipe.query_async(&mut self.conn()).await.map_err(unavailable)?;
        for (id, (record, rev)) in worker_ids.iter().zip(rows) {
            if let (Some(record), Some(rev)) = (record, rev) {
                self.records.put(id, rev, parse_record(&record)?);
            }
        }
        Ok(())
    }
}

/// A worker as the scripts return it: its record, with the in-flight count
/// and the outcome window kept beside it in its hash.
fn decode_worker(record: &str, in_flight: u32, outcomes: &str) -> StorageResult<WorkerInfo> {
    let mut info = parse_record(record)?;
    info.in_flight = in_flight;
    info.reputation = reputation(outcomes.bytes().map(|b| b == b'1'));
    Ok(info)
}

/// A worker's stored record (`info`), without what its hash keeps beside it.
fn parse_record(record: &str) -> StorageResult<WorkerInfo> {
    serde_json::from_str(record).map_err(|e| corrupt(format!("worker record: {e}")))
}

/// Workers flattened as record, in-flight count, outcomes.
fn decode_workers(flat: &[String]) -> StorageResult<Vec<WorkerInfo>> {
    flat.chunks(3)
        .filter_map(|c| match c {
            [record, in_flight, outcomes] => Some(decode_worker(record, in_flight.parse().unwrap_or(0), outcomes)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_digests_survive_hex() {
        let hash = crate::auth::hash("token");
        assert_eq!(unhex(&hex(&hash)), Some(hash));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }
}
