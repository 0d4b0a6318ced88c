//! `hello`: greets the name a client sends, through a worker.
//!
//! `POST /api/v1/jobs/hello {"name": "Ada"}` dispatches a `greet` task with
//! `{"name": "Ada"}`; the worker's `success` ends the job `finished`; a
//! `failure` follows its error code (retried, quarantined or failed).

use avtomatika_blueprint::{Blueprint, Describe, Job, Next, State, Task, json};

struct Hello;

impl Blueprint for Hello {
    fn describe() -> Describe {
        Describe::new("hello")
            .endpoint("v1", "/jobs/hello")
            .state(State::start("start").to(["finished", "failed"]))
            .state(State::finished("finished"))
            .state(State::failed("failed"))
    }

    fn handle(job: Job) -> Result<Next, String> {
        match job.state() {
            "start" => Ok(Next::dispatch(
                Task::new("greet", json!({ "name": job.initial_data()["name"] }))
                    .on("success", "finished")
                    .on("failure", "failed"),
            )),
            other => Err(format!("hello has no handler for state {other}")),
        }
    }
}

avtomatika_blueprint::export!(Hello);
