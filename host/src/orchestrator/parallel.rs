//! Parallel steps: fanning a job out to several workers at once and joining
//! the branches' results in the aggregator state.
//!
//! Branch results are recorded apart from the job record (see
//! [`Storage::record_branch_result`](crate::storage::BranchResults::record_branch_result)),
//! so any number of branches answering at once never contend for the job;
//! only the branch whose result completes the set moves the job on.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::results::verdict;
use super::watcher::timed_out_event;
use super::{Orchestrator, OrchestratorResult};
use crate::history::{JobEvent, JobEventKind};
use crate::model::{Job, JobId, JobStatus, ParallelWait, TaskRecord, WorkerResult};
use crate::runtime::BranchSpec;
use crate::storage::{BranchRecord, FollowUp};

/// Attempts at moving a job to its aggregator when it keeps changing underneath.
const MAX_CONFLICTS: usize = 8;

/// The status recorded for a branch the watcher gave up on.
pub const TIMEOUT_STATUS: &str = "timeout";

impl Orchestrator {
    /// Dispatches every branch and makes the job wait for all of them.
    pub(super) async fn dispatch_parallel(
        &self,
        job: &mut Job,
        branches: Vec<BranchSpec>,
        aggregate_into: String,
    ) -> OrchestratorResult<bool> {
        let tasks: Vec<TaskRecord> = branches.into_iter().map(|b| self.new_task(job, b.into(), 0)).collect();
        let watch_at = tasks.iter().map(|t| t.deadline).min().unwrap_or(DateTime::<Utc>::MAX_UTC);
        tracing::info!(job_id = %job.id, branches = tasks.len(), aggregate_into, "fanning out");
        let event = self.history.prepare(|| {
            let task_types: Vec<&str> = tasks.iter().map(|t| t.task_type.as_str()).collect();
            JobEvent::new(JobEventKind::ParallelDispatched, job)
                .context(json!({ "branches": tasks.len(), "task_types": task_types, "aggregate_into": aggregate_into }))
        });
        job.status = JobStatus::WaitingForParallelTasks;
        job.parallel = Some(ParallelWait { wait_id: Uuid::new_v4(), branches: tasks, aggregate_into, watch_at });
        let applied = self.assign(job).await?;
        if applied {
            self.history.record(event);
        }
        Ok(applied)
    }

    /// Records a worker's result for one branch; moves the job on when it was
    /// the last one. `false` when the branch already had a result.
    pub(super) async fn accept_branch_result(
        &self,
        job: &Job,
        branch: &TaskRecord,
        worker_id: &str,
        result: &WorkerResult,
    ) -> OrchestratorResult<bool> {
        let status = result.status.as_str();
        let error = result.error.as_ref().map(|e| json!({ "code": e.code(), "message": e.message() }));
        let data = result.data.clone().unwrap_or(Value::Null);
        let event = self.history.prepare(|| self.result_event(job, branch, worker_id, result));
        let recorded = self.record_branch(job, branch, status, data, error.unwrap_or(Value::Null)).await?;
        if recorded {
            self.history.record(event);
            self.task_round_trip(branch);
            self.storage.add_in_flight(worker_id, -1).await?;
            self.judge(worker_id, verdict(result)).await;
            self.freed_slot(&branch.task_type).await?;
        }
        Ok(recorded)
    }

    /// Records `status` for `branch` and, if that completed the fan-out,
    /// moves the job to its aggregator. `false` for a duplicate.
    pub(super) async fn record_branch(
        &self,
        job: &Job,
        branch: &TaskRecord,
        status: &str,
        data: Value,
        error: Value,
    ) -> OrchestratorResult<bool> {
        let Some(wait) = &job.parallel else { return Ok(false) };
        let index = wait.branches.iter().position(|b| b.task_id == branch.task_id).unwrap_or(0);
        let entry = json!({
            "index": index,
            "task_type": branch.task_type,
            "status": status,
            "data": data,
            "error": error,
        });
        match self.storage.record_branch_result(wait.wait_id, branch.task_id, &entry.to_string()).await? {
            BranchRecord::Duplicate => Ok(false),
            BranchRecord::Closed => {
                tracing::debug!(job_id = %job.id, task_id = %branch.task_id, "result for a fan-out already closed");
                Ok(false)
            }
            BranchRecord::Recorded { answered } => {
                tracing::debug!(
                    job_id = %job.id, task_id = %branch.task_id, status, answered, of = wait.branches.len(),
                    "branch result recorded"
                );
                if answered >= wait.branches.len() {
                    self.join_branches(job.id, wait.wait_id).await?;
                }
                Ok(true)
            }
        }
    }

    /// Every branch of fan-out `wait_id` has a result: the job moves to the
    /// aggregator state with all of them.
    async fn join_branches(&self, job_id: JobId, wait_id: Uuid) -> OrchestratorResult<()> {
        for _ in 0..MAX_CONFLICTS {
            let Some(mut job) = self.storage.get_job(job_id).await? else { return Ok(()) };
            let Some(wait) = job.parallel.clone().filter(|w| w.wait_id == wait_id) else { return Ok(()) };
            if job.status != JobStatus::WaitingForParallelTasks {
                return Ok(());
            }
            let recorded = self.storage.branch_results(wait_id).await?;
            let mut results = Map::new();
            for branch in &wait.branches {
                let Some(text) = recorded.get(&branch.task_id) else {
                    // Not complete after all (a concurrent join closed the fan-out).
                    return Ok(());
                };
                let value = serde_json::from_str(text).unwrap_or(Value::Null);
                results.insert(branch.task_id.to_string(), value);
            }
            let Some(blueprint) = self.graph_of(&job) else {
                job.end(JobStatus::Failed, Some(format!("blueprint {:?} is not loaded", job.blueprint_name)));
                if self.save(&mut job, FollowUp::None).await? {
                    self.storage.close_fan_out(wait_id).await?;
                }
                return Ok(());
            };
            let event = self.history.prepare(|| {
                JobEvent::new(JobEventKind::ParallelJoined, &job)
                    .next_state(wait.aggregate_into.clone())
                    .context(json!({ "branches": wait.branches.len() }))
            });
            let runs = self.enter_state(&blueprint, &mut job, wait.aggregate_into.clone());
            job.aggregation_results = Some(results);
            let follow_up = if runs { FollowUp::Enqueue } else { FollowUp::None };
            if self.save(&mut job, follow_up).await? {
                self.history.record(event);
                tracing::info!(%job_id, aggregate_into = %wait.aggregate_into, "all branches answered");
                self.storage.close_fan_out(wait_id).await?;
                return Ok(());
            }
        }
        tracing::warn!(%job_id, "job kept changing while its branches were joined; the watcher retries");
        Ok(())
    }

    /// The watcher's round for a job waiting on branches: branches past a
    /// timeout are dealt with, then the job is re-indexed at the next deadline.
    pub(super) async fn time_out_branches(&self, mut job: Job, now: DateTime<Utc>) -> OrchestratorResult<()> {
        let Some(wait) = job.parallel.clone() else { return Ok(()) };
        let answered = self.storage.branch_results(wait.wait_id).await?;
        if answered.len() >= wait.branches.len() {
            // Complete, but the join did not land (an instance died mid-way).
            return self.join_branches(job.id, wait.wait_id).await;
        }
        let mut next_watch: Option<DateTime<Utc>> = None;
        let mut changed = false;
        for branch in wait.branches.iter().filter(|b| !answered.contains_key(&b.task_id)) {
            if branch.deadline > now {
                next_watch = Some(next_watch.map_or(branch.deadline, |at| at.min(branch.deadline)));
                continue;
            }
            match self.check_timeouts(&job, branch, now).await? {
                Verdict::FailJob { message, release } => {
                    self.history.job(|| timed_out_event(&job, branch, &message));
                    // A branch its dispatch timeout took back off the queue has
                    // given its worker's slot back already.
                    let withdrawn = (!release).then_some(branch.task_id);
                    return self.fail_fan_out(job, &answered, withdrawn, message).await;
                }
                Verdict::Later(deadline) => {
                    if let Some(task) = job.task_mut(branch.task_id) {
                        task.deadline = deadline;
                    }
                    changed = true;
                    next_watch = Some(next_watch.map_or(deadline, |at| at.min(deadline)));
                }
                Verdict::Retry(cause) => {
                    tracing::warn!(job_id = %job.id, task_id = %branch.task_id, "branch timed out");
                    let event = self.history.prepare(|| timed_out_event(&job, branch, &cause));
                    let error = json!({ "code": "TIMEOUT", "message": cause });
                    if self.record_branch(&job, branch, TIMEOUT_STATUS, Value::Null, error).await? {
                        self.history.record(event);
                    }
                    if let Some(worker) = &branch.worker_id {
                        self.take_back(worker, &job, branch.task_id).await?;
                        self.judge(worker, Some(false)).await;
                    }
                }
            }
        }
        let Some(next_watch) = next_watch else { return Ok(()) };
        if changed || next_watch != wait.watch_at {
            if let Some(wait) = job.parallel.as_mut() {
                wait.watch_at = next_watch;
            }
            self.save(&mut job, FollowUp::None).await?;
        }
        Ok(())
    }

    /// Fails a fan-out job, taking its branches still queued back from
    /// their workers (all but `withdrawn`, which already was).
    async fn fail_fan_out(
        &self,
        mut job: Job,
        answered: &HashMap<Uuid, String>,
        withdrawn: Option<Uuid>,
        message: String,
    ) -> OrchestratorResult<()> {
        self.release_waiting_tasks(&job, |task| answered.contains_key(&task) || withdrawn == Some(task)).await?;
        tracing::warn!(job_id = %job.id, %message, "job failed");
        let wait_id = job.parallel.as_ref().map(|w| w.wait_id);
        job.end(JobStatus::Failed, Some(message));
        // The job will never be joined: forget the results recorded so far.
        if self.save(&mut job, FollowUp::None).await?
            && let Some(wait_id) = wait_id
        {
            self.storage.close_fan_out(wait_id).await?;
        }
        Ok(())
    }
}

/// What the watcher decided about one overdue task.
pub(super) enum Verdict {
    /// A job-level timeout passed: the job fails with this message. `release`
    /// when a worker holds the task (its in-flight slot is to be given back).
    FailJob { message: String, release: bool },
    /// Nothing is due yet after all (a worker took the task before its
    /// dispatch timeout ran out): look again at this deadline.
    Later(DateTime<Utc>),
    /// `WORKER_TIMEOUT_SECONDS` passed: a transient failure, with this cause.
    Retry(String),
}
