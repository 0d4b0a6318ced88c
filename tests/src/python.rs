//! Real Python workers: the Avtomatika worker SDK from PyPI, in a virtualenv
//! per SDK version under the cargo target directory, running the scripts in
//! `examples/python-worker/` unchanged. A plain `cargo test` prepares them on
//! a fresh machine that has `python3` and can reach PyPI; without those the
//! tests fail, they never skip.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::{TestServer, WORKER_TOKEN};

/// How long a job may take; a worker needs a few seconds to start.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);

pub const PACKAGE: &str = "avtomatika-worker";

/// The SDK generations the tests run: 1.0b3 (its own HTTP client), 1.0b5
/// (the first on `rxon`, 1.0b2) and the newest tried (`rxon` 1.0b17).
pub const SDK_1_0B3: &str = "1.0b3";
pub const SDK_1_0B5: &str = "1.0b5";
pub const SDK_NEWEST: &str = "1.0b20";

/// Job statuses a job never leaves.
pub const TERMINAL: &[&str] = &["finished", "failed", "cancelled", "error", "quarantined"];

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

pub fn example_dir() -> PathBuf {
    workspace_dir().join("examples/python-worker")
}

/// The cargo target directory: `CARGO_TARGET_DIR` when set (read when the test
/// runs; a relative one is taken from the workspace root), else `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => workspace_dir().join(dir),
        None => workspace_dir().join("target"),
    }
}

/// The version `examples/python-worker/requirements.txt` pins the SDK at.
pub fn pinned_version() -> String {
    let requirements = example_dir().join("requirements.txt");
    let text = fs::read_to_string(&requirements).unwrap_or_else(|e| panic!("reading {}: {e}", requirements.display()));
    text.lines()
        .find_map(|line| line.trim().strip_prefix(PACKAGE)?.trim().strip_prefix("==").map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("{} does not pin {PACKAGE}==<version>", requirements.display()))
}

/// Runs `cmd` to completion; panics with its output when it fails.
fn run(cmd: &mut StdCommand, what: &str) -> String {
    let output = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what}: {cmd:?} failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The SDK version installed in the venv whose interpreter is `python`, if any.
fn installed_version(python: &Path) -> Option<String> {
    let output = StdCommand::new(python)
        .args(["-c", &format!("import importlib.metadata as m; print(m.version({PACKAGE:?}))")])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The interpreter of a venv with SDK `version` installed. Made once per
/// test process and version, under an exclusive lock on a file beside the
/// venv, so concurrent test processes neither race nor see half a venv.
pub fn sdk_python(version: &str) -> PathBuf {
    static VENVS: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut venvs = VENVS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(python) = venvs.get_or_insert_default().get(version) {
        return python.clone();
    }
    let target = target_dir();
    fs::create_dir_all(&target).unwrap_or_else(|e| panic!("creating {}: {e}", target.display()));
    let venv = target.join(format!("py-worker-venv-{version}"));
    let python = venv.join("bin/python");

    let lock_path = target.join(format!("py-worker-venv-{version}.lock"));
    let lock = File::create(&lock_path).unwrap_or_else(|e| panic!("creating {}: {e}", lock_path.display()));
    lock.lock().unwrap_or_else(|e| panic!("locking {}: {e}", lock_path.display()));
    if !python.exists() {
        // Built aside and renamed into place: an interrupted run leaves no
        // venv that looks finished.
        let partial = target.join(format!("py-worker-venv-{version}.partial"));
        let _ = fs::remove_dir_all(&partial);
        let _ = fs::remove_dir_all(&venv);
        run(
            StdCommand::new("python3").arg("-m").arg("venv").arg(&partial),
            "creating the Python worker's virtualenv (python3 with the venv module is required)",
        );
        fs::rename(&partial, &venv)
            .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", partial.display(), venv.display()));
    }
    if installed_version(&python).as_deref() != Some(version) {
        run(
            StdCommand::new(&python)
                .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input"])
                .arg(format!("{PACKAGE}=={version}")),
            &format!("installing {PACKAGE}=={version} from PyPI into {}", venv.display()),
        );
        let installed = installed_version(&python);
        assert_eq!(
            installed.as_deref(),
            Some(version),
            "{PACKAGE}=={version} is not importable in {} after pip install",
            venv.display()
        );
    }
    drop(lock);
    venvs.get_or_insert_default().insert(version.to_owned(), python.clone());
    python
}

/// A script of `examples/python-worker/` running under an SDK version. Killed
/// when dropped; its output is printed when the test is failing, else deleted.
pub struct PythonWorker {
    child: Child,
    log: PathBuf,
}

impl PythonWorker {
    /// `examples/python-worker/worker.py` under the pinned SDK.
    pub fn spawn(server: &TestServer, worker_id: &str) -> Self {
        Self::spawn_script(server, worker_id, "worker.py", &[])
    }

    /// `examples/python-worker/{script}` under the pinned SDK, with `env` on
    /// top of the SDK settings.
    pub fn spawn_script(server: &TestServer, worker_id: &str, script: &str, env: &[(&str, String)]) -> Self {
        Self::spawn_sdk(&pinned_version(), server, worker_id, script, env)
    }

    /// `examples/python-worker/{script}` under SDK `version`.
    pub fn spawn_sdk(
        version: &str,
        server: &TestServer,
        worker_id: &str,
        script: &str,
        env: &[(&str, String)],
    ) -> Self {
        let python = sdk_python(version);
        let logs = target_dir().join("py-worker-logs");
        fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("creating {}: {e}", logs.display()));
        let log = logs.join(format!("{worker_id}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("clone the log file handle");

        let mut cmd = Command::new(python);
        cmd.arg(example_dir().join(script))
            .current_dir(example_dir())
            // Settings of the caller's environment that would override these.
            .env_remove("ORCHESTRATORS_CONFIG")
            .env_remove("WORKER_INDIVIDUAL_TOKEN")
            .env_remove("WORKER_ENABLE_WEBSOCKETS")
            .env_remove("S3_ENDPOINT_URL")
            .env_remove("ORCHESTRATOR_SECRET_KEY")
            .env_remove("SECRET_KEY")
            .env("ORCHESTRATOR_URL", &server.base)
            .env("WORKER_ID", worker_id)
            .env("WORKER_TOKEN", WORKER_TOKEN)
            .env("HEARTBEAT_INTERVAL", "1")
            .env("TASK_FILES_DIR", logs.join(format!("{worker_id}-files")))
            .env("PYTHONUNBUFFERED", "1")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Self { child, log }
    }

    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// Panics when the worker process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            // Its output is printed as the worker is dropped.
            panic!("the Python worker exited ({status})");
        }
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("--- Python worker output ({}) ---\n{}--- end ---", self.log.display(), self.output());
        } else {
            let _ = fs::remove_file(&self.log);
        }
    }
}

/// Polls the job until it reaches a terminal status; panics when that takes
/// longer than [`JOB_TIMEOUT`] or the worker dies meanwhile.
pub async fn wait_until_done(server: &TestServer, worker: &mut PythonWorker, job_id: &str) -> Value {
    wait_until(server, worker, job_id, |job| job["status"].as_str().is_some_and(|status| TERMINAL.contains(&status)))
        .await
}

/// Polls the job (every 20 ms) until `done` holds for it, within [`JOB_TIMEOUT`].
pub async fn wait_until(
    server: &TestServer,
    worker: &mut PythonWorker,
    job_id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let job = server.job(job_id).await;
        if done(&job) {
            return job;
        }
        worker.assert_running();
        assert!(Instant::now() < deadline, "job {job_id} did not get there within {JOB_TIMEOUT:?}: {job:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker id unique to one test run.
pub fn worker_id(test: &str) -> String {
    format!("py-{test}-{}", uuid::Uuid::new_v4())
}
