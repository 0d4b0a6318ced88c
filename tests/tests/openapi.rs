//! The OpenAPI document (`GET /_public/openapi.json`) and the docs page
//! (`GET /_public/docs`): the document is OpenAPI 3.1 whose every `$ref`
//! resolves, documents exactly the routes this server serves (each
//! documented operation is answered by the route of that template, and no
//! route is registered outside the documented table), lists every error
//! response and token header, follows the loaded blueprints across a reload,
//! and the page is served from the binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use avtomatika::config::{Config, HistoryDatabase};
use avtomatika_plugins::{HELLO_COMPONENT, PIPELINE_COMPONENT};
use avtomatika_tests::s3::TestS3;
use avtomatika_tests::{Auth, CLIENT_TOKEN, TestServer, blueprints_dir, test_config};
use reqwest::Method;
use serde_json::Value;

/// The route label of every blueprint endpoint (`client::CREATE_ROUTE`).
const CREATE_ROUTE: &str = "/api/{version}/{endpoint}";
const METRICS: &str = "/_public/metrics";

async fn document(server: &TestServer) -> Value {
    let answer = server.send(Method::GET, "/_public/openapi.json", Auth::None, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()
}

/// Every `(METHOD, path)` the document lists.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    paths
        .iter()
        .flat_map(|(path, item)| {
            methods.iter().filter(|m| item.get(**m).is_some()).map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    &doc["paths"][path][method.to_lowercase()]
}

/// Request counts by route label, summed over status codes.
async fn counts(server: &TestServer) -> BTreeMap<String, f64> {
    let answer = server.send(Method::GET, METRICS, Auth::None, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let mut counts = BTreeMap::new();
    for line in answer.text.lines() {
        let Some(rest) = line.strip_prefix("avtomatika_http_requests_total{route=\"") else { continue };
        let Some((route, rest)) = rest.split_once('"') else { continue };
        let value: f64 = rest.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *counts.entry(route.to_owned()).or_default() += value;
    }
    counts
}

/// `path` with each `{param}` replaced by a dummy value.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map_or(rest.len(), |end| start + end + 1);
        out.push_str("dummy");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Sends each documented operation (no token, dummy parameters) and checks
/// the server counted it under that operation's route template and no
/// other: the router serves every documented route, as documented.
async fn assert_each_operation_is_routed_as_documented(server: &TestServer, doc: &Value) {
    let blueprint_endpoints: BTreeSet<String> = operations(doc)
        .into_iter()
        .filter(|(method, path)| method == "POST" && operation(doc, method, path)["tags"][0] == "blueprints")
        .map(|(_, path)| path)
        .collect();
    for (method, path) in operations(doc) {
        let blueprint = method == "POST" && blueprint_endpoints.contains(&path);
        let label = if blueprint { CREATE_ROUTE.to_owned() } else { path.clone() };
        let before = counts(server).await;
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let answer = server.send(method.clone(), &concrete(&path), Auth::None, None).await;
        let after = counts(server).await;
        // axum's template of the catch-all is `{*name}`, the document's `{name}`.
        let delta = |route: &str| {
            let count = |c: &BTreeMap<String, f64>| {
                c.iter().filter(|(r, _)| r.replace("{*", "{") == route).map(|(_, v)| v).sum::<f64>()
            };
            count(&after) - count(&before)
        };
        let expected = if label == METRICS { 2.0 } else { 1.0 };
        assert_eq!(delta(&label), expected, "{method} {path} was not answered by its route ({answer:?})");
        // `/` and `/ui` redirect to `/ui/`, which the client follows.
        let followed = if matches!(label.as_str(), "/" | "/ui") { "/ui/" } else { "" };
        for route in after.keys().chain(before.keys()) {
            let route = route.replace("{*", "{");
            if route != label && route != METRICS && route != followed {
                assert_eq!(delta(&route), 0.0, "{method} {path} was counted under {route}");
            }
        }
    }
}

/// Resolves a local `$ref` (`#/a/b`) in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                found.push(reference.clone());
            }
            map.values().for_each(|v| refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

fn assert_well_formed(doc: &Value) {
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.1."), "OpenAPI 3.1, not {version}");
    let mut found = Vec::new();
    refs(doc, &mut found);
    assert!(!found.is_empty());
    for reference in found {
        assert!(resolve(doc, &reference).is_some(), "$ref {reference} does not resolve");
    }

    // The one error body, one reusable response per status, and every
    // operation's error statuses refer to them.
    assert_eq!(doc["components"]["schemas"]["ErrorBody"]["required"], serde_json::json!(["error"]));
    let responses = doc["components"]["responses"].as_object().expect("response components");
    for name in [
        "BadRequest",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "MethodNotAllowed",
        "Conflict",
        "PayloadTooLarge",
        "Unprocessable",
        "TooManyRequests",
        "Internal",
        "Unavailable",
    ] {
        let schema = &responses[name]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(schema, "#/components/schemas/ErrorBody", "{name}");
    }
    for (method, path) in operations(doc) {
        let op = operation(doc, &method, &path);
        let statuses = op["responses"].as_object().expect("responses");
        for (status, response) in statuses {
            if status.starts_with('4') && status != "426" || status.starts_with('5') {
                let reference = response["$ref"].as_str().unwrap_or_default();
                assert!(
                    reference.starts_with("#/components/responses/"),
                    "{method} {path} {status} is not the shared error response: {response}"
                );
            }
        }
        // Each caller's token headers.
        let schemes: BTreeSet<&str> = op["security"]
            .as_array()
            .map(|list| list.iter().filter_map(|s| s.as_object()?.keys().next().map(String::as_str)).collect())
            .unwrap_or_default();
        if path.starts_with("/api/") {
            assert_eq!(schemes, BTreeSet::from(["client_token", "client_token_rxon"]), "{method} {path}");
            assert!(statuses.contains_key("401"), "{method} {path}");
        } else if path.starts_with("/_worker/") {
            assert_eq!(schemes, BTreeSet::from(["worker_token", "worker_access_token"]), "{method} {path}");
            assert!(statuses.contains_key("401"), "{method} {path}");
        } else {
            assert!(schemes.is_empty(), "{method} {path} needs no token");
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    for (scheme, header) in [
        ("client_token", "X-Avtomatika-Token"),
        ("client_token_rxon", "X-Client-Token"),
        ("worker_token", "X-Worker-Token"),
        ("worker_access_token", "X-Worker-Token"),
    ] {
        assert_eq!(schemes[scheme]["type"], "apiKey", "{scheme}");
        assert_eq!(schemes[scheme]["in"], "header", "{scheme}");
        assert_eq!(schemes[scheme]["name"], header, "{scheme}");
    }
}

/// The routes every server serves, as documented.
const ALWAYS: &[(&str, &str)] = &[
    ("GET", "/_public/status"),
    ("GET", "/_public/metrics"),
    ("POST", "/_public/webhooks/approval/{job_id}"),
    ("GET", "/_public/jobs/quarantined"),
    ("GET", "/_public/openapi.json"),
    ("GET", "/_public/docs"),
    ("GET", "/_public/docs/"),
    ("GET", "/_public/docs/{file}"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{job_id}"),
    ("POST", "/api/v1/jobs/{job_id}/cancel"),
    ("POST", "/api/v1/jobs/{job_id}/retry"),
    ("POST", "/api/v1/jobs/{job_id}/webhook"),
    ("GET", "/api/v1/dashboard"),
    ("POST", "/api/v1/admin/reload-workers"),
    ("POST", "/api/v1/admin/reload-blueprints"),
    ("GET", "/api/v1/schedules"),
    ("GET", "/api/v1/blueprints"),
    ("GET", "/api/v1/blueprints/{name}/graph"),
    ("GET", "/api/v1/workers"),
    ("POST", "/_worker/workers/register"),
    ("PATCH", "/_worker/workers/{worker_id}"),
    ("GET", "/_worker/workers/{worker_id}/tasks/next"),
    ("POST", "/_worker/tasks/result"),
    ("GET", "/_worker/workers/{worker_id}/jobs/{job_id}/tasks/{task_id}"),
    ("POST", "/_worker/auth/token"),
    ("GET", "/_worker/ws"),
    ("GET", "/_worker/ws/{worker_id}"),
    ("POST", "/_worker/events"),
    ("GET", "/"),
    ("GET", "/ui"),
    ("GET", "/ui/"),
    ("GET", "/ui/{file}"),
];
const HISTORY: (&str, &str) = ("GET", "/api/v1/jobs/{job_id}/history");
const FILES: &[(&str, &str)] = &[
    ("GET", "/api/v1/jobs/{job_id}/files"),
    ("GET", "/api/v1/jobs/{job_id}/files/{name}"),
    ("PUT", "/api/v1/jobs/{job_id}/files/{name}"),
];

fn owned(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect()
}

/// The documented operations less the blueprint endpoints.
fn fixed_operations(doc: &Value) -> BTreeSet<(String, String)> {
    operations(doc).into_iter().filter(|(m, p)| operation(doc, m, p)["tags"][0] != "blueprints").collect()
}

fn blueprint_operations(doc: &Value) -> BTreeMap<String, String> {
    operations(doc)
        .into_iter()
        .filter(|(m, p)| operation(doc, m, p)["tags"][0] == "blueprints")
        .map(|(m, p)| {
            assert_eq!(m, "POST");
            let id = operation(doc, &m, &p)["operationId"].as_str().unwrap_or_default().to_owned();
            (p, id)
        })
        .collect()
}

#[tokio::test]
async fn without_history_or_s3_the_document_lists_exactly_the_routes_served() {
    let dir = blueprints_dir(&[("hello.wasm", HELLO_COMPONENT)]);
    let server = TestServer::start_with(Config { blueprints_dir: Some(dir.path().to_owned()), ..test_config() }).await;
    let doc = document(&server).await;
    assert_well_formed(&doc);
    assert_eq!(fixed_operations(&doc), owned(ALWAYS));
    assert_eq!(
        blueprint_operations(&doc),
        BTreeMap::from([("/api/v1/jobs/hello".to_owned(), "create_job_hello".to_owned())])
    );
    assert_each_operation_is_routed_as_documented(&server, &doc).await;
    server.stop().await;
}

#[tokio::test]
async fn with_history_and_s3_their_routes_are_served_and_documented() {
    let s3 = TestS3::new().await;
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let dir = blueprints_dir(&[("hello.wasm", HELLO_COMPONENT)]);
    let config = Config {
        blueprints_dir: Some(dir.path().to_owned()),
        history_database: Some(HistoryDatabase::Sqlite(scratch.path().join("history.db"))),
        ..test_config()
    };
    let server = TestServer::start_with(s3.config(config)).await;
    let doc = document(&server).await;
    assert_well_formed(&doc);
    let mut expected = owned(ALWAYS);
    expected.extend(owned(&[HISTORY]));
    expected.extend(owned(FILES));
    assert_eq!(fixed_operations(&doc), expected);
    let name = &operation(&doc, "GET", "/api/v1/jobs/{job_id}/files/{name}")["parameters"][1];
    assert_eq!((name["name"].as_str(), name["in"].as_str()), (Some("name"), Some("path")), "{name}");
    assert_each_operation_is_routed_as_documented(&server, &doc).await;
    server.stop().await;
}

#[tokio::test]
async fn blueprint_operations_follow_a_reload() {
    let dir = blueprints_dir(&[("hello.wasm", HELLO_COMPONENT)]);
    let server = TestServer::start_with(Config { blueprints_dir: Some(dir.path().to_owned()), ..test_config() }).await;
    let before = blueprint_operations(&document(&server).await);
    assert_eq!(before.keys().collect::<Vec<_>>(), ["/api/v1/jobs/hello"]);

    replace(dir.path(), "hello.wasm", "pipeline.wasm", PIPELINE_COMPONENT);
    let answer = server.send(Method::POST, "/api/v1/admin/reload-blueprints", Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");

    let doc = document(&server).await;
    assert_well_formed(&doc);
    assert_eq!(
        blueprint_operations(&doc),
        BTreeMap::from([("/api/v1/jobs/pipeline".to_owned(), "create_job_pipeline".to_owned())])
    );
    let create = operation(&doc, "POST", "/api/v1/jobs/pipeline");
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreateJobBody"
    );
    assert_eq!(
        create["responses"]["202"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/JobAccepted"
    );
    server.stop().await;
}

fn replace(dir: &Path, old: &str, new: &str, source: &str) {
    std::fs::remove_file(dir.join(old)).unwrap_or_else(|e| panic!("removing {old}: {e}"));
    std::fs::copy(source, dir.join(new)).unwrap_or_else(|e| panic!("copying {source}: {e}"));
}

#[tokio::test]
async fn the_docs_page_is_served_from_the_binary() {
    let server = TestServer::start().await;
    for path in ["/_public/docs", "/_public/docs/", "/_public/docs/index.html"] {
        let page = server.send(Method::GET, path, Auth::None, None).await;
        assert_eq!(page.status, 200, "{path}: {page:?}");
        assert!(page.content_type.as_deref().is_some_and(|t| t.starts_with("text/html")), "{page:?}");
        assert!(page.text.contains(r#"<base href="/_public/docs/">"#), "{}", page.text);
        assert!(page.text.contains("swagger-ui-bundle.js"), "{}", page.text);
    }
    let init = server.send(Method::GET, "/_public/docs/swagger-initializer.js", Auth::None, None).await;
    assert_eq!(init.status, 200, "{init:?}");
    assert!(init.text.contains("/_public/openapi.json"), "the page reads this server's document: {}", init.text);
    for file in ["swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css", "index.css"] {
        let answer = server.send(Method::GET, &format!("/_public/docs/{file}"), Auth::None, None).await;
        assert_eq!(answer.status, 200, "{file}: {}", answer.status);
        assert!(answer.text.len() > 100, "{file}");
    }
    server.send(Method::GET, "/_public/docs/no-such-file.js", Auth::None, None).await.assert_error(404);
    server.stop().await;
}

/// The other direction: the router is built from the documented route table
/// alone, so a route cannot be served undocumented. The table lives in
/// `host/src/api/`; nothing there (or in the server around it) may add a
/// route the plain axum way.
#[test]
fn no_route_is_registered_outside_the_documented_table() {
    let host = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src");
    let mut files: Vec<_> = std::fs::read_dir(host.join("api"))
        .expect("host/src/api")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.extend([host.join("server.rs"), host.join("lib.rs"), host.join("ui").join("mod.rs")]);
    assert!(files.len() > 5, "{files:?}");
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let code = source.lines().filter(|line| !line.trim_start().starts_with("//"));
        for line in code {
            for forbidden in [".route(", ".route_service(", ".nest(", ".nest_service(", "axum::routing", "routing::{"] {
                assert!(
                    !line.contains(forbidden),
                    "{} calls {forbidden}: register routes with routes!() ({line})",
                    file.display()
                );
            }
        }
    }
}
