//! `avtomatika:blueprint/task-files`: the job's files in S3 (`jobs/{job_id}/`),
//! small ones read and written whole, large ones handed on as `s3://` URIs.
//!
//! Every failure is a `file-error` for the guest, never a trap. The time a
//! call waits on S3 is not charged to the handler's CPU budget
//! (`PLUGIN_TIMEOUT_MS`); each call is bounded by its own timeout instead,
//! and all of them together by the call's wall-clock limit
//! (`PLUGIN_WALL_TIMEOUT_MS`).

use std::future::Future;
use std::time::{Duration, Instant};

use super::super::bindings::avtomatika::blueprint::task_files::{FileError, FileInfo, Host};
use super::super::sandbox::Sandbox;
use crate::files::{MAX_LISTED, MAX_SMALL_FILE, S3Error, TaskFiles, check_adoptable, key_of_uri};
use crate::model::JobId;

/// The longest one list, read, write or delete may wait on S3.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest an `adopt` (a copy inside S3, up to 5 GiB) may take.
const ADOPT_TIMEOUT: Duration = Duration::from_secs(120);

impl Sandbox {
    /// The service and the job, or why there are none.
    fn files(&self) -> Result<(TaskFiles, JobId), FileError> {
        let files = self.files.as_ref().ok_or(FileError::Disabled)?.for_handlers();
        let job = self
            .job_id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| FileError::Invalid("no job: task files are not available during describe".into()))?;
        Ok((files, job))
    }

    /// Runs `call` against S3 within `limit`, adding its time to the
    /// handler's host wait and logging a failure.
    async fn on_s3<T>(
        &mut self,
        operation: &str,
        limit: Duration,
        call: impl Future<Output = Result<T, FileError>>,
    ) -> Result<T, FileError> {
        let started = Instant::now();
        // No call outlives the handler's wall-clock limit: the guest's next
        // instruction then ends the call (`new_store`'s epoch callback).
        let left = self.wall_limit.saturating_sub(self.call_started.elapsed());
        let answer = match tokio::time::timeout(limit.min(left), call).await {
            Ok(answer) => answer,
            Err(_) if left < limit => Err(FileError::Unavailable(format!(
                "the handler call reached its wall-clock limit of {:?} (PLUGIN_WALL_TIMEOUT_MS) during {operation}",
                self.wall_limit
            ))),
            Err(_) => Err(FileError::Unavailable(format!("S3 did not finish {operation} within {limit:?}"))),
        };
        self.host_wait += started.elapsed();
        if let Err(error) = &answer
            && !matches!(error, FileError::NotFound(_))
        {
            tracing::warn!(
                blueprint = &*self.blueprint, job_id = self.job_id.as_deref().unwrap_or(""), operation,
                error = ?error, "task files operation failed"
            );
        }
        answer
    }
}

fn s3_error(error: S3Error) -> FileError {
    match error {
        S3Error::NotFound(message) => FileError::NotFound(message),
        S3Error::Unavailable(message) => FileError::Unavailable(message),
    }
}

fn too_large(name: &str, size: u64) -> FileError {
    FileError::Invalid(format!(
        "the file {name:?} is {size} bytes, over the {} KiB a handler may read or write; hand its URI to a worker instead",
        MAX_SMALL_FILE >> 10
    ))
}

impl Host for Sandbox {
    async fn list(&mut self) -> Result<Vec<FileInfo>, FileError> {
        let (files, job) = self.files()?;
        self.on_s3("list", CALL_TIMEOUT, async {
            let objects = files.list(job).await.map_err(s3_error)?;
            Ok(objects
                .into_iter()
                .take(MAX_LISTED)
                .map(|object| {
                    let uri = files.store().uri(&format!("{}{}", TaskFiles::prefix(job), object.key));
                    FileInfo { name: object.key, size: object.size, uri }
                })
                .collect())
        })
        .await
    }

    async fn read(&mut self, name: String) -> Result<Vec<u8>, FileError> {
        let (files, job) = self.files()?;
        let key = TaskFiles::key(job, &name).map_err(FileError::Invalid)?;
        self.on_s3("read", CALL_TIMEOUT, async {
            match files.store().get_small(&key, MAX_SMALL_FILE).await.map_err(s3_error)? {
                Ok(bytes) => Ok(bytes.to_vec()),
                Err(size) => Err(too_large(&name, size)),
            }
        })
        .await
    }

    async fn write(&mut self, name: String, contents: Vec<u8>) -> Result<String, FileError> {
        let (files, job) = self.files()?;
        let key = TaskFiles::key(job, &name).map_err(FileError::Invalid)?;
        if contents.len() as u64 > MAX_SMALL_FILE {
            return Err(too_large(&name, contents.len() as u64));
        }
        self.on_s3("write", CALL_TIMEOUT, async {
            files.store().put(&key, contents.into()).await.map_err(s3_error)?;
            Ok(files.store().uri(&key))
        })
        .await
    }

    async fn delete(&mut self, name: String) -> Result<bool, FileError> {
        let (files, job) = self.files()?;
        let key = TaskFiles::key(job, &name).map_err(FileError::Invalid)?;
        self.on_s3("delete", CALL_TIMEOUT, async {
            // S3's DELETE answers the same whether or not the object was
            // there, so existence is looked up first.
            match files.store().size(&key).await {
                Ok(_) => {}
                Err(S3Error::NotFound(_)) => return Ok(false),
                Err(e) => return Err(s3_error(e)),
            }
            files.store().delete(&key).await.map_err(s3_error)?;
            Ok(true)
        })
        .await
    }

    async fn uri(&mut self, name: String) -> Result<String, FileError> {
        let (files, job) = self.files()?;
        let key = TaskFiles::key(job, &name).map_err(FileError::Invalid)?;
        Ok(files.store().uri(&key))
    }

    async fn adopt(&mut self, source: String, name: String) -> Result<FileInfo, FileError> {
        let (files, job) = self.files()?;
        let key = TaskFiles::key(job, &name).map_err(FileError::Invalid)?;
        let from = key_of_uri(&source, files.store().bucket()).map_err(FileError::Invalid)?.to_owned();
        check_adoptable(&from, job).map_err(FileError::Invalid)?;
        self.on_s3("adopt", ADOPT_TIMEOUT, async {
            if from != key {
                files.store().copy(&from, &key).await.map_err(s3_error)?;
                files.store().delete(&from).await.map_err(s3_error)?;
            }
            let size = files.store().size(&key).await.map_err(s3_error)?;
            Ok(FileInfo { name, size, uri: files.store().uri(&key) })
        })
        .await
    }
}
