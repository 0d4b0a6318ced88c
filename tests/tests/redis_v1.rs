//! The v1 blueprint language on real Redis with two server instances sharing
//! it: every piece of new job state (branch results, approvals, child links,
//! data stores, cancellation flags, listings) lives in storage, so any
//! instance can carry a job on. Fails (never skips) without Redis at
//! 127.0.0.1:6379; uses database 12, emptied first.

use std::collections::BTreeSet;
use std::time::Duration;

use avtomatika::config::RedisConfig;
use avtomatika_tests::{Auth, CLIENT_TOKEN, TestServer, WORKER_TOKEN, test_config};
use serde_json::json;

const DB: u32 = 12;

/// Two instances on one fresh Redis database.
async fn two_instances() -> (TestServer, TestServer) {
    let client = redis::Client::open(format!("redis://127.0.0.1:6379/{DB}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis at 127.0.0.1:6379");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    let start = |instance: &str| {
        let mut config = test_config();
        config.redis = Some(RedisConfig { host: "127.0.0.1".into(), port: 6379, db: DB });
        config.instance_id = instance.into();
        TestServer::start_with(config)
    };
    (start("v1-a").await, start("v1-b").await)
}

/// Every test here shares database 12, so they run one after another.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_fan_out_joins_results_posted_to_both_instances() {
    let _serial = SERIAL.lock().await;
    let (a, b) = two_instances().await;
    let sizes: Vec<String> = (0..16).map(|i| format!("s{i}")).collect();
    let job_id = a.create_job("/api/v1/jobs/image-pipeline", json!({"image": "s3://in/cat.png", "sizes": sizes})).await;
    let (wa, wb) = (a.worker("resizer-a"), b.worker("resizer-b"));
    wa.register(&["resize"]).await;
    wb.register(&["resize"]).await;
    // Each worker polls its own instance until every branch is out.
    let taken = std::sync::Mutex::new(Vec::new());
    let poll_until_all = async |worker: &avtomatika_tests::TestWorker<'_>| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while taken.lock().unwrap().len() < sizes.len() {
            if let Some(task) = worker.poll().await {
                taken.lock().unwrap().push((worker.worker_id.clone(), task));
            }
            assert!(std::time::Instant::now() < deadline, "{} branches handed out", taken.lock().unwrap().len());
        }
    };
    tokio::join!(poll_until_all(&wa), poll_until_all(&wb));
    let tasks = taken.into_inner().unwrap();
    assert_eq!(tasks.len(), sizes.len());
    // Every result at once, alternately through each instance, each by the
    // worker that holds the branch.
    let answers =
        futures::future::join_all(tasks.iter().enumerate().map(|(i, (worker_id, task))| {
            let server = if i % 2 == 0 { &a } else { &b };
            let url = format!("s3://out/{}.png", task["params"]["size"].as_str().unwrap());
            async move {
                server.worker(worker_id).post_result(task, json!({"status": "success", "data": {"url": url}})).await
            }
        }))
        .await;
    for (status, body) in &answers {
        assert_eq!((*status, &body["status"]), (200, &json!("parallel_branch_result_accepted")));
    }
    let job = b.wait_for_status(&job_id, "finished").await;
    let thumbnails = job["state_history"]["thumbnails"].as_object().unwrap();
    assert_eq!(thumbnails.len(), sizes.len());
    for size in &sizes {
        assert_eq!(thumbnails[size], format!("s3://out/{size}.png"));
    }
}

#[tokio::test]
async fn a_child_on_one_instance_resumes_its_parent_and_approvals_cross_instances() {
    let _serial = SERIAL.lock().await;
    let (a, b) = two_instances().await;
    let order = a.create_job("/api/v1/jobs/order", json!({"amount": 42, "address": "Baker St"})).await;
    let charger = b.worker("charger");
    charger.register(&["charge", "ship"]).await;
    let charge = charger.next_task(Duration::from_secs(10)).await;
    assert_eq!((charge["type"].as_str(), &charge["params"]["amount"]), (Some("charge"), &json!(42)));
    let parent = a.job(&order).await;
    assert_eq!(parent["status"], "waiting_for_sub_job");
    let child_id = parent["child_job_ids"][0].as_str().unwrap().to_owned();
    assert_eq!(charge["job_id"], child_id.as_str());
    charger.post_result(&charge, json!({"status": "success", "data": {"receipt": "r-1"}})).await;
    let ship = charger.next_task(Duration::from_secs(10)).await;
    assert_eq!((ship["type"].as_str(), ship["job_id"].as_str()), (Some("ship"), Some(order.as_str())));
    charger.post_result(&ship, json!({"status": "success"})).await;
    let parent = b.wait_for_status(&order, "finished").await;
    assert_eq!(parent["state_history"]["payment"]["receipt"], "r-1");
    assert_eq!(b.job(&child_id).await["parent_job_id"], order.as_str());

    let post = a.create_job("/api/v1/jobs/moderation", json!({"title": "Hi", "body": "…"})).await;
    b.wait_for_status(&post, "waiting_for_human").await;
    let answer = b
        .send(
            reqwest::Method::POST,
            &format!("/_public/webhooks/approval/{post}"),
            Auth::None,
            Some(r#"{"decision":"rejected"}"#),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let post = a.wait_for_status(&post, "finished").await;
    assert_eq!(
        (post["current_state"].as_str(), &post["state_history"]["published"]),
        (Some("rejected"), &json!(false))
    );
}

#[tokio::test]
async fn counters_are_atomic_across_instances() {
    let _serial = SERIAL.lock().await;
    let (a, b) = two_instances().await;
    let mut jobs = Vec::new();
    for i in 0..20 {
        let server = if i % 2 == 0 { &a } else { &b };
        jobs.push(server.create_job("/api/v1/jobs/counter", json!({"page": "home", "name": format!("v{i}")})).await);
    }
    let mut counts = BTreeSet::new();
    for job_id in &jobs {
        let job = a.wait_for_status(job_id, "finished").await;
        counts.insert(job["state_history"]["count"].as_i64().unwrap());
    }
    assert_eq!(counts, (1..=20).collect::<BTreeSet<i64>>(), "every increment counted once");
}

#[tokio::test]
async fn cancellation_flags_listings_and_counts_are_shared() {
    let _serial = SERIAL.lock().await;
    let (a, b) = two_instances().await;
    let job_id = a.create_job("/api/v1/jobs/hello", json!({"name": "Ada"})).await;
    let worker = b.worker("greeter");
    worker.register(&["greet"]).await;
    let task = worker.next_task(Duration::from_secs(10)).await;
    let flag_path = format!("/_worker/workers/greeter/jobs/{job_id}/tasks/{}", task["task_id"].as_str().unwrap());
    assert_eq!(
        a.send(reqwest::Method::GET, &flag_path, Auth::Worker(WORKER_TOKEN), None).await.json()["cancellation_requested"],
        false
    );
    let cancel =
        b.send(reqwest::Method::POST, &format!("/api/v1/jobs/{job_id}/cancel"), Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!(cancel.json()["status"], "cancellation_request_accepted");
    assert_eq!(
        a.send(reqwest::Method::GET, &flag_path, Auth::Worker(WORKER_TOKEN), None).await.json()["cancellation_requested"],
        true
    );
    worker.post_result(&task, json!({"status": "cancelled"})).await;
    a.wait_for_status(&job_id, "cancelled").await;

    let listed = b.send(reqwest::Method::GET, "/api/v1/jobs?limit=10", Auth::Client(CLIENT_TOKEN), None).await.json();
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![job_id.as_str()]);
    let dashboard = a.send(reqwest::Method::GET, "/api/v1/dashboard", Auth::Client(CLIENT_TOKEN), None).await.json();
    assert_eq!(dashboard["jobs"]["cancelled"], 1, "{dashboard}");
    assert_eq!(dashboard["jobs"]["finished"], 0, "{dashboard}");
    assert_eq!(dashboard["workers"]["total"], 1, "{dashboard}");
}
