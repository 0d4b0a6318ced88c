//! Human decisions for jobs waiting in `waiting_for_human`
//! (`POST /_public/webhooks/approval/{job_id}`).

use serde_json::json;

use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::history::{JobEvent, JobEventKind};
use crate::model::{JobId, JobStatus};

/// Attempts at applying a decision to a job that keeps changing underneath.
const MAX_CONFLICTS: usize = 8;

impl Orchestrator {
    /// Moves job `id` on by `decision`, one of the transitions its
    /// `await-human-approval` step declared.
    pub async fn decide(&self, id: &str, decision: &str) -> OrchestratorResult<JobId> {
        let not_found = || OrchestratorError::NotFound(format!("job {id} not found"));
        let id: JobId = id.parse().map_err(|_| not_found())?;
        for _ in 0..MAX_CONFLICTS {
            let mut job = self.storage.get_job(id).await?.ok_or_else(not_found)?;
            let approval = match (&job.approval, job.status) {
                (Some(approval), JobStatus::WaitingForHuman) => approval.clone(),
                _ => {
                    return Err(OrchestratorError::Conflict(format!(
                        "job {id} is {} and not waiting for a human decision",
                        job.status
                    )));
                }
            };
            let Some(next) = approval.transitions.get(decision) else {
                let known: Vec<&str> = approval.transitions.keys().map(String::as_str).collect();
                return Err(OrchestratorError::BadRequest(format!(
                    "decision {decision:?} is not one this job accepts; expected one of: {}",
                    known.join(", ")
                )));
            };
            let event = self.history.prepare(|| {
                JobEvent::new(JobEventKind::ApprovalDecided, &job)
                    .next_state(next.clone())
                    .context(json!({ "decision": decision }))
            });
            let follow_up = self.move_on(&mut job, next.clone(), None);
            if self.save(&mut job, follow_up).await? {
                self.history.record(event);
                tracing::info!(job_id = %id, decision, state = %job.current_state, "human decision applied");
                return Ok(id);
            }
        }
        Err(OrchestratorError::Conflict(format!("job {id} kept changing; try again")))
    }
}
