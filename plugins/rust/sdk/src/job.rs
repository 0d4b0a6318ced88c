//! The job a handler runs for, with its JSON documents parsed.

use serde_json::Value;

use crate::bindings::avtomatika::blueprint::types::JobContext;

/// Who created the job.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client's identifier from the server's configuration.
    pub name: String,
    /// The client's tariff plan, if configured.
    pub plan: Option<String>,
    /// The client's other configured fields (a JSON object).
    pub params: Value,
}

/// The job whose current state's handler is running.
#[derive(Debug, Clone)]
pub struct Job {
    id: String,
    blueprint: String,
    state: String,
    initial_data: Value,
    history: Value,
    client: Client,
}

impl Job {
    pub(crate) fn from_wit(context: JobContext) -> Result<Self, String> {
        let parse = |what: &str, text: &str| {
            serde_json::from_str::<Value>(text).map_err(|e| format!("host sent invalid {what} JSON: {e}"))
        };
        Ok(Self {
            initial_data: parse("initial-data", &context.initial_data)?,
            history: parse("state-history", &context.state_history)?,
            client: Client {
                params: parse("client params", &context.client.params)?,
                name: context.client.name,
                plan: context.client.plan,
            },
            id: context.job_id,
            blueprint: context.blueprint,
            state: context.current_state,
        })
    }

    /// The job id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The blueprint's name.
    pub fn blueprint(&self) -> &str {
        &self.blueprint
    }

    /// The state whose handler is running.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// The data the job was created with (a JSON object).
    pub fn initial_data(&self) -> &Value {
        &self.initial_data
    }

    /// The state history: worker results' `data` and earlier handlers'
    /// history updates, merged (a JSON object).
    pub fn history(&self) -> &Value {
        &self.history
    }

    /// Who created the job.
    pub fn client(&self) -> &Client {
        &self.client
    }
}
