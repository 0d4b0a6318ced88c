//! Child jobs: a handler's `run-blueprint` step starts a job of another
//! blueprint and the parent waits in `waiting_for_sub_job` until it ends.
//!
//! The parent is stored as waiting before the child exists, so a child that
//! ends at once can never find its parent still running. When the child
//! ends, the storage update that ends it also queues the parent, and the
//! executor brings the parent here ([`Orchestrator::resume_after_child`]).
//!
//! The step's transitions are keyed by the child's terminal status
//! (`finished`, `failed`, `cancelled`, `quarantined`). Blueprints ported from
//! the Python orchestrator key them `success` / `failure` instead, which is
//! all it knows (a finished child is a success, anything else a failure), so
//! those keys are read too: see [`child_transition`].

use std::collections::BTreeMap;

use serde_json::json;

use super::{Orchestrator, OrchestratorResult};
use crate::history::{JobEvent, JobEventKind};
use crate::model::{ChildWait, Job, JobStatus};
use crate::runtime::ChildSpec;
use crate::storage::FollowUp;

impl Orchestrator {
    pub(super) async fn start_child(&self, job: &mut Job, spec: ChildSpec) -> OrchestratorResult<()> {
        let Some(blueprint) = self.runtime.blueprint(&spec.blueprint) else {
            let message = format!("run-blueprint names blueprint {:?}, which is not loaded", spec.blueprint);
            job.end(JobStatus::Failed, Some(message));
            self.save(job, FollowUp::None).await?;
            return Ok(());
        };
        // The child belongs to the parent's client; it is not charged to its quota.
        let mut child = Job::new(
            blueprint.name().to_owned(),
            job.client.clone(),
            blueprint.graph.start.clone(),
            spec.initial_data,
            None,
        );
        child.parent_job_id = Some(job.id);
        child.timeouts = job.timeouts;
        child.blueprint_version = Some(blueprint.version.clone());
        job.status = JobStatus::WaitingForChildJob;
        job.child = Some(ChildWait { job_id: child.id, blueprint: spec.blueprint, transitions: spec.transitions });
        job.child_job_ids.push(child.id);
        if !self.save(job, FollowUp::None).await? {
            return Ok(());
        }
        self.history.job(|| {
            JobEvent::new(JobEventKind::SubJobStarted, job)
                .context(json!({ "child_job_id": child.id, "blueprint": child.blueprint_name }))
        });
        self.storage.create_job(&child).await?;
        self.metrics.job_created(&child.blueprint_name);
        self.history.job(|| self.created_event(&child));
        tracing::info!(job_id = %job.id, child_job_id = %child.id, blueprint = %child.blueprint_name, "child job started");
        Ok(())
    }

    /// The parent `job` was woken: if its child has ended, move on by the
    /// child's terminal status.
    pub(super) async fn resume_after_child(&self, mut job: Job) -> OrchestratorResult<()> {
        let Some(wait) = job.child.clone() else { return Ok(()) };
        let Some(child) = self.storage.get_job(wait.job_id).await? else {
            // Only if the instance died between storing the parent and creating the child.
            let message = format!("child job {} does not exist (it was never created)", wait.job_id);
            job.end(JobStatus::Failed, Some(message));
            self.save(&mut job, FollowUp::None).await?;
            return Ok(());
        };
        if !child.status.is_terminal() {
            return Ok(());
        }
        let status = child.status.as_str();
        let next_state = child_transition(&wait.transitions, child.status).cloned();
        let result = json!({
            "job_id": child.id,
            "blueprint": child.blueprint_name,
            "status": status,
            "error_message": child.error_message,
            "state_history": child.state_history,
        });
        let event = self.history.prepare(|| {
            let event = JobEvent::new(JobEventKind::SubJobFinished, &job).context(json!({
                "child_job_id": child.id,
                "status": status,
                "error_message": child.error_message,
            }));
            match &next_state {
                Some(next) => event.next_state(next.clone()),
                None => event,
            }
        });
        let follow_up = match next_state {
            Some(next) => {
                let follow_up = self.move_on(&mut job, next, None);
                job.sub_job_result = Some(result);
                follow_up
            }
            None => {
                let message = format!(
                    "child job {} ({}) ended {status}, and the step that started it declares no transition for {status}",
                    child.id, child.blueprint_name
                );
                job.sub_job_result = Some(result);
                job.end(JobStatus::Failed, Some(message));
                FollowUp::None
            }
        };
        if self.save(&mut job, follow_up).await? {
            self.history.record(event);
            tracing::info!(job_id = %job.id, child_job_id = %child.id, child_status = status, "parent resumed");
        }
        Ok(())
    }
}

/// The parent's next state for a child that ended `status`: the transition
/// keyed by the status itself, or else the Python orchestrator's key for it,
/// `success` for `finished` and `failure` for any other end. An exact key
/// wins, so a blueprint can still tell `cancelled` apart from `failed`.
fn child_transition(transitions: &BTreeMap<String, String>, status: JobStatus) -> Option<&String> {
    let python_key = if status == JobStatus::Finished { "success" } else { "failure" };
    transitions.get(status.as_str()).or_else(|| transitions.get(python_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transitions(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect()
    }

    #[test]
    fn success_and_failure_keys_are_read_as_finished_and_any_other_end() {
        let python = transitions(&[("success", "next_step"), ("failure", "sub_failed")]);
        assert_eq!(child_transition(&python, JobStatus::Finished).map(String::as_str), Some("next_step"));
        for status in [JobStatus::Failed, JobStatus::Cancelled, JobStatus::Quarantined, JobStatus::Error] {
            assert_eq!(child_transition(&python, status).map(String::as_str), Some("sub_failed"), "{status:?}");
        }
    }

    #[test]
    fn a_status_key_wins_over_the_python_key() {
        let both = transitions(&[("finished", "a"), ("success", "b"), ("cancelled", "c"), ("failure", "d")]);
        assert_eq!(child_transition(&both, JobStatus::Finished).map(String::as_str), Some("a"));
        assert_eq!(child_transition(&both, JobStatus::Cancelled).map(String::as_str), Some("c"));
        assert_eq!(child_transition(&both, JobStatus::Failed).map(String::as_str), Some("d"));
        let ours = transitions(&[("finished", "a")]);
        assert_eq!(child_transition(&ours, JobStatus::Failed), None, "no transition: the parent fails, as before");
    }
}
