//! Creating jobs and reading them back.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::auth::Client;
use crate::history::{JobEvent, JobEventKind};
use crate::model::{Job, JobId, JobTimeouts};
use crate::runtime::Blueprint;
use crate::webhook::AddressPolicy;

impl Orchestrator {
    /// Creates a job of `blueprint` for `client` from a create request's body
    /// and queues it. The body is `{"initial_data": …, "webhook_url": …,
    /// "dispatch_timeout": s, "result_timeout": s}`, or, when it has neither
    /// `initial_data` nor `webhook_url`, the initial data itself.
    pub async fn create_job(
        &self,
        client: &Client,
        blueprint: &Arc<Blueprint>,
        body: Value,
    ) -> OrchestratorResult<JobId> {
        let CreateBody { initial_data, webhook_url, timeouts } = split_create_body(body, self.webhooks.policy())?;
        self.charge_quota(client).await?;
        let mut job = Job::new(
            blueprint.name().to_owned(),
            client.name.clone(),
            blueprint.graph.start.clone(),
            initial_data,
            webhook_url,
        );
        job.timeouts = timeouts;
        job.blueprint_version = Some(blueprint.version.clone());
        self.storage.create_job(&job).await?;
        self.metrics.job_created(blueprint.name());
        self.history.job(|| self.created_event(&job));
        tracing::debug!(job_id = %job.id, blueprint = blueprint.name(), client = %client.name, "job created");
        Ok(job.id)
    }

    /// The job `id` if it exists and belongs to `client`. Another client's job
    /// is reported as missing, so ids cannot be probed.
    pub async fn job_for(&self, client: &Client, id: &str) -> OrchestratorResult<Job> {
        let not_found = || OrchestratorError::NotFound(format!("job {id} not found"));
        let id: JobId = id.parse().map_err(|_| not_found())?;
        match self.storage.get_job(id).await? {
            Some(job) if job.client == client.name => Ok(job),
            _ => Err(not_found()),
        }
    }
}

impl Orchestrator {
    /// The history's record of `job`'s creation. The webhook URL is not
    /// copied (it may carry a token), only whether there is one.
    pub(super) fn created_event(&self, job: &Job) -> JobEvent {
        JobEvent::new(JobEventKind::JobCreated, job).context(json!({
            "initial_data": job.initial_data,
            "webhook": job.webhook_url.is_some(),
            "parent_job_id": job.parent_job_id,
            "dispatch_timeout_ms": job.timeouts.dispatch_timeout_ms,
            "result_timeout_ms": job.timeouts.result_timeout_ms,
        }))
    }

    /// Counts one job creation against the client's monthly quota, if it has one.
    async fn charge_quota(&self, client: &Client) -> OrchestratorResult<()> {
        let Some(limit) = client.monthly_attempts else { return Ok(()) };
        let period = Utc::now().with_timezone(&self.config.tz).format("%Y-%m").to_string();
        if self.storage.take_quota(&client.name, &period, limit).await? {
            return Ok(());
        }
        tracing::info!(client = %client.name, period, limit, "job refused: monthly quota used up");
        Err(OrchestratorError::QuotaExceeded(format!(
            "monthly quota of {limit} job creations is used up for {period}; it resets at the start of next month ({})",
            self.config.tz
        )))
    }
}

/// A create request's parts.
#[derive(Debug, PartialEq)]
struct CreateBody {
    initial_data: Value,
    webhook_url: Option<String>,
    timeouts: JobTimeouts,
}

/// Reads a create request's body; `policy` judges its `webhook_url`
/// (`WEBHOOK_ALLOWED_NETWORKS`).
fn split_create_body(body: Value, policy: &AddressPolicy) -> OrchestratorResult<CreateBody> {
    let mut object = match body {
        Value::Object(object) => object,
        Value::Null => Map::new(),
        other => {
            return Err(OrchestratorError::BadRequest(format!("the request body must be a JSON object, got {other}")));
        }
    };
    if !object.contains_key("initial_data") && !object.contains_key("webhook_url") {
        return Ok(CreateBody {
            initial_data: Value::Object(object),
            webhook_url: None,
            timeouts: JobTimeouts::default(),
        });
    }
    let timeouts = JobTimeouts {
        dispatch_timeout_ms: timeout_ms(object.remove("dispatch_timeout"), "dispatch_timeout")?,
        result_timeout_ms: timeout_ms(object.remove("result_timeout"), "result_timeout")?,
    };
    let webhook_url = match object.remove("webhook_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => {
            policy.check_url(&url).map_err(|problem| OrchestratorError::BadRequest(problem.to_string()))?;
            Some(url)
        }
        Some(other) => {
            return Err(OrchestratorError::BadRequest(format!("webhook_url must be an http(s) URL, got {other}")));
        }
    };
    let initial_data = match object.remove("initial_data") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(data @ Value::Object(_)) => data,
        Some(other) => {
            return Err(OrchestratorError::BadRequest(format!("initial_data must be a JSON object, got {other}")));
        }
    };
    Ok(CreateBody { initial_data, webhook_url, timeouts })
}

/// A timeout in seconds (fractions allowed) as milliseconds.
fn timeout_ms(value: Option<Value>, name: &str) -> OrchestratorResult<Option<u64>> {
    let seconds = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => None,
    };
    match seconds {
        Some(s) if s > 0.0 && s <= 365.0 * 86_400.0 => Ok(Some(((s * 1000.0).ceil()) as u64)),
        _ => Err(OrchestratorError::BadRequest(format!(
            "{name} must be a number of seconds greater than 0 and at most one year"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn split(body: Value) -> OrchestratorResult<CreateBody> {
        split_create_body(body, &AddressPolicy::default())
    }

    #[test]
    fn create_bodies_are_read_like_the_python_orchestrator() {
        let body = split(json!({"name": "Ada", "result_timeout": 5})).unwrap();
        assert_eq!(body.initial_data, json!({"name": "Ada", "result_timeout": 5}));
        assert_eq!((body.webhook_url, body.timeouts), (None, JobTimeouts::default()));

        let body = split(json!({"initial_data": {"name": "Ada"}, "webhook_url": "http://x/y"})).unwrap();
        assert_eq!((body.initial_data, body.webhook_url.as_deref()), (json!({"name": "Ada"}), Some("http://x/y")));

        let body = split(json!({"webhook_url": null})).unwrap();
        assert_eq!(body.initial_data, json!({}));
        assert_eq!(split(Value::Null).unwrap().initial_data, json!({}));

        let body = split(json!({"initial_data": {}, "dispatch_timeout": 0.25, "result_timeout": 30})).unwrap();
        assert_eq!(body.timeouts, JobTimeouts { dispatch_timeout_ms: Some(250), result_timeout_ms: Some(30_000) });
        for bad in [json!(0), json!(-1), json!("5"), json!(1e12)] {
            let err = split(json!({"initial_data": {}, "result_timeout": bad})).unwrap_err();
            assert!(err.to_string().contains("result_timeout"), "{err}");
        }

        assert!(split(json!([1, 2])).is_err());
        assert!(split(json!({"initial_data": 5})).is_err());
        assert!(split(json!({"webhook_url": "ftp://x"})).is_err());
        assert!(split(json!({"webhook_url": 5})).is_err());
    }

    #[test]
    fn webhook_urls_to_refused_addresses_are_a_bad_request_naming_the_rule() {
        let err = split(json!({"webhook_url": "http://169.254.169.254/latest/meta-data"})).unwrap_err();
        assert!(matches!(err, OrchestratorError::BadRequest(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "webhook_url: 169.254.169.254 is a link-local address; set WEBHOOK_ALLOWED_NETWORKS to allow it"
        );
        let allowed = AddressPolicy::new(&crate::webhook::parse_networks("10.0.0.0/8").unwrap());
        let body = split_create_body(json!({"webhook_url": "http://10.1.2.3/hook"}), &allowed).unwrap();
        assert_eq!(body.webhook_url.as_deref(), Some("http://10.1.2.3/hook"));
    }
}
