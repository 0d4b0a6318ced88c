//! Builds the components of `plugins/python`: every `blueprints/<name>` and
//! `testing/<name>` folder holding an `app.py` becomes `$OUT_DIR/python/<name>.wasm`,
//! named `PY_<NAME>_COMPONENT` (`pipeline-py` → `PY_PIPELINE_COMPONENT`).
//!
//! componentize-py, pinned in `plugins/python/requirements.txt`, is installed
//! from PyPI into a virtualenv inside `OUT_DIR` (reused while it holds the pinned
//! version), so nothing outside the target directory changes and the only
//! requirement is `python3` with its `venv` module.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::{Built, Context};

/// The package in `requirements.txt` whose pinned version the venv must hold.
const COMPONENTIZER: &str = "componentize-py";

/// The file in each blueprint folder that componentize-py loads as the app
/// module, and the module name it is given.
const APP_FILE: &str = "app.py";
const APP_MODULE: &str = "app";

/// The folders holding blueprints, each a set of `<name>/app.py`.
const SUITES: &[&str] = &["blueprints", "testing"];

pub fn build(context: &Context) -> Vec<Built> {
    let python_dir = context.repo.join("plugins/python");
    let wit_dir = context.repo.join("wit");
    let sdk_dir = python_dir.join("sdk");
    let requirements = python_dir.join("requirements.txt");
    // Directories are scanned whole by cargo, so a new blueprint folder or a
    // changed WIT file reruns the build too.
    for input in [&python_dir, &wit_dir] {
        println!("cargo:rerun-if-changed={}", input.display());
    }

    let apps: Vec<(String, PathBuf)> = SUITES.iter().flat_map(|suite| apps_in(&python_dir.join(suite))).collect();
    if apps.is_empty() {
        return Vec::new();
    }

    let out = context.out_dir.join("python");
    let componentizer = ensure_venv(&out.join("venv"), &requirements);

    // componentize-py writes `__pycache__` next to the sources it imports, so
    // each app is componentized from a copy: the repository stays clean and
    // cargo does not see its inputs change under it on every build.
    let mut running = Vec::new();
    for (name, app_dir) in &apps {
        let staged = out.join("src").join(name);
        stage(&sdk_dir, &staged.join("sdk"));
        stage(app_dir, &staged.join("app"));
        let wasm = out.join(format!("{name}.wasm"));
        let mut cmd = Command::new(&componentizer);
        cmd.arg("-d")
            .arg(&wit_dir)
            .args(["-w", "blueprint", "componentize", APP_MODULE, "-p"])
            .arg(staged.join("sdk"))
            .arg("-p")
            .arg(staged.join("app"))
            .arg("-o")
            .arg(&wasm);
        // Both apps at once: most of the time goes to single-threaded steps.
        running.push((name, app_dir, wasm, describe(&cmd), spawn(&mut cmd)));
    }

    running
        .into_iter()
        .map(|(name, app_dir, wasm, shown, child)| {
            let output = wait(child, &shown);
            check(&shown, &output);
            let source = app_dir.strip_prefix(&context.repo).unwrap_or(app_dir).join(APP_FILE);
            Built { ident: ident(name), source: source.display().to_string(), wasm }
        })
        .collect()
}

/// `(name, folder)` of every `<dir>/<name>/app.py`, in name order.
fn apps_in(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut apps: Vec<(String, PathBuf)> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join(APP_FILE).is_file())
        .filter_map(|path| path.file_name().and_then(OsStr::to_str).map(|name| (name.to_owned(), path.clone())))
        .collect();
    apps.sort();
    apps
}

/// `pipeline-py` → `PY_PIPELINE`: the `-py` suffix only tells the folders
/// apart from the Rust plugins of the same name, which the prefix does here.
fn ident(name: &str) -> String {
    let base = name.strip_suffix("-py").unwrap_or(name);
    format!("PY_{}", base.to_uppercase().replace('-', "_"))
}

/// The venv's componentize-py, after creating the venv and installing the
/// requirements unless it already holds the pinned version.
fn ensure_venv(venv: &Path, requirements: &Path) -> PathBuf {
    let pinned = pinned_version(requirements);
    let componentizer = venv.join("bin").join(COMPONENTIZER);
    let expected = format!("{COMPONENTIZER} {pinned}");
    let installed = Command::new(&componentizer).arg("--version").output();
    if installed.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == expected) {
        return componentizer;
    }

    let mut create = Command::new("python3");
    create.args(["-m", "venv", "--clear"]).arg(venv);
    run(&mut create, "python3 with its venv module is needed to build plugins/python");
    let mut install = Command::new(venv.join("bin").join("python"));
    install.args(["-m", "pip", "install", "--disable-pip-version-check", "--quiet", "-r"]).arg(requirements);
    run(&mut install, "installing from PyPI needs network access (or a wheel in PIP_FIND_LINKS)");
    componentizer
}

/// The version `requirements` pins componentize-py to (`componentize-py==X`).
fn pinned_version(requirements: &Path) -> String {
    let text = fs::read_to_string(requirements).unwrap_or_else(|e| panic!("reading {}: {e}", requirements.display()));
    text.lines()
        .filter_map(|line| line.trim().strip_prefix(COMPONENTIZER)?.trim().strip_prefix("=="))
        .map(|version| version.trim().to_owned())
        .next()
        .unwrap_or_else(|| panic!("{} must pin {COMPONENTIZER}==<version>", requirements.display()))
}

/// Replaces `to` with a copy of the `*.py` files of `from` (not recursive:
/// an app or the SDK is one folder of modules).
fn stage(from: &Path, to: &Path) {
    if to.exists() {
        fs::remove_dir_all(to).unwrap_or_else(|e| panic!("clearing {}: {e}", to.display()));
    }
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    let entries = fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    for path in entries.filter_map(|entry| entry.ok().map(|e| e.path())) {
        if path.is_file() && path.extension().is_some_and(|ext| ext == "py") {
            let target = to.join(path.file_name().unwrap_or_default());
            fs::copy(&path, &target).unwrap_or_else(|e| panic!("copying {} to {}: {e}", path.display(), to.display()));
        }
    }
}

fn describe(cmd: &Command) -> String {
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "))
}

fn spawn(cmd: &mut Command) -> Child {
    let shown = describe(cmd);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("could not run `{shown}`: {e}"))
}

fn wait(child: Child, shown: &str) -> Output {
    child.wait_with_output().unwrap_or_else(|e| panic!("waiting for `{shown}`: {e}"))
}

/// Runs `cmd` to completion, panicking with `hint` when it cannot start or fails.
fn run(cmd: &mut Command, hint: &str) {
    let shown = describe(cmd);
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) => panic!("could not run `{shown}` ({e}); {hint}"),
    };
    if !output.status.success() {
        panic!("`{shown}` failed ({}); {hint}:\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
}

fn check(shown: &str, output: &Output) {
    if !output.status.success() {
        panic!(
            "`{shown}` failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
