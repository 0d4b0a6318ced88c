//! What a blueprint asks of the worker that gets a task: how to choose among
//! the workers that take it, what they must have, what they may cost, and
//! how long the task may take. Kept with the task record, so retries and a
//! task waiting for a worker are routed the same way.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How the host chooses among the live workers that take a task, meet its
/// requirements and have room for it (`routing.rs` in the orchestrator).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Workers whose `hot_cache` holds the task type first, then the cheapest.
    #[default]
    Default,
    /// In turn over the workers that qualify, across instances.
    RoundRobin,
    /// Fewest tasks in flight.
    LeastConnections,
    /// Lowest cost for the task.
    Cheapest,
    /// Lowest cost divided by reputation.
    BestValue,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::RoundRobin => "round_robin",
            Self::LeastConnections => "least_connections",
            Self::Cheapest => "cheapest",
            Self::BestValue => "best_value",
        }
    }
}

/// A task's routing. The default (any worker, default strategy, no cost cap,
/// `WORKER_TIMEOUT_SECONDS`) is what a task without routing gets.
///
/// Stored inside job records, which are encoded as MessagePack arrays:
/// fields are only ever appended, and never skipped when serialised.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    #[serde(default)]
    pub strategy: Strategy,
    /// Matched against what workers registered (see `orchestrator::routing`).
    #[serde(default)]
    pub requirements: Option<Map<String, Value>>,
    /// Only workers whose cost for the task is at most this.
    #[serde(default)]
    pub max_cost: Option<f64>,
    /// The result deadline, overriding `WORKER_TIMEOUT_SECONDS`.
    #[serde(default)]
    pub timeout_seconds: Option<u32>,
}

impl Routing {
    /// Whether any worker that takes the task type will do.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}
