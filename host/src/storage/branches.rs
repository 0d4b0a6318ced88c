//! Results of a fan-out's branches, kept apart from the job record so that
//! branches answering at once never conflict on it.

use std::collections::HashMap;

use async_trait::async_trait;
use uuid::Uuid;

use super::StorageResult;

/// How long a closed fan-out refuses late results. A late copy has read the
/// job while it still waited, so it arrives within one request's time; the
/// margin is wide because the cost is one small entry per fan-out.
pub const CLOSED_FAN_OUT_SECS: u64 = 300;

/// What recording one parallel branch's result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchRecord {
    /// The branch already had a result; nothing changed.
    Duplicate,
    /// Recorded; `answered` branches of the fan-out have a result now,
    /// this one included. Exactly one caller sees the count reach the
    /// number of branches.
    Recorded { answered: usize },
    /// The fan-out was closed (joined, failed or cancelled); nothing changed.
    Closed,
}

#[async_trait]
pub trait BranchResults: Send + Sync {
    /// Records `result` (JSON) for branch `task_id` of fan-out `wait_id`
    /// unless that branch has one already.
    async fn record_branch_result(&self, wait_id: Uuid, task_id: Uuid, result: &str) -> StorageResult<BranchRecord>;

    /// Every result recorded for fan-out `wait_id`: task id → JSON.
    async fn branch_results(&self, wait_id: Uuid) -> StorageResult<HashMap<Uuid, String>>;

    /// Forgets fan-out `wait_id`'s results (its job has moved on) and refuses
    /// any result recorded for it from now on, for at least
    /// [`CLOSED_FAN_OUT_SECS`]: a copy of the last branch's result that read
    /// the job before the join must not start the set again and count twice.
    async fn close_fan_out(&self, wait_id: Uuid) -> StorageResult<()>;
}
