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
#[serde(try_from = "ResultWire")]
pub struct WorkerResultBody {
    pub job_id: Option<String>,
    pub task_id: Option<String>,
    pub worker_id: Option<String>,
    pub result: WorkerResult,
}

/// Both layouts workers post: `avtomatika-worker` 1.0b3 nests the outcome
/// under `result`; the `rxon`-based SDKs (1.0b5+) put `status`, `data` and
/// `error` at the top level.
#[derive(Deserialize)]
struct ResultWire {
    job_id: Option<String>,
    task_id: Option<String>,
    worker_id: Option<String>,
    result: Option<WorkerResult>,
    status: Option<String>,
    data: Option<Value>,
    error: Option<ResultError>,
}

impl TryFrom<ResultWire> for WorkerResultBody {
    type Error = String;

    /// A body that says nothing of what happened is refused: taking it as a
    /// success would finish jobs whose work failed or never ran.
    fn try_from(wire: ResultWire) -> Result<Self, String> {
        let result = match (wire.result, wire.status) {
            (Some(result), _) => result,
            (None, Some(status)) => WorkerResult { status: Some(status), data: wire.data, error: wire.error },
            (None, None) => {
                return Err("`result` is missing: post {\"result\": {\"status\": …}} \
                            (or `status`, `data` and `error` at the top level)"
                    .to_owned());
            }
        };
        Ok(Self { job_id: wire.job_id, task_id: wire.task_id, worker_id: wire.worker_id, result })
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: Value) -> Result<WorkerResultBody, String> {
        serde_json::from_value(body).map_err(|e| e.to_string())
    }

    #[test]
    fn both_result_layouts_read_alike_and_an_empty_one_is_refused() {
        let ids = json!({"job_id": "j", "task_id": "t", "worker_id": "w"});
        let with = |extra: Value| {
            let mut body = ids.clone();
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            parse(body)
        };
        let nested =
            with(json!({"result": {"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": "m"}}}))
                .unwrap();
        let flat = with(json!({"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": "m"},
                               "data_metadata": {}}))
        .unwrap();
        for body in [&nested, &flat] {
            assert_eq!(body.result.status.as_deref(), Some("failure"));
            assert_eq!(body.result.error.as_ref().and_then(ResultError::code), Some("PERMANENT_ERROR"));
        }
        let flat = with(json!({"status": "success", "data": {"x": 1}})).unwrap();
        assert_eq!(flat.result.data, Some(json!({"x": 1})));
        let err = with(json!({"data": {"x": 1}})).unwrap_err();
        assert!(err.contains("`result` is missing"), "{err}");
    }
}
