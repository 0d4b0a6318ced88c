//! The client file endpoints stream: the real `avtomatika` binary uploads a
//! 200 MiB file to S3 and downloads it again while its resident memory is
//! sampled, and must stay within a bound far below the file's size.
//!
//! Needs the S3-compatible test server (moto; `bash .ci/s3-server`, or
//! `AVTOMATIKA_TEST_S3`), and fails, never skips, without it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use avtomatika::config::S3Config;
use avtomatika::files::ObjectStore;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_avtomatika");
const TOKEN: &str = "streaming-test-token";

/// The file moved each way.
const FILE_SIZE: u64 = 200 << 20;
/// Chunks the client sends.
const CHUNK: usize = 64 << 10;
/// The most the server's resident memory may grow while it streams the
/// file both ways: a fraction of the file.
const RSS_BOUND: u64 = 48 << 20;

/// The test S3 server's URL; `.ci/s3-server` starts it (moto from PyPI)
/// when nothing listens there, so a plain `cargo test` needs no step first.
fn s3_endpoint() -> String {
    let url = std::env::var("AVTOMATIKA_TEST_S3")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:5055".into());
    let authority = url.trim_start_matches("http://").trim_start_matches("https://");
    let authority = authority.split('/').next().unwrap_or(authority);
    if std::net::TcpStream::connect(authority).is_err() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/s3-server");
        let status = std::process::Command::new("bash")
            .arg(script)
            .env("AVTOMATIKA_TEST_S3", &url)
            .stdout(std::process::Stdio::null())
            .status();
        assert!(matches!(status, Ok(s) if s.success()), "cannot start the S3 test server with {script}: {status:?}");
    }
    url
}

/// Byte `i` of the test file: cheap, and not compressible by accident.
fn byte_at(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn chunk(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| byte_at(offset + i)).collect()
}

/// The server's resident set size in bytes (`VmRSS`).
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary against S3 and returns it with its `host:port`.
fn start(bucket: &str, files_dir: &std::path::Path) -> (Server, String) {
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    for keep in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(keep) {
            cmd.env(keep, value);
        }
    }
    // HOME is kept for tools, not for the plugin cache: never write to the
    // user's ~/.cache/avtomatika from a test.
    cmd.env("PLUGIN_CACHE_DIR", "off");
    cmd.envs([
        ("API_HOST", "127.0.0.1"),
        ("API_PORT", "0"),
        ("CLIENT_TOKEN", TOKEN),
        ("GLOBAL_WORKER_TOKEN", "streaming-test-worker"),
        ("LOG_FORMAT", "text"),
        ("S3_ENDPOINT_URL", &s3_endpoint()),
        ("S3_ACCESS_KEY", "avtomatika-test-access"),
        ("S3_SECRET_KEY", "avtomatika-test-secret"),
        ("S3_DEFAULT_BUCKET", bucket),
    ]);
    cmd.env("TASK_FILES_DIR", files_dir);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start avtomatika");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("serving")
                && let Some(start) = line.find("127.0.0.1:")
            {
                let port: String = line[start + 10..].chars().take_while(char::is_ascii_digit).collect();
                let _ = sender.send(format!("127.0.0.1:{port}"));
            }
        }
    });
    let addr = receiver.recv_timeout(Duration::from_secs(120)).expect("the server serves within 2 minutes");
    (Server { child }, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_file_streams_both_ways_in_bounded_memory() {
    let endpoint = s3_endpoint();
    let bucket = format!("avtomatika-stream-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let s3 = S3Config {
        endpoint_url: endpoint.clone(),
        access_key: "avtomatika-test-access".into(),
        secret_key: "avtomatika-test-secret".into(),
    };
    let store = ObjectStore::new(&s3, &bucket, "us-east-1", 4);
    store.create_bucket().await.unwrap_or_else(|e| {
        panic!("the S3 test server at {endpoint} is needed (start it with `bash .ci/s3-server`): {e}")
    });
    let files_dir = tempfile::tempdir().expect("TASK_FILES_DIR");
    let (server, addr) = start(&bucket, files_dir.path());
    let pid = server.child.id();
    let http = reqwest::Client::new();

    // A job that waits (for a human), so it can take files.
    let created: Value = http
        .post(format!("http://{addr}/api/v1/jobs/uppercase"))
        .header("X-Avtomatika-Token", TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("create answer");
    let job_id = created["job_id"].as_str().expect("job_id").to_owned();
    let file_url = format!("http://{addr}/api/v1/jobs/{job_id}/files/big.bin");

    // Warm up: one small file each way, so connection pools and buffers
    // exist before the baseline is taken.
    let warm = http.put(&file_url).header("X-Avtomatika-Token", TOKEN).body(vec![7u8; 1 << 20]).send().await;
    assert_eq!(warm.expect("warm-up upload").status(), 201);
    let warm = http.get(&file_url).header("X-Avtomatika-Token", TOKEN).send().await.expect("warm-up download");
    assert_eq!(warm.bytes().await.expect("warm-up body").len(), 1 << 20);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss(pid).expect("the server's VmRSS");

    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some(now) = rss(pid) {
                    peak.fetch_max(now, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let started = Instant::now();
    let body = futures::stream::iter((0..FILE_SIZE).step_by(CHUNK)).map(|offset| {
        let len = CHUNK.min((FILE_SIZE - offset) as usize);
        Ok::<_, std::io::Error>(Bytes::from(chunk(offset, len)))
    });
    let uploaded = http
        .put(&file_url)
        .header("X-Avtomatika-Token", TOKEN)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("upload");
    let status = uploaded.status();
    let answer: Value = uploaded.json().await.unwrap_or_default();
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["size"], FILE_SIZE, "{answer}");
    let upload_time = started.elapsed();

    let started = Instant::now();
    let response = http.get(&file_url).header("X-Avtomatika-Token", TOKEN).send().await.expect("download");
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(FILE_SIZE));
    let mut stream = response.bytes_stream();
    let mut offset = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.expect("download body");
        for (i, byte) in piece.iter().enumerate() {
            assert_eq!(*byte, byte_at(offset + i as u64), "byte {} differs", offset + i as u64);
        }
        offset += piece.len() as u64;
    }
    assert_eq!(offset, FILE_SIZE);
    let download_time = started.elapsed();

    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("the sampler");
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    println!(
        "streamed {} MiB up in {upload_time:?} and down in {download_time:?}; server VmRSS {} MiB before, \
         peak {} MiB during (growth {:.1} MiB, bound {} MiB)",
        FILE_SIZE >> 20,
        baseline >> 20,
        peak.load(Ordering::Relaxed) >> 20,
        growth as f64 / f64::from(1 << 20),
        RSS_BOUND >> 20,
    );
    assert!(growth < RSS_BOUND, "the server grew by {growth} bytes while streaming {FILE_SIZE} bytes");
    // The spooled upload is gone once it is in S3.
    let spool = files_dir.path().join(&job_id).join("uploads");
    let left: Vec<_> = std::fs::read_dir(&spool).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "spooled uploads left behind: {left:?}");
    drop(server);
    let _ = store.delete_prefix("").await;
}
