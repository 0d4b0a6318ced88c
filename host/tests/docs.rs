//! The README's configuration reference stays in sync with the code: every
//! environment variable `host/src/config/` reads has a row in its
//! table, and every example file it points to exists.

use std::path::Path;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// The variable names passed to the `Env` readers (`env.string("X")`,
/// `env.positive::<usize>("X")`, … possibly across lines).
fn variables_read(source: &str) -> Vec<String> {
    let source = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
    let mut found = Vec::new();
    let mut rest = source;
    let mut offset = 0;
    while let Some(start) = rest.find('"') {
        let at = offset + start;
        let after = &source[at + 1..];
        let name: String =
            after.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        let closed = after[name.len()..].starts_with('"');
        if !name.is_empty() && closed {
            let before = source[..at].trim_end();
            if let Some(call) = before.strip_suffix('(') {
                let call = match call.strip_suffix('>') {
                    Some(turbofish) => turbofish.rsplit_once("::<").map_or(call, |(head, _)| head),
                    None => call,
                };
                let call = call.trim_end();
                if [".string", ".parse", ".positive", ".seconds", ".seconds_or_zero", ".millis"]
                    .iter()
                    .any(|m| call.ends_with(m))
                {
                    found.push(name.clone());
                }
            }
        }
        // Skip past this literal (or lone quote).
        let skip = start + 1 + if closed { name.len() + 1 } else { 0 };
        rest = &rest[skip..];
        offset += skip;
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn every_environment_variable_is_in_the_readme_table() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut variables: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("config dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .flat_map(|path| variables_read(&std::fs::read_to_string(&path).expect("config source")))
        .collect();
    variables.sort();
    variables.dedup();
    assert!(variables.len() >= 30, "the scan found too few variables: {variables:?}");
    for expected in ["TZ", "REDIS_HOST", "S3_SECRET_KEY", "PLUGIN_MEMORY_LIMIT_MB", "WORKER_TIMEOUT_SECONDS"] {
        assert!(variables.iter().any(|v| v == expected), "{expected} missing from the scan: {variables:?}");
    }
    let readme = repo_file("README.md");
    let missing: Vec<&String> = variables.iter().filter(|v| !readme.contains(&format!("| `{v}` |"))).collect();
    assert!(missing.is_empty(), "README.md's environment table lacks {missing:?}");
}

#[test]
fn the_readme_documents_the_configuration_files_and_links_their_examples() {
    let readme = repo_file("README.md");
    for file in ["clients.toml", "workers.toml", "schedules.toml"] {
        assert!(readme.contains(&format!("### `{file}`")), "README.md has no section for {file}");
        let link = format!("(examples/config/{file})");
        assert!(readme.contains(&link), "README.md does not link {link}");
        repo_file(&format!("examples/config/{file}"));
    }
    for topic in ["avtomatika check-config", "/api/v1/admin/reload-workers", "429", "monthly_attempts"] {
        assert!(readme.contains(topic), "README.md does not mention {topic}");
    }
}
