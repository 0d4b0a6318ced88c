//! Write Avtomatika blueprints in Rust.
//!
//! A blueprint is a job state machine compiled to a WebAssembly component.
//! Implement [`Blueprint`] and export it with [`export!`]; build the crate as a
//! `cdylib` for `wasm32-wasip2`:
//!
//! ```ignore
//! use avtomatika_blueprint::{Blueprint, Describe, Job, Next, State, Task, json};
//!
//! struct Hello;
//!
//! impl Blueprint for Hello {
//!     fn describe() -> Describe {
//!         Describe::new("hello")
//!             .endpoint("v1", "/jobs/hello")
//!             .state(State::start("start").to(["finished", "failed"]))
//!             .state(State::finished("finished"))
//!             .state(State::failed("failed"))
//!     }
//!
//!     fn handle(job: Job) -> Result<Next, String> {
//!         match job.state() {
//!             "start" => Ok(Next::dispatch(
//!                 Task::new("greet", json!({ "name": job.initial_data()["name"] }))
//!                     .on("success", "finished")
//!                     .on("failure", "failed"),
//!             )),
//!             other => Err(format!("no handler for state {other}")),
//!         }
//!     }
//! }
//!
//! avtomatika_blueprint::export!(Hello);
//! ```
//!
//! The WIT contract behind this crate is `wit/` at the repository root
//! (`avtomatika:blueprint@0.1.0`); this crate only makes it pleasant to use.
#![deny(missing_docs)]

mod describe;
mod job;
pub mod log;
mod next;

pub use describe::{Describe, State};
pub use job::{Client, Job};
pub use next::{Next, Task};
pub use serde_json::{Value, json};

/// The generated WIT bindings. Blueprints do not need them directly.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "blueprint",
        pub_export_macro: true,
        export_macro_name: "__export_blueprint_world",
        default_bindings_module: "avtomatika_blueprint::bindings",
    });
}

/// A job state machine.
///
/// Both functions run in a fresh, sandboxed instance for every call: keep
/// nothing in statics, carry state in the job's history instead.
pub trait Blueprint {
    /// The blueprint's name, endpoint and state graph. Called once at load time.
    fn describe() -> Describe;

    /// Runs the handler for `job.state()` and says what the job does next.
    /// An `Err` is retried by the host and, when retries run out, quarantines
    /// the job with the message.
    fn handle(job: Job) -> Result<Next, String>;
}

/// Exports a [`Blueprint`] implementation as the component's `handler` interface.
#[macro_export]
macro_rules! export {
    ($blueprint:ty) => {
        const _: () = {
            struct __AvtomatikaExport;

            impl $crate::bindings::exports::avtomatika::blueprint::handler::Guest for __AvtomatikaExport {
                fn describe() -> $crate::bindings::avtomatika::blueprint::types::BlueprintInfo {
                    $crate::__private::describe::<$blueprint>()
                }

                fn handle(
                    context: $crate::bindings::avtomatika::blueprint::types::JobContext,
                ) -> ::core::result::Result<
                    $crate::bindings::avtomatika::blueprint::types::Outcome,
                    ::std::string::String,
                > {
                    $crate::__private::handle::<$blueprint>(context)
        }
            }

            $crate::bindings::__export_blueprint_world!(__AvtomatikaExport with_types_in $crate::bindings);
        };
    };
}

/// Glue called by [`export!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use crate::Blueprint;
    use crate::bindings::avtomatika::blueprint::types::{BlueprintInfo, JobContext, Outcome};

    pub fn describe<B: Blueprint>() -> BlueprintInfo {
        B::describe().into_wit()
    }

    pub fn handle<B: Blueprint>(context: JobContext) -> Result<Outcome, String> {
        let job = crate::Job::from_wit(context)?;
        B::handle(job).map(crate::Next::into_wit)
    }
}
