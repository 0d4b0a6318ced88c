//! Job records and their versioned update: one script call that writes the
//! record, keeps the indexes current and applies the follow-up.

use async_trait::async_trait;
use redis::AsyncCommands;

use super::stream::GROUP;
use super::tasks;
use super::{RedisStorage, unavailable};
use crate::model::{Job, JobId};
use crate::storage::record::{Effects, VersionStep, decode_job, encode_job};
use crate::storage::{FollowUp, JobStore, Release, StorageResult};

/// One job ending in this many also drops the index entries of ended jobs
/// whose retention lapsed (see `update`).
const PRUNE_EVERY: u128 = 16;

#[async_trait]
impl JobStore for RedisStorage {
    async fn create_job(&self, job: &Job) -> StorageResult<()> {
        let bytes = encode_job(job)?;
        let _: i64 = self
            .scripts
            .create_job
            .key(self.keys.job(job.id))
            .key(self.keys.jobs())
            .key(self.keys.status(job.status))
            .key(self.keys.client_jobs(&job.client))
            .arg(job.version)
            .arg(bytes)
            .arg(job.id.to_string())
            .arg(job.status.as_str())
            .arg(job.updated_at.timestamp_micros())
            .arg(job.created_at.timestamp_micros())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get_job(&self, id: JobId) -> StorageResult<Option<Job>> {
        let bytes: Option<Vec<u8>> = self.conn().hget(self.keys.job(id), "d").await.map_err(unavailable)?;
        bytes.map(|b| decode_job(id, &b)).transpose()
    }

    async fn update_job(&self, job: &mut Job, follow_up: FollowUp) -> StorageResult<bool> {
        self.update(job, follow_up, None).await
    }

    async fn update_job_releasing(
        &self,
        job: &mut Job,
        follow_up: FollowUp,
        release: Release<'_>,
    ) -> StorageResult<bool> {
        self.update(job, follow_up, Some(release)).await
    }

    async fn overdue_jobs(&self, now: chrono::DateTime<chrono::Utc>, max: usize) -> StorageResult<Vec<JobId>> {
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.watch())
            .arg("-inf")
            .arg(now.timestamp_millis())
            .arg("LIMIT")
            .arg(0)
            .arg(max)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    async fn unwatch(&self, id: JobId) -> StorageResult<()> {
        let _: i64 = self.conn().zrem(self.keys.watch(), id.to_string()).await.map_err(unavailable)?;
        Ok(())
    }
}

/// A follow-up in the shape `update_job.lua` takes it.
struct Dispatch {
    enqueue: bool,
    /// Worker id, score (-priority) and encoded payload per pushed task.
    pushes: Vec<(String, i64, Vec<u8>)>,
    /// Distinct task types to park the job under, first-named first.
    parks: Vec<String>,
}

impl Dispatch {
    fn new(effects: Effects) -> StorageResult<Self> {
        let pushes = effects
            .pushes
            .into_iter()
            .map(|(worker_id, task)| Ok((worker_id, tasks::entry_score(&task), tasks::encode_payload(&task)?)))
            .collect::<StorageResult<_>>()?;
        Ok(Self { enqueue: effects.enqueue, pushes, parks: effects.parks })
    }
}

impl RedisStorage {
    /// One job update script call; `release` names a worker whose in-flight
    /// count drops by one (and whose reputation takes the verdict) in the
    /// same step.
    async fn update(&self, job: &mut Job, follow_up: FollowUp, release: Option<Release<'_>>) -> StorageResult<bool> {
        let step = VersionStep::begin(job);
        let job = step.job();
        let bytes = encode_job(job)?;
        let dispatch = Dispatch::new(follow_up.into())?;
        let ended = job.status.is_terminal();
        let retention_ms = if ended { self.retention.as_millis().max(1) as u64 } else { 0 };
        let score = job.updated_at.timestamp_micros();
        // Ended jobs' index entries are pruned by score when listed or
        // counted; one in every PRUNE_EVERY endings also prunes here, so the
        // index stays bounded where nothing reads it, at a fraction of a
        // command per job.
        let prune = ended && job.id.as_u128().is_multiple_of(PRUNE_EVERY);
        let cutoff = if prune { (score - self.retention_micros()).to_string() } else { String::new() };
        let wake_parent = job.parent_job_id.filter(|_| ended).map_or_else(String::new, |id| id.to_string());

        let mut call = self.scripts.update_job.key(self.keys.job(job.id));
        call.key(self.keys.jobs())
            .key(self.keys.task_seq())
            .key(self.keys.watch())
            .key(self.keys.worker(release.map_or("-", |r| r.worker_id)))
            .key(self.keys.status(job.status));
        for (worker_id, _, _) in &dispatch.pushes {
            call.key(self.keys.tasks(worker_id)).key(self.keys.worker(worker_id));
        }
        for task_type in &dispatch.parks {
            call.key(self.keys.parked(task_type));
        }
        call.arg(step.expected())
            .arg(bytes)
            .arg(retention_ms)
            .arg(job.task_deadline().map_or_else(String::new, |d| d.timestamp_millis().to_string()))
            .arg(job.id.to_string())
            .arg(match release.map(|r| r.verdict) {
                None => "0",
                Some(None) => "1",
                Some(Some(true)) => "1+",
                Some(Some(false)) => "1-",
            })
            .arg(GROUP)
            .arg(if dispatch.enqueue { "1" } else { "0" })
            .arg(job.status.as_str())
            .arg(self.keys.status_prefix())
            .arg(score)
            .arg(cutoff)
            .arg(wake_parent)
            .arg(self.keys.wake())
            .arg(self.keys.ended())
            .arg(self.keys.client_jobs(&job.client))
            .arg(dispatch.pushes.len())
            .arg(dispatch.parks.len());
        for (worker_id, score, payload) in &dispatch.pushes {
            call.arg(score).arg(payload).arg(worker_id);
        }
        let acks = std::mem::take(&mut *self.pending());
        for entry in &acks {
            call.arg(entry);
        }
        let applied: i64 = match call.invoke_async(&mut self.conn()).await {
            Ok(applied) => applied,
            Err(e) => {
                self.pending().extend(acks);
                return Err(unavailable(e));
            }
        };
        if applied == 1 {
            step.applied();
        }
        Ok(applied == 1)
    }
}
