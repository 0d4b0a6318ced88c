//! Child jobs: a handler's `run-blueprint` step starts a job of another
//! blueprint and the parent waits in `waiting_for_sub_job` until it ends.
//!
//! The parent is stored as waiting before the child exists, so a child that
//! ends at once can never find its parent still running. When the child
//! ends, the storage update that ends it also queues the parent, and the
//! executor brings the parent here ([`Orchestrator::resume_after_child`]).

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
            match wait.transitions.get(status) {
                Some(next) => event.next_state(next.clone()),
                None => event,
            }
        });
        let follow_up = match wait.transitions.get(status) {
            Some(next) => {
                let follow_up = self.move_on(&mut job, next.clone(), None);
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
