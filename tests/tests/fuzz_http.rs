//! Generated request bodies against the real server (proptest): every
//! route that reads a body answers anything with a clear `4xx` in the API's
//! error format, or a success, and never a `5xx`, a panic or a hang. The
//! bodies mix arbitrary bytes, arbitrary JSON and the routes' own shapes
//! with hostile values (huge numbers, control characters, nesting, wrong
//! types, host-owned worker fields).

use std::time::Duration;

use avtomatika_tests::{Answer, Auth, CLIENT_TOKEN, TestServer, WORKER_TOKEN, test_config};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// Cases per route: enough to reach every shape below several times, few
/// enough for CI (each case is one HTTP request).
const CASES: u32 = 300;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        "\\PC{0,24}".prop_map(Value::String),
        "[\\x00-\\x1f]{1,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// An object with some of `fields` set to generated values and maybe more.
fn shaped(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    (proptest::collection::vec((proptest::sample::select(fields), json_value()), 0..fields.len() + 2), json_value())
        .prop_map(|(pairs, extra)| {
            let mut object: Map<String, Value> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Value::Object(more) = extra {
                object.extend(more);
            }
            Value::Object(object)
        })
}

fn body(fields: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => shaped(fields).prop_map(|v| v.to_string()),
        1 => json_value().prop_map(|v| v.to_string()),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn check(answer: &Answer, route: &str, body: &str) -> Result<(), TestCaseError> {
    prop_assert!(answer.status < 500, "{route} answered {} to {body:?}: {}", answer.status, answer.text);
    if answer.status >= 400 {
        let error = serde_json::from_str::<Value>(&answer.text).ok().and_then(|v| v["error"].as_str().map(str::len));
        prop_assert!(error.is_some_and(|len| len > 0), "{route}: not the error format: {answer:?}");
    }
    Ok(())
}

/// Runs `CASES` generated bodies against `method path` with `auth`.
fn fuzz(
    server: &TestServer,
    runtime: &tokio::runtime::Handle,
    method: Method,
    path: impl Fn(&str) -> String,
    auth: Auth<'_>,
    fields: &'static [&'static str],
) {
    let mut runner =
        TestRunner::new(RunnerConfig { cases: CASES, failure_persistence: None, ..RunnerConfig::default() });
    let result = runner.run(&("[a-z0-9-]{1,10}", body(fields)), |(segment, body)| {
        let path = path(&segment);
        let answer = runtime.block_on(server.send(method.clone(), &path, auth, Some(&body)));
        check(&answer, &path, &body)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn generated_bodies_get_clear_answers_on_every_route() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut config = test_config();
    config.worker_poll_timeout = Duration::from_millis(200);
    let server = runtime.block_on(TestServer::start_with(config));
    let handle = runtime.handle().clone();
    let worker = Auth::Worker(WORKER_TOKEN);
    let client = Auth::Client(CLIENT_TOKEN);

    fuzz(
        &server,
        &handle,
        Method::POST,
        |_| "/api/v1/jobs/hello".into(),
        client,
        &["initial_data", "webhook_url", "dispatch_timeout", "result_timeout", "name"],
    );
    fuzz(
        &server,
        &handle,
        Method::POST,
        |_| "/_worker/workers/register".into(),
        worker,
        &[
            "worker_id",
            "worker_type",
            "supported_tasks",
            "max_concurrent_tasks",
            "in_flight",
            "status",
            "load",
            "cost_per_skill",
            "resources",
            "hostname",
        ],
    );
    runtime.block_on(server.worker("fuzzed").register(&["greet"]));
    fuzz(
        &server,
        &handle,
        Method::PATCH,
        |_| "/_worker/workers/fuzzed".into(),
        worker,
        &["status", "load", "supported_tasks", "hot_cache", "worker_id", "in_flight"],
    );
    fuzz(
        &server,
        &handle,
        Method::POST,
        |_| "/_worker/tasks/result".into(),
        worker,
        &["job_id", "task_id", "worker_id", "result", "status", "data", "error"],
    );
    fuzz(&server, &handle, Method::POST, |id| format!("/_public/webhooks/approval/{id}"), Auth::None, &["decision"]);

    // Still serving, and still itself.
    let status = handle.block_on(server.send(Method::GET, "/_public/status", Auth::None, None));
    assert_eq!(status.status, 200);
    let workers = handle.block_on(server.send(Method::GET, "/api/v1/workers", client, None));
    assert_eq!(workers.status, 200, "{workers:?}");
    runtime.block_on(server.stop());
}
