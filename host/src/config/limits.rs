//! Bounds on what callers control: identifiers, collections, bodies,
//! connections. Each one is a setting with a default an operator can raise;
//! none can be turned off, because every unbounded value is a way to make
//! the server spend memory, Redis time or file descriptors on a caller's say.

use std::time::Duration;

use super::{ConfigError, Env};

/// Bounds on caller-controlled values (README, "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `MAX_NAME_BYTES` (256): worker ids, worker types, task types and
    /// approval decisions, in bytes.
    pub name_bytes: usize,
    /// `WORKER_MAX_SUPPORTED_TASKS` (256): task types one worker may list.
    pub worker_supported_tasks: usize,
    /// `WORKER_MAX_BODY_BYTES` (64 KiB): a registration or heartbeat body.
    pub worker_body_bytes: usize,
    /// `MAX_WORKERS_PER_TOKEN` (1000): live workers registered under the
    /// global worker token (a worker with its own token is one worker).
    pub workers_per_token: usize,
    /// `WORKER_MAX_POLLS` (64): long-polls one worker may hold open on one
    /// instance at a time.
    pub polls_per_worker: usize,
    /// `HTTP_HEADER_TIMEOUT_SECONDS` (30): time to send a request's headers.
    pub header_timeout: Duration,
    /// `HTTP_BODY_IDLE_TIMEOUT_SECONDS` (30): the longest pause while a
    /// request body is sent (a stalled upload is cut, a slow steady one is not).
    pub body_idle_timeout: Duration,
    /// `MAX_CONNECTIONS` (10000): open client connections; further ones wait
    /// in the kernel's accept queue until one closes.
    pub connections: usize,
}

/// The body limit of the public approval route: `{"decision": "…"}` and a
/// little room; fixed, since nothing larger is ever meaningful there.
pub const APPROVAL_BODY_BYTES: usize = 4 << 10;

impl Default for Limits {
    fn default() -> Self {
        Self {
            name_bytes: 256,
            worker_supported_tasks: 256,
            worker_body_bytes: 64 << 10,
            workers_per_token: 1000,
            polls_per_worker: 64,
            header_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(30),
            connections: 10_000,
        }
    }
}

impl Limits {
    pub(super) fn read<F: Fn(&str) -> Option<String>>(env: &Env<'_, F>) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            name_bytes: env.positive("MAX_NAME_BYTES")?.unwrap_or(d.name_bytes),
            worker_supported_tasks: env.positive("WORKER_MAX_SUPPORTED_TASKS")?.unwrap_or(d.worker_supported_tasks),
            worker_body_bytes: env.positive("WORKER_MAX_BODY_BYTES")?.unwrap_or(d.worker_body_bytes),
            workers_per_token: env.positive("MAX_WORKERS_PER_TOKEN")?.unwrap_or(d.workers_per_token),
            polls_per_worker: env.positive("WORKER_MAX_POLLS")?.unwrap_or(d.polls_per_worker),
            header_timeout: env.seconds("HTTP_HEADER_TIMEOUT_SECONDS")?.unwrap_or(d.header_timeout),
            body_idle_timeout: env.seconds("HTTP_BODY_IDLE_TIMEOUT_SECONDS")?.unwrap_or(d.body_idle_timeout),
            connections: env.positive("MAX_CONNECTIONS")?.unwrap_or(d.connections),
        })
    }

    /// Refuses an identifier that is empty, longer than `MAX_NAME_BYTES` or
    /// holds control characters (they would reach logs and headers as is).
    pub fn check_name(&self, what: &str, value: &str) -> Result<(), String> {
        if value.is_empty() {
            return Err(format!("{what} must not be empty"));
        }
        if value.len() > self.name_bytes {
            return Err(format!(
                "{what} is {} bytes long; the limit is {} (MAX_NAME_BYTES)",
                value.len(),
                self.name_bytes
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("{what} must not contain control characters"));
        }
        Ok(())
    }
}
