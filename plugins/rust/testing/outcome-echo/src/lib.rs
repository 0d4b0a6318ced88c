//! `outcome-echo`: answers every handler call with the outcome the job's
//! initial data spells out for the current state, so the host's tests can
//! send it any outcome a guest could return (tests/tests/guest_outcomes.rs).
//!
//! `initial_data.outcomes` maps a state name to one of:
//!
//! - `{"go_to": "<state>"}`;
//! - `{"dispatch": {"type", "params", "on": [[status, state], …], "priority"}}`;
//! - `{"parallel": {"into": "<state>", "branches": [{"type", "params", "priority"}, …]}}`;
//! - `{"approval": {"message", "on": [[decision, state], …]}}`;
//! - `{"child": {"blueprint", "initial_data", "on": [[status, state], …]}}`;
//! - `{"fail": "<message>"}`: ends the job `failed`;
//! - `{"error": "<message>"}`: a handler error;
//!
//! each with an optional `"history"` (any JSON, handed over as it is). A
//! state without an entry, or an entry this list does not cover, moves to
//! `finished`. Nothing is checked here: checking is the host's job.

use avtomatika_blueprint::{Approval, Blueprint, Branch, ChildRun, Describe, Job, Next, State, Task, Value};

struct OutcomeEcho;

impl Blueprint for OutcomeEcho {
    fn describe() -> Describe {
        // Some moves are declared and some are not, so generated outcomes
        // reach both.
        Describe::new("outcome-echo")
            .endpoint("v1", "/jobs/outcome-echo")
            .state(State::start("start").to(["a", "b", "finished", "failed"]))
            .state(State::new("a").to(["b", "start", "finished", "failed"]))
            .state(State::new("b").to(["a", "finished", "failed"]))
            .state(State::finished("finished"))
            .state(State::failed("failed"))
    }

    fn handle(job: Job) -> Result<Next, String> {
        let spelled = &job.initial_data()["outcomes"][job.state()];
        let next = match outcome(spelled)? {
            Some(next) => next,
            None => Next::go_to("finished"),
        };
        Ok(match spelled.get("history") {
            Some(history) => next.with_history(history.clone()),
            None => next,
        })
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn priority(value: &Value) -> i32 {
    value["priority"].as_i64().map_or(0, |p| p.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
}

/// The `[[status, state], …]` pairs of `value["on"]`.
fn pairs(value: &Value) -> Vec<(String, String)> {
    value["on"].as_array().into_iter().flatten().map(|pair| (text(&pair[0]), text(&pair[1]))).collect()
}

fn outcome(spelled: &Value) -> Result<Option<Next>, String> {
    if let Some(state) = spelled.get("go_to") {
        return Ok(Some(Next::go_to(text(state))));
    }
    if let Some(message) = spelled.get("fail") {
        return Ok(Some(Next::fail(text(message))));
    }
    if let Some(message) = spelled.get("error") {
        return Err(text(message));
    }
    if let Some(task) = spelled.get("dispatch") {
        let mut next = Task::new(text(&task["type"]), task["params"].clone()).priority(priority(task));
        for (status, state) in pairs(task) {
            next = next.on(status, state);
        }
        return Ok(Some(Next::dispatch(next)));
    }
    if let Some(parallel) = spelled.get("parallel") {
        let branches = parallel["branches"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|branch| Branch::new(text(&branch["type"]), branch["params"].clone()).priority(priority(&branch)));
        return Ok(Some(Next::parallel(text(&parallel["into"]), branches)));
    }
    if let Some(approval) = spelled.get("approval") {
        let mut next = Approval::new(text(&approval["message"]));
        for (decision, state) in pairs(approval) {
            next = next.on(decision, state);
        }
        return Ok(Some(Next::await_approval(next)));
    }
    if let Some(child) = spelled.get("child") {
        let mut next = ChildRun::new(text(&child["blueprint"]), child["initial_data"].clone());
        for (status, state) in pairs(child) {
            next = next.on(status, state);
        }
        return Ok(Some(Next::run_blueprint(next)));
    }
    Ok(None)
}

avtomatika_blueprint::export!(OutcomeEcho);
