//! `wrong-world`: a component of the wrong world, for the host's loader tests.
//!
//! A plain WASI command: it exports `wasi:cli/run` and imports the WASI CLI
//! interfaces, but not `avtomatika:blueprint/handler`, so the host must refuse
//! to load it rather than fail at the first handler call.

fn main() {}
