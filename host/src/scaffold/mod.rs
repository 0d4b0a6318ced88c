//! `avtomatika new <name> --lang <lang>`: writes a ready-to-build blueprint
//! project into a new directory.
//!
//! A language is a template folder `plugins/templates/<lang>/` (embedded in the
//! binary, see [`files`]) plus an entry in [`LANGUAGES`]. Every project also
//! gets a copy of `wit/`; a language's [`Extra`]s add what else it needs from
//! the repository (its guest SDK and the pins of its tools), so nothing is kept
//! twice.
//!
//! ```no_run
//! use avtomatika::scaffold::{Request, scaffold};
//!
//! let written = scaffold(&Request { name: "order-flow".into(), lang: "rust".into(), dir: None })?;
//! println!("{}", written.next_steps);
//! # Ok::<(), avtomatika::scaffold::ScaffoldError>(())
//! ```

pub mod files;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The blueprint languages `avtomatika new` knows.
pub const LANGUAGES: &[Language] = &[
    Language {
        name: "rust",
        extras: &[Extra::RustSdk],
        next_steps: "cd {{dir}}\n\
            rustup target add wasm32-wasip2   # once\n\
            cargo build --release --target wasm32-wasip2\n\
            # the component: {{dir}}/target/wasm32-wasip2/release/{{crate_name}}.wasm",
    },
    Language {
        name: "js",
        extras: &[Extra::JsSdk],
        next_steps: "cd {{dir}}\n\
            npm ci && npm run build   # Node.js 20 or later\n\
            # the component: {{dir}}/{{name}}.wasm",
    },
    Language {
        name: "python",
        extras: &[Extra::PythonSdk],
        next_steps: "cd {{dir}}\n\
            sh build.sh   # componentize-py into .venv (once), then the component\n\
            # the component: {{dir}}/{{name}}.wasm",
    },
];

/// One language: its template folder is `plugins/templates/<name>/`.
pub struct Language {
    pub name: &'static str,
    /// What the project needs from the repository besides its template.
    pub extras: &'static [Extra],
    /// Printed after the project was written; placeholders as in templates,
    /// plus `{{dir}}`.
    pub next_steps: &'static str,
}

/// A piece of the repository a language's projects get a copy of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// `plugins/rust/sdk` as `sdk/`, with the guest workspace's settings
    /// (`{{workspace}}` in `Cargo.toml.tmpl`) and `Cargo.lock`.
    RustSdk,
    /// `plugins/js/sdk` as `sdk/`, the `devDependencies` of
    /// `plugins/js/package.json` (`{{js_dev_dependencies}}` in
    /// `package.json.tmpl`) and `plugins/js/package-lock.json`.
    JsSdk,
    /// `plugins/python/sdk` as `sdk/` and `plugins/python/requirements.txt`.
    PythonSdk,
}

/// What to scaffold.
#[derive(Debug, Clone)]
pub struct Request {
    /// The blueprint's name: also its endpoint (`/jobs/<name>`), its crate or
    /// package name and the default directory.
    pub name: String,
    pub lang: String,
    /// Where to write the project; default `./<name>`.
    pub dir: Option<PathBuf>,
}

/// A project that was written.
#[derive(Debug)]
pub struct Scaffolded {
    pub dir: PathBuf,
    /// The project's files, relative to `dir`.
    pub files: Vec<String>,
    /// How to build it, for the user.
    pub next_steps: String,
}

/// Why no project was written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("invalid blueprint name {name:?}: {reason}")]
    Name { name: String, reason: String },
    #[error("unknown language {0:?}; choose one of: {choices}", choices = choices())]
    Language(String),
    #[error("{}: already exists and is not empty; choose another name or --dir (nothing was overwritten)", .0.display())]
    NotEmpty(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The embedded files do not fit together: a bug in this build.
    #[error("this avtomatika build cannot scaffold {lang}: {reason}")]
    Broken { lang: &'static str, reason: String },
}

fn choices() -> String {
    LANGUAGES.iter().map(|l| l.name).collect::<Vec<_>>().join(", ")
}

/// Checks `name` against what a blueprint name has to be everywhere it is
/// used: a crate and package name, a file name and an endpoint path segment.
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let fail = |reason: &str| Err(ScaffoldError::Name { name: name.to_owned(), reason: reason.to_owned() });
    if name.is_empty() || name.len() > 64 {
        return fail("must be 1 to 64 characters long");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return fail("must start with a lowercase letter a-z");
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        return fail("may contain only lowercase letters a-z, digits, '-' and '_'");
    }
    if name.ends_with(['-', '_']) {
        return fail("must not end with '-' or '_'");
    }
    // Cargo refuses keywords and shadowing the standard crates as package
    // names; the SDK's own name would clash with the vendored SDK.
    const RESERVED: &str = "as async await break const continue crate dyn else enum extern false fn for if impl \
        in let loop match mod move mut pub ref return self static struct super trait true type unsafe use where while \
        abstract become box do final gen macro override priv try typeof unsized virtual yield \
        alloc core std test proc_macro proc-macro sdk avtomatika-blueprint avtomatika_blueprint";
    if RESERVED.split_whitespace().any(|reserved| reserved == name) {
        return fail("is reserved (a Rust keyword, a standard crate or the SDK's name)");
    }
    Ok(())
}

/// Writes the project `request` asks for. Refuses an existing directory
/// that is not empty; never overwrites a file.
pub fn scaffold(request: &Request) -> Result<Scaffolded, ScaffoldError> {
    validate_name(&request.name)?;
    let language = LANGUAGES
        .iter()
        .find(|l| l.name == request.lang)
        .ok_or_else(|| ScaffoldError::Language(request.lang.clone()))?;
    let dir = request.dir.clone().unwrap_or_else(|| PathBuf::from(&request.name));
    let project = render(language, &request.name)?;

    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Io { path, source }
    };
    match fs::read_dir(&dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ScaffoldError::NotEmpty(dir));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&dir)(e)),
    }
    fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    for (relative, contents) in &project {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        // `create_new`: a file someone created meanwhile is never replaced.
        let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(io_error(&path))?;
        io::Write::write_all(&mut file, contents).map_err(io_error(&path))?;
    }
    let next_steps = substitute(language.next_steps, &request.name).replace("{{dir}}", &dir.display().to_string());
    Ok(Scaffolded { dir, files: project.into_iter().map(|(path, _)| path).collect(), next_steps })
}

/// The project's files (relative path, contents), rendered in memory first
/// so that a broken template writes nothing.
fn render(language: &Language, name: &str) -> Result<Vec<(String, Vec<u8>)>, ScaffoldError> {
    let broken = |reason: String| ScaffoldError::Broken { lang: language.name, reason };
    let prefix = format!("{}/", language.name);
    let mut project = Vec::new();
    for (path, contents) in files::TEMPLATES {
        let Some(relative) = path.strip_prefix(&prefix) else { continue };
        match relative.strip_suffix(".tmpl") {
            Some(target) => {
                let text = std::str::from_utf8(contents).map_err(|e| broken(format!("{path} is not UTF-8: {e}")))?;
                let mut text = substitute(text, name);
                for extra in language.extras {
                    text = extra.fill(&text).map_err(broken)?;
                }
                if let Some(placeholder) = leftover_placeholder(&text) {
                    return Err(broken(format!("{path} has the unknown placeholder {placeholder}")));
                }
                project.push((target.to_owned(), text.into_bytes()));
            }
            None => project.push((relative.to_owned(), contents.to_vec())),
        }
    }
    if project.is_empty() {
        return Err(broken(format!("no template folder plugins/templates/{}/ was embedded", language.name)));
    }
    project.extend(files::WIT.iter().map(|(path, contents)| (format!("wit/{path}"), contents.to_vec())));
    for extra in language.extras {
        extra.add(&mut project, name).map_err(broken)?;
    }
    project.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(project)
}

/// A `{{word}}` no substitution replaced (a typo in a template).
fn leftover_placeholder(text: &str) -> Option<&str> {
    text.match_indices("{{").find_map(|(at, _)| {
        let rest = &text[at + 2..];
        let word = rest.find("}}").map(|end| &rest[..end])?;
        (!word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .then(|| &text[at..at + word.len() + 4])
    })
}

/// The placeholders every language has.
fn substitute(text: &str, name: &str) -> String {
    text.replace("{{name}}", name).replace("{{crate_name}}", &name.replace('-', "_"))
}

impl Extra {
    /// Fills this extra's placeholders in a template.
    fn fill(self, text: &str) -> Result<String, String> {
        match self {
            Self::RustSdk => Ok(text.replace("{{workspace}}", rust_workspace_settings())),
            Self::JsSdk if text.contains("{{js_dev_dependencies}}") => {
                Ok(text.replace("{{js_dev_dependencies}}", &js_dev_dependencies()?))
            }
            Self::JsSdk | Self::PythonSdk => Ok(text.to_owned()),
        }
    }

    /// Adds this extra's files to the project of the blueprint `name`.
    fn add(self, project: &mut Vec<(String, Vec<u8>)>, name: &str) -> Result<(), String> {
        match self {
            Self::RustSdk => {
                for (path, contents) in files::RUST_SDK {
                    let contents = if *path == "src/lib.rs" {
                        // In the repository the SDK finds the contract three
                        // levels up; in a project it is a sibling.
                        let source = std::str::from_utf8(contents).map_err(|e| format!("sdk/{path}: {e}"))?;
                        let (from, to) = (r#"path: "../../../wit""#, r#"path: "../wit""#);
                        if !source.contains(from) {
                            return Err(format!("sdk/src/lib.rs no longer reads its WIT from {from}"));
                        }
                        source.replace(from, to).into_bytes()
                    } else {
                        contents.to_vec()
                    };
                    project.push((format!("sdk/{path}"), contents));
                }
                // The versions the examples are built and tested with; Cargo
                // drops the example crates' entries at the first build.
                project.push(("Cargo.lock".to_owned(), files::RUST_LOCKFILE.as_bytes().to_vec()));
                Ok(())
            }
            Self::JsSdk => {
                project.extend(files::JS_SDK.iter().map(|(path, contents)| (format!("sdk/{path}"), contents.to_vec())));
                project.push(("package-lock.json".to_owned(), js_lockfile(name)?.into_bytes()));
                Ok(())
            }
            Self::PythonSdk => {
                project.extend(
                    files::PYTHON_SDK.iter().map(|(path, contents)| (format!("sdk/{path}"), contents.to_vec())),
                );
                project.push(("requirements.txt".to_owned(), files::PYTHON_REQUIREMENTS.as_bytes().to_vec()));
                Ok(())
            }
        }
    }
}

/// The `devDependencies` of `plugins/js/package.json` as a JSON object
/// indented to sit one level deep in `package.json`: the same pins the lock
/// file was made from, or `npm ci` refuses the pair.
fn js_dev_dependencies() -> Result<String, String> {
    let manifest: serde_json::Value = serde_json::from_str(files::JS_PACKAGE_MANIFEST)
        .map_err(|e| format!("plugins/js/package.json is not JSON: {e}"))?;
    let pins = manifest
        .get("devDependencies")
        .filter(|pins| pins.is_object())
        .ok_or("plugins/js/package.json has no devDependencies object")?;
    let pretty = serde_json::to_string_pretty(pins).map_err(|e| format!("devDependencies: {e}"))?;
    Ok(pretty.replace('\n', "\n  "))
}

/// `plugins/js/package-lock.json` with the project's name for the
/// repository's package name, so npm sees a lock file of this package.
fn js_lockfile(name: &str) -> Result<String, String> {
    let lock: serde_json::Value = serde_json::from_str(files::JS_LOCKFILE)
        .map_err(|e| format!("plugins/js/package-lock.json is not JSON: {e}"))?;
    let repository_name =
        lock.get("name").and_then(|n| n.as_str()).ok_or("plugins/js/package-lock.json has no name")?;
    // A textual replacement keeps the file byte for byte otherwise (a JSON
    // round trip would reorder keys); both places are `"name": "<it>"`.
    let (from, to) = (format!(r#""name": "{repository_name}""#), format!(r#""name": "{name}""#));
    Ok(files::JS_LOCKFILE.replace(&from, &to))
}

/// The guest workspace's shared settings: `[workspace.package]`,
/// `[workspace.dependencies]` (the SDK's dependency versions) and
/// `[profile.release]` (small, fast components), from the first to the end.
fn rust_workspace_settings() -> &'static str {
    let manifest = files::RUST_WORKSPACE_MANIFEST;
    manifest.find("[workspace.package]").map_or(manifest, |at| &manifest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_blueprint_rules() {
        for good in ["hello", "order-flow", "pipeline_2", "a"] {
            validate_name(good).unwrap();
        }
        for bad in ["", "Hello", "2fast", "-x", "x-", "with space", "dots.no", "über", "fn", "test", "sdk", "a/b"] {
            assert!(matches!(validate_name(bad), Err(ScaffoldError::Name { .. })), "{bad:?}");
        }
        assert!(validate_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn a_leftover_placeholder_is_found() {
        assert_eq!(leftover_placeholder("a {{nmae}} b"), Some("{{nmae}}"));
        assert_eq!(leftover_placeholder("format!(\"{{}}\") {{ x }}"), None);
    }

    #[test]
    fn the_rust_project_is_complete_and_fully_rendered() {
        let project = render(&LANGUAGES[0], "order-flow").unwrap();
        let file = |name: &str| {
            let (_, contents) = project.iter().find(|(path, _)| path == name).unwrap_or_else(|| panic!("no {name}"));
            String::from_utf8(contents.clone()).unwrap()
        };
        let manifest = file("Cargo.toml");
        assert!(manifest.contains(r#"name = "order-flow""#), "{manifest}");
        assert!(manifest.contains("[workspace.dependencies]") && manifest.contains("wit-bindgen"), "{manifest}");
        let handler = file("src/lib.rs");
        assert!(handler.contains(r#"Describe::new("order-flow")"#) && handler.contains(r#""/jobs/order-flow""#));
        assert!(file("README.md").contains("target/wasm32-wasip2/release/order_flow.wasm"));
        assert!(file("sdk/src/lib.rs").contains(r#"path: "../wit""#));
        for wit in ["wit/world.wit", "wit/types.wit", "wit/handler.wit", "sdk/Cargo.toml", "Cargo.lock", ".gitignore"] {
            file(wit);
        }
        for (path, contents) in &project {
            assert!(!path.ends_with(".tmpl"), "{path}");
            if let Ok(text) = std::str::from_utf8(contents) {
                assert!(!text.contains("{{name}}") && !text.contains("{{workspace}}"), "{path} keeps a placeholder");
            }
        }
    }

    fn rendered(lang: &str, name: &str) -> Vec<(String, Vec<u8>)> {
        let language = LANGUAGES.iter().find(|l| l.name == lang).unwrap();
        let project = render(language, name).unwrap();
        for (path, contents) in &project {
            assert!(!path.ends_with(".tmpl"), "{path}");
            if let Ok(text) = std::str::from_utf8(contents) {
                assert!(leftover_placeholder(text).is_none(), "{path} keeps a placeholder");
            }
        }
        project
    }

    fn file(project: &[(String, Vec<u8>)], name: &str) -> String {
        let (_, contents) = project.iter().find(|(path, _)| path == name).unwrap_or_else(|| panic!("no {name}"));
        String::from_utf8(contents.clone()).unwrap()
    }

    #[test]
    fn the_js_project_pins_what_the_repository_pins() {
        let project = rendered("js", "order-flow");
        let manifest: serde_json::Value = serde_json::from_str(&file(&project, "package.json")).unwrap();
        let repository: serde_json::Value = serde_json::from_str(files::JS_PACKAGE_MANIFEST).unwrap();
        assert_eq!(manifest["name"], "order-flow");
        assert_eq!(manifest["devDependencies"], repository["devDependencies"], "the same pins as plugins/js");
        let build = manifest["scripts"]["build"].as_str().unwrap();
        assert!(build.starts_with("componentize-js index.js --wit wit --world-name blueprint"), "{build}");
        assert!(build.contains("--disable http fetch-event") && build.ends_with("-o order-flow.wasm"), "{build}");

        let lock: serde_json::Value = serde_json::from_str(&file(&project, "package-lock.json")).unwrap();
        let repository_lock: serde_json::Value = serde_json::from_str(files::JS_LOCKFILE).unwrap();
        assert_eq!(lock["name"], "order-flow");
        assert_eq!(lock["packages"][""]["name"], "order-flow");
        assert_eq!(lock["packages"][""]["devDependencies"], repository["devDependencies"]);
        assert_eq!(lock["packages"].as_object().unwrap().len(), repository_lock["packages"].as_object().unwrap().len());

        let handler = file(&project, "index.js");
        assert!(handler.contains("new Describe('order-flow')") && handler.contains("'/jobs/order-flow'"));
        assert!(handler.contains("from './sdk/avtomatika.js'"));
        let readme = file(&project, "README.md");
        assert!(readme.contains("npm ci && npm run build") && readme.contains("`order-flow.wasm`"));
        for name in ["sdk/avtomatika.js", "wit/world.wit", ".gitignore"] {
            file(&project, name);
        }
    }

    #[test]
    fn the_python_project_pins_what_the_repository_pins() {
        let project = rendered("python", "order-flow");
        assert_eq!(file(&project, "requirements.txt"), files::PYTHON_REQUIREMENTS);
        let handler = file(&project, "app.py");
        assert!(handler.contains(r#"Describe("order-flow")"#) && handler.contains(r#""/jobs/order-flow""#));
        assert!(handler.contains("Handler = export(describe, handle)"));
        let build = file(&project, "build.sh");
        assert!(
            build.contains(r#"componentize-py" -d wit -w blueprint componentize app -p . -p sdk -o order-flow.wasm"#)
        );
        assert!(file(&project, "README.md").contains("sh build.sh"));
        for name in ["sdk/avtomatika.py", "wit/world.wit", ".gitignore"] {
            file(&project, name);
        }
    }

    #[test]
    fn refuses_unknown_languages_and_non_empty_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let request =
            |lang: &str, dir: &Path| Request { name: "flow".into(), lang: lang.into(), dir: Some(dir.into()) };
        let err = scaffold(&request("cobol", tmp.path())).unwrap_err();
        assert!(err.to_string().contains("choose one of: rust, js, python"), "{err}");

        fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
        let err = scaffold(&request("rust", tmp.path())).unwrap_err();
        assert!(matches!(err, ScaffoldError::NotEmpty(_)), "{err}");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1, "nothing was written");

        // An empty directory is fine.
        let empty = tmp.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let written = scaffold(&request("rust", &empty)).unwrap();
        assert!(written.files.contains(&"src/lib.rs".to_owned()));
        assert!(written.next_steps.contains("cargo build --release --target wasm32-wasip2"));
    }
}
