//! The history database: SQLite or PostgreSQL through `sqlx`, with the
//! schema in `host/migrations/{sqlite,postgres}/` applied at start-up.
//!
//! Every query is written once: [`on_pool!`] expands it for each engine, and
//! `QueryBuilder` writes each engine's placeholders.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::QueryBuilder;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::event::{Event, JobEvent, JobEventKind, WorkerEvent};
use crate::config::HistoryDatabase;
use crate::model::{JobFilter, JobId, JobStatus};

/// How long a query waits for a connection before it fails (the writer then
/// retries; an API read answers 503).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per instance: one for the writer, the rest for API reads.
const MAX_CONNECTIONS: u32 = 4;

/// One open history database.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever engine's pool `$store` holds.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// A job event as stored, read back for the API.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventRow {
    pub event_id: String,
    pub job_id: String,
    pub at_us: i64,
    pub event_type: String,
    pub state: Option<String>,
    pub previous_state: Option<String>,
    pub next_state: Option<String>,
    pub worker_id: Option<String>,
    pub task_id: Option<String>,
    pub attempt_number: Option<i64>,
    pub duration_ms: Option<f64>,
    pub context_snapshot: Option<String>,
}

/// A job's row in the `jobs` table: its latest status as the history knows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct JobRow {
    pub job_id: String,
    pub client: String,
    pub blueprint: String,
    pub status: String,
    pub current_state: String,
    pub created_us: i64,
    pub updated_us: i64,
}

impl Store {
    /// Opens (SQLite: creates) the database and applies pending migrations.
    pub async fn open(database: &HistoryDatabase) -> Result<Self, sqlx::Error> {
        let store = match database {
            HistoryDatabase::Sqlite(path) => {
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    // One writer, readers alongside; NORMAL is durable across
                    // a process crash, which is what history needs.
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    // The indexes take random keys (job ids): a page cache
                    // larger than the 2 MiB default keeps their hot pages in.
                    .pragma("cache_size", "-32768")
                    .busy_timeout(ACQUIRE_TIMEOUT);
                let pool = SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await?;
                sqlx::migrate!("migrations/sqlite").run(&pool).await?;
                Self::Sqlite(pool)
            }
            HistoryDatabase::SqliteMemory => {
                // Every connection to `:memory:` opens a database of its
                // own, and it is gone once that connection closes: a single
                // connection that is never recycled keeps one database for
                // the server's life.
                let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
                let pool = SqlitePoolOptions::new()
                    .min_connections(1)
                    .max_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await?;
                sqlx::migrate!("migrations/sqlite").run(&pool).await?;
                Self::Sqlite(pool)
            }
            HistoryDatabase::Postgres(uri) => {
                // History may lose its last few milliseconds in a database
                // crash (never consistency), which spares a WAL flush per batch.
                let options = PgConnectOptions::from_str(uri.expose())?
                    .application_name("avtomatika")
                    .options([("synchronous_commit", "off")]);
                let pool = PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await?;
                sqlx::migrate!("migrations/postgres").run(&pool).await?;
                Self::Postgres(pool)
            }
        };
        Ok(store)
    }

    /// Writes `events` in one transaction.
    pub async fn insert(&self, events: &[Event]) -> Result<(), sqlx::Error> {
        let mut jobs = Vec::new();
        let mut workers = Vec::new();
        for event in events {
            match event {
                Event::Job(event) => jobs.push(&**event),
                Event::Worker(event) => workers.push(event),
            }
        }
        let job_events = job_rows(&jobs);
        let job_summaries = latest_per_job(&jobs);
        let worker_events = worker_rows(&workers);
        let statements: Vec<Statement<'_>> = chunks(&job_events)
            .map(Statement::JobEvents)
            .chain(chunks(&job_summaries).map(Statement::Jobs))
            .chain(chunks(&worker_events).map(Statement::WorkerEvents))
            .collect();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for statement in &statements {
                let mut query = QueryBuilder::new("");
                statement.build(&mut query);
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        })
    }

    /// `job_id`'s events in the order they happened (`limit`, `offset` page them).
    pub async fn job_events(&self, job_id: JobId, limit: usize, offset: usize) -> Result<Vec<EventRow>, sqlx::Error> {
        on_pool!(self, |pool| {
            let mut query = QueryBuilder::new(
                "SELECT event_id, job_id, at_us, event_type, state, previous_state, next_state, worker_id, task_id, \
                 attempt_number, duration_ms, context_snapshot FROM job_events WHERE job_id = ",
            );
            query.push_bind(job_id.to_string());
            query.push(" ORDER BY at_us, id LIMIT ").push_bind(to_i64(limit));
            query.push(" OFFSET ").push_bind(to_i64(offset));
            query.build_query_as::<EventRow>().fetch_all(pool).await
        })
    }

    /// The history's row of `job_id`, when it has one.
    pub async fn job(&self, job_id: JobId) -> Result<Option<JobRow>, sqlx::Error> {
        on_pool!(self, |pool| {
            let mut query = QueryBuilder::new(
                "SELECT job_id, client, blueprint, status, current_state, created_us, updated_us FROM jobs WHERE job_id = ",
            );
            query.push_bind(job_id.to_string());
            query.build_query_as::<JobRow>().fetch_optional(pool).await
        })
    }

    /// `client`'s jobs passing `filter`, newest first.
    pub async fn client_jobs(
        &self,
        client: &str,
        filter: &JobFilter,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<JobRow>, sqlx::Error> {
        on_pool!(self, |pool| {
            let mut query = QueryBuilder::new(
                "SELECT job_id, client, blueprint, status, current_state, created_us, updated_us FROM jobs WHERE client = ",
            );
            query.push_bind(client.to_owned());
            if !filter.statuses.is_empty() {
                query.push(" AND status IN (");
                let mut list = query.separated(", ");
                for status in &filter.statuses {
                    list.push_bind(status.as_str());
                }
                list.push_unseparated(")");
            }
            if let Some(blueprint) = &filter.blueprint {
                query.push(" AND blueprint = ").push_bind(blueprint.clone());
            }
            if let Some(since) = filter.since {
                query.push(" AND created_us >= ").push_bind(since.timestamp_micros());
            }
            if let Some(until) = filter.until {
                query.push(" AND created_us <= ").push_bind(until.timestamp_micros());
            }
            query.push(" ORDER BY created_us DESC, job_id LIMIT ").push_bind(to_i64(limit));
            query.push(" OFFSET ").push_bind(to_i64(offset));
            query.build_query_as::<JobRow>().fetch_all(pool).await
        })
    }

    /// How many jobs the history holds in each status.
    pub async fn status_counts(&self) -> Result<HashMap<String, u64>, sqlx::Error> {
        let rows: Vec<(String, i64)> = on_pool!(self, |pool| {
            sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(|(status, n)| (status, u64::try_from(n).unwrap_or(0))).collect())
    }

    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }
}

/// Rows per insert statement. A batch is cut greedily into these sizes, so
/// that every statement text is one of a few, prepared once and then reused
/// from the connection's statement cache.
const CHUNKS: [usize; 3] = [64, 8, 1];

fn chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = CHUNKS.into_iter().find(|&size| rows.len() >= size)?;
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

/// One insert statement of a batch, over rows whose formatted column values
/// the query builder borrows.
enum Statement<'a> {
    JobEvents(&'a [JobEventRow<'a>]),
    Jobs(&'a [(&'a JobEvent, String)]),
    WorkerEvents(&'a [(&'a WorkerEvent, String, Option<String>)]),
}

/// A job event with its formatted column values.
struct JobEventRow<'a> {
    event: &'a JobEvent,
    event_id: String,
    job_id: String,
    task_id: Option<String>,
    context: Option<String>,
}

fn job_rows<'a>(events: &[&'a JobEvent]) -> Vec<JobEventRow<'a>> {
    events
        .iter()
        .map(|event| JobEventRow {
            event,
            event_id: event.event_id.to_string(),
            job_id: event.job_id.to_string(),
            task_id: event.task_id.map(|id| id.to_string()),
            context: event.context.as_ref().map(ToString::to_string),
        })
        .collect()
}

/// What the `jobs` rows of `events`' jobs become: each job's latest creation,
/// end or retry. Only those are kept there (the statuses in between are the
/// live storage's to count), which keeps it to about two writes per job.
/// Latest by timestamp, not by position: an event prepared before a change
/// is recorded after it is stored, so it can follow the job's end in the buffer.
fn latest_per_job<'a>(events: &[&'a JobEvent]) -> Vec<(&'a JobEvent, String)> {
    let mut latest: HashMap<JobId, &'a JobEvent> = HashMap::new();
    let kept = |e: &&&JobEvent| {
        matches!(e.kind, JobEventKind::JobCreated | JobEventKind::JobRetried) || e.status.is_terminal()
    };
    for event in events.iter().filter(kept) {
        let newest = latest.entry(event.job_id).or_insert(event);
        if event.at_us > newest.at_us {
            *newest = event;
        }
    }
    latest.into_values().map(|event| (event, event.job_id.to_string())).collect()
}

fn worker_rows<'a>(events: &[&'a WorkerEvent]) -> Vec<(&'a WorkerEvent, String, Option<String>)> {
    events
        .iter()
        .map(|event| (*event, event.event_id.to_string(), event.snapshot.as_ref().map(ToString::to_string)))
        .collect()
}

impl Statement<'_> {
    /// Writes the statement into `query`; generic over the engine so that one
    /// text serves both.
    fn build<'q, DB>(&'q self, query: &mut QueryBuilder<'q, DB>)
    where
        DB: sqlx::Database,
        i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Option<f64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        match self {
            Statement::JobEvents(rows) => {
                query.push(
                    "INSERT INTO job_events (event_id, job_id, at_us, event_type, state, previous_state, next_state, \
                     worker_id, task_id, attempt_number, duration_ms, context_snapshot) ",
                );
                query.push_values(rows.iter(), |mut row, r| {
                    let e = r.event;
                    row.push_bind(r.event_id.as_str())
                        .push_bind(r.job_id.as_str())
                        .push_bind(e.at_us)
                        .push_bind(e.kind.as_str())
                        .push_bind(e.state.as_str())
                        .push_bind(e.previous_state.as_deref())
                        .push_bind(e.next_state.as_deref())
                        .push_bind(e.worker_id.as_deref())
                        .push_bind(r.task_id.as_deref())
                        .push_bind(e.attempt.map(i64::from))
                        .push_bind(e.duration_ms)
                        .push_bind(r.context.as_deref());
                });
                // A retried batch the database had already committed.
                query.push(" ON CONFLICT (event_id) DO NOTHING");
            }
            Statement::Jobs(rows) => {
                query.push(
                    "INSERT INTO jobs (job_id, client, blueprint, status, current_state, created_us, updated_us) ",
                );
                query.push_values(rows.iter(), |mut row, (e, job_id)| {
                    row.push_bind(job_id.as_str())
                        .push_bind(e.client.as_str())
                        .push_bind(e.blueprint.as_str())
                        .push_bind(e.status.as_str())
                        .push_bind(e.state.as_str())
                        .push_bind(e.at_us)
                        .push_bind(e.at_us);
                });
                // A later event wins, except that an ended job stays ended
                // (another instance's clock may run behind) unless an
                // operator retried it: a retry is the one row written with
                // status `running` (creations are `pending`).
                let terminal: Vec<String> =
                    JobStatus::ALL.iter().filter(|s| s.is_terminal()).map(|s| format!("'{}'", s.as_str())).collect();
                query.push(format!(
                    " ON CONFLICT (job_id) DO UPDATE SET status = excluded.status, \
                     current_state = excluded.current_state, updated_us = excluded.updated_us \
                     WHERE jobs.updated_us <= excluded.updated_us \
                     AND (jobs.status NOT IN ({}) OR excluded.status = '{}')",
                    terminal.join(", "),
                    JobStatus::Running.as_str()
                ));
            }
            Statement::WorkerEvents(rows) => {
                query.push("INSERT INTO worker_events (event_id, worker_id, at_us, event_type, worker_info_snapshot) ");
                query.push_values(rows.iter(), |mut row, (e, event_id, snapshot)| {
                    row.push_bind(event_id.as_str())
                        .push_bind(e.worker_id.as_str())
                        .push_bind(e.at_us)
                        .push_bind(e.kind.as_str())
                        .push_bind(snapshot.as_deref());
                });
                query.push(" ON CONFLICT (event_id) DO NOTHING");
            }
        }
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sqlx::Connection;

    use super::*;
    use crate::history::event::WorkerEventKind;
    use crate::model::Job;

    /// Two job events and a worker event, as the writer batches them.
    fn batch() -> (Job, Vec<Event>) {
        let job = Job::new("hello".into(), "tester".into(), "start".into(), json!({}), None);
        let mut created = JobEvent::new(JobEventKind::JobCreated, &job);
        created.at_us = 1;
        let mut dispatched = JobEvent::new(JobEventKind::TaskDispatched, &job);
        dispatched.at_us = 2;
        let mut registered = WorkerEvent::new(WorkerEventKind::Registered, "w-1", None);
        registered.at_us = 3;
        let events = vec![Event::Job(Box::new(created)), Event::Job(Box::new(dispatched)), Event::Worker(registered)];
        (job, events)
    }

    /// The writer's retry of a batch the database had committed (its
    /// acknowledgement lost with the connection) writes nothing twice.
    async fn a_retried_batch_is_written_once(store: Store) {
        let (job, events) = batch();
        store.insert(&events).await.unwrap();
        store.insert(&events).await.unwrap();
        let rows = store.job_events(job.id, 100, 0).await.unwrap();
        let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
        assert_eq!(types, ["job_created", "task_dispatched"]);
        let workers: i64 = on_pool!(&store, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM worker_events WHERE worker_id = 'w-1'").fetch_one(pool).await
        })
        .unwrap();
        assert_eq!(workers, 1);
        store.close().await;
    }

    #[tokio::test]
    async fn sqlite_skips_events_it_already_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&HistoryDatabase::Sqlite(dir.path().join("history.db"))).await.unwrap();
        a_retried_batch_is_written_once(store).await;
    }

    #[tokio::test]
    async fn postgres_skips_events_it_already_holds() {
        let admin = std::env::var("AVTOMATIKA_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("avtomatika_unit_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::postgres::PgConnection::connect(&admin).await.expect("PostgreSQL at 127.0.0.1:5432");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let uri = format!("{}/{name}", admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base));
        let store = Store::open(&HistoryDatabase::Postgres(uri.into())).await.unwrap();
        a_retried_batch_is_written_once(store).await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.unwrap();
    }
}
