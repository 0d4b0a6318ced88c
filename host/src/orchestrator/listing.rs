//! Read-only views over many jobs: a client's jobs, quarantined jobs and the
//! dashboard's counts and the metrics scrape's gauges.

use serde_json::{Map, Value, json};

use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::auth::Client;
use crate::metrics::{BlueprintVersions, Snapshot};
use crate::model::{Job, JobFilter, JobId, JobStatus};

/// Jobs returned when a listing names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Most jobs one listing returns.
pub const MAX_LIMIT: usize = 1000;
/// Most of a client's jobs a filtered listing reads from storage (history
/// off): a filter matching none of a large backlog answers in bounded time.
pub const FILTER_SCAN_LIMIT: usize = 10_000;

/// `limit` and `offset` of a listing, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    pub offset: usize,
}

impl Page {
    /// Reads the query parameters `limit` and `offset` (both optional).
    pub fn from_query(limit: Option<&str>, offset: Option<&str>, default_limit: usize) -> OrchestratorResult<Self> {
        let parse = |name: &str, text: Option<&str>, default: usize| -> OrchestratorResult<usize> {
            match text {
                None => Ok(default),
                Some(text) => text.parse().map_err(|_| {
                    OrchestratorError::BadRequest(format!("{name} must be a non-negative integer, got {text:?}"))
                }),
            }
        };
        let limit = parse("limit", limit, default_limit)?;
        if limit == 0 || limit > MAX_LIMIT {
            return Err(OrchestratorError::BadRequest(format!("limit must be between 1 and {MAX_LIMIT}, got {limit}")));
        }
        Ok(Self { limit, offset: parse("offset", offset, 0)? })
    }
}

impl Orchestrator {
    /// `client`'s jobs that pass `filter`, newest first. With history on,
    /// the listing is the history's (filtered in SQL) and so includes jobs
    /// past `JOB_RETENTION_SECONDS`. From storage, a filtered listing reads
    /// the client's jobs newest first and stops after [`FILTER_SCAN_LIMIT`].
    pub async fn list_jobs(&self, client: &Client, filter: &JobFilter, page: Page) -> OrchestratorResult<Vec<Value>> {
        if let Some(rows) = self.history.client_jobs(&client.name, filter, page.limit, page.offset).await {
            return self.list_jobs_from_history(client, rows?).await;
        }
        let jobs = if filter.is_empty() {
            self.storage.client_jobs(&client.name, page.limit, page.offset).await?
        } else {
            self.scan_client_jobs(&client.name, filter, page).await?
        };
        jobs.iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()
            .map_err(|e| OrchestratorError::BadRequest(e.to_string()))
    }

    /// The page of `client`'s jobs passing `filter`, read from storage in
    /// chunks, newest first.
    async fn scan_client_jobs(&self, client: &str, filter: &JobFilter, page: Page) -> OrchestratorResult<Vec<Job>> {
        const CHUNK: usize = 256;
        let (mut matched, mut skipped, mut read) = (Vec::new(), 0, 0);
        while read < FILTER_SCAN_LIMIT {
            let chunk = self.storage.client_jobs(client, CHUNK.min(FILTER_SCAN_LIMIT - read), read).await?;
            let exhausted = chunk.len() < CHUNK;
            read += chunk.len();
            for job in chunk {
                if !filter.reaches_back_to(job.created_at) {
                    return Ok(matched);
                }
                if !filter.matches(&job) {
                    continue;
                }
                if skipped < page.offset {
                    skipped += 1;
                    continue;
                }
                matched.push(job);
                if matched.len() == page.limit {
                    return Ok(matched);
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(matched)
    }

    /// Ids of quarantined jobs, most recently quarantined first.
    pub async fn quarantined_jobs(&self, page: Page) -> OrchestratorResult<Vec<JobId>> {
        Ok(self.storage.jobs_with_status(JobStatus::Quarantined, page.limit, page.offset).await?)
    }

    /// `{"workers": {"total": N}, "jobs": {"queued": N, <status>: N, …}}`.
    /// With history on, the counts of ended jobs are the history's: every job
    /// it has seen end, not only those storage still retains. Should the
    /// history database be unreachable, storage's counts stand in (with a warning).
    pub async fn dashboard(&self) -> OrchestratorResult<Value> {
        let workers = self.storage.live_workers().await?.len();
        let counts = self.storage.job_counts().await?;
        let history = match self.history.status_counts().await {
            Some(Ok(counts)) => Some(counts),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "dashboard: history unavailable; showing the counts storage holds");
                None
            }
            None => None,
        };
        let mut jobs = Map::new();
        jobs.insert("queued".into(), counts.queued.into());
        for status in JobStatus::ALL {
            // Jobs still running are storage's to count (the history keeps
            // each job's creation and end, not every status in between).
            let n = match &history {
                Some(history) if status.is_terminal() => history.get(status.as_str()).copied().unwrap_or(0),
                _ => counts.by_status.get(&status).copied().unwrap_or(0),
            };
            jobs.insert(status.as_str().into(), n.into());
        }
        Ok(json!({ "workers": { "total": workers }, "jobs": jobs }))
    }

    /// The values a metrics scrape reads at scrape time: live workers, job
    /// counts and webhook totals.
    pub async fn metrics_snapshot(&self) -> OrchestratorResult<Snapshot> {
        let live_workers = self.storage.live_workers().await?.len();
        let jobs = self.storage.job_counts().await?;
        Ok(Snapshot {
            live_workers,
            jobs,
            webhooks: self.webhooks.stats(),
            history: self.history.stats(),
            plugin_cache: self.runtime.cache_stats(),
            blueprint_versions: BlueprintVersions {
                current: self.runtime.blueprints().len(),
                retired: self.runtime.retired_versions().len(),
            },
        })
    }
}
