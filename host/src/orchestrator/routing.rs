//! Which worker gets a task. A registered worker *qualifies* when it meets
//! the task's requirements and cost cap (what it is, not what it is doing);
//! it *has room* when it reports `idle` and holds fewer tasks than the
//! `max_concurrent_tasks` it declared; a strategy picks among those that do
//! both.
//!
//! Worker records are read as both SDK generations send them:
//! `avtomatika-worker` 1.0b3 puts `max_concurrent_tasks` and `cost_per_skill`
//! at the top level, the `rxon`-based 1.0b5+ under `resources` and
//! `capabilities`.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::model::{Routing, Strategy, WorkerInfo, WorkerStatus};

/// Whether `worker` takes one more task now. Dispatch bumps the in-flight
/// count of the workers it read as it gives out a fan-out's branches.
pub(super) fn has_room(worker: &WorkerInfo) -> bool {
    worker.status == WorkerStatus::Idle && worker.max_concurrent_tasks.is_none_or(|max| worker.in_flight < max)
}

/// Why `worker` can never take a task of `task_type` routed by `routing`, or
/// `None` when it qualifies.
pub(super) fn unmet(worker: &WorkerInfo, task_type: &str, routing: &Routing) -> Option<String> {
    if let Some(requirements) = &routing.requirements {
        for (key, wanted) in requirements {
            if !meets(worker, key, wanted) {
                return Some(format!("{key} {}", describe(key, wanted)));
            }
        }
    }
    if let Some(max) = routing.max_cost {
        match cost(worker, task_type) {
            Some(cost) if cost <= max => {}
            _ => return Some(format!("max_cost {max}")),
        }
    }
    None
}

/// The index of the candidate `strategy` picks among the `qualified` ones
/// with room; `turn` is the round-robin counter's value (read only for that
/// strategy).
pub(super) fn choose(
    strategy: Strategy,
    task_type: &str,
    candidates: &[WorkerInfo],
    qualified: &[usize],
    turn: u64,
) -> Option<usize> {
    let mut open: Vec<usize> = qualified.iter().copied().filter(|&i| has_room(&candidates[i])).collect();
    if open.is_empty() {
        return None;
    }
    let price = |w: &WorkerInfo| cost(w, task_type).unwrap_or(f64::INFINITY);
    // The lowest key wins; ties go to the fewest tasks in flight, then the
    // worker id, so the choice is the same on every instance.
    let by = |key: &dyn Fn(&WorkerInfo) -> (f64, f64)| {
        open.iter().copied().min_by(|&a, &b| {
            let (a, b) = (&candidates[a], &candidates[b]);
            key(a)
                .partial_cmp(&key(b))
                .unwrap_or(Ordering::Equal)
                .then_with(|| a.in_flight.cmp(&b.in_flight))
                .then_with(|| a.worker_id.cmp(&b.worker_id))
        })
    };
    match strategy {
        Strategy::Default => by(&|w| (if is_hot(w, task_type) { 0.0 } else { 1.0 }, price(w))),
        Strategy::RoundRobin => {
            open.sort_by(|&a, &b| candidates[a].worker_id.cmp(&candidates[b].worker_id));
            let at = usize::try_from(turn % open.len() as u64).unwrap_or(0);
            open.get(at).copied()
        }
        Strategy::LeastConnections => by(&|w| (f64::from(w.in_flight), 0.0)),
        Strategy::Cheapest => by(&|w| (price(w), 0.0)),
        Strategy::BestValue => by(&|w| (if w.reputation > 0.0 { price(w) / w.reputation } else { f64::INFINITY }, 0.0)),
    }
}

/// The worker's cost for a task of `task_type`: its `cost_per_skill` entry
/// for the type, else its `cost_per_second`. `None` when it names neither,
/// which no cost cap accepts and every cheaper worker beats.
pub(super) fn cost(worker: &WorkerInfo, task_type: &str) -> Option<f64> {
    let per_skill = |holder: &Map<String, Value>| holder.get("cost_per_skill")?.get(task_type)?.as_f64();
    let per_second = |holder: &Map<String, Value>| holder.get("cost_per_second")?.as_f64();
    let capabilities = worker.extra.get("capabilities").and_then(Value::as_object);
    capabilities
        .and_then(per_skill)
        .or_else(|| per_skill(&worker.extra))
        .or_else(|| capabilities.and_then(per_second))
        .or_else(|| per_second(&worker.extra))
}

/// Whether the worker's `hot_cache` (the models or task types it holds warm,
/// from its heartbeats) or `hot_skills` names the task type.
fn is_hot(worker: &WorkerInfo, task_type: &str) -> bool {
    ["hot_cache", "hot_skills"].iter().any(|key| {
        worker.extra.get(*key).and_then(Value::as_array).is_some_and(|names| {
            names.iter().any(|name| {
                name.as_str() == Some(task_type) || name.get("name").and_then(Value::as_str) == Some(task_type)
            })
        })
    })
}

/// A field the worker registered: at the top level, else under `resources`,
/// `capabilities` or `capabilities.extra`.
fn field<'a>(worker: &'a WorkerInfo, key: &str) -> Option<&'a Value> {
    let nested = |path: &[&str]| {
        let mut at = worker.extra.get(path[0])?;
        for step in &path[1..] {
            at = at.get(step)?;
        }
        at.get(key)
    };
    worker
        .extra
        .get(key)
        .or_else(|| nested(&["resources"]))
        .or_else(|| nested(&["capabilities"]))
        .or_else(|| nested(&["capabilities", "extra"]))
        .filter(|value| !value.is_null())
}

fn meets(worker: &WorkerInfo, key: &str, wanted: &Value) -> bool {
    match key {
        "gpu_info" => {
            let Some(gpu) = field(worker, "gpu_info").filter(|gpu| gpu.is_object()) else { return false };
            let model_ok = match wanted.get("model").and_then(Value::as_str) {
                Some(model) => gpu
                    .get("model")
                    .and_then(Value::as_str)
                    .is_some_and(|have| have.to_lowercase().contains(&model.to_lowercase())),
                None => true,
            };
            let vram_ok = match wanted.get("vram_gb").and_then(Value::as_f64) {
                Some(vram) => gpu.get("vram_gb").and_then(Value::as_f64).is_some_and(|have| have >= vram),
                None => true,
            };
            model_ok && vram_ok
        }
        "cpu_cores" => match (field(worker, "cpu_cores").and_then(Value::as_f64), wanted.as_f64()) {
            (Some(have), Some(want)) => have >= want,
            _ => false,
        },
        "installed_models" => {
            let have: Vec<&str> = field(worker, "installed_models")
                .and_then(Value::as_array)
                .map(|models| models.iter().filter_map(model_name).collect())
                .unwrap_or_default();
            wanted
                .as_array()
                .is_some_and(|wanted| wanted.iter().all(|m| model_name(m).is_some_and(|m| have.contains(&m))))
        }
        "installed_software" => {
            let have = field(worker, "installed_software").and_then(Value::as_object);
            let Some(wanted) = wanted.as_object() else { return false };
            wanted.iter().all(|(name, version)| {
                let Some(installed) = have.and_then(|have| have.get(name)) else { return false };
                match version.as_str().filter(|v| !v.is_empty() && *v != "any") {
                    None if version.is_null() || version.is_string() => true,
                    Some(version) => installed.as_str().is_some_and(|have| version_at_least(have, version)),
                    None => false,
                }
            })
        }
        other => field(worker, other) == Some(wanted),
    }
}

/// A model's name: the entry itself, or its `name`.
fn model_name(model: &Value) -> Option<&str> {
    model.as_str().or_else(|| model.get("name")?.as_str())
}

/// Whether dotted version `have` is at least `want` (`3.10` ≥ `3.9`);
/// numeric parts compare as numbers, others as text, a missing part as 0.
fn version_at_least(have: &str, want: &str) -> bool {
    let parts =
        |v: &str| v.trim().trim_start_matches('v').split(['.', '-', '+']).map(str::to_owned).collect::<Vec<_>>();
    let (have, want) = (parts(have), parts(want));
    for i in 0..have.len().max(want.len()) {
        let a = have.get(i).map_or("0", String::as_str);
        let b = want.get(i).map_or("0", String::as_str);
        let order = match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(a), Ok(b)) => a.cmp(&b),
            _ => a.cmp(b),
        };
        if order != Ordering::Equal {
            return order == Ordering::Greater;
        }
    }
    true
}

/// The requirement as a reader would state it, for error messages.
fn describe(key: &str, wanted: &Value) -> String {
    match key {
        "gpu_info" => {
            let mut parts = Vec::new();
            if let Some(model) = wanted.get("model").and_then(Value::as_str) {
                parts.push(format!("model containing {model:?}"));
            }
            if let Some(vram) = wanted.get("vram_gb") {
                parts.push(format!("vram_gb >= {vram}"));
            }
            if parts.is_empty() { "present".to_owned() } else { parts.join(", ") }
        }
        "cpu_cores" => format!(">= {wanted}"),
        "installed_models" | "installed_software" => format!("includes {wanted}"),
        _ => format!("= {wanted}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::WorkerRegistration;

    fn worker(id: &str, body: Value) -> WorkerInfo {
        let mut body = body;
        body["worker_id"] = json!(id);
        let registration: WorkerRegistration = serde_json::from_value(body).unwrap();
        WorkerInfo::from_registration(id.to_owned(), registration)
    }

    /// As `avtomatika-worker` 1.0b3 registers.
    fn b3(id: &str, gpu: Value, cost: f64) -> WorkerInfo {
        worker(
            id,
            json!({
                "worker_type": "gpu", "supported_tasks": ["render"], "max_concurrent_tasks": 2,
                "cost_per_skill": {"render": cost}, "installed_models": [{"name": "sdxl", "version": "1"}],
                "resources": {"cpu_cores": 8, "gpu_info": gpu}
            }),
        )
    }

    /// As the `rxon`-based 1.0b5 registers.
    fn b5(id: &str, gpu: Value, cost: f64) -> WorkerInfo {
        worker(
            id,
            json!({
                "worker_type": "gpu", "supported_tasks": ["render"],
                "resources": {"max_concurrent_tasks": 1, "cpu_cores": 4, "gpu_info": gpu},
                "installed_software": {"ffmpeg": "6.1"}, "installed_models": [{"name": "whisper", "version": "3"}],
                "capabilities": {"hostname": "h", "cost_per_skill": {"render": cost}, "extra": null}
            }),
        )
    }

    fn routing(requirements: Value) -> Routing {
        Routing { requirements: requirements.as_object().cloned(), ..Routing::default() }
    }

    #[test]
    fn requirements_read_both_sdk_generations() {
        let rtx = json!({"model": "NVIDIA RTX 4090", "vram_gb": 24});
        let (old, new) = (b3("old", rtx.clone(), 1.0), b5("new", rtx, 2.0));
        let cpu = b3("cpu", Value::Null, 0.1);
        let needs = routing(json!({"gpu_info": {"model": "rtx", "vram_gb": 16}}));
        assert_eq!(unmet(&old, "render", &needs), None);
        assert_eq!(unmet(&new, "render", &needs), None);
        assert_eq!(unmet(&cpu, "render", &needs).as_deref(), Some(r#"gpu_info model containing "rtx", vram_gb >= 16"#));
        let too_much = routing(json!({"gpu_info": {"vram_gb": 48}}));
        assert!(unmet(&old, "render", &too_much).is_some());
        assert_eq!(unmet(&old, "render", &routing(json!({"cpu_cores": 8}))), None);
        assert!(unmet(&new, "render", &routing(json!({"cpu_cores": 8}))).is_some());
        assert_eq!(unmet(&old, "render", &routing(json!({"installed_models": ["sdxl"]}))), None);
        assert!(unmet(&old, "render", &routing(json!({"installed_models": ["sdxl", "whisper"]}))).is_some());
        assert_eq!(unmet(&new, "render", &routing(json!({"installed_software": {"ffmpeg": "6.0"}}))), None);
        assert_eq!(unmet(&new, "render", &routing(json!({"installed_software": {"ffmpeg": null}}))), None);
        assert!(unmet(&new, "render", &routing(json!({"installed_software": {"ffmpeg": "6.2"}}))).is_some());
        assert!(unmet(&old, "render", &routing(json!({"installed_software": {"ffmpeg": "1"}}))).is_some());
        // Unknown keys: equality with what the worker registered, wherever it put it.
        assert_eq!(unmet(&new, "render", &routing(json!({"hostname": "h"}))), None);
        assert!(unmet(&new, "render", &routing(json!({"hostname": "x"}))).is_some());
        assert!(unmet(&new, "render", &routing(json!({"region": "eu"}))).is_some());
    }

    #[test]
    fn cost_comes_per_skill_then_per_second_and_caps_exclude_the_unknown() {
        let w = b5("w", Value::Null, 0.5);
        assert_eq!(cost(&w, "render"), Some(0.5));
        assert_eq!(cost(&w, "other"), None);
        let per_second = worker("s", json!({"supported_tasks": ["render"], "cost_per_second": 0.02}));
        assert_eq!(cost(&per_second, "render"), Some(0.02));
        let capped = Routing { max_cost: Some(0.4), ..Routing::default() };
        assert_eq!(unmet(&w, "render", &capped).as_deref(), Some("max_cost 0.4"));
        assert_eq!(unmet(&per_second, "render", &capped), None);
        assert!(unmet(&w, "other", &capped).is_some(), "a worker with no cost for the task never passes a cap");
    }

    fn pick(strategy: Strategy, candidates: &[WorkerInfo], turn: u64) -> Option<&str> {
        let all: Vec<usize> = (0..candidates.len()).collect();
        choose(strategy, "render", candidates, &all, turn).map(|i| candidates[i].worker_id.as_str())
    }

    #[test]
    fn strategies_pick_as_documented() {
        let mut cheap = b3("cheap", Value::Null, 1.0);
        let mut dear = b3("dear", Value::Null, 3.0);
        let mut mid = b5("mid", Value::Null, 2.0);
        cheap.in_flight = 1;
        let all = vec![cheap.clone(), dear.clone(), mid.clone()];
        assert_eq!(pick(Strategy::Cheapest, &all, 0), Some("cheap"));
        assert_eq!(pick(Strategy::Default, &all, 0), Some("cheap"));
        assert_eq!(pick(Strategy::LeastConnections, &all, 0), Some("dear"), "ties by id among 0 in flight");
        let order: Vec<_> = (0..4).filter_map(|turn| pick(Strategy::RoundRobin, &all, turn)).collect();
        assert_eq!(order, ["cheap", "dear", "mid", "cheap"]);
        // A warm cache beats price in the default strategy.
        dear.extra.insert("hot_cache".into(), json!(["render"]));
        assert_eq!(pick(Strategy::Default, &[cheap.clone(), dear.clone()], 0), Some("dear"));
        // Best value divides by reputation.
        cheap.reputation = 0.25;
        mid.reputation = 1.0;
        assert_eq!(pick(Strategy::BestValue, &[cheap.clone(), mid.clone()], 0), Some("mid"));
        cheap.reputation = 0.0;
        assert_eq!(pick(Strategy::BestValue, &[cheap.clone(), dear.clone()], 0), Some("dear"));
    }

    #[test]
    fn busy_and_full_workers_get_nothing() {
        let mut full = b5("full", Value::Null, 1.0);
        full.in_flight = 1;
        assert!(!has_room(&full), "1.0b5 declared max_concurrent_tasks 1 under resources");
        let mut busy = b3("busy", Value::Null, 1.0);
        busy.status = WorkerStatus::Busy;
        assert!(!has_room(&busy));
        assert_eq!(pick(Strategy::Default, &[full, busy], 0), None);
        let mut room = b3("room", Value::Null, 1.0);
        room.in_flight = 1;
        assert!(has_room(&room), "1.0b3 declared 2 at the top level");
    }

    #[test]
    fn versions_compare_by_number() {
        assert!(version_at_least("3.10", "3.9"));
        assert!(version_at_least("6.1", "6.1.0"));
        assert!(!version_at_least("6.1", "6.1.1"));
        assert!(version_at_least("v2", "1.9"));
    }
}
