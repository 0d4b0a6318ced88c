//! `avtomatika new` end to end: the real binary writes a Rust blueprint
//! project into a temporary directory, Cargo builds it for `wasm32-wasip2`
//! outside this repository, and a server loads the `.wasm` from its
//! `BLUEPRINTS_DIR` and runs a job at the blueprint's endpoint to the end.

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
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| PathBuf::from(dir).join("scaffold"))
        .unwrap_or_else(|| fallback_target.to_owned());
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

#[tokio::test]
async fn a_new_rust_project_builds_and_its_blueprint_runs_a_job() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("greeting-flow");
    let out = avtomatika(&["new", "greeting-flow", "--lang", "rust", "--dir", project.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("cargo build --release --target wasm32-wasip2"));
    for file in
        ["Cargo.toml", "Cargo.lock", "README.md", "src/lib.rs", "sdk/Cargo.toml", "sdk/src/lib.rs", "wit/world.wit"]
    {
        assert!(project.join(file).is_file(), "{file} was not written");
    }

    let target = cargo_build(&project, &tmp.path().join("target"));
    let wasm = target.join("wasm32-wasip2/release/greeting_flow.wasm");
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(readme.contains("target/wasm32-wasip2/release/greeting_flow.wasm"), "the README names the output");

    let blueprints = tmp.path().join("blueprints");
    std::fs::create_dir(&blueprints).unwrap();
    std::fs::copy(&wasm, blueprints.join("greeting_flow.wasm")).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    let config = Config {
        api_host: "127.0.0.1".into(),
        api_port: 0,
        client_token: TOKEN.into(),
        blueprints_dir: Some(blueprints),
        ..Config::default()
    };
    let app = App::new(config).await.expect("the server loads the new blueprint");
    let listener = app.bind().await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, shutdown.clone()));

    let http = reqwest::Client::new();
    let response = http
        .post(format!("{base}/api/v1/jobs/greeting-flow"))
        .header("X-Avtomatika-Token", TOKEN)
        .json(&json!({"initial_data": {"name": "Ada"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let created: Value = response.json().await.unwrap();
    let job_id = created["job_id"].as_str().expect("job_id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("choose one of: rust"));

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
