//! Server settings (`spec/configuration.md`): environment variables here,
//! with the spec's defaults, and the TOML files in submodules. A value that
//! does not parse stops start-up with an error naming the variable, or the
//! file, section and field.

pub mod file;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A setting that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

/// Log verbosity (`LOG_LEVEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

/// Log rendering (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Limits every blueprint handler call runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Linear memory a call may grow to (`PLUGIN_MEMORY_LIMIT_MB`, default 64 MiB).
    pub memory_bytes: usize,
    /// CPU time a call may take (`PLUGIN_TIMEOUT_MS`, default 1000 ms).
    pub timeout: Duration,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self { memory_bytes: 64 << 20, timeout: Duration::from_millis(1000) }
    }
}

/// Everything the server reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `API_HOST`, default `0.0.0.0`.
    pub api_host: String,
    /// `API_PORT`, default 8080.
    pub api_port: u16,
    /// `CLIENT_TOKEN`: the token of the one client when no `clients.toml` is used.
    pub client_token: String,
    /// `GLOBAL_WORKER_TOKEN`: the token of every worker without its own.
    pub global_worker_token: String,
    /// `WORKER_TIMEOUT_SECONDS` (300): the longest a task may stay unanswered.
    pub worker_timeout: Duration,
    /// `WORKER_POLL_TIMEOUT_SECONDS` (30): how long a task poll waits before a 204.
    pub worker_poll_timeout: Duration,
    /// `WORKER_HEALTH_CHECK_INTERVAL_SECONDS` (60): a worker stays live for
    /// twice this after each registration or heartbeat.
    pub worker_health_check_interval: Duration,
    /// `JOB_MAX_RETRIES` (3): retries of a transient task failure or of a
    /// failing handler before the job is quarantined.
    pub job_max_retries: u32,
    /// `EXECUTOR_MAX_CONCURRENT_JOBS` (100): handler steps run at once.
    pub executor_max_concurrent_jobs: usize,
    /// `LOG_LEVEL` (`INFO`).
    pub log_level: LogLevel,
    /// `LOG_FORMAT` (`json`).
    pub log_format: LogFormat,
    /// `BLUEPRINTS_DIR`: load every `*.wasm` here; unset loads the example
    /// blueprints built into the binary.
    pub blueprints_dir: Option<PathBuf>,
    /// `PLUGIN_MEMORY_LIMIT_MB`, `PLUGIN_TIMEOUT_MS`.
    pub plugin_limits: PluginLimits,
    /// `MAX_REQUEST_BODY_BYTES` (10 MiB): larger request bodies get a 413.
    pub max_request_body_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_host: "0.0.0.0".to_owned(),
            api_port: 8080,
            client_token: "secure-orchestrator-token".to_owned(),
            global_worker_token: "secure-worker-token".to_owned(),
            worker_timeout: Duration::from_secs(300),
            worker_poll_timeout: Duration::from_secs(30),
            worker_health_check_interval: Duration::from_secs(60),
            job_max_retries: 3,
            executor_max_concurrent_jobs: 100,
            log_level: LogLevel::Info,
            log_format: LogFormat::Json,
            blueprints_dir: None,
            plugin_limits: PluginLimits::default(),
            max_request_body_bytes: 10 << 20,
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    /// Empty values count as unset, as in the spec's defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { lookup: &lookup };
        let defaults = Self::default();
        Ok(Self {
            api_host: env.string("API_HOST").unwrap_or(defaults.api_host),
            api_port: env.parse("API_PORT", "a port number (0-65535)")?.unwrap_or(defaults.api_port),
            client_token: env.string("CLIENT_TOKEN").unwrap_or(defaults.client_token),
            global_worker_token: env.string("GLOBAL_WORKER_TOKEN").unwrap_or(defaults.global_worker_token),
            worker_timeout: env.seconds("WORKER_TIMEOUT_SECONDS")?.unwrap_or(defaults.worker_timeout),
            worker_poll_timeout: env.seconds("WORKER_POLL_TIMEOUT_SECONDS")?.unwrap_or(defaults.worker_poll_timeout),
            worker_health_check_interval: env
                .seconds("WORKER_HEALTH_CHECK_INTERVAL_SECONDS")?
                .unwrap_or(defaults.worker_health_check_interval),
            job_max_retries: env.parse("JOB_MAX_RETRIES", "a whole number ≥ 0")?.unwrap_or(defaults.job_max_retries),
            executor_max_concurrent_jobs: env
                .positive("EXECUTOR_MAX_CONCURRENT_JOBS")?
                .unwrap_or(defaults.executor_max_concurrent_jobs),
            log_level: match env.string("LOG_LEVEL").map(|v| v.to_ascii_uppercase()).as_deref() {
                None | Some("INFO") => LogLevel::Info,
                Some("DEBUG") => LogLevel::Debug,
                Some("WARNING" | "WARN") => LogLevel::Warning,
                Some("ERROR") => LogLevel::Error,
                Some(other) => return Err(env.invalid("LOG_LEVEL", other, "DEBUG, INFO, WARNING or ERROR")),
            },
            log_format: match env.string("LOG_FORMAT").map(|v| v.to_ascii_lowercase()).as_deref() {
                None | Some("json") => LogFormat::Json,
                Some("text") => LogFormat::Text,
                Some(other) => return Err(env.invalid("LOG_FORMAT", other, "json or text")),
            },
            blueprints_dir: env.string("BLUEPRINTS_DIR").map(PathBuf::from),
            plugin_limits: PluginLimits {
                memory_bytes: match env.positive::<usize>("PLUGIN_MEMORY_LIMIT_MB")? {
                    Some(mb) => mb.checked_mul(1 << 20).ok_or_else(|| ConfigError {
                        variable: "PLUGIN_MEMORY_LIMIT_MB",
                        problem: format!("{mb} MiB is more than this machine can address"),
                    })?,
                    None => defaults.plugin_limits.memory_bytes,
                },
                timeout: env
                    .positive("PLUGIN_TIMEOUT_MS")?
                    .map(Duration::from_millis)
                    .unwrap_or(defaults.plugin_limits.timeout),
            },
            max_request_body_bytes: env.positive("MAX_REQUEST_BODY_BYTES")?.unwrap_or(defaults.max_request_body_bytes),
        })
    }

    /// How long a worker stays live after registering or a heartbeat.
    pub fn worker_ttl(&self) -> Duration {
        self.worker_health_check_interval * 2
    }
}

struct Env<'a, F> {
    lookup: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    fn string(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    fn invalid(&self, variable: &'static str, value: &str, expected: &str) -> ConfigError {
        ConfigError { variable, problem: format!("invalid value {value:?}: expected {expected}") }
    }

    fn parse<T: FromStr>(&self, variable: &'static str, expected: &str) -> Result<Option<T>, ConfigError> {
        self.string(variable)
            .map(|v| v.trim().parse::<T>().map_err(|_| self.invalid(variable, &v, expected)))
            .transpose()
    }

    fn positive<T: FromStr + PartialOrd + Default>(&self, variable: &'static str) -> Result<Option<T>, ConfigError> {
        match self.parse::<T>(variable, "a whole number > 0")? {
            Some(v) if v <= T::default() => Err(ConfigError { variable, problem: "must be greater than 0".into() }),
            other => Ok(other),
        }
    }

    fn seconds(&self, variable: &'static str) -> Result<Option<Duration>, ConfigError> {
        Ok(self.positive::<u64>(variable)?.map(Duration::from_secs))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = config(&[]).unwrap();
        assert_eq!(c.api_port, 8080);
        assert_eq!(c.client_token, "secure-orchestrator-token");
        assert_eq!(c.global_worker_token, "secure-worker-token");
        assert_eq!(c.worker_poll_timeout, Duration::from_secs(30));
        assert_eq!(c.worker_ttl(), Duration::from_secs(120));
        assert_eq!(c.job_max_retries, 3);
        assert_eq!(c.executor_max_concurrent_jobs, 100);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.plugin_limits, PluginLimits::default());
        assert_eq!(c.max_request_body_bytes, 10 << 20);
    }

    #[test]
    fn values_are_read_and_empty_means_unset() {
        let c = config(&[
            ("API_PORT", "9000"),
            ("JOB_MAX_RETRIES", "0"),
            ("LOG_LEVEL", "debug"),
            ("LOG_FORMAT", "text"),
            ("PLUGIN_MEMORY_LIMIT_MB", "16"),
            ("PLUGIN_TIMEOUT_MS", "250"),
            ("CLIENT_TOKEN", ""),
        ])
        .unwrap();
        assert_eq!(c.api_port, 9000);
        assert_eq!(c.job_max_retries, 0);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.plugin_limits.memory_bytes, 16 << 20);
        assert_eq!(c.plugin_limits.timeout, Duration::from_millis(250));
        assert_eq!(c.client_token, "secure-orchestrator-token");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("API_PORT", "http"),
            ("API_PORT", "70000"),
            ("EXECUTOR_MAX_CONCURRENT_JOBS", "0"),
            ("WORKER_POLL_TIMEOUT_SECONDS", "-1"),
            ("LOG_FORMAT", "xml"),
            ("PLUGIN_TIMEOUT_MS", "1.5"),
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var);
            assert!(err.to_string().starts_with(&format!("environment variable {var}:")), "{err}");
        }
    }
}
