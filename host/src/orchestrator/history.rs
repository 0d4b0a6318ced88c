//! Reading the job history back: a job's events for its owner, and the
//! history-backed listing that reaches past the live storage's retention.

use futures::future::join_all;
use serde_json::{Value, json};

use super::listing::Page;
use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::auth::Client;
use crate::history::JobRow;
use crate::model::JobId;

impl Orchestrator {
    /// The events of `client`'s job `id`, in order. A job that storage no
    /// longer holds is still found through the history's own record of it.
    pub async fn job_history(&self, client: &Client, id: &str, page: Page) -> OrchestratorResult<Vec<Value>> {
        let not_found = || OrchestratorError::NotFound(format!("job {id} not found"));
        let job_id: JobId = id.parse().map_err(|_| not_found())?;
        let owner = match self.storage.get_job(job_id).await? {
            Some(job) => Some(job.client),
            None => match self.history.job_row(job_id).await {
                Some(row) => row?.map(|row| row.client),
                None => None,
            },
        };
        if owner.as_deref() != Some(client.name.as_str()) {
            return Err(not_found());
        }
        match self.history.job_events(job_id, page.limit, page.offset).await {
            Some(events) => Ok(events?),
            None => Err(OrchestratorError::NotFound("job history is not enabled".into())),
        }
    }

    /// `client`'s jobs from the history, newest first: the live state of
    /// those storage still holds, the history's summary of the others.
    pub(super) async fn list_jobs_from_history(
        &self,
        client: &Client,
        rows: Vec<JobRow>,
    ) -> OrchestratorResult<Vec<Value>> {
        let lookups = rows.iter().map(|row| async move {
            match row.job_id.parse::<JobId>() {
                Ok(id) => self.storage.get_job(id).await,
                Err(_) => Ok(None),
            }
        });
        let live = join_all(lookups).await;
        let mut jobs = Vec::with_capacity(rows.len());
        for (row, live) in rows.into_iter().zip(live) {
            match live? {
                Some(job) if job.client == client.name => {
                    jobs.push(serde_json::to_value(&job).map_err(|e| OrchestratorError::BadRequest(e.to_string()))?)
                }
                _ => jobs.push(json!({
                    "id": row.job_id,
                    "blueprint_name": row.blueprint,
                    "status": row.status,
                    "current_state": row.current_state,
                    "created_at": self.history.render_time(row.created_us),
                    "updated_at": self.history.render_time(row.updated_us),
                    // Its full state has passed JOB_RETENTION_SECONDS.
                    "retained": false,
                })),
            }
        }
        Ok(jobs)
    }
}
