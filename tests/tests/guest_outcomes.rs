//! Generated handler outcomes (proptest) from a real component: the
//! `outcome-echo` testing plugin answers each state with whatever outcome
//! the job's initial data spells out, so every action a guest can return —
//! moves to declared, undeclared, empty and end states, tasks and branches of
//! any type, params and priority, approvals and child runs with any
//! transitions, failures, handler errors, history updates of any JSON — comes
//! back to the host through the real WIT boundary. Whatever comes back:
//!
//! - every answer of the API is a success or a clear `4xx`, never a `5xx`;
//! - driven on (a worker answers every task, a person the first decision a
//!   wait offers, watcher rounds pass every deadline), the job and every
//!   child it started end, each in exactly one terminal status with exactly
//!   one terminal event in its history, and a job that did not finish says why;
//! - the server keeps serving.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use avtomatika::config::{Config, HistoryDatabase};
use avtomatika_tests::{Auth, CLIENT_TOKEN, TestServer, TestWorker, blueprints_dir, manual_watcher_config};
use chrono::{TimeDelta, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{Map, Value, json};

const CASES: u32 = 128;
const ECHO: &str = "/api/v1/jobs/outcome-echo";
const TERMINAL: [&str; 5] = ["finished", "failed", "cancelled", "error", "quarantined"];
const TERMINAL_EVENTS: [&str; 4] = ["job_finished", "job_failed", "job_cancelled", "job_quarantined"];
/// The task types the test's worker takes; others wait for a worker.
const TAKEN: [&str; 1] = ["greet"];

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => prop_oneof![Just("start"), Just("a"), Just("b"), Just("finished"), Just("failed")].prop_map(String::from),
        1 => prop_oneof![Just("nowhere"), Just(""), Just(" "), Just("a\0b")].prop_map(String::from),
        1 => "\\PC{0,12}",
    ]
}

fn status() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop_oneof![
            Just("success"), Just("failure"), Just("cancelled"), Just("needs_review"),
            Just("approved"), Just("finished"), Just("failed"), Just("quarantined"),
        ]
        .prop_map(String::from),
        1 => "\\PC{0,8}",
    ]
}

fn task_type() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("greet".to_owned()),
        1 => Just("nobody-takes-this".to_owned()),
        1 => Just(String::new()),
        1 => "\\PC{0,300}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(|f| json!(f)),
        "\\PC{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn params() -> impl Strategy<Value = Value> {
    prop_oneof![3 => Just(json!({"name": "Ada"})), 2 => json_value()]
}

fn pairs() -> impl Strategy<Value = Value> {
    proptest::collection::vec((status(), name()), 0..4)
        .prop_map(|pairs| Value::Array(pairs.into_iter().map(|(s, t)| json!([s, t])).collect()))
}

fn priority() -> impl Strategy<Value = Value> {
    prop_oneof![Just(json!(0)), any::<i32>().prop_map(|p| json!(p)), any::<i64>().prop_map(|p| json!(p))]
}

/// What a child run's initial data is: jobs that end on their own, or do
/// not make sense as initial data.
fn child_data() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        Just(json!({"name": "Ada"})),
        Just(json!({"outcomes": {"start": {"fail": "the child failed"}}})),
        Just(json!({"outcomes": {"start": {"error": "the child's handler erred"}}})),
        Just(
            json!({"outcomes": {"start": {"go_to": "a"}, "a": {"dispatch": {"type": "greet", "params": {}, "on": [["success", "finished"]]}}}})
        ),
        Just(json!([1, 2])),
        Just(Value::Null),
    ]
}

fn action() -> impl Strategy<Value = Value> {
    let branch =
        (task_type(), params(), priority()).prop_map(|(t, p, q)| json!({"type": t, "params": p, "priority": q}));
    let blueprint = prop_oneof![
        Just("outcome-echo".to_owned()),
        Just("hello".to_owned()),
        Just("no-such-blueprint".to_owned()),
        Just(String::new()),
    ];
    prop_oneof![
        3 => name().prop_map(|s| json!({"go_to": s})),
        3 => (task_type(), params(), pairs(), priority())
            .prop_map(|(t, p, on, q)| json!({"dispatch": {"type": t, "params": p, "on": on, "priority": q}})),
        2 => (name(), proptest::collection::vec(branch, 0..4))
            .prop_map(|(into, branches)| json!({"parallel": {"into": into, "branches": branches}})),
        2 => ("\\PC{0,40}", pairs()).prop_map(|(m, on)| json!({"approval": {"message": m, "on": on}})),
        2 => (blueprint, child_data(), pairs())
            .prop_map(|(b, d, on)| json!({"child": {"blueprint": b, "initial_data": d, "on": on}})),
        1 => "\\PC{0,40}".prop_map(|m| json!({"fail": m})),
        1 => "\\PC{0,40}".prop_map(|m| json!({"error": m})),
        1 => Just(json!({})),
    ]
}

fn outcome() -> impl Strategy<Value = Value> {
    let history = prop_oneof![
        3 => Just(None),
        2 => proptest::collection::btree_map("[a-z_]{1,8}", json_value(), 0..4)
            .prop_map(|m| Some(Value::Object(m.into_iter().collect()))),
        1 => json_value().prop_map(Some),
    ];
    (action(), history).prop_map(|(mut action, history)| {
        if let Some(history) = history {
            action["history"] = history;
        }
        action
    })
}

/// Outcomes for some of the states the plugin declares.
fn outcomes() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(prop_oneof![Just("start"), Just("a"), Just("b")], outcome(), 1..4)
        .prop_map(|m: BTreeMap<&str, Value>| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

struct Harness<'a> {
    server: &'a TestServer,
    worker: TestWorker<'a>,
}

impl Harness<'_> {
    async fn get(&self, path: &str) -> Result<Value, TestCaseError> {
        let answer = self.server.send(Method::GET, path, Auth::Client(CLIENT_TOKEN), None).await;
        if answer.status != 200 {
            return Err(fail(format!("GET {path} answered {}: {}", answer.status, answer.text)));
        }
        Ok(answer.json())
    }

    /// The job and every child it started, transitively.
    async fn family(&self, root: &str) -> Result<Vec<Value>, TestCaseError> {
        let mut ids = vec![root.to_owned()];
        let mut jobs = Vec::new();
        while let Some(id) = ids.pop() {
            let job = self.get(&format!("/api/v1/jobs/{id}")).await?;
            ids.extend(
                job["child_job_ids"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).map(String::from),
            );
            jobs.push(job);
        }
        Ok(jobs)
    }

    /// Answers every task with success and every approval wait with its
    /// first decision, with watcher rounds past every deadline when nothing
    /// moves, until the job and its children have ended.
    async fn settle(&self, root: &str) -> Result<Vec<Value>, TestCaseError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut idle = 0;
        loop {
            let family = self.family(root).await?;
            let open: Vec<&Value> = family.iter().filter(|job| !TERMINAL.iter().any(|t| job["status"] == *t)).collect();
            if open.is_empty() {
                return Ok(family);
            }
            if Instant::now() > deadline {
                return Err(fail(format!("jobs never ended: {open:#?}")));
            }
            let mut moved = false;
            for job in &open {
                if job["status"] == "waiting_for_human" {
                    let decision = job["approval"]["transitions"]
                        .as_object()
                        .and_then(|t| t.keys().next().cloned())
                        .unwrap_or_else(|| "anything".into());
                    let path = format!("/_public/webhooks/approval/{}", job["id"].as_str().unwrap_or_default());
                    let body = json!({"decision": decision}).to_string();
                    let answer = self.server.send(Method::POST, &path, Auth::None, Some(&body)).await;
                    if answer.status >= 500 {
                        return Err(fail(format!("approval answered {}: {}", answer.status, answer.text)));
                    }
                    moved = true;
                }
            }
            if let Some(task) = self.worker.poll().await {
                let (status, body) = self.worker.post_result(&task, json!({"status": "success", "data": {}})).await;
                if status >= 500 {
                    return Err(fail(format!("a result answered {status}: {body}")));
                }
                moved = true;
            }
            if !moved {
                idle += 1;
                if idle % 3 == 0 {
                    let at = Utc::now() + TimeDelta::days(1);
                    self.server.orchestrator.time_out_overdue(at).await.map_err(|e| fail(format!("watcher: {e}")))?;
                }
            }
        }
    }

    async fn one_terminal_event(&self, job: &Value) -> Result<(), TestCaseError> {
        let id = job["id"].as_str().unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.get(&format!("/api/v1/jobs/{id}/history")).await?;
            let ends = events
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| TERMINAL_EVENTS.iter().any(|t| e["event_type"] == *t))
                .count();
            match ends {
                1 => return Ok(()),
                0 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                n => return Err(fail(format!("{n} terminal events for {job:#}: {events:#}"))),
            }
        }
    }

    async fn case(&self, outcomes: Value) -> Result<(), TestCaseError> {
        let ping = self.worker.heartbeat(None).await;
        if ping.status != 200 {
            return Err(fail(format!("heartbeat: {ping:?}")));
        }
        let body = json!({
            "initial_data": {"outcomes": outcomes},
            "dispatch_timeout": 600,
            "result_timeout": 600,
        });
        let root = self.server.create_job(ECHO, body).await;
        for job in self.settle(&root).await? {
            let status = job["status"].as_str().unwrap_or_default();
            let reason = job["error_message"].as_str().unwrap_or_default();
            if status != "finished" && status != "cancelled" && reason.trim().is_empty() {
                return Err(fail(format!("a job ended {status} without saying why: {job:#}")));
            }
            self.one_terminal_event(&job).await?;
        }
        let answer = self.server.send(Method::GET, "/_public/status", Auth::None, None).await;
        if answer.status != 200 {
            return Err(fail(format!("the server stopped serving: {answer:?}")));
        }
        Ok(())
    }
}

fn config(dir: &std::path::Path) -> Config {
    Config {
        blueprints_dir: Some(dir.to_owned()),
        worker_poll_timeout: Duration::from_millis(150),
        job_max_retries: 1,
        history_database: Some(HistoryDatabase::Sqlite(dir.join("history.db"))),
        ..manual_watcher_config()
    }
}

#[test]
fn any_outcome_a_guest_returns_ends_its_job_cleanly() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = blueprints_dir(&[
        ("outcome_echo.wasm", avtomatika_plugins::OUTCOME_ECHO_COMPONENT),
        ("hello.wasm", avtomatika_plugins::HELLO_COMPONENT),
    ]);
    let server = runtime.block_on(TestServer::start_with(config(dir.path())));
    let harness = Harness { server: &server, worker: server.worker("echo-worker") };
    runtime.block_on(harness.worker.register(&TAKEN));

    let mut runner = TestRunner::new(RunnerConfig {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 128,
        ..RunnerConfig::default()
    });
    let result = runner.run(&outcomes(), |outcomes| runtime.block_on(harness.case(outcomes)));
    if let Err(e) = result {
        panic!("{e}");
    }
}
