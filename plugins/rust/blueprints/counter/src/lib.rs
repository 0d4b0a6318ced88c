//! `counter`: counts visits per page in data stores that outlive jobs, and
//! remembers who came last. No worker is involved.
//!
//! `POST /api/v1/jobs/counter {"page": "about", "name": "Ada"}` (`page`
//! defaults to `home`, `name` to `anonymous`) runs `count`, which adds 1 to
//! the page's counter in the store `visits`, reads the previous visitor from
//! the store `visitors` (key `last_visitor`) and replaces it with `name`.
//! Both stores are client-scoped ([`Store::for_client`]): page names and
//! visitor names are the client's input, so each client counts its own
//! pages and sees only its own previous visitor, never another client's. It
//! records `{"count": <the page's new count>, "previous_visitor": <name or
//! null>}` and ends the job `finished`. With `"reset": true`, the page's
//! counter is deleted first (so the count starts again at 1) and the history
//! also gets `{"deleted": <whether the counter existed>}`.
//!
//! A store error fails the handler, which the host retries.

use avtomatika_blueprint::{Blueprint, Describe, Job, Next, State, Store, json};

struct Counter;

impl Blueprint for Counter {
    fn describe() -> Describe {
        Describe::new("counter")
            .endpoint("v1", "/jobs/counter")
            .state(State::start("count").to(["finished"]))
            .state(State::finished("finished"))
    }

    fn handle(job: Job) -> Result<Next, String> {
        match job.state() {
            "count" => count(&job),
            other => Err(format!("counter has no handler for state {other}")),
        }
    }
}

fn count(job: &Job) -> Result<Next, String> {
    let input = job.initial_data();
    let page = input["page"].as_str().unwrap_or("home");
    let name = input["name"].as_str().unwrap_or("anonymous");
    // Two stores, so that no page name can collide with `last_visitor`;
    // per client, since both hold what the client sent.
    let visits = Store::for_client("visits");
    let visitors = Store::for_client("visitors");

    let mut history = json!({});
    if input["reset"] == true {
        history["deleted"] = json!(visits.delete(page)?);
    }
    history["count"] = json!(visits.increment(page, 1)?);
    history["previous_visitor"] = visitors.get("last_visitor")?.unwrap_or_default();
    visitors.set("last_visitor", &json!(name))?;

    Ok(Next::go_to("finished").with_history(history))
}

avtomatika_blueprint::export!(Counter);
