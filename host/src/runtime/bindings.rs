//! The one `bindgen!` over `wit/`: every other module takes its WIT types from here.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "blueprint",
    // Handler calls run asynchronously so that a CPU deadline can yield to
    // the executor instead of pinning a runtime thread.
    exports: { default: async },
    // Data stores reach the storage backend and task files S3: both are
    // asynchronous I/O.
    imports: {
        "avtomatika:blueprint/data-store": async,
        "avtomatika:blueprint/client-data-store": async,
        "avtomatika:blueprint/task-files": async,
    },
});

pub use self::avtomatika::blueprint::types;

// The `types` interface has no functions; its host trait is empty.
impl types::Host for super::sandbox::Sandbox {}
