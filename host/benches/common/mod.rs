//! What the plugin benches share: their command line (a component, a count)
//! and the job context of a first handler call.

use std::path::PathBuf;

use avtomatika::runtime::{Blueprint, types};

/// Initial data the `hello` and `pipeline` examples accept in every language.
pub const DEFAULT_DATA: &str = r#"{"name": "Ada", "url": "https://example.com"}"#;

/// `[COMPONENT.wasm] [COUNT] [--data JSON]`, in any order; `--bench`, which
/// `cargo bench` adds, is ignored.
pub struct Args {
    /// The component measured; the Rust `hello` example by default.
    pub component: PathBuf,
    pub bytes: Vec<u8>,
    pub count: Option<usize>,
    /// Initial data of the measured job; [`DEFAULT_DATA`] by default.
    pub data: String,
}

impl Args {
    pub fn parse() -> Self {
        let mut args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
        let data = match args.iter().position(|a| a == "--data") {
            Some(i) if i + 1 < args.len() => {
                let data = args.remove(i + 1);
                args.remove(i);
                data
            }
            _ => DEFAULT_DATA.to_owned(),
        };
        let component = args
            .iter()
            .find(|a| a.parse::<usize>().is_err())
            .map_or_else(|| PathBuf::from(avtomatika_plugins::HELLO_COMPONENT), PathBuf::from);
        let count = args.iter().find_map(|a| a.parse().ok());
        let bytes = std::fs::read(&component).unwrap_or_else(|e| panic!("reading {}: {e}", component.display()));
        Self { component, bytes, count, data }
    }
}

/// The context of a job of `blueprint` in its start state, created with
/// `initial_data`, by the default client.
pub fn start_context(blueprint: &Blueprint, initial_data: &str) -> types::JobContext {
    types::JobContext {
        job_id: "6f0f5a43-3a3c-4f6e-9d1e-3f0c2d9d8a11".into(),
        blueprint: blueprint.name().to_owned(),
        current_state: blueprint.graph.start.clone(),
        initial_data: initial_data.to_owned(),
        state_history: "{}".into(),
        client: types::Client { name: "default".into(), plan: None, params: "{}".into() },
        aggregation_results: None,
        child_result: None,
        webhook_url: None,
    }
}
