//! Human decisions for jobs waiting in `waiting_for_human`
//! (`POST /_public/webhooks/approval/{job_id}`).
//!
//! The route takes no token (the spec's), so what it answers is all an
//! anonymous caller learns: status codes and fixed texts, never the job's
//! status or the decisions it accepts. With `APPROVAL_SECRET` set, a
//! decision must also carry `signature`, the HMAC-SHA256 of
//! `<job id>:<decision>` under that secret, checked before the job is even
//! looked up; the job's owner finds the signed links in the job's `approval`.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::history::{JobEvent, JobEventKind};
use crate::model::{Job, JobId, JobStatus};

/// Where a person posts a decision.
pub const APPROVAL_PATH: &str = "/_public/webhooks/approval";

/// Attempts at applying a decision to a job that keeps changing underneath.
const MAX_CONFLICTS: usize = 8;

impl Orchestrator {
    /// Moves job `id` on by `decision`, one of the transitions its
    /// `await-human-approval` step declared. `signature` is required when
    /// `APPROVAL_SECRET` is set.
    pub async fn decide(&self, id: &str, decision: &str, signature: Option<&str>) -> OrchestratorResult<JobId> {
        let not_found = || OrchestratorError::NotFound("job not found".into());
        self.config.limits.check_name("decision", decision).map_err(OrchestratorError::BadRequest)?;
        if self.config.approval_secret.is_some() && !self.signature_matches(id, decision, signature) {
            return Err(OrchestratorError::Forbidden("missing or invalid approval signature".into()));
        }
        let id: JobId = id.parse().map_err(|_| not_found())?;
        for _ in 0..MAX_CONFLICTS {
            let mut job = self.storage.get_job(id).await?.ok_or_else(not_found)?;
            let approval = match (&job.approval, job.status) {
                (Some(approval), JobStatus::WaitingForHuman) => approval.clone(),
                _ => {
                    tracing::debug!(job_id = %id, status = %job.status, "decision for a job not waiting for one");
                    return Err(OrchestratorError::Conflict("the job is not waiting for a human decision".into()));
                }
            };
            let Some(next) = approval.transitions.get(decision) else {
                return Err(OrchestratorError::BadRequest("the decision is not one this job accepts".into()));
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
        Err(OrchestratorError::Conflict("the job kept changing; try again".into()))
    }

    /// The signature a decision on job `id` needs, when `APPROVAL_SECRET` is set.
    pub fn approval_signature(&self, id: &str, decision: &str) -> Option<String> {
        let mac = self.approval_mac(id, decision)?;
        Some(hex::encode(mac.finalize().into_bytes()))
    }

    /// Fills in the owner's view of a job waiting for a decision: one signed
    /// link per decision, relative to the server's address.
    pub fn sign_approval_links(&self, job: &mut Job) {
        let id = job.id.to_string();
        if let Some(approval) = &mut job.approval {
            approval.links = approval
                .transitions
                .keys()
                .filter_map(|decision| {
                    let signature = self.approval_signature(&id, decision)?;
                    Some((decision.clone(), format!("{APPROVAL_PATH}/{id}?signature={signature}")))
                })
                .collect();
        }
    }

    fn approval_mac(&self, id: &str, decision: &str) -> Option<Hmac<Sha256>> {
        let secret = self.config.approval_secret.as_ref()?;
        // HMAC takes keys of any length; the error case cannot happen.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).ok()?;
        mac.update(id.as_bytes());
        mac.update(b":");
        mac.update(decision.as_bytes());
        Some(mac)
    }

    /// Compares in constant time (`verify_slice`).
    fn signature_matches(&self, id: &str, decision: &str, signature: Option<&str>) -> bool {
        let (Some(mac), Some(signature)) = (self.approval_mac(id, decision), signature) else { return false };
        hex::decode(signature.trim()).is_ok_and(|bytes| mac.verify_slice(&bytes).is_ok())
    }
}
