//! Plugin handler call cost: fresh instance + `handle` + drop, for the Rust
//! `hello` blueprint, as the executor does it. Prints p50/p99/max in µs.
//!
//! `cargo bench -p avtomatika --bench plugin_call [-- ITERATIONS]`

use std::time::{Duration, Instant};

use avtomatika::config::{InstancePolicy, PluginLimits};
use avtomatika::runtime::cache::ComponentCache;
use avtomatika::runtime::{Runtime, Source, types};

fn main() {
    let iterations: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        let runtime = Runtime::new(PluginLimits::default(), InstancePolicy::default(), 100, ComponentCache::disabled())
            .expect("runtime");
        let bytes = std::fs::read(avtomatika_plugins::HELLO_COMPONENT).expect("hello component is built");
        runtime.load(vec![Source { file: "hello.wasm".into(), bytes }]).await.expect("hello loads");
        let blueprint = runtime.blueprint("hello").expect("hello is loaded");
        let context = types::JobContext {
            job_id: "6f0f5a43-3a3c-4f6e-9d1e-3f0c2d9d8a11".into(),
            blueprint: "hello".into(),
            current_state: "start".into(),
            initial_data: r#"{"name":"Ada"}"#.into(),
            state_history: "{}".into(),
            client: types::Client { name: "default".into(), plan: None, params: "{}".into() },
            aggregation_results: None,
            child_result: None,
            webhook_url: None,
        };

        // Warm up the allocator's slots and the code's caches.
        for _ in 0..1_000 {
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
            "plugin_call hello (fresh instance + handle + drop), {iterations} calls: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs, {:.0} calls/s on one thread",
            us(pct(0.50)),
            us(pct(0.99)),
            us(pct(1.0)),
            iterations as f64 / total.as_secs_f64()
        );
    });
}
