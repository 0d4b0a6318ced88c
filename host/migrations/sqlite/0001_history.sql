-- Job history (SQLite). Timestamps are microseconds since the Unix epoch,
-- UTC; the API renders them in `TZ`. `id` orders events recorded in the
-- same microsecond.

CREATE TABLE job_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    state TEXT,
    previous_state TEXT,
    next_state TEXT,
    worker_id TEXT,
    task_id TEXT,
    attempt_number INTEGER,
    duration_ms REAL,
    context_snapshot TEXT
);
CREATE INDEX job_events_by_job ON job_events (job_id, at_us, id);

CREATE TABLE worker_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    worker_info_snapshot TEXT
);
CREATE INDEX worker_events_by_worker ON worker_events (worker_id, at_us, id);

-- One row per job: its latest known status, kept by the writer, so counts
-- and listings outlive the live storage's retention.
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    blueprint TEXT NOT NULL,
    status TEXT NOT NULL,
    current_state TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL
);
CREATE INDEX jobs_by_status ON jobs (status);
CREATE INDEX jobs_by_client ON jobs (client, created_us);
