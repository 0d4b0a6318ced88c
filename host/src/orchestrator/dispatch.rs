//! Handing tasks to workers: choosing one, queueing the task for it, and
//! holding tasks no live worker takes until one registers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::PoisonError;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::routing;
use super::{Orchestrator, OrchestratorResult};
use crate::history::{JobEvent, JobEventKind};
use crate::model::{Job, JobId, JobStatus, Routing, Strategy, TaskPayload, TaskRecord, WorkerInfo};
use crate::runtime::TaskSpec;
use crate::storage::{Assignment, FollowUp};

/// Task types remembered as parked for room on this instance, at most.
const MAX_ROOM_PARKED_TYPES: usize = 10_000;

/// Parked jobs taken per storage round trip when a worker appears.
const PARKED_BATCH: usize = 64;

impl Orchestrator {
    /// Sends `spec` to a worker as a new task of `job` (its `retries`-th retry),
    /// or parks the job while no live worker takes the task type. Returns
    /// whether the job update was applied.
    pub(super) async fn dispatch(&self, job: &mut Job, spec: TaskSpec, retries: u32) -> OrchestratorResult<bool> {
        let task = self.new_task(job, spec, retries);
        job.status = JobStatus::WaitingForWorker;
        job.current_task = Some(task);
        self.assign(job).await
    }

    /// A task record for `job`, dispatched now.
    pub(super) fn new_task(&self, job: &Job, spec: TaskSpec, retries: u32) -> TaskRecord {
        let now = Utc::now();
        let mut task = TaskRecord {
            task_id: Uuid::new_v4(),
            task_type: spec.task_type,
            params: spec.params,
            priority: spec.priority,
            transitions: spec.transitions,
            worker_id: None,
            retries,
            dispatched_at: now,
            deadline: now,
            cancel_requested: false,
            routing: spec.routing,
        };
        task.deadline = self.next_deadline(job, &task, false).unwrap_or(DateTime::<Utc>::MAX_UTC);
        task
    }

    /// When the watcher must next look at `task`: the earliest of its worker
    /// timeout (its own `timeout_seconds`, else `WORKER_TIMEOUT_SECONDS`),
    /// the job's result timeout and, unless a worker is known to have taken
    /// it, the job's dispatch timeout.
    pub(super) fn next_deadline(&self, job: &Job, task: &TaskRecord, taken: bool) -> Option<DateTime<Utc>> {
        let after = |timeout: Duration| {
            chrono::Duration::from_std(timeout).ok().and_then(|t| task.dispatched_at.checked_add_signed(t))
        };
        let limits = [
            Some(task.routing.timeout_seconds.map_or(self.config.worker_timeout, |s| Duration::from_secs(s.into()))),
            job.timeouts.result_timeout(),
            job.timeouts.dispatch_timeout().filter(|_| !taken),
        ];
        limits.into_iter().flatten().filter_map(after).min()
    }

    /// A transient failure of `task` (the worker said so, or it timed out):
    /// dispatch it again, or quarantine the job once `JOB_MAX_RETRIES`
    /// retries are spent. Returns whether the job update was applied.
    pub(super) async fn retry_task(&self, job: &mut Job, task: &TaskRecord, cause: &str) -> OrchestratorResult<bool> {
        if task.retries < self.config.job_max_retries {
            tracing::info!(job_id = %job.id, task_id = %task.task_id, retry = task.retries + 1, "dispatching the task again");
            let event = self.history.prepare(|| {
                JobEvent::new(JobEventKind::TaskRetried, job)
                    .task(task.task_id)
                    .attempt(task.retries + 1)
                    .context(json!({ "task_type": task.task_type, "cause": cause }))
            });
            let spec = TaskSpec {
                task_type: task.task_type.clone(),
                params: task.params.clone(),
                transitions: task.transitions.clone(),
                priority: task.priority,
                routing: task.routing.clone(),
            };
            let applied = self.dispatch(job, spec, task.retries + 1).await?;
            if applied {
                self.history.record(event);
            }
            return Ok(applied);
        }
        let message = format!("Task {} failed after {} retries: {cause}", task.task_type, task.retries);
        tracing::error!(job_id = %job.id, task_id = %task.task_id, %message, "job quarantined");
        job.end(JobStatus::Quarantined, Some(message));
        self.save(job, FollowUp::None).await
    }

    /// Queues each task the job waits on that has no worker yet for the best
    /// live worker, or parks the job for its type. One storage update.
    pub(super) async fn assign(&self, job: &mut Job) -> OrchestratorResult<bool> {
        let job_id = job.id;
        let unassigned: Vec<(Uuid, String, Routing)> = job
            .waiting_tasks()
            .filter(|task| task.worker_id.is_none())
            .map(|task| (task.task_id, task.task_type.clone(), task.routing.clone()))
            .collect();
        // One look at the workers per task type. The loads are bumped as
        // tasks are given out here, since storage counts them in flight only
        // once the update lands: a fan-out spreads over the workers.
        let mut candidates: HashMap<String, Vec<WorkerInfo>> = HashMap::new();
        let mut chosen: Vec<(Uuid, String)> = Vec::new();
        let mut parked: BTreeSet<String> = BTreeSet::new();
        let mut waiting: Vec<(String, Routing)> = Vec::new();
        for (task_id, task_type, routing) in unassigned {
            if !candidates.contains_key(&task_type) {
                candidates.insert(task_type.clone(), self.storage.workers_for(&task_type).await?);
            }
            let pool = candidates.get_mut(&task_type).map(Vec::as_mut_slice).unwrap_or_default();
            let (qualified, unmet) = qualify(pool, &task_type, &routing);
            if !pool.is_empty() && qualified.is_empty() {
                // Registered workers take the type, but none ever could take
                // this task: waiting would hang the job.
                let message = format!("No registered worker can take task '{task_type}': none meets {unmet}");
                tracing::warn!(%job_id, %task_id, task_type, %message, "job failed: no worker qualifies");
                job.end(JobStatus::Failed, Some(message));
                return self.save(job, FollowUp::None).await;
            }
            let turn = match routing.strategy {
                Strategy::RoundRobin if !qualified.is_empty() => {
                    self.storage.next_turn(&format!("dispatch:{task_type}")).await?
                }
                _ => 0,
            };
            match routing::choose(routing.strategy, &task_type, pool, &qualified, turn) {
                Some(at) => {
                    pool[at].in_flight += 1;
                    chosen.push((task_id, pool[at].worker_id.clone()));
                }
                None => {
                    tracing::info!(
                        %job_id, %task_id, task_type, workers = pool.len(), qualified = qualified.len(),
                        "no qualifying worker has room; the task waits for one"
                    );
                    parked.insert(task_type.clone());
                    if !pool.is_empty() {
                        let mut types = self.parked_for_room.lock().unwrap_or_else(PoisonError::into_inner);
                        // Task types may come from client input: past the
                        // bound, heartbeats alone wake what is parked.
                        if types.len() < MAX_ROOM_PARKED_TYPES {
                            types.insert(task_type.clone());
                        }
                    }
                    // A fan-out's branches mostly share one routing: look once.
                    if !waiting.iter().any(|(t, r)| *t == task_type && *r == routing) {
                        waiting.push((task_type, routing));
                    }
                }
            }
        }
        let mut assignments: Vec<Assignment> =
            parked.iter().map(|task_type| Assignment::Park { task_type: task_type.clone() }).collect();
        let mut events = Vec::new();
        if self.history.is_enabled() {
            for task in job.waiting_tasks().filter(|t| t.worker_id.is_none() && parked.contains(&t.task_type)) {
                events.extend(self.history.prepare(|| {
                    JobEvent::new(JobEventKind::TaskWaitingForWorker, job)
                        .task(task.task_id)
                        .attempt(task.retries + 1)
                        .context(json!({ "task_type": task.task_type }))
                }));
            }
        }
        for (task_id, worker_id) in chosen {
            let Some(task) = job.task_mut(task_id) else { continue };
            task.worker_id = Some(worker_id.clone());
            tracing::debug!(%job_id, %task_id, task_type = %task.task_type, %worker_id, "task dispatched");
            let payload = TaskPayload {
                job_id,
                task_id,
                task_type: task.task_type.clone(),
                params: task.params.clone(),
                priority: task.priority,
                tracing_context: trace_context(job_id, task_id),
            };
            let attempt = task.retries + 1;
            events.extend(self.history.prepare(|| {
                JobEvent::new(JobEventKind::TaskDispatched, job)
                    .worker(worker_id.clone())
                    .task(task_id)
                    .attempt(attempt)
                    .context(json!({ "task_type": payload.task_type, "params": payload.params, "priority": payload.priority }))
            }));
            assignments.push(Assignment::Push { worker_id, task: payload });
        }
        let applied = self.save(job, FollowUp::Dispatch(assignments)).await?;
        if !applied {
            tracing::debug!(%job_id, "job changed concurrently; dispatch dropped");
            return Ok(false);
        }
        for event in events {
            self.history.record(Some(event));
        }
        // A worker registering (or reporting room) between our look and the
        // park took the parked list before our entry was in it: look once
        // more now that it is.
        // Only a worker this very task qualifies for counts: any other with
        // room would have us take the list and park the job again, forever.
        for (task_type, routing) in waiting {
            let pool = self.storage.workers_for(&task_type).await?;
            let (qualified, _) = qualify(&pool, &task_type, &routing);
            if qualified.iter().any(|&at| routing::has_room(&pool[at])) {
                Box::pin(self.assign_parked(std::slice::from_ref(&task_type))).await?;
            }
        }
        Ok(true)
    }

    /// Gives tasks parked for any of `task_types` to live workers, now that
    /// one that takes them has registered or said it is available.
    ///
    /// A job whose qualified workers are all full goes back to the end of the
    /// list; once a batch puts one back, the rest wait for the next worker to
    /// report room (taking them again now would only put them back, forever).
    pub(super) async fn assign_parked(&self, task_types: &[String]) -> OrchestratorResult<()> {
        for task_type in task_types {
            loop {
                let parked = self.storage.take_parked(task_type, PARKED_BATCH).await?;
                if parked.is_empty() {
                    break;
                }
                let mut parked_again = false;
                for job_id in parked {
                    parked_again |= !self.assign_parked_job(job_id, task_type).await?;
                }
                if parked_again {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Assigns a parked job's tasks of `task_type`; `false` when one of them
    /// was parked again.
    async fn assign_parked_job(&self, job_id: JobId, task_type: &str) -> OrchestratorResult<bool> {
        let Some(mut job) = self.storage.get_job(job_id).await? else { return Ok(true) };
        let unplaced = |job: &Job| job.waiting_tasks().any(|t| t.worker_id.is_none() && t.task_type == task_type);
        if !unplaced(&job) {
            return Ok(true);
        }
        let applied = self.assign(&mut job).await?;
        Ok(!(applied && unplaced(&job)))
    }
}

/// The task's W3C trace context, as the Python orchestrator puts it in
/// `tracing_context`: every task of a job belongs to one trace, whose id is
/// the job id (128 random bits, as a trace id must be); the task is its span.
/// A worker that continues the trace links its work to the job's.
fn trace_context(job_id: JobId, task_id: Uuid) -> Map<String, Value> {
    let span_id = u64::from_be_bytes(task_id.as_bytes()[..8].try_into().unwrap_or([1; 8])).max(1);
    let traceparent = format!("00-{}-{span_id:016x}-01", job_id.simple());
    Map::from_iter([("traceparent".to_owned(), Value::String(traceparent))])
}

/// The workers of `pool` that qualify for a task routed by `routing`, and,
/// when none does, what each requirement left out ("gpu_info vram_gb >= 16
/// (2 workers)").
fn qualify(pool: &[WorkerInfo], task_type: &str, routing: &Routing) -> (Vec<usize>, String) {
    if routing.is_default() {
        return ((0..pool.len()).collect(), String::new());
    }
    let mut qualified = Vec::new();
    let mut unmet: BTreeMap<String, usize> = BTreeMap::new();
    for (at, candidate) in pool.iter().enumerate() {
        match routing::unmet(candidate, task_type, routing) {
            None => qualified.push(at),
            Some(reason) => *unmet.entry(reason).or_default() += 1,
        }
    }
    let unmet = unmet
        .into_iter()
        .map(|(reason, n)| format!("{reason} ({n} worker{})", if n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ");
    (qualified, unmet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_carry_a_w3c_traceparent_of_their_job() {
        let job_id: JobId = "0af7651916cd43dd8448eb211c80319c".parse().unwrap();
        let task_id: Uuid = "b7ad6b7169203331aaaaaaaaaaaaaaaa".parse().unwrap();
        let context = trace_context(job_id, task_id);
        assert_eq!(context["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let zero = trace_context(job_id, Uuid::nil());
        assert_eq!(
            zero["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-0000000000000001-01",
            "span ids are never 0"
        );
    }
}
