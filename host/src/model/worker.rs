//! Workers as the registry knows them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The body of `POST /_worker/workers/register`. Fields the SDK sends that the
/// orchestrator does not interpret are kept in `extra` and shown back as is.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerRegistration {
    pub worker_id: Option<String>,
    #[serde(default)]
    pub worker_type: Option<String>,
    #[serde(default)]
    pub supported_tasks: Vec<String>,
    #[serde(default)]
    pub max_concurrent_tasks: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The JSON body of a heartbeat `PATCH`: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WorkerPatch {
    pub status: Option<String>,
    pub load: Option<f64>,
    pub supported_tasks: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A registered worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub worker_type: Option<String>,
    pub supported_tasks: Vec<String>,
    pub max_concurrent_tasks: Option<u32>,
    /// `idle` or `busy`, as the worker last reported.
    pub status: String,
    /// The load the worker last reported.
    pub load: f64,
    /// Tasks dispatched to this worker whose results have not arrived.
    pub in_flight: u32,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl WorkerInfo {
    pub fn from_registration(worker_id: String, reg: WorkerRegistration) -> Self {
        Self {
            worker_id,
            worker_type: reg.worker_type,
            supported_tasks: reg.supported_tasks,
            max_concurrent_tasks: reg.max_concurrent_tasks,
            status: "idle".to_owned(),
            load: 0.0,
            in_flight: 0,
            extra: reg.extra,
        }
    }

    pub fn apply(&mut self, patch: WorkerPatch) {
        if let Some(status) = patch.status {
            self.status = status;
        }
        if let Some(load) = patch.load {
            self.load = load;
        }
        if let Some(tasks) = patch.supported_tasks {
            self.supported_tasks = tasks;
        }
        self.extra.extend(patch.extra);
    }

    pub fn is_idle(&self) -> bool {
        self.status == "idle"
    }
}
