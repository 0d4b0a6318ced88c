//! Builds the guest workspace (`plugins/rust`) for `wasm32-wasip2` and writes
//! `$OUT_DIR/gen.rs`, which names every component the build produced.
//!
//! The guests live in a workspace of their own because they need another
//! target and another release profile. They are built by a nested cargo whose
//! target directory sits inside `OUT_DIR`: sharing the outer target directory
//! would deadlock on its lock, and the outer build's flags are meant for the
//! host, so they are kept away from the nested one.

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

const TARGET: &str = "wasm32-wasip2";

/// Variables the outer cargo (or the user) set for host builds. Inherited, they
/// would put host flags, wrappers or profile overrides on the guest build, or
/// hand it the outer build's jobserver.
const HOST_ONLY_VARS: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "CARGO_MAKEFLAGS",
    "CARGO_BUILD_TARGET",
];

/// Where a component's crate lives, which decides what the host does with it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `plugins/rust/blueprints/`: examples the server ships.
    Example,
    /// `plugins/rust/testing/`: deliberately broken plugins for the host's tests.
    Testing,
}

struct Component {
    kind: Kind,
    /// The crate's directory relative to the repository, for doc comments.
    crate_dir: String,
    wasm: PathBuf,
}

fn main() {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env_var("OUT_DIR"));
    let repo = canonical(&manifest_dir.join("../.."));
    let guests = repo.join("plugins/rust");
    let target_dir = out_dir.join("guests");

    ensure_target_installed();
    let components = build_guests(&repo, &guests, &target_dir);
    watch_inputs(&repo, &guests, &target_dir, &components);

    let generated = out_dir.join("gen.rs");
    if let Err(e) = fs::write(&generated, generate(&components)) {
        panic!("writing {}: {e}", generated.display());
    }
}

/// Installs the guest target through rustup when the active toolchain lacks
/// it, so a fresh checkout builds without a manual setup step.
fn ensure_target_installed() {
    let rustc = env_var("RUSTC");
    let output = match Command::new(&rustc).args(["--print", "sysroot"]).output() {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            panic!("`{rustc} --print sysroot` failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr))
        }
        Err(e) => panic!("running `{rustc} --print sysroot`: {e}"),
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        return;
    }

    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Some(toolchain) = env::var_os("RUSTUP_TOOLCHAIN") {
        rustup.arg("--toolchain").arg(toolchain);
    }
    let hint = format!(
        "the {TARGET} standard library is missing from {} and is needed to build plugins/rust; \
         install it with `rustup target add {TARGET}`",
        sysroot.display()
    );
    match rustup.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("`rustup target add {TARGET}` failed ({status}); {hint}"),
        Err(e) => panic!("could not run rustup ({e}); {hint}"),
    }
}

/// Runs the nested cargo and returns the components it reports, keyed by the
/// identifier their constants are named after.
fn build_guests(repo: &Path, guests: &Path, target_dir: &Path) -> BTreeMap<String, Component> {
    let cargo = env_var("CARGO");
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "--workspace", "--target", TARGET])
        // Diagnostics still reach the terminal rendered (on stderr); stdout
        // carries one JSON message per line, from which the artifacts are read.
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(guests.join("Cargo.toml"))
        // Cargo looks for `.cargo/config.toml` from the working directory up,
        // so a guest-workspace configuration applies here as it would by hand.
        .current_dir(guests)
        .env("CARGO_TARGET_DIR", target_dir)
        .stdout(Stdio::piped());
    for key in env::vars_os().map(|(key, _)| key) {
        if is_host_only(&key) {
            cmd.env_remove(key);
        }
    }

    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => panic!("running {cargo}: {e}"),
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut components = BTreeMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_else(|e| panic!("reading the output of the guest build: {e}"));
        match serde_json::from_str::<Value>(&line) {
            Ok(message) => collect_artifact(repo, guests, &message, &mut components),
            // Not cargo's JSON (it never should be): pass it on rather than lose it.
            Err(_) => eprintln!("{line}"),
        }
    }
    match child.wait() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "building the guest blueprints in {} for {TARGET} failed ({status}); the errors are above",
            guests.display()
        ),
        Err(e) => panic!("waiting for the guest build: {e}"),
    }
    assert!(!components.is_empty(), "the guest build in {} produced no components", guests.display());
    components
}

fn is_host_only(key: &OsString) -> bool {
    key.to_str().is_some_and(|key| HOST_ONLY_VARS.contains(&key) || key.starts_with("CARGO_PROFILE_"))
}

/// Records the `.wasm` files of one `compiler-artifact` message. Dependencies
/// (the SDK, `serde_json`, proc macros) produce no `.wasm` and are skipped.
fn collect_artifact(repo: &Path, guests: &Path, message: &Value, components: &mut BTreeMap<String, Component>) {
    if message["reason"] != "compiler-artifact" {
        return;
    }
    let Some(filenames) = message["filenames"].as_array() else { return };
    let wasms: Vec<PathBuf> = filenames
        .iter()
        .filter_map(Value::as_str)
        .map(PathBuf::from)
        .filter(|f| f.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    if wasms.is_empty() {
        return;
    }

    let Some(manifest) = message["manifest_path"].as_str() else {
        panic!("cargo reported a component without a manifest path: {message}");
    };
    let crate_dir = canonical(Path::new(manifest).parent().unwrap_or(Path::new(manifest)));
    let kind = if crate_dir.starts_with(guests.join("blueprints")) {
        Kind::Example
    } else if crate_dir.starts_with(guests.join("testing")) {
        Kind::Testing
    } else {
        panic!(
            "{} builds a component but is neither under plugins/rust/blueprints/ (examples the server \
             ships) nor plugins/rust/testing/ (plugins for the host's tests); move it to one of them",
            crate_dir.display()
        );
    };
    let crate_dir = crate_dir.strip_prefix(repo).unwrap_or(&crate_dir).display().to_string();

    for wasm in wasms {
        // A bin keeps the hyphens of its name (`wrong-world.wasm`), a cdylib
        // has underscores (`two_starts.wasm`); the identifier is the same.
        let stem = wasm.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let ident = stem.replace('-', "_");
        let valid = ident.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && ident.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        assert!(valid, "{} has a name that is not a Rust identifier once `-` becomes `_`", wasm.display());
        if let Some(other) = components.get(&ident) {
            panic!("{} and {crate_dir} both build a component named `{ident}`; rename one", other.crate_dir);
        }
        components.insert(ident, Component { kind, crate_dir: crate_dir.clone(), wasm });
    }
}

/// Tells cargo when to run this script again: when anything the guest build
/// read changes, or when a guest crate is added or removed.
fn watch_inputs(repo: &Path, guests: &Path, target_dir: &Path, components: &BTreeMap<String, Component>) {
    let mut paths = BTreeSet::new();
    paths.insert(guests.join("Cargo.toml"));
    paths.insert(guests.join("Cargo.lock"));
    // Directories are scanned recursively by cargo, which is what notices a new
    // crate: no dep-info file mentions a crate that has never been built.
    paths.insert(guests.join("blueprints"));
    paths.insert(guests.join("testing"));
    // The SDK's manifest: its sources are in the dep-info files, but a feature
    // or dependency change there would go unnoticed.
    paths.insert(guests.join("sdk/Cargo.toml"));
    paths.insert(repo.join("wit"));

    for component in components.values() {
        // Cargo writes a dep-info file beside each final artifact listing every
        // local source file it was compiled from (the SDK and `wit/` included).
        let dep_info = component.wasm.with_extension("d");
        let text = match fs::read_to_string(&dep_info) {
            Ok(text) => text,
            Err(e) => panic!("reading {}: {e}", dep_info.display()),
        };
        // Files under the nested target directory are outputs of the build that
        // just ran; watching them would make every build rerun this script.
        paths.extend(dep_info_inputs(&text).into_iter().filter(|path| !path.starts_with(target_dir)));
    }

    for path in paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The inputs of a Makefile-style dep-info file (`output: input input ...`,
/// with spaces inside paths escaped as `\ `).
fn dep_info_inputs(text: &str) -> Vec<PathBuf> {
    let mut inputs = Vec::new();
    for line in text.lines() {
        let Some((_output, rest)) = line.split_once(": ") else { continue };
        let mut current = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&' ') => {
                    chars.next();
                    current.push(' ');
                }
                ' ' => {
                    if !current.is_empty() {
                        inputs.push(PathBuf::from(std::mem::take(&mut current)));
                    }
                }
                c => current.push(c),
            }
        }
        if !current.is_empty() {
            inputs.push(PathBuf::from(current));
        }
    }
    inputs
}

fn generate(components: &BTreeMap<String, Component>) -> String {
    let mut out = String::from("// Generated by plugins/artifacts/build.rs from the guest build's output.\n");

    for (ident, component) in components {
        let _ = writeln!(
            out,
            "\n/// The component built from `{}`.\npub const {}_COMPONENT: &str = {};",
            component.crate_dir,
            ident.to_uppercase(),
            literal(&component.wasm),
        );
    }

    out.push_str(
        "\n/// The example blueprints the server ships (`plugins/rust/blueprints/`): file name and bytes.\n\
         pub const EXAMPLES: &[(&str, &[u8])] = &[\n",
    );
    for component in components.values().filter(|c| c.kind == Kind::Example) {
        let name = component.wasm.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let _ = writeln!(out, "    ({name:?}, include_bytes!({})),", literal(&component.wasm));
    }
    out.push_str("];\n");

    out.push_str(
        "\n/// Calls `$mac!(name)` once for every plugin under `plugins/rust/testing/`, `name`\n\
         /// being the crate name with `-` as `_`: a test can check that each one is used.\n\
         #[macro_export]\n\
         macro_rules! foreach_testing_plugin {\n    ($mac:ident) => {\n",
    );
    for ident in components.iter().filter(|(_, c)| c.kind == Kind::Testing).map(|(ident, _)| ident) {
        let _ = writeln!(out, "        $mac!({ident});");
    }
    out.push_str("    };\n}\n");
    out
}

/// `path` as a Rust string literal.
fn literal(path: &Path) -> String {
    match path.to_str() {
        Some(path) => format!("{path:?}"),
        None => panic!("{} is not valid UTF-8 and cannot be embedded in Rust source", path.display()),
    }
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|e| panic!("resolving {}: {e}", path.display()))
}

fn env_var(key: &str) -> String {
    env::var(key).unwrap_or_else(|e| panic!("cargo should set {key} for build scripts: {e}"))
}
