//! The records the orchestrator keeps: jobs, tasks and workers, with their wire names.

mod job;
mod routing;
mod task;
mod worker;

pub use job::{ApprovalWait, ChildWait, Job, JobId, JobStatus, JobTimeouts, ParallelWait, TaskRecord};
pub use routing::{Routing, Strategy};
pub use task::{ErrorCode, ResultError, ResultStatus, TaskPayload, WorkerResult, WorkerResultBody};
pub use worker::{WorkerInfo, WorkerPatch, WorkerRegistration, WorkerStatus};
