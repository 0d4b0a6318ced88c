//! Reading the TOML configuration files: syntax errors with line and column,
//! and field errors naming the file, the section and the field.
//!
//! Files are parsed into plain tables and checked field by field rather than
//! through `Deserialize`, so that every message can say exactly where the
//! problem is — and so that no message ever quotes a value (tokens live here).

use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};
use toml::Table;

/// A configuration file that cannot be used, and where exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileError {
    pub file: String,
    pub section: Option<String>,
    pub field: Option<String>,
    /// 1-based line and column, for syntax errors.
    pub position: Option<(usize, usize)>,
    pub problem: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(section) = &self.section {
            write!(f, ": section [{section}]")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// Something in a configuration file that does not stop start-up but that
/// the operator should hear about: a field this server does not read (most
/// likely a typo, or a field of another Avtomatika implementation). Loaders
/// return these so tests can check them; start-up logs each one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub file: String,
    pub section: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(section) = &self.section {
            write!(f, ": section [{section}]")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ConfigWarning {
    /// Logs the warning with its place as separate fields, so a JSON log
    /// can be filtered by file or section.
    pub fn log(&self) {
        tracing::warn!(
            file = %self.file,
            section = self.section.as_deref().unwrap_or(""),
            field = self.field.as_deref().unwrap_or(""),
            "{self}"
        );
    }
}

/// The entry of `known` closest to `unknown` when it is close enough to be a
/// likely typo: at most two single-character edits (insertion, deletion,
/// substitution), or the same name with `-` for `_` or other case.
pub fn did_you_mean<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let normal = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let unknown_normal = normal(unknown);
    known
        .iter()
        .map(|&k| (edit_distance(&unknown_normal, &normal(k)), k))
        .filter(|&(distance, _)| distance <= 2)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters; field names are short, so the
/// quadratic table is cheap.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Reads and parses one TOML file into its top-level table.
pub fn read_table(path: &Path) -> Result<Table, FileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        file: file.clone(),
        section: None,
        field: None,
        position: None,
        problem: format!("cannot read the file: {e}"),
    })?;
    parse_table(&file, &text)
}

/// Parses TOML text; `file` names it in errors.
pub fn parse_table(file: &str, text: &str) -> Result<Table, FileError> {
    text.parse::<Table>().map_err(|e| FileError {
        file: file.to_owned(),
        section: None,
        field: None,
        position: e.span().map(|span| line_column(text, span.start)),
        // The message only: toml's full rendering quotes the offending line,
        // which may hold a token.
        problem: format!("TOML syntax error: {}", e.message().trim_end()),
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// One `[section]` of a file, with helpers that produce located errors.
#[derive(Debug)]
pub struct Section<'a> {
    pub file: &'a str,
    pub name: &'a str,
    pub table: &'a Table,
}

impl<'a> Section<'a> {
    /// Every top-level entry of `root` as a section; a top-level key that is
    /// not a table is an error.
    pub fn all(file: &'a str, root: &'a Table) -> Result<Vec<Section<'a>>, FileError> {
        root.iter()
            .map(|(name, value)| match value {
                toml::Value::Table(table) => Ok(Section { file, name, table }),
                other => Err(FileError {
                    file: file.to_owned(),
                    section: None,
                    field: Some(name.clone()),
                    position: None,
                    problem: format!("expected a [section] (table), found {}", other.type_str()),
                }),
            })
            .collect()
    }

    pub fn error(&self, field: Option<&str>, problem: impl Into<String>) -> FileError {
        FileError {
            file: self.file.to_owned(),
            section: Some(self.name.to_owned()),
            field: field.map(str::to_owned),
            position: None,
            problem: problem.into(),
        }
    }

    fn wrong_type(&self, field: &str, expected: &str, found: &toml::Value) -> FileError {
        self.error(Some(field), format!("expected {expected}, found {}", found.type_str()))
    }

    /// A mandatory, non-empty string.
    pub fn required_str(&self, field: &str) -> Result<&'a str, FileError> {
        match self.optional_str(field)? {
            Some(value) if !value.is_empty() => Ok(value),
            Some(_) => Err(self.error(Some(field), "must not be empty")),
            None => Err(self.error(Some(field), "missing mandatory field")),
        }
    }

    pub fn optional_str(&self, field: &str) -> Result<Option<&'a str>, FileError> {
        match self.table.get(field) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(field, "a string", other)),
        }
    }

    pub fn optional_int(&self, field: &str) -> Result<Option<i64>, FileError> {
        match self.table.get(field) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) => Ok(Some(*i)),
            Some(other) => Err(self.wrong_type(field, "an integer", other)),
        }
    }

    pub fn optional_bool(&self, field: &str) -> Result<Option<bool>, FileError> {
        match self.table.get(field) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong_type(field, "a boolean (true or false)", other)),
        }
    }

    /// A warning located at this section and `field`.
    pub fn warning(&self, field: Option<&str>, message: impl Into<String>) -> ConfigWarning {
        ConfigWarning {
            file: self.file.to_owned(),
            section: Some(self.name.to_owned()),
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    pub fn optional_array(&self, field: &str) -> Result<Option<&'a Vec<toml::Value>>, FileError> {
        match self.table.get(field) {
            None => Ok(None),
            Some(toml::Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(self.wrong_type(field, "an array", other)),
        }
    }

    pub fn optional_table(&self, field: &str) -> Result<Option<&'a Table>, FileError> {
        match self.table.get(field) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(t)),
            Some(other) => Err(self.wrong_type(field, "a table", other)),
        }
    }

    /// Fails on any field not in `known`: a typo must not pass silently.
    pub fn only(&self, known: &[&str]) -> Result<(), FileError> {
        match self.table.keys().find(|k| !known.contains(&k.as_str())) {
            Some(unknown) => {
                Err(self.error(Some(unknown), format!("unknown field; expected one of: {}", known.join(", "))))
            }
            None => Ok(()),
        }
    }
}

/// The `token` of every section read so far: two sections sharing one could
/// not be told apart (a client's jobs, or which worker a request acts as).
#[derive(Default)]
pub struct TokenOwners<'a> {
    owners: std::collections::HashMap<&'a str, &'a str>,
}

impl<'a> TokenOwners<'a> {
    /// The section's mandatory `token`, refused if an earlier section (a
    /// `kind`, e.g. "client") has it too.
    pub fn claim(&mut self, section: &Section<'a>, kind: &str) -> Result<&'a str, FileError> {
        let token = section.required_str("token")?;
        match self.owners.insert(token, section.name) {
            Some(other) => Err(section.error(Some("token"), format!("the same token as {kind} [{other}]"))),
            None => Ok(token),
        }
    }
}

/// A TOML value as JSON (dates become their TOML text form).
pub fn to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        toml::Value::Table(table) => Value::Object(table_to_json(table)),
    }
}

pub fn table_to_json(table: &Table) -> Map<String, Value> {
    table.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_have_a_position_and_never_quote_the_line() {
        let text = "[a]\ntoken = \"s3cret\"\n[b\ntoken = 1\n";
        let err = parse_table("clients.toml", text).unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(3));
        let shown = err.to_string();
        assert!(shown.starts_with("clients.toml:3:"), "{shown}");
        assert!(!shown.contains("s3cret"));
    }

    #[test]
    fn field_errors_name_section_and_field() {
        let root = parse_table("w.toml", "[gpu-1]\ntoken = 5\n").unwrap();
        let sections = Section::all("w.toml", &root).unwrap();
        let err = sections[0].required_str("token").unwrap_err();
        assert_eq!(err.to_string(), "w.toml: section [gpu-1], field `token`: expected a string, found integer");
        let err = sections[0].required_str("missing").unwrap_err();
        assert!(err.to_string().ends_with("field `missing`: missing mandatory field"));
        let root = parse_table("w.toml", "stray = 1\n").unwrap();
        assert!(Section::all("w.toml", &root).unwrap_err().to_string().contains("expected a [section]"));
    }

    #[test]
    fn did_you_mean_finds_close_names_only() {
        let known = ["input_data", "interval_seconds", "daily_at", "time"];
        assert_eq!(did_you_mean("input_dat", &known), Some("input_data"));
        assert_eq!(did_you_mean("daily-at", &known), Some("daily_at"));
        assert_eq!(did_you_mean("Daily_At", &known), Some("daily_at"));
        assert_eq!(did_you_mean("tme", &known), Some("time"));
        assert_eq!(did_you_mean("cron", &known), None);
        assert_eq!(did_you_mean("initial_data", &known), None, "too far for a typo; aliases are per file");
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn warnings_name_file_section_and_field() {
        let root = parse_table("s.toml", "[job]\nx = 1\n").unwrap();
        let sections = Section::all("s.toml", &root).unwrap();
        let warning = sections[0].warning(Some("x"), "unknown field; ignored");
        assert_eq!(warning.to_string(), "s.toml: section [job], field `x`: unknown field; ignored");
        assert_eq!(
            sections[0].optional_bool("x").unwrap_err().problem,
            "expected a boolean (true or false), found integer"
        );
    }

    #[test]
    fn toml_becomes_json() {
        let root =
            parse_table("c.toml", "[c]\nlanguages = [\"en\", \"de\"]\nn = 1.5\nflag = true\n[c.nested]\nx = 1\n")
                .unwrap();
        let json = to_json(&root["c"]);
        assert_eq!(json, serde_json::json!({"languages": ["en", "de"], "n": 1.5, "flag": true, "nested": {"x": 1}}));
    }
}
