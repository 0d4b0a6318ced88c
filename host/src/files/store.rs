//! The S3 client: path-style requests to `S3_ENDPOINT_URL` with static
//! credentials, every request under one global limit (`S3_MAX_CONCURRENCY`,
//! a few of whose slots only blueprint handlers may take),
//! and every failure turned into an [`S3Error`] whose text says what went
//! wrong in words (never the SDK's bare "service error").

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::S3Config;

/// How long connecting to S3 may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest S3 may stay silent in the middle of an answer. Whole
/// transfers have no limit: a large file takes as long as it takes.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The chunk a spooled upload is read and sent in.
const UPLOAD_BUFFER: usize = 256 << 10;
/// Attempts the SDK makes at one request (throttling, 5xx, lost connections).
const SDK_ATTEMPTS: u32 = 2;

/// Why an S3 operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3Error {
    /// The object (or the bucket) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// S3 could not be reached, timed out, refused the credentials or failed.
    #[error("{0}")]
    Unavailable(String),
}

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// A downloading object: its size and its bytes, holding one of the
/// `S3_MAX_CONCURRENCY` slots until the body is dropped.
pub struct Download {
    pub size: Option<u64>,
    pub body: ByteStream,
    pub slot: OwnedSemaphorePermit,
}

/// The S3-compatible object store behind payload offloading.
#[derive(Clone)]
pub struct ObjectStore {
    client: Client,
    bucket: String,
    /// `S3_ENDPOINT_URL`, for messages.
    endpoint: String,
    slots: Slots,
    /// Which slots this handle's requests may take.
    lane: Lane,
}

/// The `S3_MAX_CONCURRENCY` slots, split in two: most are shared by
/// everything, a few only blueprint handlers may take, so that clients
/// (uploads, downloads) and cleanups can never use up every slot and make
/// handler calls, which give up after seconds, fail jobs.
#[derive(Clone)]
struct Slots {
    shared: Arc<Semaphore>,
    handlers_only: Arc<Semaphore>,
}

/// Who is asking for a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// Client requests and cleanups: shared slots only.
    Shared,
    /// Blueprint handler calls: a shared slot or a reserved one.
    Handlers,
}

/// How many of `max` slots are kept for handler calls: a tenth, at least one
/// and at most ten, none when there is only one slot.
pub fn handler_slots(max: usize) -> usize {
    if max < 2 { 0 } else { (max / 10).clamp(1, 10) }
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore").field("endpoint", &self.endpoint).field("bucket", &self.bucket).finish()
    }
}

impl ObjectStore {
    /// A client for `s3` (no request is made yet: S3 being down at start-up
    /// fails the jobs that need it, not the server).
    pub fn new(s3: &S3Config, bucket: &str, region: &str, max_concurrency: usize) -> Self {
        let credentials =
            Credentials::new(s3.access_key.expose(), s3.secret_key.expose(), None, None, "avtomatika-config");
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(s3.endpoint_url.trim_end_matches('/'))
            .region(Region::new(region.to_owned()))
            .credentials_provider(credentials)
            // Buckets as the first path segment, not a subdomain: what
            // MinIO, Ceph, moto and most S3-compatible servers expect.
            .force_path_style(true)
            .http_client(http)
            .timeout_config(
                TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).read_timeout(READ_TIMEOUT).build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(SDK_ATTEMPTS))
            // Checksums only where S3 requires them: the SDK's newer default
            // (CRC32 on every upload, sent as an aws-chunked trailer) is not
            // understood by every S3-compatible server.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Self {
            client: Client::from_conf(config),
            bucket: bucket.to_owned(),
            endpoint: endpoint_for_messages(&s3.endpoint_url),
            slots: {
                let max = max_concurrency.clamp(1, Semaphore::MAX_PERMITS);
                let reserved = handler_slots(max);
                Slots {
                    shared: Arc::new(Semaphore::new(max - reserved)),
                    handlers_only: Arc::new(Semaphore::new(reserved)),
                }
            },
            lane: Lane::Shared,
        }
    }

    /// This store as blueprint handlers use it: its requests may also take
    /// the slots kept for handlers (see [`handler_slots`]).
    pub fn for_handlers(&self) -> Self {
        Self { lane: Lane::Handlers, ..self.clone() }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://{bucket}/{key}`.
    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, S3Error> {
        let shared = self.slots.shared.clone();
        let permit = match self.lane {
            Lane::Shared => shared.acquire_owned().await,
            // Whichever frees first; a permit handed to the losing branch
            // goes back to its semaphore when that future is dropped.
            Lane::Handlers => tokio::select! {
                biased;
                permit = shared.acquire_owned() => permit,
                permit = self.slots.handlers_only.clone().acquire_owned() => permit,
            },
        };
        permit.map_err(|_| S3Error::Unavailable("S3 client is shut down".into()))
    }

    /// Creates the bucket unless it exists (for tests and first set-ups).
    pub async fn create_bucket(&self) -> Result<(), S3Error> {
        let _slot = self.slot().await?;
        match self.client.create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) => Ok(()),
            Err(e) => Err(self.classify(&format!("creating bucket {}", self.bucket), e)),
        }
    }

    /// Stores `bytes` under `key`.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), S3Error> {
        let _slot = self.slot().await?;
        let request = self.client.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(bytes));
        request.send().await.map(drop).map_err(|e| self.classify(&format!("writing {}", self.uri(key)), e))
    }

    /// Streams the file at `path` into `key` (its length is known, so the
    /// body is never held in memory).
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<(), S3Error> {
        let body = ByteStream::read_from()
            .path(path)
            .buffer_size(UPLOAD_BUFFER)
            .build()
            .await
            .map_err(|e| S3Error::Unavailable(format!("cannot read the spooled upload {}: {e}", path.display())))?;
        let _slot = self.slot().await?;
        let request = self.client.put_object().bucket(&self.bucket).key(key).body(body);
        request.send().await.map(drop).map_err(|e| self.classify(&format!("writing {}", self.uri(key)), e))
    }

    /// Starts downloading `key`.
    pub async fn get(&self, key: &str) -> Result<Download, S3Error> {
        let slot = self.slot().await?;
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify(&format!("reading {}", self.uri(key)), e))?;
        let size = object.content_length().and_then(|n| u64::try_from(n).ok());
        Ok(Download { size, body: object.body, slot })
    }

    /// The whole object at `key`, refused (without reading it) when it is
    /// larger than `limit` bytes: `Ok(Err(size))`.
    pub async fn get_small(&self, key: &str, limit: u64) -> Result<Result<Bytes, u64>, S3Error> {
        let download = self.get(key).await?;
        if let Some(size) = download.size.filter(|size| *size > limit) {
            return Ok(Err(size));
        }
        let mut body = download.body;
        let mut bytes = Vec::new();
        loop {
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() as u64 > limit {
                        return Ok(Err(bytes.len() as u64));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(S3Error::Unavailable(format!(
                        "reading {} broke off: {}",
                        self.uri(key),
                        DisplayErrorContext(e)
                    )));
                }
            }
        }
        Ok(Ok(Bytes::from(bytes)))
    }

    /// The size of `key`.
    pub async fn size(&self, key: &str) -> Result<u64, S3Error> {
        let _slot = self.slot().await?;
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify(&format!("looking up {}", self.uri(key)), e))?;
        Ok(head.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    /// The objects whose keys start with `prefix`, in key order, at most `limit`.
    pub async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ObjectInfo>, S3Error> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = {
                let _slot = self.slot().await?;
                let max = i32::try_from(limit - objects.len()).unwrap_or(1000).min(1000);
                self.client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .max_keys(max)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| self.classify(&format!("listing {}", self.uri(prefix)), e))?
            };
            for object in page.contents() {
                if let Some(key) = object.key() {
                    let size = object.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
                    objects.push(ObjectInfo { key: key.to_owned(), size });
                }
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() || objects.len() >= limit {
                objects.truncate(limit);
                return Ok(objects);
            }
        }
    }

    /// Deletes `key`; deleting a missing object is not an error (S3 says so too).
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        let _slot = self.slot().await?;
        let request = self.client.delete_object().bucket(&self.bucket).key(key);
        request.send().await.map(drop).map_err(|e| self.classify(&format!("deleting {}", self.uri(key)), e))
    }

    /// Deletes every object under `prefix`; returns how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, S3Error> {
        let mut deleted = 0;
        loop {
            let batch = self.list(prefix, 1000).await?;
            if batch.is_empty() {
                return Ok(deleted);
            }
            // One DeleteObject per key: every S3-compatible server has it,
            // while DeleteObjects wants a Content-MD5 some SDK defaults omit.
            for object in &batch {
                self.delete(&object.key).await?;
            }
            deleted += batch.len();
        }
    }

    /// Copies `from` to `to` inside the bucket (S3 copies; nothing passes
    /// through this server; up to 5 GiB).
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), S3Error> {
        let _slot = self.slot().await?;
        let source = format!("{}/{}", self.bucket, encode_key(from));
        let request = self.client.copy_object().bucket(&self.bucket).key(to).copy_source(source);
        request.send().await.map(drop).map_err(|e| self.classify(&format!("copying {} to {to}", self.uri(from)), e))
    }

    /// Turns an SDK error into words: what was being done, and whether S3
    /// was unreachable, refused the credentials or lacked the object.
    fn classify<E>(&self, doing: &str, error: SdkError<E>) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = error.raw_response().map(|r| r.status().as_u16());
        let code = error.code().map(str::to_owned);
        let message = error.message().map(str::to_owned).unwrap_or_default();
        match (&error, status) {
            (SdkError::ServiceError(_), Some(404)) => {
                S3Error::NotFound(format!("{doing}: not found ({})", code.as_deref().unwrap_or("NoSuchKey")))
            }
            (SdkError::ServiceError(_), Some(403)) => S3Error::Unavailable(format!(
                "{doing}: S3 at {} refused the server's credentials or permissions ({}{}); check S3_ACCESS_KEY and S3_SECRET_KEY",
                self.endpoint,
                code.as_deref().unwrap_or("403 Forbidden"),
                if message.is_empty() { String::new() } else { format!(": {message}") },
            )),
            (SdkError::ServiceError(_), status) => S3Error::Unavailable(format!(
                "{doing}: S3 at {} answered {} {}{}",
                self.endpoint,
                status.map_or_else(|| "an error".to_owned(), |s| s.to_string()),
                code.as_deref().unwrap_or(""),
                if message.is_empty() { String::new() } else { format!(": {message}") },
            )),
            (SdkError::TimeoutError(_), _) => {
                S3Error::Unavailable(format!("{doing}: S3 at {} did not answer in time", self.endpoint))
            }
            (SdkError::DispatchFailure(_), _) => S3Error::Unavailable(format!(
                "{doing}: cannot reach S3 at {} ({})",
                self.endpoint,
                DisplayErrorContext(&error)
            )),
            _ => S3Error::Unavailable(format!(
                "{doing}: S3 at {} failed: {}",
                self.endpoint,
                DisplayErrorContext(&error)
            )),
        }
    }
}

/// `scheme://host[:port]` of the endpoint: never a user name, password,
/// path or query a URL may carry.
fn endpoint_for_messages(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(url) => match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
            (Some(host), None) => format!("{}://{host}", url.scheme()),
            (None, _) => "<no host>".to_owned(),
        },
        Err(_) => "<invalid URL>".to_owned(),
    }
}

/// Percent-encodes a key for `x-amz-copy-source` (everything but unreserved
/// characters and `/`).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{encode_key, endpoint_for_messages, handler_slots};

    #[test]
    fn a_few_slots_are_kept_for_handlers() {
        assert_eq!([1, 2, 4, 10, 25, 100, 1000].map(handler_slots), [0, 1, 1, 1, 2, 10, 10]);
    }

    #[test]
    fn messages_name_the_endpoint_without_credentials() {
        assert_eq!(endpoint_for_messages("http://user:pw@s3.local:9000/path?x=1"), "http://s3.local:9000");
        assert_eq!(endpoint_for_messages("https://s3.example.com"), "https://s3.example.com");
    }

    #[test]
    fn copy_sources_are_percent_encoded() {
        assert_eq!(encode_key("jobs/1/a b+c.txt"), "jobs/1/a%20b%2Bc.txt");
        assert_eq!(encode_key("plain/key-1_2.~"), "plain/key-1_2.~");
        assert_eq!(encode_key("ü"), "%C3%BC");
    }
}
