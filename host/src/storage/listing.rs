//! Read-only views over jobs for the client API and the dashboard.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::StorageResult;
use crate::model::{Job, JobId, JobStatus};

/// Per-status job counts and the executor queue's length, for the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Jobs storage holds, by status (ended jobs until their retention lapses).
    pub by_status: BTreeMap<JobStatus, u64>,
    /// Jobs queued for the executor.
    pub queued: u64,
}

#[async_trait]
pub trait Listings: Send + Sync {
    /// `client`'s jobs, newest first, skipping `offset`, at most `limit`.
    async fn client_jobs(&self, client: &str, limit: usize, offset: usize) -> StorageResult<Vec<Job>>;

    /// Ids of jobs with `status`, most recently updated first.
    async fn jobs_with_status(&self, status: JobStatus, limit: usize, offset: usize) -> StorageResult<Vec<JobId>>;

    /// Per-status counts and the executor queue's length.
    async fn job_counts(&self) -> StorageResult<JobCounts>;
}
