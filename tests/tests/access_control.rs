//! Access control per `spec/configuration.md`, through real HTTP: clients of
//! `clients.toml` (isolation, quotas, parameters reaching blueprints),
//! individual worker tokens of `workers.toml`, reloading that file at run
//! time, and `schedules.toml` checked against the loaded blueprints.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use avtomatika::App;
use avtomatika::auth::hash;
use avtomatika_tests::config::Config;
use avtomatika_tests::{Answer, Auth, CLIENT_TOKEN, TestServer, WORKER_TOKEN, test_config};
use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

const HELLO: &str = "/api/v1/jobs/hello";
const RELOAD: &str = "/api/v1/admin/reload-workers";
const REGISTER: &str = "/_worker/workers/register";
const RESULT: &str = "/_worker/tasks/result";

const ACME: &str = "acme-token-0f3a91";
const GLOBEX: &str = "globex-token-7be204";
const CLIENTS: &str = r#"
[acme]
token = "acme-token-0f3a91"
plan = "pro"
languages = ["en", "de"]
priority_support = true
limits = { burst = 3 }

[globex]
token = "globex-token-7be204"
"#;

/// A directory of configuration files, removed when dropped.
struct Files(TempDir);

impl Files {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("temporary directory"))
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).expect("write a configuration file");
        path
    }
}

fn config() -> Config {
    Config { worker_poll_timeout: Duration::from_secs(1), ..test_config() }
}

fn with_clients(path: &Path) -> Config {
    Config { clients_config_path: Some(path.to_owned()), ..config() }
}

fn with_workers(path: &Path) -> Config {
    Config { workers_config_path: Some(path.to_owned()), ..config() }
}

/// `POST /api/v1/jobs/hello` as the client holding `token`.
async fn create(server: &TestServer, token: &str) -> Answer {
    server.send(Method::POST, HELLO, Auth::Client(token), Some(r#"{"name": "Ada"}"#)).await
}

/// Creates a job as `token`'s client; returns its id.
async fn create_ok(server: &TestServer, token: &str) -> String {
    let answer = create(server, token).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    answer.json()["job_id"].as_str().expect("job_id").to_owned()
}

async fn get_job(server: &TestServer, token: &str, job_id: &str) -> Answer {
    server.send(Method::GET, &format!("/api/v1/jobs/{job_id}"), Auth::Client(token), None).await
}

/// Polls the job as `token`'s client until its status is terminal.
async fn wait_until_ended(server: &TestServer, token: &str, job_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = get_job(server, token, job_id).await.json();
        if !matches!(job["status"].as_str(), Some("pending" | "running" | "waiting_for_worker")) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {job_id} did not end: {job:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn clients_see_only_their_own_jobs_and_the_global_token_is_replaced() {
    let files = Files::new();
    let server = TestServer::start_with(with_clients(&files.write("clients.toml", CLIENTS))).await;

    let acme_job = create_ok(&server, ACME).await;
    let globex_job = create_ok(&server, GLOBEX).await;
    for (owner, other, job_id) in [(ACME, GLOBEX, &acme_job), (GLOBEX, ACME, &globex_job)] {
        let answer = get_job(&server, owner, job_id).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        for token in [ACME, GLOBEX, CLIENT_TOKEN] {
            assert!(!answer.text.contains(token), "a job record holds a token: {}", answer.text);
        }
        // Another client's job does not exist for it, exactly like an unknown id.
        let message = get_job(&server, other, job_id).await.assert_error(404);
        let unknown = get_job(&server, other, "00000000-0000-4000-8000-000000000000").await.assert_error(404);
        assert_eq!(
            message.replace(job_id.as_str(), "ID"),
            unknown.replace("00000000-0000-4000-8000-000000000000", "ID")
        );
    }
    assert_eq!(get_job(&server, ACME, &acme_job).await.json()["client"], "acme");

    // With a clients file, CLIENT_TOKEN opens nothing.
    create(&server, CLIENT_TOKEN).await.assert_error(401);
    get_job(&server, CLIENT_TOKEN, &acme_job).await.assert_error(401);
    server.send(Method::POST, RELOAD, Auth::Client(CLIENT_TOKEN), None).await.assert_error(401);
    server.stop().await;
}

#[tokio::test]
async fn client_params_reach_the_blueprint_without_token_or_quota() {
    let files = Files::new();
    let clients = files.write("clients.toml", &format!("{CLIENTS}monthly_attempts = 10\n"));
    let blueprints = files.0.path().join("blueprints");
    std::fs::create_dir(&blueprints).unwrap();
    std::fs::copy(avtomatika_plugins::MISBEHAVE_COMPONENT, blueprints.join("misbehave.wasm")).unwrap();
    let config = Config { blueprints_dir: Some(blueprints), ..with_clients(&clients) };
    let server = TestServer::start_with(config).await;

    for (token, expected) in [
        (
            ACME,
            json!({
                "name": "acme",
                "plan": "pro",
                "params": {"languages": ["en", "de"], "priority_support": true, "limits": {"burst": 3}},
            }),
        ),
        // `monthly_attempts` (appended to globex) is the server's, not a parameter.
        (GLOBEX, json!({"name": "globex", "plan": null, "params": {}})),
    ] {
        let answer = server.send(Method::POST, "/api/v1/jobs/misbehave", Auth::Client(token), Some("{}")).await;
        assert_eq!(answer.status, 202, "{answer:?}");
        let job_id = answer.json()["job_id"].as_str().unwrap().to_owned();
        let job = wait_until_ended(&server, token, &job_id).await;
        assert_eq!(job["status"], "finished", "{job:#}");
        assert_eq!(job["state_history"]["client"], expected, "{job:#}");
    }
    server.stop().await;
}

#[tokio::test]
async fn without_a_clients_file_client_token_is_the_one_client() {
    let server = TestServer::start_with(config()).await;
    let job_id = create_ok(&server, CLIENT_TOKEN).await;
    let answer = get_job(&server, CLIENT_TOKEN, &job_id).await;
    assert_eq!(answer.json()["client"], "default");
    assert!(!answer.text.contains(CLIENT_TOKEN), "{}", answer.text);
    create(&server, ACME).await.assert_error(401);
    server.stop().await;
}

/// N concurrent creates against a remaining quota of Q accept exactly Q.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_monthly_quota_admits_exactly_its_size_under_concurrency() {
    let files = Files::new();
    let clients = files.write(
        "clients.toml",
        &format!(
            "[metered]\ntoken = \"metered-token\"\nmonthly_attempts = 5\n\
             [broke]\ntoken = \"broke-token\"\nmonthly_attempts = 0\n{CLIENTS}"
        ),
    );
    let server = TestServer::start_with(with_clients(&clients)).await;

    // Refused requests are not creations: they cost nothing.
    for body in ["{", "[1]", r#"{"initial_data": 5}"#] {
        server.send(Method::POST, HELLO, Auth::Client("metered-token"), Some(body)).await.assert_error(400);
    }

    let answers = join_all((0..20).map(|_| create(&server, "metered-token"))).await;
    let accepted: Vec<String> =
        answers.iter().filter(|a| a.status == 202).map(|a| a.json()["job_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(accepted.len(), 5, "exactly the quota is admitted: {answers:#?}");
    for answer in answers.iter().filter(|a| a.status != 202) {
        let message = answer.assert_error(429);
        assert!(message.contains("quota"), "{message}");
        assert!(!message.contains("metered-token"), "{message}");
    }

    // Reads do not count, and do not give anything back either.
    for _ in 0..3 {
        for job_id in &accepted {
            assert_eq!(get_job(&server, "metered-token", job_id).await.status, 200);
        }
    }
    create(&server, "metered-token").await.assert_error(429);

    // A zero quota admits nothing; clients without a quota are unaffected.
    create(&server, "broke-token").await.assert_error(429);
    let unmetered = join_all((0..25).map(|_| create(&server, GLOBEX))).await;
    assert!(unmetered.iter().all(|a| a.status == 202), "{unmetered:#?}");
    server.stop().await;
}

fn registration(worker_id: &str) -> String {
    json!({"worker_id": worker_id, "worker_type": "test", "supported_tasks": ["greet"], "max_concurrent_tasks": 1})
        .to_string()
}

async fn register(server: &TestServer, worker_id: &str, token: &str) -> Answer {
    server.send(Method::POST, REGISTER, Auth::Worker(token), Some(&registration(worker_id))).await
}

async fn heartbeat(server: &TestServer, worker_id: &str, token: &str) -> Answer {
    server.send(Method::PATCH, &format!("/_worker/workers/{worker_id}"), Auth::Worker(token), None).await
}

async fn poll(server: &TestServer, worker_id: &str, token: &str) -> Answer {
    server.send(Method::GET, &format!("/_worker/workers/{worker_id}/tasks/next"), Auth::Worker(token), None).await
}

/// Whether every worker call of `worker_id` with `token` is let in.
async fn admitted(server: &TestServer, worker_id: &str, token: &str) -> bool {
    let register = register(server, worker_id, token).await;
    let heartbeat = heartbeat(server, worker_id, token).await;
    let statuses = [register.status, heartbeat.status];
    match statuses {
        [200, 200] => true,
        [401, 401] => {
            assert_eq!(poll(server, worker_id, token).await.status, 401);
            false
        }
        _ => panic!("{worker_id}: mixed answers {register:?} {heartbeat:?}"),
    }
}

#[tokio::test]
async fn a_worker_with_its_own_token_never_gets_in_with_the_global_one() {
    let files = Files::new();
    let workers = files.write("workers.toml", "[w-own]\ntoken = \"own-token\"\ndescription = \"has its own\"\n");
    let server = TestServer::start_with(with_workers(&workers)).await;

    // w-own with its own token: register, heartbeat, a task, its result.
    assert_eq!(register(&server, "w-own", "own-token").await.status, 200);
    assert_eq!(heartbeat(&server, "w-own", "own-token").await.status, 200);
    let job_id = server.create_job(HELLO, json!({"name": "Ada"})).await;
    let answer = poll(&server, "w-own", "own-token").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let task = answer.json();
    assert_eq!(task["job_id"], job_id.as_str());

    // w-own with the global token: refused everywhere, no fallback.
    let with_id = |worker_id: &str| {
        json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": worker_id,
               "result": {"status": "success"}})
        .to_string()
    };
    register(&server, "w-own", WORKER_TOKEN).await.assert_error(401);
    heartbeat(&server, "w-own", WORKER_TOKEN).await.assert_error(401);
    server
        .send(Method::PATCH, "/_worker/workers/w-own", Auth::Worker(WORKER_TOKEN), Some(r#"{"status":"idle"}"#))
        .await
        .assert_error(401);
    poll(&server, "w-own", WORKER_TOKEN).await.assert_error(401);
    server.send(Method::POST, RESULT, Auth::Worker(WORKER_TOKEN), Some(&with_id("w-own"))).await.assert_error(401);

    // Its token does not make it any other worker.
    register(&server, "w-other", "own-token").await.assert_error(401);
    heartbeat(&server, "w-other", "own-token").await.assert_error(401);
    poll(&server, "w-other", "own-token").await.assert_error(401);
    server.send(Method::POST, RESULT, Auth::Worker("own-token"), Some(&with_id("w-other"))).await.assert_error(401);
    // The global token without a worker id names nobody.
    let anonymous = json!({"job_id": task["job_id"], "task_id": task["task_id"], "result": {}}).to_string();
    server.send(Method::POST, RESULT, Auth::Worker(WORKER_TOKEN), Some(&anonymous)).await.assert_error(400);
    assert_eq!(get_job(&server, CLIENT_TOKEN, &job_id).await.json()["status"], "waiting_for_worker");

    // A result without worker_id is known by the own token: it is w-own's.
    let answer = server.send(Method::POST, RESULT, Auth::Worker("own-token"), Some(&anonymous)).await;
    assert_eq!((answer.status, answer.json()), (200, json!({"status": "result_accepted_success"})), "{answer:?}");
    server.wait_for_status(&job_id, "finished").await;

    // A worker without a section uses the global token, and only it.
    assert!(admitted(&server, "w-other", WORKER_TOKEN).await);
    assert_eq!(poll(&server, "w-other", WORKER_TOKEN).await.status, 204);
    assert!(!admitted(&server, "w-third", "own-token").await);
    assert!(!admitted(&server, "w-third", CLIENT_TOKEN).await);
    server.stop().await;
}

#[tokio::test]
async fn only_token_digests_are_kept_in_storage() {
    let files = Files::new();
    let workers = files.write("workers.toml", "[w-own]\ntoken = \"own-token\"\n");
    let app = App::new(with_workers(&workers)).await.expect("server starts");
    let storage = &app.orchestrator.storage;
    assert_eq!(storage.worker_token("w-own").await.unwrap(), Some(hash("own-token")));
    assert_eq!(storage.worker_for_token(&hash("own-token")).await.unwrap().as_deref(), Some("w-own"));
    assert_eq!(storage.worker_token("w-other").await.unwrap(), None);
    assert!(!format!("{:?}", app.orchestrator.credentials).contains(CLIENT_TOKEN));
    assert!(!format!("{:?}", app.orchestrator.config).contains(CLIENT_TOKEN));
    assert!(!format!("{:?}", app.orchestrator.config).contains(WORKER_TOKEN));
}

#[tokio::test]
async fn reload_swaps_worker_tokens_and_a_broken_file_keeps_the_old_ones() {
    let files = Files::new();
    let path = files.write("workers.toml", "[w1]\ntoken = \"t1\"\n");
    let server = TestServer::start_with(with_workers(&path)).await;
    assert!(admitted(&server, "w1", "t1").await);
    assert!(admitted(&server, "w2", WORKER_TOKEN).await);

    // New tokens: in force once reloaded, not before.
    files.write("workers.toml", "[w1]\ntoken = \"t2\"\n[w2]\ntoken = \"t3\"\ndescription = \"new\"\n");
    assert!(admitted(&server, "w1", "t1").await, "the file alone changes nothing");
    let answer = server.send(Method::POST, RELOAD, Auth::Client(CLIENT_TOKEN), None).await;
    assert_eq!((answer.status, answer.json()), (200, json!({"status": "worker_configs_reloaded"})), "{answer:?}");
    assert!(!admitted(&server, "w1", "t1").await);
    assert!(admitted(&server, "w1", "t2").await);
    assert!(admitted(&server, "w2", "t3").await);
    assert!(!admitted(&server, "w2", WORKER_TOKEN).await, "w2 has its own token now");

    // A syntax error: 400 naming the file and line; nothing changes.
    let broken = "[w1]\ntoken = \"t9\"\n[w2\ntoken = \"t8\"\n";
    files.write("workers.toml", broken);
    let message = server.send(Method::POST, RELOAD, Auth::Client(CLIENT_TOKEN), None).await.assert_error(400);
    assert!(message.contains(&format!("{}:3:", path.display())), "{message}");
    assert!(!message.contains("t9") && !message.contains("t8"), "{message}");
    // A missing token: 400 naming section and field; nothing changes.
    files.write("workers.toml", "[w1]\ntoken = \"t9\"\n[w2]\ndescription = \"lost its token\"\n");
    let message = server.send(Method::POST, RELOAD, Auth::Client(CLIENT_TOKEN), None).await.assert_error(400);
    assert!(message.contains("section [w2]") && message.contains("field `token`"), "{message}");
    // A missing file: 400; nothing changes.
    std::fs::remove_file(&path).unwrap();
    let message = server.send(Method::POST, RELOAD, Auth::Client(CLIENT_TOKEN), None).await.assert_error(400);
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(admitted(&server, "w1", "t2").await, "old tokens keep working after a failed reload");
    assert!(admitted(&server, "w2", "t3").await);
    assert!(!admitted(&server, "w1", "t9").await);

    // A section removed: that worker falls back to the global token.
    files.write("workers.toml", "[w1]\ntoken = \"t2\"\n");
    assert_eq!(server.send(Method::POST, RELOAD, Auth::Client(CLIENT_TOKEN), None).await.status, 200);
    assert!(!admitted(&server, "w2", "t3").await);
    assert!(admitted(&server, "w2", WORKER_TOKEN).await);
    assert!(admitted(&server, "w1", "t2").await);

    // Reloading takes a client token.
    for auth in [Auth::None, Auth::Client("wrong"), Auth::Worker(WORKER_TOKEN), Auth::Worker("t2")] {
        server.send(Method::POST, RELOAD, auth, None).await.assert_error(401);
    }
    server.stop().await;
}

#[tokio::test]
async fn reload_without_a_workers_file_is_a_400() {
    let server = TestServer::start_with(config()).await;
    let message = server.send(Method::POST, RELOAD, Auth::Client(CLIENT_TOKEN), None).await.assert_error(400);
    assert!(message.contains("WORKERS_CONFIG_PATH"), "{message}");
    server.send(Method::POST, RELOAD, Auth::None, None).await.assert_error(401);
    server.stop().await;
}

#[tokio::test]
async fn reload_works_with_a_clients_file() {
    let files = Files::new();
    let clients = files.write("clients.toml", CLIENTS);
    let workers = files.write("workers.toml", "[w1]\ntoken = \"t1\"\n");
    let server = TestServer::start_with(Config {
        clients_config_path: Some(clients),
        workers_config_path: Some(workers),
        ..config()
    })
    .await;
    files.write("workers.toml", "[w1]\ntoken = \"t2\"\n");
    let answer = server.send(Method::POST, RELOAD, Auth::Client(GLOBEX), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(admitted(&server, "w1", "t2").await);
    server.send(Method::POST, RELOAD, Auth::Client(CLIENT_TOKEN), None).await.assert_error(401);
    server.stop().await;
}

#[tokio::test]
async fn schedules_must_name_a_loaded_blueprint() {
    let files = Files::new();
    let path = files.write(
        "schedules.toml",
        "[fine]\nblueprint = \"hello\"\ninterval_seconds = 60\n\
         [nightly]\nblueprint = \"nightly_cleanup\"\ndaily_at = \"03:00\"\n",
    );
    let config = Config { schedules_config_path: Some(path.clone()), ..config() };
    let error = match App::new(config).await {
        Ok(_) => panic!("the server started with a schedule of an unknown blueprint"),
        Err(error) => error.to_string(),
    };
    for needle in [path.display().to_string().as_str(), "section [nightly]", "field `blueprint`", "nightly_cleanup"] {
        assert!(error.contains(needle), "{error:?} should mention {needle:?}");
    }
}

#[tokio::test]
async fn the_example_configuration_files_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let config = Config {
        clients_config_path: Some(dir.join("clients.toml")),
        workers_config_path: Some(dir.join("workers.toml")),
        schedules_config_path: Some(dir.join("schedules.toml")),
        ..config()
    };
    let setup = avtomatika::Setup::load(config).await.expect("the examples load");
    assert_eq!(setup.clients.as_ref().map(Vec::len), Some(3));
    assert_eq!(setup.workers.as_ref().map(Vec::len), Some(3));
    assert_eq!(setup.schedules.len(), 4);
    let mut blueprints: Vec<&str> = setup.schedules.iter().map(|s| s.blueprint.as_str()).collect();
    blueprints.sort_unstable();
    blueprints.dedup();
    assert_eq!(blueprints, ["hello", "pipeline"]);
}
