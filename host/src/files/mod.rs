//! Payload offloading (`S3_*`, `TASK_FILES_DIR`): every job's files live in
//! S3 under `jobs/{job_id}/` of `S3_DEFAULT_BUCKET`, and its local files in
//! `TASK_FILES_DIR/{job_id}/`. Blueprints reach them through the
//! `task-files` capability, clients over `/api/v1/jobs/{id}/files/…`,
//! workers by the `s3://` URIs they are handed. When a job ends, both are
//! deleted in the background ([`TaskFiles::job_ended`]).
//!
//! ```no_run
//! # async fn example(config: avtomatika::config::Config, job_id: avtomatika::model::JobId) {
//! use avtomatika::files::TaskFiles;
//! use tokio_util::sync::CancellationToken;
//!
//! // `None` unless S3_ENDPOINT_URL, S3_ACCESS_KEY and S3_SECRET_KEY are set.
//! if let Some(files) = TaskFiles::new(&config, CancellationToken::new()) {
//!     let key = TaskFiles::key(job_id, "input.csv").unwrap();
//!     files.store().put(&key, "a,b\n1,2\n".into()).await.unwrap();
//!     // Returns at once; deletes jobs/{job_id}/ in the background, unless the
//!     // check then says the job no longer stands ended (an operator retried it).
//!     files.job_ended(job_id, || Box::pin(async { true }));
//! }
//! # }
//! ```

mod cleanup;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

pub use cleanup::CleanupStats;
pub use store::{Download, ObjectInfo, ObjectStore, S3Error, handler_slots};

use crate::config::Config;
use crate::model::JobId;

/// Where every job's folder lives in the bucket.
pub const JOBS_PREFIX: &str = "jobs/";

/// The most a blueprint handler may read or write in one file.
pub const MAX_SMALL_FILE: u64 = 1 << 20;

/// The most files one listing returns.
pub const MAX_LISTED: usize = 1000;

/// The largest client upload: S3's limit on one PUT.
pub const MAX_UPLOAD: u64 = 5 << 30;

/// The longest file name (below the job's folder), in bytes.
pub const MAX_NAME: usize = 512;

/// Why a client upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the file is larger than the {} GiB one upload may hold", MAX_UPLOAD >> 30)]
    TooLarge,
    #[error("reading the upload broke off: {0}")]
    Body(String),
    #[error("cannot spool the upload in TASK_FILES_DIR ({path}): {source}")]
    Local { path: String, source: std::io::Error },
    #[error(transparent)]
    S3(#[from] S3Error),
}

/// The payload offloading service: the object store, the local directory
/// and the background cleanup. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct TaskFiles {
    inner: Arc<Inner>,
    /// The object store, as clients or as handlers use it ([`Self::for_handlers`]).
    store: ObjectStore,
}

#[derive(Debug)]
struct Inner {
    local_root: PathBuf,
    cleanup: cleanup::Cleanup,
}

impl TaskFiles {
    /// The service, when S3 is configured. Cleanups still waiting when
    /// `shutdown` fires are abandoned (the files stay; see the README).
    pub fn new(config: &Config, shutdown: CancellationToken) -> Option<Self> {
        let s3 = config.s3.as_ref()?;
        let store = ObjectStore::new(s3, &config.s3_default_bucket, &config.s3_region, config.s3_max_concurrency);
        let cleanup = cleanup::Cleanup::new(config.task_files_cleanup, shutdown);
        Some(Self { inner: Arc::new(Inner { local_root: config.task_files_dir.clone(), cleanup }), store })
    }

    pub fn store(&self) -> &ObjectStore {
        &self.store
    }

    /// The service as blueprint handlers use it: their S3 requests may take
    /// the slots kept for them, which clients and cleanups never get.
    pub fn for_handlers(&self) -> Self {
        Self { inner: self.inner.clone(), store: self.store.for_handlers() }
    }

    /// `jobs/{job_id}/`: the job's folder in the bucket.
    pub fn prefix(job_id: JobId) -> String {
        format!("{JOBS_PREFIX}{job_id}/")
    }

    /// The key of the job's file `name`, once the name is checked.
    pub fn key(job_id: JobId, name: &str) -> Result<String, String> {
        check_name(name)?;
        Ok(format!("{}{name}", Self::prefix(job_id)))
    }

    /// `TASK_FILES_DIR/{job_id}`: the job's local folder.
    pub fn local_dir(&self, job_id: JobId) -> PathBuf {
        self.inner.local_root.join(job_id.to_string())
    }

    /// The job's files, in name order (at most [`MAX_LISTED`]); names are
    /// relative to the job's folder.
    pub async fn list(&self, job_id: JobId) -> Result<Vec<ObjectInfo>, S3Error> {
        let prefix = Self::prefix(job_id);
        let objects = self.store().list(&prefix, MAX_LISTED).await?;
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let name = o.key.strip_prefix(&prefix)?.to_owned();
                (!name.is_empty()).then_some(ObjectInfo { key: name, size: o.size })
            })
            .collect())
    }

    /// Streams `body` into the job's file `name`: spooled to the job's local
    /// folder (constant memory, whatever the size), then sent to S3 with its
    /// length, then the spooled copy is removed. Returns the size.
    pub async fn upload<S, E>(&self, job_id: JobId, key: &str, body: S) -> Result<u64, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let dir = self.local_dir(job_id).join("uploads");
        let local = |source| UploadError::Local { path: dir.display().to_string(), source };
        tokio::fs::create_dir_all(&dir).await.map_err(local)?;
        let spool = dir.join(uuid::Uuid::new_v4().to_string());
        let result = async {
            let size = spool_to(&spool, body).await?;
            self.store().put_file(key, &spool).await?;
            Ok(size)
        }
        .await;
        if let Err(e) = tokio::fs::remove_file(&spool).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%job_id, path = %spool.display(), error = %e, "cannot remove a spooled upload");
        }
        result
    }

    /// A job just ended: deletes its folder in S3 and its local folder after
    /// the retention time, in the background, retrying failures. Returns at
    /// once. `still_ended` is asked when the time comes: a job revived since
    /// (an operator's retry) keeps its files, and its next end schedules again.
    pub fn job_ended(&self, job_id: JobId, still_ended: impl FnOnce() -> BoxFuture<'static, bool> + Send + 'static) {
        self.inner.cleanup.schedule(job_id, self.clone(), Box::new(still_ended));
    }

    /// Cleanups so far.
    pub fn cleanup_stats(&self) -> CleanupStats {
        self.inner.cleanup.stats()
    }

    /// Deletes the job's files now, once: S3 first, then the local folder.
    async fn clean(&self, job_id: JobId) -> Result<usize, String> {
        let deleted = self.store().delete_prefix(&Self::prefix(job_id)).await.map_err(|e| e.to_string())?;
        let dir = self.local_dir(job_id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot delete {}: {e}", dir.display())),
        }
        Ok(deleted)
    }
}

/// Writes `body` to a new file at `path`; its size.
async fn spool_to<S, E>(path: &Path, body: S) -> Result<u64, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let local = |source| UploadError::Local { path: path.display().to_string(), source };
    let mut file = tokio::fs::File::create(path).await.map_err(local)?;
    let mut size = 0u64;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
        size += chunk.len() as u64;
        if size > MAX_UPLOAD {
            return Err(UploadError::TooLarge);
        }
        file.write_all(&chunk).await.map_err(local)?;
    }
    file.flush().await.map_err(local)?;
    Ok(size)
}

/// A file name below a job's folder: `input.csv`, `frames/0001.png`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the file name is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("the file name is longer than {MAX_NAME} bytes"));
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!("the file name {name:?} holds a control character or a backslash"));
    }
    if name.split('/').any(|segment| matches!(segment, "" | "." | "..")) {
        return Err(format!("the file name {name:?} has an empty, `.` or `..` segment (or starts or ends with `/`)"));
    }
    // S3 keeps `%2e%2e` literally, but the name reaches workers inside an
    // `s3://` URI, and an SDK that decodes and normalises URIs would turn
    // `a/%2e%2e/%2e%2e/{other job}/x` into another job's file. So the name
    // must also stay clean once decoded, however many times.
    let decoded = percent_decoded(name);
    if decoded.split(['/', '\\']).any(|segment| matches!(segment, "" | "." | "..")) {
        return Err(format!(
            "the file name {name:?} has a percent-encoded `.`, `..`, `/` or `\\` that makes an empty, `.` or `..` segment once decoded"
        ));
    }
    Ok(())
}

/// `text` with its percent escapes decoded until none is left (so that
/// `%252e` counts as `.` too); undecodable bytes become U+FFFD.
fn percent_decoded(text: &str) -> String {
    let mut current = text.to_owned();
    // Each round shortens the text, so this ends; the bound only keeps a
    // hostile name from costing more than a few passes.
    for _ in 0..8 {
        let bytes = current.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
                (b'%', Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                }
                (byte, _, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        let next = String::from_utf8_lossy(&out).into_owned();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// Whether `adopt` may move the object `key` into the job `job_id`'s
/// folder: a worker's upload, which the worker SDKs put outside every job's
/// folder (the top of the bucket), or a file already in this job's folder.
/// Any other key under `jobs/` belongs to another job: moving it would hand
/// that job's file to this job's client and delete it from its owner, so it
/// is refused. The key must also be a clean name (see [`check_name`]), so
/// no `..`, `%2e%2e` or `//` can make S3 or a proxy resolve it elsewhere.
pub fn check_adoptable(key: &str, job_id: JobId) -> Result<(), String> {
    check_name(key).map_err(|e| format!("cannot adopt {key:?}: {e}"))?;
    let own = TaskFiles::prefix(job_id);
    if key.starts_with(JOBS_PREFIX) && !key.starts_with(&own) {
        return Err(format!(
            "cannot adopt {key:?}: it is in another job's folder; adopt takes only a worker's upload (outside `{JOBS_PREFIX}`) or a file of this job (`{own}`)"
        ));
    }
    Ok(())
}

/// The key an `s3://{bucket}/{key}` URI names, when it is in `bucket`.
pub fn key_of_uri<'a>(uri: &'a str, bucket: &str) -> Result<&'a str, String> {
    let rest = uri.strip_prefix("s3://").ok_or_else(|| format!("{uri:?} is not an s3:// URI"))?;
    let (in_bucket, key) = rest.split_once('/').ok_or_else(|| format!("{uri:?} names no object"))?;
    if in_bucket != bucket {
        return Err(format!("{uri:?} is not in the bucket {bucket}"));
    }
    if key.is_empty() || key.ends_with('/') {
        return Err(format!("{uri:?} names a folder, not an object"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_job_folder() {
        for good in ["input.csv", "frames/0001.png", "a b.txt", "ünï.txt", "..hidden", "x..y"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", "/abs", "a//b", "../x", "a/../b", "./a", "dir/", "a\\b", "a\nb", &"x".repeat(513)] {
            assert!(check_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn keys_are_under_the_job_prefix() {
        let job = uuid::Uuid::nil();
        assert_eq!(TaskFiles::key(job, "a/b.txt").as_deref(), Ok("jobs/00000000-0000-0000-0000-000000000000/a/b.txt"));
        assert!(TaskFiles::key(job, "../other/x").is_err());
    }

    #[test]
    fn percent_encoded_dot_segments_are_refused() {
        for good in ["100%.txt", "a%2e%2eb", "%41.txt", "x%2e", "%zz", "50%25-off.csv"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "a/%2e%2e/%2e%2e/jobs/x/input.txt",
            "%2E%2E/x",
            "%2E./x",
            ".%2e/x",
            "a/%2e/b",
            "a/%252e%252e/b",
            "..%2fx",
            "a%2f%2fb",
            "x/%2e%2e",
            "a%5c..%5cb",
        ] {
            let refused = check_name(bad).expect_err(bad);
            assert!(refused.contains("percent-encoded"), "{bad}: {refused}");
        }
    }

    #[test]
    fn adopt_takes_worker_uploads_and_own_files_only() {
        let job = uuid::Uuid::nil();
        let own = TaskFiles::prefix(job);
        for good in ["worker-output.txt".to_owned(), "uploads/abc/out.bin".to_owned(), format!("{own}tmp.txt")] {
            assert_eq!(check_adoptable(&good, job), Ok(()), "{good}");
        }
        let other = TaskFiles::prefix(uuid::Uuid::max());
        for bad in [
            format!("{other}input.txt"),
            "jobs/x".to_owned(),
            format!("{own}../{other}input.txt"),
            "/jobs/x".to_owned(),
            format!("{own}%2e%2e/%2e%2e/x"),
            "a//b".to_owned(),
        ] {
            assert!(check_adoptable(&bad, job).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn uris_name_keys_of_one_bucket() {
        assert_eq!(key_of_uri("s3://b/out.txt", "b"), Ok("out.txt"));
        assert_eq!(key_of_uri("s3://b/jobs/1/x", "b"), Ok("jobs/1/x"));
        for bad in ["s3://other/out.txt", "http://b/out.txt", "s3://b", "s3://b/", "s3://b/dir/"] {
            assert!(key_of_uri(bad, "b").is_err(), "{bad}");
        }
    }
}
