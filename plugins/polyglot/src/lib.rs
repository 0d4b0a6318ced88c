//! Blueprint components written in JavaScript (`plugins/js`) and Python
//! (`plugins/python`), built by `build/main.rs`: `<NAME>_COMPONENT` is the
//! absolute path of each, for tests and benchmarks that load one by path.

include!(concat!(env!("OUT_DIR"), "/gen.rs"));
