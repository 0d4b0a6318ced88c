//! The files `avtomatika new` writes, embedded at build time by `host/build.rs`
//! from their one copy in the repository.

include!(concat!(env!("OUT_DIR"), "/scaffold_files.rs"));
