//! What the history records: one [`JobEvent`] per step of a job's life and
//! one [`WorkerEvent`] per change in a worker's registration.

use std::fmt;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::model::{Job, JobId, JobStatus};

/// The kinds of job events, stored as their snake_case names (the Python
/// orchestrator's names where it has the same event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEventKind {
    JobCreated,
    /// A handler is about to run for the job's current state.
    StateStarted,
    /// The handler answered; `next_state` and the action are in the event.
    StateFinished,
    /// The handler trapped, overran a limit or broke the contract.
    StateFailed,
    TaskDispatched,
    /// No live worker takes the task's type; it waits for one to register.
    TaskWaitingForWorker,
    /// A worker's result for a task (or a parallel branch) was applied.
    TaskFinished,
    TaskRetried,
    TaskTimedOut,
    ParallelDispatched,
    /// Every branch answered; the job moves to the aggregator state.
    ParallelJoined,
    ApprovalRequested,
    ApprovalDecided,
    SubJobStarted,
    SubJobFinished,
    CancellationRequested,
    /// A worker reported how far it is with a task (`progress`, `message`).
    TaskProgress,
    /// The job reached a terminal status; which one is in `context_snapshot`
    /// and in the dedicated kinds below.
    JobFinished,
    JobFailed,
    JobCancelled,
    JobQuarantined,
    /// A client retried the quarantined job (`by`, `previous_error`).
    JobRetried,
    /// A client had the ended job's webhook sent again (`by`).
    WebhookResent,
}

impl JobEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobCreated => "job_created",
            Self::StateStarted => "state_started",
            Self::StateFinished => "state_finished",
            Self::StateFailed => "state_failed",
            Self::TaskDispatched => "task_dispatched",
            Self::TaskWaitingForWorker => "task_waiting_for_worker",
            Self::TaskFinished => "task_finished",
            Self::TaskRetried => "task_retried",
            Self::TaskTimedOut => "task_timed_out",
            Self::ParallelDispatched => "parallel_dispatched",
            Self::ParallelJoined => "parallel_joined",
            Self::ApprovalRequested => "approval_requested",
            Self::ApprovalDecided => "approval_decided",
            Self::SubJobStarted => "sub_blueprint_started",
            Self::SubJobFinished => "sub_blueprint_finished",
            Self::CancellationRequested => "cancellation_requested",
            Self::TaskProgress => "task_progress",
            Self::JobFinished => "job_finished",
            Self::JobFailed => "job_failed",
            Self::JobCancelled => "job_cancelled",
            Self::JobQuarantined => "job_quarantined",
            Self::JobRetried => "job_retried",
            Self::WebhookResent => "webhook_resent",
        }
    }

    /// The event that records a job's end with `status`.
    pub fn ended(status: JobStatus) -> Self {
        match status {
            JobStatus::Finished => Self::JobFinished,
            JobStatus::Cancelled => Self::JobCancelled,
            JobStatus::Quarantined => Self::JobQuarantined,
            _ => Self::JobFailed,
        }
    }
}

impl fmt::Display for JobEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a job's life, with the job as it stood then.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub kind: JobEventKind,
    pub event_id: Uuid,
    pub job_id: JobId,
    /// Set by [`History::job`](super::History::job) when recorded.
    pub at_us: i64,
    pub client: String,
    pub blueprint: String,
    pub status: JobStatus,
    /// The job's state when the event happened.
    pub state: String,
    pub previous_state: Option<String>,
    pub next_state: Option<String>,
    pub worker_id: Option<String>,
    pub task_id: Option<Uuid>,
    pub attempt: Option<u32>,
    pub duration_ms: Option<f64>,
    /// What an operator needs to understand the step (the task's params, the
    /// result, the error…), small by design: never the whole job.
    pub context: Option<Value>,
}

impl JobEvent {
    pub fn new(kind: JobEventKind, job: &Job) -> Self {
        Self {
            kind,
            event_id: Uuid::new_v4(),
            job_id: job.id,
            at_us: 0,
            client: job.client.clone(),
            blueprint: job.blueprint_name.clone(),
            status: job.status,
            state: job.current_state.clone(),
            previous_state: None,
            next_state: None,
            worker_id: None,
            task_id: None,
            attempt: None,
            duration_ms: None,
            context: None,
        }
    }

    pub fn previous_state(mut self, state: impl Into<String>) -> Self {
        self.previous_state = Some(state.into());
        self
    }

    pub fn next_state(mut self, state: impl Into<String>) -> Self {
        self.next_state = Some(state.into());
        self
    }

    pub fn worker(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = Some(worker_id.into());
        self
    }

    pub fn task(mut self, task_id: Uuid) -> Self {
        self.task_id = Some(task_id);
        self
    }

    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration_ms = Some(duration.as_secs_f64() * 1000.0);
        self
    }

    pub fn context(mut self, context: Value) -> Self {
        self.context = Some(context);
        self
    }
}

/// The kinds of worker events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEventKind {
    Registered,
    /// A heartbeat that carried a status update (plain pings are not recorded).
    StatusUpdate,
    /// The worker's liveness lapsed and it was purged.
    TtlExpired,
}

impl WorkerEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::StatusUpdate => "status_update",
            Self::TtlExpired => "ttl_expired",
        }
    }
}

/// A change in a worker's registration.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerEvent {
    pub kind: WorkerEventKind,
    pub event_id: Uuid,
    pub worker_id: String,
    pub at_us: i64,
    /// The worker as registered after the event, when there is one.
    pub snapshot: Option<Value>,
}

impl WorkerEvent {
    pub fn new(kind: WorkerEventKind, worker_id: impl Into<String>, snapshot: Option<Value>) -> Self {
        Self { kind, event_id: Uuid::new_v4(), worker_id: worker_id.into(), at_us: 0, snapshot }
    }
}

/// What goes through the buffer to the writer.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Job(Box<JobEvent>),
    Worker(WorkerEvent),
}
