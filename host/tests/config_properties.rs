//! Properties of configuration parsing over generated input (proptest): no
//! environment and no TOML file, however malformed, makes the server panic;
//! every refusal names what it refuses (the variable, or the file).

use std::collections::HashMap;

use avtomatika::config::file::parse_table;
use avtomatika::config::{Config, clients, schedules, workers};
use proptest::prelude::*;

/// Every variable the server reads (README's table), so generated
/// environments hit real parsers rather than being ignored.
const VARIABLES: &[&str] = &[
    "API_HOST",
    "API_PORT",
    "INSTANCE_ID",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_DB",
    "CLIENT_TOKEN",
    "GLOBAL_WORKER_TOKEN",
    "TZ",
    "WORKER_TIMEOUT_SECONDS",
    "WORKER_POLL_TIMEOUT_SECONDS",
    "WORKER_HEALTH_CHECK_INTERVAL_SECONDS",
    "JOB_MAX_RETRIES",
    "WATCHER_INTERVAL_SECONDS",
    "EXECUTOR_MAX_CONCURRENT_JOBS",
    "MAX_TRANSITIONS_PER_JOB",
    "JOB_RETENTION_SECONDS",
    "HISTORY_DATABASE_URI",
    "HISTORY_BUFFER_SIZE",
    "S3_ENDPOINT_URL",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "S3_MAX_CONCURRENCY",
    "TASK_FILES_RETENTION_SECONDS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "BLUEPRINTS_WATCH_INTERVAL_SECONDS",
    "PLUGIN_MEMORY_LIMIT_MB",
    "PLUGIN_TIMEOUT_MS",
    "PLUGIN_POOL_SIZE",
    "PLUGIN_POOL_MAX_CALLS",
    "PLUGIN_CACHE_DIR",
    "MAX_REQUEST_BODY_BYTES",
    "WEBHOOK_TIMEOUT_SECONDS",
    "WEBHOOK_MAX_ATTEMPTS",
    "WEBHOOK_RETRY_INITIAL_MS",
    "WEBHOOK_QUEUE_CAPACITY",
    "WEBHOOK_CONCURRENCY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "MAX_NAME_BYTES",
    "WORKER_MAX_SUPPORTED_TASKS",
    "WORKER_MAX_BODY_BYTES",
    "MAX_WORKERS_PER_TOKEN",
    "WORKER_MAX_POLLS",
    "HTTP_HEADER_TIMEOUT_SECONDS",
    "HTTP_BODY_IDLE_TIMEOUT_SECONDS",
    "MAX_CONNECTIONS",
];

/// Values near parsers' edges: numbers of every size and sign, overflow,
/// units, URLs, empty and whitespace, and arbitrary text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_owned()),
        Just("0".to_owned()),
        Just("  ".to_owned()),
        "[0-9]{1,25}",
        "(http|https|ftp|sqlite|postgresql|redis)://[a-z0-9:@/._-]{0,30}",
        "\\PC{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_environment_panics_and_every_refusal_names_a_variable(
        vars in proptest::collection::hash_map(proptest::sample::select(VARIABLES), value(), 0..8)
    ) {
        let env: HashMap<&str, String> = vars.into_iter().collect();
        match Config::from_lookup(|name| env.get(name).cloned()) {
            Ok(config) => {
                // Whatever was accepted can be used in deadline arithmetic.
                let now = std::time::Instant::now();
                let _ = now + config.worker_ttl() + config.worker_poll_timeout + config.worker_timeout
                    + config.plugin_limits.timeout + config.limits.header_timeout;
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(VARIABLES.contains(&e.variable), "{text}");
                prop_assert!(text.contains(e.variable), "{text}");
            }
        }
    }

    #[test]
    fn no_toml_file_panics_and_every_refusal_names_the_file(text in toml_like()) {
        for (name, parse) in [
            ("clients.toml", clients_of as fn(&str, &toml::Table) -> Option<String>),
            ("workers.toml", workers_of),
            ("schedules.toml", schedules_of),
        ] {
            match parse_table(name, &text) {
                Ok(table) => {
                    if let Some(error) = parse(name, &table) {
                        prop_assert!(error.contains(name), "{error}");
                    }
                }
                Err(e) => prop_assert!(e.to_string().contains(name), "{e}"),
            }
        }
    }
}

fn clients_of(name: &str, table: &toml::Table) -> Option<String> {
    clients::from_table(name, table).err().map(|e| e.to_string())
}

fn workers_of(name: &str, table: &toml::Table) -> Option<String> {
    workers::from_table(name, table).err().map(|e| e.to_string())
}

fn schedules_of(name: &str, table: &toml::Table) -> Option<String> {
    schedules::from_table(name, table).err().map(|e| e.to_string())
}

/// Mostly well-formed TOML with the files' own field names and odd values,
/// some of it broken.
fn toml_like() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("token"),
        Just("plan"),
        Just("monthly_attempts"),
        Just("blueprint"),
        Just("interval_seconds"),
        Just("cron"),
        Just("daily_at"),
        Just("weekly_days"),
        Just("monthly_dates"),
        Just("time"),
        Just("input_data"),
        Just("x"),
    ];
    let scalar = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "\"[^\"\\\\\\n]{0,20}\"",
        Just("true".to_owned()),
        Just("1.5".to_owned()),
        Just("[1, \"a\"]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("\"hello\"".to_owned()),
        Just("\"* * * * *\"".to_owned()),
        Just("\"25:61\"".to_owned()),
        Just("[\"mon\", \"xyz\"]".to_owned()),
        "\\PC{0,10}",
    ];
    let line = (key, scalar).prop_map(|(k, v)| format!("{k} = {v}"));
    let section = ("[\"a-zA-Z0-9_:. ]{0,12}", proptest::collection::vec(line, 0..5))
        .prop_map(|(name, lines)| format!("[\"{name}\"]\n{}\n", lines.join("\n")));
    proptest::collection::vec(section, 0..4).prop_map(|sections| sections.concat())
}
