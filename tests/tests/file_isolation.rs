//! One client's job files stay out of another client's reach (issue 15,
//! review findings 6 and 22), through the real server against a real
//! S3-compatible server (moto): a worker cannot `adopt` another job's file,
//! and names that a URL-normalising worker SDK would resolve elsewhere
//! (percent-encoded dot segments) are refused.

use std::time::{Duration, Instant};

use avtomatika_tests::config::Config;
use avtomatika_tests::s3::TestS3;
use avtomatika_tests::{Auth, TestServer, test_config};
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

const ALICE: &str = "alice-token-7d21";
const MALLORY: &str = "mallory-token-c3f0";

/// A server on `s3` with the clients `alice` and `mallory`; the directory
/// holding `clients.toml` must outlive the server.
async fn two_client_server(s3: &TestS3, tune: impl FnOnce(&mut Config)) -> (TestServer, TempDir) {
    let clients = tempfile::tempdir().expect("a directory for clients.toml");
    let clients_file = clients.path().join("clients.toml");
    std::fs::write(&clients_file, format!("[alice]\ntoken = \"{ALICE}\"\n\n[mallory]\ntoken = \"{MALLORY}\"\n"))
        .expect("write clients.toml");
    let mut config = s3.config(Config { clients_config_path: Some(clients_file), job_max_retries: 1, ..test_config() });
    config.task_files_cleanup.retention = Duration::from_secs(60);
    tune(&mut config);
    (TestServer::start_with(config).await, clients)
}

/// Creates an `uppercase` job as `token` and waits until it asks for its input.
async fn uppercase_job(server: &TestServer, token: &str) -> String {
    let created = server.send(Method::POST, "/api/v1/jobs/uppercase", Auth::Client(token), Some("{}")).await;
    assert_eq!(created.status, 202, "{created:?}");
    let job_id = created.json()["job_id"].as_str().expect("job_id").to_owned();
    wait_as(server, token, &job_id, |job| job["status"] == "waiting_for_human").await;
    job_id
}

async fn put_file(server: &TestServer, token: &str, job_id: &str, name: &str, body: &'static str) -> u16 {
    let path = server.url(&format!("/api/v1/jobs/{job_id}/files/{name}"));
    let answer = server.http.put(path).header("X-Avtomatika-Token", token).body(body).send().await;
    answer.expect("upload request").status().as_u16()
}

async fn wait_as(server: &TestServer, token: &str, job_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = server.send(Method::GET, &format!("/api/v1/jobs/{job_id}"), Auth::Client(token), None).await.json();
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {job_id} did not get there: {job:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ended(job: &Value) -> bool {
    matches!(job["status"].as_str(), Some("finished" | "failed" | "quarantined" | "cancelled"))
}

/// The review's reproduction of finding 6: mallory's worker answers her
/// `uppercase` task with the URI of alice's input. The host refuses to move
/// it: mallory's job ends saying why, and alice's file is still hers.
#[tokio::test]
async fn a_worker_cannot_adopt_another_jobs_file() {
    let s3 = TestS3::new().await;
    let (server, _clients) = two_client_server(&s3, |_| {}).await;

    let victim = uppercase_job(&server, ALICE).await;
    assert_eq!(put_file(&server, ALICE, &victim, "input.txt", "alice: contract draft, do not share").await, 201);
    let attacker = uppercase_job(&server, MALLORY).await;
    assert_eq!(put_file(&server, MALLORY, &attacker, "input.txt", "x").await, 201);
    let decided = server
        .send(
            Method::POST,
            &format!("/_public/webhooks/approval/{attacker}"),
            Auth::None,
            Some(r#"{"decision":"uploaded"}"#),
        )
        .await;
    assert_eq!(decided.status, 200, "{decided:?}");

    let worker = server.worker("evil");
    worker.register(&["uppercase_file"]).await;
    let stolen = format!("s3://{}/jobs/{victim}/input.txt", s3.bucket);
    // Every try of mallory's job gets the same answer.
    for _ in 0..2 {
        let task = worker.next_task(Duration::from_secs(20)).await;
        assert_eq!(task["job_id"], attacker.as_str(), "{task:#}");
        let (status, _) = worker.post_result(&task, json!({ "status": "success", "data": { "output": stolen } })).await;
        assert_eq!(status, 200);
        let job = wait_as(&server, MALLORY, &attacker, |job| ended(job) || job["status"] == "waiting_for_worker").await;
        if ended(&job) {
            break;
        }
    }
    let job = wait_as(&server, MALLORY, &attacker, ended).await;
    assert_ne!(job["status"], "finished", "{job:#}");
    let message = job["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("another job's folder"), "the error should say why: {job:#}");
    assert!(job["state_history"]["preview"].is_null(), "{job:#}");

    let output = format!("/api/v1/jobs/{attacker}/files/output.txt");
    server.send(Method::GET, &output, Auth::Client(MALLORY), None).await.assert_error(404);
    let victims_file = format!("/api/v1/jobs/{victim}/files/input.txt");
    let kept = server.send(Method::GET, &victims_file, Auth::Client(ALICE), None).await;
    assert_eq!((kept.status, kept.text.as_str()), (200, "alice: contract draft, do not share"));
    server.stop().await;
}

/// Finding 22: a name that decodes to a dot segment is refused with `400`
/// naming the rule at the client API, and with `invalid` in the blueprint's
/// `task-files` calls (read, write, uri and adopt alike).
#[tokio::test]
async fn percent_encoded_dot_segments_are_refused_everywhere() {
    let s3 = TestS3::new().await;
    let dir = avtomatika_tests::blueprints_dir(&[
        ("files_probe.wasm", avtomatika_plugins::FILES_PROBE_COMPONENT),
        ("uppercase.wasm", avtomatika_plugins::UPPERCASE_COMPONENT),
    ]);
    let (server, _clients) = two_client_server(&s3, |config| config.blueprints_dir = Some(dir.path().to_owned())).await;

    let job = uppercase_job(&server, ALICE).await;
    // axum decodes the path once, so `%252e` arrives as the literal `%2e`.
    for name in ["a/%252e%252e/%252e%252e/x.txt", "%252E./x", "x/%252e%252E", "..%252fx"] {
        let path = server.url(&format!("/api/v1/jobs/{job}/files/{name}"));
        let answer = server.http.put(path).header("X-Avtomatika-Token", ALICE).body("x").send().await;
        let answer = answer.expect("upload request");
        assert_eq!(answer.status().as_u16(), 400, "{name}");
        let body = answer.text().await.unwrap_or_default();
        assert!(body.contains("percent-encoded"), "{name}: {body}");
    }
    assert_eq!(s3.keys("").await, Vec::<String>::new(), "nothing was stored");

    let created = server
        .send(
            Method::POST,
            "/api/v1/jobs/files-probe",
            Auth::Client(ALICE),
            Some(
                &json!({ "ops": [
                    {"op": "write", "name": "a/%2e%2e/%2e%2e/x.txt", "text": "x"},
                    {"op": "read", "name": "%2E./x"},
                    {"op": "uri", "name": "x/.%2e"},
                    {"op": "adopt", "source": format!("s3://{}/up.txt", s3.bucket), "name": "%2e%2e"},
                    {"op": "adopt", "source": format!("s3://{}/a/%2e%2e/up.txt", s3.bucket), "name": "ok.txt"},
                ]})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(created.status, 202, "{created:?}");
    let probe = created.json()["job_id"].as_str().expect("job_id").to_owned();
    let ended = wait_as(&server, ALICE, &probe, ended).await;
    assert_eq!(ended["status"], "finished", "{ended:#}");
    let results = ended["state_history"]["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 5, "{ended:#}");
    for (i, result) in results.iter().enumerate() {
        let error = result["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("invalid:") && error.contains("percent-encoded"), "op {i}: {result}");
    }
    server.stop().await;
}

/// Review finding 4: one client's downloads that are never read do not hold
/// every S3 slot. With `S3_MAX_CONCURRENCY=4`, mallory opens six downloads of
/// a 48 MiB file and reads none of them; alice's handler still reads and
/// writes its files at once (a slot is kept for handler calls), instead of
/// timing out after 10 s.
#[tokio::test]
async fn unread_downloads_of_one_client_do_not_starve_another_clients_handlers() {
    use tokio::io::AsyncWriteExt;
    let s3 = TestS3::new().await;
    let dir = avtomatika_tests::blueprints_dir(&[
        ("files_probe.wasm", avtomatika_plugins::FILES_PROBE_COMPONENT),
        ("uppercase.wasm", avtomatika_plugins::UPPERCASE_COMPONENT),
    ]);
    let (server, _clients) = two_client_server(&s3, |config| {
        config.blueprints_dir = Some(dir.path().to_owned());
        config.s3_max_concurrency = 4;
    })
    .await;

    let hoard = uppercase_job(&server, MALLORY).await;
    let big = server
        .http
        .put(server.url(&format!("/api/v1/jobs/{hoard}/files/input.txt")))
        .header("X-Avtomatika-Token", MALLORY)
        .body(vec![b'x'; 48 << 20])
        .send()
        .await
        .expect("upload request");
    assert_eq!(big.status().as_u16(), 201);
    let address = server.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut unread = Vec::new();
    for _ in 0..6 {
        let mut socket = tokio::net::TcpStream::connect(&address).await.expect("connect to the server");
        let request = format!(
            "GET /api/v1/jobs/{hoard}/files/input.txt HTTP/1.1\r\nHost: x\r\nX-Avtomatika-Token: {MALLORY}\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await.expect("send the download request");
        unread.push(socket);
    }
    // Long enough for the downloads to start and fill every buffer.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    let ops = json!([
        {"op": "write", "name": "a.txt", "text": "alice's"},
        {"op": "read", "name": "a.txt"},
        {"op": "list"},
    ]);
    let body = json!({ "ops": ops }).to_string();
    let created = server.send(Method::POST, "/api/v1/jobs/files-probe", Auth::Client(ALICE), Some(&body)).await;
    assert_eq!(created.status, 202, "{created:?}");
    let probe = created.json()["job_id"].as_str().expect("job_id").to_owned();
    let job = wait_as(&server, ALICE, &probe, ended).await;
    assert_eq!(job["status"], "finished", "{job:#}");
    let results = job["state_history"]["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 3, "{job:#}");
    assert!(results.iter().all(|r| r.get("ok").is_some()), "alice's file calls failed: {results:#?}");
    assert_eq!(results[1]["ok"], "alice's");
    assert!(started.elapsed() < Duration::from_secs(8), "alice waited {:?}", started.elapsed());
    drop(unread);
    server.stop().await;
}
