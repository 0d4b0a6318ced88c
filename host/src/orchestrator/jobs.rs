//! Creating jobs and reading them back.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Map, Value};

use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::auth::Client;
use crate::model::{Job, JobId};
use crate::runtime::Blueprint;

impl Orchestrator {
    /// Creates a job of `blueprint` for `client` from a create request's body
    /// and queues it. The body is `{"initial_data": …, "webhook_url": …}`, or,
    /// when it has neither key, the initial data itself.
    pub async fn create_job(
        &self,
        client: &Client,
        blueprint: &Arc<Blueprint>,
        body: Value,
    ) -> OrchestratorResult<JobId> {
        let (initial_data, webhook_url) = split_create_body(body)?;
        self.charge_quota(client).await?;
        let job = Job::new(
            blueprint.name().to_owned(),
            client.name.clone(),
            blueprint.graph.start.clone(),
            initial_data,
            webhook_url,
        );
        self.storage.create_job(&job).await?;
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

fn split_create_body(body: Value) -> OrchestratorResult<(Value, Option<String>)> {
    let mut object = match body {
        Value::Object(object) => object,
        Value::Null => Map::new(),
        other => {
            return Err(OrchestratorError::BadRequest(format!("the request body must be a JSON object, got {other}")));
        }
    };
    if !object.contains_key("initial_data") && !object.contains_key("webhook_url") {
        return Ok((Value::Object(object), None));
    }
    let webhook_url = match object.remove("webhook_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) if url.starts_with("http://") || url.starts_with("https://") => Some(url),
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
    Ok((initial_data, webhook_url))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn create_bodies_are_read_like_the_python_orchestrator() {
        let (data, hook) = split_create_body(json!({"name": "Ada"})).unwrap();
        assert_eq!((data, hook), (json!({"name": "Ada"}), None));

        let (data, hook) =
            split_create_body(json!({"initial_data": {"name": "Ada"}, "webhook_url": "http://x/y"})).unwrap();
        assert_eq!((data, hook.as_deref()), (json!({"name": "Ada"}), Some("http://x/y")));

        let (data, _) = split_create_body(json!({"webhook_url": null})).unwrap();
        assert_eq!(data, json!({}));
        assert_eq!(split_create_body(Value::Null).unwrap().0, json!({}));

        assert!(split_create_body(json!([1, 2])).is_err());
        assert!(split_create_body(json!({"initial_data": 5})).is_err());
        assert!(split_create_body(json!({"webhook_url": "ftp://x"})).is_err());
    }
}
