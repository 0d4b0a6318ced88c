//! Handler call cost of one blueprint component as the executor pays it
//! (`Runtime::handle`: get an instance, run the handler, check the outcome),
//! on a pooled live instance (the default) and on a fresh instance per call
//! (`PLUGIN_FRESH_INSTANCE_BLUEPRINTS`). Prints p50/p99/max in µs.
//!
//! `cargo bench -p avtomatika --bench plugin_call [-- [COMPONENT.wasm] [ITERATIONS] [--data JSON]]`
//!
//! Without a path it measures the Rust `hello` example. The handler of the
//! blueprint's start state runs with `--data` as the initial data (default
//! `{"name": "Ada", "url": "https://example.com"}`, which the `hello` and
//! `pipeline` examples in every language accept).

use std::time::{Duration, Instant};

use avtomatika::config::{InstancePolicy, PluginLimits};
use avtomatika::runtime::cache::ComponentCache;
use avtomatika::runtime::{Runtime, Source};

mod common;

fn main() {
    let args = common::Args::parse();
    let (path, bytes, data) = (&args.component, &args.bytes, &args.data);
    let iterations = args.count.unwrap_or(5_000).max(1);
    // Both runtimes compile the component once; the second takes it from here.
    let cache_dir = tempfile::tempdir().expect("temporary cache directory");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");

    rt.block_on(async {
        println!("plugin_call {} ({} KiB component), {iterations} calls each:", path.display(), bytes.len() >> 10);
        for (label, policy) in [
            ("pooled instance", InstancePolicy::default()),
            ("fresh instance per call", InstancePolicy { pool_size: 0, ..InstancePolicy::default() }),
        ] {
            let runtime = Runtime::new(PluginLimits::default(), policy, 100, ComponentCache::open(cache_dir.path()))
                .expect("runtime");
            let source = Source { file: path.display().to_string(), bytes: bytes.clone() };
            runtime.load(vec![source]).await.expect("the component loads");
            let blueprint = runtime.blueprints().into_iter().next().expect("one blueprint");
            let context = common::start_context(&blueprint, data);

            // Warm up the allocator's slots, the pool and the code's caches.
            for _ in 0..(iterations / 10).max(10) {
                runtime.handle(&blueprint, context.clone()).await.expect("handler call");
            }
            let mut samples = Vec::with_capacity(iterations);
            let started = Instant::now();
            for _ in 0..iterations {
                let call = Instant::now();
                let outcome = runtime.handle(&blueprint, context.clone()).await.expect("handler call");
                samples.push(call.elapsed());
                std::hint::black_box(outcome);
            }
            let total = started.elapsed();
            samples.sort();
            let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "  {label:<24} p50 {:8.1} µs, p99 {:8.1} µs, max {:9.1} µs, {:7.0} calls/s on one thread",
                us(pct(0.50)),
                us(pct(0.99)),
                us(pct(1.0)),
                iterations as f64 / total.as_secs_f64()
            );
        }
    });
}
