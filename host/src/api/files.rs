//! `/api/v1/jobs/{job_id}/files…`: a job's files in S3, for the client that
//! owns the job. Routed only when S3 is configured.
//!
//! Uploads and downloads stream: an upload is spooled to `TASK_FILES_DIR`
//! and sent to S3 from there, a download passes S3's body through a short
//! queue of chunks, so neither holds a file in memory, whatever its size.
//! A download holds an S3 slot only until S3 has delivered the file or the
//! client stops reading for [`DOWNLOAD_STALL`].

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc::Sender;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, ClientAuth};
use super::openapi::{
    self as doc, BadRequest, Conflict, Internal, NotFound, PayloadTooLarge, Unauthorized, Unavailable, tags,
};
use crate::files::{Download, S3Error, TaskFiles, UploadError};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_files)).routes(routes!(download, upload))
}

fn service(state: &AppState) -> Result<&TaskFiles, ApiError> {
    state.orchestrator.files.as_ref().ok_or_else(|| ApiError::NotFound("S3 is not configured on this server".into()))
}

fn s3_failure(error: S3Error) -> ApiError {
    ApiError::FilesUnavailable(error)
}

/// The job's files: `[{"name", "size", "uri"}, …]` in name order (at most 1000).
#[utoipa::path(
    get, path = "/api/v1/jobs/{job_id}/files", tag = tags::FILES,
    security(("client_token" = []), ("client_token_rxon" = [])),
    params(("job_id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The files, in name order.", body = Vec<doc::JobFile>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn list_files(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let files = service(&state)?;
    let job = state.orchestrator.job_for(&client, &job_id).await?;
    let prefix = TaskFiles::prefix(job.id);
    let listed = files.list(job.id).await.map_err(s3_failure)?;
    Ok(Json(
        listed
            .into_iter()
            .map(|o| json!({ "name": o.key, "size": o.size, "uri": files.store().uri(&format!("{prefix}{}", o.key)) }))
            .collect(),
    ))
}

/// Stores the request body as the job's file `name` (created or replaced):
/// `201 {"name", "size", "uri"}`. `409` once the job has ended.
#[utoipa::path(
    put, path = "/api/v1/jobs/{job_id}/files/{*name}", tag = tags::FILES,
    security(("client_token" = []), ("client_token_rxon" = [])),
    params(
        ("job_id" = String, Path, description = "The job's id."),
        ("name" = String, Path, description = "The file's name; it may contain `/`."),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes, streamed."),
    responses(
        (status = 201, description = "Stored.", body = doc::JobFile),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn upload(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    ApiPath((job_id, name)): ApiPath<(String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let files = service(&state)?;
    let job = state.orchestrator.job_for(&client, &job_id).await?;
    if job.status.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "job {job_id} has ended ({}); its files are deleted, not added to",
            job.status
        )));
    }
    let key = TaskFiles::key(job.id, &name).map_err(ApiError::BadRequest)?;
    let size = files.upload(job.id, &key, body.into_data_stream()).await.map_err(|e| match e {
        UploadError::TooLarge => ApiError::PayloadTooLarge(crate::files::MAX_UPLOAD as usize),
        UploadError::Body(message) => ApiError::BadRequest(format!("reading the upload broke off: {message}")),
        UploadError::S3(error) => s3_failure(error),
        error @ UploadError::Local { .. } => ApiError::Internal(error.into()),
    })?;
    tracing::info!(%job_id, client = %client.name, file = %name, size, "job file uploaded");
    Ok((StatusCode::CREATED, Json(json!({ "name": name, "size": size, "uri": files.store().uri(&key) }))))
}

/// The job's file `name`, streamed as `application/octet-stream`; `404` when
/// there is no such file.
#[utoipa::path(
    get, path = "/api/v1/jobs/{job_id}/files/{*name}", tag = tags::FILES,
    security(("client_token" = []), ("client_token_rxon" = [])),
    params(
        ("job_id" = String, Path, description = "The job's id."),
        ("name" = String, Path, description = "The file's name; it may contain `/`."),
    ),
    responses(
        (status = 200, description = "The file's bytes.", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn download(
    State(state): State<AppState>,
    ClientAuth(client): ClientAuth,
    ApiPath((job_id, name)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let files = service(&state)?;
    let job = state.orchestrator.job_for(&client, &job_id).await?;
    let not_found = || ApiError::NotFound(format!("file {name} of job {job_id} not found"));
    let key = TaskFiles::key(job.id, &name).map_err(|_| not_found())?;
    let download = match files.store().get(&key).await {
        Ok(download) => download,
        Err(S3Error::NotFound(_)) => return Err(not_found()),
        Err(error) => return Err(s3_failure(error)),
    };
    let size = download.size;
    // S3's body is pumped into a short queue by a task of its own, which
    // holds the S3 slot: the slot goes back as soon as S3 has delivered
    // everything (a small file: at once, however slowly the client reads),
    // and a client that stops reading is cut off after DOWNLOAD_STALL
    // rather than holding the slot forever.
    let (sender, receiver) = tokio::sync::mpsc::channel(DOWNLOAD_QUEUE_CHUNKS);
    tokio::spawn(pump(download, sender, job_id.clone(), name.clone()));
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Some(size) = size {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    let file_name = name.rsplit('/').next().unwrap_or(&name).replace(['"', '\\'], "_");
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Chunks of a download (each as S3 sent it, typically 8–64 KiB) queued
/// between S3 and the client.
const DOWNLOAD_QUEUE_CHUNKS: usize = 16;

/// The longest a download waits for its client to take the next chunk: the
/// minimum send rate is one chunk per this time. A client that reads nothing
/// for this long is cut off, and the S3 slot goes back.
pub const DOWNLOAD_STALL: Duration = Duration::from_secs(30);

/// Moves S3's body into `queue` until it ends, fails, the client goes away
/// or stops reading for [`DOWNLOAD_STALL`]; the S3 slot is released then.
async fn pump(download: Download, queue: Sender<std::io::Result<Bytes>>, job_id: String, name: String) {
    let Download { mut body, slot, .. } = download;
    loop {
        let chunk = match body.try_next().await {
            Ok(Some(chunk)) => Ok(chunk),
            Ok(None) => break,
            Err(e) => Err(std::io::Error::other(format!("reading from S3 broke off: {e}"))),
        };
        let failed = chunk.is_err();
        match tokio::time::timeout(DOWNLOAD_STALL, queue.send(chunk)).await {
            Ok(Ok(())) if !failed => {}
            // The client went away, or S3 failed (the client's body then
            // ends with that error).
            Ok(_) => break,
            Err(_) => {
                // Dropping the queue ends the body short of its length: the
                // client sees a broken download, not a complete one.
                tracing::warn!(
                    %job_id, file = %name, stall_seconds = DOWNLOAD_STALL.as_secs(),
                    "download cut off: the client stopped reading"
                );
                break;
            }
        }
    }
    drop(slot);
}
