//! What both backends do alike around a job record: encoding and decoding it
//! with a clear error, the optimistic version step of an update, and turning
//! an update's follow-up into the effects a backend applies with it.

use std::fmt::Display;
use std::sync::{Mutex, MutexGuard};

use chrono::Utc;

use super::{Assignment, FollowUp, StorageError, StorageResult};
use crate::model::{Job, TaskPayload};

pub(crate) fn encode_job(job: &Job) -> StorageResult<Vec<u8>> {
    job.encode().map_err(StorageError::Corrupt)
}

/// Decodes a stored job; `what` names it in the error (`job {what}: …`).
pub(crate) fn decode_job(what: impl Display, bytes: &[u8]) -> StorageResult<Job> {
    Job::decode(bytes).map_err(|e| StorageError::Corrupt(format!("job {what}: {e}")))
}

/// An update's optimistic version step. Bumps the job's version and update
/// time; unless [`VersionStep::applied`] is called, dropping the step puts
/// the version back, so a conflict, an error and an early return all leave
/// the caller's copy at the version storage still holds.
pub(crate) struct VersionStep<'a> {
    job: &'a mut Job,
    expected: u64,
    applied: bool,
}

impl<'a> VersionStep<'a> {
    pub(crate) fn begin(job: &'a mut Job) -> Self {
        let expected = job.version;
        job.version += 1;
        job.updated_at = Utc::now();
        Self { job, expected, applied: false }
    }

    /// The version storage must still hold for the update to apply.
    pub(crate) fn expected(&self) -> u64 {
        self.expected
    }

    /// The job as it will be stored.
    pub(crate) fn job(&self) -> &Job {
        self.job
    }

    /// The update landed: the job keeps its new version.
    pub(crate) fn applied(mut self) {
        self.applied = true;
    }
}

impl Drop for VersionStep<'_> {
    fn drop(&mut self) {
        if !self.applied {
            self.job.version = self.expected;
        }
    }
}

/// A follow-up as the effects a backend applies with the update.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Queue the job for the executor.
    pub enqueue: bool,
    /// Tasks to queue, each for its worker, in the order given.
    pub pushes: Vec<(String, TaskPayload)>,
    /// Task types to park the job under, each once, first-named first:
    /// a job waits once per type however many of its tasks need it.
    pub parks: Vec<String>,
}

impl From<FollowUp> for Effects {
    fn from(follow_up: FollowUp) -> Self {
        let mut effects = Self::default();
        match follow_up {
            FollowUp::None => {}
            FollowUp::Enqueue => effects.enqueue = true,
            FollowUp::Dispatch(assignments) => {
                for assignment in assignments {
                    match assignment {
                        Assignment::Push { worker_id, task } => effects.pushes.push((worker_id, task)),
                        Assignment::Park { task_type } => {
                            if !effects.parks.contains(&task_type) {
                                effects.parks.push(task_type);
                            }
                        }
                    }
                }
            }
        }
        effects
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain
/// maps; the data is still usable, so carry on rather than cascade the panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FollowUp;

    #[test]
    fn a_step_not_applied_puts_the_version_back() {
        let mut job = Job::new("hello".into(), "default".into(), "start".into(), serde_json::json!({}), None);
        job.version = 7;
        {
            let step = VersionStep::begin(&mut job);
            assert_eq!((step.expected(), step.job().version), (7, 8));
        }
        assert_eq!(job.version, 7);
        VersionStep::begin(&mut job).applied();
        assert_eq!(job.version, 8);
    }

    #[test]
    fn parks_are_distinct_and_in_order() {
        let park = |t: &str| Assignment::Park { task_type: t.into() };
        let effects = Effects::from(FollowUp::Dispatch(vec![park("b"), park("a"), park("b")]));
        assert_eq!(effects.parks, ["b", "a"]);
        assert!(!effects.enqueue && effects.pushes.is_empty());
        assert!(Effects::from(FollowUp::Enqueue).enqueue);
    }
}
