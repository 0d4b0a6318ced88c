//! `pipeline`: fetches a document through one worker, measures it, and hands
//! the measurement to another.
//!
//! `POST /api/v1/jobs/pipeline {"url": "https://example.com"}` dispatches a
//! `fetch` task with `{"url": ...}`. The worker's `success` data (expected:
//! `{"content": "..."}`) joins the state history, and `transform` records the
//! content's length in characters, or fails the job if there is no content.
//! `publish` then dispatches a priority-5 `publish` task with `{"length": ...}`;
//! its `success` ends the job `finished`. A `failure` follows its error code.

use avtomatika_blueprint::{Blueprint, Describe, Job, Next, State, Task, json};

struct Pipeline;

impl Blueprint for Pipeline {
    fn describe() -> Describe {
        Describe::new("pipeline")
            .endpoint("v1", "/jobs/pipeline")
            .state(State::start("fetch").to(["transform", "failed"]))
            // `Next::fail` ends the job without a transition, so none is declared for it.
            .state(State::new("transform").to(["publish"]))
            .state(State::new("publish").to(["finished", "failed"]))
            .state(State::finished("finished"))
            .state(State::failed("failed"))
    }

    fn handle(job: Job) -> Result<Next, String> {
        match job.state() {
            "fetch" => Ok(Next::dispatch(
                Task::new("fetch", json!({ "url": job.initial_data()["url"] }))
                    .on("success", "transform")
                    .on("failure", "failed"),
            )),
            "transform" => Ok(match job.history()["content"].as_str() {
                Some(content) if !content.is_empty() => {
                    Next::go_to("publish").with_history(json!({ "length": content.chars().count() }))
                }
                _ => Next::fail("fetch returned no content"),
            }),
            "publish" => Ok(Next::dispatch(
                Task::new("publish", json!({ "length": job.history()["length"] }))
                    .on("success", "finished")
                    .on("failure", "failed")
                    .priority(5),
            )),
            other => Err(format!("pipeline has no handler for state {other}")),
        }
    }
}

avtomatika_blueprint::export!(Pipeline);
