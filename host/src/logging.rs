//! Process-wide structured logging (`LOG_LEVEL`, `LOG_FORMAT`), with
//! timestamps in the configured `TZ`, and the optional export of spans to an
//! OpenTelemetry collector over OTLP, by gRPC or HTTP/protobuf
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`).

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{SecondsFormat, Utc};
use chrono_tz::Tz;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing::{Level, Metadata, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};
use uuid::Uuid;

use crate::config::{Config, ConfigError, LogFormat, LogLevel, OtlpConfig, OtlpProtocol, ProtocolSource};

/// RFC 3339 timestamps in the operator's time zone, offset included.
struct ZonedTime(Tz);

impl FormatTime for ZonedTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write!(w, "{}", Utc::now().with_timezone(&self.0).to_rfc3339_opts(SecondsFormat::Micros, false))
    }
}

/// Set once this process's subscriber exports spans: without an exporter,
/// [`join_job_trace`] costs one load.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Installs the global subscriber. `RUST_LOG`, when set, refines the level
/// per module (e.g. `info,avtomatika::runtime=debug`). With `config.otlp`
/// set, spans are also exported; the returned [`TraceExport`] must then be
/// shut down once the server has stopped, or the last spans are lost. Call
/// it inside the tokio runtime: the exporter's batches are sent from a task.
pub fn init(config: &Config) -> Result<Option<TraceExport>, ConfigError> {
    let export = config.otlp.as_ref().map(|otlp| TraceExport::start(otlp, &config.instance_id)).transpose()?;

    let level = match config.log_level {
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warning => Level::WARN,
        LogLevel::Error => Level::ERROR,
    };
    // Dependencies' debug output (the compiler's, the HTTP stack's) drowns
    // the server's own; DEBUG means this server's debug records.
    let directives = format!(
        "{},wasmtime=info,cranelift_codegen=info,hyper=info,hyper_util=info",
        level.as_str().to_ascii_lowercase()
    );
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    let fmt = tracing_subscriber::fmt::layer()
        .with_timer(ZonedTime(config.tz))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match config.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    // Each layer has its own filter: the log keeps its level while the
    // exporter sees the spans it needs (`export_filter`).
    let otel = export.as_ref().map(|export| {
        tracing_opentelemetry::layer()
            .with_tracer(export.provider.tracer("avtomatika"))
            .with_filter(export_filter(level))
    });
    // try_init: a second call (tests start several servers) keeps the first.
    let installed = tracing_subscriber::registry().with(fmt.with_filter(env_filter)).with(otel).try_init().is_ok();
    EXPORTING.store(installed && export.is_some(), Ordering::Relaxed);
    if let Some(otlp) = &config.otlp {
        let chosen_by = match otlp.protocol_source {
            ProtocolSource::Variable(variable) => variable,
            ProtocolSource::GrpcPort => "port 4317 (OTLP/gRPC's); set OTEL_EXPORTER_OTLP_PROTOCOL to choose",
            ProtocolSource::Default => "default",
        };
        tracing::info!(
            endpoint = %otlp.traces_endpoint,
            protocol = otlp.protocol.as_str(),
            chosen_by,
            service = %otlp.service_name,
            "exporting spans over OTLP"
        );
    }
    Ok(export)
}

/// What the exporter is shown: this server's spans down to DEBUG (the
/// per-request span is DEBUG to keep the log quiet at INFO, yet every request
/// belongs in a trace) and its events at `LOG_LEVEL`, which become span
/// events. Other crates stay out, so the exporter's own HTTP client never
/// feeds the exporter.
fn export_filter(events: Level) -> filter::FilterFn<impl Fn(&Metadata<'_>) -> bool> {
    filter::filter_fn(move |meta| exported(meta.target(), *meta.level(), meta.is_span(), events))
        .with_max_level_hint(Level::DEBUG)
}

fn exported(target: &str, level: Level, is_span: bool, events: Level) -> bool {
    let ours = target.starts_with("avtomatika") || target.starts_with("tower_http");
    ours && level <= if is_span { Level::DEBUG } else { events }
}

/// Spans on their way to an OTLP collector: batched, and sent over gRPC or
/// HTTP from a task on the tokio runtime.
pub struct TraceExport {
    provider: SdkTracerProvider,
}

impl TraceExport {
    fn start(otlp: &OtlpConfig, instance_id: &str) -> Result<Self, ConfigError> {
        const VARIABLE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
        // The batch task is spawned on the current runtime; outside one the
        // SDK would panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError { variable: VARIABLE, problem: "trace export needs a tokio runtime".into() });
        }
        // The configuration checked the URL; the exporter parses it again
        // with its own rules, so its refusal is still reported, not unwrapped.
        // Its request timeout and headers follow the standard
        // OTEL_EXPORTER_OTLP_TIMEOUT and OTEL_EXPORTER_OTLP_HEADERS.
        let builder = opentelemetry_otlp::SpanExporter::builder();
        let exporter = match otlp.protocol {
            // The channel connects lazily: a collector that is not up yet
            // costs failed exports, not start-up.
            OtlpProtocol::Grpc => builder.with_tonic().with_endpoint(otlp.traces_endpoint.as_str()).build(),
            OtlpProtocol::HttpProtobuf => builder
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(otlp.traces_endpoint.as_str())
                .build(),
        }
        .map_err(|e| ConfigError { variable: VARIABLE, problem: format!("cannot export spans there: {e}") })?;
        let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        let resource = Resource::builder()
            .with_service_name(otlp.service_name.clone())
            .with_attribute(KeyValue::new("service.instance.id", instance_id.to_owned()))
            .build();
        let provider = SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build();
        Ok(Self { provider })
    }

    /// Sends the spans still batched and stops the exporter.
    pub async fn shutdown(self) {
        // The SDK's shutdown blocks until the batch task, which runs on this
        // runtime, has sent the last batch: wait for it off the async threads.
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "trace export did not shut down cleanly; the last spans may be lost")
            }
            Err(e) => tracing::warn!(error = %e, "trace export shutdown stopped abnormally"),
        }
    }
}

/// Makes `span`, not yet entered, part of the job's trace when spans are
/// exported. The trace id is the job id, as in the `traceparent` every task
/// carries to its worker, so a job's steps on the host and its workers'
/// spans meet in one trace. The parent stands for the job itself, which no
/// process records as a span (a job outlives any of them): its id is the
/// job id's second half, never 0.
pub fn join_job_trace(span: &Span, job_id: Uuid) {
    if !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = span.set_parent(job_trace(job_id)) {
        tracing::debug!(%job_id, error = %e, "cannot join the job's trace");
    }
}

fn job_trace(job_id: Uuid) -> Context {
    let bytes = job_id.as_bytes();
    let mut tail = [0; 8];
    tail.copy_from_slice(&bytes[8..]);
    let span_id = if tail == [0; 8] { SpanId::from_bytes([0, 0, 0, 0, 0, 0, 0, 1]) } else { SpanId::from_bytes(tail) };
    // Sampled, as the `-01` flags of the tasks' traceparent say.
    let parent = SpanContext::new(TraceId::from_bytes(*bytes), span_id, TraceFlags::SAMPLED, true, TraceState::NONE);
    Context::new().with_remote_span_context(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_carry_the_zone_offset() {
        let mut text = String::new();
        ZonedTime(chrono_tz::Asia::Tokyo).format_time(&mut Writer::new(&mut text)).unwrap();
        assert!(text.ends_with("+09:00"), "{text}");
        let mut text = String::new();
        ZonedTime(Tz::UTC).format_time(&mut Writer::new(&mut text)).unwrap();
        assert!(text.ends_with("+00:00"), "{text}");
    }

    #[test]
    fn the_job_trace_is_the_job_id_as_in_the_tasks_traceparent() {
        let job_id = Uuid::parse_str("0123456789abcdef0123456789abcdef").unwrap();
        let context = job_trace(job_id);
        let parent = context.span().span_context().clone();
        assert!(parent.is_valid() && parent.is_remote() && parent.is_sampled());
        assert_eq!(parent.trace_id().to_string(), job_id.simple().to_string());
        assert_eq!(parent.span_id().to_string(), "0123456789abcdef");
        let half_nil = Uuid::from_bytes([7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(job_trace(half_nil).span().span_context().is_valid(), "a span id of 0 would orphan the step");
    }

    #[test]
    fn the_exporter_sees_our_spans_to_debug_and_our_events_at_the_log_level() {
        let span = |target, level| exported(target, level, true, Level::INFO);
        let event = |target, level| exported(target, level, false, Level::INFO);
        assert!(span("avtomatika::api", Level::DEBUG));
        assert!(span("avtomatika::orchestrator::executor", Level::INFO));
        assert!(!span("avtomatika::api", Level::TRACE));
        assert!(event("avtomatika::orchestrator", Level::WARN));
        assert!(!event("avtomatika::orchestrator", Level::DEBUG));
        assert!(exported("avtomatika::orchestrator", Level::DEBUG, false, Level::DEBUG));
        assert!(event("tower_http::trace::on_failure", Level::ERROR));
        assert!(!span("hyper_util::client", Level::INFO));
        assert!(!event("reqwest::connect", Level::ERROR));
    }
}
