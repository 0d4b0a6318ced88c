//! The S3-compatible server of the payload offloading tests: moto
//! (`moto[server]` from PyPI), which `.ci/s3-server` installs and starts (as
//! `.ci/run` does) at `AVTOMATIKA_TEST_S3`, default `http://127.0.0.1:5055`.
//! A test fails, never skips, when it is not there.
//!
//! Each [`TestS3`] has a bucket of its own and a private `TASK_FILES_DIR`,
//! so tests run side by side on one server.

use std::time::{Duration, Instant};

use avtomatika::config::{CleanupSettings, Config, S3Config};
use avtomatika::files::ObjectStore;
use tempfile::TempDir;

/// Where `.ci/s3-server` starts moto.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:5055";
/// moto takes any credentials; these are what the tests sign with.
pub const ACCESS_KEY: &str = "avtomatika-test-access";
pub const SECRET_KEY: &str = "avtomatika-test-secret";

/// The S3 server's URL: `AVTOMATIKA_TEST_S3`, else [`DEFAULT_ENDPOINT`].
pub fn endpoint() -> String {
    std::env::var("AVTOMATIKA_TEST_S3").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| DEFAULT_ENDPOINT.into())
}

/// Starts the test S3 server with `.ci/s3-server` (moto from PyPI, installed
/// on first use) when nothing answers at `endpoint`, so that a plain
/// `cargo test --workspace` needs no step before it.
pub async fn ensure_server(endpoint: &str) {
    let client = reqwest::Client::new();
    if client.get(endpoint).timeout(Duration::from_secs(5)).send().await.is_ok() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/s3-server");
    let status = tokio::process::Command::new("bash")
        .arg(script)
        .env("AVTOMATIKA_TEST_S3", endpoint)
        .stdout(std::process::Stdio::null())
        .status()
        .await;
    if !matches!(status, Ok(s) if s.success()) {
        panic!("cannot start the S3-compatible test server with {script}: {status:?}");
    }
}

/// One test's bucket on the test S3 server, and a local folder for the
/// server's `TASK_FILES_DIR`.
pub struct TestS3 {
    pub endpoint: String,
    pub bucket: String,
    /// A client of the bucket, for looking at what the server stored.
    pub store: ObjectStore,
    pub files_dir: TempDir,
}

impl TestS3 {
    /// A fresh bucket. Panics (failing the test) when the S3 server is not up.
    pub async fn new() -> Self {
        let endpoint = endpoint();
        ensure_server(&endpoint).await;
        if let Err(e) = reqwest::Client::new().get(&endpoint).timeout(Duration::from_secs(10)).send().await {
            panic!(
                "the S3-compatible test server is not reachable at {endpoint} ({e}); start it with \
                 `bash .ci/s3-server` (moto from PyPI) or point AVTOMATIKA_TEST_S3 at one"
            );
        }
        let bucket = format!("avtomatika-test-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let store = ObjectStore::new(&s3_config(&endpoint), &bucket, "us-east-1", 16);
        store.create_bucket().await.unwrap_or_else(|e| panic!("creating the test bucket {bucket} at {endpoint}: {e}"));
        let files_dir = tempfile::tempdir().expect("a temporary TASK_FILES_DIR");
        Self { endpoint, bucket, store, files_dir }
    }

    /// `config` with S3 on this bucket (cleanup at once, quick retries).
    pub fn config(&self, config: Config) -> Config {
        self.config_via(&self.endpoint.clone(), config)
    }

    /// [`config`](Self::config) with the server reaching S3 at `endpoint`
    /// (a proxy, or somewhere nothing listens).
    pub fn config_via(&self, endpoint: &str, config: Config) -> Config {
        Config {
            s3: Some(s3_config(endpoint)),
            s3_default_bucket: self.bucket.clone(),
            task_files_dir: self.files_dir.path().to_owned(),
            task_files_cleanup: CleanupSettings {
                retention: Duration::ZERO,
                max_attempts: 20,
                retry_initial: Duration::from_millis(100),
            },
            ..config
        }
    }

    /// The keys under `prefix`, in order.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let listed = self.store.list(prefix, 10_000).await;
        listed
            .unwrap_or_else(|e| panic!("listing {prefix} in {}: {e}", self.bucket))
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    /// Waits (up to `timeout`) until nothing is left under `prefix`.
    pub async fn wait_until_empty(&self, prefix: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let keys = self.keys(prefix).await;
            if keys.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{prefix} still holds {keys:?} after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Static test credentials for `endpoint`.
pub fn s3_config(endpoint: &str) -> S3Config {
    S3Config { endpoint_url: endpoint.to_owned(), access_key: ACCESS_KEY.into(), secret_key: SECRET_KEY.into() }
}
