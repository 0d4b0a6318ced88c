//! `workers.toml` (`WORKERS_CONFIG_PATH`): individual worker tokens, one
//! `[section]` per `worker_id`.

use std::path::Path;

use toml::Table;

use super::Secret;
use super::file::{FileError, Section, TokenOwners, read_table};

/// One worker's credentials as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerTokenConfig {
    /// The section name; must equal the worker's `worker_id`.
    pub worker_id: String,
    pub token: Secret,
    pub description: Option<String>,
}

pub fn load(path: &Path) -> Result<Vec<WorkerTokenConfig>, FileError> {
    from_table(&path.display().to_string(), &read_table(path)?)
}

pub fn from_table(file: &str, root: &Table) -> Result<Vec<WorkerTokenConfig>, FileError> {
    let mut tokens = TokenOwners::default();
    let mut workers = Vec::new();
    for section in Section::all(file, root)? {
        section.only(&["token", "description"])?;
        let token = tokens.claim(&section, "worker")?;
        workers.push(WorkerTokenConfig {
            worker_id: section.name.to_owned(),
            token: token.into(),
            description: section.optional_str("description")?.map(str::to_owned),
        });
    }
    Ok(workers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::parse_table;

    fn load_str(text: &str) -> Result<Vec<WorkerTokenConfig>, FileError> {
        from_table("workers.toml", &parse_table("workers.toml", text)?)
    }

    #[test]
    fn the_spec_example_loads() {
        let workers = load_str(
            "[gpu-worker-01]\ntoken = \"super-secret\"\ndescription = \"GPU\"\n[cpu-worker-01]\ntoken = \"another\"\n",
        )
        .unwrap();
        assert_eq!(workers.len(), 2);
        let gpu = workers.iter().find(|w| w.worker_id == "gpu-worker-01").unwrap();
        assert_eq!((gpu.token.expose(), gpu.description.as_deref()), ("super-secret", Some("GPU")));
    }

    #[test]
    fn bad_workers_are_refused_with_their_place() {
        for (text, field, problem) in [
            ("[w]\ndescription = \"d\"\n", "token", "missing mandatory field"),
            ("[w]\ntoken = [\"a\"]\n", "token", "expected a string"),
            ("[w]\ntoken = \"t\"\ndescription = 3\n", "description", "expected a string"),
            ("[w]\ntoken = \"t\"\ntokn = \"t\"\n", "tokn", "unknown field"),
            ("[v]\ntoken = \"t\"\n[w]\ntoken = \"t\"\n", "token", "same token as worker [v]"),
        ] {
            let err = load_str(text).unwrap_err();
            assert_eq!((err.section.as_deref(), err.field.as_deref()), (Some("w"), Some(field)), "{err}");
            assert!(err.problem.contains(problem), "{err}");
        }
    }
}
