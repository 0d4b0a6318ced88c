//! `clients.toml` (`CLIENTS_CONFIG_PATH`): the API clients, one `[section]` each.
//!
//! A client's parameters (`client.params` in blueprints) are every field
//! besides `token`, `plan` and `monthly_attempts`, as the specification says,
//! plus the keys of a `params` table, which is where the Python orchestrator
//! reads them (only there). Files written for either read the same way. A
//! key given both ways takes its `params` value, the one the Python
//! orchestrator would have used, and the loader warns about it.

use std::path::Path;

use serde_json::{Map, Value};
use toml::Table;

use super::Secret;
use super::file::{ConfigWarning, FileError, Section, TokenOwners, read_table, to_json};

/// One client as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// The section name: the client's id in job records and logs.
    pub name: String,
    pub token: Secret,
    pub plan: Option<String>,
    /// Job creations allowed per calendar month (in `TZ`); unset: unlimited.
    pub monthly_attempts: Option<u64>,
    /// Every other field, and the keys of a `params` table, as JSON: the
    /// blueprint sees it as `client.params`.
    pub params: Map<String, Value>,
}

/// `clients.toml` as loaded: its clients, and what in it was overridden.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFile {
    pub clients: Vec<ClientConfig>,
    pub warnings: Vec<ConfigWarning>,
}

/// The table whose keys are merged into a client's params.
const PARAMS: &str = "params";

/// The prefix of the owners of scheduled jobs (`scheduler::client_name`).
pub const RESERVED_PREFIX: &str = "scheduler:";

pub fn load(path: &Path) -> Result<ClientFile, FileError> {
    from_table(&path.display().to_string(), &read_table(path)?)
}

pub fn from_table(file: &str, root: &Table) -> Result<ClientFile, FileError> {
    let mut clients = Vec::new();
    let mut warnings = Vec::new();
    let mut tokens = TokenOwners::default();
    for section in Section::all(file, root)? {
        // Jobs a schedule creates belong to `scheduler:<schedule>`; a client
        // of that name would own (read, cancel, download) them.
        if section.name.starts_with(RESERVED_PREFIX) {
            return Err(section.error(
                None,
                format!("client names starting with {RESERVED_PREFIX:?} are reserved for the scheduler's jobs"),
            ));
        }
        let token = tokens.claim(&section, "client")?;
        let monthly_attempts = match section.optional_int("monthly_attempts")? {
            Some(n) if n < 0 => return Err(section.error(Some("monthly_attempts"), "must be 0 or more")),
            Some(n) => Some(n as u64),
            None => None,
        };
        let mut params: Map<String, Value> = section
            .table
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "token" | "plan" | "monthly_attempts" | PARAMS))
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect();
        for (key, value) in section.optional_table(PARAMS)?.into_iter().flatten() {
            // Values are not quoted: a client's fields may hold secrets.
            if params.insert(key.clone(), to_json(value)).is_some() {
                warnings.push(section.warning(
                    Some(PARAMS),
                    format!("`{key}` is set both as a field and in `params`; the `params` value is used"),
                ));
            }
        }
        clients.push(ClientConfig {
            name: section.name.to_owned(),
            token: token.into(),
            plan: section.optional_str("plan")?.map(str::to_owned),
            monthly_attempts,
            params,
        });
    }
    if clients.is_empty() {
        return Err(FileError {
            file: file.to_owned(),
            section: None,
            field: None,
            position: None,
            problem: "defines no clients: nobody could use the API".into(),
        });
    }
    Ok(ClientFile { clients, warnings })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::file::parse_table;

    fn load_str(text: &str) -> Result<Vec<ClientConfig>, FileError> {
        load_with_warnings(text).map(|file| file.clients)
    }

    fn load_with_warnings(text: &str) -> Result<ClientFile, FileError> {
        from_table("clients.toml", &parse_table("clients.toml", text)?)
    }

    /// The published example application's `example_clients.toml`, unchanged.
    #[test]
    fn a_params_table_is_merged_into_params() {
        let file = load_with_warnings(
            r#"
# This is an example TOML file for configuring API clients.
# The orchestrator loads this to manage access control and quotas.

[client_vip]
token = "user_token_vip"
plan = "vip"
params = { features = ["all"] }
monthly_attempts = 10000

[limited-client]
token = "limited-access-token"
plan = "basic"
params = { languages = ["en"], features = ["basic_transcode"] }
monthly_attempts = 2
"#,
        )
        .unwrap();
        assert_eq!(file.warnings, vec![]);
        let find = |name: &str| file.clients.iter().find(|c| c.name == name).unwrap();
        let vip = find("client_vip");
        assert_eq!(Value::Object(vip.params.clone()), json!({"features": ["all"]}));
        assert_eq!((vip.plan.as_deref(), vip.monthly_attempts), (Some("vip"), Some(10_000)));
        let limited = find("limited-client");
        assert_eq!(
            Value::Object(limited.params.clone()),
            json!({"languages": ["en"], "features": ["basic_transcode"]})
        );
        assert_eq!(limited.monthly_attempts, Some(2));
    }

    #[test]
    fn a_key_in_params_wins_over_the_same_field_with_a_warning() {
        let file = load_with_warnings(
            "[a]\ntoken = \"t\"\nregion = \"eu-secret\"\ntier = 1\n[a.params]\nregion = \"us\"\nextra = true\n",
        )
        .unwrap();
        assert_eq!(Value::Object(file.clients[0].params.clone()), json!({"region": "us", "tier": 1, "extra": true}));
        let [warning] = file.warnings.as_slice() else { panic!("{:?}", file.warnings) };
        assert_eq!((warning.section.as_deref(), warning.field.as_deref()), (Some("a"), Some("params")));
        assert!(warning.message.contains("`region`") && warning.message.contains("`params` value is used"));
        assert!(!warning.to_string().contains("eu-secret") && !warning.to_string().contains("\"us\""), "{warning}");

        let err = load_str("[a]\ntoken = \"t\"\nparams = [\"x\"]\n").unwrap_err();
        assert_eq!((err.field.as_deref(), err.problem.as_str()), (Some("params"), "expected a table, found array"));
    }

    #[test]
    fn the_schedulers_prefix_is_reserved() {
        let err = load_str("[\"scheduler:nightly\"]\ntoken = \"t\"\n").unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("clients.toml") && shown.contains("scheduler:nightly"), "{shown}");
        assert!(shown.contains("reserved"), "{shown}");
        assert!(!shown.contains("\"t\""), "{shown}");
    }

    #[test]
    fn the_spec_example_loads() {
        let clients = load_str(
            r#"
            [client_premium_user]
            token = "sec_vip_token_123"
            plan = "premium"
            monthly_attempts = 100000
            languages = ["en", "de", "fr"]
            priority_support = true

            [client_free_user]
            token = "sec_free_token_456"
            plan = "free"
            monthly_attempts = 100
            languages = ["en"]
            "#,
        )
        .unwrap();
        let premium = clients.iter().find(|c| c.name == "client_premium_user").unwrap();
        assert_eq!(premium.token.expose(), "sec_vip_token_123");
        assert_eq!(premium.plan.as_deref(), Some("premium"));
        assert_eq!(premium.monthly_attempts, Some(100_000));
        assert_eq!(
            Value::Object(premium.params.clone()),
            json!({"languages": ["en", "de", "fr"], "priority_support": true})
        );
    }

    #[test]
    fn bad_clients_are_refused_with_their_place() {
        for (text, section, field, problem) in [
            ("[a]\nplan = \"x\"\n", "a", "token", "missing mandatory field"),
            ("[a]\ntoken = 1\n", "a", "token", "expected a string"),
            ("[a]\ntoken = \"\"\n", "a", "token", "must not be empty"),
            ("[a]\ntoken = \"t\"\nplan = 2\n", "a", "plan", "expected a string"),
            ("[a]\ntoken = \"t\"\nmonthly_attempts = \"10\"\n", "a", "monthly_attempts", "expected an integer"),
            ("[a]\ntoken = \"t\"\nmonthly_attempts = -1\n", "a", "monthly_attempts", "0 or more"),
            ("[a]\ntoken = \"t\"\n[b]\ntoken = \"t\"\n", "b", "token", "same token as client [a]"),
        ] {
            let err = load_str(text).unwrap_err();
            assert_eq!(err.section.as_deref(), Some(section), "{err}");
            assert_eq!(err.field.as_deref(), Some(field), "{err}");
            assert!(err.problem.contains(problem), "{err}");
            assert!(!err.to_string().contains("\"t\""), "values are never quoted: {err}");
        }
        assert!(load_str("").unwrap_err().problem.contains("no clients"));
    }
}
