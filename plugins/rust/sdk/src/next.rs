//! What a handler answers: the job's next step.

use serde_json::Value;

use crate::bindings::avtomatika::blueprint::types::{self as wit, Action, Outcome};

pub use crate::bindings::avtomatika::blueprint::types::DispatchStrategy as Strategy;

/// Which worker may take a task and how long it may take: the `routing`
/// record of the WIT contract, where its rules are documented. The default
/// is any worker that takes the task type, the default strategy.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    strategy: Option<Strategy>,
    requirements: Option<Value>,
    max_cost: Option<f64>,
    timeout_seconds: Option<u32>,
}

impl Routing {
    fn into_wit(self) -> wit::Routing {
        wit::Routing {
            strategy: self.strategy.unwrap_or(Strategy::Default),
            resource_requirements: self.requirements.map(|r| r.to_string()),
            max_cost: self.max_cost,
            timeout_seconds: self.timeout_seconds,
        }
    }
}

/// The routing builders [`Task`] and [`Branch`] share.
macro_rules! routing_builders {
    () => {
        /// How the host chooses among the workers that qualify (default:
        /// warm cache first, then the cheapest).
        pub fn strategy(mut self, strategy: Strategy) -> Self {
            self.routing.strategy = Some(strategy);
            self
        }

        /// What the worker must have (a JSON object, e.g.
        /// `json!({"gpu_info": {"vram_gb": 16}})`); see the WIT `routing`
        /// record for the rules.
        pub fn requires(mut self, requirements: Value) -> Self {
            self.routing.requirements = Some(requirements);
            self
        }

        /// Only workers whose cost for the task is at most `max_cost`.
        pub fn max_cost(mut self, max_cost: f64) -> Self {
            self.routing.max_cost = Some(max_cost);
            self
        }

        /// Seconds the worker has for its result (overrides the server's
        /// `WORKER_TIMEOUT_SECONDS` for this task).
        pub fn timeout_seconds(mut self, seconds: u32) -> Self {
            self.routing.timeout_seconds = Some(seconds);
            self
        }
    };
}

/// A task for a remote worker.
#[derive(Debug, Clone)]
pub struct Task {
    task_type: String,
    params: Value,
    transitions: Vec<(String, String)>,
    priority: i32,
    routing: Routing,
}

impl Task {
    /// A task of `task_type` with `params` (a JSON object) and no transitions yet.
    pub fn new(task_type: impl Into<String>, params: Value) -> Self {
        Self { task_type: task_type.into(), params, transitions: Vec::new(), priority: 0, routing: Routing::default() }
    }

    routing_builders!();

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

/// One branch of a parallel step ([`Next::parallel`]): a task without
/// transitions, since every branch's result goes to the aggregator state.
#[derive(Debug, Clone)]
pub struct Branch {
    task_type: String,
    params: Value,
    priority: i32,
    routing: Routing,
}

impl Branch {
    /// A branch running a task of `task_type` with `params` (a JSON object).
    pub fn new(task_type: impl Into<String>, params: Value) -> Self {
        Self { task_type: task_type.into(), params, priority: 0, routing: Routing::default() }
    }

    routing_builders!();

    /// Higher runs sooner among one worker's queued tasks (default 0).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    fn into_wit(self) -> wit::Branch {
        wit::Branch {
            task_type: self.task_type,
            params: self.params.to_string(),
            priority: self.priority,
            routing: self.routing.into_wit(),
        }
    }
}

/// A question for a person ([`Next::await_approval`]) and the state each
/// possible decision leads to.
#[derive(Debug, Clone)]
pub struct Approval {
    message: String,
    transitions: Vec<(String, String)>,
}

impl Approval {
    /// Asks a person `message` (shown in the job's state), with no decisions yet.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), transitions: Vec::new() }
    }

    /// When the person decides `decision`, move the job to `state`. Declare
    /// at least one decision.
    pub fn on(mut self, decision: impl Into<String>, state: impl Into<String>) -> Self {
        self.transitions.push((decision.into(), state.into()));
        self
    }
}

/// Another blueprint to run as a child job ([`Next::run_blueprint`]) and the
/// state each of its endings leads to.
#[derive(Debug, Clone)]
pub struct ChildRun {
    blueprint: String,
    initial_data: Value,
    transitions: Vec<(String, String)>,
}

impl ChildRun {
    /// A child job of the loaded blueprint named `blueprint`, created with
    /// `initial_data` (a JSON object), with no transitions yet.
    pub fn new(blueprint: impl Into<String>, initial_data: Value) -> Self {
        Self { blueprint: blueprint.into(), initial_data, transitions: Vec::new() }
    }

    /// When the child ends with `status` (`finished`, `failed`, `cancelled`
    /// or `quarantined`), move the parent to `state`. A status without a
    /// transition fails the parent.
    pub fn on(mut self, status: impl Into<String>, state: impl Into<String>) -> Self {
        self.transitions.push((status.into(), state.into()));
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
    fn new(action: Action) -> Self {
        Self { action, history: None }
    }

    /// Move the job to `state` (an end state ends it).
    pub fn go_to(state: impl Into<String>) -> Self {
        Self::new(Action::GoTo(state.into()))
    }

    /// Hand `task` to a worker and wait for its result.
    pub fn dispatch(task: Task) -> Self {
        Self::new(Action::DispatchTask(wit::Task {
            task_type: task.task_type,
            params: task.params.to_string(),
            transitions: transitions(task.transitions),
            priority: task.priority,
            routing: task.routing.into_wit(),
        }))
    }

    /// Hand every branch to a worker at once, wait until each has a result
    /// (whatever its status), then move to `aggregate_into`, whose handler
    /// reads them all in [`Job::aggregation_results`](crate::Job::aggregation_results).
    /// `aggregate_into` must be among the current state's transitions, and
    /// there must be at least one branch.
    pub fn parallel(aggregate_into: impl Into<String>, branches: impl IntoIterator<Item = Branch>) -> Self {
        Self::new(Action::DispatchParallel(wit::Parallel {
            branches: branches.into_iter().map(Branch::into_wit).collect(),
            aggregate_into: aggregate_into.into(),
        }))
    }

    /// Wait until a person decides, through the job's
    /// [`approval path`](crate::Job::approval_path), then move to the state of
    /// their decision.
    pub fn await_approval(approval: Approval) -> Self {
        Self::new(Action::AwaitHumanApproval(wit::Approval {
            message: approval.message,
            transitions: transitions(approval.transitions),
        }))
    }

    /// Run `child` as a child job and wait for it to end; the next handler
    /// reads it in [`Job::child_result`](crate::Job::child_result).
    pub fn run_blueprint(child: ChildRun) -> Self {
        Self::new(Action::RunBlueprint(wit::ChildRun {
            blueprint: child.blueprint,
            initial_data: child.initial_data.to_string(),
            transitions: transitions(child.transitions),
        }))
    }

    /// End the job as `failed` with `message`.
    pub fn fail(message: impl Into<String>) -> Self {
        Self::new(Action::Fail(message.into()))
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

fn transitions(pairs: Vec<(String, String)>) -> Vec<wit::Transition> {
    pairs.into_iter().map(|(status, state)| wit::Transition { status, state }).collect()
}
