//! Which of a client's jobs a listing shows: `GET /api/v1/jobs?status=…&
//! blueprint=…&since=…&until=…`. Read by storage scans and by the history's
//! SQL alike.

use chrono::{DateTime, Utc};

use super::{Job, JobStatus};

/// A listing filter; the default lets every job through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Any of these statuses; empty for any status.
    pub statuses: Vec<JobStatus>,
    pub blueprint: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created at or before.
    pub until: Option<DateTime<Utc>>,
}

impl JobFilter {
    /// Reads the query parameters (each optional): `status` a comma-separated
    /// list of statuses, `blueprint` a name, `since`/`until` RFC 3339 times.
    /// `max_name_bytes` bounds the blueprint name (`MAX_NAME_BYTES`).
    pub fn parse(
        status: Option<&str>,
        blueprint: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
        max_name_bytes: usize,
    ) -> Result<Self, String> {
        let mut statuses = Vec::new();
        for name in status.into_iter().flat_map(|list| list.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
            let status: JobStatus = name.parse().map_err(|_| {
                let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("status: unknown job status {name:?}; known: {}", known.join(", "))
            })?;
            if !statuses.contains(&status) {
                statuses.push(status);
            }
        }
        let blueprint = match blueprint.map(str::trim).filter(|s| !s.is_empty()) {
            Some(name) if name.len() > max_name_bytes => {
                return Err(format!("blueprint: longer than {max_name_bytes} bytes"));
            }
            name => name.map(str::to_owned),
        };
        let time = |field: &str, text: Option<&str>| -> Result<Option<DateTime<Utc>>, String> {
            match text.map(str::trim).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(text) => DateTime::parse_from_rfc3339(text)
                    .map(|t| Some(t.with_timezone(&Utc)))
                    .map_err(|e| format!("{field}: {text:?} is not an RFC 3339 time ({e})")),
            }
        };
        let (since, until) = (time("since", since)?, time("until", until)?);
        if let (Some(since), Some(until)) = (since, until)
            && since > until
        {
            return Err(format!("since ({since}) is after until ({until})"));
        }
        Ok(Self { statuses, blueprint, since, until })
    }

    /// Whether the filter lets every job through.
    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty() && self.blueprint.is_none() && self.since.is_none() && self.until.is_none()
    }

    pub fn matches(&self, job: &Job) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&job.status))
            && self.blueprint.as_ref().is_none_or(|name| *name == job.blueprint_name)
            && self.since.is_none_or(|since| job.created_at >= since)
            && self.until.is_none_or(|until| job.created_at <= until)
    }

    /// Whether a job created at `created_at`, or any created before it, can
    /// still match: listings run newest first and stop at the first that cannot.
    pub fn reaches_back_to(&self, created_at: DateTime<Utc>) -> bool {
        self.since.is_none_or(|since| created_at >= since)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(
        status: &'static str,
        blueprint: &'static str,
        since: &'static str,
        until: &'static str,
    ) -> Result<JobFilter, String> {
        let given = |s: &'static str| (!s.is_empty()).then_some(s);
        JobFilter::parse(given(status), given(blueprint), given(since), given(until), 16)
    }

    #[test]
    fn reads_every_parameter_and_refuses_bad_ones_by_name() {
        let filter = parse("quarantined, failed,failed", "flow", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00+01:00")
            .expect("valid filter");
        assert_eq!(filter.statuses, vec![JobStatus::Quarantined, JobStatus::Failed]);
        assert_eq!(filter.blueprint.as_deref(), Some("flow"));
        assert!(!filter.is_empty());
        assert!(parse("", "", "", "").expect("empty").is_empty());

        let error = parse("done", "", "", "").expect_err("unknown status");
        assert!(error.starts_with("status:") && error.contains("quarantined"), "{error}");
        assert!(parse("", "a-name-longer-than-16", "", "").expect_err("long").starts_with("blueprint:"));
        assert!(parse("", "", "yesterday", "").expect_err("time").starts_with("since:"));
        let error = parse("", "", "2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z").expect_err("order");
        assert!(error.contains("after"), "{error}");
    }

    #[test]
    fn matches_status_blueprint_and_creation_time() {
        let mut job = Job::new("flow".into(), "client".into(), "start".into(), json!({}), None);
        job.created_at = "2026-01-15T00:00:00Z".parse().expect("time");
        let filter = parse("pending", "flow", "2026-01-01T00:00:00Z", "2026-01-31T00:00:00Z").expect("filter");
        assert!(filter.matches(&job));
        job.status = JobStatus::Running;
        assert!(!filter.matches(&job));
        job.status = JobStatus::Pending;
        job.blueprint_name = "other".into();
        assert!(!filter.matches(&job));
        job.blueprint_name = "flow".into();
        job.created_at = "2026-02-15T00:00:00Z".parse().expect("time");
        assert!(!filter.matches(&job));
        assert!(filter.reaches_back_to(job.created_at));
        assert!(!filter.reaches_back_to("2025-12-31T00:00:00Z".parse().expect("time")));
    }
}
