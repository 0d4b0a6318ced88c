//! What travels between the orchestrator and workers: tasks out, results in.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::JobId;

/// The body of `GET /_worker/workers/{id}/tasks/next`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPayload {
    pub job_id: JobId,
    pub task_id: Uuid,
    #[serde(rename = "type")]
    pub task_type: String,
    pub params: Value,
    pub priority: i32,
    pub tracing_context: Map<String, Value>,
}

/// The body of `POST /_worker/tasks/result`. Ids are optional here so that a
/// missing one is a clear 400 rather than a generic parse error.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerResultBody {
    pub job_id: Option<String>,
    pub task_id: Option<String>,
    pub worker_id: Option<String>,
    #[serde(default)]
    pub result: WorkerResult,
}

/// A worker's answer for one task.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WorkerResult {
    /// `success`, `failure`, `cancelled` or a custom status; missing means `success`.
    pub status: Option<String>,
    pub data: Option<Value>,
    pub error: Option<ResultError>,
}

/// The `error` of a failed result: the SDK sends an object, older workers a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ResultError {
    Detailed { code: Option<String>, message: Option<String> },
    Message(String),
}

impl ResultError {
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Detailed { code, .. } => code.as_deref(),
            Self::Message(_) => None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Detailed { message, .. } => message.as_deref().unwrap_or("no error message provided"),
            Self::Message(message) => message,
        }
    }
}
