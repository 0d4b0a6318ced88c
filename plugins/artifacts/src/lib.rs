//! The guest crates of `plugins/rust`, compiled to WebAssembly components.
//!
//! `build.rs` builds that workspace for `wasm32-wasip2` and generates:
//!
//! - `<NAME>_COMPONENT`: the absolute path of each component (`HELLO_COMPONENT`,
//!   `MISBEHAVE_COMPONENT`, ...), for tests and benchmarks that load one by path;
//! - [`EXAMPLES`]: the example blueprints of `plugins/rust/blueprints/` as file
//!   names and bytes, which the server ships;
//! - [`foreach_testing_plugin!`]: every plugin of `plugins/rust/testing/`, so the
//!   host's tests can assert that none goes unused.
//!
//! Depending on this crate is what rebuilds the components when a guest source,
//! the guest SDK or `wit/` changes.

include!(concat!(env!("OUT_DIR"), "/gen.rs"));
