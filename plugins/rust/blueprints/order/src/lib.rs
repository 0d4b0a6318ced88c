//! `order`: takes payment through the `payment` blueprint, run as a child job,
//! then ships the order through a worker.
//!
//! `POST /api/v1/jobs/order {"amount": 42.5, "address": "..."}` starts in
//! `pay`, which runs a `payment` child job with `{"amount": 42.5}` and waits
//! for it to end. When the child ends `finished`, `ship` records the child's
//! state history as `{"payment": {...}}` and dispatches a `ship` task with
//! `{"address": ..., "amount": ...}`; the worker's `success` ends the job
//! `finished` (in `shipped`); a `failure` follows its error code. When the child
//! ends `failed`, `quarantined` or `cancelled`, the order ends `failed` in
//! `cancelled`. Initial data without a numeric amount fails the job at once.

use avtomatika_blueprint::{Blueprint, ChildRun, Describe, Job, Next, State, Task, json};

struct Order;

impl Blueprint for Order {
    fn describe() -> Describe {
        Describe::new("order")
            .endpoint("v1", "/jobs/order")
            .state(State::start("pay").to(["ship", "cancelled"]))
            .state(State::new("ship").to(["shipped", "failed"]))
            .state(State::finished("shipped"))
            .state(State::failed("cancelled"))
            .state(State::failed("failed"))
    }

    fn handle(job: Job) -> Result<Next, String> {
        let order = job.initial_data();
        match job.state() {
            "pay" => {
                if !order["amount"].is_number() {
                    return Ok(Next::fail("the order has no numeric amount"));
                }
                Ok(Next::run_blueprint(
                    ChildRun::new("payment", json!({ "amount": order["amount"] }))
                        .on("finished", "ship")
                        .on("failed", "cancelled")
                        .on("quarantined", "cancelled")
                        .on("cancelled", "cancelled"),
                ))
            }
            "ship" => {
                let payment = job.child_result().ok_or("ship ran without the payment's result")?;
                Ok(Next::dispatch(
                    Task::new("ship", json!({ "address": order["address"], "amount": order["amount"] }))
                        .on("success", "shipped")
                        .on("failure", "failed"),
                )
                .with_history(json!({ "payment": payment["state_history"] })))
            }
            other => Err(format!("order has no handler for state {other}")),
        }
    }
}

avtomatika_blueprint::export!(Order);
