//! `two_starts`: a blueprint with two start states, for the host's loader tests.
//!
//! `describe` is all that matters: the host must refuse the graph because a
//! new job could not know where to begin.

use avtomatika_blueprint::{Blueprint, Describe, Job, Next, State};

struct TwoStarts;

impl Blueprint for TwoStarts {
    fn describe() -> Describe {
        Describe::new("two_starts")
            .endpoint("v1", "/jobs/two_starts")
            .state(State::start("first").to(["finished"]))
            .state(State::start("second").to(["finished"]))
            .state(State::finished("finished"))
    }

    fn handle(_job: Job) -> Result<Next, String> {
        Ok(Next::go_to("finished"))
    }
}

avtomatika_blueprint::export!(TwoStarts);
