//! Cold start of one blueprint component, as a server start does it (compile
//! or deserialize, link, instantiate, `describe`) up to the end of its first
//! handler call (the start state's, with `{"name": "Ada", "url":
//! "https://example.com"}` as initial data), without the plugin cache,
//! on a cache miss (compile and store) and on a cache hit (verify and
//! deserialize). Prints min/p50/max in ms and the cache entry's size.
//!
//! `cargo bench -p avtomatika --bench plugin_load [-- [COMPONENT.wasm] [ITERATIONS]]`
//!
//! Without a path it measures the Rust `hello` example; pass any component
//! (e.g. a JavaScript or Python blueprint) to measure that one instead.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use avtomatika::config::{InstancePolicy, PluginLimits};
use avtomatika::runtime::cache::ComponentCache;
use avtomatika::runtime::{Runtime, Source, types};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let path = args
        .iter()
        .find(|a| a.parse::<usize>().is_err())
        .map_or_else(|| PathBuf::from(avtomatika_plugins::HELLO_COMPONENT), PathBuf::from);
    let iterations: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(10).max(1);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let cache_dir = tempfile::tempdir().expect("temporary cache directory");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");

    rt.block_on(async {
        let file = path.display().to_string();
        let load = |cache: ComponentCache| {
            let bytes = bytes.clone();
            let file = file.clone();
            async move {
                // A fresh runtime each time, as a starting server has: nothing
                // compiled is kept in memory between loads.
                let runtime =
                    Runtime::new(PluginLimits::default(), InstancePolicy::default(), 100, cache).expect("runtime");
                let source = Source { file, bytes };
                let started = Instant::now();
                runtime.load(vec![source]).await.expect("the component loads");
                let blueprint = runtime.blueprints().into_iter().next().expect("one blueprint");
                let context = types::JobContext {
                    job_id: "6f0f5a43-3a3c-4f6e-9d1e-3f0c2d9d8a11".into(),
                    blueprint: blueprint.name().to_owned(),
                    current_state: blueprint.graph.start.clone(),
                    initial_data: r#"{"name": "Ada", "url": "https://example.com"}"#.into(),
                    state_history: "{}".into(),
                    client: types::Client { name: "default".into(), plan: None, params: "{}".into() },
                    aggregation_results: None,
                    child_result: None,
                    webhook_url: None,
                };
                runtime.handle(&blueprint, context).await.expect("the first call succeeds");
                started.elapsed()
            }
        };

        let mut compile = Vec::new();
        for _ in 0..iterations {
            compile.push(load(ComponentCache::disabled()).await);
        }
        let mut miss = Vec::new();
        for _ in 0..iterations {
            clear(cache_dir.path());
            miss.push(load(ComponentCache::open(cache_dir.path())).await);
        }
        let mut hit = Vec::new();
        for _ in 0..iterations {
            hit.push(load(ComponentCache::open(cache_dir.path())).await);
        }

        let entry_bytes: u64 = std::fs::read_dir(cache_dir.path())
            .expect("cache directory")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        println!("plugin_load {} ({} KiB component), {iterations} loads each:", path.display(), bytes.len() >> 10);
        report("  no cache (compile)", &mut compile);
        report("  cache miss (compile + store)", &mut miss);
        report("  cache hit (verify + deserialize)", &mut hit);
        println!("  cache entry: {} KiB", entry_bytes >> 10);
    });
}

fn clear(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("cache directory").flatten() {
        std::fs::remove_file(entry.path()).expect("remove cache entry");
    }
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what:<36} min {:8.2} ms, p50 {:8.2} ms, max {:8.2} ms",
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1])
    );
}
