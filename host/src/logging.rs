//! Process-wide structured logging (`LOG_LEVEL`, `LOG_FORMAT`).

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogLevel};

/// Installs the global subscriber. `RUST_LOG`, when set, refines the level
/// per module (e.g. `info,avtomatika::runtime=debug`).
pub fn init(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warning => "warn",
        LogLevel::Error => "error",
    };
    // Dependencies' debug output (the compiler's, the HTTP stack's) drowns
    // the server's own; DEBUG means this server's debug records.
    let directives = format!("{level},wasmtime=info,cranelift_codegen=info,hyper=info,hyper_util=info");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // try_init: a second call (tests start several servers) keeps the first.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
