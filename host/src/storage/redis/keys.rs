//! Key names, all under one prefix so several deployments (or tests) can
//! share a server. Every key the backend touches is named here.

use uuid::Uuid;

use crate::model::{JobId, JobStatus};

/// Key names under one prefix, so several deployments (or tests) can share a server.
pub(super) struct Keys {
    pub(super) prefix: String,
}

impl Keys {
    pub(super) fn job(&self, id: JobId) -> String {
        format!("{}:job:{id}", self.prefix)
    }
    pub(super) fn job_prefix(&self) -> String {
        format!("{}:job:", self.prefix)
    }
    /// Jobs with one status, scored by `updated_at` in µs.
    pub(super) fn status(&self, status: JobStatus) -> String {
        format!("{}{status}", self.status_prefix())
    }
    pub(super) fn status_prefix(&self) -> String {
        format!("{}:status:", self.prefix)
    }
    /// Ended jobs by end time in µs, each as its id followed by the key of
    /// its client's index, so that index loses it when its retention lapses.
    pub(super) fn ended(&self) -> String {
        format!("{}:ended", self.prefix)
    }
    /// One client's jobs, scored by `created_at` in µs.
    pub(super) fn client_jobs(&self, client: &str) -> String {
        format!("{}:client:{client}", self.prefix)
    }
    /// One fan-out's branch results: task id → result JSON.
    pub(super) fn branches(&self, wait_id: Uuid) -> String {
        format!("{}:branches:{wait_id}", self.prefix)
    }
    /// One data store (`{blueprint}/{store}`): key → JSON.
    pub(super) fn data(&self, scope: &str) -> String {
        format!("{}:data:{scope}", self.prefix)
    }
    pub(super) fn watch(&self) -> String {
        format!("{}:watch", self.prefix)
    }
    pub(super) fn jobs(&self) -> String {
        format!("{}:jobs", self.prefix)
    }
    pub(super) fn tasks(&self, worker_id: &str) -> String {
        format!("{}:tasks:{worker_id}", self.prefix)
    }
    pub(super) fn task_seq(&self) -> String {
        format!("{}:taskseq", self.prefix)
    }
    pub(super) fn wake(&self) -> String {
        format!("{}:wake", self.prefix)
    }
    /// Cancels held for a worker's next heartbeat (a set of task ids).
    pub(super) fn held_cancels(&self, worker_id: &str) -> String {
        format!("{}:cancels:{worker_id}", self.prefix)
    }
    /// The key worker access tokens are signed with (hex).
    pub(super) fn access_key(&self) -> String {
        format!("{}:access_key", self.prefix)
    }
    pub(super) fn tokens_changed(&self) -> String {
        format!("{}:tokens", self.prefix)
    }
    pub(super) fn worker(&self, worker_id: &str) -> String {
        format!("{}:worker:{worker_id}", self.prefix)
    }
    pub(super) fn worker_prefix(&self) -> String {
        format!("{}:worker:", self.prefix)
    }
    pub(super) fn live(&self) -> String {
        format!("{}:workers", self.prefix)
    }
    pub(super) fn task_type(&self, task_type: &str) -> String {
        format!("{}:tasktype:{task_type}", self.prefix)
    }
    pub(super) fn task_type_prefix(&self) -> String {
        format!("{}:tasktype:", self.prefix)
    }
    pub(super) fn parked(&self, task_type: &str) -> String {
        format!("{}:parked:{task_type}", self.prefix)
    }
    pub(super) fn tokens_by_id(&self) -> String {
        format!("{}:worker_tokens", self.prefix)
    }
    pub(super) fn tokens_by_hash(&self) -> String {
        format!("{}:worker_tokens_by_hash", self.prefix)
    }
    pub(super) fn quota(&self, client: &str) -> String {
        format!("{}:quota:{client}", self.prefix)
    }
    pub(super) fn slot(&self, schedule: &str, slot: i64) -> String {
        format!("{}:slot:{schedule}:{slot}", self.prefix)
    }
    /// A round-robin counter.
    pub(super) fn turn(&self, name: &str) -> String {
        format!("{}:turn:{name}", self.prefix)
    }
    pub(super) fn lock(&self, name: &str) -> String {
        format!("{}:lock:{name}", self.prefix)
    }
    /// The pub/sub channels of workers' sockets: this and the worker id.
    pub(super) fn worker_channel_prefix(&self) -> String {
        format!("{}:ws:", self.prefix)
    }
    /// Present while the instance (job stream consumer) of that name is alive.
    pub(super) fn instance(&self, consumer: &str) -> String {
        format!("{}:instance:{consumer}", self.prefix)
    }
}
