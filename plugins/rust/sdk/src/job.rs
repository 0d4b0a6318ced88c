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
    aggregation_results: Option<Value>,
    child_result: Option<Value>,
    webhook_url: Option<String>,
}

impl Job {
    pub(crate) fn from_wit(context: JobContext) -> Result<Self, String> {
        let parse = |what: &str, text: &str| {
            serde_json::from_str::<Value>(text).map_err(|e| format!("host sent invalid {what} JSON: {e}"))
        };
        Ok(Self {
            initial_data: parse("initial-data", &context.initial_data)?,
            history: parse("state-history", &context.state_history)?,
            aggregation_results: context
                .aggregation_results
                .map(|text| parse("aggregation-results", &text))
                .transpose()?,
            child_result: context.child_result.map(|text| parse("child-result", &text)).transpose()?,
            webhook_url: context.webhook_url,
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

    /// Every branch's result, in the handler of a parallel step's aggregator
    /// state ([`Next::parallel`](crate::Next::parallel)); `None` in any other
    /// handler.
    ///
    /// A JSON object keyed by each branch's task id, each entry
    /// `{"index": <position in the branch list>, "task_type": …, "status":
    /// "success" | "failure" | "cancelled" | <custom> | "timeout", "data": {…},
    /// "error": {"code", "message"} | null}`. Every branch is there, whatever
    /// its status: deciding what a failed branch means is this handler's job.
    pub fn aggregation_results(&self) -> Option<&Value> {
        self.aggregation_results.as_ref()
    }

    /// The child job as it ended, in the handler of the state a child run
    /// ([`Next::run_blueprint`](crate::Next::run_blueprint)) moved to; `None`
    /// in any other handler.
    ///
    /// A JSON object `{"job_id", "blueprint", "status", "error_message",
    /// "state_history"}`.
    pub fn child_result(&self) -> Option<&Value> {
        self.child_result.as_ref()
    }

    /// The URL the client asked to be notified at when the job ends, if any.
    pub fn webhook_url(&self) -> Option<&str> {
        self.webhook_url.as_deref()
    }

    /// The path (below the server's address) at which a person decides this
    /// job while it waits in [`Next::await_approval`](crate::Next::await_approval):
    /// `/_public/webhooks/approval/{job-id}`, posted `{"decision": "<name>"}`.
    /// A handler can hand it to a worker task that notifies the person, and
    /// send the job to the wait once that task succeeds.
    pub fn approval_path(&self) -> String {
        format!("/_public/webhooks/approval/{}", self.id())
    }
}
