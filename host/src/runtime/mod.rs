//! The WebAssembly runtime: compiles blueprint components once, then runs
//! each handler call in a sandboxed instance.
//!
//! Components are compiled at start-up (or on a reload) and pre-linked
//! (`BlueprintPre`); instances come from the pooling allocator's warm slots
//! and, unless a blueprint asks for isolation, are kept for later calls
//! ([`instances`]). Every call runs under a memory cap and a CPU deadline
//! enforced by epoch interruption; a call that traps, overruns either limit or
//! breaks the contract fails with a [`HandlerError`] and never takes the
//! server down. Loaded versions are kept in a [`catalog`].

mod bindings;
pub mod cache;
mod caps;
pub mod catalog;
mod compat;
mod graph;
pub mod graph_svg;
pub mod instances;
mod sandbox;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::thread;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config as EngineConfig, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime::{Trap, UpdateDeadline};

pub use bindings::types;
use cache::{CacheStats, ComponentCache};
use catalog::{Catalog, ReloadReport, Versions};
use compat::HandlerPre;
pub use graph::{BranchSpec, ChildSpec, EndKind, Graph, MAX_BRANCHES, Outcome, Step, TaskSpec};
use instances::{IdleBudget, Instances, Live};
use sandbox::{DeadlineExceeded, MemoryLimitExceeded, Sandbox, WallClockExceeded};

use crate::config::{InstancePolicy, PluginLimits};
use crate::files::TaskFiles;
use crate::storage::DataStores;

/// The most core module instances one blueprint component may create.
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 32;
/// The most linear memories one blueprint component may define.
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
/// The most tables one blueprint component may define.
pub const MAX_TABLES_PER_COMPONENT: u32 = 16;

/// How often the epoch advances. A CPU deadline is checked, and a long call
/// yields to other tasks, once per tick.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Why a handler call produced no usable outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin exceeded its CPU time limit of {} ms", .0.as_millis())]
    Deadline(Duration),
    #[error(
        "plugin exceeded its wall-clock limit of {} ms, time waiting on S3 included (PLUGIN_WALL_TIMEOUT_MS)",
        .0.as_millis()
    )]
    WallClock(Duration),
    #[error("plugin exceeded its memory limit of {} MiB", .0 >> 20)]
    Memory(usize),
    #[error("handler returned an error: {0}")]
    Guest(String),
    #[error("handler broke the blueprint contract: {0}")]
    Contract(String),
}

/// A blueprint that failed to load; names the file it came from.
#[derive(Debug, thiserror::Error)]
#[error("blueprint {file}: {reason}")]
pub struct LoadError {
    pub file: String,
    pub reason: String,
}

/// Component bytes and where they came from (for error messages).
pub struct Source {
    pub file: String,
    pub bytes: Vec<u8>,
}

impl Source {
    /// Every `*.wasm` file in `dir`, in name order.
    pub fn read_dir(dir: &Path) -> Result<Vec<Source>, LoadError> {
        let fail = |reason: String| LoadError { file: dir.display().to_string(), reason };
        let entries = std::fs::read_dir(dir).map_err(|e| fail(format!("cannot read directory: {e}")))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "wasm") && p.is_file())
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(fail("no *.wasm blueprint components found".into()));
        }
        paths
            .into_iter()
            .map(|path| {
                let file = path.display().to_string();
                std::fs::read(&path)
                    .map(|bytes| Source { file: file.clone(), bytes })
                    .map_err(|e| LoadError { file, reason: format!("cannot read: {e}") })
            })
            .collect()
    }

    /// The example blueprints built into the binary.
    pub fn examples() -> Vec<Source> {
        avtomatika_plugins::EXAMPLES
            .iter()
            .map(|(name, bytes)| Source { file: format!("<built-in>/{name}"), bytes: bytes.to_vec() })
            .collect()
    }
}

/// A loaded blueprint version: its validated graph, its pre-linked component
/// and its live instances.
pub struct Blueprint {
    pub graph: Graph,
    /// The file the component was loaded from.
    pub file: String,
    /// The SHA-256 of the component's bytes, in hex. A job records the version
    /// it started on and runs on it to the end.
    pub version: String,
    name: Arc<str>,
    pre: HandlerPre,
    instances: Instances,
}

impl Blueprint {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether calls share live instances (see [`instances`]).
    pub fn pooled(&self) -> bool {
        self.instances.pooled()
    }

    /// Live instances waiting for a call.
    pub fn idle_instances(&self) -> usize {
        self.instances.idle()
    }

    async fn instantiate(&self, mut store: Store<Sandbox>) -> Result<Live, HandlerError> {
        let instance = self.pre.instantiate_async(&mut store).await.map_err(classify)?;
        Ok(Live::new(store, instance))
    }
}

/// What a new store needs: cloned once per call that has no live instance.
#[derive(Clone)]
struct StoreSettings {
    engine: Engine,
    limits: PluginLimits,
    /// Backs the data-store capability.
    stores: Option<Arc<dyn DataStores>>,
    /// Backs the task-files capability (with S3 configured).
    files: Option<TaskFiles>,
}

impl StoreSettings {
    fn store(&self, blueprint: Arc<str>) -> Store<Sandbox> {
        let mut store = new_store(&self.engine, self.limits, blueprint, None);
        store.data_mut().stores = self.stores.clone();
        store.data_mut().files = self.files.clone();
        store
    }
}

/// The engine, the linker with the granted capabilities, and the loaded blueprints.
pub struct Runtime {
    linker: Linker<Sandbox>,
    settings: Arc<StoreSettings>,
    policy: InstancePolicy,
    idle_budget: Arc<IdleBudget>,
    versions: Versions,
    threads: CallThreads,
    /// Compiled components kept across starts (`PLUGIN_CACHE_DIR`).
    cache: ComponentCache,
    _ticker: EpochTicker,
}

impl Runtime {
    /// An engine sized for `max_concurrent_calls` simultaneous handler calls
    /// plus the idle instances `policy` keeps, taking compiled components
    /// from `cache` when it has them.
    pub fn new(
        limits: PluginLimits,
        policy: InstancePolicy,
        max_concurrent_calls: usize,
        cache: ComponentCache,
    ) -> wasmtime::Result<Self> {
        // Up to IDLE_BLUEPRINTS blueprints keep a full pool; past that, an
        // instance that finds the budget spent is dropped after its call.
        const IDLE_BLUEPRINTS: usize = 16;
        let idle = policy.pool_size.saturating_mul(IDLE_BLUEPRINTS);
        let instances = u32::try_from(max_concurrent_calls.saturating_add(idle)).unwrap_or(u32::MAX).saturating_add(8);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(instances)
            .total_stacks(instances)
            // A componentize-py component has 14 core modules, a
            // componentize-js one several; these totals are only counters.
            .total_core_instances(instances.saturating_mul(16))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(8))
            // Caps on one component, so that no blueprint can take the pool's
            // shared slots from the others (PLUGIN_MEMORY_LIMIT_MB covers all
            // of an instance's memories together: `sandbox::MemoryLimit`).
            // The shipped Rust and JavaScript components have 3–4 core
            // instances, 1 memory and 2 tables; componentize-py ones 14, 1, 2.
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
            .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
            .max_memory_size(limits.memory_bytes)
            // Reset used slots in place: PAGEMAP_SCAN finds the pages a call
            // dirtied and only those are restored, so neither `madvise` (whose
            // TLB shootdowns cost every core) nor fresh page faults are paid
            // per call. Kernels without the ioctl fall back to madvise.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(4 << 20)
            .table_keep_resident(1 << 20)
            .async_stack_keep_resident(256 << 10)
            .decommit_batch_size(16);

        let mut config = EngineConfig::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::Blueprint::add_to_linker::<Sandbox, wasmtime::component::HasSelf<Sandbox>>(&mut linker, |s| s)?;

        Ok(Self {
            _ticker: EpochTicker::start(engine.clone()).map_err(wasmtime::Error::msg)?,
            threads: CallThreads::new().map_err(wasmtime::Error::msg)?,
            settings: Arc::new(StoreSettings { engine, limits, stores: None, files: None }),
            linker,
            policy,
            idle_budget: IdleBudget::new(idle),
            versions: Versions::default(),
            cache,
        })
    }

    /// How blueprint loads used the plugin cache so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Gives handler calls their data stores: only that part of storage.
    pub fn attach_data_stores(&mut self, stores: Arc<dyn DataStores>) {
        Arc::make_mut(&mut self.settings).stores = Some(stores);
    }

    /// Gives handler calls their job's files in S3.
    pub fn attach_files(&mut self, files: TaskFiles) {
        Arc::make_mut(&mut self.settings).files = Some(files);
    }

    /// Loads `sources` as the current set (see [`Runtime::prepare`]).
    pub async fn load(&self, sources: Vec<Source>) -> Result<ReloadReport, LoadError> {
        let catalog = self.prepare(sources).await?;
        Ok(self.install(catalog))
    }

    /// Compiles, links and describes each source into a new set, refusing the
    /// whole set on the first broken blueprint. Nothing changes until the set
    /// is installed. Components already loaded (current or retired, same
    /// bytes) are reused, not compiled again.
    pub async fn prepare(&self, sources: Vec<Source>) -> Result<Catalog, LoadError> {
        let current = self.versions.current();
        let mut blueprints = Vec::with_capacity(sources.len());
        let mut files: HashMap<String, String> = HashMap::new();
        for source in sources {
            let digest = cache::digest(&source.bytes);
            let version = cache::hex(&digest);
            if let Some(first) = files.insert(version.clone(), source.file.clone()) {
                let name = blueprints.iter().find(|b: &&Arc<Blueprint>| b.version == version).map(|b| b.name());
                let reason = format!(
                    "blueprint name {:?} is already used by {first} (the same component)",
                    name.unwrap_or_default()
                );
                return Err(LoadError { file: source.file, reason });
            }
            let known =
                current.with_version(&version).cloned().or_else(|| self.versions.retired_with_version(&version));
            let blueprint = match known {
                Some(known) => known,
                None => Arc::new(
                    self.compile(&source, &digest, version)
                        .await
                        .map_err(|reason| LoadError { file: source.file.clone(), reason })?,
                ),
            };
            blueprints.push(blueprint);
        }
        Catalog::build(blueprints)
    }

    /// Makes `catalog` the current set; running jobs keep their versions.
    pub fn install(&self, catalog: Catalog) -> ReloadReport {
        self.versions.install(catalog)
    }

    async fn compile(&self, source: &Source, digest: &[u8; 32], version: String) -> Result<Blueprint, String> {
        let engine = &self.settings.engine;
        let (component, _) = self
            .cache
            .load(engine, &source.file, &source.bytes, digest)
            .map_err(|e| format!("not a valid WebAssembly component: {}", root_message(&e)))?;
        self.link(component, source.file.clone(), version).await
    }

    /// Brings back `name` in `version` from the plugin cache, as a retired
    /// version (see [`ComponentCache::restore`]); `None` if the cache does
    /// not have it or it is another blueprint.
    pub async fn restore(&self, name: &str, version: &str) -> Option<Arc<Blueprint>> {
        let (component, entry) = self.cache.restore(&self.settings.engine, version)?;
        let file = format!("{} (plugin cache)", entry.display());
        match self.link(component, file, version.to_owned()).await {
            Ok(blueprint) if blueprint.name() == name => Some(self.versions.retire(Arc::new(blueprint))),
            Ok(other) => {
                tracing::warn!(blueprint = name, found = other.name(), "cached version belongs to another blueprint");
                None
            }
            Err(reason) => {
                tracing::warn!(blueprint = name, %reason, "cached version does not load");
                None
            }
        }
    }

    async fn link(&self, component: Component, file: String, version: String) -> Result<Blueprint, String> {
        let engine = &self.settings.engine;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("imports something the host does not grant: {}", root_message(&e)))?;
        let pre = HandlerPre::new(pre)
            .map_err(|e| format!("does not implement the avtomatika:blueprint/blueprint world: {e}"))?;

        // Describe runs in a store of its own, without capabilities.
        let mut store = new_store(engine, self.settings.limits, "<loading>".into(), None);
        let instance = pre.instantiate_async(&mut store).await.map_err(|e| classify(e).to_string())?;
        let info = instance.call_describe(&mut store).await.map_err(|e| format!("describe failed: {}", classify(e)))?;
        let graph = Graph::from_info(info)?;
        let name: Arc<str> = graph.name.as_str().into();
        let keep = if self.policy.fresh_blueprints.iter().any(|n| **n == *name) { 0 } else { self.policy.pool_size };
        let instances =
            Instances::new(keep, self.policy.max_calls, self.settings.limits.memory_bytes, self.idle_budget.clone());
        Ok(Blueprint { name, graph, file, version, pre, instances })
    }

    /// The current version of `name`: what a new job starts on.
    pub fn blueprint(&self, name: &str) -> Option<Arc<Blueprint>> {
        self.versions.current().get(name).cloned()
    }

    /// `name` in `version` (current or retired); the current version for a
    /// job recorded before versions were (`None`).
    pub fn blueprint_version(&self, name: &str, version: Option<&str>) -> Option<Arc<Blueprint>> {
        match version {
            None => self.blueprint(name),
            Some(version) => self.versions.find(name, version),
        }
    }

    /// The blueprint whose creation endpoint is `path` (e.g. `/api/v1/jobs/hello`).
    pub fn by_endpoint(&self, path: &str) -> Option<Arc<Blueprint>> {
        self.versions.current().by_endpoint(path).cloned()
    }

    /// The API versions the current blueprints' endpoints use, longest
    /// first; `None` stands for unversioned endpoints (`/api/…`).
    pub fn api_versions(&self) -> Vec<Option<String>> {
        let mut versions: Vec<Option<String>> = self
            .versions
            .current()
            .iter()
            .filter(|b| b.graph.endpoint.is_some())
            .map(|b| b.graph.api_version.clone())
            .collect();
        // Longest first, so `v2/beta` is tried before `v2`; equal ones
        // side by side for `dedup`.
        versions.sort_by_key(|v| (std::cmp::Reverse(v.as_ref().map_or(0, String::len)), v.clone()));
        versions.dedup();
        versions
    }

    /// The current blueprints, in name order.
    pub fn blueprints(&self) -> Vec<Arc<Blueprint>> {
        let mut all: Vec<_> = self.versions.current().iter().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// `(name, version)` of every retired version still loaded.
    pub fn retired_versions(&self) -> Vec<(String, String)> {
        self.versions.retired_versions()
    }

    /// Unloads retired versions no job needs (see [`Versions::unload`]).
    pub fn unload_retired(&self, grace: Duration, in_use: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
        self.versions.unload(grace, in_use)
    }

    /// Runs the handler of `context.current_state` on a live instance of
    /// `blueprint` (a fresh one if none is idle or the blueprint is isolated).
    ///
    /// The call starts on the caller's task. Most calls finish within that
    /// first poll; one that is still running at an epoch tick (or waits on an
    /// async host call) moves to the runtime's own threads, so long handlers
    /// never hold up the threads serving HTTP.
    pub async fn handle(
        &self,
        blueprint: &Arc<Blueprint>,
        context: types::JobContext,
    ) -> Result<Outcome, HandlerError> {
        let blueprint = blueprint.clone();
        // An idle instance, or what it takes to make a fresh one.
        let instance = blueprint.instances.take().ok_or_else(|| self.settings.clone());
        let mut call = Box::pin(async move {
            let mut live = match instance {
                Ok(live) => live,
                Err(settings) => blueprint.instantiate(settings.store(blueprint.name.clone())).await?,
            };
            live.begin_call(context.job_id.clone(), context.client.name.clone());
            // A failed call drops its instance: its state may be half-written.
            let answer = live.instance.call_handle(&mut live.store, &context).await.map_err(classify)?;
            blueprint.instances.give_back(live);
            match answer {
                Ok(outcome) => {
                    blueprint.graph.check_outcome(&context.current_state, outcome).map_err(HandlerError::Contract)
                }
                Err(message) => Err(HandlerError::Guest(message)),
            }
        });
        if let Poll::Ready(result) = futures::poll!(call.as_mut()) {
            return result;
        }
        self.threads.spawn(call).await.unwrap_or_else(|e| Err(HandlerError::Trap(format!("handler task failed: {e}"))))
    }
}

fn new_store(engine: &Engine, limits: PluginLimits, blueprint: Arc<str>, job_id: Option<String>) -> Store<Sandbox> {
    let mut store = Store::new(engine, Sandbox::new(blueprint, job_id, limits.memory_bytes));
    store.limiter(|sandbox| &mut sandbox.limits);
    store.data_mut().wall_limit = limits.wall_timeout;
    let limit = limits.timeout;
    let wall = limits.wall_timeout;
    store.set_epoch_deadline(1);
    // Each tick a long call either yields (so one busy plugin cannot starve
    // the threads it runs on) or, past its budget, is stopped. Time spent
    // waiting on S3 for the guest is the host's, not the guest's, but the
    // call's whole time is capped too, or a handler looping over S3 calls
    // would never end (S3 calls themselves stop at the wall limit: `on_s3`).
    store.epoch_deadline_callback(move |context| {
        let sandbox = context.data();
        let elapsed = sandbox.call_started.elapsed();
        if elapsed >= wall {
            return Err(WallClockExceeded { limit: wall }.into());
        }
        let used = elapsed.saturating_sub(sandbox.host_wait);
        if used >= limit { Err(DeadlineExceeded { limit }.into()) } else { Ok(UpdateDeadline::Yield(1)) }
    });
    store
}

/// Maps a wasmtime error to the reason a job's error message will carry.
fn classify(error: wasmtime::Error) -> HandlerError {
    if let Some(deadline) = error.downcast_ref::<DeadlineExceeded>() {
        return HandlerError::Deadline(deadline.limit);
    }
    if let Some(wall) = error.downcast_ref::<WallClockExceeded>() {
        return HandlerError::WallClock(wall.limit);
    }
    if let Some(memory) = error.downcast_ref::<MemoryLimitExceeded>() {
        return HandlerError::Memory(memory.limit_bytes);
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return HandlerError::Trap(trap.to_string());
    }
    HandlerError::Trap(root_message(&error))
}

fn root_message(error: &wasmtime::Error) -> String {
    error.root_cause().to_string()
}

/// Threads for handler calls that outlast their first poll. Dropped without
/// waiting: calls still running there are abandoned with their stores.
struct CallThreads(Option<tokio::runtime::Runtime>);

impl CallThreads {
    fn new() -> std::io::Result<Self> {
        let threads = thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("plugin")
            // Time for deadlines, I/O for the host calls a handler makes
            // from here (S3 requests of the task-files capability).
            .enable_time()
            .enable_io()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    fn spawn<F>(&self, call: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(runtime) => runtime.spawn(call),
            None => tokio::spawn(call),
        }
    }
}

impl Drop for CallThreads {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            // A runtime may not be dropped (blocking) from async code.
            runtime.shutdown_background();
        }
    }
}

/// Advances the engine's epoch on its own thread, so deadlines fire even when
/// every runtime thread is busy inside WebAssembly.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
