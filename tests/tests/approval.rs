//! Human approval through the real server and the `moderation` example: the
//! job waits in `waiting_for_human` until someone posts a decision to
//! `POST /_public/webhooks/approval/{job_id}` (no token), which moves it on.

use std::time::Duration;

use avtomatika_tests::config::Config;
use avtomatika_tests::{Answer, Auth, CLIENT_TOKEN, TestServer, WORKER_TOKEN, test_config};
use reqwest::Method;
use serde_json::{Value, json};

const MODERATION: &str = "/api/v1/jobs/moderation";
const WAIT: Duration = Duration::from_secs(30);
const TITLE: &str = "Hello";
const BODY: &str = "a post body that is nobody else's business";

fn config() -> Config {
    Config { worker_poll_timeout: Duration::from_secs(1), ..test_config() }
}

fn approval_path(job_id: &str) -> String {
    format!("/_public/webhooks/approval/{job_id}")
}

/// Posts a raw body to the approval route, without any token.
async fn decide_raw(server: &TestServer, job_id: &str, body: &str) -> Answer {
    server.send(Method::POST, &approval_path(job_id), Auth::None, Some(body)).await
}

async fn decide(server: &TestServer, job_id: &str, decision: &str) -> Answer {
    decide_raw(server, job_id, &json!({"decision": decision}).to_string()).await
}

/// Creates a moderation job and waits until it asks for a decision.
async fn awaiting_review(server: &TestServer) -> (String, Value) {
    let job_id = server.create_job(MODERATION, json!({"title": TITLE, "body": BODY})).await;
    let job = server.wait_for(&job_id, WAIT, |j| j["status"] != "pending" && j["status"] != "running").await;
    assert_eq!(job["status"], "waiting_for_human", "{job:#}");
    (job_id, job)
}

async fn ended(server: &TestServer, job_id: &str) -> Value {
    let terminal = ["finished", "failed", "cancelled", "error", "quarantined"];
    server.wait_for(job_id, WAIT, |j| terminal.iter().any(|t| j["status"] == *t)).await
}

#[tokio::test]
async fn an_approved_post_is_published_by_a_worker() {
    let server = TestServer::start_with(config()).await;
    let worker = server.worker("w-publish");
    worker.register(&["publish"]).await;
    let (job_id, job) = awaiting_review(&server).await;

    assert_eq!(job["current_state"], "review", "{job:#}");
    assert_eq!(job["approval"]["message"], "Publish post Hello?", "{job:#}");
    assert_eq!(job["approval"]["transitions"], json!({"approved": "publish", "rejected": "reject"}), "{job:#}");
    assert!(job["current_task"].is_null(), "{job:#}");
    // Nothing goes to a worker before the decision.
    worker.assert_no_task().await;
    assert_eq!(server.job(&job_id).await, job, "the job changed while it waited");

    let answer = decide(&server, &job_id, "approved").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), json!({"status": "approval_received", "job_id": job_id}));

    let task = worker.next_task(WAIT).await;
    assert_eq!(task["job_id"], job_id.as_str(), "{task:#}");
    assert_eq!(task["type"], "publish", "{task:#}");
    assert_eq!(task["params"], json!({"title": TITLE, "body": BODY}), "{task:#}");
    let job = server.job(&job_id).await;
    assert_eq!((job["status"].as_str(), job["current_state"].as_str()), (Some("waiting_for_worker"), Some("publish")));
    assert!(job["approval"].is_null(), "the approval wait is over: {job:#}");

    let (status, _) = worker.post_result(&task, json!({"data": {"post_url": "https://blog.example/hello"}})).await;
    assert_eq!(status, 200);
    let job = ended(&server, &job_id).await;
    assert_eq!((job["status"].as_str(), job["current_state"].as_str()), (Some("finished"), Some("published")));
    assert_eq!(job["state_history"]["post_url"], "https://blog.example/hello", "{job:#}");
    server.stop().await;
}

#[tokio::test]
async fn a_rejected_post_finishes_unpublished_without_a_worker() {
    let server = TestServer::start_with(config()).await;
    let worker = server.worker("w-idle");
    worker.register(&["publish"]).await;
    let (job_id, _) = awaiting_review(&server).await;

    let answer = decide(&server, &job_id, "rejected").await;
    assert_eq!((answer.status, answer.json()), (200, json!({"status": "approval_received", "job_id": job_id})));
    let job = ended(&server, &job_id).await;
    assert_eq!((job["status"].as_str(), job["current_state"].as_str()), (Some("finished"), Some("rejected")));
    assert_eq!(job["state_history"], json!({"published": false}), "{job:#}");
    assert!(job["error_message"].is_null(), "turning a post down is not a failure: {job:#}");
    worker.assert_no_task().await;
    server.stop().await;
}

#[tokio::test]
async fn missing_unknown_or_malformed_decisions_are_400_and_change_nothing() {
    let server = TestServer::start_with(config()).await;
    let (job_id, before) = awaiting_review(&server).await;

    let bodies = [
        "{}",
        r#"{"decision": ""}"#,
        r#"{"decision": null}"#,
        r#"{"decision": 5}"#,
        r#"{"decision": ["approved"]}"#,
        r#"{"verdict": "approved"}"#,
        r#"{"decision": "APPROVED"}"#,
        r#"{"decision": "maybe"}"#,
        r#"{"decision": "approved""#,
        "not json",
        "",
    ];
    for body in bodies {
        let answer = decide_raw(&server, &job_id, body).await;
        let message = answer.assert_error(400);
        for secret in [CLIENT_TOKEN, WORKER_TOKEN, BODY, TITLE] {
            assert!(!message.contains(secret), "body {body:?}: the error shows {secret:?}: {message}");
        }
    }
    // The route takes no token: an unknown decision is refused without
    // naming the ones this job accepts.
    let message = decide(&server, &job_id, "maybe").await.assert_error(400);
    assert!(!message.contains("approved") && !message.contains("rejected"), "{message}");

    assert_eq!(server.job(&job_id).await, before, "a refused decision changed the job");
    // The job still takes a proper decision.
    assert_eq!(decide(&server, &job_id, "rejected").await.status, 200);
    assert_eq!(ended(&server, &job_id).await["current_state"], "rejected");
    server.stop().await;
}

#[tokio::test]
async fn unknown_jobs_are_404() {
    let server = TestServer::start_with(config()).await;
    for id in ["00000000-0000-4000-8000-000000000000", "not-a-uuid", "12345"] {
        let message = decide(&server, id, "approved").await.assert_error(404);
        assert_eq!(message, "job not found", "{id}: the same answer for every id");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_job_not_waiting_for_a_human_is_409() {
    let server = TestServer::start_with(config()).await;
    let (job_id, _) = awaiting_review(&server).await;
    assert_eq!(decide(&server, &job_id, "rejected").await.status, 200);
    let job = ended(&server, &job_id).await;
    // Decided already: neither the same decision again nor the other one applies.
    for decision in ["rejected", "approved"] {
        let message = decide(&server, &job_id, decision).await.assert_error(409);
        assert!(message.contains("not waiting for a human"), "{message}");
    }
    assert_eq!(server.job(&job_id).await, job);

    // Approved and waiting for its worker: no longer waiting for a human.
    let (approved, _) = awaiting_review(&server).await;
    assert_eq!(decide(&server, &approved, "approved").await.status, 200);
    server.wait_for_status(&approved, "waiting_for_worker").await;
    decide(&server, &approved, "rejected").await.assert_error(409);

    // A job of a blueprint that never asks a person.
    let hello = server.create_job("/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    server.wait_for_status(&hello, "waiting_for_worker").await;
    let message = decide(&server, &hello, "approved").await.assert_error(409);
    assert!(!message.contains("waiting_for_worker") && !message.contains(&hello), "no status or id shown: {message}");
    server.stop().await;
}

#[tokio::test]
async fn the_route_needs_no_token_and_ignores_one() {
    let server = TestServer::start_with(config()).await;
    let (first, _) = awaiting_review(&server).await;
    let (second, _) = awaiting_review(&server).await;
    let body = r#"{"decision": "rejected"}"#;
    // A wrong client or worker token is neither needed nor checked here.
    for (job_id, auth) in [(&first, Auth::Client("not-a-token")), (&second, Auth::Worker("not-a-token"))] {
        let answer = server.send(Method::POST, &approval_path(job_id), auth, Some(body)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(ended(&server, job_id).await["current_state"], "rejected");
    }
    server.stop().await;
}

/// Decisions racing for one job: exactly one applies, the others are `409`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_decisions_apply_exactly_once() {
    let server = TestServer::start_with(config()).await;
    let worker = server.worker("w-race");
    worker.register(&["publish"]).await;
    for _ in 0..5 {
        let (job_id, _) = awaiting_review(&server).await;
        let decisions = ["approved", "rejected", "approved", "rejected", "approved", "rejected"];
        let answers = futures::future::join_all(decisions.iter().map(|d| decide(&server, &job_id, d))).await;
        let winners: Vec<&str> =
            decisions.iter().zip(&answers).filter(|(_, a)| a.status == 200).map(|(d, _)| *d).collect();
        assert_eq!(winners.len(), 1, "{answers:#?}");
        for answer in answers.iter().filter(|a| a.status != 200) {
            answer.assert_error(409);
        }
        let job =
            server.wait_for(&job_id, WAIT, |j| j["status"] == "finished" || j["status"] == "waiting_for_worker").await;
        let expected = if winners[0] == "approved" { "publish" } else { "rejected" };
        assert_eq!(job["current_state"], expected, "{job:#}");
        if winners[0] == "approved" {
            let task = worker.next_task(WAIT).await;
            assert_eq!(task["job_id"], job_id.as_str());
            assert_eq!(worker.post_result(&task, json!({})).await.0, 200);
            assert_eq!(ended(&server, &job_id).await["current_state"], "published");
        }
    }
    server.stop().await;
}

/// With `APPROVAL_SECRET`, a decision needs the signature of its job id and
/// decision: knowing the job id is no longer enough, and without a valid
/// signature the route answers 403 before it looks the job up.
#[tokio::test]
async fn signed_links_are_required_with_an_approval_secret() {
    let server = TestServer::start_with(Config { approval_secret: Some("s3cret-key".into()), ..config() }).await;
    let (job_id, _) = awaiting_review(&server).await;
    let job = server.job(&job_id).await;
    let links = &job["approval"]["links"];
    let (approve, reject) = (links["approved"].as_str().unwrap(), links["rejected"].as_str().unwrap());
    assert!(approve.starts_with(&format!("{}?signature=", approval_path(&job_id))), "{job:#}");
    assert_ne!(approve, reject);
    assert!(!server.job_text(&job_id).await.contains("s3cret-key"));

    let body = |decision: &str| json!({"decision": decision}).to_string();
    // No signature, a made-up one, or the other decision's.
    for (path, decision) in [
        (approval_path(&job_id), "approved"),
        (format!("{}?signature=00ff", approval_path(&job_id)), "approved"),
        (reject.to_owned(), "approved"),
        (approve.to_owned(), "rejected"),
    ] {
        let answer = server.send(Method::POST, &path, Auth::None, Some(&body(decision))).await;
        assert_eq!(answer.assert_error(403), "missing or invalid approval signature", "{path}");
    }
    // The same 403 for a job that does not exist: no oracle.
    let unknown = "00000000-0000-7000-8000-000000000000";
    decide(&server, unknown, "approved").await.assert_error(403);
    assert_eq!(server.job(&job_id).await["status"], "waiting_for_human");

    let answer = server.send(Method::POST, approve, Auth::None, Some(&body("approved"))).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let job = server.wait_for(&job_id, WAIT, |j| j["status"] != "waiting_for_human").await;
    assert_eq!(job["current_state"], "publish", "{job:#}");
    server.stop().await;
}
