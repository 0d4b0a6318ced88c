//! How far a worker says it is with a task: the last report per job, kept
//! beside the job record (not in it) so a report never rewrites the job.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Job, JobStatus};

/// Longest progress message kept, in bytes; longer ones are cut at a
/// character boundary.
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 1024;

/// A worker's last progress report for one task of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub task_id: Uuid,
    /// 0.0–1.0.
    pub progress: f64,
    pub message: Option<String>,
    pub at: DateTime<Utc>,
}

impl Progress {
    /// A report as a worker sent it, bounded: the value must be a number in
    /// 0.0–1.0 (a percentage 1–100 is read as such, since older workers send
    /// one), the message is cut to [`MAX_PROGRESS_MESSAGE_BYTES`].
    pub fn new(task_id: Uuid, progress: f64, message: Option<String>) -> Result<Self, String> {
        if !progress.is_finite() || progress < 0.0 {
            return Err(format!("progress must be a number from 0.0 to 1.0, not {progress}"));
        }
        let progress = if progress > 1.0 && progress <= 100.0 { progress / 100.0 } else { progress.min(1.0) };
        let message = message.filter(|m| !m.is_empty()).map(|mut m| {
            if m.len() > MAX_PROGRESS_MESSAGE_BYTES {
                let mut cut = MAX_PROGRESS_MESSAGE_BYTES;
                while !m.is_char_boundary(cut) {
                    cut -= 1;
                }
                m.truncate(cut);
            }
            m
        });
        Ok(Self { task_id, progress, message, at: Utc::now() })
    }
}

/// A job as `GET /api/v1/jobs/{id}` shows it: the record and its progress,
/// serialised in one pass (no intermediate JSON tree on the status-poll path).
#[derive(Serialize)]
pub struct JobView<'a> {
    #[serde(flatten)]
    job: &'a Job,
    progress: f64,
    progress_message: &'a str,
}

impl<'a> JobView<'a> {
    /// The rule of [`attach_progress`], on the record itself.
    pub fn new(job: &'a Job, report: Option<&'a Progress>) -> Self {
        let report = report.filter(|report| job.status.is_terminal() || job.task(report.task_id).is_some());
        Self {
            job,
            progress: report.map_or(0.0, |report| report.progress),
            progress_message: report.and_then(|report| report.message.as_deref()).unwrap_or_default(),
        }
    }
}

/// Adds `progress` (a number) and `progress_message` (a string, empty when
/// there is none) to a job as the API shows it (the job serialised). A report counts while its task is the job's task or one
/// of its branches, and after the job ended; once the job moved on to another
/// task the progress starts again from 0.
pub fn attach_progress(job: &mut Value, report: Option<&Progress>) {
    let Some(fields) = job.as_object_mut() else { return };
    let ended = fields
        .get("status")
        .and_then(Value::as_str)
        .and_then(|status| status.parse::<JobStatus>().ok())
        .is_some_and(JobStatus::is_terminal);
    let report = report.filter(|report| ended || job_has_task(fields, report.task_id));
    // Always a string: the published example client slices it as one.
    let (progress, message) = match report {
        Some(report) => (json!(report.progress), json!(report.message.as_deref().unwrap_or_default())),
        None => (json!(0.0), json!("")),
    };
    fields.insert("progress".into(), progress);
    fields.insert("progress_message".into(), message);
}

fn job_has_task(job: &serde_json::Map<String, Value>, task_id: Uuid) -> bool {
    let id = task_id.to_string();
    let is = |task: &Value| task.get("task_id").and_then(Value::as_str) == Some(id.as_str());
    let current = job.get("current_task").is_some_and(is);
    let branches = job.get("parallel").and_then(|p| p.get("branches")).and_then(Value::as_array);
    current || branches.is_some_and(|branches| branches.iter().any(is))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_bounded() {
        let task = Uuid::new_v4();
        assert!(Progress::new(task, f64::NAN, None).is_err());
        assert!(Progress::new(task, -0.1, None).is_err());
        assert_eq!(Progress::new(task, 50.0, None).unwrap().progress, 0.5, "a percentage");
        assert_eq!(Progress::new(task, 1e9, None).unwrap().progress, 1.0);
        let long = "é".repeat(MAX_PROGRESS_MESSAGE_BYTES);
        let cut = Progress::new(task, 0.5, Some(long)).unwrap().message.unwrap();
        assert!(cut.len() <= MAX_PROGRESS_MESSAGE_BYTES && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_view_of_a_record_follows_the_same_rule() {
        let mut job = Job::new("b".into(), "c".into(), "start".into(), json!({}), None);
        let report = Progress::new(Uuid::new_v4(), 0.5, Some("half".into())).unwrap();
        let view = serde_json::to_value(JobView::new(&job, Some(&report))).unwrap();
        assert_eq!((view["progress"].clone(), view["progress_message"].clone()), (json!(0.0), json!("")));
        assert_eq!(view["id"], json!(job.id), "the record's fields are there");
        job.end(JobStatus::Finished, None);
        let view = serde_json::to_value(JobView::new(&job, Some(&report))).unwrap();
        assert_eq!((view["progress"].clone(), view["progress_message"].clone()), (json!(0.5), json!("half")));
    }

    #[test]
    fn progress_counts_for_its_task_only() {
        let task = Uuid::new_v4();
        let report = Progress::new(task, 0.25, Some("a quarter".into())).unwrap();
        let mut job = json!({"status": "waiting_for_worker", "current_task": {"task_id": task}});
        attach_progress(&mut job, Some(&report));
        assert_eq!((job["progress"].clone(), job["progress_message"].clone()), (json!(0.25), json!("a quarter")));
        let mut moved_on = json!({"status": "waiting_for_worker", "current_task": {"task_id": Uuid::new_v4()}});
        attach_progress(&mut moved_on, Some(&report));
        assert_eq!((moved_on["progress"].clone(), moved_on["progress_message"].clone()), (json!(0.0), json!("")));
        let mut branch = json!({"status": "waiting_for_parallel_tasks", "parallel": {"branches": [{"task_id": task}]}});
        attach_progress(&mut branch, Some(&report));
        assert_eq!(branch["progress"], json!(0.25));
        let mut ended = json!({"status": "finished", "current_task": null});
        attach_progress(&mut ended, Some(&report));
        assert_eq!(ended["progress"], json!(0.25));
    }
}
