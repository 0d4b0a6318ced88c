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
//! # What a handler can answer
//!
//! Every target state below must be among the current state's transitions
//! (`State::to`), or the host rejects the answer and retries the handler.
//! [`Next::with_history`] adds a JSON object to the job's state history with
//! any of them.
//!
//! ```ignore
//! // Move on; an end state ends the job.
//! Next::go_to("publish").with_history(json!({ "length": 42 }));
//!
//! // One task for a worker; its result status picks the next state.
//! Next::dispatch(Task::new("greet", json!({ "name": "Ada" })).on("success", "finished").on("failure", "failed"));
//!
//! // Several tasks at once; `collect` runs when every branch has a result,
//! // and reads them in `job.aggregation_results()`.
//! Next::parallel("collect", ["small", "large"].map(|size| Branch::new("resize", json!({ "size": size }))));
//!
//! // Wait for a person, who posts `{"decision": "approved"}` to `job.approval_path()`.
//! Next::await_approval(Approval::new("Publish the post?").on("approved", "publish").on("rejected", "reject"));
//!
//! // Run another blueprint as a child job; the next handler reads it in `job.child_result()`.
//! Next::run_blueprint(ChildRun::new("payment", json!({ "amount": 10 })).on("finished", "ship").on("failed", "refund"));
//!
//! // End the job as `failed` with this error message.
//! Next::fail("the document is empty");
//! ```
//!
//! Handlers may also keep small state shared across jobs in the blueprint's
//! [`store`]s, read and write the job's [`files`] in S3 (and hand workers
//! their `s3://` URIs), and write to the host's [`log`].
//!
//! The WIT contract behind this crate is `wit/` at the repository root
//! (`avtomatika:blueprint@1.1.0`); this crate only makes it pleasant to use.
#![deny(missing_docs)]

mod describe;
pub mod files;
mod job;
pub mod log;
mod next;
pub mod store;

pub use describe::{Describe, State};
pub use files::{FileError, FileInfo};
pub use job::{Client, Job};
pub use next::{Approval, Branch, ChildRun, Next, Strategy, Task};
pub use serde_json::{Value, json};
pub use store::{Store, StoreError};

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
/// Both functions run in a sandboxed instance that may or may not have served
/// earlier calls (the host pools live instances): keep nothing in statics,
/// carry state in the job's history instead (or, for state shared across
/// jobs, in a [`Store`]).
pub trait Blueprint {
    /// The blueprint's name, endpoint and state graph. Called once at load time.
    fn describe() -> Describe;

    /// Runs the handler for `job.state()` and says what the job does next.
    /// An `Err` is retried by the host and, when retries run out, quarantines
    /// the job with the message.
    fn handle(job: Job) -> Result<Next, String>;
}

/// Exports a [`Blueprint`] implementation as the component's `handler` interface.
// rustfmt cannot parse the `with_types_in` call and mangles the indentation
// around it, so the macro's layout is kept by hand.
#[rustfmt::skip]
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
