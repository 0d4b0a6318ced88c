//! `bad_transition`: a blueprint whose start state leads to a state it never
//! declares, for the host's loader tests.
//!
//! The host must refuse it when loading, not when the first job gets there.

use avtomatika_blueprint::{Blueprint, Describe, Job, Next, State};

struct BadTransition;

impl Blueprint for BadTransition {
    fn describe() -> Describe {
        Describe::new("bad_transition")
            .endpoint("v1", "/jobs/bad_transition")
            .state(State::start("start").to(["missing"]))
            .state(State::finished("finished"))
    }

    fn handle(_job: Job) -> Result<Next, String> {
        Ok(Next::go_to("missing"))
    }
}

avtomatika_blueprint::export!(BadTransition);
