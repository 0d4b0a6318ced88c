//! The Lua scripts (in `lua/`, each listing its KEYS and ARGV): every
//! multi-key change is one script, so it lands atomically.

use redis::Script;

pub(super) struct Scripts {
    pub(super) create_job: Script,
    pub(super) update_job: Script,
    pub(super) store_worker: Script,
    pub(super) ping_worker: Script,
    pub(super) candidates: Script,
    pub(super) live_workers: Script,
    pub(super) record_outcome: Script,
    pub(super) purge_workers: Script,
    pub(super) add_in_flight: Script,
    pub(super) replace_tokens: Script,
    pub(super) take_quota: Script,
    pub(super) release_lock: Script,
    pub(super) withdraw_task: Script,
    pub(super) record_branch: Script,
    pub(super) list_jobs: Script,
    pub(super) worker_census: Script,
    pub(super) record_progress: Script,
    pub(super) hold_cancel: Script,
    pub(super) take_cancels: Script,
}

impl Scripts {
    pub(super) fn load() -> Self {
        Self {
            create_job: Script::new(include_str!("lua/create_job.lua")),
            update_job: Script::new(include_str!("lua/update_job.lua")),
            store_worker: Script::new(include_str!("lua/store_worker.lua")),
            ping_worker: Script::new(include_str!("lua/ping_worker.lua")),
            candidates: Script::new(include_str!("lua/candidates.lua")),
            live_workers: Script::new(include_str!("lua/live_workers.lua")),
            record_outcome: Script::new(include_str!("lua/record_outcome.lua")),
            purge_workers: Script::new(include_str!("lua/purge_workers.lua")),
            add_in_flight: Script::new(include_str!("lua/add_in_flight.lua")),
            replace_tokens: Script::new(include_str!("lua/replace_tokens.lua")),
            take_quota: Script::new(include_str!("lua/take_quota.lua")),
            release_lock: Script::new(include_str!("lua/release_lock.lua")),
            withdraw_task: Script::new(include_str!("lua/withdraw_task.lua")),
            record_branch: Script::new(include_str!("lua/record_branch.lua")),
            list_jobs: Script::new(include_str!("lua/list_jobs.lua")),
            worker_census: Script::new(include_str!("lua/worker_census.lua")),
            record_progress: Script::new(include_str!("lua/record_progress.lua")),
            hold_cancel: Script::new(include_str!("lua/hold_cancel.lua")),
            take_cancels: Script::new(include_str!("lua/take_cancels.lua")),
        }
    }
}
