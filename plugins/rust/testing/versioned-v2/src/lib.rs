//! Version 2 of the `versioned` blueprint (see `../../versioned.rs`).

const VERSION: &str = "v2";

include!("../../versioned.rs");
