//! Which blueprint version a job runs on, and changing the loaded set while
//! jobs run: reloads (on request, or when `BLUEPRINTS_DIR` changes) and the
//! unloading of retired versions no job needs any more.
//!
//! Versions live in each instance's memory. A job stepped by an instance that
//! does not have the job's version (another instance reloaded first) makes it
//! read `BLUEPRINTS_DIR` again; a version that is nowhere to be found fails
//! the job with a message naming it rather than running it on other code.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{Orchestrator, OrchestratorError, OrchestratorResult};
use crate::model::{Job, JobStatus};
use crate::runtime::catalog::ReloadReport;
use crate::runtime::{Blueprint, Source};

/// How long a retired version stays loaded at least: covers a job created on
/// it just before the reload and not yet stored when the first sweep looks.
const RETIRED_GRACE: Duration = Duration::from_secs(60);

/// How often retired versions are checked for jobs still needing them.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// A job whose version is missing reads the directory again at most this often.
const RESCAN_INTERVAL: Duration = Duration::from_secs(5);

/// Name, size and modification time of every `*.wasm` in a directory: what
/// changes when a component is added, replaced or removed.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// Serialises reloads and remembers the last one.
#[derive(Default)]
pub struct Reloads {
    state: tokio::sync::Mutex<ReloadState>,
}

#[derive(Default)]
struct ReloadState {
    last: Option<Instant>,
    /// The directory as the last reload (or start-up) read it.
    seen: Option<Fingerprint>,
}

impl Reloads {
    /// For a server that loaded `dir` at start-up: the watch compares with it.
    pub fn loaded_from(dir: Option<&Path>) -> Self {
        Self { state: tokio::sync::Mutex::new(ReloadState { last: None, seen: dir.map(fingerprint) }) }
    }
}

impl Orchestrator {
    /// The version `job` runs on, for looking up its graph from code that
    /// cannot wait. Falls back to the current version when the job's is not
    /// loaded here; the executor, which runs handlers, does not (see
    /// [`Orchestrator::blueprint_of`]).
    pub(super) fn graph_of(&self, job: &Job) -> Option<Arc<Blueprint>> {
        self.runtime
            .blueprint_version(&job.blueprint_name, job.blueprint_version.as_deref())
            .or_else(|| self.runtime.blueprint(&job.blueprint_name))
    }

    /// The version `job` started on. When this instance does not have it,
    /// `BLUEPRINTS_DIR` is read again (another instance may have loaded it);
    /// the error says which version is missing.
    pub(super) async fn blueprint_of(&self, job: &Job) -> Result<Arc<Blueprint>, String> {
        let lookup = || self.runtime.blueprint_version(&job.blueprint_name, job.blueprint_version.as_deref());
        if let Some(blueprint) = lookup() {
            return Ok(blueprint);
        }
        let recently = self.reloads.state.lock().await.last.is_some_and(|at| at.elapsed() < RESCAN_INTERVAL);
        if !recently && let Err(e) = self.reload_blueprints().await {
            tracing::warn!(job_id = %job.id, error = %e, "reading BLUEPRINTS_DIR for a missing blueprint version failed");
        }
        if let Some(blueprint) = lookup() {
            return Ok(blueprint);
        }
        // Replaced before a restart: the plugin cache may still have it.
        if let Some(version) = &job.blueprint_version
            && let Some(blueprint) = self.runtime.restore(&job.blueprint_name, version).await
        {
            tracing::info!(
                job_id = %job.id, blueprint = %job.blueprint_name, version = short(version),
                "blueprint version restored from the plugin cache"
            );
            return Ok(blueprint);
        }
        lookup().ok_or_else(|| match &job.blueprint_version {
            Some(version) if self.runtime.blueprint(&job.blueprint_name).is_some() => format!(
                "blueprint {:?} version {} (the one the job started on) is no longer loaded",
                job.blueprint_name,
                short(version)
            ),
            _ => format!("blueprint {:?} is not loaded", job.blueprint_name),
        })
    }

    /// Reads `BLUEPRINTS_DIR` (or the built-in examples) and makes it the
    /// current set. A component that fails to load, or a set that loses a
    /// blueprint a schedule runs, is refused and the running set stays as it
    /// was. Jobs keep the version they started on.
    pub async fn reload_blueprints(&self) -> OrchestratorResult<ReloadReport> {
        let result = self.try_reload_blueprints().await;
        self.metrics.blueprint_reload(result.is_ok());
        result
    }

    async fn try_reload_blueprints(&self) -> OrchestratorResult<ReloadReport> {
        let mut state = self.reloads.state.lock().await;
        let (sources, seen) = match self.config.blueprints_dir.clone() {
            Some(dir) => tokio::task::spawn_blocking(move || (Source::read_dir(&dir), Some(fingerprint(&dir))))
                .await
                .map_err(|e| OrchestratorError::Rejected(format!("reading BLUEPRINTS_DIR failed: {e}")))?,
            None => (Ok(Source::examples()), None),
        };
        // A refused set is not tried again until the directory changes.
        state.seen = seen;
        let sources = sources.map_err(|e| OrchestratorError::Rejected(e.to_string()))?;
        let catalog = self.runtime.prepare(sources).await.map_err(|e| OrchestratorError::Rejected(e.to_string()))?;
        for schedule in &self.schedules {
            if catalog.get(&schedule.blueprint).is_none() {
                return Err(OrchestratorError::Rejected(format!(
                    "schedule {:?} runs blueprint {:?}, which the new set does not have",
                    schedule.name, schedule.blueprint
                )));
            }
        }
        let report = self.runtime.install(catalog);
        state.last = Some(Instant::now());
        for (change, list) in [("added", &report.added), ("updated", &report.updated), ("removed", &report.removed)] {
            for blueprint in list {
                tracing::info!(
                    blueprint = %blueprint.name, version = short(&blueprint.version), file = %blueprint.file,
                    change, "blueprint reloaded"
                );
            }
        }
        Ok(report)
    }

    /// Until `shutdown`: reloads when `BLUEPRINTS_DIR` changes (with
    /// `BLUEPRINTS_WATCH_INTERVAL_SECONDS`) and unloads retired versions no
    /// unfinished job needs.
    pub async fn run_blueprint_upkeep(self: Arc<Self>, shutdown: CancellationToken) {
        let watch = self.config.blueprints_dir.clone().zip(self.config.blueprints_watch);
        let tick = watch.as_ref().map_or(SWEEP_INTERVAL, |(_, every)| (*every).min(SWEEP_INTERVAL));
        let mut last_sweep = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
            if let Some((dir, _)) = &watch {
                let dir = dir.clone();
                let now = tokio::task::spawn_blocking(move || fingerprint(&dir)).await.ok();
                let changed = now.is_some() && now != self.reloads.state.lock().await.seen;
                if changed {
                    match self.reload_blueprints().await {
                        Ok(report) if report.changed() => tracing::info!("BLUEPRINTS_DIR changed; blueprints reloaded"),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "BLUEPRINTS_DIR changed but the new set was refused; the running set stays")
                        }
                    }
                }
            }
            if last_sweep.elapsed() >= SWEEP_INTERVAL {
                last_sweep = Instant::now();
                self.unload_retired_versions().await;
            }
        }
    }

    /// Unloads retired versions that no unfinished job started on (and that
    /// were retired at least a minute ago).
    pub async fn unload_retired_versions(&self) -> Vec<(String, String)> {
        self.unload_retired_versions_after(RETIRED_GRACE).await
    }

    /// [`Orchestrator::unload_retired_versions`] with another grace period.
    pub async fn unload_retired_versions_after(&self, grace: Duration) -> Vec<(String, String)> {
        if self.runtime.retired_versions().is_empty() {
            return Vec::new();
        }
        let in_use = match self.versions_in_use().await {
            Ok(in_use) => in_use,
            Err(e) => {
                tracing::warn!(error = %e, "listing unfinished jobs failed; retired blueprint versions stay loaded");
                return Vec::new();
            }
        };
        let unloaded =
            self.runtime.unload_retired(grace, |name, version| in_use.contains(&(name.to_owned(), version.to_owned())));
        for (name, version) in &unloaded {
            tracing::info!(blueprint = %name, version = short(version), "retired blueprint version unloaded");
        }
        unloaded
    }

    /// `(blueprint, version)` of every unfinished job.
    async fn versions_in_use(&self) -> OrchestratorResult<HashSet<(String, String)>> {
        const PAGE: usize = 500;
        let mut in_use = HashSet::new();
        for status in JobStatus::UNFINISHED {
            let mut offset = 0;
            loop {
                let ids = self.storage.jobs_with_status(status, PAGE, offset).await?;
                for id in &ids {
                    if let Some(job) = self.storage.get_job(*id).await?
                        && let Some(version) = job.blueprint_version
                    {
                        in_use.insert((job.blueprint_name, version));
                    }
                }
                if ids.len() < PAGE {
                    break;
                }
                offset += PAGE;
            }
        }
        Ok(in_use)
    }
}

/// A version as logs and messages show it: the first 12 hex digits.
pub fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|ext| ext == "wasm"))
        .filter_map(|e| e.metadata().ok().map(|m| (e.path(), m.len(), m.modified().ok())))
        .collect();
    entries.sort();
    entries
}
