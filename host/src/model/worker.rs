//! Workers as the registry knows them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Limits;

/// The fields of [`WorkerInfo`] the host owns. A worker's body may not set
/// them through `extra`: they would be serialised twice into one record,
/// which Redis storage then cannot read back, and clients would see a
/// worker's forged `worker_id` or `in_flight` beside the real one.
const HOST_OWNED: [&str; 8] = [
    "worker_id",
    "worker_type",
    "supported_tasks",
    "max_concurrent_tasks",
    "status",
    "load",
    "in_flight",
    "reputation",
];

fn drop_host_owned(extra: &mut Map<String, Value>) {
    for key in HOST_OWNED {
        extra.remove(key);
    }
}

/// Refuses a task list longer than `WORKER_MAX_SUPPORTED_TASKS` or holding a
/// name over `MAX_NAME_BYTES`: each type becomes an index entry in storage.
fn check_task_types(tasks: &[String], limits: &Limits) -> Result<(), String> {
    if tasks.len() > limits.worker_supported_tasks {
        return Err(format!(
            "supported_tasks lists {} task types; the limit is {} (WORKER_MAX_SUPPORTED_TASKS)",
            tasks.len(),
            limits.worker_supported_tasks
        ));
    }
    tasks.iter().try_for_each(|task| limits.check_name("a task type in supported_tasks", task))
}

/// The task types a worker of the newest `rxon` generation declares: the
/// names of its `supported_skills` (objects `{"name", "type", …}`), which
/// take the place of `supported_tasks` there.
fn skill_names(extra: &Map<String, Value>) -> Option<Vec<String>> {
    let skills = extra.get("supported_skills")?.as_array()?;
    let name = |skill: &Value| skill.get("name").or(Some(skill)).and_then(Value::as_str).map(str::to_owned);
    Some(skills.iter().filter_map(name).collect())
}

/// The body of `POST /_worker/workers/register`. Fields the SDK sends that the
/// orchestrator does not interpret are kept in `extra` and shown back as is.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RegistrationWire")]
pub struct WorkerRegistration {
    pub worker_id: Option<String>,
    pub worker_type: Option<String>,
    /// As sent, or the names of `supported_skills` where the worker sent
    /// none (the newest `rxon` SDKs).
    pub supported_tasks: Vec<String>,
    pub max_concurrent_tasks: Option<u32>,
    pub extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct RegistrationWire {
    worker_id: Option<String>,
    #[serde(default)]
    worker_type: Option<String>,
    #[serde(default)]
    supported_tasks: Vec<String>,
    #[serde(default)]
    max_concurrent_tasks: Option<u32>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl From<RegistrationWire> for WorkerRegistration {
    fn from(wire: RegistrationWire) -> Self {
        let supported_tasks = match skill_names(&wire.extra) {
            Some(names) if wire.supported_tasks.is_empty() => names,
            _ => wire.supported_tasks,
        };
        Self {
            worker_id: wire.worker_id,
            worker_type: wire.worker_type,
            supported_tasks,
            max_concurrent_tasks: wire.max_concurrent_tasks,
            extra: wire.extra,
        }
    }
}

/// The JSON body of a heartbeat `PATCH`: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "PatchWire")]
pub struct WorkerPatch {
    pub status: Option<WorkerStatus>,
    pub load: Option<f64>,
    /// As sent, or the names of `supported_skills` (which the newest SDKs
    /// send when their skills changed); `None`: unchanged.
    pub supported_tasks: Option<Vec<String>>,
    pub extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct PatchWire {
    status: Option<WorkerStatus>,
    load: Option<f64>,
    supported_tasks: Option<Vec<String>>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl From<PatchWire> for WorkerPatch {
    fn from(wire: PatchWire) -> Self {
        let supported_tasks = wire.supported_tasks.or_else(|| skill_names(&wire.extra));
        Self { status: wire.status, load: wire.load, supported_tasks, extra: wire.extra }
    }
}

/// What a worker says it is doing. Dispatch prefers `idle` workers; a status
/// the orchestrator does not know is kept and shown as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum WorkerStatus {
    #[default]
    Idle,
    Busy,
    Other(String),
}

impl WorkerStatus {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Other(status) => status,
        }
    }
}

impl From<String> for WorkerStatus {
    fn from(status: String) -> Self {
        match status.as_str() {
            "idle" => Self::Idle,
            "busy" => Self::Busy,
            _ => Self::Other(status),
        }
    }
}

impl From<&str> for WorkerStatus {
    fn from(status: &str) -> Self {
        Self::from(status.to_owned())
    }
}

impl From<WorkerStatus> for String {
    fn from(status: WorkerStatus) -> Self {
        match status {
            WorkerStatus::Other(status) => status,
            known => known.as_str().to_owned(),
        }
    }
}

/// A registered worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub worker_type: Option<String>,
    pub supported_tasks: Vec<String>,
    pub max_concurrent_tasks: Option<u32>,
    /// As the worker last reported.
    pub status: WorkerStatus,
    /// The load the worker last reported.
    pub load: f64,
    /// Tasks dispatched to this worker whose results have not arrived.
    pub in_flight: u32,
    /// The share of its recent results that succeeded (1.0 until it has
    /// any); kept by storage, see `WorkerRegistry::record_outcome`.
    #[serde(default = "full_reputation")]
    pub reputation: f64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn full_reputation() -> f64 {
    1.0
}

impl WorkerRegistration {
    /// Checks what the worker controls against `limits` (the worker id is
    /// checked where it is decided, since it may come from the token).
    pub fn check(&self, limits: &Limits) -> Result<(), String> {
        if let Some(worker_type) = &self.worker_type {
            limits.check_name("worker_type", worker_type)?;
        }
        check_task_types(&self.supported_tasks, limits)
    }
}

impl WorkerPatch {
    pub fn check(&self, limits: &Limits) -> Result<(), String> {
        if let Some(status) = &self.status {
            limits.check_name("status", status.as_str())?;
        }
        if let Some(tasks) = &self.supported_tasks {
            check_task_types(tasks, limits)?;
        }
        Ok(())
    }

    /// Whether the update changes nothing (`{}`): a ping.
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.load.is_none() && self.supported_tasks.is_none() && self.extra.is_empty()
    }
}

impl WorkerInfo {
    pub fn from_registration(worker_id: String, mut reg: WorkerRegistration) -> Self {
        drop_host_owned(&mut reg.extra);
        // The rxon-based SDKs (1.0b5+) declare it under `resources`.
        let declared = || {
            let max = reg.extra.get("resources")?.get("max_concurrent_tasks")?.as_u64()?;
            u32::try_from(max).ok()
        };
        let max_concurrent_tasks = reg.max_concurrent_tasks.or_else(declared);
        Self {
            worker_id,
            worker_type: reg.worker_type,
            supported_tasks: reg.supported_tasks,
            max_concurrent_tasks,
            status: WorkerStatus::Idle,
            load: 0.0,
            in_flight: 0,
            reputation: 1.0,
            extra: reg.extra,
        }
    }

    pub fn apply(&mut self, mut patch: WorkerPatch) {
        drop_host_owned(&mut patch.extra);
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
        self.status == WorkerStatus::Idle
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_worker_cannot_set_host_owned_fields_through_extra() {
        let reg: WorkerRegistration = serde_json::from_value(json!({
            "worker_id": "w", "supported_tasks": ["greet"], "in_flight": 99, "status": "forged",
            "load": 7, "hostname": "gpu-1"
        }))
        .unwrap();
        let mut info = WorkerInfo::from_registration("w".into(), reg);
        let patch: WorkerPatch =
            serde_json::from_value(json!({"worker_id": "other", "in_flight": 5, "region": "eu"})).unwrap();
        info.apply(patch);
        let encoded = serde_json::to_string(&info).unwrap();
        let decoded: WorkerInfo = serde_json::from_str(&encoded).expect("the record reads back");
        assert_eq!((decoded.worker_id.as_str(), decoded.in_flight, decoded.status.as_str()), ("w", 0, "idle"));
        assert_eq!(decoded.extra, json!({"hostname": "gpu-1", "region": "eu"}).as_object().unwrap().clone());
    }

    #[test]
    fn task_lists_and_names_are_bounded() {
        let limits = Limits { worker_supported_tasks: 2, name_bytes: 8, ..Limits::default() };
        let reg = |tasks: Value| -> WorkerRegistration {
            serde_json::from_value(json!({"worker_id": "w", "supported_tasks": tasks})).unwrap()
        };
        assert_eq!(reg(json!(["a", "b"])).check(&limits), Ok(()));
        assert!(reg(json!(["a", "b", "c"])).check(&limits).unwrap_err().contains("WORKER_MAX_SUPPORTED_TASKS"));
        assert!(reg(json!(["123456789"])).check(&limits).unwrap_err().contains("MAX_NAME_BYTES"));
        assert!(reg(json!([""])).check(&limits).is_err());
        assert!(reg(json!(["a\nb"])).check(&limits).unwrap_err().contains("control"));
        let patch: WorkerPatch = serde_json::from_value(json!({"supported_tasks": ["a", "b", "c"]})).unwrap();
        assert!(patch.check(&limits).is_err());
    }

    #[test]
    fn the_newest_sdks_declare_their_task_types_as_skills() {
        let reg: WorkerRegistration = serde_json::from_value(json!({
            "worker_id": "w", "supported_skills": [{"name": "greet", "type": "greet"}, {"name": "render"}],
        }))
        .unwrap();
        assert_eq!(reg.supported_tasks, ["greet", "render"]);
        let both: WorkerRegistration = serde_json::from_value(
            json!({"worker_id": "w", "supported_tasks": ["a"], "supported_skills": [{"name": "b"}]}),
        )
        .unwrap();
        assert_eq!(both.supported_tasks, ["a"], "supported_tasks wins where sent");
        let patch: WorkerPatch = serde_json::from_value(json!({"supported_skills": [{"name": "x"}]})).unwrap();
        assert_eq!(patch.supported_tasks.as_deref(), Some(&["x".to_owned()][..]));
        let unchanged: WorkerPatch = serde_json::from_value(json!({"status": "busy", "available_skills": []})).unwrap();
        assert_eq!(unchanged.supported_tasks, None);
    }

    #[test]
    fn skills_count_against_the_task_type_limit() {
        let limits = Limits { worker_supported_tasks: 2, ..Limits::default() };
        let skills: Vec<Value> = (0..3).map(|i| json!({"name": format!("s{i}")})).collect();
        let reg: WorkerRegistration =
            serde_json::from_value(json!({"worker_id": "w", "supported_skills": skills.clone()})).unwrap();
        assert!(reg.check(&limits).unwrap_err().contains("WORKER_MAX_SUPPORTED_TASKS"));
        let patch: WorkerPatch = serde_json::from_value(json!({"supported_skills": skills})).unwrap();
        assert!(patch.check(&limits).unwrap_err().contains("WORKER_MAX_SUPPORTED_TASKS"));
    }
}
