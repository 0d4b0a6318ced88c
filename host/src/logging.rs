//! Process-wide structured logging (`LOG_LEVEL`, `LOG_FORMAT`), with
//! timestamps in the configured `TZ`.

use std::fmt;
use std::io::IsTerminal;

use chrono::{SecondsFormat, Utc};
use chrono_tz::Tz;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::config::{LogFormat, LogLevel};

/// RFC 3339 timestamps in the operator's time zone, offset included.
struct ZonedTime(Tz);

impl FormatTime for ZonedTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write!(w, "{}", Utc::now().with_timezone(&self.0).to_rfc3339_opts(SecondsFormat::Micros, false))
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, refines the level
/// per module (e.g. `info,avtomatika::runtime=debug`).
pub fn init(level: LogLevel, format: LogFormat, tz: Tz) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(ZonedTime(tz))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // try_init: a second call (tests start several servers) keeps the first.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
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
}
