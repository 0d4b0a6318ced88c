//! Progress reports, in a field of the job's own hash: they expire with the
//! job, and a report is one small script call that never touches the record.

use async_trait::async_trait;

use super::{RedisStorage, corrupt, unavailable};
use crate::model::{Job, JobId, Progress};
use crate::storage::record::decode_job;
use crate::storage::{ProgressReports, StorageResult};

/// The job hash's field holding the latest report.
const FIELD: &str = "p";

#[async_trait]
impl ProgressReports for RedisStorage {
    async fn record_progress(&self, id: JobId, report: &Progress) -> StorageResult<bool> {
        let json = serde_json::to_string(report).map_err(corrupt)?;
        let stored: i64 = self
            .scripts
            .record_progress
            .key(self.keys.job(id))
            .arg(FIELD)
            .arg(json)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(stored == 1)
    }

    async fn progress_of(&self, ids: &[JobId]) -> StorageResult<Vec<Option<Progress>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.keys.job(*id), FIELD);
        }
        let reports: Vec<Option<String>> = pipe.query_async(&mut self.conn()).await.map_err(unavailable)?;
        // A report that does not read is dropped, not an error: it only decorates the job.
        Ok(reports.into_iter().map(|r| r.and_then(|json| serde_json::from_str(&json).ok())).collect())
    }

    async fn job_with_progress(&self, id: JobId) -> StorageResult<Option<(Job, Option<Progress>)>> {
        let (record, report): (Option<Vec<u8>>, Option<String>) = redis::cmd("HMGET")
            .arg(self.keys.job(id))
            .arg("d")
            .arg(FIELD)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Some(record) = record else { return Ok(None) };
        let report = report.and_then(|json| serde_json::from_str(&json).ok());
        Ok(Some((decode_job(id, &record)?, report)))
    }
}
