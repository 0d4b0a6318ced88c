//! A job: one run of a blueprint, and the task it is waiting on.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::Routing;

/// A job id: a random UUID, rendered hyphenated.
pub type JobId = Uuid;

/// Where a job is in its life. The wire names are the spec's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobStatus {
    /// Created and queued; no handler has run yet.
    Pending,
    /// Under way between waits: a handler runs or is queued to run next.
    Running,
    /// A task was dispatched; the job waits for the worker's result.
    WaitingForWorker,
    /// The job waits for a person's decision (`POST /_public/webhooks/approval/{id}`).
    WaitingForHuman,
    /// Parallel branches were dispatched; the job waits until all have answered.
    WaitingForParallelTasks,
    /// A child job runs; the job waits until it ends. Named as the Python
    /// orchestrator names it.
    #[serde(rename = "waiting_for_sub_job")]
    WaitingForChildJob,
    Finished,
    Failed,
    Cancelled,
    Error,
    /// Given up on after repeated or permanent failures; kept for an operator.
    Quarantined,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::WaitingForWorker => "waiting_for_worker",
            Self::WaitingForHuman => "waiting_for_human",
            Self::WaitingForParallelTasks => "waiting_for_parallel_tasks",
            Self::WaitingForChildJob => "waiting_for_sub_job",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
            Self::Quarantined => "quarantined",
        }
    }

    /// Whether the executor runs the current state's handler.
    pub fn is_runnable(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }

    /// Terminal statuses never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Finished | Self::Failed | Self::Cancelled | Self::Error | Self::Quarantined)
    }
}

impl JobStatus {
    /// Every status, in life order (for per-status counts).
    pub const ALL: [JobStatus; 11] = [
        Self::Pending,
        Self::Running,
        Self::WaitingForWorker,
        Self::WaitingForHuman,
        Self::WaitingForParallelTasks,
        Self::WaitingForChildJob,
        Self::Finished,
        Self::Failed,
        Self::Cancelled,
        Self::Error,
        Self::Quarantined,
    ];

    /// The statuses of jobs that will still run a handler: all but the
    /// terminal ones.
    pub const UNFINISHED: [JobStatus; 6] = [
        Self::Pending,
        Self::Running,
        Self::WaitingForWorker,
        Self::WaitingForHuman,
        Self::WaitingForParallelTasks,
        Self::WaitingForChildJob,
    ];
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(Value::String(s.to_owned())).map_err(|_| format!("unknown job status {s:?}"))
    }
}

/// The task a job waits on. Replaced (with a new id) on every dispatch, so a
/// result for an older task id is recognisably stale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: Uuid,
    #[serde(rename = "type")]
    pub task_type: String,
    pub params: Value,
    pub priority: i32,
    /// Result status → next state.
    pub transitions: BTreeMap<String, String>,
    /// The worker the task was given to; unset while no live worker takes its type.
    pub worker_id: Option<String>,
    /// How many transient failures of this task were retried so far.
    pub retries: u32,
    pub dispatched_at: DateTime<Utc>,
    /// When the watcher next looks at the task: the earliest of its
    /// `WORKER_TIMEOUT_SECONDS`, the job's `result_timeout` and, while no
    /// worker has taken it, the job's `dispatch_timeout`.
    pub deadline: DateTime<Utc>,
    /// Set by `POST /api/v1/jobs/{id}/cancel`; the worker can read it.
    pub cancel_requested: bool,
    /// How the task is routed to a worker. Appended last, with a default,
    /// so records written before it existed still decode.
    #[serde(default)]
    pub routing: Routing,
}

/// Per-job limits on waiting for workers, from the create request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTimeouts {
    /// No worker took a task this long (ms) after its dispatch: the job fails.
    pub dispatch_timeout_ms: Option<u64>,
    /// No result came this long (ms) after a task's dispatch: the job fails.
    pub result_timeout_ms: Option<u64>,
}

impl JobTimeouts {
    pub fn dispatch_timeout(&self) -> Option<Duration> {
        self.dispatch_timeout_ms.map(Duration::from_millis)
    }

    pub fn result_timeout(&self) -> Option<Duration> {
        self.result_timeout_ms.map(Duration::from_millis)
    }
}

/// Parallel branches a job waits on, and where it goes once all answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParallelWait {
    /// Names this fan-out: branch results are stored under it, apart from
    /// the job record, so results arriving together never contend.
    pub wait_id: Uuid,
    pub branches: Vec<TaskRecord>,
    /// The state whose handler receives every branch's result.
    pub aggregate_into: String,
    /// When the watcher next checks the branches still unanswered.
    pub watch_at: DateTime<Utc>,
}

/// A person's decision the job waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalWait {
    pub message: String,
    /// Decision → next state.
    pub transitions: BTreeMap<String, String>,
    /// Decision → signed approval link; filled in for the owner's view only
    /// when `APPROVAL_SECRET` is set, never stored.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, String>,
}

/// A child job the job waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildWait {
    pub job_id: JobId,
    pub blueprint: String,
    /// The child's terminal status (`finished`, `failed`, …) → next state.
    pub transitions: BTreeMap<String, String>,
}

/// One run of a blueprint. Serialised as is for `GET /api/v1/jobs/{id}`, so it
/// never holds a secret, and positionally (MessagePack) for storage, so no
/// field is ever skipped: every field is always written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub blueprint_name: String,
    /// The id of the client that created the job (never its token).
    pub client: String,
    pub current_state: String,
    pub status: JobStatus,
    pub initial_data: Value,
    pub state_history: Map<String, Value>,
    pub webhook_url: Option<String>,
    pub error_message: Option<String>,
    /// Failed handler calls in the current state; reset when the state changes.
    pub handler_failures: u32,
    /// State transitions so far (`MAX_TRANSITIONS_PER_JOB` bounds them).
    pub transitions: u32,
    pub current_task: Option<TaskRecord>,
    pub timeouts: JobTimeouts,
    /// Set while the job waits in `waiting_for_parallel_tasks`.
    pub parallel: Option<ParallelWait>,
    /// Every branch's result, keyed by task id, for the aggregator state's
    /// handler; cleared when the job leaves that state.
    pub aggregation_results: Option<Map<String, Value>>,
    /// Set while the job waits in `waiting_for_human`.
    pub approval: Option<ApprovalWait>,
    /// Set while the job waits in `waiting_for_sub_job`.
    pub child: Option<ChildWait>,
    /// The job that started this one with `run-blueprint`.
    pub parent_job_id: Option<JobId>,
    /// Every child job this one started, oldest first.
    pub child_job_ids: Vec<JobId>,
    /// The last child's outcome (`job_id`, `blueprint`, `status`,
    /// `error_message`, `state_history`) for the handler of the state the
    /// parent moved to; cleared when the job leaves that state.
    pub sub_job_result: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every stored update; storage refuses an update made from an
    /// older version, so two writers can never silently overwrite each other.
    pub version: u64,
    /// The version of the blueprint the job started on (the component's
    /// SHA-256), which it runs on to the end. Unset in jobs stored before
    /// blueprints had versions, which run on the current one. Last, so jobs
    /// stored without it still read.
    #[serde(default)]
    pub blueprint_version: Option<String>,
}

impl Job {
    /// The compact storage form: MessagePack with fields by position.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec(self).map_err(|e| format!("job {}: {e}", self.id))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }

    pub fn new(
        blueprint_name: String,
        client: String,
        start_state: String,
        initial_data: Value,
        webhook_url: Option<String>,
    ) -> Self {
        let now = Utc::now();
        Self {
            // Time-ordered (UUIDv7): ids sort by creation, and the history's
            // indexes on them grow at one end instead of at random places.
            // The last 8 bytes stay random, as a W3C trace id (the job's) wants.
            id: Uuid::now_v7(),
            blueprint_name,
            client,
            current_state: start_state,
            status: JobStatus::Pending,
            initial_data,
            state_history: Map::new(),
            webhook_url,
            error_message: None,
            handler_failures: 0,
            transitions: 0,
            current_task: None,
            timeouts: JobTimeouts::default(),
            parallel: None,
            aggregation_results: None,
            approval: None,
            child: None,
            parent_job_id: None,
            child_job_ids: Vec::new(),
            sub_job_result: None,
            created_at: now,
            updated_at: now,
            version: 0,
            blueprint_version: None,
        }
    }

    /// Ends the job with a terminal status and, for failures, a message.
    pub fn end(&mut self, status: JobStatus, error_message: Option<String>) {
        debug_assert!(status.is_terminal());
        self.status = status;
        self.error_message = error_message;
    }

    /// When the watcher must next look at the job: the deadline of the task
    /// or branches it waits on, if it waits on any.
    pub fn task_deadline(&self) -> Option<DateTime<Utc>> {
        match self.status {
            JobStatus::WaitingForWorker => self.current_task.as_ref().map(|task| task.deadline),
            JobStatus::WaitingForParallelTasks => self.parallel.as_ref().map(|wait| wait.watch_at),
            _ => None,
        }
    }

    /// Every task the job waits on: its one task, or its parallel branches.
    pub fn waiting_tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        let single = self.current_task.iter().filter(|_| self.status == JobStatus::WaitingForWorker);
        let branches = self.parallel.iter().filter(|_| self.status == JobStatus::WaitingForParallelTasks);
        single.chain(branches.flat_map(|wait| wait.branches.iter()))
    }

    /// The task of the job with id `task_id`, its one task or a branch,
    /// whether or not the job still waits on it.
    pub fn task(&self, task_id: Uuid) -> Option<&TaskRecord> {
        let branches = self.parallel.iter().flat_map(|wait| wait.branches.iter());
        self.current_task.iter().chain(branches).find(|task| task.task_id == task_id)
    }

    /// The task the job waits on with id `task_id`, its one task or a branch.
    pub fn task_mut(&mut self, task_id: Uuid) -> Option<&mut TaskRecord> {
        let single = self.current_task.iter_mut();
        let branches = self.parallel.iter_mut().flat_map(|wait| wait.branches.iter_mut());
        single.chain(branches).find(|task| task.task_id == task_id)
    }

    /// Forgets the waits and what the last state's handler was given; the
    /// job is about to enter another state. The last single task stays (as
    /// the record of what the job last waited on) until the next dispatch.
    pub fn clear_waits(&mut self) {
        self.parallel = None;
        self.approval = None;
        self.child = None;
        self.aggregation_results = None;
        self.sub_job_result = None;
    }

    /// Merges a JSON object into the state history; keys it names are replaced.
    pub fn merge_history(&mut self, update: Map<String, Value>) {
        self.state_history.extend(update);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storage_form_round_trips_and_is_compact() {
        let mut job =
            Job::new("hello".into(), "default".into(), "start".into(), serde_json::json!({"name": "Ada"}), None);
        job.merge_history(
            serde_json::json!({"greeting": "Hello, Ada", "n": [1, 2.5, null, true]}).as_object().unwrap().clone(),
        );
        job.error_message = Some("boom".into());
        let bytes = job.encode().unwrap();
        assert_eq!(Job::decode(&bytes).unwrap(), job);
        let json = serde_json::to_vec(&job).unwrap();
        assert!(bytes.len() * 2 < json.len(), "{} bytes vs {} as JSON", bytes.len(), json.len());
        assert!(Job::decode(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn status_wire_names_round_trip() {
        for status in [
            JobStatus::Pending,
            JobStatus::WaitingForWorker,
            JobStatus::WaitingForParallelTasks,
            JobStatus::Quarantined,
        ] {
            let text = serde_json::to_string(&status).unwrap();
            assert_eq!(text, format!("\"{}\"", status.as_str()));
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), status);
        }
        assert!("bogus".parse::<JobStatus>().is_err());
        assert!(JobStatus::Quarantined.is_terminal());
        assert!(!JobStatus::WaitingForWorker.is_terminal());
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::UNFINISHED.contains(&status), !status.is_terminal(), "{status:?}");
        }
    }
}
