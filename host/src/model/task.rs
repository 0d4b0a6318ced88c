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
#[derive(Debug, Clone)]
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
pub struct ResultWire {
    job_id: Option<String>,
    task_id: Option<String>,
    worker_id: Option<String>,
    result: Option<WorkerResult>,
    status: Option<ResultStatus>,
    data: Option<Value>,
    error: Option<ResultError>,
}

impl ResultWire {
    /// The result a worker meant. `rxon` says whether the sender speaks the
    /// RXON protocol (it sent `X-RXON-Version`): newer `rxon` releases
    /// serialise with `omit_defaults`, so their success carries no `status`
    /// at all — for them a flat body without one is the success their model
    /// defaults to. From anyone else a body that says nothing of what
    /// happened is refused: taking it as a success would finish jobs whose
    /// work failed or never ran.
    pub fn into_body(self, rxon: bool) -> Result<WorkerResultBody, String> {
        let result = match (self.result, self.status) {
            (Some(result), _) => result,
            (None, Some(status)) => WorkerResult { status, data: self.data, error: self.error },
            (None, None) if rxon => WorkerResult { status: ResultStatus::Success, data: self.data, error: self.error },
            (None, None) => {
                return Err("`result` is missing: post {\"result\": {\"status\": …}} \
                            (or `status`, `data` and `error` at the top level)"
                    .to_owned());
            }
        };
        Ok(WorkerResultBody { job_id: self.job_id, task_id: self.task_id, worker_id: self.worker_id, result })
    }
}

/// A worker's answer for one task.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WorkerResult {
    /// Missing means `success`.
    #[serde(default)]
    pub status: ResultStatus,
    pub data: Option<Value>,
    pub error: Option<ResultError>,
}

/// What a worker says happened to a task. The orchestrator acts on the first
/// three; any other status is the blueprint's, followed by its transitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum ResultStatus {
    #[default]
    Success,
    Failure,
    Cancelled,
    Custom(String),
}

impl ResultStatus {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Cancelled => "cancelled",
            Self::Custom(status) => status,
        }
    }
}

impl From<String> for ResultStatus {
    fn from(status: String) -> Self {
        match status.as_str() {
            "success" => Self::Success,
            "failure" => Self::Failure,
            "cancelled" => Self::Cancelled,
            _ => Self::Custom(status),
        }
    }
}

/// Why a task failed, as the worker classifies it ("Result semantics" in the
/// HTTP spec; the `rxon` SDKs add six codes to 1.0b3's three). A code this
/// orchestrator does not know is kept as sent and treated as transient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ErrorCode {
    /// Worth another try (the default when a failure gives no code).
    Transient,
    /// Will fail again: the job is quarantined.
    Permanent,
    /// The job's input is wrong: the job fails.
    InvalidInput,
    /// A file's checksum did not match what was sent: the job fails.
    IntegrityMismatch,
    /// The worker refused the task on security grounds: quarantined.
    Security,
    /// Something the task needs is missing on the worker: quarantined.
    Dependency,
    /// The result broke the skill's declared contract: quarantined.
    ContractViolation,
    /// The task ran out of time on the worker: tried again.
    Timeout,
    /// The worker ran out of memory, disk or GPU: tried again.
    ResourceExhausted,
    /// The worker itself failed: tried again.
    Internal,
    Other(String),
}

/// What a failure with a given code does to its job, as the newest upstream
/// orchestrator (`avtomatika` 1.0b30) decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureEffect {
    Retry,
    Fail,
    Quarantine,
}

impl ErrorCode {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Transient => "TRANSIENT_ERROR",
            Self::Permanent => "PERMANENT_ERROR",
            Self::InvalidInput => "INVALID_INPUT_ERROR",
            Self::IntegrityMismatch => "INTEGRITY_MISMATCH_ERROR",
            Self::Security => "SECURITY_ERROR",
            Self::Dependency => "DEPENDENCY_ERROR",
            Self::ContractViolation => "CONTRACT_VIOLATION_ERROR",
            Self::Timeout => "TIMEOUT_ERROR",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED_ERROR",
            Self::Internal => "INTERNAL_ERROR",
            Self::Other(code) => code,
        }
    }

    pub fn effect(&self) -> FailureEffect {
        match self {
            Self::Permanent | Self::Security | Self::Dependency | Self::ContractViolation => FailureEffect::Quarantine,
            Self::InvalidInput | Self::IntegrityMismatch => FailureEffect::Fail,
            Self::Transient | Self::Timeout | Self::ResourceExhausted | Self::Internal | Self::Other(_) => {
                FailureEffect::Retry
            }
        }
    }
}

impl From<String> for ErrorCode {
    fn from(code: String) -> Self {
        match code.as_str() {
            "TRANSIENT_ERROR" => Self::Transient,
            "PERMANENT_ERROR" => Self::Permanent,
            "INVALID_INPUT_ERROR" => Self::InvalidInput,
            "INTEGRITY_MISMATCH_ERROR" => Self::IntegrityMismatch,
            "SECURITY_ERROR" => Self::Security,
            "DEPENDENCY_ERROR" => Self::Dependency,
            "CONTRACT_VIOLATION_ERROR" => Self::ContractViolation,
            "TIMEOUT_ERROR" => Self::Timeout,
            "RESOURCE_EXHAUSTED_ERROR" => Self::ResourceExhausted,
            "INTERNAL_ERROR" => Self::Internal,
            _ => Self::Other(code),
        }
    }
}

impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Other(code) => code,
            known => known.as_str().to_owned(),
        }
    }
}

/// The `error` of a failed result: the SDK sends an object, older workers a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ResultError {
    Detailed { code: Option<ErrorCode>, message: Option<String> },
    Message(String),
}

impl ResultError {
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Self::Detailed { code, .. } => code.as_ref(),
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
        serde_json::from_value::<ResultWire>(body).map_err(|e| e.to_string())?.into_body(false)
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
            assert_eq!(body.result.status, ResultStatus::Failure);
            assert_eq!(body.result.error.as_ref().and_then(ResultError::code), Some(&ErrorCode::Permanent));
        }
        let flat = with(json!({"status": "success", "data": {"x": 1}})).unwrap();
        assert_eq!(flat.result.data, Some(json!({"x": 1})));
        let err = with(json!({"data": {"x": 1}})).unwrap_err();
        assert!(err.contains("`result` is missing"), "{err}");
        // rxon 1.0b17 omits `status` when it is its default, "success".
        let rxon = serde_json::from_value::<ResultWire>(json!({"job_id": "j", "task_id": "t", "data": {"x": 1}}))
            .unwrap()
            .into_body(true)
            .unwrap();
        assert_eq!((rxon.result.status, rxon.result.data), (ResultStatus::Success, Some(json!({"x": 1}))));
    }

    #[test]
    fn every_code_the_rxon_sdks_send_has_the_upstream_effect() {
        let effect = |code: &str| ErrorCode::from(code.to_owned()).effect();
        for code in ["PERMANENT_ERROR", "SECURITY_ERROR", "DEPENDENCY_ERROR", "CONTRACT_VIOLATION_ERROR"] {
            assert_eq!(effect(code), FailureEffect::Quarantine, "{code}");
        }
        for code in ["INVALID_INPUT_ERROR", "INTEGRITY_MISMATCH_ERROR"] {
            assert_eq!(effect(code), FailureEffect::Fail, "{code}");
        }
        for code in ["TRANSIENT_ERROR", "TIMEOUT_ERROR", "RESOURCE_EXHAUSTED_ERROR", "INTERNAL_ERROR", "LATE_RESULT"] {
            assert_eq!(effect(code), FailureEffect::Retry, "{code}");
        }
        for name in ["SECURITY_ERROR", "INTEGRITY_MISMATCH_ERROR", "TIMEOUT_ERROR", "INTERNAL_ERROR"] {
            let code = ErrorCode::from(name.to_owned());
            assert!(!matches!(code, ErrorCode::Other(_)), "{name}");
            assert_eq!(code.as_str(), name);
        }
    }

    #[test]
    fn statuses_and_codes_keep_what_they_do_not_know() {
        let status = |s: &str| ResultStatus::from(s.to_owned());
        assert_eq!(status("cancelled"), ResultStatus::Cancelled);
        assert_eq!(status("needs_review").as_str(), "needs_review");
        assert_eq!(status("Success"), ResultStatus::Custom("Success".into()), "statuses are case-sensitive");
        let code: ErrorCode = serde_json::from_value(json!("INVALID_INPUT_ERROR")).unwrap();
        assert_eq!(code, ErrorCode::InvalidInput);
        let other: ErrorCode = serde_json::from_value(json!("RATE_LIMITED")).unwrap();
        assert_eq!(serde_json::to_value(&other).unwrap(), json!("RATE_LIMITED"));
        assert_eq!(serde_json::to_value(ErrorCode::Permanent).unwrap(), json!("PERMANENT_ERROR"));
        let missing: WorkerResult = serde_json::from_value(json!({"data": {}})).unwrap();
        assert_eq!(missing.status, ResultStatus::Success);
    }
}
