//! Workers' progress reports, kept beside each job's record: a report is
//! one small write and never a rewrite of the job, and it goes when the job
//! goes.

use async_trait::async_trait;

use super::StorageResult;
use crate::model::{Job, JobId, Progress};

#[async_trait]
pub trait ProgressReports: Send + Sync {
    /// Keeps `report` as job `id`'s latest; `false` (and nothing kept) when
    /// the job does not exist.
    async fn record_progress(&self, id: JobId, report: &Progress) -> StorageResult<bool>;

    /// The latest report of each job in `ids`, in order.
    async fn progress_of(&self, ids: &[JobId]) -> StorageResult<Vec<Option<Progress>>>;

    /// Job `id` with its latest report, read together: a client's status
    /// poll is one storage round trip.
    async fn job_with_progress(&self, id: JobId) -> StorageResult<Option<(Job, Option<Progress>)>>;
}
