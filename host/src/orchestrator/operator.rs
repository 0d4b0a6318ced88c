//! What an operator does to a client's job by hand, besides cancelling it:
//! retrying a quarantined job (`POST /api/v1/jobs/{id}/retry`) and sending
//! an ended job's webhook again (`POST /api/v1/jobs/{id}/webhook`). Each is
//! recorded in the history with the client that asked.

use std::time::Duration;

use serde_json::json;

use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::auth::Client;
use crate::history::{JobEvent, JobEventKind};
use crate::model::{JobId, JobStatus};
use crate::storage::FollowUp;
use crate::webhook::Delivery;

/// Attempts at retrying a job that keeps changing underneath.
const MAX_CONFLICTS: usize = 8;

/// The least time between two re-sends of one job's webhook, on every
/// instance: a client cannot make the server flood a receiver.
pub const WEBHOOK_RESEND_INTERVAL: Duration = Duration::from_secs(10);

impl Orchestrator {
    /// Runs `client`'s quarantined job `id` again from the state it stopped
    /// in: its handler runs anew, as if the job had just entered the state
    /// (waits cleared, failure count reset, error message dropped).
    pub async fn retry_job(&self, client: &Client, id: &str) -> OrchestratorResult<JobId> {
        let mut job = self.job_for(client, id).await?;
        let id = job.id;
        for attempt in 0..MAX_CONFLICTS {
            // The first attempt works on the job the ownership check read.
            if attempt > 0 {
                job = self
                    .storage
                    .get_job(id)
                    .await?
                    .ok_or_else(|| OrchestratorError::NotFound(format!("job {id} not found")))?;
            }
            if job.status != JobStatus::Quarantined {
                return Err(OrchestratorError::Conflict(format!(
                    "job {id} is {}; only a quarantined job can be retried",
                    job.status
                )));
            }
            if job.parent_job_id.is_some() {
                // Its parent has already taken the outcome and moved on.
                return Err(OrchestratorError::Conflict(format!(
                    "job {id} is a child job; its parent decided what follows its failure"
                )));
            }
            if self.graph_of(&job).is_none() {
                return Err(OrchestratorError::Conflict(format!(
                    "job {id} cannot be retried: blueprint {:?} is not loaded",
                    job.blueprint_name
                )));
            }
            let fan_out = job.parallel.as_ref().map(|wait| wait.wait_id);
            let error = job.error_message.take();
            job.clear_waits();
            job.handler_failures = 0;
            job.status = JobStatus::Running;
            let event = self.history.prepare(|| {
                JobEvent::new(JobEventKind::JobRetried, &job)
                    .context(json!({ "by": client.name, "previous_error": error }))
            });
            if self.save(&mut job, FollowUp::Enqueue).await? {
                self.history.record(event);
                // Branches still out when the job was quarantined answer a
                // closed wait, so they cannot land in the new attempt.
                if let Some(wait_id) = fan_out {
                    self.storage.close_fan_out(wait_id).await?;
                }
                tracing::info!(job_id = %id, state = %job.current_state, client = %client.name, "quarantined job retried");
                return Ok(id);
            }
        }
        Err(OrchestratorError::Conflict(format!("job {id} kept changing; try again")))
    }

    /// Queues `client`'s ended job `id`'s webhook again, as it was sent when
    /// the job ended (same payload, same receiver checks).
    pub async fn resend_webhook(&self, client: &Client, id: &str) -> OrchestratorResult<JobId> {
        let job = self.job_for(client, id).await?;
        let Some(delivery) = Delivery::for_job(&job) else {
            let why = if job.webhook_url.is_none() { "was created without a webhook_url" } else { "has not ended" };
            return Err(OrchestratorError::Conflict(format!("job {} {why}; there is no webhook to send", job.id)));
        };
        let cooldown = format!("webhook-resend:{}", job.id);
        // A fresh owner every time: a lock's holder may take it again.
        let owner = uuid::Uuid::new_v4().to_string();
        if !self.storage.try_lock(&cooldown, &owner, WEBHOOK_RESEND_INTERVAL).await? {
            return Err(OrchestratorError::QuotaExceeded(format!(
                "the webhook of job {} was re-sent less than {} s ago",
                job.id,
                WEBHOOK_RESEND_INTERVAL.as_secs()
            )));
        }
        self.history.job(|| JobEvent::new(JobEventKind::WebhookResent, &job).context(json!({ "by": client.name })));
        self.webhooks.send(delivery);
        tracing::info!(job_id = %job.id, client = %client.name, "webhook re-sent on request");
        Ok(job.id)
    }
}
