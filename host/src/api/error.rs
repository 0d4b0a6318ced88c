//! The one error type of the HTTP API: every failure becomes the spec's
//! status code and a `{"error": "…"}` body.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::files::S3Error;
use crate::history::HistoryError;
use crate::orchestrator::OrchestratorError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid {0} header")]
    Unauthorized(&'static str),
    #[error("{0}")]
    InvalidWorkerToken(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The request was understood but what it asks for was refused (a
    /// blueprint set that does not load).
    #[error("{0}")]
    Unprocessable(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The server is stopping and takes no new jobs; another instance (or
    /// this one once restarted) does.
    #[error("the server is shutting down and accepts no new jobs; try again on another instance or later")]
    ShuttingDown,
    #[error("storage is unavailable; try again")]
    Unavailable(#[source] StorageError),
    #[error("the job history database is unavailable; try again")]
    HistoryUnavailable(#[source] HistoryError),
    #[error("S3 is unavailable; try again")]
    FilesUnavailable(#[source] S3Error),
    /// A server fault; the cause is logged, never shown to the caller.
    #[error("internal server error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) | Self::InvalidWorkerToken(_) => StatusCode::UNAUTHORIZED,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ShuttingDown | Self::Unavailable(_) | Self::HistoryUnavailable(_) | Self::FilesUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Unavailable(cause) => tracing::warn!(error = %cause, "request failed: storage unavailable"),
            Self::HistoryUnavailable(cause) => tracing::warn!(error = %cause, "request failed: history unavailable"),
            Self::FilesUnavailable(cause) => tracing::warn!(error = %cause, "request failed: S3 unavailable"),
            Self::Internal(cause) => tracing::error!(error = format!("{cause:#}"), "request failed"),
            _ => {}
        }
        (self.status(), Json(json!({ "error": self.to_string() }))).into_response()
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(error: OrchestratorError) -> Self {
        match error {
            OrchestratorError::BadRequest(m) => Self::BadRequest(m),
            OrchestratorError::Unauthorized(m) => Self::InvalidWorkerToken(m),
            OrchestratorError::QuotaExceeded(m) => Self::TooManyRequests(m),
            OrchestratorError::Forbidden(m) => Self::Forbidden(m),
            OrchestratorError::NotFound(m) => Self::NotFound(m),
            OrchestratorError::Conflict(m) => Self::Conflict(m),
            OrchestratorError::Rejected(m) => Self::Unprocessable(m),
            OrchestratorError::Storage(e @ StorageError::Unavailable(_)) => Self::Unavailable(e),
            OrchestratorError::Storage(e) => Self::Internal(e.into()),
            OrchestratorError::History(e) => Self::HistoryUnavailable(e),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        OrchestratorError::Storage(error).into()
    }
}

impl ApiError {
    /// Maps a failure to read the request body (over the size limit, or the
    /// connection broke).
    pub fn from_body(rejection: BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge(limit)
        } else {
            Self::BadRequest(format!("cannot read request body: {}", rejection.body_text()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every status an `ApiError` answers has its response in the OpenAPI
    /// document, and the document lists no status the API never answers.
    #[test]
    fn every_error_status_is_documented() {
        let errors = [
            ApiError::BadRequest(String::new()),
            ApiError::Unauthorized("X-Avtomatika-Token"),
            ApiError::InvalidWorkerToken(String::new()),
            ApiError::TooManyRequests(String::new()),
            ApiError::Forbidden(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::Conflict(String::new()),
            ApiError::Unprocessable(String::new()),
            ApiError::MethodNotAllowed,
            ApiError::PayloadTooLarge(1),
            ApiError::ShuttingDown,
            ApiError::Internal(anyhow::anyhow!("fault")),
        ];
        let mut answered: Vec<u16> = errors.iter().map(|e| e.status().as_u16()).collect();
        answered.sort_unstable();
        answered.dedup();
        let mut documented = super::super::openapi::ERROR_STATUSES.to_vec();
        documented.sort_unstable();
        assert_eq!(answered, documented);
    }
}
