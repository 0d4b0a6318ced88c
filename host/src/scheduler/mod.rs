//! The native scheduler: creates jobs from `schedules.toml` at their slots.
//!
//! Every instance ticks once a second and, for each schedule, computes the
//! latest slot at or before now ([`slots`]). A slot's job is created by
//! whichever instance first claims `(schedule, slot)` in storage — an atomic
//! `SET NX` on Redis — so with any number of instances each slot creates
//! exactly one job, whatever their clocks' small differences.
//!
//! Catch-up policy: a slot is run if an instance sees it within
//! [`GRACE`] of its time, so a restart or a short storage outage does not
//! lose it. Slots missed for longer (no instance running) are skipped, never
//! replayed: after downtime there is no burst of old runs; the schedule
//! simply continues with its next slot.

pub mod slots;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::auth::Client;
use crate::config::schedules::{Schedule, Trigger};
use crate::model::JobId;
use crate::orchestrator::{Orchestrator, OrchestratorResult};

/// How often each instance looks for due slots.
const TICK: Duration = Duration::from_secs(1);
/// How late a slot may still be run.
pub const GRACE: Duration = Duration::from_secs(60);

/// The client identity of jobs a schedule creates: `scheduler:<schedule name>`.
pub fn client_name(schedule: &str) -> String {
    format!("{}{schedule}", crate::config::clients::RESERVED_PREFIX)
}

impl Orchestrator {
    /// Ticks until `shutdown`; does nothing without schedules.
    pub async fn run_scheduler(self: Arc<Self>, shutdown: CancellationToken) {
        let enabled = self.schedules.iter().filter(|s| s.enabled).count();
        if enabled == 0 {
            return;
        }
        tracing::info!(schedules = enabled, disabled = self.schedules.len() - enabled, "scheduler started");
        loop {
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = shutdown.cancelled() => return,
            }
            if let Err(e) = self.tick_schedules(Utc::now()).await {
                tracing::warn!(error = %e, "scheduler tick failed; retrying next tick");
            }
        }
    }

    /// Creates the jobs of every slot due at `now` that no instance claimed
    /// yet; returns the ids created here. Public so tests can drive the
    /// scheduler with their own clock.
    pub async fn tick_schedules(&self, now: DateTime<Utc>) -> OrchestratorResult<Vec<JobId>> {
        let grace = chrono::Duration::from_std(GRACE).unwrap_or(chrono::Duration::MAX);
        let mut created = Vec::new();
        for schedule in self.schedules.iter().filter(|s| s.enabled) {
            let Some(slot) = slots::latest_at_or_before(&schedule.trigger, self.config.tz, now) else { continue };
            if now - slot > grace {
                continue;
            }
            // The claim outlives the grace window, so a slot can never be
            // claimed a second time once its first claim expires.
            if !self.storage.claim_slot(&schedule.name, slot.timestamp(), GRACE * 2).await? {
                continue;
            }
            let Some(blueprint) = self.runtime.blueprint(&schedule.blueprint) else {
                tracing::error!(schedule = %schedule.name, blueprint = %schedule.blueprint, "scheduled blueprint is not loaded");
                continue;
            };
            let client = Client::internal(client_name(&schedule.name));
            let body = json!({ "initial_data": Value::Object(schedule.input_data.clone()) });
            let job_id = self.create_job(&client, &blueprint, body).await?;
            tracing::info!(
                schedule = %schedule.name,
                slot = %slot.with_timezone(&self.config.tz).to_rfc3339(),
                %job_id,
                "scheduled job created"
            );
            created.push(job_id);
        }
        Ok(created)
    }

    /// The schedules with their next run time, for `GET /api/v1/schedules`.
    pub fn schedules_view(&self, now: DateTime<Utc>) -> Vec<Value> {
        self.schedules.iter().map(|s| view(s, self.config.tz, now)).collect()
    }
}

fn view(schedule: &Schedule, tz: chrono_tz::Tz, now: DateTime<Utc>) -> Value {
    let time = |t: &chrono::NaiveTime| t.format("%H:%M").to_string();
    let trigger = match &schedule.trigger {
        Trigger::Interval { seconds } => json!({ "interval_seconds": seconds }),
        Trigger::Daily { at } => json!({ "daily_at": time(at) }),
        Trigger::Weekly { days, at } => json!({
            "weekly_days": days.iter().map(|d| d.to_string().to_lowercase()).collect::<Vec<_>>(),
            "time": time(at),
        }),
        Trigger::Monthly { dates, at } => json!({ "monthly_dates": dates, "time": time(at) }),
    };
    // A disabled schedule has no next run: `null`, with `enabled` saying why.
    let next = schedule
        .enabled
        .then(|| slots::next_after(&schedule.trigger, tz, now))
        .flatten()
        .map(|t| t.with_timezone(&tz).to_rfc3339());
    json!({
        "name": schedule.name,
        "blueprint": schedule.blueprint,
        "trigger": trigger,
        "input_data": schedule.input_data,
        "enabled": schedule.enabled,
        "next_run_at": next,
        "time_zone": tz.name(),
    })
}
