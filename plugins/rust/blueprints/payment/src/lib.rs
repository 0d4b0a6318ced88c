//! `payment`: charges an amount through a worker. It has no HTTP endpoint:
//! it runs only as a child job, e.g. of `order`.
//!
//! A parent starts it with `run-blueprint` and initial data `{"amount": 42.5}`.
//! `charge` dispatches a `charge` task with `{"amount": 42.5}`; the worker's
//! `success` ends the job `finished` (in `paid`), the custom status `declined`
//! (a card refused: an outcome, not an error) ends it `failed` (in
//! `declined`). A `failure` follows its error code like any task's (retried,
//! quarantined or failed by the host). The worker's result data joins the
//! state history, which the parent receives as the child's `state_history`.

use avtomatika_blueprint::{Blueprint, Describe, Job, Next, State, Task, json};

struct Payment;

impl Blueprint for Payment {
    fn describe() -> Describe {
        // No `.endpoint(...)`: clients cannot create payments directly.
        Describe::new("payment")
            .state(State::start("charge").to(["paid", "declined"]))
            .state(State::finished("paid"))
            .state(State::failed("declined"))
    }

    fn handle(job: Job) -> Result<Next, String> {
        match job.state() {
            "charge" => Ok(Next::dispatch(
                Task::new("charge", json!({ "amount": job.initial_data()["amount"] }))
                    .on("success", "paid")
                    .on("declined", "declined"),
            )),
            other => Err(format!("payment has no handler for state {other}")),
        }
    }
}

avtomatika_blueprint::export!(Payment);
