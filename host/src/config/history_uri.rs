//! `HISTORY_DATABASE_URI`: the URI forms people write for the job history
//! database, read into a [`HistoryDatabase`].
//!
//! Operators copy these URIs from SQLAlchemy settings and from the Python
//! orchestrator's examples (`sqlite:avtomatika_history.db`), so the forms
//! both accept are read here rather than only `sqlite:///path`:
//!
//! | URI                              | Database                                 |
//! | :------------------------------- | :--------------------------------------- |
//! | `sqlite:history.db`              | `history.db`, relative to the working dir |
//! | `sqlite://history.db`            | the same (as `sqlx` reads it)            |
//! | `sqlite:///var/lib/history.db`   | `/var/lib/history.db`                    |
//! | `sqlite:////var/lib/history.db`  | `/var/lib/history.db` (SQLAlchemy's absolute form) |
//! | `sqlite::memory:`, `:memory:`    | in memory, lost at exit                  |
//! | `sqlite+aiosqlite:///…`          | as `sqlite:///…`: the driver is ignored  |
//! | `postgresql://…`, `postgres://…` | PostgreSQL                               |
//! | `postgresql+asyncpg://…`         | as `postgresql://…`                      |
//!
//! `sqlite:///x.db` is where readings differ: SQLAlchemy takes the path after
//! the third slash as relative (`x.db`), while the Python orchestrator
//! (`urlparse(uri).path`), `sqlx` and this server's specification
//! (`sqlite:///...`) take it as `/x.db`. The server follows the latter, so a
//! URI keeps meaning the file it meant with the Python orchestrator; a
//! SQLAlchemy-style relative URI then names a file in `/`, which fails loudly
//! at start-up when `/` is not writable rather than writing somewhere else.

use std::path::PathBuf;

use super::{ConfigError, HistoryDatabase, Secret};

const VARIABLE: &str = "HISTORY_DATABASE_URI";

/// What the accepted forms look like, for error messages.
const EXPECTED: &str =
    "expected sqlite:relative.db, sqlite:///absolute/path.db, sqlite::memory: or postgresql://user:password@host/db";

/// Reads one `HISTORY_DATABASE_URI`. Errors never quote the URI: a
/// PostgreSQL URI carries a password.
pub fn parse(uri: &str) -> Result<HistoryDatabase, ConfigError> {
    let invalid = |problem: String| ConfigError { variable: VARIABLE, problem };
    let uri = uri.trim();
    if uri == ":memory:" {
        return Ok(HistoryDatabase::SqliteMemory);
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(invalid(format!("not a URI (no scheme); {EXPECTED}")));
    };
    // `dialect+driver` (SQLAlchemy): the driver names a Python library; this
    // server has its own, so only the dialect matters.
    let dialect = scheme.split_once('+').map_or(scheme, |(dialect, _)| dialect).to_ascii_lowercase();
    match dialect.as_str() {
        "sqlite" => sqlite(rest).map_err(invalid),
        "postgresql" | "postgres" => {
            let uri = format!("postgresql:{rest}");
            let parsed = url::Url::parse(&uri).map_err(|e| invalid(format!("not a valid URI ({e})")))?;
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(invalid("postgresql URI names no host".to_owned()));
            }
            Ok(HistoryDatabase::Postgres(Secret::from(uri)))
        }
        // Only the scheme is quoted: it holds no secret.
        _ => Err(invalid(format!("unsupported scheme {scheme:?}; {EXPECTED}"))),
    }
}

/// The part of a `sqlite:` URI after the scheme's colon.
fn sqlite(rest: &str) -> Result<HistoryDatabase, String> {
    // SQLite URI parameters (`?mode=ro`) are not passed on; refusing them is
    // better than opening the file in another mode than asked.
    if rest.contains('?') {
        return Err(format!("query parameters in a sqlite URI are not supported; {EXPECTED}"));
    }
    let path = match rest.strip_prefix("//") {
        // `sqlite:////abs` and `sqlite:///abs`: the path from its first slash.
        Some(after) if after.starts_with('/') => format!("/{}", after.trim_start_matches('/')),
        // `sqlite://relative` (sqlx's reading) or `sqlite://` alone.
        Some(after) => after.to_owned(),
        // `sqlite:relative`, `sqlite:/abs`.
        None => rest.to_owned(),
    };
    match path.as_str() {
        ":memory:" | "/:memory:" => Ok(HistoryDatabase::SqliteMemory),
        "" | "/" => Err(format!("sqlite URI names no file; {EXPECTED}")),
        _ => Ok(HistoryDatabase::Sqlite(PathBuf::from(path))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_path(uri: &str) -> PathBuf {
        match parse(uri) {
            Ok(HistoryDatabase::Sqlite(path)) => path,
            other => panic!("{uri}: {other:?}"),
        }
    }

    #[test]
    fn sqlite_forms_map_to_their_files() {
        for (uri, path) in [
            // The example application's `.env`.
            ("sqlite:avtomatika_history.db", "avtomatika_history.db"),
            ("sqlite:data/history.db", "data/history.db"),
            ("sqlite://history.db", "history.db"),
            ("sqlite://data/history.db", "data/history.db"),
            ("sqlite:///var/lib/avtomatika/history.db", "/var/lib/avtomatika/history.db"),
            ("sqlite:////var/lib/avtomatika/history.db", "/var/lib/avtomatika/history.db"),
            ("sqlite:/var/lib/history.db", "/var/lib/history.db"),
            ("sqlite+aiosqlite:///var/lib/history.db", "/var/lib/history.db"),
            ("sqlite+pysqlite:history.db", "history.db"),
            ("SQLite:history.db", "history.db"),
            ("  sqlite:history.db  ", "history.db"),
        ] {
            assert_eq!(sqlite_path(uri), PathBuf::from(path), "{uri}");
        }
    }

    #[test]
    fn memory_forms_map_to_an_in_memory_database() {
        for uri in
            [":memory:", "sqlite::memory:", "sqlite:///:memory:", "sqlite://:memory:", "sqlite+aiosqlite:///:memory:"]
        {
            assert_eq!(parse(uri).unwrap(), HistoryDatabase::SqliteMemory, "{uri}");
        }
    }

    #[test]
    fn postgres_forms_keep_the_uri_without_the_driver() {
        for (uri, kept) in [
            ("postgresql://u:pw@db:5432/avtomatika", "postgresql://u:pw@db:5432/avtomatika"),
            ("postgres://u:pw@db/avtomatika", "postgresql://u:pw@db/avtomatika"),
            ("postgresql+asyncpg://u:pw@db/avtomatika", "postgresql://u:pw@db/avtomatika"),
        ] {
            match parse(uri) {
                Ok(HistoryDatabase::Postgres(secret)) => assert_eq!(secret.expose(), kept, "{uri}"),
                other => panic!("{uri}: {other:?}"),
            }
        }
    }

    #[test]
    fn unusable_uris_are_refused_without_quoting_them() {
        for (uri, problem) in [
            ("sqlite:", "names no file"),
            ("sqlite://", "names no file"),
            ("sqlite:///", "names no file"),
            ("sqlite:///h.db?mode=ro", "query parameters"),
            ("mysql://u:s3cret@h/db", "unsupported scheme \"mysql\""),
            ("mysql+aiomysql://u:s3cret@h/db", "unsupported scheme"),
            ("postgresql:///db-s3cret", "names no host"),
            ("history.db", "no scheme"),
            ("not a uri", "no scheme"),
        ] {
            let err = parse(uri).unwrap_err();
            assert_eq!(err.variable, VARIABLE);
            assert!(err.problem.contains(problem), "{uri}: {err}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }
}
