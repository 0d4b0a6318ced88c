//! A job: one run of a blueprint, and the task it is waiting on.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A job id: a random UUID, rendered hyphenated.
pub type JobId = Uuid;

/// Where a job is in its life. The wire names are the spec's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobStatus {
    /// Created and queued; no handler has run yet.
    Pending,
    /// Under way between waits: a handler runs or is queued to run next.
    Running,
    /// A task was dispatched; the job waits for the worker's result.
    WaitingForWorker,
    WaitingForHuman,
    WaitingForParallelTasks,
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
    /// When the watcher gives up waiting for the result (`WORKER_TIMEOUT_SECONDS`
    /// after dispatch) and treats the task as a transient failure.
    pub deadline: DateTime<Utc>,
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
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every stored update; storage refuses an update made from an
    /// older version, so two writers can never silently overwrite each other.
    pub version: u64,
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
            id: Uuid::new_v4(),
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
            created_at: now,
            updated_at: now,
            version: 0,
        }
    }

    /// Ends the job with a terminal status and, for failures, a message.
    pub fn end(&mut self, status: JobStatus, error_message: Option<String>) {
        debug_assert!(status.is_terminal());
        self.status = status;
        self.error_message = error_message;
    }

    /// The deadline of the task the job waits on, if it waits on one.
    pub fn task_deadline(&self) -> Option<DateTime<Utc>> {
        match (&self.current_task, self.status) {
            (Some(task), JobStatus::WaitingForWorker) => Some(task.deadline),
            _ => None,
        }
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
    }
}
