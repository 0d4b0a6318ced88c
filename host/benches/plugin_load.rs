//! Cold start of one blueprint component, as a server start does it (compile
//! or deserialize, link, instantiate, `describe`) up to the end of its first
//! handler call (the start state's, with `--data` as initial data, by
//! default `{"name": "Ada", "url": "https://example.com"}`), without the plugin cache,
//! on a cache miss (compile and store) and on a cache hit (verify and
//! deserialize). Prints min/p50/max in ms and the cache entry's size.
//!
//! `cargo bench -p avtomatika --bench plugin_load [-- [COMPONENT.wasm] [ITERATIONS] [--data JSON]]`
//!
//! Without a path it measures the Rust `hello` example; pass any component
//! (e.g. a JavaScript or Python blueprint) to measure that one instead.

use std::path::Path;
use std::time::{Duration, Instant};

use avtomatika::config::{InstancePolicy, PluginLimits};
use avtomatika::runtime::cache::ComponentCache;
use avtomatika::runtime::{Runtime, Source};

mod common;

fn main() {
    let args = common::Args::parse();
    let (path, bytes, data) = (&args.component, &args.bytes, &args.data);
    let iterations = args.count.unwrap_or(10).max(1);
    let cache_dir = tempfile::tempdir().expect("temporary cache directory");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");

    rt.block_on(async {
        let file = path.display().to_string();
        let load = |cache: ComponentCache| {
            let bytes = bytes.clone();
            let file = file.clone();
            let data = data.clone();
            async move {
                // A fresh runtime each time, as a starting server has: nothing
                // compiled is kept in memory between loads.
                let runtime =
                    Runtime::new(PluginLimits::default(), InstancePolicy::default(), 100, cache).expect("runtime");
                let source = Source { file, bytes };
                let started = Instant::now();
                runtime.load(vec![source]).await.expect("the component loads");
                let blueprint = runtime.blueprints().into_iter().next().expect("one blueprint");
                let context = common::start_context(&blueprint, &data);
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
