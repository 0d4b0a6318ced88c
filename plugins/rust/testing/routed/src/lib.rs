//! `routed`: one task (or a fan-out of `branches` tasks) routed as the client
//! asks, for the host's routing tests. `POST /api/v1/jobs/routed` with
//! `{"task_type", "strategy", "requires", "max_cost", "timeout_seconds",
//! "branches"}` (all optional but `task_type`).

use avtomatika_blueprint::{Blueprint, Branch, Describe, Job, Next, State, Strategy, Task, Value, json};

struct Routed;

fn strategy(name: &str) -> Result<Strategy, String> {
    Ok(match name {
        "default" => Strategy::Default,
        "round_robin" => Strategy::RoundRobin,
        "least_connections" => Strategy::LeastConnections,
        "cheapest" => Strategy::Cheapest,
        "best_value" => Strategy::BestValue,
        other => return Err(format!("unknown strategy {other}")),
    })
}

/// Applies the routing the client asked for to a task or a branch.
macro_rules! route {
    ($task:expr, $input:expr) => {{
        let input: &Value = $input;
        let mut task = $task;
        if let Some(name) = input["strategy"].as_str() {
            task = task.strategy(strategy(name)?);
        }
        if !input["requires"].is_null() {
            task = task.requires(input["requires"].clone());
        }
        if let Some(max) = input["max_cost"].as_f64() {
            task = task.max_cost(max);
        }
        if let Some(seconds) = input["timeout_seconds"].as_u64() {
            task = task.timeout_seconds(u32::try_from(seconds).map_err(|e| e.to_string())?);
        }
        task
    }};
}

impl Blueprint for Routed {
    fn describe() -> Describe {
        Describe::new("routed")
            .endpoint("v1", "/jobs/routed")
            .state(State::start("start").to(["finished", "failed", "joined"]))
            .state(State::new("joined").to(["finished"]))
            .state(State::finished("finished"))
            .state(State::failed("failed"))
    }

    fn handle(job: Job) -> Result<Next, String> {
        let input = job.initial_data();
        let task_type = input["task_type"].as_str().unwrap_or("render").to_owned();
        match job.state() {
            "start" => match input["branches"].as_u64() {
                Some(n) => {
                    let mut branches = Vec::new();
                    for i in 0..n {
                        branches.push(route!(Branch::new(task_type.clone(), json!({ "i": i })), input));
                    }
                    Ok(Next::parallel("joined", branches))
                }
                None => Ok(Next::dispatch(
                    route!(Task::new(task_type, json!({})), input).on("success", "finished").on("failure", "failed"),
                )),
            },
            "joined" => Ok(Next::go_to("finished")),
            other => Err(format!("routed has no handler for state {other}")),
        }
    }
}

avtomatika_blueprint::export!(Routed);
