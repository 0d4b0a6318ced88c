//! What a handler answers: the job's next step.

use serde_json::Value;

use crate::bindings::avtomatika::blueprint::types::{self as wit, Action, Outcome};

/// A task for a remote worker.
#[derive(Debug, Clone)]
pub struct Task {
    task_type: String,
    params: Value,
    transitions: Vec<(String, String)>,
    priority: i32,
}

impl Task {
    /// A task of `task_type` with `params` (a JSON object) and no transitions yet.
    pub fn new(task_type: impl Into<String>, params: Value) -> Self {
        Self { task_type: task_type.into(), params, transitions: Vec::new(), priority: 0 }
    }

    /// When the worker answers with `status`, move the job to `state`.
    pub fn on(mut self, status: impl Into<String>, state: impl Into<String>) -> Self {
        self.transitions.push((status.into(), state.into()));
        self
    }

    /// Higher runs sooner among one worker's queued tasks (default 0).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
}

/// A handler's answer: one action and an optional history update.
#[derive(Debug, Clone)]
pub struct Next {
    action: Action,
    history: Option<Value>,
}

impl Next {
    /// Move the job to `state` (an end state ends it).
    pub fn go_to(state: impl Into<String>) -> Self {
        Self { action: Action::GoTo(state.into()), history: None }
    }

    /// Hand `task` to a worker and wait for its result.
    pub fn dispatch(task: Task) -> Self {
        let action = Action::DispatchTask(wit::Task {
            task_type: task.task_type,
            params: task.params.to_string(),
            transitions: task
                .transitions
                .into_iter()
                .map(|(status, state)| wit::Transition { status, state })
                .collect(),
            priority: task.priority,
        });
        Self { action, history: None }
    }

    /// End the job as `failed` with `message`.
    pub fn fail(message: impl Into<String>) -> Self {
        Self { action: Action::Fail(message.into()), history: None }
    }

    /// Also merge `update` (a JSON object) into the job's state history.
    pub fn with_history(mut self, update: Value) -> Self {
        self.history = Some(update);
        self
    }

    pub(crate) fn into_wit(self) -> Outcome {
        Outcome { action: self.action, state_history_update: self.history.map(|v| v.to_string()) }
    }
}
