//! The loaded blueprints: the current version of each, by name and by
//! creation endpoint, and the older versions kept for the jobs that started
//! on them.
//!
//! A reload builds a whole new [`Catalog`] and swaps it in at once, so a
//! request sees either the old set or the new one, never a mix. A version the
//! new set no longer has is *retired*: new jobs cannot start on it, but jobs
//! that did keep running on it until none is left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Blueprint, LoadError};

/// One consistent set of current blueprints.
#[derive(Default)]
pub struct Catalog {
    by_name: HashMap<String, Arc<Blueprint>>,
    by_endpoint: HashMap<String, Arc<Blueprint>>,
}

impl Catalog {
    /// Indexes `blueprints`, refusing the set if two share a name or an endpoint.
    pub fn build(blueprints: Vec<Arc<Blueprint>>) -> Result<Self, LoadError> {
        let mut catalog = Self::default();
        for blueprint in blueprints {
            let conflict = |reason: String| LoadError { file: blueprint.file.clone(), reason };
            if let Some(other) = catalog.by_name.get(blueprint.name()) {
                return Err(conflict(format!(
                    "blueprint name {:?} is already used by {}",
                    blueprint.name(),
                    other.file
                )));
            }
            if let Some(endpoint) = &blueprint.graph.endpoint {
                if let Some(other) = catalog.by_endpoint.get(endpoint) {
                    return Err(conflict(format!("endpoint {endpoint} is already used by {}", other.file)));
                }
                catalog.by_endpoint.insert(endpoint.clone(), blueprint.clone());
            }
            catalog.by_name.insert(blueprint.name().to_owned(), blueprint);
        }
        Ok(catalog)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Blueprint>> {
        self.by_name.get(name)
    }

    pub fn by_endpoint(&self, path: &str) -> Option<&Arc<Blueprint>> {
        self.by_endpoint.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Blueprint>> {
        self.by_name.values()
    }

    /// A loaded blueprint compiled from the same bytes, to reuse on reload.
    pub fn with_version(&self, version: &str) -> Option<&Arc<Blueprint>> {
        self.by_name.values().find(|b| b.version == version)
    }
}

/// A blueprint as a reload reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub version: String,
    pub file: String,
    pub endpoint: Option<String>,
}

impl Listed {
    fn of(blueprint: &Blueprint) -> Self {
        Self {
            name: blueprint.name().to_owned(),
            version: blueprint.version.clone(),
            file: blueprint.file.clone(),
            endpoint: blueprint.graph.endpoint.clone(),
        }
    }
}

/// What a reload changed.
#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    /// Blueprints whose name was not loaded before.
    pub added: Vec<Listed>,
    /// Blueprints loaded in a new version; the old one is retired.
    pub updated: Vec<Listed>,
    /// Blueprints no longer in the set; their last version is retired.
    pub removed: Vec<Listed>,
    pub unchanged: Vec<Listed>,
}

impl ReloadReport {
    pub fn changed(&self) -> bool {
        !(self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty())
    }
}

struct Retired {
    blueprint: Arc<Blueprint>,
    since: Instant,
}

/// The current catalog and the retired versions.
#[derive(Default)]
pub struct Versions {
    current: RwLock<Arc<Catalog>>,
    retired: Mutex<Vec<Retired>>,
}

impl Versions {
    pub fn current(&self) -> Arc<Catalog> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// `name` in `version`: the current one or a retired one.
    pub fn find(&self, name: &str, version: &str) -> Option<Arc<Blueprint>> {
        if let Some(current) = self.current().get(name).filter(|b| b.version == version) {
            return Some(current.clone());
        }
        self.retired()
            .iter()
            .find(|r| r.blueprint.version == version && r.blueprint.name() == name)
            .map(|r| r.blueprint.clone())
    }

    /// A retired blueprint compiled from the same bytes, to reuse on reload.
    pub fn retired_with_version(&self, version: &str) -> Option<Arc<Blueprint>> {
        self.retired().iter().find(|r| r.blueprint.version == version).map(|r| r.blueprint.clone())
    }

    /// Makes `next` the current set; versions it drops are retired.
    pub fn install(&self, next: Catalog) -> ReloadReport {
        let next = Arc::new(next);
        let previous =
            std::mem::replace(&mut *self.current.write().unwrap_or_else(PoisonError::into_inner), next.clone());
        let mut report = ReloadReport::default();
        let mut retiring = Vec::new();
        for blueprint in next.iter() {
            match previous.get(blueprint.name()) {
                None => report.added.push(Listed::of(blueprint)),
                Some(old) if old.version == blueprint.version => report.unchanged.push(Listed::of(blueprint)),
                Some(old) => {
                    report.updated.push(Listed::of(blueprint));
                    retiring.push(old.clone());
                }
            }
        }
        for old in previous.iter().filter(|old| next.get(old.name()).is_none()) {
            report.removed.push(Listed::of(old));
            retiring.push(old.clone());
        }
        let now = Instant::now();
        let mut retired = self.retired();
        // A version loaded again (a rollback) is current, not retired.
        retired.retain(|r| next.get(r.blueprint.name()).is_none_or(|b| b.version != r.blueprint.version));
        retired.extend(retiring.into_iter().map(|blueprint| Retired { blueprint, since: now }));
        for list in [&mut report.added, &mut report.updated, &mut report.removed, &mut report.unchanged] {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
        report
    }

    /// Adds `blueprint` as a retired version (one brought back for a job);
    /// returns the one kept if it was there already.
    pub fn retire(&self, blueprint: Arc<Blueprint>) -> Arc<Blueprint> {
        let mut retired = self.retired();
        if let Some(known) =
            retired.iter().find(|r| r.blueprint.name() == blueprint.name() && r.blueprint.version == blueprint.version)
        {
            return known.blueprint.clone();
        }
        retired.push(Retired { blueprint: blueprint.clone(), since: Instant::now() });
        blueprint
    }

    /// `(name, version)` of every retired version.
    pub fn retired_versions(&self) -> Vec<(String, String)> {
        self.retired().iter().map(|r| (r.blueprint.name().to_owned(), r.blueprint.version.clone())).collect()
    }

    /// Unloads the retired versions retired for longer than `grace` that
    /// `in_use` says no job needs; returns them. The grace period covers a job
    /// created on a version just before it was retired and not yet stored.
    pub fn unload(&self, grace: Duration, in_use: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
        let mut unloaded = Vec::new();
        let mut retired = self.retired();
        retired.retain(|r| {
            let keep = r.since.elapsed() < grace || in_use(r.blueprint.name(), &r.blueprint.version);
            if !keep {
                unloaded.push((r.blueprint.name().to_owned(), r.blueprint.version.clone()));
            }
            keep
        });
        unloaded
    }

    fn retired(&self) -> std::sync::MutexGuard<'_, Vec<Retired>> {
        self.retired.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
