//! The `avtomatika` binary itself, run as an operator would: `avtomatika
//! check-config` and the server, under a controlled environment (only `PATH`
//! and `HOME` are inherited).
//!
//! - `check-config` accepts good configurations (the commented examples of
//!   `examples/config/` among them) and refuses each kind of mistake with exit
//!   status 1 and one message naming the variable, or the file, section and
//!   field, never quoting a token.
//! - The server refuses to start on a broken file, warns loudly when the
//!   documented default tokens are in use, logs JSON or text with timestamps
//!   in `TZ`, and never logs a token.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_avtomatika");

/// Loading the configuration compiles the blueprints: well under this even
/// in a debug build on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary with an environment of `PATH`, `HOME`, a loopback address and
/// an ephemeral port, then `vars` (which may override those).
fn command(vars: &[(&str, &str)]) -> Command {
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
    cmd.env("API_HOST", "127.0.0.1").env("API_PORT", "0");
    cmd.envs(vars.iter().copied());
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Collects a pipe's lines on a thread, so the child never blocks on a full pipe.
fn collect(pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let handle = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            match line {
                Ok(line) => sink.lock().unwrap().push(line),
                Err(_) => break,
            }
        }
    });
    (lines, handle)
}

/// Waits for `child` up to `timeout`; kills it (by its own pid) if it is still running.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A finished run of the binary.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the binary with `args` to completion (at most `START_TIMEOUT`).
fn run(args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut child = command(vars).args(args).spawn().expect("start avtomatika");
    let (out, out_reader) = collect(child.stdout.take().unwrap());
    let (err, err_reader) = collect(child.stderr.take().unwrap());
    let status = wait_or_kill(&mut child, START_TIMEOUT);
    out_reader.join().unwrap();
    err_reader.join().unwrap();
    let stdout = out.lock().unwrap().join("\n");
    let stderr = err.lock().unwrap().join("\n");
    let status = status.unwrap_or_else(|| {
        panic!("avtomatika {args:?} did not exit within {START_TIMEOUT:?}\nstdout: {stdout}\nstderr: {stderr}")
    });
    Run { status, stdout, stderr }
}

fn check_config(vars: &[(&str, &str)]) -> Run {
    run(&["check-config"], vars)
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config")
}

/// A temporary directory for configuration files.
struct Files(TempDir);

impl Files {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("temporary directory"))
    }

    /// Writes `name` and returns its path as text.
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).expect("write a configuration file");
        path.to_str().expect("UTF-8 path").to_owned()
    }
}

/// Asserts a refused configuration: exit status 1, nothing started or
/// declared OK, exactly one configuration error line on stderr containing
/// every `needle`, and no `secret` anywhere in the output.
#[track_caller]
fn assert_refused(run: &Run, needles: &[&str], secrets: &[&str]) {
    assert_eq!(run.status.code(), Some(1), "exit status 1 expected: {run:#?}");
    assert!(!run.stdout.contains("configuration OK"), "{run:#?}");
    let messages: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("avtomatika: configuration error")).collect();
    assert_eq!(messages.len(), 1, "exactly one error message expected: {run:#?}");
    for needle in needles {
        assert!(messages[0].contains(needle), "the message should mention {needle:?}: {:?}", messages[0]);
    }
    for secret in secrets {
        assert!(!run.all().contains(secret), "a secret leaked into the output: {run:#?}");
    }
}

#[test]
fn check_config_accepts_the_example_files() {
    let dir = examples_dir();
    let (clients, workers, schedules) =
        (dir.join("clients.toml"), dir.join("workers.toml"), dir.join("schedules.toml"));
    let run = check_config(&[
        ("CLIENTS_CONFIG_PATH", clients.to_str().unwrap()),
        ("WORKERS_CONFIG_PATH", workers.to_str().unwrap()),
        ("SCHEDULES_CONFIG_PATH", schedules.to_str().unwrap()),
        ("CLIENT_TOKEN", "cli-global-client-token"),
        ("GLOBAL_WORKER_TOKEN", "cli-global-worker-token"),
    ]);
    assert!(run.status.success(), "{run:#?}");
    for part in [
        "configuration OK",
        "8 blueprint(s) [counter, hello, image-pipeline, moderation, order, payment, pipeline, uppercase]",
        "3 client(s)",
        "3 worker token(s)",
        "4 schedule(s)",
    ] {
        assert!(run.stdout.contains(part), "the summary should say {part:?}: {run:#?}");
    }
    assert!(!run.all().contains("replace-me"), "tokens of the files must not be shown: {run:#?}");
    assert!(!run.all().contains("cli-global"), "{run:#?}");
}

#[test]
fn check_config_accepts_the_defaults_and_does_not_start_a_server() {
    let started = Instant::now();
    // A taken port proves nothing listens: check-config must not even bind.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = check_config(&[("API_PORT", &port)]);
    assert!(run.status.success(), "{run:#?}");
    assert!(run.stdout.contains("configuration OK"), "{run:#?}");
    assert!(run.stdout.contains("1 client(s) (CLIENT_TOKEN), 0 worker token(s), 0 schedule(s)"), "{run:#?}");
    assert!(started.elapsed() < START_TIMEOUT);
}

#[test]
fn check_config_refuses_bad_files_naming_file_section_and_field() {
    const SECRET: &str = "tok-4b1d-never-shown";
    let files = Files::new();
    let good_schedules = "[tick]\nblueprint = \"hello\"\ninterval_seconds = 60\n";
    // (variable, file name, content, what the message must name)
    let cases: Vec<(&str, &str, String, Vec<&str>)> = vec![
        (
            "CLIENTS_CONFIG_PATH",
            "clients.toml",
            format!("[alpha]\nplan = \"free\"\n[beta]\ntoken = \"{SECRET}\"\n"),
            vec!["clients.toml", "section [alpha]", "field `token`", "missing mandatory field"],
        ),
        (
            "CLIENTS_CONFIG_PATH",
            "clients.toml",
            format!("[alpha]\ntoken = \"{SECRET}\"\nmonthly_attempts = \"10\"\n"),
            vec!["clients.toml", "section [alpha]", "field `monthly_attempts`", "expected an integer"],
        ),
        (
            "CLIENTS_CONFIG_PATH",
            "clients.toml",
            format!("[alpha]\ntoken = \"{SECRET}\"\nmonthly_attempts = -5\n"),
            vec!["clients.toml", "section [alpha]", "field `monthly_attempts`"],
        ),
        (
            // Scheduled jobs belong to `scheduler:<schedule>`: no client may be named so.
            "CLIENTS_CONFIG_PATH",
            "clients.toml",
            format!("[\"scheduler:nightly\"]\ntoken = \"{SECRET}\"\n"),
            vec!["clients.toml", "section [scheduler:nightly]", "reserved"],
        ),
        (
            "CLIENTS_CONFIG_PATH",
            "clients.toml",
            format!("[alpha]\ntoken = \"{SECRET}\"\n[beta]\ntoken = \"{SECRET}\"\n"),
            vec!["clients.toml", "section [beta]", "field `token`", "same token as client [alpha]"],
        ),
        (
            "CLIENTS_CONFIG_PATH",
            "clients.toml",
            format!("[alpha]\ntoken = \"{SECRET}\"\n[beta\ntoken = \"x\"\n"),
            vec!["clients.toml:3:", "TOML syntax error"],
        ),
        (
            // The broken line holds the token: it must not be quoted.
            "CLIENTS_CONFIG_PATH",
            "clients.toml",
            format!("[alpha]\ntoken = \"{SECRET}\nplan = \"free\"\n"),
            vec!["clients.toml:2:", "TOML syntax error"],
        ),
        (
            "WORKERS_CONFIG_PATH",
            "workers.toml",
            format!("[gpu-01]\ntoken = \"{SECRET}\"\ntokn = \"{SECRET}-2\"\n"),
            vec!["workers.toml", "section [gpu-01]", "field `tokn`", "unknown field"],
        ),
        (
            "WORKERS_CONFIG_PATH",
            "workers.toml",
            "[gpu-01]\ndescription = \"GPU\"\n".to_owned(),
            vec!["workers.toml", "section [gpu-01]", "field `token`", "missing mandatory field"],
        ),
        (
            "WORKERS_CONFIG_PATH",
            "workers.toml",
            format!("[gpu-01]\ntoken = \"{SECRET}\"\ndescription = 7\n"),
            vec!["workers.toml", "section [gpu-01]", "field `description`", "expected a string"],
        ),
        (
            "SCHEDULES_CONFIG_PATH",
            "schedules.toml",
            format!("{good_schedules}[nightly]\nblueprint = \"no_such_blueprint\"\ndaily_at = \"01:00\"\n"),
            vec!["schedules.toml", "section [nightly]", "field `blueprint`", "no_such_blueprint"],
        ),
        (
            "SCHEDULES_CONFIG_PATH",
            "schedules.toml",
            "[both]\nblueprint = \"hello\"\ninterval_seconds = 60\ndaily_at = \"10:00\"\n".to_owned(),
            vec!["schedules.toml", "section [both]", "field `daily_at`", "exactly one trigger"],
        ),
        (
            "SCHEDULES_CONFIG_PATH",
            "schedules.toml",
            "[none]\nblueprint = \"hello\"\n".to_owned(),
            vec!["schedules.toml", "section [none]", "no trigger"],
        ),
        (
            // input_data may carry a secret: an error elsewhere must not quote it.
            "SCHEDULES_CONFIG_PATH",
            "schedules.toml",
            format!(
                "[report]\nblueprint = \"hello\"\ndaily_at = \"25:00\"\ninput_data = {{ api_key = \"{SECRET}\" }}\n"
            ),
            vec!["schedules.toml", "section [report]", "field `daily_at`", "HH:MM"],
        ),
        (
            "SCHEDULES_CONFIG_PATH",
            "schedules.toml",
            "[weekly]\nblueprint = \"hello\"\nweekly_days = [\"fri\"]\n".to_owned(),
            vec!["schedules.toml", "section [weekly]", "field `time`", "missing mandatory field"],
        ),
        (
            "SCHEDULES_CONFIG_PATH",
            "schedules.toml",
            "[weekly]\nblueprint = \"hello\"\nweekly_days = [\"friday\"]\ntime = \"10:00\"\n".to_owned(),
            vec!["schedules.toml", "section [weekly]", "field `weekly_days`", "friday"],
        ),
    ];
    for (variable, name, text, needles) in &cases {
        let path = files.write(name, text);
        let run = check_config(&[(variable, &path), ("CLIENT_TOKEN", "cli-env-client-token")]);
        let mut needles = needles.clone();
        needles.push(&path);
        assert_refused(&run, &needles, &[SECRET, "cli-env-client-token"]);
    }
    // A syntax error is located by line and column: `file:line:col: …`.
    let path = files.write("clients.toml", "[alpha]\ntoken = \"t-1\"\n[beta\n");
    let run = check_config(&[("CLIENTS_CONFIG_PATH", &path)]);
    assert_refused(&run, &[&format!("{path}:3:6: TOML syntax error")], &["t-1"]);
}

#[test]
fn check_config_refuses_a_missing_file() {
    let files = Files::new();
    let missing = files.0.path().join("nowhere").join("clients.toml");
    let missing = missing.to_str().unwrap();
    let run = check_config(&[("CLIENTS_CONFIG_PATH", missing)]);
    assert_refused(&run, &[missing, "cannot read the file"], &[]);
}

#[test]
fn check_config_refuses_bad_environment_variables_naming_them() {
    const CLIENT: &str = "env-client-token-9d2e";
    // (variables, the variable the message must name, values it must not show)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a [&'a str]);
    let cases: &[Case] = &[
        (&[("TZ", "Mars/Olympus")], "TZ", &[]),
        (&[("API_PORT", "abc")], "API_PORT", &[]),
        (&[("API_PORT", "70000")], "API_PORT", &[]),
        (&[("LOG_LEVEL", "LOUD")], "LOG_LEVEL", &[]),
        (&[("LOG_FORMAT", "xml")], "LOG_FORMAT", &[]),
        (&[("WORKER_TIMEOUT_SECONDS", "0")], "WORKER_TIMEOUT_SECONDS", &[]),
        (&[("WORKER_POLL_TIMEOUT_SECONDS", "soon")], "WORKER_POLL_TIMEOUT_SECONDS", &[]),
        (&[("WORKER_HEALTH_CHECK_INTERVAL_SECONDS", "-1")], "WORKER_HEALTH_CHECK_INTERVAL_SECONDS", &[]),
        (&[("JOB_MAX_RETRIES", "many")], "JOB_MAX_RETRIES", &[]),
        (&[("WATCHER_INTERVAL_SECONDS", "0")], "WATCHER_INTERVAL_SECONDS", &[]),
        (&[("EXECUTOR_MAX_CONCURRENT_JOBS", "0")], "EXECUTOR_MAX_CONCURRENT_JOBS", &[]),
        (&[("REDIS_HOST", "localhost"), ("REDIS_PORT", "redis")], "REDIS_PORT", &[]),
        (&[("REDIS_HOST", "localhost"), ("REDIS_DB", "first")], "REDIS_DB", &[]),
        (&[("S3_MAX_CONCURRENCY", "0")], "S3_MAX_CONCURRENCY", &[]),
        (&[("PLUGIN_TIMEOUT_MS", "fast")], "PLUGIN_TIMEOUT_MS", &[]),
        (&[("PLUGIN_MEMORY_LIMIT_MB", "0")], "PLUGIN_MEMORY_LIMIT_MB", &[]),
        (&[("MAX_REQUEST_BODY_BYTES", "big")], "MAX_REQUEST_BODY_BYTES", &[]),
        // Durations past a year overflowed deadline arithmetic at run time
        // (every registration panicked); now refused at start-up.
        (
            &[("WORKER_HEALTH_CHECK_INTERVAL_SECONDS", "18446744073709551615")],
            "WORKER_HEALTH_CHECK_INTERVAL_SECONDS",
            &[],
        ),
        (&[("WORKER_POLL_TIMEOUT_SECONDS", "99999999999")], "WORKER_POLL_TIMEOUT_SECONDS", &[]),
        (&[("MAX_WORKERS_PER_TOKEN", "0")], "MAX_WORKERS_PER_TOKEN", &[]),
        // A database URI may carry a password: never echoed.
        (&[("HISTORY_DATABASE_URI", "mysql://admin:pw-5e11@db.local/history")], "HISTORY_DATABASE_URI", &["pw-5e11"]),
        (&[("HISTORY_DATABASE_URI", "postgresql://admin:pw-5e11@/x")], "HISTORY_DATABASE_URI", &["pw-5e11"]),
        // Partial S3 configuration names the variable that is missing.
        (
            &[("S3_ENDPOINT_URL", "http://s3.local:9000"), ("S3_ACCESS_KEY", "AKIA-ak-77f0")],
            "S3_SECRET_KEY",
            &["AKIA-ak-77f0"],
        ),
        (
            &[("S3_ENDPOINT_URL", "http://s3.local:9000"), ("S3_SECRET_KEY", "sk-77f0-secret")],
            "S3_ACCESS_KEY",
            &["sk-77f0-secret"],
        ),
        (
            &[("S3_ACCESS_KEY", "AKIA-ak-77f0"), ("S3_SECRET_KEY", "sk-77f0-secret")],
            "S3_ENDPOINT_URL",
            &["AKIA-ak-77f0", "sk-77f0-secret"],
        ),
        (
            &[
                ("S3_ENDPOINT_URL", "ftp://s3.local"),
                ("S3_ACCESS_KEY", "AKIA-ak-77f0"),
                ("S3_SECRET_KEY", "sk-77f0-secret"),
            ],
            "S3_ENDPOINT_URL",
            &["AKIA-ak-77f0", "sk-77f0-secret"],
        ),
    ];
    for (vars, variable, secrets) in cases {
        let mut env = vars.to_vec();
        env.push(("CLIENT_TOKEN", CLIENT));
        let run = check_config(&env);
        let mut secrets = secrets.to_vec();
        secrets.push(CLIENT);
        assert_refused(&run, &[&format!("environment variable {variable}")], &secrets);
    }
}

/// "Every env variable of configuration.md validated at start": a malformed
/// Redis port or database index is an error even before `REDIS_HOST` is set,
/// like every other malformed number.
#[test]
fn check_config_refuses_malformed_redis_settings_without_redis_host() {
    for (variable, value) in [("REDIS_PORT", "redis"), ("REDIS_DB", "first")] {
        let run = check_config(&[(variable, value)]);
        assert_refused(&run, &[&format!("environment variable {variable}")], &[]);
    }
}

#[test]
fn unknown_arguments_are_refused_with_usage() {
    let run = run(&["serve-now"], &[]);
    assert_eq!(run.status.code(), Some(2), "{run:#?}");
    assert!(run.stderr.contains("usage: avtomatika [check-config | new <name>"), "{run:#?}");
}

/// A running server process.
struct Server {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Server {
    fn spawn(vars: &[(&str, &str)]) -> Self {
        let mut child = command(vars).spawn().expect("start avtomatika");
        let (stdout, out_reader) = collect(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect(child.stderr.take().unwrap());
        Self { child, stderr, stdout, readers: vec![out_reader, err_reader] }
    }

    /// Starts the server and waits until it serves; returns it and its address.
    fn start(vars: &[(&str, &str)]) -> (Self, String) {
        let mut server = Self::spawn(vars);
        let addr = server.wait_for_address();
        (server, addr)
    }

    /// The `host:port` of the "serving" log line.
    fn wait_for_address(&mut self) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = self.stderr.lock().unwrap().iter().find(|l| l.contains("serving")).and_then(|line| {
                let start = line.find("127.0.0.1:")?;
                let rest = &line[start + "127.0.0.1:".len()..];
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                (!port.is_empty()).then(|| format!("127.0.0.1:{port}"))
            });
            if let Some(addr) = found {
                return addr;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the server exited with {status} before serving: {:#?}", self.stderr.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "the server did not serve in time: {:#?}", self.stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server with SIGTERM (SIGKILL if it hangs) and returns its
    /// stdout and stderr lines.
    fn stop(mut self) -> (Vec<String>, Vec<String>) {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).stderr(Stdio::null()).status();
        }
        let status = wait_or_kill(&mut self.child, Duration::from_secs(20));
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = self.stderr.lock().unwrap().clone();
        assert!(status.is_some(), "the server did not stop on SIGTERM: {stderr:#?}");
        (stdout, stderr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request over a fresh connection; returns status and body.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the server");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{response:?}"));
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[test]
fn the_server_does_not_start_on_a_broken_clients_file() {
    let files = Files::new();
    let path = files.write("clients.toml", "[alpha]\ntoken = \"srv-tok-31a9\"\nmonthly_attempts = \"10\"\n");
    let mut server = Server::spawn(&[("CLIENTS_CONFIG_PATH", &path)]);
    let status = wait_or_kill(&mut server.child, START_TIMEOUT);
    let (_, stderr) = server.stop();
    let status = status.unwrap_or_else(|| panic!("the server started despite a broken clients.toml: {stderr:#?}"));
    assert_eq!(status.code(), Some(1), "{stderr:#?}");
    let stderr = stderr.join("\n");
    assert!(stderr.contains(&format!("{path}: section [alpha], field `monthly_attempts`")), "{stderr}");
    assert!(!stderr.contains("serving"), "{stderr}");
    assert!(!stderr.contains("srv-tok-31a9"), "{stderr}");
}

#[test]
fn the_server_does_not_start_on_a_bad_schedule_or_variable() {
    let files = Files::new();
    let path = files.write("schedules.toml", "[s]\nblueprint = \"ghost\"\ninterval_seconds = 5\n");
    for vars in [vec![("SCHEDULES_CONFIG_PATH", path.as_str())], vec![("TZ", "Mars/Olympus")]] {
        let mut server = Server::spawn(&vars);
        let status = wait_or_kill(&mut server.child, START_TIMEOUT);
        let (_, stderr) = server.stop();
        let status = status.unwrap_or_else(|| panic!("the server started with {vars:?}: {stderr:#?}"));
        assert_eq!(status.code(), Some(1), "{vars:?}: {stderr:#?}");
    }
}

/// The WARN records that mention `needle`.
fn warnings_about<'a>(lines: &'a [String], needle: &str) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|line| {
            serde_json::from_str::<Value>(line).is_ok_and(|record| {
                record["level"] == "WARN" && record["message"].as_str().is_some_and(|m| m.contains(needle))
            })
        })
        .collect()
}

#[test]
fn default_tokens_are_warned_about_loudly() {
    // Both defaults.
    let (server, _) = Server::start(&[]);
    let (_, stderr) = server.stop();
    assert_eq!(warnings_about(&stderr, "CLIENT_TOKEN").len(), 1, "{stderr:#?}");
    assert_eq!(warnings_about(&stderr, "GLOBAL_WORKER_TOKEN").len(), 1, "{stderr:#?}");

    // Only the worker token is the default.
    let (server, _) = Server::start(&[("CLIENT_TOKEN", "warn-test-client-token")]);
    let (_, stderr) = server.stop();
    assert!(warnings_about(&stderr, "CLIENT_TOKEN is").is_empty(), "{stderr:#?}");
    assert_eq!(warnings_about(&stderr, "GLOBAL_WORKER_TOKEN").len(), 1, "{stderr:#?}");

    // Both set: silence.
    let (server, _) =
        Server::start(&[("CLIENT_TOKEN", "warn-test-client-token"), ("GLOBAL_WORKER_TOKEN", "warn-test-worker-token")]);
    let (_, stderr) = server.stop();
    assert!(warnings_about(&stderr, "TOKEN").is_empty(), "{stderr:#?}");
    assert!(!stderr.join("\n").contains("warn-test-"), "{stderr:#?}");

    // A clients file replaces CLIENT_TOKEN: its default is harmless then.
    let files = Files::new();
    let clients = files.write("clients.toml", "[acme]\ntoken = \"warn-test-acme-token\"\n");
    let (server, _) =
        Server::start(&[("CLIENTS_CONFIG_PATH", &clients), ("GLOBAL_WORKER_TOKEN", "warn-test-worker-token")]);
    let (_, stderr) = server.stop();
    assert!(warnings_about(&stderr, "TOKEN").is_empty(), "{stderr:#?}");
}

#[test]
fn json_logs_are_one_json_object_per_line_with_timestamps_in_tz() {
    let (server, addr) = Server::start(&[
        ("LOG_FORMAT", "json"),
        ("LOG_LEVEL", "DEBUG"),
        ("TZ", "Asia/Tokyo"),
        ("CLIENT_TOKEN", "json-client-token"),
        ("GLOBAL_WORKER_TOKEN", "json-worker-token"),
    ]);
    let (status, _) =
        http(&addr, "POST", "/api/v1/jobs/hello", &[("X-Avtomatika-Token", "json-client-token")], Some(&json!({})));
    assert_eq!(status, 202);
    let (stdout, stderr) = server.stop();
    assert!(stderr.len() >= 3, "expected some log records: {stderr:#?}");
    for line in &stderr {
        let record: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        let timestamp = record["timestamp"].as_str().unwrap_or_else(|| panic!("no timestamp: {line}"));
        assert!(timestamp.ends_with("+09:00"), "timestamp not in Asia/Tokyo: {line}");
        assert!(record["level"].is_string() && record["message"].is_string(), "{line}");
    }
    assert!(stdout.is_empty(), "logs go to stderr: {stdout:#?}");
    assert!(stderr.iter().any(|l| l.contains("\"DEBUG\"")), "LOG_LEVEL=DEBUG shows debug records: {stderr:#?}");
}

#[test]
fn text_logs_are_not_json_and_carry_the_tz_offset() {
    let (server, _) = Server::start(&[
        ("LOG_FORMAT", "text"),
        ("TZ", "Asia/Tokyo"),
        ("CLIENT_TOKEN", "text-client-token"),
        ("GLOBAL_WORKER_TOKEN", "text-worker-token"),
    ]);
    let (_, stderr) = server.stop();
    assert!(!stderr.is_empty());
    for line in &stderr {
        assert!(serde_json::from_str::<Value>(line).is_err(), "a text log line is JSON: {line}");
    }
    assert!(stderr.iter().any(|l| l.contains("serving") && l.contains("+09:00")), "{stderr:#?}");
    // UTC by default.
    let (server, _) = Server::start(&[("LOG_FORMAT", "text"), ("CLIENT_TOKEN", "x-token")]);
    let (_, stderr) = server.stop();
    assert!(stderr.iter().any(|l| l.contains("serving") && l.contains("+00:00")), "{stderr:#?}");
}

#[test]
fn log_level_filters_records() {
    // At ERROR not even "serving" is logged: find the server by its port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let port = port.to_string();
    let server = Server::spawn(&[("LOG_LEVEL", "ERROR"), ("API_PORT", &port), ("CLIENT_TOKEN", "level-client-token")]);
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "the server did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http(&addr, "GET", "/_public/status", &[], None).0, 200);
    let (_, stderr) = server.stop();
    assert!(stderr.is_empty(), "LOG_LEVEL=ERROR shows only errors: {stderr:#?}");
}

#[test]
fn tokens_never_reach_the_logs() {
    const CLIENT_A: &str = "leak-client-a-6c1f0e";
    const CLIENT_B: &str = "leak-client-b-93ab77";
    const GLOBAL_CLIENT: &str = "leak-global-client-2d4e";
    const GLOBAL_WORKER: &str = "leak-global-worker-81b5";
    const OWN_WORKER: &str = "leak-own-worker-f3c9aa";
    const SECRETS: [&str; 5] = [CLIENT_A, CLIENT_B, GLOBAL_CLIENT, GLOBAL_WORKER, OWN_WORKER];
    let files = Files::new();
    let clients = files.write(
        "clients.toml",
        &format!(
            "[acme]\ntoken = \"{CLIENT_A}\"\nplan = \"pro\"\nmonthly_attempts = 1\n[globex]\ntoken = \"{CLIENT_B}\"\n"
        ),
    );
    let workers = files.write("workers.toml", &format!("[w-own]\ntoken = \"{OWN_WORKER}\"\n"));
    for format in ["json", "text"] {
        let (server, addr) = Server::start(&[
            ("LOG_FORMAT", format),
            ("LOG_LEVEL", "DEBUG"),
            ("CLIENTS_CONFIG_PATH", &clients),
            ("WORKERS_CONFIG_PATH", &workers),
            ("CLIENT_TOKEN", GLOBAL_CLIENT),
            ("GLOBAL_WORKER_TOKEN", GLOBAL_WORKER),
            ("WORKER_POLL_TIMEOUT_SECONDS", "1"),
        ]);
        let client = |token| [("X-Avtomatika-Token", token)];
        let worker = |token| [("X-Worker-Token", token)];
        let registration = json!({"worker_id": "w-own", "worker_type": "t", "supported_tasks": ["greet"]});

        let (status, body) = http(&addr, "POST", "/api/v1/jobs/hello", &client(CLIENT_A), Some(&json!({"name": "A"})));
        assert_eq!(status, 202, "{body}");
        let job_id = serde_json::from_str::<Value>(&body).unwrap()["job_id"].as_str().unwrap().to_owned();
        // Over the quota, a wrong token, another client's job, the global token replaced.
        assert_eq!(http(&addr, "POST", "/api/v1/jobs/hello", &client(CLIENT_A), Some(&json!({}))).0, 429);
        assert_eq!(http(&addr, "GET", &format!("/api/v1/jobs/{job_id}"), &client(CLIENT_B), None).0, 404);
        assert_eq!(http(&addr, "GET", &format!("/api/v1/jobs/{job_id}"), &client(GLOBAL_CLIENT), None).0, 401);
        let (status, job) = http(&addr, "GET", &format!("/api/v1/jobs/{job_id}"), &client(CLIENT_A), None);
        assert_eq!(status, 200, "{job}");
        // Workers: the own token, and refusals that get logged.
        assert_eq!(
            http(&addr, "POST", "/_worker/workers/register", &worker(GLOBAL_WORKER), Some(&registration)).0,
            401
        );
        assert_eq!(http(&addr, "POST", "/_worker/workers/register", &worker(OWN_WORKER), Some(&registration)).0, 200);
        let (status, task) = http(&addr, "GET", "/_worker/workers/w-own/tasks/next", &worker(OWN_WORKER), None);
        assert_eq!(status, 200, "{task}");
        let task: Value = serde_json::from_str(&task).unwrap();
        let result = json!({"job_id": task["job_id"], "task_id": task["task_id"], "result": {"status": "success"}});
        assert_eq!(http(&addr, "POST", "/_worker/tasks/result", &worker(OWN_WORKER), Some(&result)).0, 200);
        assert_eq!(http(&addr, "POST", "/api/v1/admin/reload-workers", &client(CLIENT_B), None).0, 200);
        let (stdout, stderr) = server.stop();

        let all = format!("{}\n{}\n{job}", stdout.join("\n"), stderr.join("\n"));
        assert!(stderr.len() > 10, "LOG_LEVEL=DEBUG should log the requests: {stderr:#?}");
        for secret in SECRETS {
            assert!(!all.contains(secret), "{format} logs (or the job) contain a token: {all}");
        }
    }
}

/// Two workers sharing one "individual" token could each act as the other,
/// and a result posted without `worker_id` would be attributed to whichever
/// the token lookup happens to find. `clients.toml` refuses a shared token;
/// `workers.toml` must too.
#[test]
fn check_config_refuses_two_workers_sharing_a_token() {
    let files = Files::new();
    let path = files.write("workers.toml", "[gpu-01]\ntoken = \"shared-9f1c\"\n[gpu-02]\ntoken = \"shared-9f1c\"\n");
    let run = check_config(&[("WORKERS_CONFIG_PATH", &path)]);
    assert_refused(&run, &[&path, "section [gpu-02]", "field `token`"], &["shared-9f1c"]);
}
