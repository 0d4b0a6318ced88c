//! Version 1 of the `versioned` blueprint (see `../../versioned.rs`).

const VERSION: &str = "v1";

include!("../../versioned.rs");
