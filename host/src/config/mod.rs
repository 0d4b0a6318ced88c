//! Server settings (`spec/configuration.md`): environment variables here,
//! with the spec's defaults, and the TOML files in submodules. A value that
//! does not parse stops start-up with an error naming the variable, or the
//! file, section and field.

pub mod clients;
pub mod file;
mod history_uri;
pub mod limits;
pub mod schedules;
pub mod workers;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;

pub use limits::Limits;

/// A setting that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

/// A value that must never be shown: `Debug` and `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
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

/// How handler calls get their instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePolicy {
    /// `PLUGIN_POOL_SIZE` (4): live instances kept per blueprint version
    /// between calls; 0 gives every call a fresh instance.
    pub pool_size: usize,
    /// `PLUGIN_POOL_MAX_CALLS` (10000): calls one live instance serves
    /// before it is replaced by a fresh one.
    pub max_calls: u32,
    /// `PLUGIN_FRESH_INSTANCE_BLUEPRINTS`: blueprints (comma-separated names)
    /// whose every call gets a fresh instance, so nothing a handler leaves in
    /// memory can reach another job.
    pub fresh_blueprints: Vec<String>,
}

impl Default for InstancePolicy {
    fn default() -> Self {
        Self { pool_size: 4, max_calls: 10_000, fresh_blueprints: Vec::new() }
    }
}

/// Limits every blueprint handler call runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Linear memory a call may grow to (`PLUGIN_MEMORY_LIMIT_MB`, default 64 MiB).
    pub memory_bytes: usize,
    /// CPU time a call may take (`PLUGIN_TIMEOUT_MS`, default 1000 ms).
    pub timeout: Duration,
    /// Wall-clock time a call may take, time waiting on S3 included
    /// (`PLUGIN_WALL_TIMEOUT_MS`, default 300 000 ms). S3 waits are not
    /// charged to `timeout`, so without this a handler looping over S3 calls
    /// would hold its instance and executor slot forever. The default leaves
    /// room for one 120 s `adopt` of a 5 GiB file.
    pub wall_timeout: Duration,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self { memory_bytes: 64 << 20, timeout: Duration::from_millis(1000), wall_timeout: Duration::from_secs(300) }
    }
}

/// Outgoing job webhooks (`spec/http-api.md`, "Webhooks"): how each POST is
/// tried, how many may wait or run at once (all clients, one client, one
/// receiver host) and which private networks they may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The limit on one delivery attempt, connecting included
    /// (`WEBHOOK_TIMEOUT_SECONDS`, default 10 s).
    pub timeout: Duration,
    /// Attempts before a delivery is given up, the first included
    /// (`WEBHOOK_MAX_ATTEMPTS`, default 5, at least 1).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further
    /// one (`WEBHOOK_RETRY_INITIAL_MS`, default 1000 ms).
    pub retry_initial: Duration,
    /// The longest wait between two attempts, however many failed (60 s; set
    /// in code only).
    pub retry_max: Duration,
    /// Deliveries pending at once (waiting, in flight or between attempts),
    /// all clients together; one more is dropped with a warning
    /// (`WEBHOOK_QUEUE_CAPACITY`, default 10000).
    pub queue_capacity: usize,
    /// Deliveries one client may have pending; past it only that client's
    /// are dropped (`WEBHOOK_QUEUE_PER_CLIENT`, default 1000).
    pub queue_per_client: usize,
    /// POSTs in flight at once, all receivers together (`WEBHOOK_CONCURRENCY`,
    /// default 16).
    pub concurrency: usize,
    /// POSTs in flight at once for one client, so a client's hanging
    /// receivers cannot take every slot (`WEBHOOK_PER_CLIENT_CONCURRENCY`,
    /// default 8).
    pub per_client_concurrency: usize,
    /// POSTs in flight at once from one client to one receiver host, any
    /// port (`WEBHOOK_PER_HOST_CONCURRENCY`, default 4).
    pub per_host_concurrency: usize,
    /// Networks a webhook may reach although they are private, loopback or
    /// otherwise special-purpose (`WEBHOOK_ALLOWED_NETWORKS`, comma-separated
    /// CIDRs; default none).
    pub allowed_networks: Vec<ipnet::IpNet>,
}

impl WebhookSettings {
    /// The limit on connecting, within [`Self::timeout`]: a receiver that
    /// never accepts (a filtered port) is given up after at most 3 s.
    pub fn connect_timeout(&self) -> Duration {
        self.timeout.min(Duration::from_secs(3))
    }
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_attempts: 5,
            retry_initial: Duration::from_millis(1000),
            retry_max: Duration::from_secs(60),
            queue_capacity: 10_000,
            queue_per_client: 1000,
            concurrency: 16,
            per_client_concurrency: 8,
            per_host_concurrency: 4,
            allowed_networks: Vec::new(),
        }
    }
}

/// Span export over OTLP, with gRPC or HTTP/protobuf; set only when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// Where spans are sent: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is,
    /// or else `OTEL_EXPORTER_OTLP_ENDPOINT`, with `/v1/traces` appended to
    /// its path over HTTP (gRPC names the service in its own path), as the
    /// OpenTelemetry exporter spec says.
    pub traces_endpoint: String,
    pub protocol: OtlpProtocol,
    /// Why `protocol` was chosen, for the start-up log.
    pub protocol_source: ProtocolSource,
    /// `OTEL_SERVICE_NAME` (`avtomatika`): the `service.name` spans are filed under.
    pub service_name: String,
}

/// The OTLP transport (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else
/// `OTEL_EXPORTER_OTLP_PROTOCOL`), named as the OpenTelemetry spec names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `grpc`: the `TraceService/Export` call, over HTTP/2 without TLS.
    Grpc,
    /// `http/protobuf`: protobuf bodies POSTed to `…/v1/traces`.
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

/// How the OTLP protocol was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolSource {
    /// Named by this variable.
    Variable(&'static str),
    /// None set, and the endpoint's port is 4317, the port OTLP/gRPC is
    /// registered on (collectors and Jaeger listen there for gRPC only);
    /// POSTing HTTP there could never work.
    GrpcPort,
    /// None set: the spec's default, `http/protobuf`.
    Default,
}

/// The port registered for OTLP over gRPC.
const OTLP_GRPC_PORT: u16 = 4317;

/// Where Redis is (`REDIS_HOST`, `REDIS_PORT`, `REDIS_DB`); unset means memory storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    pub db: u32,
}

/// The job history database (`HISTORY_DATABASE_URI`; the accepted URI forms
/// are listed in `history_uri`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryDatabase {
    /// The file path: absolute, or relative to the working directory.
    Sqlite(PathBuf),
    /// `:memory:`: a database that lives as long as the process.
    SqliteMemory,
    /// `postgresql://…` (also given as `postgres://…` or with a `+driver`),
    /// kept whole for the driver.
    Postgres(Secret),
}

impl HistoryDatabase {
    /// Which database, for logs and errors: never the password.
    pub fn describe(&self) -> String {
        match self {
            // A relative path is shown resolved too: it depends on where
            // the server was started from.
            Self::Sqlite(path) if path.is_relative() => match std::path::absolute(path) {
                Ok(absolute) => format!("SQLite file {} ({})", path.display(), absolute.display()),
                Err(_) => format!("SQLite file {}", path.display()),
            },
            Self::Sqlite(path) => format!("SQLite file {}", path.display()),
            Self::SqliteMemory => "SQLite in memory (lost when the server stops)".to_owned(),
            Self::Postgres(uri) => match url::Url::parse(uri.expose()) {
                Ok(url) => format!(
                    "PostgreSQL at {}:{}, database {}",
                    url.host_str().unwrap_or(""),
                    url.port().unwrap_or(5432),
                    url.path().trim_start_matches('/')
                ),
                Err(_) => "PostgreSQL".to_owned(),
            },
        }
    }
}

/// S3 payload offloading; set only when endpoint and both keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub endpoint_url: String,
    pub access_key: Secret,
    pub secret_key: Secret,
}

/// Deleting a job's files once it ended (`TASK_FILES_RETENTION_SECONDS`):
/// each deletion runs in the background and is retried with backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupSettings {
    /// How long a job's files outlive its end (`TASK_FILES_RETENTION_SECONDS`,
    /// default `JOB_RETENTION_SECONDS`: as long as the job is kept).
    pub retention: Duration,
    /// Attempts at one job's cleanup before it is given up with a warning
    /// (5; set in code only).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further
    /// one, up to 60 s (1 s; set in code only).
    pub retry_initial: Duration,
}

impl Default for CleanupSettings {
    fn default() -> Self {
        Self { retention: Duration::from_secs(86_400), max_attempts: 5, retry_initial: Duration::from_secs(1) }
    }
}

/// Everything the server reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `API_HOST`, default `0.0.0.0`.
    pub api_host: String,
    /// `API_PORT`, default 8080.
    pub api_port: u16,
    /// `INSTANCE_ID`, default the host name: this instance's name among several.
    pub instance_id: String,
    /// `REDIS_HOST` (+ `REDIS_PORT` 6379, `REDIS_DB` 0); unset: memory storage.
    pub redis: Option<RedisConfig>,
    /// `CLIENT_TOKEN`: the token of the one client when no `clients.toml` is used.
    pub client_token: Secret,
    /// `GLOBAL_WORKER_TOKEN`: the token of every worker without its own.
    pub global_worker_token: Secret,
    /// `CLIENTS_CONFIG_PATH`: `clients.toml`.
    pub clients_config_path: Option<PathBuf>,
    /// `WORKERS_CONFIG_PATH`: `workers.toml`.
    pub workers_config_path: Option<PathBuf>,
    /// `SCHEDULES_CONFIG_PATH`: `schedules.toml`.
    pub schedules_config_path: Option<PathBuf>,
    /// `TZ` (`UTC`): schedules, log timestamps, history output, quota months.
    pub tz: Tz,
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
    /// `WATCHER_INTERVAL_SECONDS` (20): how often timed-out tasks are looked for.
    pub watcher_interval: Duration,
    /// `EXECUTOR_MAX_CONCURRENT_JOBS` (100): handler steps run at once.
    pub executor_max_concurrent_jobs: usize,
    /// `MAX_TRANSITIONS_PER_JOB` (100): a job moving between states more often
    /// fails, so a blueprint that cycles forever cannot run forever.
    pub max_transitions_per_job: u32,
    /// `JOB_RETENTION_SECONDS` (86400): how long a job is kept once it ended.
    pub job_retention: Duration,
    /// `SHUTDOWN_GRACE_SECONDS` (30, at most [`MAX_SHUTDOWN_GRACE`]; 0 stops
    /// at once): how long a stopping server keeps accepting results and lets
    /// running handler steps finish.
    pub shutdown_grace: Duration,
    /// `HISTORY_DATABASE_URI`; unset: no job history.
    pub history_database: Option<HistoryDatabase>,
    /// `HISTORY_BUFFER_SIZE` (10000): history events waiting for the
    /// database; past this new events are dropped (and counted).
    pub history_buffer_size: usize,
    /// `S3_ENDPOINT_URL`, `S3_ACCESS_KEY`, `S3_SECRET_KEY`: all or none.
    pub s3: Option<S3Config>,
    /// `S3_DEFAULT_BUCKET` (`avtomatika-payloads`).
    pub s3_default_bucket: String,
    /// `S3_REGION` (`us-east-1`).
    pub s3_region: String,
    /// `S3_MAX_CONCURRENCY` (100): concurrent S3 operations, all jobs together.
    pub s3_max_concurrency: usize,
    /// `TASK_FILES_DIR` (`/tmp/avtomatika-payloads`): local files of jobs
    /// (`{dir}/{job_id}/`), such as uploads on their way to S3.
    pub task_files_dir: PathBuf,
    /// `TASK_FILES_RETENTION_SECONDS` (`JOB_RETENTION_SECONDS`) and the cleanup's retry policy.
    pub task_files_cleanup: CleanupSettings,
    /// `LOG_LEVEL` (`INFO`).
    pub log_level: LogLevel,
    /// `LOG_FORMAT` (`json`).
    pub log_format: LogFormat,
    /// `BLUEPRINTS_DIR`: load every `*.wasm` here; unset loads the example
    /// blueprints built into the binary.
    pub blueprints_dir: Option<PathBuf>,
    /// `BLUEPRINTS_WATCH_INTERVAL_SECONDS`: how often `BLUEPRINTS_DIR` is
    /// checked for changed components, which are then reloaded; unset: only
    /// `POST /api/v1/admin/reload-blueprints` reloads.
    pub blueprints_watch: Option<Duration>,
    /// `PLUGIN_MEMORY_LIMIT_MB`, `PLUGIN_TIMEOUT_MS`.
    pub plugin_limits: PluginLimits,
    /// `PLUGIN_POOL_SIZE`, `PLUGIN_POOL_MAX_CALLS`, `PLUGIN_FRESH_INSTANCE_BLUEPRINTS`.
    pub plugin_instances: InstancePolicy,
    /// `PLUGIN_CACHE_DIR`: where compiled blueprint components are kept
    /// across starts; `None` compiles them at every start. Read from the
    /// environment it defaults to `$XDG_CACHE_HOME/avtomatika`, else
    /// `$HOME/.cache/avtomatika`, and `off` turns it off; `Config::default()`
    /// (embedding, tests) has none, so nothing is written outside the process.
    pub plugin_cache_dir: Option<PathBuf>,
    /// `MAX_REQUEST_BODY_BYTES` (10 MiB): larger request bodies get a 413.
    pub max_request_body_bytes: usize,
    /// `WEBHOOK_TIMEOUT_SECONDS`, `WEBHOOK_MAX_ATTEMPTS`, `WEBHOOK_RETRY_INITIAL_MS`,
    /// `WEBHOOK_QUEUE_CAPACITY`, `WEBHOOK_QUEUE_PER_CLIENT`, `WEBHOOK_CONCURRENCY`,
    /// `WEBHOOK_PER_CLIENT_CONCURRENCY`, `WEBHOOK_PER_HOST_CONCURRENCY`,
    /// `WEBHOOK_ALLOWED_NETWORKS`.
    pub webhooks: WebhookSettings,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`),
    /// `OTEL_SERVICE_NAME`; unset: no span export.
    pub otlp: Option<OtlpConfig>,
    /// Bounds on identifiers, collections, bodies and connections.
    pub limits: Limits,
    /// `APPROVAL_SECRET`: when set, a decision on the public approval route
    /// must carry the HMAC signature of its job id and decision.
    pub approval_secret: Option<Secret>,
}

/// The documented default tokens: fine on a laptop, never in production.
pub const DEFAULT_CLIENT_TOKEN: &str = "secure-orchestrator-token";
pub const DEFAULT_WORKER_TOKEN: &str = "secure-worker-token";
/// The longest `SHUTDOWN_GRACE_SECONDS` accepted: an hour.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);

impl Default for Config {
    fn default() -> Self {
        Self {
            api_host: "0.0.0.0".to_owned(),
            api_port: 8080,
            instance_id: "avtomatika".to_owned(),
            redis: None,
            client_token: DEFAULT_CLIENT_TOKEN.into(),
            global_worker_token: DEFAULT_WORKER_TOKEN.into(),
            clients_config_path: None,
            workers_config_path: None,
            schedules_config_path: None,
            tz: Tz::UTC,
            worker_timeout: Duration::from_secs(300),
            worker_poll_timeout: Duration::from_secs(30),
            worker_health_check_interval: Duration::from_secs(60),
            job_max_retries: 3,
            watcher_interval: Duration::from_secs(20),
            executor_max_concurrent_jobs: 100,
            max_transitions_per_job: 100,
            job_retention: Duration::from_secs(86_400),
            shutdown_grace: Duration::from_secs(30),
            history_database: None,
            history_buffer_size: 10_000,
            s3: None,
            s3_default_bucket: "avtomatika-payloads".to_owned(),
            s3_region: "us-east-1".to_owned(),
            s3_max_concurrency: 100,
            task_files_dir: PathBuf::from("/tmp/avtomatika-payloads"),
            task_files_cleanup: CleanupSettings::default(),
            log_level: LogLevel::Info,
            log_format: LogFormat::Json,
            blueprints_dir: None,
            blueprints_watch: None,
            plugin_limits: PluginLimits::default(),
            plugin_instances: InstancePolicy::default(),
            plugin_cache_dir: None,
            max_request_body_bytes: 10 << 20,
            webhooks: WebhookSettings::default(),
            otlp: None,
            limits: Limits::default(),
            approval_secret: None,
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
        let d = Self::default();
        Ok(Self {
            api_host: env.string("API_HOST").unwrap_or(d.api_host),
            api_port: env.parse("API_PORT", "a port number (0-65535)")?.unwrap_or(d.api_port),
            instance_id: env.string("INSTANCE_ID").unwrap_or_else(|| {
                gethostname::gethostname().into_string().ok().filter(|h| !h.is_empty()).unwrap_or(d.instance_id)
            }),
            redis: {
                // Checked even without REDIS_HOST: a typo must not wait for
                // the day Redis is switched on.
                let port = env.parse("REDIS_PORT", "a port number (0-65535)")?.unwrap_or(6379);
                let db = env.parse("REDIS_DB", "a database index ≥ 0")?.unwrap_or(0);
                env.string("REDIS_HOST").map(|host| RedisConfig { host, port, db })
            },
            client_token: env.string("CLIENT_TOKEN").map(Secret::from).unwrap_or(d.client_token),
            global_worker_token: env.string("GLOBAL_WORKER_TOKEN").map(Secret::from).unwrap_or(d.global_worker_token),
            clients_config_path: env.string("CLIENTS_CONFIG_PATH").map(PathBuf::from),
            workers_config_path: env.string("WORKERS_CONFIG_PATH").map(PathBuf::from),
            schedules_config_path: env.string("SCHEDULES_CONFIG_PATH").map(PathBuf::from),
            tz: match env.string("TZ") {
                None => d.tz,
                Some(name) => name
                    .trim()
                    .parse::<Tz>()
                    .map_err(|_| env.invalid("TZ", &name, "an IANA time zone name such as UTC or Europe/Moscow"))?,
            },
            worker_timeout: env.seconds("WORKER_TIMEOUT_SECONDS")?.unwrap_or(d.worker_timeout),
            worker_poll_timeout: env.seconds("WORKER_POLL_TIMEOUT_SECONDS")?.unwrap_or(d.worker_poll_timeout),
            worker_health_check_interval: env
                .seconds("WORKER_HEALTH_CHECK_INTERVAL_SECONDS")?
                .unwrap_or(d.worker_health_check_interval),
            job_max_retries: env.parse("JOB_MAX_RETRIES", "a whole number ≥ 0")?.unwrap_or(d.job_max_retries),
            watcher_interval: env.seconds("WATCHER_INTERVAL_SECONDS")?.unwrap_or(d.watcher_interval),
            executor_max_concurrent_jobs: env
                .positive("EXECUTOR_MAX_CONCURRENT_JOBS")?
                .unwrap_or(d.executor_max_concurrent_jobs),
            max_transitions_per_job: env.positive("MAX_TRANSITIONS_PER_JOB")?.unwrap_or(d.max_transitions_per_job),
            job_retention: env.seconds("JOB_RETENTION_SECONDS")?.unwrap_or(d.job_retention),
            shutdown_grace: env.shutdown_grace()?.unwrap_or(d.shutdown_grace),
            history_database: env.string("HISTORY_DATABASE_URI").map(|uri| history_uri::parse(&uri)).transpose()?,
            history_buffer_size: env.positive("HISTORY_BUFFER_SIZE")?.unwrap_or(d.history_buffer_size),
            s3: s3(&env)?,
            s3_default_bucket: env.string("S3_DEFAULT_BUCKET").unwrap_or(d.s3_default_bucket),
            s3_region: env.string("S3_REGION").unwrap_or(d.s3_region),
            s3_max_concurrency: env.positive("S3_MAX_CONCURRENCY")?.unwrap_or(d.s3_max_concurrency),
            task_files_dir: env.string("TASK_FILES_DIR").map(PathBuf::from).unwrap_or(d.task_files_dir),
            task_files_cleanup: CleanupSettings {
                retention: env
                    .seconds_or_zero("TASK_FILES_RETENTION_SECONDS")?
                    // Unset: a job's files stay as long as the job does, so a
                    // client can fetch the outputs of a job that has finished.
                    .unwrap_or(env.seconds("JOB_RETENTION_SECONDS")?.unwrap_or(d.job_retention)),
                ..d.task_files_cleanup
            },
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
            blueprints_watch: env.seconds("BLUEPRINTS_WATCH_INTERVAL_SECONDS")?,
            plugin_limits: PluginLimits {
                memory_bytes: match env.positive::<usize>("PLUGIN_MEMORY_LIMIT_MB")? {
                    Some(mb) => mb.checked_mul(1 << 20).ok_or_else(|| ConfigError {
                        variable: "PLUGIN_MEMORY_LIMIT_MB",
                        problem: format!("{mb} MiB is more than this machine can address"),
                    })?,
                    None => d.plugin_limits.memory_bytes,
                },
                timeout: env.millis("PLUGIN_TIMEOUT_MS")?.unwrap_or(d.plugin_limits.timeout),
                wall_timeout: env.millis("PLUGIN_WALL_TIMEOUT_MS")?.unwrap_or(d.plugin_limits.wall_timeout),
            },
            plugin_instances: InstancePolicy {
                pool_size: env
                    .parse("PLUGIN_POOL_SIZE", "a whole number ≥ 0 (0: a fresh instance for every call)")?
                    .unwrap_or(d.plugin_instances.pool_size),
                max_calls: env.positive("PLUGIN_POOL_MAX_CALLS")?.unwrap_or(d.plugin_instances.max_calls),
                fresh_blueprints: env
                    .string("PLUGIN_FRESH_INSTANCE_BLUEPRINTS")
                    .map(|names| names.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect())
                    .unwrap_or_default(),
            },
            plugin_cache_dir: plugin_cache_dir(&env)?,
            max_request_body_bytes: env.positive("MAX_REQUEST_BODY_BYTES")?.unwrap_or(d.max_request_body_bytes),
            webhooks: WebhookSettings {
                timeout: env.seconds("WEBHOOK_TIMEOUT_SECONDS")?.unwrap_or(d.webhooks.timeout),
                max_attempts: env.positive("WEBHOOK_MAX_ATTEMPTS")?.unwrap_or(d.webhooks.max_attempts),
                retry_initial: env.millis("WEBHOOK_RETRY_INITIAL_MS")?.unwrap_or(d.webhooks.retry_initial),
                retry_max: d.webhooks.retry_max,
                queue_capacity: env.positive("WEBHOOK_QUEUE_CAPACITY")?.unwrap_or(d.webhooks.queue_capacity),
                queue_per_client: env.positive("WEBHOOK_QUEUE_PER_CLIENT")?.unwrap_or(d.webhooks.queue_per_client),
                concurrency: env.positive("WEBHOOK_CONCURRENCY")?.unwrap_or(d.webhooks.concurrency),
                per_client_concurrency: env
                    .positive("WEBHOOK_PER_CLIENT_CONCURRENCY")?
                    .unwrap_or(d.webhooks.per_client_concurrency),
                per_host_concurrency: env
                    .positive("WEBHOOK_PER_HOST_CONCURRENCY")?
                    .unwrap_or(d.webhooks.per_host_concurrency),
                allowed_networks: match env.string("WEBHOOK_ALLOWED_NETWORKS") {
                    Some(value) => crate::webhook::parse_networks(&value)
                        .map_err(|problem| ConfigError { variable: "WEBHOOK_ALLOWED_NETWORKS", problem })?,
                    None => d.webhooks.allowed_networks,
                },
            },
            otlp: otlp(&env)?,
            limits: Limits::read(&env)?,
            approval_secret: env.string("APPROVAL_SECRET").map(Secret::from),
        })
    }

    /// How long a worker stays live after registering or a heartbeat.
    pub fn worker_ttl(&self) -> Duration {
        self.worker_health_check_interval.saturating_mul(2)
    }
}

/// `PLUGIN_CACHE_DIR`: an absolute path, `off`, or unset for the per-user
/// cache directory of the XDG Base Directory spec.
fn plugin_cache_dir<F: Fn(&str) -> Option<String>>(env: &Env<'_, F>) -> Result<Option<PathBuf>, ConfigError> {
    const VARIABLE: &str = "PLUGIN_CACHE_DIR";
    match env.string("PLUGIN_CACHE_DIR") {
        Some(value) if value.trim().eq_ignore_ascii_case("off") => Ok(None),
        Some(value) => {
            let path = PathBuf::from(value.trim());
            if path.is_absolute() {
                Ok(Some(path))
            } else {
                // A relative path would follow whatever directory the server
                // happens to be started from.
                Err(env.invalid(VARIABLE, &value, "an absolute directory path, or off to compile at every start"))
            }
        }
        None => {
            // Relative values are ignored, as the XDG spec asks.
            let xdg = env.system("XDG_CACHE_HOME").map(PathBuf::from).filter(|p| p.is_absolute());
            let home = || env.system("HOME").map(|home| PathBuf::from(home).join(".cache")).filter(|p| p.is_absolute());
            Ok(xdg.or_else(home).map(|base| base.join("avtomatika")))
        }
    }
}

fn s3<F: Fn(&str) -> Option<String>>(env: &Env<'_, F>) -> Result<Option<S3Config>, ConfigError> {
    let endpoint = env.string("S3_ENDPOINT_URL");
    let access = env.string("S3_ACCESS_KEY");
    let secret = env.string("S3_SECRET_KEY");
    let (endpoint, access, secret) = match (endpoint, access, secret) {
        (None, None, None) => return Ok(None),
        (Some(e), Some(a), Some(s)) => (e, a, s),
        (e, a, _) => {
            let missing = if e.is_none() {
                "S3_ENDPOINT_URL"
            } else if a.is_none() {
                "S3_ACCESS_KEY"
            } else {
                "S3_SECRET_KEY"
            };
            return Err(ConfigError {
                variable: missing,
                problem: "must be set too: S3 needs S3_ENDPOINT_URL, S3_ACCESS_KEY and S3_SECRET_KEY together".into(),
            });
        }
    };
    let url = url::Url::parse(endpoint.trim())
        .map_err(|e| ConfigError { variable: "S3_ENDPOINT_URL", problem: format!("not a valid URL ({e})") })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(env.invalid("S3_ENDPOINT_URL", url.scheme(), "an http:// or https:// URL"));
    }
    Ok(Some(S3Config {
        endpoint_url: endpoint.trim().to_owned(),
        access_key: access.into(),
        secret_key: secret.into(),
    }))
}

fn otlp<F: Fn(&str) -> Option<String>>(env: &Env<'_, F>) -> Result<Option<OtlpConfig>, ConfigError> {
    // Both are checked even when the other wins: a typo must not wait for
    // the day the other variable is removed.
    let traces = env
        .string("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .map(|url| otlp_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &url))
        .transpose()?;
    let base = env
        .string("OTEL_EXPORTER_OTLP_ENDPOINT")
        .map(|url| otlp_url("OTEL_EXPORTER_OTLP_ENDPOINT", &url))
        .transpose()?;
    let traces_protocol = otlp_protocol(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")?;
    let base_protocol = otlp_protocol(env, "OTEL_EXPORTER_OTLP_PROTOCOL")?;
    let (variable, endpoint) = match (traces, base) {
        (Some(traces), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces),
        (None, Some(base)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", base),
        (None, None) => return Ok(None),
    };
    let (protocol, protocol_source) = match (traces_protocol, base_protocol) {
        (Some(protocol), _) => (protocol, ProtocolSource::Variable("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")),
        (None, Some(protocol)) => (protocol, ProtocolSource::Variable("OTEL_EXPORTER_OTLP_PROTOCOL")),
        (None, None) if endpoint.port_or_known_default() == Some(OTLP_GRPC_PORT) => {
            (OtlpProtocol::Grpc, ProtocolSource::GrpcPort)
        }
        (None, None) => (OtlpProtocol::HttpProtobuf, ProtocolSource::Default),
    };
    let traces_endpoint = match protocol {
        OtlpProtocol::Grpc => {
            // The exporter speaks gRPC without TLS: an https:// collector
            // would fail on every export, so it fails here, once, instead.
            if endpoint.scheme() == "https" {
                return Err(ConfigError {
                    variable,
                    problem: "OTLP over gRPC is sent without TLS: use an http:// URL, or \
                              OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf for an https:// collector"
                        .to_owned(),
                });
            }
            endpoint
        }
        OtlpProtocol::HttpProtobuf if variable == "OTEL_EXPORTER_OTLP_ENDPOINT" => {
            // A base path is kept (`http://collector/otlp` posts to
            // `/otlp/v1/traces`), with or without its trailing slash.
            let mut base = endpoint;
            let path = format!("{}/v1/traces", base.path().trim_end_matches('/'));
            base.set_path(&path);
            base
        }
        OtlpProtocol::HttpProtobuf => endpoint,
    };
    let service_name = env.string("OTEL_SERVICE_NAME").map_or_else(|| "avtomatika".to_owned(), |s| s.trim().to_owned());
    Ok(Some(OtlpConfig { traces_endpoint: traces_endpoint.to_string(), protocol, protocol_source, service_name }))
}

/// One of the OTLP protocol variables, as the OpenTelemetry spec spells the values.
fn otlp_protocol<F: Fn(&str) -> Option<String>>(
    env: &Env<'_, F>,
    variable: &'static str,
) -> Result<Option<OtlpProtocol>, ConfigError> {
    let Some(value) = env.string(variable) else { return Ok(None) };
    match value.trim() {
        "grpc" => Ok(Some(OtlpProtocol::Grpc)),
        "http/protobuf" => Ok(Some(OtlpProtocol::HttpProtobuf)),
        "http/json" => Err(ConfigError {
            variable,
            problem: "http/json is not supported by this server; use grpc or http/protobuf".to_owned(),
        }),
        _ => Err(env.invalid(variable, &value, "grpc or http/protobuf")),
    }
}

/// An OTLP collector URL: `http(s)://host[:port][/path]`.
fn otlp_url(variable: &'static str, value: &str) -> Result<url::Url, ConfigError> {
    // The value is not echoed: a URL may carry credentials.
    let invalid = |problem: String| ConfigError { variable, problem };
    let url = url::Url::parse(value.trim())
        .map_err(|e| invalid(format!("not a valid URL ({e}); expected e.g. http://127.0.0.1:4318")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "unsupported scheme {:?}: expected an http:// or https:// URL (for gRPC too, as the OpenTelemetry spec says)",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL names no host".to_owned()));
    }
    Ok(url)
}

struct Env<'a, F> {
    lookup: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    fn string(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// A variable of the system rather than of this server (`HOME`), so
    /// not in the README's table.
    fn system(&self, name: &str) -> Option<String> {
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
        self.positive::<u64>(variable)?.map(|s| bounded(variable, Duration::from_secs(s))).transpose()
    }

    /// Like [`seconds`](Self::seconds), with 0 allowed.
    fn seconds_or_zero(&self, variable: &'static str) -> Result<Option<Duration>, ConfigError> {
        self.parse::<u64>(variable, "a whole number of seconds ≥ 0")?
            .map(|s| bounded(variable, Duration::from_secs(s)))
            .transpose()
    }

    fn millis(&self, variable: &'static str) -> Result<Option<Duration>, ConfigError> {
        self.positive::<u64>(variable)?.map(|ms| bounded(variable, Duration::from_millis(ms))).transpose()
    }

    /// `SHUTDOWN_GRACE_SECONDS`: 0 is allowed (stop at once); the bound keeps a
    /// typo from holding a stopping server for days.
    fn shutdown_grace(&self) -> Result<Option<Duration>, ConfigError> {
        const VARIABLE: &str = "SHUTDOWN_GRACE_SECONDS";
        let max = MAX_SHUTDOWN_GRACE.as_secs();
        let expected = format!("a whole number of seconds from 0 to {max}");
        match self.parse::<u64>(VARIABLE, &expected)? {
            Some(secs) if secs > max => {
                Err(ConfigError { variable: VARIABLE, problem: format!("must be at most {max}") })
            }
            other => Ok(other.map(Duration::from_secs)),
        }
    }
}

/// The longest duration any setting may name. Deadlines are computed as
/// `now + setting`; past a few centuries that overflows and panics, so
/// a year (more than any sensible timeout) is the ceiling, checked at start-up.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

fn bounded(variable: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value > MAX_DURATION {
        return Err(ConfigError {
            variable,
            problem: format!(
                "{} s is longer than the limit of one year ({} s)",
                value.as_secs(),
                MAX_DURATION.as_secs()
            ),
        });
    }
    Ok(value)
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
        assert_eq!(c.client_token.expose(), "secure-orchestrator-token");
        assert_eq!(c.global_worker_token.expose(), "secure-worker-token");
        assert_eq!(c.tz, Tz::UTC);
        assert_eq!(c.redis, None);
        assert_eq!(c.watcher_interval, Duration::from_secs(20));
        assert_eq!(c.s3_default_bucket, "avtomatika-payloads");
        assert_eq!(c.s3_max_concurrency, 100);
        assert!(!c.instance_id.is_empty());
        assert_eq!(c.worker_poll_timeout, Duration::from_secs(30));
        assert_eq!(c.worker_ttl(), Duration::from_secs(120));
        assert_eq!(c.job_max_retries, 3);
        assert_eq!(c.executor_max_concurrent_jobs, 100);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.plugin_limits, PluginLimits::default());
        assert_eq!(c.max_request_body_bytes, 10 << 20);
        assert_eq!(c.webhooks.timeout, Duration::from_secs(10));
        assert_eq!(c.webhooks.max_attempts, 5);
        assert_eq!(c.webhooks.retry_initial, Duration::from_millis(1000));
        assert_eq!(c.webhooks.queue_capacity, 10_000);
        assert_eq!(c.webhooks.concurrency, 16);
        assert_eq!(c.webhooks.queue_per_client, 1000);
        assert_eq!(c.webhooks.per_client_concurrency, 8);
        assert_eq!(c.webhooks.per_host_concurrency, 4);
        assert_eq!(c.webhooks.allowed_networks, []);
        assert_eq!(c.webhooks.connect_timeout(), Duration::from_secs(3));
        assert_eq!(c.otlp, None);
        assert_eq!(c.plugin_cache_dir, None, "no HOME: no cache");
    }

    #[test]
    fn the_plugin_cache_defaults_to_the_user_cache_dir_and_can_be_turned_off() {
        let dir = |vars: &[(&str, &str)]| config(vars).unwrap().plugin_cache_dir;
        assert_eq!(dir(&[("HOME", "/home/ada")]), Some(PathBuf::from("/home/ada/.cache/avtomatika")));
        assert_eq!(
            dir(&[("HOME", "/home/ada"), ("XDG_CACHE_HOME", "/var/cache/ada")]),
            Some(PathBuf::from("/var/cache/ada/avtomatika"))
        );
        assert_eq!(
            dir(&[("HOME", "/home/ada"), ("XDG_CACHE_HOME", "relative")]),
            Some(PathBuf::from("/home/ada/.cache/avtomatika")),
            "a relative XDG_CACHE_HOME is ignored"
        );
        assert_eq!(
            dir(&[("HOME", "/home/ada"), ("PLUGIN_CACHE_DIR", "/var/cache/avtomatika")]),
            Some(PathBuf::from("/var/cache/avtomatika"))
        );
        assert_eq!(dir(&[("HOME", "/home/ada"), ("PLUGIN_CACHE_DIR", "OFF")]), None);
        assert_eq!(dir(&[("HOME", "/home/ada"), ("PLUGIN_CACHE_DIR", "")]), Some("/home/ada/.cache/avtomatika".into()));
        let err = config(&[("PLUGIN_CACHE_DIR", "cache")]).unwrap_err();
        assert_eq!(err.variable, "PLUGIN_CACHE_DIR");
        assert!(err.to_string().contains("absolute"), "{err}");
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
            ("PLUGIN_WALL_TIMEOUT_MS", "4000"),
            ("CLIENT_TOKEN", ""),
        ])
        .unwrap();
        assert_eq!(c.api_port, 9000);
        assert_eq!(c.job_max_retries, 0);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.plugin_limits.memory_bytes, 16 << 20);
        assert_eq!(c.plugin_limits.timeout, Duration::from_millis(250));
        assert_eq!(c.plugin_limits.wall_timeout, Duration::from_millis(4000));
        assert_eq!(c.client_token.expose(), "secure-orchestrator-token");
    }

    #[test]
    fn every_documented_variable_is_read() {
        let c = config(&[
            ("REDIS_HOST", "redis.local"),
            ("REDIS_DB", "3"),
            ("INSTANCE_ID", "node-7"),
            ("TZ", "Europe/Moscow"),
            ("WATCHER_INTERVAL_SECONDS", "5"),
            ("HISTORY_DATABASE_URI", "sqlite:///var/lib/avtomatika/history.db"),
            ("S3_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("S3_ACCESS_KEY", "ak"),
            ("S3_SECRET_KEY", "sk"),
            ("S3_MAX_CONCURRENCY", "8"),
            ("TASK_FILES_DIR", "/data/tasks"),
            ("TASK_FILES_RETENTION_SECONDS", "600"),
            ("CLIENTS_CONFIG_PATH", "/etc/avtomatika/clients.toml"),
            ("WEBHOOK_TIMEOUT_SECONDS", "3"),
            ("WEBHOOK_MAX_ATTEMPTS", "1"),
            ("WEBHOOK_RETRY_INITIAL_MS", "250"),
            ("WEBHOOK_QUEUE_CAPACITY", "50"),
            ("WEBHOOK_CONCURRENCY", "2"),
            ("WEBHOOK_QUEUE_PER_CLIENT", "7"),
            ("WEBHOOK_PER_CLIENT_CONCURRENCY", "3"),
            ("WEBHOOK_PER_HOST_CONCURRENCY", "1"),
            ("WEBHOOK_ALLOWED_NETWORKS", "172.18.0.0/16, fd00::/8"),
        ])
        .unwrap();
        assert_eq!(c.redis, Some(RedisConfig { host: "redis.local".into(), port: 6379, db: 3 }));
        assert_eq!(c.instance_id, "node-7");
        assert_eq!(c.tz, chrono_tz::Europe::Moscow);
        assert_eq!(c.watcher_interval, Duration::from_secs(5));
        assert_eq!(c.history_database, Some(HistoryDatabase::Sqlite("/var/lib/avtomatika/history.db".into())));
        assert_eq!(c.s3.as_ref().map(|s| s.endpoint_url.as_str()), Some("http://127.0.0.1:9000"));
        assert_eq!(c.s3_max_concurrency, 8);
        assert_eq!(c.task_files_dir, PathBuf::from("/data/tasks"));
        assert_eq!(c.task_files_cleanup.retention, Duration::from_secs(600));
        assert_eq!(
            config(&[("TASK_FILES_RETENTION_SECONDS", "0")]).unwrap().task_files_cleanup.retention,
            Duration::ZERO
        );
        assert_eq!(
            config(&[("JOB_RETENTION_SECONDS", "120")]).unwrap().task_files_cleanup.retention,
            Duration::from_secs(120),
            "files stay as long as their job by default"
        );
        let err = config(&[("TASK_FILES_RETENTION_SECONDS", "-1")]).unwrap_err();
        assert_eq!(err.variable, "TASK_FILES_RETENTION_SECONDS");
        assert_eq!(c.clients_config_path, Some(PathBuf::from("/etc/avtomatika/clients.toml")));
        assert_eq!(
            c.webhooks,
            WebhookSettings {
                timeout: Duration::from_secs(3),
                max_attempts: 1,
                retry_initial: Duration::from_millis(250),
                retry_max: Duration::from_secs(60),
                queue_capacity: 50,
                queue_per_client: 7,
                concurrency: 2,
                per_client_concurrency: 3,
                per_host_concurrency: 1,
                allowed_networks: vec!["172.18.0.0/16".parse().unwrap(), "fd00::/8".parse().unwrap()],
            }
        );
        assert_eq!(c.webhooks.connect_timeout(), Duration::from_secs(3), "never longer than the attempt");
        let otlp = |vars: &[(&str, &str)]| config(vars).unwrap().otlp.unwrap();
        let base = otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]);
        assert_eq!(
            base,
            OtlpConfig {
                traces_endpoint: "http://127.0.0.1:4318/v1/traces".into(),
                protocol: OtlpProtocol::HttpProtobuf,
                protocol_source: ProtocolSource::Default,
                service_name: "avtomatika".into()
            }
        );
        for (endpoint, expected) in [
            ("https://collector.example/", "https://collector.example/v1/traces"),
            ("http://collector:4318/otlp", "http://collector:4318/otlp/v1/traces"),
            ("http://collector:4318/otlp/", "http://collector:4318/otlp/v1/traces"),
        ] {
            assert_eq!(otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]).traces_endpoint, expected);
        }
        let named = otlp(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom"),
            ("OTEL_SERVICE_NAME", "orchestrator-eu"),
        ]);
        assert_eq!(
            named,
            OtlpConfig {
                traces_endpoint: "http://traces:9999/custom".into(),
                protocol: OtlpProtocol::HttpProtobuf,
                protocol_source: ProtocolSource::Default,
                service_name: "orchestrator-eu".into()
            }
        );
        assert_eq!(config(&[("OTEL_SERVICE_NAME", "lonely")]).unwrap().otlp, None, "a name alone exports nothing");
        let pg = config(&[("HISTORY_DATABASE_URI", "postgresql://u:pw@127.0.0.1:5432/db")]).unwrap();
        assert!(matches!(pg.history_database, Some(HistoryDatabase::Postgres(_))));
    }

    #[test]
    fn shutdown_grace_defaults_to_30_s_and_may_be_0() {
        assert_eq!(config(&[]).unwrap().shutdown_grace, Duration::from_secs(30));
        assert_eq!(config(&[("SHUTDOWN_GRACE_SECONDS", "0")]).unwrap().shutdown_grace, Duration::ZERO);
        assert_eq!(config(&[("SHUTDOWN_GRACE_SECONDS", "3600")]).unwrap().shutdown_grace, MAX_SHUTDOWN_GRACE);
    }

    #[test]
    fn secrets_never_show() {
        let c = config(&[
            ("CLIENT_TOKEN", "client-s3cret"),
            ("GLOBAL_WORKER_TOKEN", "worker-s3cret"),
            ("HISTORY_DATABASE_URI", "postgresql://u:db-s3cret@h/db"),
            ("S3_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("S3_ACCESS_KEY", "ak-s3cret"),
            ("S3_SECRET_KEY", "sk-s3cret"),
            ("APPROVAL_SECRET", "approval-s3cret"),
        ])
        .unwrap();
        assert_eq!(c.approval_secret.as_ref().map(Secret::expose), Some("approval-s3cret"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let err = config(&[("HISTORY_DATABASE_URI", "mysql://u:db-s3cret@h/db")]).unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn the_otlp_protocol_follows_the_variables_or_else_the_grpc_port() {
        let otlp = |vars: &[(&str, &str)]| config(vars).unwrap().otlp.unwrap();
        // The example application's docker-compose: Jaeger's gRPC port.
        let jaeger = otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317")]);
        assert_eq!(
            (jaeger.protocol, jaeger.protocol_source, jaeger.traces_endpoint.as_str()),
            (OtlpProtocol::Grpc, ProtocolSource::GrpcPort, "http://jaeger:4317/"),
            "gRPC takes the endpoint as it is"
        );
        let explicit =
            otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:9000"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        assert_eq!(explicit.protocol, OtlpProtocol::Grpc);
        assert_eq!(explicit.protocol_source, ProtocolSource::Variable("OTEL_EXPORTER_OTLP_PROTOCOL"));
        assert_eq!(explicit.traces_endpoint, "http://collector:9000/");
        // A named protocol wins over the port.
        let http = otlp(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(
            (http.protocol, http.traces_endpoint.as_str()),
            (OtlpProtocol::HttpProtobuf, "http://collector:4317/v1/traces")
        );
        // The traces-only variable wins over the general one.
        let traces = otlp(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ]);
        assert_eq!(traces.protocol, OtlpProtocol::Grpc);
        assert_eq!(traces.protocol_source, ProtocolSource::Variable("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"));
        assert_eq!(traces.traces_endpoint, "http://collector:4318/");
        let named = otlp(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317/")]);
        assert_eq!((named.protocol, named.traces_endpoint.as_str()), (OtlpProtocol::Grpc, "http://traces:4317/"));

        for (var, value, problem) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "http/json is not supported"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "gRPC", "expected grpc or http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http", "expected grpc or http/protobuf"),
        ] {
            let err = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"), (var, value)]).unwrap_err();
            assert_eq!(err.variable, var, "{err}");
            assert!(err.problem.contains(problem), "{err}");
        }
        // Checked even without an endpoint: the typo is there either way.
        assert_eq!(
            config(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grcp")]).unwrap_err().variable,
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        );
        let err = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317")]).unwrap_err();
        assert_eq!(err.variable, "OTEL_EXPORTER_OTLP_ENDPOINT");
        assert!(err.problem.contains("without TLS"), "{err}");
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
            ("TZ", "Mars/Olympus"),
            ("REDIS_PORT", "x"),
            ("WATCHER_INTERVAL_SECONDS", "0"),
            ("HISTORY_DATABASE_URI", "mysql://h/db"),
            ("HISTORY_DATABASE_URI", "not a uri"),
            ("S3_ACCESS_KEY", "only-this"),
            ("S3_MAX_CONCURRENCY", "0"),
            ("WEBHOOK_TIMEOUT_SECONDS", "0"),
            ("WEBHOOK_MAX_ATTEMPTS", "0"),
            ("WEBHOOK_MAX_ATTEMPTS", "-2"),
            ("WEBHOOK_RETRY_INITIAL_MS", "soon"),
            ("WEBHOOK_QUEUE_CAPACITY", "0"),
            ("WEBHOOK_CONCURRENCY", "many"),
            ("WEBHOOK_QUEUE_PER_CLIENT", "0"),
            ("WEBHOOK_PER_CLIENT_CONCURRENCY", "0"),
            ("WEBHOOK_PER_HOST_CONCURRENCY", "-1"),
            ("WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/33"),
            ("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8, intranet"),
            ("SHUTDOWN_GRACE_SECONDS", "3601"),
            ("SHUTDOWN_GRACE_SECONDS", "-1"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://collector:4317"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "file:///tmp/spans"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector/v1/traces"),
            ("WORKER_HEALTH_CHECK_INTERVAL_SECONDS", "18446744073709551615"),
            ("WORKER_TIMEOUT_SECONDS", "31622401"),
            ("TASK_FILES_RETENTION_SECONDS", "18446744073709551615"),
            ("PLUGIN_TIMEOUT_MS", "18446744073709551615"),
            ("WEBHOOK_RETRY_INITIAL_MS", "31622400001"),
            ("MAX_NAME_BYTES", "0"),
            ("WORKER_MAX_SUPPORTED_TASKS", "x"),
            ("MAX_WORKERS_PER_TOKEN", "-1"),
            ("HTTP_HEADER_TIMEOUT_SECONDS", "0"),
        ] {
            let vars: &[(&str, &str)] =
                if var == "REDIS_PORT" { &[("REDIS_HOST", "h"), (var, value)] } else { &[(var, value)] };
            let err = config(vars).unwrap_err();
            let expected = if var == "S3_ACCESS_KEY" { "S3_ENDPOINT_URL" } else { var };
            assert_eq!(err.variable, expected, "{err}");
        }
        let err = config(&[("API_PORT", "http")]).unwrap_err();
        assert!(err.to_string().starts_with("environment variable API_PORT: invalid value \"http\""), "{err}");
        let err = config(&[("WORKER_HEALTH_CHECK_INTERVAL_SECONDS", "18446744073709551615")]).unwrap_err();
        assert!(err.to_string().contains("longer than the limit of one year"), "{err}");
        let year = config(&[("WORKER_HEALTH_CHECK_INTERVAL_SECONDS", "31622400")]).unwrap();
        assert_eq!(year.worker_ttl(), MAX_DURATION * 2, "the longest allowed interval still doubles without overflow");
    }
}
