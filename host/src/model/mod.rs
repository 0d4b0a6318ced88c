//! The records the orchestrator keeps: jobs, tasks and workers, with their wire names.

mod job;
mod task;
mod worker;

pub use job::{Job, JobId, JobStatus, TaskRecord};
pub use task::{ResultError, TaskPayload, WorkerResult, WorkerResultBody};
pub use worker::{WorkerInfo, WorkerPatch, WorkerRegistration};
