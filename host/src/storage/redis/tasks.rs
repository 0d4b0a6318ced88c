//! Per-worker task queues: a sorted set per worker whose members are the
//! task entries described here, popped by long-polls.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::notify::WAKE_SAFETY_NET;
use super::{RedisStorage, corrupt, unavailable};
use crate::model::TaskPayload;
use crate::storage::{StorageResult, TaskQueues};

/// Digits of the sequence number that starts every task entry.
const SEQ_DIGITS: usize = 20;

// A task entry is a member of its worker's sorted set (`Keys::tasks`): a
// zero-padded sequence number of SEQ_DIGITS digits, which `update_job.lua`
// writes from `Keys::task_seq` so that equal scores pop in the order pushed,
// followed by the task's JSON from `encode_payload`. `withdraw_task.lua` and
// `purge_workers.lua` read the same layout.

/// The entry's score: minus the priority, so the highest pops first.
pub(super) fn entry_score(task: &TaskPayload) -> i64 {
    -i64::from(task.priority)
}

/// The JSON part of the entry. Its first `"task_id"` is the task's own
/// (serde writes fields in declaration order, before the params), which the
/// scripts rely on to find a task without decoding it.
pub(super) fn encode_payload(task: &TaskPayload) -> StorageResult<Vec<u8>> {
    serde_json::to_vec(task).map_err(|e| corrupt(format!("task {}: {e}", task.task_id)))
}

fn decode_entry(member: &[u8]) -> StorageResult<TaskPayload> {
    let payload = member.get(SEQ_DIGITS..).ok_or_else(|| corrupt("task entry too short"))?;
    serde_json::from_slice(payload).map_err(|e| corrupt(format!("task entry: {e}")))
}

#[async_trait]
impl TaskQueues for RedisStorage {
    async fn pop_task_until(
        &self,
        worker_id: &str,
        timeout: Duration,
        stop: &CancellationToken,
    ) -> StorageResult<Option<TaskPayload>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let notify = self.waiters.for_worker(worker_id);
        let key = self.keys.tasks(worker_id);
        let result = loop {
            // Register interest before looking, so a push between the look
            // and the wait still wakes this poll.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let popped: Vec<(Vec<u8>, f64)> = match self.conn().zpopmin(&key, 1).await {
                Ok(popped) => popped,
                Err(e) => break Err(unavailable(e)),
            };
            if let Some((member, _)) = popped.into_iter().next() {
                break decode_entry(&member).map(Some);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break Ok(None);
            }
            let wait = (deadline - now).min(WAKE_SAFETY_NET);
            tokio::select! {
                _ = tokio::time::timeout(wait, notified) => {}
                () = stop.cancelled() => break Ok(None),
            }
        };
        self.waiters.release(worker_id, notify);
        result
    }

    async fn withdraw_task(&self, worker_id: &str, task_id: Uuid) -> StorageResult<bool> {
        let withdrawn: i64 = self
            .scripts
            .withdraw_task
            .key(self.keys.tasks(worker_id))
            .key(self.keys.worker(worker_id))
            .arg(task_id.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(withdrawn == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `withdraw_task.lua` takes a queued task's first `"task_id"` for its
    /// own: serde writes the fields in declaration order, before the params.
    #[test]
    fn a_task_entry_names_its_own_id_first() {
        let own = Uuid::new_v4();
        let task = TaskPayload {
            job_id: Uuid::new_v4(),
            task_id: own,
            task_type: "greet".into(),
            params: serde_json::json!({"task_id": Uuid::new_v4().to_string()}),
            priority: 0,
            tracing_context: serde_json::Map::new(),
        };
        let json = String::from_utf8(encode_payload(&task).unwrap()).unwrap();
        let at = json.find("\"task_id\":\"").unwrap();
        assert_eq!(json.get(at + 11..at + 47), Some(own.to_string().as_str()));
    }

    #[test]
    fn a_task_entry_decodes_after_its_sequence_number() {
        let task = TaskPayload {
            job_id: Uuid::new_v4(),
            task_id: Uuid::new_v4(),
            task_type: "greet".into(),
            params: serde_json::json!({"name": "Ada"}),
            priority: 3,
            tracing_context: serde_json::Map::new(),
        };
        let mut member = format!("{:0width$}", 42, width = SEQ_DIGITS).into_bytes();
        member.extend(encode_payload(&task).unwrap());
        let decoded = decode_entry(&member).unwrap();
        assert_eq!(entry_score(&task), -3);
        assert_eq!((decoded.task_id, decoded.priority, decoded.params), (task.task_id, 3, task.params));
        assert!(decode_entry(b"0001").is_err());
    }
}
