//! `misbehave`: a blueprint that breaks the rules on request, for the host's
//! sandbox tests.
//!
//! The start handler does what `initial_data.mode` asks:
//!
//! - `"loop"`: spins forever (the CPU time limit must stop it);
//! - `"bomb"`: allocates without bound (the memory limit must stop it);
//! - `"trap"`: panics, which aborts the instance with a wasm trap;
//! - `"error"`: returns a handler error;
//! - `"undeclared"`: moves to `nowhere`, a transition `describe` never declared;
//! - `"cycle"`: moves back to `start` forever (the transition limit must stop it);
//!
//! The next modes answer with an outcome that breaks the v1 contract; the host
//! must refuse to act on it (no task, wait or child job may come of it):
//!
//! - `"parallel-empty"`: `dispatch-parallel` with no branches, aggregating into
//!   the declared `collect`;
//! - `"parallel-undeclared"`: one `noop` branch aggregating into `nowhere`;
//! - `"approval-empty"`: `await-human-approval` with no decisions;
//! - `"approval-undeclared"`: decisions `approved` → `nowhere` and `rejected`
//!   → `failed` (only the first is wrong);
//! - `"child-unknown"`: `run-blueprint` of `no-such-blueprint`, which is not
//!   loaded, with `finished` → `finished` and `failed` → `failed`;
//! - `"child-undeclared"`: `run-blueprint` of `misbehave` itself (its default
//!   mode) with `finished` → `nowhere`.
//!
//! And the rest:
//!
//! - `"store-bad"`: `get`s key `key` from a store with an empty name; the
//!   host must answer with an error (not a trap), and the job fails with
//!   `store-bad: <the error's text>` (or with `store-bad: the host accepted an
//!   empty store name` if it did not);
//! - anything else, or no mode: moves to `finished` with `{"ok": true}` and
//!   the job's client (`name`, `plan`, `params`) in the history, so a test can
//!   check that a healthy call still works and what the handler was told.

use std::hint::black_box;

use avtomatika_blueprint::{Approval, Blueprint, Branch, ChildRun, Describe, Job, Next, State, Store, json};

const MIB: usize = 1 << 20;

struct Misbehave;

impl Blueprint for Misbehave {
    fn describe() -> Describe {
        Describe::new("misbehave")
            .endpoint("v1", "/jobs/misbehave")
            .state(State::start("start").to(["finished", "failed", "start", "collect"]))
            // Only a parallel step aggregates here, and the one `misbehave`
            // sends has no branches: the host must never run this handler.
            .state(State::new("collect").to(["finished"]))
            .state(State::finished("finished"))
            .state(State::failed("failed"))
    }

    fn handle(job: Job) -> Result<Next, String> {
        if job.state() != "start" {
            return Err(format!("misbehave has no handler for state {}", job.state()));
        }
        match job.initial_data()["mode"].as_str() {
            Some("loop") => spin(),
            Some("bomb") => hoard(),
            Some("trap") => panic!("misbehave: deliberate panic"),
            Some("error") => Err("misbehave: deliberate handler error".to_string()),
            Some("undeclared") => Ok(Next::go_to("nowhere")),
            Some("cycle") => Ok(Next::go_to("start")),
            Some("parallel-empty") => Ok(Next::parallel("collect", [])),
            Some("parallel-undeclared") => Ok(Next::parallel("nowhere", [Branch::new("noop", json!({}))])),
            Some("approval-empty") => Ok(Next::await_approval(Approval::new("misbehave: no decisions"))),
            Some("approval-undeclared") => Ok(Next::await_approval(
                Approval::new("misbehave: an undeclared decision").on("approved", "nowhere").on("rejected", "failed"),
            )),
            Some("child-unknown") => Ok(Next::run_blueprint(
                ChildRun::new("no-such-blueprint", json!({})).on("finished", "finished").on("failed", "failed"),
            )),
            Some("child-undeclared") => {
                Ok(Next::run_blueprint(ChildRun::new("misbehave", json!({})).on("finished", "nowhere")))
            }
            Some("store-bad") => Ok(match Store::named("").get("key") {
                Err(e) => Next::fail(format!("store-bad: {e}")),
                Ok(_) => Next::fail("store-bad: the host accepted an empty store name"),
            }),
            _ => {
                let client = job.client();
                Ok(Next::go_to("finished").with_history(json!({
                    "ok": true,
                    "client": { "name": client.name, "plan": client.plan, "params": client.params },
                })))
            }
        }
    }
}

/// Never returns. `black_box` hides the counter from the optimizer, so the
/// loop stays real work rather than a single idle branch it could reason about.
fn spin() -> ! {
    let mut count: u64 = 0;
    loop {
        count = black_box(count.wrapping_add(1));
    }
}

/// Never returns. The bytes are non-zero so every page is written (fresh
/// memory is already zero, so zeroed vectors might never touch it), and each
/// block goes through `black_box` so none of the allocations can be elided.
fn hoard() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(black_box(vec![0xA5; MIB]));
        black_box(&blocks);
    }
}

avtomatika_blueprint::export!(Misbehave);
