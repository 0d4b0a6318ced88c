//! Span export over OTLP/HTTP, through the real binary: with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a collector this test runs, a
//! `hello` job runs through a worker, the server stops on SIGTERM, and the
//! collector must by then hold protobuf batches with the job's steps, in the
//! trace whose id is the job id (the trace the task's `traceparent` names),
//! and the requests, all filed under `OTEL_SERVICE_NAME`. The same over
//! OTLP/gRPC (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`), to a tonic `TraceService`.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_avtomatika");
const CLIENT_TOKEN: &str = "otlp-client-token";
const WORKER_TOKEN: &str = "otlp-worker-token";
const SERVICE: &str = "avtomatika-under-test";
/// Loading the configuration compiles the blueprints: well under this even
/// in a debug build on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One POST the collector received: its `Content-Type` and body.
type Received = Arc<Mutex<Vec<(Option<String>, Bytes)>>>;

/// A collector answering `POST /v1/traces` with an empty (all-accepted)
/// export response, keeping every request.
async fn start_collector() -> (String, Received) {
    async fn traces(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> (StatusCode, HeaderMap) {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        received.lock().unwrap().push((content_type, body));
        let mut answer = HeaderMap::new();
        answer.insert(header::CONTENT_TYPE, "application/x-protobuf".parse().unwrap());
        (StatusCode::OK, answer)
    }
    let received = Received::default();
    let app = Router::new().route("/v1/traces", post(traces)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the collector");
    let addr = listener.local_addr().expect("collector address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

/// What the gRPC collector received.
type Exports = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// A collector serving OTLP's `TraceService/Export` over gRPC.
#[derive(Clone, Default)]
struct GrpcCollector {
    received: Exports,
}

#[tonic::async_trait]
impl TraceService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn start_grpc_collector() -> (String, Exports) {
    let collector = GrpcCollector::default();
    let received = collector.received.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the gRPC collector");
    let addr = listener.local_addr().expect("collector address");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(incoming),
    );
    (format!("http://{addr}"), received)
}

/// The binary, under only the environment given (plus `PATH`, `HOME`).
struct Server {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    base: String,
}

impl Server {
    async fn start(vars: &[(&str, &str)]) -> Self {
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
        cmd.env("API_HOST", "127.0.0.1").env("API_PORT", "0").envs(vars.iter().copied());
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("start avtomatika");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let base = loop {
            let port = stderr.lock().unwrap().iter().find(|l| l.contains("serving")).and_then(|line| {
                let rest = &line[line.find("127.0.0.1:")? + "127.0.0.1:".len()..];
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                (!port.is_empty()).then_some(port)
            });
            if let Some(port) = port {
                break format!("http://127.0.0.1:{port}");
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the server exited with {status} before serving: {:#?}", stderr.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "the server did not serve in time: {:#?}", stderr.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self { child, stderr, base }
    }

    /// SIGTERM, as an operator stops it; waits for a clean exit.
    async fn stop(mut self) {
        let pid = self.child.id().expect("the server is running").to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let stderr = self.stderr.lock().unwrap().clone();
        match exit {
            Ok(Ok(status)) => assert!(status.success(), "the server exited with {status}: {stderr:#?}"),
            other => panic!("the server did not stop on SIGTERM ({other:?}): {stderr:#?}"),
        }
    }
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref() {
        Some(AnyValue { value: Some(any_value::Value::StringValue(s)) }) => Some(s.as_str()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_spans_reach_the_collector_in_the_trace_named_by_the_job_id() {
    let (collector, received) = start_collector().await;
    let server = Server::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
        ("OTEL_SERVICE_NAME", SERVICE),
        ("CLIENT_TOKEN", CLIENT_TOKEN),
        ("GLOBAL_WORKER_TOKEN", WORKER_TOKEN),
        ("WORKER_POLL_TIMEOUT_SECONDS", "2"),
        ("LOG_FORMAT", "text"),
    ])
    .await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.base);

    let registration = json!({"worker_id": "w-otlp", "worker_type": "test", "supported_tasks": ["greet"]});
    let response = http
        .post(url("/_worker/workers/register"))
        .header("X-Worker-Token", WORKER_TOKEN)
        .json(&registration)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = http
        .post(url("/api/v1/jobs/hello"))
        .header("X-Avtomatika-Token", CLIENT_TOKEN)
        .json(&json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let created: Value = response.json().await.unwrap();
    let job_id = created["job_id"].as_str().expect("job_id").to_owned();

    let deadline = Instant::now() + Duration::from_secs(20);
    let task: Value = loop {
        let response = http
            .get(url("/_worker/workers/w-otlp/tasks/next"))
            .header("X-Worker-Token", WORKER_TOKEN)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break response.json().await.unwrap();
        }
        assert_eq!(response.status(), 204);
        assert!(Instant::now() < deadline, "no task for the job");
    };
    let traceparent = task["tracing_context"]["traceparent"].as_str().expect("traceparent").to_owned();
    let result = json!({
        "job_id": task["job_id"], "task_id": task["task_id"], "worker_id": "w-otlp",
        "result": {"status": "success", "data": {"greeting": "Hello, Ada"}},
    });
    let response = http
        .post(url("/_worker/tasks/result"))
        .header("X-Worker-Token", WORKER_TOKEN)
        .json(&result)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job: Value = http
            .get(url(&format!("/api/v1/jobs/{job_id}")))
            .header("X-Avtomatika-Token", CLIENT_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "finished" {
            break;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {job:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The batch interval (5 s) has likely not passed: the spans must arrive
    // because shutting down sends what is left.
    server.stop().await;

    let received = received.lock().unwrap().clone();
    assert!(!received.is_empty(), "the collector received nothing");
    let mut spans: Vec<Span> = Vec::new();
    for (content_type, body) in &received {
        assert_eq!(content_type.as_deref(), Some("application/x-protobuf"), "OTLP/HTTP with protobuf bodies");
        let request = ExportTraceServiceRequest::decode(body.as_ref()).expect("an OTLP export request");
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.expect("a resource");
            assert_eq!(string_attribute(&resource.attributes, "service.name"), Some(SERVICE));
            spans.extend(resource_spans.scope_spans.into_iter().flat_map(|s| s.spans));
        }
    }

    let job_trace = uuid::Uuid::parse_str(&job_id).expect("job id is a uuid").as_bytes().to_vec();
    let steps: Vec<&Span> = spans.iter().filter(|s| s.name == "job_step").collect();
    assert!(!steps.is_empty(), "no job_step span among {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    for step in &steps {
        assert_eq!(string_attribute(&step.attributes, "job_id"), Some(job_id.as_str()));
        assert_eq!(step.trace_id, job_trace, "a job step outside the job's trace");
    }
    let trace_hex: String = job_trace.iter().map(|b| format!("{b:02x}")).collect();
    assert!(traceparent.starts_with(&format!("00-{trace_hex}-")), "{traceparent} names another trace");

    let requests: Vec<&Span> = spans.iter().filter(|s| s.name == "request").collect();
    assert!(
        requests.iter().any(|s| string_attribute(&s.attributes, "path") == Some("/api/v1/jobs/hello")),
        "no request span for the job's creation among {requests:?}"
    );
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`: the requests' spans arrive at a gRPC
/// collector, under the service name, and the start-up log says which
/// protocol was chosen and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_grpc_collector_when_the_protocol_is_grpc() {
    let (collector, received) = start_grpc_collector().await;
    let server = Server::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SERVICE_NAME", SERVICE),
        ("CLIENT_TOKEN", CLIENT_TOKEN),
        ("LOG_FORMAT", "text"),
    ])
    .await;
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/api/v1/jobs/hello", server.base))
        .header("X-Avtomatika-Token", CLIENT_TOKEN)
        .json(&json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let log = server.stderr.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.contains("exporting spans over OTLP")
            && l.contains("protocol=\"grpc\"")
            && l.contains("OTEL_EXPORTER_OTLP_PROTOCOL")),
        "{log:#?}"
    );
    server.stop().await;

    let received = received.lock().unwrap().clone();
    assert!(!received.is_empty(), "the gRPC collector received nothing");
    let mut spans: Vec<Span> = Vec::new();
    for request in received {
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.expect("a resource");
            assert_eq!(string_attribute(&resource.attributes, "service.name"), Some(SERVICE));
            spans.extend(resource_spans.scope_spans.into_iter().flat_map(|s| s.spans));
        }
    }
    assert!(
        spans
            .iter()
            .any(|s| s.name == "request" && string_attribute(&s.attributes, "path") == Some("/api/v1/jobs/hello")),
        "no request span for the job's creation among {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}

/// An unknown protocol stops start-up, naming the variable.
#[tokio::test]
async fn an_invalid_otlp_protocol_stops_start_up_naming_the_variable() {
    let output = tokio::process::Command::new(BIN)
        .env_clear()
        .env("PLUGIN_CACHE_DIR", "off")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("API_PORT", "0")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run avtomatika");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && stderr.contains("http/json"), "{stderr}");
}
