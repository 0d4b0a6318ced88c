//! Storage conformance: one set of cases, run unchanged against every
//! [`Storage`] backend, so that each behaves exactly as the others.
//!
//! Every case is an `async fn(Arc<dyn Storage>)` in [`cases`] and gets a fresh,
//! empty backend. [`conformance!`] turns the whole list into one `#[tokio::test]`
//! per case inside a module named after the backend (`memory::…`, `redis::…`),
//! so `cargo test -p avtomatika-tests --test storage redis::` runs one backend.
//!
//! The only sleeps wait for a TTL (or the ended-job retention) to run out,
//! or for the clock to move on between two updates whose order a listing
//! must show ([`STAMP_GAP`]). Timed checks otherwise assert a behaviour: an empty poll must wait out its
//! timeout, a waiting poll must not return before something is queued and must
//! wake promptly once it is.
//!
//! The Redis cases need a Redis at 127.0.0.1:6379 and fail without one.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use avtomatika::auth::hash;
use avtomatika::model::{
    Job, JobId, JobStatus, Progress, Routing, Strategy, TaskPayload, TaskRecord, WorkerInfo, WorkerPatch, WorkerStatus,
};
use avtomatika::storage::{
    Assignment, BranchRecord, FollowUp, JobCounts, JobQueue, JobStore, MemoryStorage, PurgedWorker, REPUTATION_WINDOW,
    Release, Storage, WorkerChannels, WorkerRegistry,
};
use serde_json::{Map, Value, json};
use tokio::sync::{Barrier, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use uuid::Uuid;

/// How long a check that something is *not* there waits for it.
const ABSENT: Duration = Duration::from_millis(100);
/// The timeout of a call expected to return at once (something is there).
const PRESENT: Duration = Duration::from_secs(2);
/// The timeout of an empty poll whose duration is measured.
const EMPTY_WAIT: Duration = Duration::from_millis(250);
/// How late past its timeout an empty poll may return.
const LATE: Duration = Duration::from_secs(2);
/// The timeout of a poll that something queued later must wake.
const LONG_POLL: Duration = Duration::from_secs(10);
/// How soon a woken poll must return: well under [`LONG_POLL`].
const WOKEN_WITHIN: Duration = Duration::from_secs(3);
/// How long a poll on an empty queue must be seen still waiting before
/// something is queued for it.
const STILL_WAITING: Duration = Duration::from_millis(150);
/// What an empty queue or parking lot holds.
const NO_JOBS: Vec<JobId> = Vec::new();
/// A worker or lock TTL that runs out during the case.
const SHORT_TTL: Duration = Duration::from_millis(200);
/// How long every backend under test keeps ended jobs.
const RETENTION: Duration = SHORT_TTL;
/// Long enough for [`SHORT_TTL`] (and [`RETENTION`]) to have run out.
const EXPIRED: Duration = Duration::from_millis(450);
/// A TTL that does not run out during the case.
const LONG_TTL: Duration = Duration::from_secs(60);
/// Between two updates whose order a listing must show: enough for the
/// timestamps to differ even where a backend keeps milliseconds.
const STAMP_GAP: Duration = Duration::from_millis(10);
/// A listing page large enough for everything a case stores.
const ALL: usize = 1000;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

type Cleanup = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A fresh backend for one case, and what to do once the case has run.
struct Backend {
    storage: Arc<dyn Storage>,
    /// Runs after the case, whether it passed or not (Redis: delete its keys).
    cleanup: Option<Cleanup>,
}

impl From<Arc<dyn Storage>> for Backend {
    fn from(storage: Arc<dyn Storage>) -> Self {
        Self { storage, cleanup: None }
    }
}

/// Runs `case` on its own task, so that the cleanup runs even when it panics,
/// then re-raises the case's panic.
async fn run<Fut>(backend: impl Into<Backend>, case: fn(Arc<dyn Storage>) -> Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let Backend { storage, cleanup } = backend.into();
    let outcome = tokio::spawn(case(storage)).await;
    if let Some(cleanup) = cleanup {
        cleanup.await;
    }
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the case did not finish: {e}"),
        }
    }
}

/// `conformance!(backend_mod, make)`: a module `backend_mod` with one test per
/// case, each on a backend from `make` (a future of an `Arc<dyn Storage>` or
/// of a [`Backend`]). A case missing from this list is reported as dead code.
macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        conformance!(@cases $backend, $make,
            job_round_trips_every_field,
            updates_are_refused_from_a_stale_version,
            refused_updates_apply_no_follow_up,
            one_of_concurrent_updates_from_one_version_wins,
            ended_jobs_are_forgotten_after_the_retention,
            a_revived_job_outlives_the_retention_of_its_first_end,
            queued_jobs_come_out_in_order,
            a_waiting_next_job_wakes_when_a_job_is_queued,
            concurrent_next_job_calls_share_the_queue,
            tasks_pop_for_their_worker_by_priority_then_in_order,
            task_priorities_span_all_of_i32,
            pop_on_an_empty_queue_waits_out_its_timeout,
            a_waiting_pop_wakes_when_a_task_is_pushed,
            a_stopped_pop_ends_its_wait_and_never_takes_a_task_it_does_not_return,
            each_pushed_task_wakes_one_waiting_pop,
            pushed_tasks_count_in_flight,
            parked_jobs_are_taken_in_order_in_batches_per_task_type,
            registered_workers_are_candidates_for_their_task_types,
            thousands_of_workers_of_one_task_type_are_all_candidates,
            refresh_applies_a_patch,
            in_flight_never_goes_below_zero,
            expired_workers_are_forgotten,
            refresh_sets_a_new_ttl,
            re_registration_replaces_the_worker_but_keeps_its_in_flight,
            purging_forgets_expired_workers_and_drops_their_queues,
            worker_tokens_are_replaced_as_a_whole,
            quotas_count_per_client_and_period,
            concurrent_quota_takes_accept_exactly_the_limit,
            a_lock_is_exclusive_until_its_owner_releases_it,
            a_lock_expires_after_its_ttl_unless_renewed,
            one_of_concurrent_lockers_wins,
            jobs_waiting_on_a_task_are_watched_until_they_move_on,
            a_schedule_slot_is_claimed_once,
            round_robin_turns_count_up_per_name_across_callers,
            workers_for_a_task_type_come_with_load_and_reputation,
            reputation_is_the_share_of_successes_in_a_sliding_window,
            a_releasing_update_counts_its_verdict_once_applied,
            an_applied_update_can_release_an_in_flight_slot,
            concurrent_patches_are_all_applied,
            one_update_pushes_to_several_workers_and_parks,
            parking_for_several_task_types_parks_once_per_type,
            the_status_index_follows_every_applied_update,
            jobs_with_status_lists_the_most_recently_updated_first_in_pages,
            client_jobs_are_per_client_newest_first_in_pages,
            job_counts_count_held_jobs_by_status_and_the_queue,
            forgotten_jobs_leave_every_index,
            a_child_ending_queues_its_parent,
            a_queued_task_can_be_withdrawn_until_a_worker_takes_it,
            branch_results_are_recorded_once_per_branch,
            concurrent_branch_results_complete_the_fan_out_once,
            a_fan_out_closing_while_branches_answer_keeps_none_of_the_late_ones,
            data_stores_get_set_and_delete_per_scope,
            data_increment_counts_integers_only,
            concurrent_data_increments_are_all_counted,
            progress_is_kept_beside_existing_jobs_only,
            progress_survives_job_updates_and_goes_with_the_job,
            a_worker_channel_delivers_until_it_is_replaced_or_closed,
            held_cancels_are_taken_once_for_the_tasks_a_worker_runs,
        );
    };
    (@cases $backend:ident, $make:expr, $($case:ident,)*) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    run($make.await, cases::$case).await
                }
            )*
        }
    };
}

conformance!(memory, async { Arc::new(MemoryStorage::new().with_retention(RETENTION)) as Arc<dyn Storage> });

// The Redis cases need a Redis at 127.0.0.1:6379 (`.ci/run` starts one) and
// FAIL, not skip, when none answers. Each case has its own key prefix, so the
// cases run in parallel on one Redis, and deletes `{prefix}:*` afterwards,
// passed or failed.
conformance!(redis, redis_backend::make());

mod redis_backend {
    use avtomatika::config::RedisConfig;
    use avtomatika::storage::RedisStorage;

    use super::*;

    const HOST: &str = "127.0.0.1";
    const PORT: u16 = 6379;
    const DB: u32 = 0;

    pub async fn make() -> Backend {
        let prefix = format!("avtomatika-test:{}", Uuid::new_v4());
        let config = RedisConfig { host: HOST.into(), port: PORT, db: DB };
        let storage = RedisStorage::connect(&config, &prefix, "test-instance", RETENTION)
            .await
            .unwrap_or_else(|e| panic!("the Redis conformance cases need Redis at {HOST}:{PORT}: {e}"));
        Backend { storage: Arc::new(storage), cleanup: Some(Box::pin(delete_keys(prefix))) }
    }

    /// Two instances on one Redis: a token reload on one is seen by the
    /// other at once, although the other had the old digest cached.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_reload_reaches_every_instance() {
        let prefix = format!("avtomatika-test:{}", Uuid::new_v4());
        let config = RedisConfig { host: HOST.into(), port: PORT, db: DB };
        let a = RedisStorage::connect(&config, &prefix, "instance-a", RETENTION).await.expect("Redis");
        let b = RedisStorage::connect(&config, &prefix, "instance-b", RETENTION).await.expect("Redis");
        let (old, new) = (avtomatika::auth::hash("old"), avtomatika::auth::hash("new"));
        a.replace_worker_tokens(HashMap::from([("w".to_owned(), old)])).await.unwrap();
        assert_eq!(b.worker_token("w").await.unwrap(), Some(old));
        assert_eq!(b.worker_for_token(&old).await.unwrap().as_deref(), Some("w"));
        a.replace_worker_tokens(HashMap::from([("w".to_owned(), new)])).await.unwrap();
        let started = Instant::now();
        while b.worker_token("w").await.unwrap() != Some(new) {
            assert!(started.elapsed() < Duration::from_secs(2), "instance b still trusts the old token");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(b.worker_for_token(&old).await.unwrap(), None);
        delete_keys(prefix).await;
    }

    /// A worker's channel is reached from any instance, and opening it on
    /// another instance ends the one held before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_channel_is_reached_from_every_instance() {
        let prefix = format!("avtomatika-test:{}", Uuid::new_v4());
        let config = RedisConfig { host: HOST.into(), port: PORT, db: DB };
        let a = RedisStorage::connect(&config, &prefix, "instance-a", RETENTION).await.expect("Redis");
        let b = RedisStorage::connect(&config, &prefix, "instance-b", RETENTION).await.expect("Redis");
        let (tx, mut on_a) = tokio::sync::mpsc::channel(8);
        a.open_channel("w", tx).await.unwrap();
        // The subscription lands asynchronously; a send counts once it has.
        let started = Instant::now();
        while !b.send_to_worker("w", "from b").await.unwrap() {
            assert!(started.elapsed() < Duration::from_secs(2), "instance a never took the channel");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(timeout(Duration::from_secs(2), on_a.recv()).await.unwrap().as_deref(), Some("from b"));
        let (tx, mut on_b) = tokio::sync::mpsc::channel(8);
        b.open_channel("w", tx).await.unwrap();
        assert_eq!(timeout(Duration::from_secs(2), on_a.recv()).await.unwrap(), None, "a let its socket go");
        let started = Instant::now();
        loop {
            assert!(a.send_to_worker("w", "from a").await.unwrap() || started.elapsed() < Duration::from_secs(2));
            if let Ok(Some(message)) = timeout(Duration::from_millis(50), on_b.recv()).await {
                assert_eq!(message, "from a");
                break;
            }
        }
        delete_keys(prefix).await;
    }

    /// Finding 17: an entry a live instance has read (buffered behind busy
    /// executor slots, or running a long step) is never claimed — by
    /// another instance nor by itself — however long it stays
    /// unacknowledged; once that instance has left, another takes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_entries_of_instances_that_are_gone_are_claimed() {
        /// Past the claim idle time (10 s) and one claim round (2 s).
        const HELD: Duration = Duration::from_secs(13);
        let prefix = format!("avtomatika-test:{}", Uuid::new_v4());
        let config = RedisConfig { host: HOST.into(), port: PORT, db: DB };
        let a = RedisStorage::connect(&config, &prefix, "instance-a", RETENTION).await.expect("Redis");
        let b = RedisStorage::connect(&config, &prefix, "instance-b", RETENTION).await.expect("Redis");
        let mut jobs = Vec::new();
        for _ in 0..3 {
            let job = plain_job();
            a.create_job(&job).await.unwrap();
            jobs.push(job.id);
        }
        // A reads all three at once and hands out the first; it stays busy.
        let running = a.next_job(PRESENT).await.unwrap().expect("a job for A");
        assert_eq!(running.job_id, jobs[0]);
        tokio::time::sleep(HELD).await;

        let taken = b.next_job(Duration::from_secs(3)).await.unwrap();
        assert!(taken.is_none(), "B claimed {taken:?}, which live A holds");
        let mut rest = Vec::new();
        while let Some(ticket) = a.next_job(Duration::from_secs(3)).await.unwrap() {
            rest.push(ticket.job_id);
            a.ack_job(ticket).await.unwrap();
        }
        assert_eq!(rest, jobs[1..], "A hands out its buffered entries once each, never the running one again");

        // A leaves without acknowledging the running entry: B takes it.
        a.leave().await.unwrap();
        drop(a);
        let started = Instant::now();
        let claimed = loop {
            if let Some(ticket) = b.next_job(Duration::from_secs(1)).await.unwrap() {
                break ticket;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "B never claimed what A left");
        };
        assert_eq!(claimed.job_id, jobs[0]);
        delete_keys(prefix).await;
    }

    /// A client's index loses its ended jobs once their retention lapses,
    /// even when nobody lists it: it was scored by creation and kept every
    /// job ever created (the soak bench saw Redis grow ~170 bytes a job).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_index_forgets_jobs_whose_retention_lapsed_unread() {
        let prefix = format!("avtomatika-test:{}", Uuid::new_v4());
        let config = RedisConfig { host: HOST.into(), port: PORT, db: DB };
        let storage = RedisStorage::connect(&config, &prefix, "instance-a", RETENTION).await.expect("Redis");
        let end_some = |n: usize| {
            let storage = &storage;
            async move {
                for _ in 0..n {
                    let mut job = plain_job();
                    job.client = "acme".into();
                    storage.create_job(&job).await.unwrap();
                    job.end(JobStatus::Finished, None);
                    assert!(storage.update_job(&mut job, FollowUp::None).await.unwrap());
                }
            }
        };
        end_some(200).await;
        tokio::time::sleep(EXPIRED).await;
        // One ending in 16 prunes; 200 more endings prune about 12 times.
        end_some(200).await;
        let client = ::redis::Client::open(format!("redis://{HOST}:{PORT}/{DB}")).expect("a valid Redis URL");
        let mut con = client.get_multiplexed_async_connection().await.expect("Redis");
        let indexed: u64 =
            ::redis::cmd("ZCARD").arg(format!("{prefix}:client:acme")).query_async(&mut con).await.expect("ZCARD");
        assert!(indexed <= 200, "the client index still holds {indexed} jobs; 200 have lapsed");
        delete_keys(prefix).await;
    }

    /// A read dropped while it waits (its blocking `XREADGROUP` still open in
    /// Redis) is handed the next job, and nobody reads that reply: the next
    /// read finds the job among this instance's own entries instead of
    /// leaving it pending until a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_dropped_while_it_waits_loses_no_job() {
        let prefix = format!("avtomatika-test:{}", Uuid::new_v4());
        let config = RedisConfig { host: HOST.into(), port: PORT, db: DB };
        let a = RedisStorage::connect(&config, &prefix, "instance-a", RETENTION).await.expect("Redis");
        for _ in 0..5 {
            let waiting = tokio::time::timeout(Duration::from_millis(200), a.next_job(Duration::from_secs(5))).await;
            assert!(waiting.is_err(), "nothing was queued");
            let job = plain_job();
            a.create_job(&job).await.unwrap();
            let ticket = a.next_job(PRESENT).await.unwrap().expect("the job the dropped read was handed");
            assert_eq!(ticket.job_id, job.id);
            a.ack_job(ticket).await.unwrap();
        }
        delete_keys(prefix).await;
    }

    /// Held-back acknowledgements survive a read cancelled while it sends
    /// them (the executor's read is dropped when shutdown starts): `leave`
    /// still sends them, so no step that ran is delivered again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledgements_survive_a_read_cancelled_mid_flush() {
        let prefix = format!("avtomatika-test:{}", Uuid::new_v4());
        let config = RedisConfig { host: HOST.into(), port: PORT, db: DB };
        let a = RedisStorage::connect(&config, &prefix, "instance-a", RETENTION).await.expect("Redis");
        for _ in 0..20 {
            let job = plain_job();
            a.create_job(&job).await.unwrap();
            // When the dropped read below got past its flush into its
            // blocking read, Redis hands that read this entry; the next read
            // must then find it among this consumer's own entries.
            let ticket = a.next_job(PRESENT).await.unwrap();
            a.ack_job(ticket.expect("the created job")).await.unwrap();
            // The next read sends the held-back acknowledgement first; it
            // is dropped at its first wait, as a `select!` drops it.
            let mut read = Box::pin(a.next_job(Duration::from_secs(5)));
            assert!(futures::poll!(read.as_mut()).is_pending());
            drop(read);
        }
        a.leave().await.unwrap();
        let client = ::redis::Client::open(format!("redis://{HOST}:{PORT}/{DB}")).expect("a valid Redis URL");
        let mut con = client.get_multiplexed_async_connection().await.expect("Redis");
        let summary: (u64, Option<String>, Option<String>, ::redis::Value) = ::redis::cmd("XPENDING")
            .arg(format!("{prefix}:jobs"))
            .arg("executors")
            .query_async(&mut con)
            .await
            .expect("XPENDING");
        assert_eq!(summary.0, 0, "entries of steps that ran are left unacknowledged");
        delete_keys(prefix).await;
    }

    /// Deletes every key under `prefix` (SCAN + DEL). `::redis` is the crate;
    /// `redis` is the module of Redis cases.
    async fn delete_keys(prefix: String) {
        let client = ::redis::Client::open(format!("redis://{HOST}:{PORT}/{DB}")).expect("a valid Redis URL");
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("cannot reach Redis at {HOST}:{PORT} to delete {prefix}:*: {e}"));
        let pattern = format!("{prefix}:*");
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await
                .expect("SCAN");
            if !keys.is_empty() {
                let _: u64 = ::redis::cmd("DEL").arg(&keys).query_async(&mut con).await.expect("DEL");
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// A fresh pending job with nothing optional set.
fn plain_job() -> Job {
    Job::new("hello".into(), "default".into(), "start".into(), json!({"name": "Ada"}), None)
}

/// A job with every field set to something other than its default.
fn full_job() -> Job {
    let mut job = Job::new(
        "order-flow".into(),
        "acme".into(),
        "charge".into(),
        json!({"order": {"id": 42, "items": ["a", "b"], "total": 19.99, "gift": false, "note": null}}),
        Some("https://hooks.example.com/jobs?tenant=acme&x=1".into()),
    );
    job.status = JobStatus::WaitingForWorker;
    job.merge_history(object(json!({
        "validated": true,
        "count": 3,
        "negative": -7,
        "big": u64::MAX,
        "ratio": 0.25,
        "whole_float": 1.0,
        "nothing": null,
        "greeting": "Grüße, 世界 ✓",
        "nested": {"list": [1, 2.5, null, true, "x", {"deep": []}], "empty": {}},
    })));
    job.error_message = Some("previous attempt timed out — retrying".into());
    job.handler_failures = 2;
    job.current_task = Some(TaskRecord {
        task_id: Uuid::new_v4(),
        task_type: "charge-card".into(),
        params: json!({"amount": 1999, "currency": "EUR", "split": [0.5, 0.25, 0.25]}),
        priority: -3,
        transitions: BTreeMap::from([
            ("success".to_owned(), "ship".to_owned()),
            ("failure".to_owned(), "refund".to_owned()),
            ("needs_review".to_owned(), "review".to_owned()),
        ]),
        worker_id: Some("worker-7".into()),
        retries: 1,
        dispatched_at: job.created_at + chrono::TimeDelta::milliseconds(1234),
        deadline: job.created_at + chrono::TimeDelta::seconds(300),
        cancel_requested: true,
        routing: Routing {
            strategy: Strategy::BestValue,
            requirements: Some(object(json!({"gpu_info": {"model": "RTX", "vram_gb": 16}, "cpu_cores": 8}))),
            max_cost: Some(0.25),
            timeout_seconds: Some(90),
        },
    });
    job.updated_at = job.created_at + chrono::TimeDelta::seconds(5);
    job
}

fn task(job_id: JobId, priority: i32) -> TaskPayload {
    TaskPayload {
        job_id,
        task_id: Uuid::new_v4(),
        task_type: "greet".into(),
        params: json!({"name": "Ada", "priority": priority, "tags": ["x", 1, null]}),
        priority,
        tracing_context: object(json!({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})),
    }
}

fn worker(id: &str, task_types: &[&str]) -> WorkerInfo {
    WorkerInfo {
        worker_id: id.to_owned(),
        worker_type: Some("cpu".into()),
        supported_tasks: task_types.iter().map(|t| (*t).to_owned()).collect(),
        max_concurrent_tasks: Some(4),
        status: "idle".into(),
        load: 0.0,
        in_flight: 0,
        reputation: 1.0,
        extra: object(json!({"region": "eu", "labels": {"tier": 1}})),
    }
}

fn push(worker_id: &str, task: &TaskPayload) -> FollowUp {
    FollowUp::push(worker_id.to_owned(), task.clone())
}

fn park(task_type: &str) -> FollowUp {
    FollowUp::park(task_type.to_owned())
}

/// An update that gives `worker_id`'s slot back and judges nothing.
fn released(worker_id: &str) -> Release<'_> {
    Release { worker_id, verdict: None }
}

/// What dispatch reads of a candidate worker: id, whether it reports idle,
/// its tasks in flight.
#[derive(Debug, PartialEq, Eq)]
struct Load {
    worker_id: String,
    idle: bool,
    in_flight: u32,
}

fn load(worker_id: &str, idle: bool, in_flight: u32) -> Load {
    Load { worker_id: worker_id.to_owned(), idle, in_flight }
}

/// `workers_for` as loads, sorted by worker id (the trait promises no order).
async fn candidates(s: &Arc<dyn Storage>, task_type: &str) -> Vec<Load> {
    let mut loads: Vec<Load> = s
        .workers_for(task_type)
        .await
        .unwrap()
        .into_iter()
        .map(|w| Load { idle: w.status == WorkerStatus::Idle, worker_id: w.worker_id, in_flight: w.in_flight })
        .collect();
    loads.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    loads
}

/// `live_workers`, sorted by worker id.
async fn live(s: &Arc<dyn Storage>) -> Vec<WorkerInfo> {
    let mut workers = s.live_workers().await.unwrap();
    workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    workers
}

async fn live_ids(s: &Arc<dyn Storage>) -> Vec<String> {
    live(s).await.into_iter().map(|w| w.worker_id).collect()
}

/// The in-flight count of a worker taking `task_type`.
async fn in_flight(s: &Arc<dyn Storage>, task_type: &str, worker_id: &str) -> u32 {
    let loads = candidates(s, task_type).await;
    loads
        .iter()
        .find(|l| l.worker_id == worker_id)
        .unwrap_or_else(|| panic!("{worker_id} is not a candidate for {task_type}: {loads:?}"))
        .in_flight
}

/// Takes (and acknowledges) everything queued for the executor, in order.
async fn drain_queue(s: &Arc<dyn Storage>) -> Vec<JobId> {
    let mut ids = Vec::new();
    while let Some(ticket) = s.next_job(ABSENT).await.unwrap() {
        ids.push(ticket.job_id);
        s.ack_job(ticket).await.unwrap();
    }
    ids
}

async fn created(s: &Arc<dyn Storage>) -> Job {
    let job = plain_job();
    s.create_job(&job).await.unwrap();
    job
}

/// A stored job of `client`, created `secs` seconds after a fixed instant.
async fn created_for(s: &Arc<dyn Storage>, client: &str, base: chrono::DateTime<chrono::Utc>, secs: i64) -> Job {
    let mut job = plain_job();
    job.client = client.to_owned();
    job.created_at = base + chrono::TimeDelta::seconds(secs);
    job.updated_at = job.created_at;
    s.create_job(&job).await.unwrap();
    job
}

/// `jobs_with_status` with one page holding everything.
async fn with_status(s: &Arc<dyn Storage>, status: JobStatus) -> Vec<JobId> {
    s.jobs_with_status(status, ALL, 0).await.unwrap()
}

/// `job_counts` with zero counts left out (a backend may list them or not).
async fn counts(s: &Arc<dyn Storage>) -> (BTreeMap<JobStatus, u64>, u64) {
    let JobCounts { by_status, queued } = s.job_counts().await.unwrap();
    (by_status.into_iter().filter(|(_, n)| *n > 0).collect(), queued)
}

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

/// Starts `call` (a poll on an empty queue) on its own task and returns once
/// it is waiting: it has been polled, and has still not returned after
/// [`STILL_WAITING`] — returning early on an empty queue is a failure itself.
async fn start_waiting<T, F>(call: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (polled_tx, polled_rx) = oneshot::channel();
    let mut handle = tokio::spawn(async move {
        let mut call = std::pin::pin!(call);
        let mut polled_tx = Some(polled_tx);
        std::future::poll_fn(|cx| {
            let poll = call.as_mut().poll(cx);
            if let Some(tx) = polled_tx.take() {
                let _ = tx.send(());
            }
            poll
        })
        .await
    });
    polled_rx.await.expect("the poll started");
    assert!(timeout(STILL_WAITING, &mut handle).await.is_err(), "a poll on an empty queue returned at once");
    handle
}

/// Awaits a poll started by [`start_waiting`] that something queued must have woken.
async fn woken<T>(handle: JoinHandle<T>, what: &str) -> T {
    let queued = Instant::now();
    let outcome = timeout(WOKEN_WITHIN, handle)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting {WOKEN_WITHIN:?} after something was queued"))
        .expect("the poll's task");
    assert!(queued.elapsed() < WOKEN_WITHIN);
    outcome
}

/// Asserts that `elapsed`, the duration of an empty poll with `timeout`, is about `timeout`.
fn assert_waited(elapsed: Duration, timeout: Duration, what: &str) {
    assert!(elapsed >= timeout * 4 / 5, "{what} gave up after {elapsed:?}, before its timeout of {timeout:?}");
    assert!(elapsed < timeout + LATE, "{what} took {elapsed:?} with a timeout of {timeout:?}");
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

mod cases {
    use super::*;

    // ---- routing ------------------------------------------------------------

    pub async fn round_robin_turns_count_up_per_name_across_callers(s: Arc<dyn Storage>) {
        let turns = futures::future::join_all((0..20).map(|_| s.next_turn("dispatch:render"))).await;
        let mut turns: Vec<u64> = turns.into_iter().map(Result::unwrap).collect();
        turns.sort_unstable();
        assert_eq!(turns, (0..20).collect::<Vec<u64>>(), "every caller gets its own turn");
        assert_eq!(s.next_turn("dispatch:other").await.unwrap(), 0, "counters are per name");
    }

    pub async fn workers_for_a_task_type_come_with_load_and_reputation(s: Arc<dyn Storage>) {
        s.register_worker(worker("a", &["render", "x"]), LONG_TTL).await.unwrap();
        s.register_worker(worker("b", &["x"]), LONG_TTL).await.unwrap();
        s.add_in_flight("a", 2).await.unwrap();
        s.record_outcome("a", false).await.unwrap();
        let found = s.workers_for("render").await.unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0], WorkerInfo { in_flight: 2, reputation: 0.0, ..worker("a", &["render", "x"]) });
        let mut both: Vec<String> = s.workers_for("x").await.unwrap().into_iter().map(|w| w.worker_id).collect();
        both.sort();
        assert_eq!(both, ["a", "b"]);
        assert!(s.workers_for("nobody").await.unwrap().is_empty());
        s.record_outcome("ghost", true).await.unwrap();
        assert!(live_ids(&s).await.iter().all(|id| id != "ghost"), "outcomes of unknown workers are dropped");
    }

    pub async fn reputation_is_the_share_of_successes_in_a_sliding_window(s: Arc<dyn Storage>) {
        s.register_worker(worker("w", &["t"]), LONG_TTL).await.unwrap();
        let reputation = |s: Arc<dyn Storage>| async move { live(&s).await[0].reputation };
        assert_eq!(reputation(s.clone()).await, 1.0, "a new worker starts trusted");
        for ok in [true, false, true, true] {
            s.record_outcome("w", ok).await.unwrap();
        }
        assert_eq!(reputation(s.clone()).await, 0.75);
        // Only the last REPUTATION_WINDOW count: a run of successes washes out old failures.
        for _ in 0..REPUTATION_WINDOW {
            s.record_outcome("w", true).await.unwrap();
        }
        assert_eq!(reputation(s.clone()).await, 1.0);
        s.record_outcome("w", false).await.unwrap();
        let expected = (REPUTATION_WINDOW - 1) as f64 / REPUTATION_WINDOW as f64;
        assert_eq!(reputation(s.clone()).await, expected);
        // A re-registration does not launder it, and heartbeats show it.
        s.register_worker(worker("w", &["t"]), LONG_TTL).await.unwrap();
        assert_eq!(reputation(s.clone()).await, expected);
        let patch = WorkerPatch { status: Some("busy".into()), ..WorkerPatch::default() };
        let refreshed = s.refresh_worker("w", Some(patch), LONG_TTL).await.unwrap().unwrap();
        assert_eq!(refreshed.reputation, expected);
    }

    pub async fn a_releasing_update_counts_its_verdict_once_applied(s: Arc<dyn Storage>) {
        s.register_worker(worker("w", &["t"]), LONG_TTL).await.unwrap();
        s.add_in_flight("w", 2).await.unwrap();
        let mut job = created(&s).await;
        let mut stale = job.clone();
        let failed = |verdict| Release { worker_id: "w", verdict };
        assert!(s.update_job_releasing(&mut job, FollowUp::None, failed(Some(false))).await.unwrap());
        assert!(!s.update_job_releasing(&mut stale, FollowUp::None, failed(Some(false))).await.unwrap());
        assert!(s.update_job_releasing(&mut job, FollowUp::None, failed(Some(true))).await.unwrap());
        assert!(s.update_job_releasing(&mut job, FollowUp::None, failed(None)).await.unwrap());
        let w = &live(&s).await[0];
        assert_eq!(w.reputation, 0.5, "one failure, one success; the refused update and None do not count");
        assert_eq!(w.in_flight, 0);
    }

    // ---- schedule slots -------------------------------------------------------

    pub async fn a_schedule_slot_is_claimed_once(s: Arc<dyn Storage>) {
        let ttl = Duration::from_secs(60);
        let claims: Vec<_> = (0..16)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.claim_slot("nightly", 1_780_000_000, ttl).await.unwrap() })
            })
            .collect();
        let mut won = 0;
        for claim in claims {
            won += usize::from(claim.await.unwrap());
        }
        assert_eq!(won, 1, "one of 16 concurrent claims wins");
        assert!(s.claim_slot("nightly", 1_780_000_060, ttl).await.unwrap(), "the next slot is free");
        assert!(s.claim_slot("weekly", 1_780_000_000, ttl).await.unwrap(), "slots are per schedule");
        assert!(!s.claim_slot("nightly", 1_780_000_000, ttl).await.unwrap());
    }

    // ---- the watch index ----------------------------------------------------

    pub async fn jobs_waiting_on_a_task_are_watched_until_they_move_on(s: Arc<dyn Storage>) {
        let now = chrono::Utc::now();
        let at = |secs: i64| now + chrono::TimeDelta::seconds(secs);
        let mut waiting = Vec::new();
        for offset in [30, 10, 20] {
            let mut job = plain_job();
            s.create_job(&job).await.unwrap();
            let mut task = full_job().current_task.unwrap();
            task.deadline = at(offset);
            job.current_task = Some(task);
            job.status = JobStatus::WaitingForWorker;
            assert!(s.update_job(&mut job, FollowUp::None).await.unwrap());
            waiting.push(job);
        }
        assert!(s.overdue_jobs(at(5), 10).await.unwrap().is_empty(), "nothing is due yet");
        assert_eq!(s.overdue_jobs(at(25), 10).await.unwrap(), vec![waiting[1].id, waiting[2].id], "earliest first");
        assert_eq!(s.overdue_jobs(at(60), 1).await.unwrap(), vec![waiting[1].id], "at most max");

        // A new deadline replaces the old one; moving on leaves the index.
        let task = waiting[1].current_task.as_mut().unwrap();
        task.deadline = at(50);
        assert!(s.update_job(&mut waiting[1], FollowUp::None).await.unwrap());
        waiting[2].status = JobStatus::Running;
        assert!(s.update_job(&mut waiting[2], FollowUp::Enqueue).await.unwrap());
        assert_eq!(s.overdue_jobs(at(40), 10).await.unwrap(), vec![waiting[0].id]);
        s.unwatch(waiting[0].id).await.unwrap();
        assert_eq!(s.overdue_jobs(at(60), 10).await.unwrap(), vec![waiting[1].id]);
    }

    // ---- jobs ---------------------------------------------------------------

    pub async fn job_round_trips_every_field(s: Arc<dyn Storage>) {
        let full = full_job();
        let plain = plain_job();
        s.create_job(&full).await.unwrap();
        s.create_job(&plain).await.unwrap();
        assert_eq!(s.get_job(full.id).await.unwrap(), Some(full.clone()));
        assert_eq!(s.get_job(plain.id).await.unwrap(), Some(plain.clone()));
        assert_eq!(s.get_job(full.id).await.unwrap(), Some(full), "a read changes nothing");
        assert_eq!(s.get_job(Uuid::new_v4()).await.unwrap(), None, "an unknown id");

        // An update round-trips every field too, the bumped version included.
        let mut updated = full_job();
        s.create_job(&updated).await.unwrap();
        updated.current_state = "ship".into();
        updated.status = JobStatus::Running;
        updated.current_task = None;
        updated.error_message = None;
        updated.webhook_url = None;
        updated.merge_history(object(json!({"charged": {"amount": 1999}})));
        assert!(s.update_job(&mut updated, FollowUp::None).await.unwrap());
        assert_eq!(s.get_job(updated.id).await.unwrap(), Some(updated));
    }

    pub async fn updates_are_refused_from_a_stale_version(s: Arc<dyn Storage>) {
        let job = created(&s).await;
        let mut a = s.get_job(job.id).await.unwrap().unwrap();
        let mut b = a.clone();
        assert_eq!(a.version, 0);

        a.current_state = "a".into();
        assert!(s.update_job(&mut a, FollowUp::None).await.unwrap());
        assert_eq!(a.version, 1, "a stored update bumps the version by one");
        assert_eq!(s.get_job(job.id).await.unwrap().as_ref(), Some(&a), "the caller's job is what was stored");

        b.current_state = "b".into();
        b.error_message = Some("lost".into());
        assert!(!s.update_job(&mut b, FollowUp::None).await.unwrap(), "an update from version 0 after version 1");
        assert_eq!(b.version, 0, "a refused update leaves the caller's version alone");
        assert_eq!(s.get_job(job.id).await.unwrap().as_ref(), Some(&a), "a refused update changes nothing");

        a.current_state = "a2".into();
        assert!(s.update_job(&mut a, FollowUp::None).await.unwrap());
        assert_eq!(a.version, 2);
        b.version = 1;
        assert!(!s.update_job(&mut b, FollowUp::None).await.unwrap(), "version 1 is stale too");
        assert_eq!(b.version, 1);
        let mut ahead = a.clone();
        ahead.version = 7;
        ahead.current_state = "ahead".into();
        assert!(!s.update_job(&mut ahead, FollowUp::None).await.unwrap(), "a version the store never had");
        assert_eq!(ahead.version, 7);
        assert_eq!(s.get_job(job.id).await.unwrap().as_ref(), Some(&a));

        let mut never_created = plain_job();
        assert!(!s.update_job(&mut never_created, FollowUp::Enqueue).await.unwrap(), "a job never created");
        assert_eq!(never_created.version, 0);
        assert_eq!(s.get_job(never_created.id).await.unwrap(), None, "a refused update creates nothing");
        assert_eq!(drain_queue(&s).await, vec![job.id], "only the creation queued the job");
    }

    pub async fn refused_updates_apply_no_follow_up(s: Arc<dyn Storage>) {
        s.register_worker(worker("w", &["greet"]), LONG_TTL).await.unwrap();
        let job = created(&s).await;
        assert_eq!(drain_queue(&s).await, vec![job.id]);
        let stale = s.get_job(job.id).await.unwrap().unwrap();
        let mut current = stale.clone();
        assert!(s.update_job(&mut current, FollowUp::None).await.unwrap());

        let queued = task(job.id, 1);
        for follow_up in [FollowUp::Enqueue, push("w", &queued), park("greet")] {
            let mut stale = stale.clone();
            assert!(!s.update_job(&mut stale, follow_up.clone()).await.unwrap(), "{follow_up:?}");
        }
        assert_eq!(drain_queue(&s).await, NO_JOBS, "refused Enqueue");
        assert_eq!(s.pop_task("w", ABSENT).await.unwrap(), None, "refused PushTask");
        assert_eq!(candidates(&s, "greet").await, vec![load("w", true, 0)], "refused PushTask");
        assert_eq!(s.take_parked("greet", 10).await.unwrap(), NO_JOBS, "refused Park");
        assert_eq!(s.get_job(job.id).await.unwrap(), Some(current));
    }

    pub async fn one_of_concurrent_updates_from_one_version_wins(s: Arc<dyn Storage>) {
        const WRITERS: usize = 16;
        let job = created(&s).await;
        let read = s.get_job(job.id).await.unwrap().unwrap();
        let barrier = Arc::new(Barrier::new(WRITERS));
        let writers: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (s, barrier, mut job) = (s.clone(), barrier.clone(), read.clone());
                tokio::spawn(async move {
                    job.current_state = format!("writer-{i}");
                    barrier.wait().await;
                    let won = s.update_job(&mut job, FollowUp::Enqueue).await.unwrap();
                    (won, job)
                })
            })
            .collect();
        let (mut winners, mut losers) = (Vec::new(), Vec::new());
        for writer in writers {
            let (won, job) = writer.await.unwrap();
            if won { &mut winners } else { &mut losers }.push(job);
        }
        let states: Vec<&str> = winners.iter().map(|j| j.current_state.as_str()).collect();
        assert_eq!(winners.len(), 1, "exactly one writer wins, not {states:?}");
        assert_eq!(winners[0].version, 1);
        assert!(losers.iter().all(|j| j.version == 0), "a loser's version is left alone");
        assert_eq!(s.get_job(job.id).await.unwrap().as_ref(), Some(&winners[0]));
        assert_eq!(drain_queue(&s).await, vec![job.id, job.id], "the creation's and the winner's Enqueue only");
    }

    pub async fn ended_jobs_are_forgotten_after_the_retention(s: Arc<dyn Storage>) {
        let waiting = created(&s).await;
        let mut first = created(&s).await;
        first.end(JobStatus::Finished, None);
        assert!(s.update_job(&mut first, FollowUp::None).await.unwrap());
        assert_eq!(s.get_job(first.id).await.unwrap().as_ref(), Some(&first), "an ended job is kept for a while");
        tokio::time::sleep(EXPIRED).await;

        // The memory backend forgets ended jobs as later ones end, so end one.
        let mut later = created(&s).await;
        later.end(JobStatus::Failed, Some("boom".into()));
        assert!(s.update_job(&mut later, FollowUp::None).await.unwrap());
        assert_eq!(s.get_job(first.id).await.unwrap(), None, "ended more than the retention ago");
        assert!(!s.update_job(&mut first, FollowUp::None).await.unwrap(), "a forgotten job cannot be updated");
        assert_eq!(s.get_job(later.id).await.unwrap().as_ref(), Some(&later));
        assert_eq!(s.get_job(waiting.id).await.unwrap(), Some(waiting), "jobs that have not ended are kept");
    }

    /// An operator's retry brings a quarantined job back to `running`: the
    /// retention its end started no longer applies, in the record, the status
    /// index or the client's index.
    pub async fn a_revived_job_outlives_the_retention_of_its_first_end(s: Arc<dyn Storage>) {
        let mut job = created(&s).await;
        job.end(JobStatus::Quarantined, Some("permanent".into()));
        assert!(s.update_job(&mut job, FollowUp::None).await.unwrap());
        job.status = JobStatus::Running;
        job.error_message = None;
        assert!(s.update_job(&mut job, FollowUp::None).await.unwrap());
        tokio::time::sleep(EXPIRED).await;

        // The memory backend forgets ended jobs as later ones end, so end one.
        let mut later = created(&s).await;
        later.end(JobStatus::Failed, Some("boom".into()));
        assert!(s.update_job(&mut later, FollowUp::None).await.unwrap());
        assert_eq!(s.get_job(job.id).await.unwrap().as_ref(), Some(&job), "a revived job is kept");
        assert_eq!(with_status(&s, JobStatus::Running).await, vec![job.id]);
        assert!(with_status(&s, JobStatus::Quarantined).await.is_empty());
        let listed = s.client_jobs(&job.client, 10, 0).await.unwrap();
        assert!(ids(&listed).contains(&job.id), "still in its client's index: {:?}", ids(&listed));

        // Ending again starts a new retention.
        job.end(JobStatus::Finished, None);
        assert!(s.update_job(&mut job, FollowUp::None).await.unwrap());
        tokio::time::sleep(EXPIRED).await;
        let mut last = created(&s).await;
        last.end(JobStatus::Failed, Some("boom".into()));
        assert!(s.update_job(&mut last, FollowUp::None).await.unwrap());
        assert_eq!(s.get_job(job.id).await.unwrap(), None, "ended again more than the retention ago");
    }

    // ---- the job queue ------------------------------------------------------

    pub async fn queued_jobs_come_out_in_order(s: Arc<dyn Storage>) {
        let a = created(&s).await;
        let b = created(&s).await;
        let ticket = s.next_job(PRESENT).await.unwrap().expect("the first created job");
        assert_eq!(ticket.job_id, a.id);
        s.ack_job(ticket).await.unwrap();
        let ticket = s.next_job(PRESENT).await.unwrap().expect("the second created job");
        assert_eq!(ticket.job_id, b.id);
        s.ack_job(ticket).await.unwrap();

        let started = Instant::now();
        assert!(s.next_job(EMPTY_WAIT).await.unwrap().is_none(), "acknowledged jobs do not come back");
        assert_waited(started.elapsed(), EMPTY_WAIT, "next_job on an empty queue");

        let mut a = s.get_job(a.id).await.unwrap().unwrap();
        assert!(s.update_job(&mut a, FollowUp::None).await.unwrap());
        assert_eq!(drain_queue(&s).await, NO_JOBS, "FollowUp::None queues nothing");
        assert!(s.update_job(&mut a, FollowUp::Enqueue).await.unwrap());
        assert!(s.update_job(&mut a, FollowUp::Enqueue).await.unwrap());
        let mut b = s.get_job(b.id).await.unwrap().unwrap();
        assert!(s.update_job(&mut b, FollowUp::Enqueue).await.unwrap());
        assert_eq!(drain_queue(&s).await, vec![a.id, a.id, b.id], "a job queued twice comes out twice");
    }

    pub async fn a_waiting_next_job_wakes_when_a_job_is_queued(s: Arc<dyn Storage>) {
        let waiting = start_waiting({
            let s = s.clone();
            async move { s.next_job(LONG_POLL).await }
        })
        .await;
        let job = created(&s).await;
        let ticket = woken(waiting, "next_job").await.unwrap().expect("the created job");
        assert_eq!(ticket.job_id, job.id);
        s.ack_job(ticket).await.unwrap();

        let mut job = s.get_job(job.id).await.unwrap().unwrap();
        let waiting = start_waiting({
            let s = s.clone();
            async move { s.next_job(LONG_POLL).await }
        })
        .await;
        assert!(s.update_job(&mut job, FollowUp::Enqueue).await.unwrap());
        let ticket = woken(waiting, "next_job").await.unwrap().expect("the enqueued job");
        assert_eq!(ticket.job_id, job.id);
        s.ack_job(ticket).await.unwrap();
    }

    pub async fn concurrent_next_job_calls_share_the_queue(s: Arc<dyn Storage>) {
        const JOBS: usize = 24;
        const CONSUMERS: usize = 4;
        let mut expected = Vec::new();
        for _ in 0..JOBS {
            expected.push(created(&s).await.id);
        }
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { drain_queue(&s).await })
            })
            .collect();
        let mut taken = Vec::new();
        for consumer in consumers {
            taken.extend(consumer.await.unwrap());
        }
        taken.sort();
        expected.sort();
        assert_eq!(taken, expected, "every queued job is handed out exactly once");
    }

    // ---- worker task queues -------------------------------------------------

    pub async fn tasks_pop_for_their_worker_by_priority_then_in_order(s: Arc<dyn Storage>) {
        s.register_worker(worker("w1", &["greet"]), LONG_TTL).await.unwrap();
        s.register_worker(worker("w2", &["greet"]), LONG_TTL).await.unwrap();
        let mut job = created(&s).await;
        let tasks: Vec<TaskPayload> = [0, 5, 5, 1, 0].into_iter().map(|p| task(job.id, p)).collect();
        for t in &tasks {
            assert!(s.update_job(&mut job, push("w1", t)).await.unwrap());
        }
        assert_eq!(s.pop_task("w2", ABSENT).await.unwrap(), None, "tasks go to their worker only");
        assert_eq!(s.pop_task("unregistered", ABSENT).await.unwrap(), None);
        for i in [1, 2, 3, 0, 4] {
            let popped = s.pop_task("w1", PRESENT).await.unwrap();
            assert_eq!(popped.as_ref(), Some(&tasks[i]), "expected task {i} (priority {})", tasks[i].priority);
        }
        assert_eq!(s.pop_task("w1", ABSENT).await.unwrap(), None);
        assert_eq!(drain_queue(&s).await, vec![job.id], "PushTask does not queue the job itself");
    }

    pub async fn task_priorities_span_all_of_i32(s: Arc<dyn Storage>) {
        let mut job = created(&s).await;
        let priorities = [0, i32::MIN, -1, i32::MAX, 1, i32::MAX, i32::MIN, i32::MAX - 1, i32::MIN + 1];
        let tasks: Vec<TaskPayload> = priorities.into_iter().map(|p| task(job.id, p)).collect();
        for t in &tasks {
            assert!(s.update_job(&mut job, push("w", t)).await.unwrap());
        }
        for i in [3, 5, 7, 4, 0, 2, 8, 1, 6] {
            let popped = s.pop_task("w", PRESENT).await.unwrap();
            assert_eq!(popped.as_ref(), Some(&tasks[i]), "expected task {i} (priority {})", tasks[i].priority);
        }
        assert_eq!(s.pop_task("w", ABSENT).await.unwrap(), None);
    }

    pub async fn pop_on_an_empty_queue_waits_out_its_timeout(s: Arc<dyn Storage>) {
        let started = Instant::now();
        assert_eq!(s.pop_task("w", EMPTY_WAIT).await.unwrap(), None);
        assert_waited(started.elapsed(), EMPTY_WAIT, "pop_task on a queue never used");

        let mut job = created(&s).await;
        let queued = task(job.id, 0);
        assert!(s.update_job(&mut job, push("w", &queued)).await.unwrap());
        assert_eq!(s.pop_task("w", PRESENT).await.unwrap(), Some(queued));
        let started = Instant::now();
        assert_eq!(s.pop_task("w", EMPTY_WAIT).await.unwrap(), None);
        assert_waited(started.elapsed(), EMPTY_WAIT, "pop_task on an emptied queue");
    }

    pub async fn a_waiting_pop_wakes_when_a_task_is_pushed(s: Arc<dyn Storage>) {
        s.register_worker(worker("w", &["greet"]), LONG_TTL).await.unwrap();
        let mut job = created(&s).await;
        let waiting = start_waiting({
            let s = s.clone();
            async move { s.pop_task("w", LONG_POLL).await }
        })
        .await;
        let queued = task(job.id, 3);
        assert!(s.update_job(&mut job, push("w", &queued)).await.unwrap());
        assert_eq!(woken(waiting, "pop_task").await.unwrap(), Some(queued));
        assert_eq!(s.pop_task("w", ABSENT).await.unwrap(), None, "the task was handed out once");
    }

    /// `stop` (a draining server) ends a waiting pop at once without taking
    /// anything; a pop asked to stop still returns a task that is queued.
    pub async fn a_stopped_pop_ends_its_wait_and_never_takes_a_task_it_does_not_return(s: Arc<dyn Storage>) {
        let mut job = created(&s).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let waiting = start_waiting({
            let (s, stop) = (s.clone(), stop.clone());
            async move { s.pop_task_until("w", LONG_POLL, &stop).await }
        })
        .await;
        stop.cancel();
        assert_eq!(woken(waiting, "pop_task_until").await.unwrap(), None);

        let queued = task(job.id, 0);
        assert!(s.update_job(&mut job, push("w", &queued)).await.unwrap());
        assert_eq!(s.pop_task_until("w", LONG_POLL, &stop).await.unwrap(), Some(queued), "queued before the stop");
        assert_eq!(s.pop_task_until("w", LONG_POLL, &stop).await.unwrap(), None);
    }

    pub async fn each_pushed_task_wakes_one_waiting_pop(s: Arc<dyn Storage>) {
        let mut job = created(&s).await;
        let mut waiting = Vec::new();
        for worker_id in ["w", "w", "other"] {
            let s = s.clone();
            waiting.push(start_waiting(async move { s.pop_task(worker_id, LONG_POLL).await }).await);
        }
        let other = waiting.pop().unwrap();
        let (first, second) = (task(job.id, 0), task(job.id, 0));
        assert!(s.update_job(&mut job, push("w", &first)).await.unwrap());
        assert!(s.update_job(&mut job, push("w", &second)).await.unwrap());
        let mut popped = Vec::new();
        for poll in waiting {
            popped.push(woken(poll, "pop_task").await.unwrap().expect("a task").task_id);
        }
        popped.sort();
        let mut expected = vec![first.task_id, second.task_id];
        expected.sort();
        assert_eq!(popped, expected, "each of two waiting polls gets one of the two tasks");

        let for_other = task(job.id, 0);
        assert!(s.update_job(&mut job, push("other", &for_other)).await.unwrap());
        assert_eq!(woken(other, "pop_task of another worker").await.unwrap(), Some(for_other));
    }

    pub async fn pushed_tasks_count_in_flight(s: Arc<dyn Storage>) {
        s.register_worker(worker("w", &["greet"]), LONG_TTL).await.unwrap();
        s.register_worker(worker("other", &["greet"]), LONG_TTL).await.unwrap();
        let mut job = created(&s).await;
        for n in 1..=3 {
            let queued = task(job.id, 0);
            assert!(s.update_job(&mut job, push("w", &queued)).await.unwrap());
            assert_eq!(candidates(&s, "greet").await, vec![load("other", true, 0), load("w", true, n)]);
        }
        for _ in 0..3 {
            assert!(s.pop_task("w", PRESENT).await.unwrap().is_some());
        }
        assert_eq!(in_flight(&s, "greet", "w").await, 3, "a popped task is still in flight until its result");
        s.add_in_flight("w", -1).await.unwrap();
        assert_eq!(candidates(&s, "greet").await, vec![load("other", true, 0), load("w", true, 2)]);
    }

    pub async fn an_applied_update_can_release_an_in_flight_slot(s: Arc<dyn Storage>) {
        s.register_worker(worker("w", &["greet"]), LONG_TTL).await.unwrap();
        let mut job = created(&s).await;
        for _ in 0..2 {
            let queued = task(job.id, 0);
            assert!(s.update_job(&mut job, push("w", &queued)).await.unwrap());
        }
        assert_eq!(in_flight(&s, "greet", "w").await, 2);

        let mut stale = job.clone();
        stale.version -= 1;
        assert!(!s.update_job_releasing(&mut stale, FollowUp::None, released("w")).await.unwrap());
        assert_eq!(in_flight(&s, "greet", "w").await, 2, "a refused update releases nothing");

        job.status = JobStatus::Running;
        assert!(s.update_job_releasing(&mut job, FollowUp::Enqueue, released("w")).await.unwrap());
        assert_eq!(in_flight(&s, "greet", "w").await, 1);
        assert_eq!(drain_queue(&s).await, vec![job.id, job.id], "created, then enqueued by the update");
        assert!(s.update_job_releasing(&mut job, FollowUp::None, released("unknown-worker")).await.unwrap());
    }

    // ---- parked jobs --------------------------------------------------------

    pub async fn parked_jobs_are_taken_in_order_in_batches_per_task_type(s: Arc<dyn Storage>) {
        let mut jobs = Vec::new();
        for task_type in ["a", "b", "a", "b", "a"] {
            let mut job = created(&s).await;
            assert!(s.update_job(&mut job, park(task_type)).await.unwrap());
            jobs.push(job.id);
        }
        assert_eq!(drain_queue(&s).await, jobs, "parking does not queue the job");

        assert_eq!(s.take_parked("a", 0).await.unwrap(), NO_JOBS, "max 0 takes nothing");
        assert_eq!(s.take_parked("a", 2).await.unwrap(), vec![jobs[0], jobs[2]]);
        assert_eq!(s.take_parked("b", 10).await.unwrap(), vec![jobs[1], jobs[3]]);
        assert_eq!(s.take_parked("a", 2).await.unwrap(), vec![jobs[4]]);
        assert_eq!(s.take_parked("a", 2).await.unwrap(), NO_JOBS);
        assert_eq!(s.take_parked("b", 2).await.unwrap(), NO_JOBS);
        assert_eq!(s.take_parked("never-parked", 2).await.unwrap(), NO_JOBS);

        let mut job = s.get_job(jobs[0]).await.unwrap().unwrap();
        assert!(s.update_job(&mut job, park("a")).await.unwrap());
        assert!(s.update_job(&mut job, park("a")).await.unwrap());
        assert_eq!(s.take_parked("a", 10).await.unwrap(), vec![job.id, job.id], "parked twice, taken twice");
        assert_eq!(s.take_parked("a", 10).await.unwrap(), NO_JOBS);
    }

    // ---- the worker registry ------------------------------------------------

    /// More workers for one type than Redis' Lua can `unpack` at once (about
    /// 8,000): every one is still a candidate, not an error that stops every
    /// dispatch of the type.
    pub async fn thousands_of_workers_of_one_task_type_are_all_candidates(s: Arc<dyn Storage>) {
        const WORKERS: usize = 8_500;
        let ids: Vec<String> = (0..WORKERS).map(|i| format!("bulk-{i:05}")).collect();
        for batch in ids.chunks(250) {
            let registrations = batch.iter().map(|id| s.register_worker(worker(id, &["bulk"]), LONG_TTL));
            for registered in futures::future::join_all(registrations).await {
                registered.unwrap();
            }
        }
        let mut found: Vec<String> = candidates(&s, "bulk").await.into_iter().map(|w| w.worker_id).collect();
        found.sort();
        assert_eq!(found, ids);
    }

    pub async fn registered_workers_are_candidates_for_their_task_types(s: Arc<dyn Storage>) {
        assert_eq!(live(&s).await, vec![]);
        assert_eq!(candidates(&s, "a").await, vec![]);
        let w1 = worker("w1", &["a", "b"]);
        let w2 =
            WorkerInfo { worker_type: None, max_concurrent_tasks: None, extra: Map::new(), ..worker("w2", &["b"]) };
        let w3 = worker("w3", &[]);
        for w in [&w1, &w2, &w3] {
            s.register_worker(w.clone(), LONG_TTL).await.unwrap();
        }
        assert_eq!(candidates(&s, "a").await, vec![load("w1", true, 0)]);
        assert_eq!(candidates(&s, "b").await, vec![load("w1", true, 0), load("w2", true, 0)]);
        assert_eq!(candidates(&s, "c").await, vec![], "no worker takes c");
        assert_eq!(candidates(&s, "").await, vec![]);
        assert_eq!(live(&s).await, vec![w1, w2, w3], "live_workers lists every live worker as registered");
    }

    pub async fn concurrent_patches_are_all_applied(s: Arc<dyn Storage>) {
        s.register_worker(worker("w", &["a"]), LONG_TTL).await.unwrap();
        let patches: Vec<_> = (0..12)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut extra = Map::new();
                    extra.insert(format!("k{i}"), json!(i));
                    let patch = WorkerPatch { extra, ..WorkerPatch::default() };
                    s.refresh_worker("w", Some(patch), LONG_TTL).await.unwrap().expect("live")
                })
            })
            .collect();
        for patch in patches {
            patch.await.unwrap();
        }
        let stored = live(&s).await.into_iter().find(|w| w.worker_id == "w").expect("w is live");
        for i in 0..12 {
            assert_eq!(stored.extra.get(&format!("k{i}")), Some(&json!(i)), "patch {i} was lost: {:?}", stored.extra);
        }
    }

    pub async fn refresh_applies_a_patch(s: Arc<dyn Storage>) {
        let registered = worker("w", &["a"]);
        s.register_worker(registered.clone(), LONG_TTL).await.unwrap();
        let patch = WorkerPatch {
            status: Some("busy".into()),
            load: Some(0.75),
            supported_tasks: Some(vec!["b".into(), "c".into()]),
            extra: object(json!({"gpu": true, "region": "us"})),
        };
        let refreshed = s.refresh_worker("w", Some(patch), LONG_TTL).await.unwrap().expect("a live worker");
        let expected = WorkerInfo {
            status: "busy".into(),
            load: 0.75,
            supported_tasks: vec!["b".into(), "c".into()],
            extra: object(json!({"region": "us", "labels": {"tier": 1}, "gpu": true})),
            ..registered
        };
        assert_eq!(refreshed, expected, "the patch is applied and merged into the extra fields");
        assert_eq!(candidates(&s, "a").await, vec![], "a task type the worker no longer takes");
        assert_eq!(candidates(&s, "b").await, vec![load("w", false, 0)]);
        assert_eq!(candidates(&s, "c").await, vec![load("w", false, 0)]);
        assert_eq!(live(&s).await, vec![expected.clone()]);

        assert_eq!(s.refresh_worker("w", None, LONG_TTL).await.unwrap().as_ref(), Some(&expected), "a bare ping");
        let idle = WorkerPatch { status: Some("idle".into()), ..WorkerPatch::default() };
        let refreshed = s.refresh_worker("w", Some(idle), LONG_TTL).await.unwrap().expect("a live worker");
        assert_eq!(refreshed, WorkerInfo { status: "idle".into(), ..expected }, "unset patch fields change nothing");
        assert_eq!(candidates(&s, "b").await, vec![load("w", true, 0)]);

        assert_eq!(s.refresh_worker("stranger", None, LONG_TTL).await.unwrap(), None);
        let patch = WorkerPatch { supported_tasks: Some(vec!["b".into()]), ..WorkerPatch::default() };
        assert_eq!(s.refresh_worker("stranger", Some(patch), LONG_TTL).await.unwrap(), None);
        assert_eq!(live_ids(&s).await, vec!["w"], "refreshing an unknown worker registers nothing");
    }

    pub async fn in_flight_never_goes_below_zero(s: Arc<dyn Storage>) {
        s.register_worker(worker("w", &["t"]), LONG_TTL).await.unwrap();
        s.register_worker(worker("other", &["t"]), LONG_TTL).await.unwrap();
        for (delta, expected) in [(2, 2), (-5, 0), (1, 1), (-1, 0), (-1, 0), (3, 3), (-2, 1)] {
            s.add_in_flight("w", delta).await.unwrap();
            assert_eq!(in_flight(&s, "t", "w").await, expected, "after {delta:+}");
        }
        assert_eq!(in_flight(&s, "t", "other").await, 0, "counts are per worker");
        assert_eq!(live(&s).await.iter().find(|w| w.worker_id == "w").unwrap().in_flight, 1);

        s.add_in_flight("stranger", 3).await.unwrap();
        assert_eq!(live_ids(&s).await, vec!["other", "w"], "add_in_flight registers nobody");
        s.register_worker(worker("stranger", &["t"]), LONG_TTL).await.unwrap();
        assert_eq!(in_flight(&s, "t", "stranger").await, 0, "nothing was counted for an unknown worker");
    }

    pub async fn expired_workers_are_forgotten(s: Arc<dyn Storage>) {
        s.register_worker(worker("short", &["t"]), SHORT_TTL).await.unwrap();
        s.register_worker(worker("long", &["t"]), LONG_TTL).await.unwrap();
        assert_eq!(candidates(&s, "t").await, vec![load("long", true, 0), load("short", true, 0)]);
        tokio::time::sleep(EXPIRED).await;

        assert_eq!(candidates(&s, "t").await, vec![load("long", true, 0)], "an expired worker gets no tasks");
        assert_eq!(live_ids(&s).await, vec!["long"]);
        assert_eq!(s.refresh_worker("short", None, LONG_TTL).await.unwrap(), None, "too late to refresh");
        let patch = WorkerPatch { status: Some("idle".into()), ..WorkerPatch::default() };
        assert_eq!(s.refresh_worker("short", Some(patch), LONG_TTL).await.unwrap(), None);
        assert_eq!(live_ids(&s).await, vec!["long"], "a late refresh does not revive the worker");

        s.register_worker(worker("short", &["t"]), LONG_TTL).await.unwrap();
        assert_eq!(live_ids(&s).await, vec!["long", "short"], "registering again does");
    }

    pub async fn refresh_sets_a_new_ttl(s: Arc<dyn Storage>) {
        s.register_worker(worker("extended", &["t"]), SHORT_TTL).await.unwrap();
        s.register_worker(worker("shortened", &["t"]), LONG_TTL).await.unwrap();
        assert!(s.refresh_worker("extended", None, LONG_TTL).await.unwrap().is_some());
        assert!(s.refresh_worker("shortened", None, SHORT_TTL).await.unwrap().is_some());
        tokio::time::sleep(EXPIRED).await;
        assert_eq!(live_ids(&s).await, vec!["extended"], "a refresh sets the expiry to now + ttl");
        assert_eq!(candidates(&s, "t").await, vec![load("extended", true, 0)]);
        assert_eq!(s.refresh_worker("shortened", None, LONG_TTL).await.unwrap(), None);
    }

    pub async fn re_registration_replaces_the_worker_but_keeps_its_in_flight(s: Arc<dyn Storage>) {
        s.register_worker(worker("w", &["a"]), LONG_TTL).await.unwrap();
        let mut job = created(&s).await;
        let tasks = [task(job.id, 0), task(job.id, 0)];
        for t in &tasks {
            assert!(s.update_job(&mut job, push("w", t)).await.unwrap());
        }
        s.add_in_flight("w", 1).await.unwrap();
        let busy = WorkerPatch { status: Some("busy".into()), load: Some(0.9), ..WorkerPatch::default() };
        assert!(s.refresh_worker("w", Some(busy), LONG_TTL).await.unwrap().is_some());

        let again = WorkerInfo {
            worker_type: Some("gpu".into()),
            max_concurrent_tasks: Some(1),
            extra: object(json!({"version": "2.0"})),
            in_flight: 99,
            ..worker("w", &["b"])
        };
        s.register_worker(again.clone(), LONG_TTL).await.unwrap();
        let expected = WorkerInfo { in_flight: 3, ..again };
        assert_eq!(live(&s).await, vec![expected], "everything is replaced but the count of tasks in flight");
        assert_eq!(candidates(&s, "a").await, vec![]);
        assert_eq!(candidates(&s, "b").await, vec![load("w", true, 3)]);
        for t in &tasks {
            assert_eq!(s.pop_task("w", PRESENT).await.unwrap().as_ref(), Some(t), "queued tasks stay queued");
        }

        let fresh = WorkerInfo { in_flight: 5, ..worker("fresh", &["b"]) };
        s.register_worker(fresh, LONG_TTL).await.unwrap();
        assert_eq!(in_flight(&s, "b", "fresh").await, 0, "a new worker starts with nothing in flight");
    }

    pub async fn purging_forgets_expired_workers_and_drops_their_queues(s: Arc<dyn Storage>) {
        for id in ["lingering", "refreshed", "purged"] {
            s.register_worker(worker(id, &["t"]), SHORT_TTL).await.unwrap();
            s.add_in_flight(id, 2).await.unwrap();
        }
        s.register_worker(worker("long", &["t"]), LONG_TTL).await.unwrap();
        let mut job = created(&s).await;
        let (high, low) = (task(job.id, 5), task(job.id, 0));
        let follow_up = FollowUp::Dispatch(vec![
            Assignment::Push { worker_id: "purged".into(), task: low.clone() },
            Assignment::Push { worker_id: "purged".into(), task: high.clone() },
            Assignment::Push { worker_id: "long".into(), task: task(job.id, 0) },
        ]);
        assert!(s.update_job(&mut job, follow_up).await.unwrap());
        assert!(s.purge_expired_workers().await.unwrap().is_empty(), "nobody has expired yet");
        tokio::time::sleep(EXPIRED).await;

        s.register_worker(worker("lingering", &["t"]), LONG_TTL).await.unwrap();
        assert_eq!(in_flight(&s, "t", "lingering").await, 2, "an expired worker's count lingers until purged");
        assert_eq!(s.refresh_worker("refreshed", None, LONG_TTL).await.unwrap(), None);
        s.register_worker(worker("refreshed", &["t"]), LONG_TTL).await.unwrap();
        assert_eq!(in_flight(&s, "t", "refreshed").await, 0, "a refused refresh forgot the expired worker");

        let purged = s.purge_expired_workers().await.unwrap();
        let expected =
            PurgedWorker { worker_id: "purged".into(), dropped: vec![(job.id, high.task_id), (job.id, low.task_id)] };
        assert_eq!(purged, vec![expected], "only `purged` is still expired; its queue, highest priority first");
        assert!(s.purge_expired_workers().await.unwrap().is_empty());
        assert_eq!(live_ids(&s).await, vec!["lingering", "long", "refreshed"]);
        s.register_worker(worker("purged", &["t"]), LONG_TTL).await.unwrap();
        assert_eq!(in_flight(&s, "t", "purged").await, 0, "a purged worker starts afresh");
        assert_eq!(s.pop_task("purged", ABSENT).await.unwrap(), None, "its queue went with it");
        assert!(s.pop_task("long", PRESENT).await.unwrap().is_some(), "a live worker's queue is kept");
    }

    // ---- worker tokens ------------------------------------------------------

    pub async fn worker_tokens_are_replaced_as_a_whole(s: Arc<dyn Storage>) {
        let (one, two, three) = (hash("token-one"), hash("token-two"), hash("token-three"));
        assert_eq!(s.worker_token("w1").await.unwrap(), None);
        assert_eq!(s.worker_for_token(&one).await.unwrap(), None);

        let first = HashMap::from([("w1".to_owned(), one), ("w2".to_owned(), two)]);
        s.replace_worker_tokens(first).await.unwrap();
        assert_eq!(s.worker_token("w1").await.unwrap(), Some(one));
        assert_eq!(s.worker_token("w2").await.unwrap(), Some(two));
        assert_eq!(s.worker_token("w3").await.unwrap(), None);
        assert_eq!(s.worker_for_token(&one).await.unwrap().as_deref(), Some("w1"));
        assert_eq!(s.worker_for_token(&two).await.unwrap().as_deref(), Some("w2"));
        assert_eq!(s.worker_for_token(&three).await.unwrap(), None);

        // w1 loses its token, w2 gets a new one, w1's old digest moves to w3.
        let second = HashMap::from([("w2".to_owned(), three), ("w3".to_owned(), one)]);
        s.replace_worker_tokens(second).await.unwrap();
        assert_eq!(s.worker_token("w1").await.unwrap(), None);
        assert_eq!(s.worker_token("w2").await.unwrap(), Some(three));
        assert_eq!(s.worker_token("w3").await.unwrap(), Some(one));
        assert_eq!(s.worker_for_token(&one).await.unwrap().as_deref(), Some("w3"));
        assert_eq!(s.worker_for_token(&two).await.unwrap(), None, "a replaced digest is gone");
        assert_eq!(s.worker_for_token(&three).await.unwrap().as_deref(), Some("w2"));

        s.replace_worker_tokens(HashMap::new()).await.unwrap();
        for id in ["w1", "w2", "w3"] {
            assert_eq!(s.worker_token(id).await.unwrap(), None);
        }
        for digest in [&one, &two, &three] {
            assert_eq!(s.worker_for_token(digest).await.unwrap(), None);
        }
    }

    // ---- quotas -------------------------------------------------------------

    pub async fn quotas_count_per_client_and_period(s: Arc<dyn Storage>) {
        for _ in 0..3 {
            assert!(s.take_quota("acme", "2026-11", 3).await.unwrap());
        }
        assert!(!s.take_quota("acme", "2026-11", 3).await.unwrap(), "used up");
        assert!(!s.take_quota("acme", "2026-11", 3).await.unwrap(), "still used up");
        assert!(s.take_quota("acme", "2026-11", 4).await.unwrap(), "refusals are not counted; the limit is per call");
        assert!(!s.take_quota("acme", "2026-11", 4).await.unwrap());
        assert!(s.take_quota("globex", "2026-11", 3).await.unwrap(), "quotas are per client");

        assert!(s.take_quota("acme", "2026-12", 3).await.unwrap(), "a new period starts afresh");
        assert!(s.take_quota("acme", "2026-11", 3).await.unwrap(), "a late request counts in the new period");
        assert!(s.take_quota("acme", "2026-12", 3).await.unwrap());
        assert!(!s.take_quota("acme", "2026-12", 3).await.unwrap());
        assert!(!s.take_quota("acme", "2026-11", 3).await.unwrap(), "the old period does not come back");
        assert!(s.take_quota("acme", "2027-01", 3).await.unwrap(), "a new year is a new period");

        assert!(!s.take_quota("zero", "2026-12", 0).await.unwrap(), "a limit of 0 allows nothing");
        assert!(!s.take_quota("acme", "2027-01", 0).await.unwrap());
        assert!(s.take_quota("zero", "2026-12", 1).await.unwrap(), "a refusal at limit 0 was not counted");
    }

    pub async fn concurrent_quota_takes_accept_exactly_the_limit(s: Arc<dyn Storage>) {
        const TAKERS: usize = 64;
        const LIMIT: u64 = 17;
        let barrier = Arc::new(Barrier::new(TAKERS));
        let takers: Vec<_> = (0..TAKERS)
            .map(|_| {
                let (s, barrier) = (s.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.take_quota("acme", "2026-11", LIMIT).await.unwrap()
                })
            })
            .collect();
        let mut accepted = 0;
        for taker in takers {
            accepted += u64::from(taker.await.unwrap());
        }
        assert_eq!(accepted, LIMIT);
        assert!(!s.take_quota("acme", "2026-11", LIMIT).await.unwrap());
    }

    // ---- locks --------------------------------------------------------------

    pub async fn a_lock_is_exclusive_until_its_owner_releases_it(s: Arc<dyn Storage>) {
        assert!(s.try_lock("scheduler", "A", LONG_TTL).await.unwrap());
        assert!(s.try_lock("scheduler", "A", LONG_TTL).await.unwrap(), "the owner takes it again (renews it)");
        assert!(!s.try_lock("scheduler", "B", LONG_TTL).await.unwrap(), "held by A");
        assert!(s.try_lock("other", "B", LONG_TTL).await.unwrap(), "locks are per name");
        assert!(!s.release_lock("scheduler", "B").await.unwrap(), "B does not hold it");
        assert!(!s.try_lock("scheduler", "B", LONG_TTL).await.unwrap(), "still held by A");
        assert!(s.release_lock("scheduler", "A").await.unwrap());
        assert!(!s.release_lock("scheduler", "A").await.unwrap(), "released already");
        assert!(s.try_lock("scheduler", "B", LONG_TTL).await.unwrap(), "free once released");
        assert!(!s.try_lock("scheduler", "A", LONG_TTL).await.unwrap(), "now held by B");
        assert!(!s.release_lock("never-taken", "A").await.unwrap());
        assert!(!s.release_lock("other", "A").await.unwrap(), "B holds it");
        assert!(s.release_lock("other", "B").await.unwrap());
    }

    pub async fn a_lock_expires_after_its_ttl_unless_renewed(s: Arc<dyn Storage>) {
        assert!(s.try_lock("expiring", "A", SHORT_TTL).await.unwrap());
        assert!(s.try_lock("renewed", "A", SHORT_TTL).await.unwrap());
        assert!(s.try_lock("renewed", "A", LONG_TTL).await.unwrap(), "renewed for longer");
        assert!(!s.try_lock("expiring", "B", LONG_TTL).await.unwrap());
        tokio::time::sleep(EXPIRED).await;
        assert!(!s.try_lock("renewed", "B", LONG_TTL).await.unwrap(), "the renewal set a new TTL");
        assert!(!s.release_lock("expiring", "A").await.unwrap(), "an expired lock is not A's to release");
        assert!(s.try_lock("expiring", "B", LONG_TTL).await.unwrap(), "A's lock expired");
        assert!(!s.try_lock("expiring", "A", LONG_TTL).await.unwrap(), "B holds it now");
        assert!(!s.release_lock("expiring", "A").await.unwrap());
        assert!(s.release_lock("expiring", "B").await.unwrap());
    }

    pub async fn one_of_concurrent_lockers_wins(s: Arc<dyn Storage>) {
        const LOCKERS: usize = 16;
        let barrier = Arc::new(Barrier::new(LOCKERS));
        let lockers: Vec<_> = (0..LOCKERS)
            .map(|i| {
                let (s, barrier) = (s.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let owner = format!("owner-{i}");
                    s.try_lock("scheduler", &owner, LONG_TTL).await.unwrap().then_some(owner)
                })
            })
            .collect();
        let mut owners = Vec::new();
        for locker in lockers {
            owners.extend(locker.await.unwrap());
        }
        assert_eq!(owners.len(), 1, "exactly one locker wins: {owners:?}");
        assert!(s.release_lock("scheduler", &owners[0]).await.unwrap(), "the winner holds it");
    }

    // ---- multi-task dispatch ------------------------------------------------

    pub async fn one_update_pushes_to_several_workers_and_parks(s: Arc<dyn Storage>) {
        s.register_worker(worker("w1", &["a"]), LONG_TTL).await.unwrap();
        s.register_worker(worker("w2", &["a"]), LONG_TTL).await.unwrap();
        let mut job = created(&s).await;
        assert_eq!(drain_queue(&s).await, vec![job.id]);
        let waiting = start_waiting({
            let s = s.clone();
            async move { s.pop_task("w2", LONG_POLL).await }
        })
        .await;
        let (first, second) = (task(job.id, 0), task(job.id, 2));
        let dispatch = FollowUp::Dispatch(vec![
            Assignment::Push { worker_id: "w1".into(), task: first.clone() },
            Assignment::Park { task_type: "b".into() },
            Assignment::Push { worker_id: "w2".into(), task: second.clone() },
        ]);

        let mut stale = job.clone();
        assert!(s.update_job(&mut job, FollowUp::None).await.unwrap());
        assert!(!s.update_job(&mut stale, dispatch.clone()).await.unwrap());
        assert_eq!(s.pop_task("w1", ABSENT).await.unwrap(), None, "a refused dispatch pushes nothing");
        assert_eq!(s.take_parked("b", 10).await.unwrap(), NO_JOBS, "a refused dispatch parks nothing");
        assert_eq!(candidates(&s, "a").await, vec![load("w1", true, 0), load("w2", true, 0)]);

        job.status = JobStatus::WaitingForParallelTasks;
        assert!(s.update_job(&mut job, dispatch).await.unwrap());
        assert_eq!(woken(waiting, "pop_task of the second worker").await.unwrap(), Some(second));
        assert_eq!(s.pop_task("w1", PRESENT).await.unwrap(), Some(first));
        assert_eq!(s.pop_task("w1", ABSENT).await.unwrap(), None, "each task went to its own worker only");
        assert_eq!(s.pop_task("w2", ABSENT).await.unwrap(), None);
        assert_eq!(candidates(&s, "a").await, vec![load("w1", true, 1), load("w2", true, 1)], "each push counted");
        assert_eq!(s.take_parked("b", 10).await.unwrap(), vec![job.id]);
        assert_eq!(drain_queue(&s).await, NO_JOBS, "a dispatch does not queue the job itself");

        assert!(s.update_job(&mut job, FollowUp::Dispatch(Vec::new())).await.unwrap(), "an empty dispatch");
        assert_eq!(s.pop_task("w1", ABSENT).await.unwrap(), None);
        assert_eq!(drain_queue(&s).await, NO_JOBS);
    }

    pub async fn parking_for_several_task_types_parks_once_per_type(s: Arc<dyn Storage>) {
        let mut job = created(&s).await;
        let dispatch = FollowUp::Dispatch(vec![
            Assignment::Park { task_type: "a".into() },
            Assignment::Park { task_type: "b".into() },
            Assignment::Park { task_type: "a".into() },
            Assignment::Park { task_type: "a".into() },
        ]);
        assert!(s.update_job(&mut job, dispatch).await.unwrap());
        assert_eq!(s.take_parked("a", 10).await.unwrap(), vec![job.id], "three branches of type a, parked once");
        assert_eq!(s.take_parked("b", 10).await.unwrap(), vec![job.id]);
        assert_eq!(s.take_parked("a", 10).await.unwrap(), NO_JOBS);
    }

    // ---- listings -----------------------------------------------------------

    pub async fn the_status_index_follows_every_applied_update(s: Arc<dyn Storage>) {
        let mut job = created(&s).await;
        let other = created(&s).await;
        let mut pending = with_status(&s, JobStatus::Pending).await;
        pending.sort();
        let mut expected = vec![job.id, other.id];
        expected.sort();
        assert_eq!(pending, expected, "a created job is pending");
        assert_eq!(with_status(&s, JobStatus::Running).await, NO_JOBS);

        let stale = job.clone();
        job.status = JobStatus::Running;
        assert!(s.update_job(&mut job, FollowUp::Enqueue).await.unwrap());
        assert_eq!(with_status(&s, JobStatus::Pending).await, vec![other.id], "it left its old status");
        assert_eq!(with_status(&s, JobStatus::Running).await, vec![job.id]);

        let mut refused = stale;
        refused.status = JobStatus::Cancelled;
        assert!(!s.update_job(&mut refused, FollowUp::None).await.unwrap());
        assert_eq!(with_status(&s, JobStatus::Cancelled).await, NO_JOBS, "a refused update moves nothing");
        assert_eq!(with_status(&s, JobStatus::Running).await, vec![job.id]);

        job.status = JobStatus::WaitingForWorker;
        job.current_task = full_job().current_task;
        assert!(s.update_job(&mut job, FollowUp::None).await.unwrap());
        assert_eq!(with_status(&s, JobStatus::Running).await, NO_JOBS);
        assert_eq!(with_status(&s, JobStatus::WaitingForWorker).await, vec![job.id]);

        job.end(JobStatus::Finished, None);
        assert!(s.update_job(&mut job, FollowUp::None).await.unwrap());
        assert_eq!(with_status(&s, JobStatus::WaitingForWorker).await, NO_JOBS);
        assert_eq!(with_status(&s, JobStatus::Finished).await, vec![job.id], "ended jobs are listed while kept");
        for status in JobStatus::ALL {
            let listed = with_status(&s, status).await;
            let expected = match status {
                JobStatus::Pending => vec![other.id],
                JobStatus::Finished => vec![job.id],
                _ => NO_JOBS,
            };
            assert_eq!(listed, expected, "{status}");
        }
    }

    pub async fn jobs_with_status_lists_the_most_recently_updated_first_in_pages(s: Arc<dyn Storage>) {
        let mut jobs = Vec::new();
        for _ in 0..5 {
            jobs.push(created(&s).await);
        }
        for job in &mut jobs {
            tokio::time::sleep(STAMP_GAP).await;
            job.status = JobStatus::Running;
            assert!(s.update_job(job, FollowUp::None).await.unwrap());
        }
        let newest_first: Vec<JobId> = ids(&jobs).into_iter().rev().collect();
        assert_eq!(with_status(&s, JobStatus::Running).await, newest_first);
        let page = |limit, offset| s.jobs_with_status(JobStatus::Running, limit, offset);
        assert_eq!(page(2, 0).await.unwrap(), newest_first[..2]);
        assert_eq!(page(2, 2).await.unwrap(), newest_first[2..4]);
        assert_eq!(page(2, 4).await.unwrap(), newest_first[4..]);
        assert_eq!(page(2, 5).await.unwrap(), NO_JOBS, "past the end");
        assert_eq!(page(0, 0).await.unwrap(), NO_JOBS, "limit 0");
        assert_eq!(page(3, 1).await.unwrap(), newest_first[1..4]);

        // Updating the oldest again makes it the most recently updated.
        tokio::time::sleep(STAMP_GAP).await;
        assert!(s.update_job(&mut jobs[0], FollowUp::None).await.unwrap());
        let expected = [jobs[0].id, jobs[4].id, jobs[3].id, jobs[2].id, jobs[1].id];
        assert_eq!(with_status(&s, JobStatus::Running).await, expected);
        assert_eq!(s.jobs_with_status(JobStatus::Pending, ALL, 0).await.unwrap(), NO_JOBS);
    }

    pub async fn client_jobs_are_per_client_newest_first_in_pages(s: Arc<dyn Storage>) {
        let base = chrono::Utc::now();
        // Created out of order: the listing follows created_at, not arrival.
        let mut acme = Vec::new();
        for secs in [3, 1, 4, 2, 0] {
            acme.push(created_for(&s, "acme", base, secs).await);
        }
        let globex = [created_for(&s, "globex", base, 10).await, created_for(&s, "globex", base, 5).await];
        let mut newest_first = acme.clone();
        newest_first.sort_by_key(|j| std::cmp::Reverse(j.created_at));

        assert_eq!(s.client_jobs("acme", ALL, 0).await.unwrap(), newest_first, "whole jobs, newest first");
        assert_eq!(s.client_jobs("globex", ALL, 0).await.unwrap(), globex, "clients see only their own");
        assert_eq!(s.client_jobs("nobody", ALL, 0).await.unwrap(), vec![]);
        assert_eq!(ids(&s.client_jobs("acme", 2, 0).await.unwrap()), ids(&newest_first[..2]));
        assert_eq!(ids(&s.client_jobs("acme", 2, 3).await.unwrap()), ids(&newest_first[3..]));
        assert_eq!(ids(&s.client_jobs("acme", 2, 5).await.unwrap()), NO_JOBS, "past the end");
        assert_eq!(ids(&s.client_jobs("acme", 0, 0).await.unwrap()), NO_JOBS, "limit 0");

        // An update keeps a job's place (created_at) and shows in the listing.
        let mut oldest = newest_first[4].clone();
        oldest.status = JobStatus::Running;
        oldest.current_state = "moved".into();
        assert!(s.update_job(&mut oldest, FollowUp::None).await.unwrap());
        newest_first[4] = oldest;
        assert_eq!(s.client_jobs("acme", ALL, 0).await.unwrap(), newest_first);
        assert_eq!(s.client_jobs("globex", ALL, 0).await.unwrap(), globex);
    }

    pub async fn job_counts_count_held_jobs_by_status_and_the_queue(s: Arc<dyn Storage>) {
        assert_eq!(counts(&s).await, (BTreeMap::new(), 0), "nothing stored");
        let mut a = created(&s).await;
        let mut b = created(&s).await;
        let _c = created(&s).await;
        assert_eq!(counts(&s).await, (BTreeMap::from([(JobStatus::Pending, 3)]), 3));

        a.status = JobStatus::Running;
        assert!(s.update_job(&mut a, FollowUp::Enqueue).await.unwrap());
        b.end(JobStatus::Failed, Some("boom".into()));
        assert!(s.update_job(&mut b, FollowUp::None).await.unwrap());
        let mut stale = a.clone();
        stale.version = 0;
        stale.status = JobStatus::Cancelled;
        assert!(!s.update_job(&mut stale, FollowUp::Enqueue).await.unwrap());
        let by_status = BTreeMap::from([(JobStatus::Pending, 1), (JobStatus::Running, 1), (JobStatus::Failed, 1)]);
        assert_eq!(counts(&s).await, (by_status.clone(), 4), "three creations and one Enqueue are queued");

        assert_eq!(drain_queue(&s).await.len(), 4);
        assert_eq!(counts(&s).await, (by_status, 0), "handed-out jobs are no longer queued");
    }

    pub async fn forgotten_jobs_leave_every_index(s: Arc<dyn Storage>) {
        let base = chrono::Utc::now();
        let mut first = created_for(&s, "acme", base, 0).await;
        let kept = created_for(&s, "acme", base, 1).await;
        first.end(JobStatus::Finished, None);
        assert!(s.update_job(&mut first, FollowUp::None).await.unwrap());
        assert_eq!(with_status(&s, JobStatus::Finished).await, vec![first.id]);
        assert_eq!(ids(&s.client_jobs("acme", ALL, 0).await.unwrap()), vec![kept.id, first.id]);
        tokio::time::sleep(EXPIRED).await;

        // The memory backend forgets ended jobs as later ones end, so end one.
        let mut later = created_for(&s, "globex", base, 2).await;
        later.end(JobStatus::Finished, None);
        assert!(s.update_job(&mut later, FollowUp::None).await.unwrap());
        assert_eq!(s.get_job(first.id).await.unwrap(), None);
        assert_eq!(with_status(&s, JobStatus::Finished).await, vec![later.id], "gone from the status index");
        assert_eq!(ids(&s.client_jobs("acme", ALL, 0).await.unwrap()), vec![kept.id], "gone from its client's");
        assert_eq!(ids(&s.client_jobs("globex", ALL, 0).await.unwrap()), vec![later.id]);
        let by_status = BTreeMap::from([(JobStatus::Pending, 1), (JobStatus::Finished, 1)]);
        assert_eq!(counts(&s).await.0, by_status, "and from the counts");
    }

    // ---- child jobs ---------------------------------------------------------

    pub async fn a_child_ending_queues_its_parent(s: Arc<dyn Storage>) {
        let mut parent = created(&s).await;
        let mut child = plain_job();
        child.parent_job_id = Some(parent.id);
        s.create_job(&child).await.unwrap();
        let mut sibling = plain_job();
        sibling.parent_job_id = Some(parent.id);
        s.create_job(&sibling).await.unwrap();
        assert_eq!(drain_queue(&s).await, vec![parent.id, child.id, sibling.id]);
        parent.status = JobStatus::WaitingForChildJob;
        assert!(s.update_job(&mut parent, FollowUp::None).await.unwrap());

        child.status = JobStatus::Running;
        assert!(s.update_job(&mut child, FollowUp::None).await.unwrap());
        child.status = JobStatus::WaitingForWorker;
        assert!(s.update_job(&mut child, FollowUp::None).await.unwrap());
        assert_eq!(drain_queue(&s).await, NO_JOBS, "a child that has not ended wakes nobody");

        let mut stale = child.clone();
        stale.version -= 1;
        stale.end(JobStatus::Failed, None);
        assert!(!s.update_job(&mut stale, FollowUp::None).await.unwrap());
        assert_eq!(drain_queue(&s).await, NO_JOBS, "a refused end wakes nobody");

        // Ended jobs may expire after RETENTION, so the later update follows
        // the ending one at once, before any wait on the queue.
        child.end(JobStatus::Finished, None);
        assert!(s.update_job(&mut child, FollowUp::None).await.unwrap());
        child.error_message = Some("annotated later".into());
        assert!(s.update_job(&mut child, FollowUp::None).await.unwrap());
        assert_eq!(
            drain_queue(&s).await,
            vec![parent.id],
            "the child's end queues its parent once; its later updates wake nobody again"
        );

        sibling.end(JobStatus::Cancelled, None);
        assert!(s.update_job(&mut sibling, FollowUp::Enqueue).await.unwrap());
        let mut queued = drain_queue(&s).await;
        queued.sort();
        let mut expected = vec![parent.id, sibling.id];
        expected.sort();
        assert_eq!(queued, expected, "any terminal status wakes the parent, beside the update's own follow-up");

        parent.end(JobStatus::Finished, None);
        assert!(s.update_job(&mut parent, FollowUp::None).await.unwrap());
        assert_eq!(s.get_job(parent.id).await.unwrap(), Some(parent), "the parent itself is not changed");
        assert_eq!(drain_queue(&s).await, NO_JOBS, "a job without a parent wakes nobody");
    }

    // ---- withdrawing tasks --------------------------------------------------

    pub async fn a_queued_task_can_be_withdrawn_until_a_worker_takes_it(s: Arc<dyn Storage>) {
        s.register_worker(worker("w", &["greet"]), LONG_TTL).await.unwrap();
        s.register_worker(worker("other", &["greet"]), LONG_TTL).await.unwrap();
        let mut job = created(&s).await;
        let (withdrawn, kept) = (task(job.id, 5), task(job.id, 0));
        for t in [&withdrawn, &kept] {
            assert!(s.update_job(&mut job, push("w", t)).await.unwrap());
        }
        assert_eq!(in_flight(&s, "greet", "w").await, 2);

        assert!(!s.withdraw_task("other", withdrawn.task_id).await.unwrap(), "queued for another worker");
        assert!(!s.withdraw_task("w", Uuid::new_v4()).await.unwrap(), "never queued");
        assert_eq!(in_flight(&s, "greet", "w").await, 2, "a failed withdrawal gives nothing back");
        assert!(s.withdraw_task("w", withdrawn.task_id).await.unwrap());
        assert_eq!(in_flight(&s, "greet", "w").await, 1, "a withdrawn task is no longer in flight");
        assert!(!s.withdraw_task("w", withdrawn.task_id).await.unwrap(), "withdrawn already");
        assert_eq!(in_flight(&s, "greet", "w").await, 1);

        assert_eq!(s.pop_task("w", PRESENT).await.unwrap(), Some(kept.clone()), "the higher-priority one is gone");
        assert_eq!(s.pop_task("w", ABSENT).await.unwrap(), None, "a withdrawn task is never handed out");
        assert!(!s.withdraw_task("w", kept.task_id).await.unwrap(), "a worker has it already");
        assert_eq!(in_flight(&s, "greet", "w").await, 1, "a task a worker has stays in flight");

        // A push wakes a poll; withdrawn before any poll took it, nobody gets it.
        let late = task(job.id, 0);
        assert!(s.update_job(&mut job, push("w", &late)).await.unwrap());
        assert!(s.withdraw_task("w", late.task_id).await.unwrap());
        assert_eq!(s.pop_task("w", ABSENT).await.unwrap(), None);
        assert_eq!(in_flight(&s, "greet", "w").await, 1);
        assert_eq!(in_flight(&s, "greet", "other").await, 0);
    }

    // ---- parallel branches --------------------------------------------------

    pub async fn branch_results_are_recorded_once_per_branch(s: Arc<dyn Storage>) {
        let (wait, other_wait) = (Uuid::new_v4(), Uuid::new_v4());
        let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
        let first = json!({"status": "success", "data": {"n": [1, 2.5, null], "text": "Grüße ✓"}}).to_string();
        let second = json!({"status": "failure", "error": {"code": "E1"}}).to_string();
        assert_eq!(s.branch_results(wait).await.unwrap(), HashMap::new(), "nothing recorded yet");

        assert_eq!(s.record_branch_result(wait, t1, &first).await.unwrap(), BranchRecord::Recorded { answered: 1 });
        assert_eq!(s.record_branch_result(wait, t1, &second).await.unwrap(), BranchRecord::Duplicate);
        assert_eq!(s.branch_results(wait).await.unwrap(), HashMap::from([(t1, first.clone())]), "the first stays");
        assert_eq!(
            s.record_branch_result(other_wait, t1, &second).await.unwrap(),
            BranchRecord::Recorded { answered: 1 },
            "results are per fan-out"
        );
        assert_eq!(s.record_branch_result(wait, t2, &second).await.unwrap(), BranchRecord::Recorded { answered: 2 });
        assert_eq!(s.record_branch_result(wait, t2, &first).await.unwrap(), BranchRecord::Duplicate);
        let both = HashMap::from([(t1, first.clone()), (t2, second.clone())]);
        assert_eq!(s.branch_results(wait).await.unwrap(), both);

        s.close_fan_out(wait).await.unwrap();
        assert_eq!(s.branch_results(wait).await.unwrap(), HashMap::new());
        assert_eq!(s.branch_results(other_wait).await.unwrap(), HashMap::from([(t1, second.clone())]), "left alone");
        // A late copy of a result (it read the job before the join) must not
        // start the set again: it would count as a first answer.
        assert_eq!(s.record_branch_result(wait, t1, &first).await.unwrap(), BranchRecord::Closed);
        assert_eq!(s.record_branch_result(wait, Uuid::new_v4(), &first).await.unwrap(), BranchRecord::Closed);
        assert_eq!(s.branch_results(wait).await.unwrap(), HashMap::new(), "closed stays empty");
        s.close_fan_out(wait).await.unwrap();
        assert_eq!(s.record_branch_result(wait, t2, &second).await.unwrap(), BranchRecord::Closed, "closing twice");

        let never_answered = Uuid::new_v4();
        s.close_fan_out(never_answered).await.unwrap();
        assert_eq!(s.record_branch_result(never_answered, t1, &first).await.unwrap(), BranchRecord::Closed);
        assert_eq!(
            s.record_branch_result(other_wait, t2, &first).await.unwrap(),
            BranchRecord::Recorded { answered: 2 },
            "other fan-outs stay open"
        );
    }

    pub async fn a_fan_out_closing_while_branches_answer_keeps_none_of_the_late_ones(s: Arc<dyn Storage>) {
        const BRANCHES: usize = 32;
        let wait = Uuid::new_v4();
        let barrier = Arc::new(Barrier::new(BRANCHES + 1));
        let recorders: Vec<_> = (0..BRANCHES)
            .map(|i| {
                let (s, barrier) = (s.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.record_branch_result(wait, Uuid::new_v4(), &json!({"branch": i}).to_string()).await.unwrap()
                })
            })
            .collect();
        barrier.wait().await;
        s.close_fan_out(wait).await.unwrap();
        let mut recorded = Vec::new();
        for recorder in recorders {
            match recorder.await.unwrap() {
                BranchRecord::Recorded { answered } => recorded.push(answered),
                BranchRecord::Closed => {}
                BranchRecord::Duplicate => panic!("every branch answered once"),
            }
        }
        recorded.sort_unstable();
        assert_eq!(recorded, (1..=recorded.len()).collect::<Vec<_>>(), "counts before the close run 1, 2, …");
        assert_eq!(s.branch_results(wait).await.unwrap(), HashMap::new(), "nothing survives the close");
        assert_eq!(s.record_branch_result(wait, Uuid::new_v4(), "{}").await.unwrap(), BranchRecord::Closed);
    }

    pub async fn concurrent_branch_results_complete_the_fan_out_once(s: Arc<dyn Storage>) {
        const BRANCHES: usize = 32;
        let wait = Uuid::new_v4();
        let barrier = Arc::new(Barrier::new(BRANCHES));
        let recorders: Vec<_> = (0..BRANCHES)
            .map(|i| {
                let (s, barrier) = (s.clone(), barrier.clone());
                tokio::spawn(async move {
                    let task_id = Uuid::new_v4();
                    let result = json!({"branch": i}).to_string();
                    barrier.wait().await;
                    let record = s.record_branch_result(wait, task_id, &result).await.unwrap();
                    (task_id, result, record)
                })
            })
            .collect();
        let (mut expected, mut answered) = (HashMap::new(), Vec::new());
        for recorder in recorders {
            let (task_id, result, record) = recorder.await.unwrap();
            match record {
                BranchRecord::Recorded { answered: n } => answered.push(n),
                BranchRecord::Duplicate | BranchRecord::Closed => panic!("branch {result} was the first to answer"),
            }
            expected.insert(task_id, result);
        }
        assert_eq!(answered.iter().filter(|n| **n == BRANCHES).count(), 1, "exactly one sees the last answer");
        answered.sort_unstable();
        assert_eq!(answered, (1..=BRANCHES).collect::<Vec<_>>(), "each recorder saw its own count");
        assert_eq!(s.branch_results(wait).await.unwrap(), expected);
    }

    // ---- data stores --------------------------------------------------------

    // ---- progress reports and worker channels ------------------------------

    pub async fn progress_is_kept_beside_existing_jobs_only(s: Arc<dyn Storage>) {
        let job = created(&s).await;
        let other = created(&s).await;
        let report = Progress::new(Uuid::new_v4(), 0.25, Some("a quarter".into())).unwrap();
        assert!(!s.record_progress(JobId::new_v4(), &report).await.unwrap(), "no job, nothing kept");
        assert!(s.record_progress(job.id, &report).await.unwrap());
        let later = Progress::new(report.task_id, 0.5, None).unwrap();
        assert!(s.record_progress(job.id, &later).await.unwrap());
        let read = s.progress_of(&[job.id, other.id, JobId::new_v4()]).await.unwrap();
        assert_eq!(read, vec![Some(later.clone()), None, None], "the latest report, in order");
        assert_eq!(s.progress_of(&[]).await.unwrap(), vec![]);
        assert_eq!(s.job_with_progress(job.id).await.unwrap(), Some((job, Some(later))), "read together");
        assert_eq!(s.job_with_progress(other.id).await.unwrap(), Some((other, None)));
        assert_eq!(s.job_with_progress(JobId::new_v4()).await.unwrap(), None);
    }

    pub async fn progress_survives_job_updates_and_goes_with_the_job(s: Arc<dyn Storage>) {
        let mut job = created(&s).await;
        let report = Progress::new(Uuid::new_v4(), 0.75, None).unwrap();
        assert!(s.record_progress(job.id, &report).await.unwrap());
        job.current_state = "next".into();
        assert!(s.update_job(&mut job, FollowUp::None).await.unwrap());
        assert_eq!(s.get_job(job.id).await.unwrap().map(|j| j.current_state), Some("next".into()));
        assert_eq!(s.progress_of(&[job.id]).await.unwrap(), vec![Some(report)], "an update keeps it");
        job.end(JobStatus::Finished, None);
        assert!(s.update_job(&mut job, FollowUp::None).await.unwrap());
        tokio::time::sleep(EXPIRED).await;
        // The memory backend forgets ended jobs as later ones end, so end one.
        let mut later = created(&s).await;
        later.end(JobStatus::Finished, None);
        assert!(s.update_job(&mut later, FollowUp::None).await.unwrap());
        assert_eq!(s.get_job(job.id).await.unwrap(), None);
        assert_eq!(s.progress_of(&[job.id]).await.unwrap(), vec![None], "gone with its job");
    }

    pub async fn a_worker_channel_delivers_until_it_is_replaced_or_closed(s: Arc<dyn Storage>) {
        assert!(!s.send_to_worker("w", "nobody").await.unwrap(), "no socket, not delivered");
        let (tx, mut first) = tokio::sync::mpsc::channel(8);
        let first_id = s.open_channel("w", tx).await.unwrap();
        assert!(s.send_to_worker("w", "one").await.unwrap());
        assert_eq!(timeout(Duration::from_secs(2), first.recv()).await.unwrap().as_deref(), Some("one"));
        assert!(!s.send_to_worker("other", "x").await.unwrap(), "only to its worker");

        // A second opening replaces the first: its inbox ends.
        let (tx, mut second) = tokio::sync::mpsc::channel(8);
        let second_id = s.open_channel("w", tx).await.unwrap();
        assert_eq!(timeout(Duration::from_secs(2), first.recv()).await.unwrap(), None);
        // The first socket closing late does not close the second's channel.
        s.close_channel("w", first_id).await.unwrap();
        assert!(s.send_to_worker("w", "two").await.unwrap());
        assert_eq!(timeout(Duration::from_secs(2), second.recv()).await.unwrap().as_deref(), Some("two"));
        s.close_channel("w", second_id).await.unwrap();
        let closed = timeout(Duration::from_secs(2), async {
            while s.send_to_worker("w", "three").await.unwrap() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        closed.await.expect("a closed channel stops taking messages");
    }

    pub async fn held_cancels_are_taken_once_for_the_tasks_a_worker_runs(s: Arc<dyn Storage>) {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(s.take_cancels("w", &[a]).await.unwrap(), Vec::<Uuid>::new(), "nothing held");
        s.hold_cancel("w", a).await.unwrap();
        s.hold_cancel("w", b).await.unwrap();
        s.hold_cancel("other", c).await.unwrap();
        assert_eq!(s.take_cancels("w", &[]).await.unwrap(), Vec::<Uuid>::new());
        assert_eq!(s.take_cancels("w", &[c, a]).await.unwrap(), vec![a], "only its own, only those it runs");
        assert_eq!(s.take_cancels("w", &[a, b]).await.unwrap(), vec![b], "each once");
        assert_eq!(s.take_cancels("other", &[c]).await.unwrap(), vec![c]);
    }

    pub async fn data_stores_get_set_and_delete_per_scope(s: Arc<dyn Storage>) {
        let (orders, stock, other) = ("shop/orders", "shop/stock", "billing/orders");
        assert_eq!(s.data_get(orders, "k").await.unwrap(), None);
        assert!(!s.data_delete(orders, "k").await.unwrap(), "nothing to delete");

        let value = json!({"items": [1, 2.5, null, "x"], "text": "Grüße, 世界 ✓", "ok": true}).to_string();
        s.data_set(orders, "k", &value).await.unwrap();
        assert_eq!(s.data_get(orders, "k").await.unwrap(), Some(value.clone()));
        for scope in [stock, other, "shop", "shop/orders/k"] {
            assert_eq!(s.data_get(scope, "k").await.unwrap(), None, "stores are per scope: {scope}");
        }
        s.data_set(stock, "k", "7").await.unwrap();
        s.data_set(orders, "user:42/ü", "\"odd key\"").await.unwrap();
        s.data_set(orders, "k", "[]").await.unwrap();
        assert_eq!(s.data_get(orders, "k").await.unwrap().as_deref(), Some("[]"), "a set replaces");
        assert_eq!(s.data_get(stock, "k").await.unwrap().as_deref(), Some("7"));
        assert_eq!(s.data_get(orders, "user:42/ü").await.unwrap().as_deref(), Some("\"odd key\""));
        assert_eq!(s.data_get(orders, "user:42").await.unwrap(), None);

        assert!(s.data_delete(orders, "k").await.unwrap());
        assert!(!s.data_delete(orders, "k").await.unwrap(), "deleted already");
        assert_eq!(s.data_get(orders, "k").await.unwrap(), None);
        assert_eq!(s.data_get(stock, "k").await.unwrap().as_deref(), Some("7"), "the other scope keeps its key");
        assert_eq!(s.data_get(orders, "user:42/ü").await.unwrap().as_deref(), Some("\"odd key\""));
        s.data_set(orders, "k", "null").await.unwrap();
        assert_eq!(s.data_get(orders, "k").await.unwrap().as_deref(), Some("null"), "JSON null is a value");
    }

    pub async fn data_increment_counts_integers_only(s: Arc<dyn Storage>) {
        let scope = "shop/counters";
        assert_eq!(s.data_increment(scope, "n", 5).await.unwrap(), Some(5), "a missing key counts as 0");
        assert_eq!(s.data_get(scope, "n").await.unwrap().as_deref(), Some("5"));
        assert_eq!(s.data_increment(scope, "n", -8).await.unwrap(), Some(-3));
        assert_eq!(s.data_get(scope, "n").await.unwrap().as_deref(), Some("-3"));
        assert_eq!(s.data_increment("shop/other", "n", 1).await.unwrap(), Some(1), "counters are per scope");
        assert_eq!(s.data_get(scope, "n").await.unwrap().as_deref(), Some("-3"));
        s.data_set(scope, "set", "41").await.unwrap();
        assert_eq!(s.data_increment(scope, "set", 1).await.unwrap(), Some(42), "a value set as an integer");

        for not_an_integer in ["\"x\"", "\"7\"", "1.5", "true", "null", "[1]", "{\"n\": 1}"] {
            s.data_set(scope, "odd", not_an_integer).await.unwrap();
            assert_eq!(s.data_increment(scope, "odd", 1).await.unwrap(), None, "{not_an_integer}");
            assert_eq!(s.data_get(scope, "odd").await.unwrap().as_deref(), Some(not_an_integer), "unchanged");
        }

        let max = i64::MAX.to_string();
        s.data_set(scope, "big", &max).await.unwrap();
        assert_eq!(s.data_increment(scope, "big", 0).await.unwrap(), Some(i64::MAX), "the largest i64 is read");
        assert_eq!(s.data_increment(scope, "big", 1).await.unwrap(), None, "overflow");
        assert_eq!(s.data_get(scope, "big").await.unwrap(), Some(max), "unchanged");
        let min = i64::MIN.to_string();
        s.data_set(scope, "small", &min).await.unwrap();
        assert_eq!(s.data_increment(scope, "small", -1).await.unwrap(), None, "underflow");
        assert_eq!(s.data_get(scope, "small").await.unwrap(), Some(min));
        assert_eq!(s.data_increment(scope, "small", i64::MAX).await.unwrap(), Some(-1));
        assert_eq!(s.data_increment(scope, "fresh", i64::MIN).await.unwrap(), Some(i64::MIN));
        assert_eq!(s.data_get(scope, "fresh").await.unwrap(), Some(i64::MIN.to_string()));
    }

    pub async fn concurrent_data_increments_are_all_counted(s: Arc<dyn Storage>) {
        const INCREMENTERS: i64 = 64;
        let barrier = Arc::new(Barrier::new(INCREMENTERS as usize));
        let incrementers: Vec<_> = (1..=INCREMENTERS)
            .map(|delta| {
                let (s, barrier) = (s.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.data_increment("shop/counters", "hits", delta).await.unwrap().expect("an integer")
                })
            })
            .collect();
        let mut seen = Vec::new();
        for incrementer in incrementers {
            seen.push(incrementer.await.unwrap());
        }
        let total = INCREMENTERS * (INCREMENTERS + 1) / 2;
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), INCREMENTERS as usize, "every increment saw its own total");
        assert_eq!(seen.last(), Some(&total));
        assert_eq!(s.data_get("shop/counters", "hits").await.unwrap(), Some(total.to_string()));
    }
}
