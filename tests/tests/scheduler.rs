//! The native scheduler: slots create exactly one job each — also with two
//! instances on one Redis — at the right instants across DST, through the
//! same path as API jobs; and `interval_seconds = 1` on the real server.

use std::io::Write;
use std::time::Duration;

use avtomatika::config::RedisConfig;
use avtomatika_tests::{CLIENT_TOKEN, TestServer, test_config};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

fn schedules_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn with_misbehave(config: &mut avtomatika::config::Config) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(avtomatika_plugins::MISBEHAVE_COMPONENT, dir.path().join("misbehave.wasm")).unwrap();
    std::fs::copy(avtomatika_plugins::HELLO_COMPONENT, dir.path().join("hello.wasm")).unwrap();
    config.blueprints_dir = Some(dir.path().to_owned());
    dir
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn each_slot_creates_one_job_and_old_slots_are_skipped() {
    let file = schedules_file(
        "[every_minute]\nblueprint = \"misbehave\"\ninterval_seconds = 60\ninput_data = { mode = \"ok\" }\n",
    );
    let mut config = test_config();
    let _dir = with_misbehave(&mut config);
    config.schedules_config_path = Some(file.path().to_owned());
    let server = TestServer::start_with(config).await;
    let o = &server.orchestrator;

    let created = o.tick_schedules(utc("2026-05-01T10:00:05Z")).await.unwrap();
    assert_eq!(created.len(), 1, "the 10:00 slot runs");
    assert!(o.tick_schedules(utc("2026-05-01T10:00:30Z")).await.unwrap().is_empty(), "once");
    let next = o.tick_schedules(utc("2026-05-01T10:01:00Z")).await.unwrap();
    assert_eq!(next.len(), 1, "the 10:01 slot runs");
    // Down for an hour: only the slot current when ticking again (within the
    // grace window) runs, none of the 59 missed ones.
    assert_eq!(o.tick_schedules(utc("2026-05-01T11:02:10Z")).await.unwrap().len(), 1);
    assert_eq!(o.tick_schedules(utc("2026-05-01T11:04:30Z")).await.unwrap().len(), 1);

    // The job went through the normal path: stored, run by its blueprint,
    // owned by the scheduler identity.
    let job = loop {
        let job = o.storage.get_job(created[0]).await.unwrap().unwrap();
        if job.status.is_terminal() {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(job.client, "scheduler:every_minute");
    assert_eq!(job.initial_data, json!({"mode": "ok"}));
    assert_eq!(job.state_history["client"]["name"], "scheduler:every_minute");
    server.stop().await;
}

#[tokio::test]
async fn a_daily_job_runs_once_on_dst_days() {
    let file = schedules_file(
        "[night]\nblueprint = \"misbehave\"\ndaily_at = \"02:30\"\n[early]\nblueprint = \"misbehave\"\ndaily_at = \"01:30\"\n",
    );
    let mut config = test_config();
    let _dir = with_misbehave(&mut config);
    config.schedules_config_path = Some(file.path().to_owned());
    config.tz = chrono_tz::America::New_York;
    let server = TestServer::start_with(config).await;
    let o = &server.orchestrator;
    // Tick every minute through the spring-forward day and the fall-back day.
    for day in ["2026-03-08", "2026-11-01"] {
        let start = utc(&format!("{day}T04:00:00Z")); // local midnight or earlier
        let mut created = 0;
        for minute in 0..(6 * 60) {
            created += o.tick_schedules(start + chrono::TimeDelta::minutes(minute)).await.unwrap().len();
        }
        assert_eq!(created, 2, "{day}: each daily schedule runs exactly once");
    }
    server.stop().await;
}

#[tokio::test]
async fn schedules_are_listed_with_their_next_run_in_tz() {
    let file = schedules_file(
        "[report]\nblueprint = \"hello\"\nweekly_days = [\"fri\"]\ntime = \"23:00\"\ninput_data = { name = \"Ada\" }\n",
    );
    let mut config = test_config();
    let _dir = with_misbehave(&mut config);
    config.schedules_config_path = Some(file.path().to_owned());
    config.tz = chrono_tz::Europe::Moscow;
    let server = TestServer::start_with(config).await;
    let listed: Value = server
        .http
        .get(server.url("/api/v1/schedules"))
        .header("X-Avtomatika-Token", CLIENT_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let report = &listed[0];
    assert_eq!(report["name"], "report");
    assert_eq!(report["trigger"], json!({"weekly_days": ["fri"], "time": "23:00"}));
    let next = DateTime::parse_from_rfc3339(report["next_run_at"].as_str().unwrap()).unwrap();
    assert_eq!(next.offset().local_minus_utc(), 3 * 3600, "rendered in TZ");
    assert_eq!((next.format("%a %H:%M").to_string()), "Fri 23:00");
    assert!(next > Utc::now() && next < Utc::now() + chrono::TimeDelta::days(7));
    let anonymous = server.http.get(server.url("/api/v1/schedules")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    server.stop().await;
}

/// The example application's `schedules.toml` shape (`enabled = true`, data
/// under `[x.initial_data]`) starts the server; a schedule with
/// `enabled = false` is listed as such and never creates a job.
#[tokio::test]
async fn enabled_and_initial_data_as_the_example_application_writes_them() {
    let file = schedules_file(
        "[maintenance_task]\nblueprint = \"misbehave\"\ninterval_seconds = 60\nenabled = true\n\n\
         [maintenance_task.initial_data]\nmode = \"ok\"\nsource = \"scheduler\"\n\n\
         [paused]\nblueprint = \"misbehave\"\ninterval_seconds = 60\nenabled = false\n",
    );
    let mut config = test_config();
    let _dir = with_misbehave(&mut config);
    config.schedules_config_path = Some(file.path().to_owned());
    let server = TestServer::start_with(config).await;
    let o = &server.orchestrator;

    let created = o.tick_schedules(utc("2026-05-01T10:00:05Z")).await.unwrap();
    assert_eq!(created.len(), 1, "only the enabled schedule runs");
    let job = o.storage.get_job(created[0]).await.unwrap().unwrap();
    assert_eq!(job.client, "scheduler:maintenance_task");
    assert_eq!(job.initial_data, json!({"mode": "ok", "source": "scheduler"}));

    let listed: Value = server
        .http
        .get(server.url("/api/v1/schedules"))
        .header("X-Avtomatika-Token", CLIENT_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let find = |name: &str| listed.as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap();
    let paused = find("paused");
    assert_eq!(paused["enabled"], false);
    assert_eq!(paused["next_run_at"], Value::Null);
    let maintenance = find("maintenance_task");
    assert_eq!(maintenance["enabled"], true);
    assert!(maintenance["next_run_at"].is_string(), "{maintenance}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_create_one_job_per_slot() {
    const DB: u32 = 13;
    let client = redis::Client::open(format!("redis://127.0.0.1:6379/{DB}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis at 127.0.0.1:6379");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();

    let file = schedules_file("[tick]\nblueprint = \"misbehave\"\ninterval_seconds = 10\n");
    let mut servers = Vec::new();
    let mut dirs = Vec::new();
    for instance in ["sched-a", "sched-b"] {
        let mut config = test_config();
        dirs.push(with_misbehave(&mut config));
        config.schedules_config_path = Some(file.path().to_owned());
        config.redis = Some(RedisConfig { host: "127.0.0.1".into(), port: 6379, db: DB });
        config.instance_id = instance.into();
        servers.push(TestServer::start_with(config).await);
    }
    let base = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
    let mut total = 0;
    for slot in 0..20 {
        // Both instances tick the same slot at once, each a little late.
        let now = base + chrono::TimeDelta::seconds(slot * 10 + 1);
        let (a, b) = tokio::join!(
            servers[0].orchestrator.tick_schedules(now),
            servers[1].orchestrator.tick_schedules(now + chrono::TimeDelta::milliseconds(300)),
        );
        let created = a.unwrap().len() + b.unwrap().len();
        assert_eq!(created, 1, "slot {slot} created {created} jobs");
        total += created;
    }
    assert_eq!(total, 20);
    for server in servers {
        server.stop().await;
    }
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
}

#[tokio::test]
async fn an_interval_of_one_second_runs_on_the_real_server() {
    let file = schedules_file(
        "[greet_often]\nblueprint = \"hello\"\ninterval_seconds = 1\ninput_data = { name = \"Cron\" }\n",
    );
    let mut config = test_config();
    let _dir = with_misbehave(&mut config);
    config.schedules_config_path = Some(file.path().to_owned());
    let server = TestServer::start_with(config).await;
    let worker = server.worker("w-scheduled");
    worker.register(&["greet"]).await;
    let started = std::time::Instant::now();
    let mut jobs = std::collections::HashSet::new();
    while jobs.len() < 3 {
        let task = worker.next_task(Duration::from_secs(5)).await;
        assert_eq!(task["params"], json!({"name": "Cron"}));
        jobs.insert(task["job_id"].as_str().unwrap().to_owned());
        let (status, _) = worker.post_result(&task, json!({"status": "success"})).await;
        assert_eq!(status, 200);
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(6), "three one-second slots took {elapsed:?}");
    server.stop().await;
}
