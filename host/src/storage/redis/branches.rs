//! Fan-out branch results: one hash per fan-out, closed by a tombstone field.

use std::collections::HashMap;

use async_trait::async_trait;
use redis::AsyncCommands;
use uuid::Uuid;

use super::{RedisStorage, corrupt, unavailable};
use crate::storage::{BranchRecord, BranchResults, CLOSED_FAN_OUT_SECS, StorageResult};

/// A fan-out's branch results outlive its last answer by this much, then go
/// (the job moved on without clearing them, or was lost).
const BRANCH_RESULTS_TTL_SECS: u64 = 7 * 86_400;

/// The one field a closed fan-out's result hash keeps (see record_branch.lua).
const CLOSED_FIELD: &str = "closed";

#[async_trait]
impl BranchResults for RedisStorage {
    async fn record_branch_result(&self, wait_id: Uuid, task_id: Uuid, result: &str) -> StorageResult<BranchRecord> {
        let answered: i64 = self
            .scripts
            .record_branch
            .key(self.keys.branches(wait_id))
            .arg(task_id.to_string())
            .arg(result)
            .arg(BRANCH_RESULTS_TTL_SECS)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(match answered {
            -2 => BranchRecord::Closed,
            answered => usize::try_from(answered)
                .map_or(BranchRecord::Duplicate, |answered| BranchRecord::Recorded { answered }),
        })
    }

    async fn branch_results(&self, wait_id: Uuid) -> StorageResult<HashMap<Uuid, String>> {
        let results: HashMap<String, String> =
            self.conn().hgetall(self.keys.branches(wait_id)).await.map_err(unavailable)?;
        results
            .into_iter()
            .filter(|(field, _)| field != CLOSED_FIELD)
            .map(|(task_id, result)| {
                let task_id =
                    task_id.parse().map_err(|e| corrupt(format!("branch result of fan-out {wait_id}: {e}")))?;
                Ok((task_id, result))
            })
            .collect()
    }

    async fn close_fan_out(&self, wait_id: Uuid) -> StorageResult<()> {
        let key = self.keys.branches(wait_id);
        let () = redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset(&key, CLOSED_FIELD, 1)
            .ignore()
            .expire(&key, CLOSED_FAN_OUT_SECS as i64)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
