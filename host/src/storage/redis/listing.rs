//! Listings read from the status and client indexes.

use async_trait::async_trait;

use super::{RedisStorage, corrupt, unavailable};
use crate::model::{Job, JobId, JobStatus};
use crate::storage::record::decode_job;
use crate::storage::{JobCounts, Listings, StorageResult};

#[async_trait]
impl Listings for RedisStorage {
    async fn client_jobs(&self, client: &str, limit: usize, offset: usize) -> StorageResult<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let encoded: Vec<Vec<u8>> = self
            .scripts
            .list_jobs
            .key(self.keys.client_jobs(client))
            .arg(self.keys.job_prefix())
            .arg(offset)
            .arg(limit)
            .arg("jobs")
            .arg("")
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        encoded.iter().map(|bytes| decode_job(format_args!("of {client}"), bytes)).collect()
    }

    async fn jobs_with_status(&self, status: JobStatus, limit: usize, offset: usize) -> StorageResult<Vec<JobId>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let cutoff = if status.is_terminal() { self.ended_cutoff().to_string() } else { String::new() };
        let ids: Vec<String> = self
            .scripts
            .list_jobs
            .key(self.keys.status(status))
            .arg(self.keys.job_prefix())
            .arg(offset)
            .arg(limit)
            .arg("ids")
            .arg(cutoff)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        ids.iter().map(|id| id.parse().map_err(|e| corrupt(format!("{status} index entry {id}: {e}")))).collect()
    }

    async fn job_counts(&self) -> StorageResult<JobCounts> {
        // Acknowledged entries are deleted from the stream; send the held-back
        // acknowledgements first so that the stream holds exactly the jobs
        // queued or in progress.
        self.flush_acks().await?;
        let cutoff = self.ended_cutoff();
        let mut pipe = redis::pipe();
        for status in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            pipe.cmd("ZREMRANGEBYSCORE").arg(self.keys.status(status)).arg("-inf").arg(format!("({cutoff}")).ignore();
        }
        for status in JobStatus::ALL {
            pipe.zcard(self.keys.status(status));
        }
        pipe.xlen(self.keys.jobs());
        let mut counts: Vec<u64> = pipe.query_async(&mut self.conn()).await.map_err(unavailable)?;
        let queued = counts.pop().ok_or_else(|| corrupt("job counts: short reply"))?;
        if counts.len() != JobStatus::ALL.len() {
            return Err(corrupt("job counts: short reply"));
        }
        let by_status = JobStatus::ALL.into_iter().zip(counts).filter(|&(_, n)| n > 0).collect();
        Ok(JobCounts { by_status, queued })
    }
}
