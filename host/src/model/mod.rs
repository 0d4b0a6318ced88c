//! The records the orchestrator keeps: jobs, tasks and workers, with their wire names.

mod filter;
mod job;
mod progress;
mod routing;
mod task;
mod worker;

pub use filter::JobFilter;
pub use job::{ApprovalWait, ChildWait, Job, JobId, JobStatus, JobTimeouts, ParallelWait, TaskRecord};
pub use progress::{JobView, MAX_PROGRESS_MESSAGE_BYTES, Progress, attach_progress};
pub use routing::{Routing, Strategy};
pub use task::{
    ErrorCode, FailureEffect, ResultError, ResultStatus, ResultWire, TaskPayload, WorkerResult, WorkerResultBody,
};
pub use worker::{WorkerInfo, WorkerPatch, WorkerRegistration, WorkerStatus};
