//! `moderation`: holds a post until a person approves it, then publishes it
//! through a worker.
//!
//! `POST /api/v1/jobs/moderation {"title": "Hello", "body": "..."}` puts the
//! job in `review`, which waits for a person (the job's status becomes
//! `waiting_for_human`, asking "Publish post Hello?"). The person answers with
//! `POST /_public/webhooks/approval/{job_id} {"decision": "approved"}` or
//! `{"decision": "rejected"}`.
//!
//! - `approved` moves to `publish`, which dispatches a `publish` task with
//!   `{"title": ..., "body": ...}`; the worker's `success` ends the job
//!   `finished` (in `published`); a `failure` follows its error code.
//! - `rejected` moves to `reject`, which records `{"published": false}` and
//!   ends the job `finished` (in `rejected`): turning a post down is a normal
//!   outcome, not a failure.
//!
//! Initial data without a title fails the job at once.

use avtomatika_blueprint::{Approval, Blueprint, Describe, Job, Next, State, Task, json, log};

struct Moderation;

impl Blueprint for Moderation {
    fn describe() -> Describe {
        Describe::new("moderation")
            .endpoint("v1", "/jobs/moderation")
            .state(State::start("review").to(["publish", "reject"]))
            .state(State::new("publish").to(["published", "failed"]))
            .state(State::new("reject").to(["rejected"]))
            .state(State::finished("published"))
            .state(State::finished("rejected"))
            .state(State::failed("failed"))
    }

    fn handle(job: Job) -> Result<Next, String> {
        let post = job.initial_data();
        match job.state() {
            "review" => {
                let Some(title) = post["title"].as_str() else {
                    return Ok(Next::fail("the post has no title"));
                };
                log::info("post awaits review", &[("title", title), ("approval_path", &job.approval_path())]);
                Ok(Next::await_approval(
                    Approval::new(format!("Publish post {title}?")).on("approved", "publish").on("rejected", "reject"),
                ))
            }
            "publish" => Ok(Next::dispatch(
                Task::new("publish", json!({ "title": post["title"], "body": post["body"] }))
                    .on("success", "published")
                    .on("failure", "failed"),
            )),
            "reject" => Ok(Next::go_to("rejected").with_history(json!({ "published": false }))),
            other => Err(format!("moderation has no handler for state {other}")),
        }
    }
}

avtomatika_blueprint::export!(Moderation);
