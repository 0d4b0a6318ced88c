//! Response compression: the client and public routes answer gzip or zstd
//! when asked (`Accept-Encoding`), and the same JSON decoded; the worker
//! long-poll and WebSocket routes never compress.

use std::io::Read;
use std::time::Duration;

use avtomatika_tests::{CLIENT_TOKEN, TestServer, WORKER_TOKEN};
use serde_json::{Value, json};

/// `GET path` with the client token and `encoding` (none: no
/// `Accept-Encoding`): the `Content-Encoding` answered and the body decoded.
async fn fetch(
    server: &TestServer,
    path: &str,
    token: (&str, &str),
    encoding: Option<&str>,
) -> (Option<String>, Vec<u8>) {
    let mut request = server.http.get(server.url(path)).header(token.0, token.1);
    if let Some(encoding) = encoding {
        request = request.header("Accept-Encoding", encoding);
    }
    let response = request.send().await.expect("request");
    assert!(response.status().is_success(), "{path}: {}", response.status());
    let encoding = response.headers().get("content-encoding").map(|v| v.to_str().expect("an ASCII header").to_owned());
    let raw = response.bytes().await.expect("body").to_vec();
    let body = match encoding.as_deref() {
        None => raw,
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out).expect("gzip");
            out
        }
        Some("zstd") => zstd::decode_all(raw.as_slice()).expect("zstd"),
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    };
    (encoding, body)
}

#[tokio::test]
async fn client_and_public_answers_are_compressed_when_asked() {
    let server = TestServer::start().await;
    for i in 0..30 {
        server.create_job("/api/v1/jobs/hello", json!({"name": format!("user-{i}")})).await;
    }
    let client = ("X-Avtomatika-Token", CLIENT_TOKEN);
    let (plain_encoding, plain) = fetch(&server, "/api/v1/jobs?limit=1000", client, None).await;
    assert_eq!(plain_encoding, None);
    let listing: Value = serde_json::from_slice(&plain).expect("JSON");
    assert_eq!(listing.as_array().map(Vec::len), Some(30));
    for encoding in ["gzip", "zstd"] {
        let (answered, body) = fetch(&server, "/api/v1/jobs?limit=1000", client, Some(encoding)).await;
        assert_eq!(answered.as_deref(), Some(encoding));
        assert_eq!(serde_json::from_slice::<Value>(&body).expect("JSON"), listing, "{encoding} decodes to the same");
    }
    let (answered, _) = fetch(&server, "/api/v1/jobs?limit=1000", client, Some("br")).await;
    assert_eq!(answered, None, "an encoding not offered is not used");
    let (answered, metrics) = fetch(&server, "/_public/metrics", ("x-none", ""), Some("gzip")).await;
    assert_eq!(answered.as_deref(), Some("gzip"));
    assert!(String::from_utf8_lossy(&metrics).contains("avtomatika_jobs_created_total"));
    server.stop().await;
}

#[tokio::test]
async fn worker_long_polls_are_never_compressed() {
    let server = TestServer::start().await;
    let worker = server.worker("plain");
    worker.register(&["greet"]).await;
    server.create_job("/api/v1/jobs/hello", json!({"name": "x".repeat(4096)})).await;
    let path = "/_worker/workers/plain/tasks/next";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (encoding, body) = loop {
        let response = server
            .http
            .get(server.url(path))
            .header("X-Worker-Token", WORKER_TOKEN)
            .header("Accept-Encoding", "gzip, zstd")
            .send()
            .await
            .expect("poll");
        if response.status() == 200 {
            let encoding = response.headers().get("content-encoding").cloned();
            break (encoding, response.bytes().await.expect("body"));
        }
        assert!(tokio::time::Instant::now() < deadline, "no task");
    };
    assert_eq!(encoding, None);
    let task: Value = serde_json::from_slice(&body).expect("an uncompressed task");
    assert_eq!(task["type"], "greet");
    server.stop().await;
}
