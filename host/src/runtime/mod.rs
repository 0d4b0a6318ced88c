//! The WebAssembly runtime: compiles blueprint components once, then runs each
//! handler call in a fresh, sandboxed instance.
//!
//! Components are compiled at start-up and pre-linked (`BlueprintPre`), so a
//! call only instantiates from the pooling allocator's warm slots. Every call
//! gets its own store with a memory cap and a CPU deadline enforced by epoch
//! interruption; a call that traps, overruns either limit or breaks the
//! contract fails with a [`HandlerError`] and never takes the server down.

mod bindings;
pub mod cache;
mod caps;
mod graph;
mod sandbox;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::component::Linker;
use wasmtime::{Config as EngineConfig, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime::{Trap, UpdateDeadline};

pub use bindings::types;
use cache::{CacheStats, ComponentCache};
pub use graph::{BranchSpec, ChildSpec, EndKind, Graph, MAX_BRANCHES, Outcome, Step, TaskSpec};
use sandbox::{DeadlineExceeded, MemoryLimitExceeded, Sandbox};

use crate::config::PluginLimits;
use crate::files::TaskFiles;
use crate::storage::Storage;

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

/// A loaded blueprint: its validated graph and its pre-linked component.
pub struct Blueprint {
    pub graph: Graph,
    /// The file the component was loaded from.
    pub file: String,
    name: Arc<str>,
    pre: bindings::BlueprintPre<Sandbox>,
}

impl Blueprint {
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The engine, the linker with the granted capabilities, and the loaded blueprints.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Sandbox>,
    limits: PluginLimits,
    blueprints: HashMap<String, Arc<Blueprint>>,
    endpoints: HashMap<String, Arc<Blueprint>>,
    pool: PluginPool,
    /// Backs the data-store capability.
    stores: Option<Arc<dyn Storage>>,
    /// Backs the task-files capability (with S3 configured).
    files: Option<TaskFiles>,
    /// Compiled components kept across starts (`PLUGIN_CACHE_DIR`).
    cache: ComponentCache,
    _ticker: EpochTicker,
}

impl Runtime {
    /// An engine sized for `max_concurrent_calls` simultaneous handler calls,
    /// taking compiled components from `cache` when it has them.
    pub fn new(limits: PluginLimits, max_concurrent_calls: usize, cache: ComponentCache) -> wasmtime::Result<Self> {
        let instances = u32::try_from(max_concurrent_calls).unwrap_or(u32::MAX).saturating_add(8);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(instances)
            .total_stacks(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
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
            pool: PluginPool::new().map_err(wasmtime::Error::msg)?,
            engine,
            linker,
            limits,
            blueprints: HashMap::new(),
            endpoints: HashMap::new(),
            stores: None,
            files: None,
            cache,
        })
    }

    /// How blueprint loads used the plugin cache so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Gives handler calls their data stores, kept by `storage`.
    pub fn attach_storage(&mut self, storage: Arc<dyn Storage>) {
        self.stores = Some(storage);
    }

    /// Gives handler calls their job's files in S3.
    pub fn attach_files(&mut self, files: TaskFiles) {
        self.files = Some(files);
    }

    /// Compiles, links and describes each source, refusing the whole set on
    /// the first broken blueprint.
    pub async fn load(&mut self, sources: Vec<Source>) -> Result<(), LoadError> {
        for source in sources {
            let blueprint =
                self.compile(&source).await.map_err(|reason| LoadError { file: source.file.clone(), reason })?;
            self.register(blueprint)?;
        }
        Ok(())
    }

    async fn compile(&self, source: &Source) -> Result<Blueprint, String> {
        let (component, _) = self
            .cache
            .load(&self.engine, &source.file, &source.bytes)
            .map_err(|e| format!("not a valid WebAssembly component: {}", root_message(&e)))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("imports something the host does not grant: {}", root_message(&e)))?;
        let pre = bindings::BlueprintPre::new(pre).map_err(|e| {
            format!("does not implement the avtomatika:blueprint/blueprint world: {}", root_message(&e))
        })?;

        let mut store = self.store("<loading>".into(), None);
        let instance = pre.instantiate_async(&mut store).await.map_err(|e| classify(e).to_string())?;
        let info = instance
            .avtomatika_blueprint_handler()
            .call_describe(&mut store)
            .await
            .map_err(|e| format!("describe failed: {}", classify(e)))?;
        let graph = Graph::from_info(info)?;
        Ok(Blueprint { name: graph.name.as_str().into(), graph, file: source.file.clone(), pre })
    }

    fn register(&mut self, blueprint: Blueprint) -> Result<(), LoadError> {
        let conflict = |reason: String| LoadError { file: blueprint.file.clone(), reason };
        if let Some(other) = self.blueprints.get(blueprint.name()) {
            return Err(conflict(format!("blueprint name {:?} is already used by {}", blueprint.name(), other.file)));
        }
        if let Some(endpoint) = &blueprint.graph.endpoint
            && let Some(other) = self.endpoints.get(endpoint)
        {
            return Err(conflict(format!("endpoint {endpoint} is already used by {}", other.file)));
        }
        let blueprint = Arc::new(blueprint);
        if let Some(endpoint) = &blueprint.graph.endpoint {
            self.endpoints.insert(endpoint.clone(), blueprint.clone());
        }
        self.blueprints.insert(blueprint.name().to_owned(), blueprint);
        Ok(())
    }

    pub fn blueprint(&self, name: &str) -> Option<&Arc<Blueprint>> {
        self.blueprints.get(name)
    }

    /// The blueprint whose creation endpoint is `path` (e.g. `/api/v1/jobs/hello`).
    pub fn by_endpoint(&self, path: &str) -> Option<&Arc<Blueprint>> {
        self.endpoints.get(path)
    }

    pub fn blueprints(&self) -> impl Iterator<Item = &Arc<Blueprint>> {
        self.blueprints.values()
    }

    /// Runs the handler of `context.current_state` in a fresh instance.
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
        let mut store = new_store(&self.engine, self.limits, blueprint.name.clone(), Some(context.job_id.clone()));
        store.data_mut().stores = self.stores.clone();
        store.data_mut().files = self.files.clone();
        let mut call = Box::pin(async move {
            let instance = blueprint.pre.instantiate_async(&mut store).await.map_err(classify)?;
            let answer =
                instance.avtomatika_blueprint_handler().call_handle(&mut store, &context).await.map_err(classify)?;
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
        self.pool.spawn(call).await.unwrap_or_else(|e| Err(HandlerError::Trap(format!("handler task failed: {e}"))))
    }

    fn store(&self, blueprint: Arc<str>, job_id: Option<String>) -> Store<Sandbox> {
        new_store(&self.engine, self.limits, blueprint, job_id)
    }
}

fn new_store(engine: &Engine, limits: PluginLimits, blueprint: Arc<str>, job_id: Option<String>) -> Store<Sandbox> {
    let mut store = Store::new(engine, Sandbox::new(blueprint, job_id, limits.memory_bytes));
    store.limiter(|sandbox| &mut sandbox.limits);
    let started = Instant::now();
    let limit = limits.timeout;
    store.set_epoch_deadline(1);
    // Each tick a long call either yields (so one busy plugin cannot starve
    // the threads it runs on) or, past its budget, is stopped. Time spent
    // waiting on S3 for the guest is the host's, not the guest's.
    store.epoch_deadline_callback(move |context| {
        let used = started.elapsed().saturating_sub(context.data().host_wait);
        if used >= limit { Err(DeadlineExceeded { limit }.into()) } else { Ok(UpdateDeadline::Yield(1)) }
    });
    store
}

/// Maps a wasmtime error to the reason a job's error message will carry.
fn classify(error: wasmtime::Error) -> HandlerError {
    if let Some(deadline) = error.downcast_ref::<DeadlineExceeded>() {
        return HandlerError::Deadline(deadline.limit);
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
struct PluginPool(Option<tokio::runtime::Runtime>);

impl PluginPool {
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

impl Drop for PluginPool {
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
