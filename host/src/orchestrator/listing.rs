//! Read-only views over many jobs: a client's jobs, quarantined jobs and the
//! dashboard's counts and the metrics scrape's gauges.

use serde_json::{Map, Value, json};

use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::auth::Client;
use crate::metrics::{BlueprintVersions, Snapshot};
use crate::model::{JobId, JobStatus};

/// Jobs returned when a listing names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Most jobs one listing returns.
pub const MAX_LIMIT: usize = 1000;

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
    /// `client`'s jobs, newest first. With history on, the listing is the
    /// history's and so includes jobs past `JOB_RETENTION_SECONDS`.
    pub async fn list_jobs(&self, client: &Client, page: Page) -> OrchestratorResult<Vec<Value>> {
        if let Some(rows) = self.history.client_jobs(&client.name, page.limit, page.offset).await {
            return self.list_jobs_from_history(client, rows?).await;
        }
        let jobs = self.storage.client_jobs(&client.name, page.limit, page.offset).await?;
        jobs.iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()
            .map_err(|e| OrchestratorError::BadRequest(e.to_string()))
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
