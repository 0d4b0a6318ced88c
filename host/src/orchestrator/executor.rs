//! The executor: takes queued jobs and runs their current state's handler,
//! at most `EXECUTOR_MAX_CONCURRENT_JOBS` at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{Orchestrator, OrchestratorResult};
use serde_json::{Value, json};

use crate::history::{JobEvent, JobEventKind};
use crate::model::{ApprovalWait, Job, JobId, JobStatus};
use crate::runtime::{Blueprint, EndKind, Step, types};
use crate::storage::{FollowUp, JobTicket, Release};
use crate::webhook::Delivery;

/// `go-to` steps one job may take before it goes back to the end of the
/// queue, so a blueprint that loops between states cannot hog a slot.
const MAX_STEPS_PER_TURN: usize = 64;

/// How long one wait on the job queue lasts before shutdown is checked again.
const QUEUE_WAIT: Duration = Duration::from_secs(1);

impl Orchestrator {
    /// Runs queued jobs until `stop` fires. Each step runs on `steps`, so a
    /// stopping server can wait for the steps already running (see
    /// `App::serve`): one cut off midway would run its handler again on
    /// redelivery.
    pub async fn run_executor(self: Arc<Self>, stop: CancellationToken, steps: TaskTracker) {
        let slots = Arc::new(Semaphore::new(self.config.executor_max_concurrent_jobs));
        let mut backoff = Duration::from_millis(50);
        loop {
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
                () = stop.cancelled() => return,
            };
            let ticket = tokio::select! {
                ticket = self.storage.next_job(QUEUE_WAIT) => ticket,
                () = stop.cancelled() => return,
            };
            match ticket {
                Ok(Some(ticket)) => {
                    backoff = Duration::from_millis(50);
                    let this = self.clone();
                    steps.spawn(async move {
                        this.run_ticket(ticket).await;
                        drop(slot);
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the job queue; retrying in {backoff:?}");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn run_ticket(&self, ticket: JobTicket) {
        let job_id = ticket.job_id;
        let span = tracing::info_span!("job_step", %job_id);
        // Before the span is entered: an exported span's trace is fixed then.
        crate::logging::join_job_trace(&span, job_id);
        match self.run_job(job_id).instrument(span).await {
            // Acknowledge only once the step is recorded: an unacknowledged
            // ticket is redelivered, and the job's status makes that harmless.
            Ok(()) => {
                if let Err(e) = self.storage.ack_job(ticket).await {
                    tracing::warn!(%job_id, error = %e, "cannot acknowledge the job queue entry");
                }
            }
            Err(e) => tracing::error!(%job_id, error = %e, "job step failed on storage; it is retried on redelivery"),
        }
    }

    /// Runs handlers of `job_id` until it waits, ends or has had its turn.
    async fn run_job(&self, job_id: JobId) -> OrchestratorResult<()> {
        let Some(mut job) = self.storage.get_job(job_id).await? else {
            tracing::warn!(%job_id, "queued job does not exist");
            return Ok(());
        };
        if job.status == JobStatus::WaitingForChildJob {
            // Queued by its child's end (see `Storage::update_job`).
            return self.resume_after_child(job).await;
        }
        if job.status.is_runnable()
            && let Some(parent) = job.parent_job_id
            && self.storage.get_job(parent).await?.is_none_or(|p| p.status.is_terminal())
        {
            // The parent was cancelled while this child ran or waited to run.
            job.end(JobStatus::Cancelled, Some(format!("parent job {parent} ended")));
            self.save(&mut job, FollowUp::None).await?;
            return Ok(());
        }
        for _ in 0..MAX_STEPS_PER_TURN {
            if !job.status.is_runnable() {
                // Already handled (a duplicate or redelivered queue entry).
                return Ok(());
            }
            let blueprint = match self.blueprint_of(&job).await {
                Ok(blueprint) => blueprint,
                Err(message) => {
                    job.end(JobStatus::Failed, Some(message));
                    self.save(&mut job, FollowUp::None).await?;
                    return Ok(());
                }
            };
            if !self.step(&blueprint, &mut job).await? {
                return Ok(());
            }
        }
        // Out of turn: back of the queue.
        self.save(&mut job, FollowUp::Enqueue).await?;
        Ok(())
    }

    /// Runs one handler call and applies its outcome. `true` when the job
    /// moved to another state whose handler should run next.
    async fn step(&self, blueprint: &Arc<Blueprint>, job: &mut Job) -> OrchestratorResult<bool> {
        self.history.job(|| JobEvent::new(JobEventKind::StateStarted, job).attempt(job.handler_failures + 1));
        let started = Instant::now();
        let outcome = self.runtime.handle(blueprint, self.context(job)).await;
        let elapsed = started.elapsed();
        self.metrics.handler_ran(blueprint.name(), elapsed);
        let elapsed_us = elapsed.as_micros() as u64;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                self.metrics.plugin_failed(&error);
                self.history.job(|| {
                    JobEvent::new(JobEventKind::StateFailed, job)
                        .attempt(job.handler_failures + 1)
                        .duration(elapsed)
                        .context(json!({ "error": error.to_string() }))
                });
                job.handler_failures += 1;
                if job.handler_failures > self.config.job_max_retries {
                    let message = format!(
                        "handler of state {:?} failed {} times; last error: {error}",
                        job.current_state, job.handler_failures
                    );
                    tracing::error!(job_id = %job.id, state = %job.current_state, %error, "job quarantined");
                    job.end(JobStatus::Quarantined, Some(message));
                    self.save(job, FollowUp::None).await?;
                } else {
                    tracing::warn!(
                        job_id = %job.id, state = %job.current_state, %error, attempt = job.handler_failures,
                        "handler failed; retrying"
                    );
                    self.save(job, FollowUp::Enqueue).await?;
                }
                return Ok(false);
            }
        };
        tracing::debug!(job_id = %job.id, state = %job.current_state, elapsed_us, "handler ran");

        self.history.job(|| {
            let mut event = JobEvent::new(JobEventKind::StateFinished, job).duration(elapsed);
            if let Step::GoTo(next) = &outcome.step {
                event = event.next_state(next.clone());
            }
            let mut context = json!({ "action": outcome.step.action_name() });
            if let Some(update) = &outcome.history_update {
                context["state_history_update"] = Value::Object(update.clone());
            }
            event.context(context)
        });
        job.handler_failures = 0;
        if let Some(update) = outcome.history_update {
            job.merge_history(update);
        }
        match outcome.step {
            Step::GoTo(state) => {
                let continues = self.enter_state(blueprint, job, state);
                let applied = self.save(job, FollowUp::None).await?;
                Ok(applied && continues)
            }
            Step::Dispatch(task) => {
                self.dispatch(job, task, 0).await?;
                Ok(false)
            }
            Step::Parallel { branches, aggregate_into } => {
                self.dispatch_parallel(job, branches, aggregate_into).await?;
                Ok(false)
            }
            Step::AwaitApproval { message, transitions } => {
                tracing::info!(job_id = %job.id, state = %job.current_state, "job waits for a human decision");
                job.status = JobStatus::WaitingForHuman;
                job.approval = Some(ApprovalWait { message, transitions, links: Default::default() });
                if self.save(job, FollowUp::None).await? {
                    self.history.job(|| {
                        let approval = job.approval.as_ref();
                        JobEvent::new(JobEventKind::ApprovalRequested, job).context(json!({
                            "message": approval.map(|a| a.message.clone()),
                            "decisions": approval.map(|a| a.transitions.keys().cloned().collect::<Vec<_>>()),
                        }))
                    });
                }
                Ok(false)
            }
            Step::RunBlueprint(child) => {
                self.start_child(job, child).await?;
                Ok(false)
            }
            Step::Fail(message) => {
                job.end(JobStatus::Failed, Some(message));
                self.save(job, FollowUp::None).await?;
                Ok(false)
            }
        }
    }

    /// Stores `job` (see [`Storage::update_job`](crate::storage::JobStore::update_job))
    /// and, when this update ended it, sets off what follows a job's end.
    pub(super) async fn save(&self, job: &mut Job, follow_up: FollowUp) -> OrchestratorResult<bool> {
        let applied = self.storage.update_job(job, follow_up).await?;
        if applied && job.status.is_terminal() {
            self.job_ended(job);
        }
        Ok(applied)
    }

    /// [`save`](Self::save) that also gives back the answering worker's
    /// in-flight slot and counts its verdict into its reputation.
    pub(super) async fn save_releasing(
        &self,
        job: &mut Job,
        follow_up: FollowUp,
        release: Release<'_>,
    ) -> OrchestratorResult<bool> {
        let applied = self.storage.update_job_releasing(job, follow_up, release).await?;
        if applied && job.status.is_terminal() {
            self.job_ended(job);
        }
        Ok(applied)
    }

    /// A job just ended: count it, notify its webhook and have its files
    /// deleted (all in the background). (A parent waiting on it was queued by
    /// the same storage update.)
    fn job_ended(&self, job: &Job) {
        tracing::debug!(job_id = %job.id, status = %job.status, "job ended");
        self.metrics.job_ended(&job.blueprint_name, job.status);
        self.history.job(|| {
            JobEvent::new(JobEventKind::ended(job.status), job).context(json!({
                "status": job.status.as_str(),
                "error_message": job.error_message,
                "state_history": job.state_history,
            }))
        });
        if let Some(delivery) = Delivery::for_job(job) {
            self.webhooks.send(delivery);
        }
        if let Some(files) = &self.files {
            // A job gone from storage (its retention lapsed) or still at the
            // version it ended with is cleaned; one retried since is not.
            let (storage, id, version) = (self.storage.clone(), job.id, job.version);
            files.job_ended(id, move || {
                Box::pin(async move {
                    match storage.get_job(id).await {
                        Ok(Some(job)) => job.version == version,
                        Ok(None) => true,
                        Err(e) => {
                            tracing::warn!(job_id = %id, error = %e, "cannot tell whether the job was retried; cleaning its files");
                            true
                        }
                    }
                })
            });
        }
    }

    /// Moves `job` to `state`: an end state ends it, any other keeps it
    /// `running`. Returns whether a handler runs next. The caller stores the job.
    pub(super) fn enter_state(&self, blueprint: &Blueprint, job: &mut Job, state: String) -> bool {
        let end = blueprint.graph.end_of(&state);
        job.clear_waits();
        job.current_state = state;
        job.handler_failures = 0;
        job.transitions += 1;
        if end.is_none() && job.transitions > self.config.max_transitions_per_job {
            let message = format!(
                "job made more than {} state transitions (MAX_TRANSITIONS_PER_JOB); its blueprint seems to loop",
                self.config.max_transitions_per_job
            );
            tracing::warn!(job_id = %job.id, state = %job.current_state, "{message}");
            job.end(JobStatus::Failed, Some(message));
            return false;
        }
        match end {
            Some(EndKind::Finished) => {
                job.end(JobStatus::Finished, None);
                tracing::debug!(job_id = %job.id, state = %job.current_state, "job finished");
                false
            }
            Some(EndKind::Failed) => {
                let message = format!("job reached failure end state {:?}", job.current_state);
                job.end(JobStatus::Failed, Some(message));
                tracing::debug!(job_id = %job.id, state = %job.current_state, "job failed");
                false
            }
            None => {
                job.status = JobStatus::Running;
                true
            }
        }
    }

    fn context(&self, job: &Job) -> types::JobContext {
        let client = self.credentials.client(&job.client);
        types::JobContext {
            job_id: job.id.to_string(),
            blueprint: job.blueprint_name.clone(),
            current_state: job.current_state.clone(),
            initial_data: job.initial_data.to_string(),
            state_history: serde_json::to_string(&job.state_history).unwrap_or_else(|_| "{}".into()),
            client: types::Client {
                name: job.client.clone(),
                plan: client.and_then(|c| c.plan.clone()),
                params: client.map_or_else(|| "{}".to_owned(), |c| c.params.to_string()),
            },
            aggregation_results: job
                .aggregation_results
                .as_ref()
                .map(|results| serde_json::to_string(results).unwrap_or_else(|_| "{}".into())),
            child_result: job.sub_job_result.as_ref().map(Value::to_string),
            webhook_url: job.webhook_url.clone(),
        }
    }
}
