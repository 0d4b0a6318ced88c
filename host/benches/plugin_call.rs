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

use std::path::PathBuf;
use std::time::{Duration, Instant};

use avtomatika::config::{InstancePolicy, PluginLimits};
use avtomatika::runtime::cache::ComponentCache;
use avtomatika::runtime::{Runtime, Source, types};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let data = match args.iter().position(|a| a == "--data") {
        Some(i) if i + 1 < args.len() => {
            let data = args.remove(i + 1);
            args.remove(i);
            data
        }
        _ => r#"{"name": "Ada", "url": "https://example.com"}"#.to_owned(),
    };
    let path = args
        .iter()
        .find(|a| a.parse::<usize>().is_err())
        .map_or_else(|| PathBuf::from(avtomatika_plugins::HELLO_COMPONENT), PathBuf::from);
    let iterations: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(5_000).max(1);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
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
            let context = types::JobContext {
                job_id: "6f0f5a43-3a3c-4f6e-9d1e-3f0c2d9d8a11".into(),
                blueprint: blueprint.name().to_owned(),
                current_state: blueprint.graph.start.clone(),
                initial_data: data.clone(),
                state_history: "{}".into(),
                client: types::Client { name: "default".into(), plan: None, params: "{}".into() },
                aggregation_results: None,
                child_result: None,
                webhook_url: None,
            };

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
