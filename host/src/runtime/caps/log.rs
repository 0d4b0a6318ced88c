//! `avtomatika:blueprint/log`: a blueprint's log records, written into the
//! host's log tagged with the blueprint and job.

use super::super::bindings::avtomatika::blueprint::log::{Host, Level};
use super::super::sandbox::Sandbox;

/// Longest message or field text kept from one record; the rest is cut so a
/// plugin cannot flood the host's log.
const MAX_TEXT: usize = 4096;

/// Most fields kept from one record.
const MAX_FIELDS: usize = 32;

fn clip(text: &str) -> &str {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Host for Sandbox {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        let fields = fields
            .iter()
            .take(MAX_FIELDS)
            .map(|(k, v)| format!("{}={}", clip(k), clip(v)))
            .collect::<Vec<_>>()
            .join(" ");
        let message = clip(&message);
        let blueprint = &*self.blueprint;
        let job_id = self.job_id.as_deref().unwrap_or("");
        match level {
            Level::Trace => tracing::trace!(target: "blueprint", blueprint, job_id, fields, "{message}"),
            Level::Debug => tracing::debug!(target: "blueprint", blueprint, job_id, fields, "{message}"),
            Level::Info => tracing::info!(target: "blueprint", blueprint, job_id, fields, "{message}"),
            Level::Warn => tracing::warn!(target: "blueprint", blueprint, job_id, fields, "{message}"),
            Level::Error => tracing::error!(target: "blueprint", blueprint, job_id, fields, "{message}"),
        }
    }
}
