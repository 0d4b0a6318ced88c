// The `versioned` blueprint, built twice (`versioned-v1`, `versioned-v2`)
// with a different `VERSION`: two components with one name and endpoint
// (`POST /api/v1/jobs/versioned`) whose handlers say which one ran, for the
// host's versioning, reload and instance-pool tests.
//
// `start` moves to `finished`, or, with `initial_data.wait` true, dispatches a
// `work` task whose `success` leads to `after`, which moves to `finished`.
// The handler that moves to `finished` writes `{"ran_on": VERSION,
// "instance_calls": N}`, N counting the calls this instance has served: a
// pooled instance keeps counting, a fresh one always says 1. With
// `initial_data.hoard_mb` the start handler also keeps that many MiB alive in
// the instance (for the pool's memory-growth recycling).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use avtomatika_blueprint::{Blueprint, Describe, Job, Next, State, Task, json};

static CALLS: AtomicU32 = AtomicU32::new(0);
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

struct Versioned;

impl Blueprint for Versioned {
    fn describe() -> Describe {
        Describe::new("versioned")
            .endpoint("v1", "/jobs/versioned")
            .state(State::start("start").to(["after", "finished"]))
            .state(State::new("after").to(["finished"]))
            .state(State::finished("finished"))
    }

    fn handle(job: Job) -> Result<Next, String> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let done = || Next::go_to("finished").with_history(json!({ "ran_on": VERSION, "instance_calls": calls }));
        match job.state() {
            "start" => {
                if let Some(mb) = job.initial_data()["hoard_mb"].as_u64() {
                    let mut hoard = HOARD.lock().map_err(|_| "hoard lock poisoned".to_owned())?;
                    hoard.push(vec![1u8; (mb as usize) << 20]);
                }
                if job.initial_data()["wait"] == json!(true) {
                    Ok(Next::dispatch(Task::new("work", json!({})).on("success", "after")))
                } else {
                    Ok(done())
                }
            }
            "after" => Ok(done()),
            other => Err(format!("versioned has no handler for state {other}")),
        }
    }
}

avtomatika_blueprint::export!(Versioned);
