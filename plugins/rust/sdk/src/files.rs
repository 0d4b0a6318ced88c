//! The job's files in S3: its folder `jobs/{job_id}/` in the server's bucket.
//!
//! Handlers read and write small files (up to 1 MiB) whole, and pass large
//! ones to workers as `s3://` URIs: the Python worker SDK downloads every
//! `s3://` string in a task's params before its handler runs, and uploads the
//! files a handler returns, answering with their `s3://` URIs. [`adopt`]
//! moves such an upload into the job's folder, where it is deleted with the
//! job and the client can download it (`GET /api/v1/jobs/{id}/files/{name}`).
//!
//! ```ignore
//! use avtomatika_blueprint::{Next, Task, files, json};
//!
//! fn start() -> Result<Next, String> {
//!     // `?` turns a `FileError` into the handler's error text.
//!     let input = files::write("input.txt", "hello")?;
//!     Ok(Next::dispatch(Task::new("uppercase_file", json!({ "input": input })).on("success", "collect")))
//! }
//!
//! fn collect(output_uri: &str) -> Result<Next, String> {
//!     let output = files::adopt(output_uri, "output.txt")?;
//!     let text = files::read_string("output.txt")?;
//!     Ok(Next::go_to("finished").with_history(json!({ "output": output.uri, "text": text })))
//! }
//! ```
//!
//! Without S3 on the server every function answers [`FileError::Disabled`].

use std::fmt;

use crate::bindings::avtomatika::blueprint::task_files::{self as wit, FileError as WitFileError};

/// The most a handler may read or write in one file.
pub const MAX_SMALL_FILE: usize = 1 << 20;

/// Why a file operation failed.
///
/// Converts into `String`, so `?` works in a handler returning
/// `Result<Next, String>`: the handler then fails and the host retries it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileError {
    /// The server has no S3 configured.
    Disabled,
    /// No such file.
    NotFound(String),
    /// The request was refused (a bad name, a file over 1 MiB, a URI outside
    /// the bucket). Retrying will not help.
    Invalid(String),
    /// S3 could not be reached, timed out or refused the server's
    /// credentials. Failing the handler (with `?`) lets the host retry it.
    Unavailable(String),
    /// [`read_string`] found bytes that are not UTF-8.
    NotText(String),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disabled => f.write_str("task files are unavailable: the server has no S3 configured"),
            Self::NotFound(message) => write!(f, "task file not found: {message}"),
            Self::Invalid(message) => write!(f, "task file request refused: {message}"),
            Self::Unavailable(message) => write!(f, "task files unavailable: {message}"),
            Self::NotText(message) => write!(f, "task file is not UTF-8 text: {message}"),
        }
    }
}

impl std::error::Error for FileError {}

impl From<FileError> for String {
    fn from(error: FileError) -> Self {
        error.to_string()
    }
}

impl From<WitFileError> for FileError {
    fn from(error: WitFileError) -> Self {
        match error {
            WitFileError::Disabled => Self::Disabled,
            WitFileError::NotFound(message) => Self::NotFound(message),
            WitFileError::Invalid(message) => Self::Invalid(message),
            WitFileError::Unavailable(message) => Self::Unavailable(message),
        }
    }
}

/// One file of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The name below the job's folder, e.g. `input.csv`.
    pub name: String,
    /// The size in bytes.
    pub size: u64,
    /// `s3://{bucket}/jobs/{job_id}/{name}`.
    pub uri: String,
}

impl From<wit::FileInfo> for FileInfo {
    fn from(info: wit::FileInfo) -> Self {
        Self { name: info.name, size: info.size, uri: info.uri }
    }
}

/// The job's files, in name order (at most 1000).
pub fn list() -> Result<Vec<FileInfo>, FileError> {
    Ok(wit::list()?.into_iter().map(FileInfo::from).collect())
}

/// The bytes of the file `name` (at most 1 MiB).
pub fn read(name: &str) -> Result<Vec<u8>, FileError> {
    Ok(wit::read(name)?)
}

/// The file `name` as UTF-8 text (at most 1 MiB).
pub fn read_string(name: &str) -> Result<String, FileError> {
    String::from_utf8(read(name)?).map_err(|e| FileError::NotText(format!("{name}: {e}")))
}

/// Creates or replaces the file `name` (at most 1 MiB); returns its URI.
pub fn write(name: &str, contents: impl AsRef<[u8]>) -> Result<String, FileError> {
    Ok(wit::write(name, contents.as_ref())?)
}

/// Deletes the file `name`; `true` when it existed.
pub fn delete(name: &str) -> Result<bool, FileError> {
    Ok(wit::delete(name)?)
}

/// The URI of the file `name` (which need not exist yet), for a worker.
pub fn uri(name: &str) -> Result<String, FileError> {
    Ok(wit::uri(name)?)
}

/// Moves the object at `source` (an `s3://` URI in the server's bucket, such
/// as a worker's upload) to the job's file `name`; returns the new file.
pub fn adopt(source: &str, name: &str) -> Result<FileInfo, FileError> {
    Ok(wit::adopt(source, name)?.into())
}
