//! Builds the components of `plugins/js`: installs the componentizer pinned by
//! `plugins/js/package-lock.json` with `npm ci`, then runs componentize-js on
//! the `index.js` of every directory under `plugins/js/blueprints/` (examples)
//! and `plugins/js/testing/` (plugins for the host's tests).
//!
//! A directory `foo-js` becomes `$OUT_DIR/js/foo-js.wasm`, named by the
//! constant `JS_FOO_COMPONENT` (the `-js` suffix is dropped: the prefix says it).
//!
//! The npm install goes to `$OUT_DIR/js-npm`, not `plugins/js/node_modules`:
//! a build script writes only below `OUT_DIR` (the checkout may be read-only
//! or shared by several worktrees), and `npm ci` deletes `node_modules` first,
//! which would pull it from under anyone working in `plugins/js` by hand. It
//! runs again only when `package.json` or the lock file changes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Built, Context};

/// The world every blueprint targets (`wit/world.wit`).
const WORLD: &str = "blueprint";

/// StarlingMonkey's `http` feature imports `wasi:http`, which the host does
/// not grant (a component importing it would not load); `fetch-event` needs
/// `http`.
const DISABLED_FEATURES: &[&str] = &["http", "fetch-event"];

/// The package files `npm ci` installs from; a change to either reinstalls.
const PACKAGE_FILES: &[&str] = &["package.json", "package-lock.json"];

/// Where each kind of JavaScript plugin lives, below `plugins/js`.
const PLUGIN_DIRS: &[&str] = &["blueprints", "testing"];

pub fn build(context: &Context) -> Vec<Built> {
    let js = context.repo.join("plugins/js");
    watch_inputs(&context.repo, &js);

    let npm_dir = context.out_dir.join("js-npm");
    install(&js, &npm_dir);
    let cli = npm_dir.join("node_modules/@bytecodealliance/componentize-js/src/cli.js");

    let out = context.out_dir.join("js");
    create_dir(&out);
    plugins(&js)
        .into_iter()
        .map(|dir| {
            let name = file_name(&dir);
            let entry = dir.join("index.js");
            assert!(
                entry.is_file(),
                "{} has no index.js, the module a JavaScript blueprint starts from",
                dir.display()
            );
            let wasm = out.join(format!("{name}.wasm"));
            componentize(&context.repo, &cli, &entry, &wasm);
            Built { ident: ident(&name), source: relative(&context.repo, &dir), wasm }
        })
        .collect()
}

/// Every input, so a change to any re-runs the build. Not `plugins/js` as a
/// whole: cargo would scan a `node_modules` installed there by hand, file by file.
fn watch_inputs(repo: &Path, js: &Path) {
    let mut inputs: Vec<PathBuf> = PACKAGE_FILES.iter().map(|file| js.join(file)).collect();
    inputs.push(js.join("sdk"));
    inputs.extend(PLUGIN_DIRS.iter().map(|dir| js.join(dir)));
    inputs.push(repo.join("wit"));
    for input in inputs {
        println!("cargo:rerun-if-changed={}", input.display());
    }
}

/// `npm ci` of `plugins/js`'s package files into `npm_dir`, unless the same
/// files were installed there already.
fn install(js: &Path, npm_dir: &Path) {
    create_dir(npm_dir);
    let stamp = npm_dir.join("installed-from");
    let mut wanted = Vec::new();
    for file in PACKAGE_FILES {
        let source = js.join(file);
        let bytes = fs::read(&source).unwrap_or_else(|e| panic!("reading {}: {e}", source.display()));
        let target = npm_dir.join(file);
        fs::write(&target, &bytes).unwrap_or_else(|e| panic!("writing {}: {e}", target.display()));
        wanted.extend(bytes);
    }
    if fs::read(&stamp).is_ok_and(|installed| installed == wanted) && npm_dir.join("node_modules").is_dir() {
        return;
    }

    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(npm_dir);
    run(npm, "npm ci", "npm (with Node.js 20 or later) is needed to build the JavaScript blueprints in plugins/js");
    fs::write(&stamp, wanted).unwrap_or_else(|e| panic!("writing {}: {e}", stamp.display()));
}

/// Every plugin directory, in name order.
fn plugins(js: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for kind in PLUGIN_DIRS {
        let parent = js.join(kind);
        let entries = fs::read_dir(&parent).unwrap_or_else(|e| panic!("reading {}: {e}", parent.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("reading {}: {e}", parent.display())).path();
            if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    dirs.sort();
    dirs
}

fn componentize(repo: &Path, cli: &Path, entry: &Path, wasm: &Path) {
    let mut node = Command::new("node");
    // componentize-js reads the WIT and the module's imports only below its
    // working directory, so it runs at the root, where both `wit/` and
    // `plugins/js` are.
    node.current_dir(repo)
        .arg(cli)
        .arg(relative(repo, entry))
        .args(["--wit", "wit", "--world-name", WORLD, "--disable"])
        .args(DISABLED_FEATURES)
        .arg("-o")
        .arg(wasm);
    let what = format!("componentize-js {}", relative(repo, entry));
    run(node, &what, "Node.js 20 or later is needed to build the JavaScript blueprints in plugins/js");
    assert!(wasm.is_file(), "`{what}` succeeded but wrote no {}", wasm.display());
}

/// Runs `command`, panicking with its command line and output on failure.
fn run(mut command: Command, what: &str, missing_hint: &str) {
    let line = format!("{command:?}");
    let output = match command.output() {
        Ok(output) => output,
        Err(e) => panic!("could not run `{what}` ({line}): {e}; {missing_hint}"),
    };
    if !output.status.success() {
        panic!(
            "`{what}` failed ({}): {line}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout),
        );
    }
}

/// `pipeline-js` → `JS_PIPELINE`.
fn ident(name: &str) -> String {
    let base = name.strip_suffix("-js").unwrap_or(name);
    let ident = format!("JS_{}", base.replace('-', "_").to_ascii_uppercase());
    assert!(
        ident.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "plugins/js plugin {name:?} has a name that is not a Rust identifier once `-` becomes `_`"
    );
    ident
}

fn file_name(path: &Path) -> String {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(name) => name.to_owned(),
        None => panic!("{} has a name that is not valid UTF-8", path.display()),
    }
}

fn relative(repo: &Path, path: &Path) -> String {
    path.strip_prefix(repo).unwrap_or(path).display().to_string()
}

fn create_dir(dir: &Path) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
}
