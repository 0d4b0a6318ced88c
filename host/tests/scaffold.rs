//! `avtomatika new` end to end: the real binary writes a blueprint project
//! (Rust, JavaScript, Python) into a temporary directory, the language's own
//! tools build it outside this repository as its README says (Cargo for
//! `wasm32-wasip2`; `npm ci && npm run build`; `sh build.sh`), and a server
//! loads the `.wasm` from its `BLUEPRINTS_DIR` and runs a job at the
//! blueprint's endpoint to the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use avtomatika::App;
use avtomatika::config::Config;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_avtomatika");
const TOKEN: &str = "scaffold-client-token";

fn avtomatika(args: &[&str]) -> Output {
    let output = Command::new(BIN).args(args).output().expect("run avtomatika");
    eprintln!(
        "avtomatika {args:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Builds the project as its README says, with the toolchain running this
/// test. The target directory is shared across runs when `CARGO_TARGET_DIR`
/// is set (`<it>/scaffold`), so dependencies compile once.
fn cargo_build(project: &Path, fallback_target: &Path) -> PathBuf {
    let target_dir = shared_dir("", fallback_target);
    let cargo = env!("CARGO");
    let build = |offline: bool| {
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(project.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir);
        if offline {
            cmd.arg("--offline");
        }
        // The toolchain beside this cargo (it has wasm32-wasip2, per
        // rust-toolchain.toml), not whatever `rustc` the PATH finds outside
        // the repository.
        if let Some(rustc) = Path::new(cargo).parent().map(|bin| bin.join("rustc")).filter(|p| p.exists()) {
            cmd.env("RUSTC", rustc);
        }
        // Host build settings of an outer cargo do not apply to the guest.
        for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET", "RUSTC_WRAPPER", "CARGO_MAKEFLAGS"] {
            cmd.env_remove(var);
        }
        cmd.output().expect("run cargo")
    };
    // Offline first: the lock file pins what the repository's own guests
    // use, which is normally in the local registry cache already.
    let mut output = build(true);
    if !output.status.success() {
        output = build(false);
    }
    assert!(output.status.success(), "cargo build failed:\n{}", String::from_utf8_lossy(&output.stderr));
    target_dir
}

async fn job(http: &reqwest::Client, base: &str, job_id: &str) -> Value {
    let response = http
        .get(format!("{base}/api/v1/jobs/{job_id}"))
        .header("X-Avtomatika-Token", TOKEN)
        .send()
        .await
        .expect("get the job");
    assert_eq!(response.status(), 200);
    response.json().await.expect("the job is JSON")
}

/// `CARGO_TARGET_DIR/scaffold/<name>` when `CARGO_TARGET_DIR` is set, so what
/// a build downloads or compiles is kept across runs; else `fallback`.
fn shared_dir(name: &str, fallback: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| PathBuf::from(dir).join("scaffold").join(name))
        .unwrap_or_else(|| fallback.to_owned())
}

/// Runs `command` in `dir`, failing the test with its output unless it succeeds.
fn run(mut command: Command, dir: &Path) {
    let shown = format!("{command:?}");
    let started = Instant::now();
    let output = command.current_dir(dir).output().unwrap_or_else(|e| panic!("could not run {shown}: {e}"));
    eprintln!("{shown}: {} in {:?}", output.status, started.elapsed());
    assert!(
        output.status.success(),
        "{shown} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes a `lang` project for the blueprint `name` under `tmp` with the real
/// binary and checks that `files` are there; returns its directory.
fn new_project(tmp: &Path, name: &str, lang: &str, build_hint: &str, files: &[&str]) -> PathBuf {
    let project = tmp.join(name);
    let out = avtomatika(&["new", name, "--lang", lang, "--dir", project.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(build_hint), "the next steps say how to build");
    for file in files {
        assert!(project.join(file).is_file(), "{file} was not written");
    }
    project
}

/// Starts a server whose `BLUEPRINTS_DIR` holds only `wasm`, creates a job at
/// `/jobs/<name>` and checks that the example handler finishes it.
async fn run_a_job(tmp: &Path, wasm: &Path, name: &str, start_up: Duration) {
    let blueprints = tmp.join("blueprints");
    std::fs::create_dir(&blueprints).unwrap();
    let file_name = wasm.file_name().unwrap();
    std::fs::copy(wasm, blueprints.join(file_name)).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    let config = Config {
        api_host: "127.0.0.1".into(),
        api_port: 0,
        client_token: TOKEN.into(),
        blueprints_dir: Some(blueprints),
        // A JavaScript or Python component takes minutes to compile in a debug
        // build; the cache the other test servers share (tests/src/lib.rs)
        // makes a rerun of an unchanged project quick.
        // It sits in the target directory, not at a predictable name in /tmp.
        plugin_cache_dir: shared_plugin_cache(),
        ..Config::default()
    };
    let started = Instant::now();
    let app = tokio::time::timeout(start_up, App::new(config))
        .await
        .unwrap_or_else(|_| panic!("the server did not load {} within {start_up:?}", wasm.display()))
        .expect("the server loads the new blueprint");
    eprintln!("the server loaded {} in {:?}", wasm.display(), started.elapsed());
    let listener = app.bind().await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, shutdown.clone()));

    let http = reqwest::Client::new();
    let response = http
        .post(format!("{base}/api/v1/jobs/{name}"))
        .header("X-Avtomatika-Token", TOKEN)
        .json(&json!({"initial_data": {"name": "Ada"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let created: Value = response.json().await.unwrap();
    let job_id = created["job_id"].as_str().expect("job_id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let job = job(&http, &base, &job_id).await;
        if job["status"] != "pending" && job["status"] != "running" {
            break job;
        }
        assert!(Instant::now() < deadline, "the job did not end: {job:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done["status"], "finished", "{done:#}");
    assert!(done.to_string().contains("Hello, Ada!"), "the handler's history update is there: {done:#}");
    shutdown.cancel();
    let _ = server.await;
}

#[tokio::test]
async fn a_new_rust_project_builds_and_its_blueprint_runs_a_job() {
    let tmp = tempfile::tempdir().unwrap();
    let files =
        ["Cargo.toml", "Cargo.lock", "README.md", "src/lib.rs", "sdk/Cargo.toml", "sdk/src/lib.rs", "wit/world.wit"];
    let hint = "cargo build --release --target wasm32-wasip2";
    let project = new_project(tmp.path(), "greeting-flow", "rust", hint, &files);

    let target = cargo_build(&project, &tmp.path().join("target"));
    let wasm = target.join("wasm32-wasip2/release/greeting_flow.wasm");
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(readme.contains("target/wasm32-wasip2/release/greeting_flow.wasm"), "the README names the output");
    run_a_job(tmp.path(), &wasm, "greeting-flow", Duration::from_secs(600)).await;
}

#[tokio::test]
async fn a_new_js_project_builds_and_its_blueprint_runs_a_job() {
    let tmp = tempfile::tempdir().unwrap();
    let files = ["package.json", "package-lock.json", "README.md", "index.js", "sdk/avtomatika.js", "wit/world.wit"];
    let project = new_project(tmp.path(), "greeting-js", "js", "npm ci && npm run build", &files);

    // As the README says: `npm ci && npm run build`. npm's own cache keeps
    // the download across runs.
    let mut ci = Command::new("npm");
    ci.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
    run(ci, &project);
    let mut build = Command::new("npm");
    build.args(["run", "build"]);
    run(build, &project);
    let wasm = project.join("greeting-js.wasm");
    assert!(wasm.is_file(), "npm run build wrote no {}", wasm.display());
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(readme.contains("`greeting-js.wasm`"), "the README names the output");
    run_a_job(tmp.path(), &wasm, "greeting-js", Duration::from_secs(600)).await;
}

#[tokio::test]
async fn a_new_python_project_builds_and_its_blueprint_runs_a_job() {
    let tmp = tempfile::tempdir().unwrap();
    let files = ["requirements.txt", "README.md", "app.py", "build.sh", "sdk/avtomatika.py", "wit/world.wit"];
    let project = new_project(tmp.path(), "greeting-py", "python", "sh build.sh", &files);

    // As the README says, with the virtualenv `build.sh` makes kept across
    // runs (`VENV`), so componentize-py is downloaded once.
    let mut build = Command::new("sh");
    build.arg("build.sh").env("VENV", shared_dir("py-venv", &tmp.path().join("venv")));
    run(build, &project);
    let wasm = project.join("greeting-py.wasm");
    assert!(wasm.is_file(), "build.sh wrote no {}", wasm.display());
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(readme.contains("`greeting-py.wasm`"), "the README names the output");
    run_a_job(tmp.path(), &wasm, "greeting-py", Duration::from_secs(600)).await;
}

#[test]
fn new_refuses_bad_names_unknown_languages_and_existing_projects() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let dir = dir.to_str().unwrap();

    let out = avtomatika(&["new", "Bad Name", "--lang", "rust", "--dir", dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid blueprint name"));

    let out = avtomatika(&["new", "flow", "--lang", "cobol", "--dir", dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("choose one of: rust, js, python"));

    let out = avtomatika(&["new", "flow", "--dir", dir]);
    assert_eq!(out.status.code(), Some(2), "--lang is required");

    assert!(avtomatika(&["new", "flow", "--lang=rust", "--dir", dir]).status.success());
    let handler = std::fs::read_to_string(Path::new(dir).join("src/lib.rs")).unwrap();
    std::fs::write(Path::new(dir).join("src/lib.rs"), "// mine").unwrap();
    let out = avtomatika(&["new", "flow", "--lang", "rust", "--dir", dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    assert_eq!(std::fs::read_to_string(Path::new(dir).join("src/lib.rs")).unwrap(), "// mine", "nothing overwritten");
    assert!(handler.contains(r#"Describe::new("flow")"#));
}

/// The test servers' shared plugin cache (`avtomatika_tests::shared_plugin_cache`):
/// `target/<profile>/avtomatika-test-plugin-cache`, next to `deps/` where
/// this test executable lives. Off when the executable is elsewhere.
fn shared_plugin_cache() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent().filter(|deps| deps.ends_with("deps"))?;
    Some(deps.parent()?.join("avtomatika-test-plugin-cache"))
}
