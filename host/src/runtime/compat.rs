//! Components built against an earlier minor version of the contract.
//!
//! Records cannot grow in the component model without changing a function's
//! type, so a 1.1.0 host cannot call a 1.0.0 component through the 1.1.0
//! bindings. Its exports are bound here from `wit/versions/1.0.0/` and its
//! answers read as the current version's (a 1.0.0 task has the default
//! routing). Its imports need nothing: the linker is semver-aware, so the
//! 1.1.0 capabilities satisfy a component that asks for their 1.0.0 names.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::{self, types};
use super::sandbox::Sandbox;

mod v1_0 {
    wasmtime::component::bindgen!({
        path: "../wit/versions/1.0.0",
        world: "blueprint",
        exports: { default: async },
        imports: {
            "avtomatika:blueprint/data-store": async,
            "avtomatika:blueprint/client-data-store": async,
            "avtomatika:blueprint/task-files": async,
        },
    });
}

use v1_0::avtomatika::blueprint::types as old;

/// The export a component built against 1.0.0 has.
const V1_0_HANDLER: &str = "avtomatika:blueprint/handler@1.0.0";

/// A component's handler, bound for the contract version it exports.
pub enum HandlerPre {
    Current(bindings::BlueprintPre<Sandbox>),
    V1_0(v1_0::BlueprintPre<Sandbox>),
}

/// A live instance of a [`HandlerPre`].
pub enum Handler {
    Current(bindings::Blueprint),
    V1_0(v1_0::Blueprint),
}

impl HandlerPre {
    /// Binds the handler export by the version the component names.
    ///
    /// The exact name decides: export lookups are semver-aware like imports,
    /// so the current bindings would find a 1.0.0 handler too, and its
    /// records would only fail to match at the first call.
    pub fn new(pre: InstancePre<Sandbox>) -> Result<Self, String> {
        let component = pre.component();
        let exports_v1_0 = component.component_type().exports(component.engine()).any(|(name, _)| name == V1_0_HANDLER);
        if exports_v1_0 {
            return v1_0::BlueprintPre::new(pre).map(Self::V1_0).map_err(|e| super::root_message(&e));
        }
        bindings::BlueprintPre::new(pre).map(Self::Current).map_err(|e| super::root_message(&e))
    }

    pub async fn instantiate_async(&self, store: &mut Store<Sandbox>) -> wasmtime::Result<Handler> {
        Ok(match self {
            Self::Current(pre) => Handler::Current(pre.instantiate_async(store).await?),
            Self::V1_0(pre) => Handler::V1_0(pre.instantiate_async(store).await?),
        })
    }
}

impl Handler {
    pub async fn call_describe(&self, store: &mut Store<Sandbox>) -> wasmtime::Result<types::BlueprintInfo> {
        match self {
            Self::Current(instance) => instance.avtomatika_blueprint_handler().call_describe(store).await,
            Self::V1_0(instance) => {
                Ok(blueprint_info(instance.avtomatika_blueprint_handler().call_describe(store).await?))
            }
        }
    }

    pub async fn call_handle(
        &self,
        store: &mut Store<Sandbox>,
        context: &types::JobContext,
    ) -> wasmtime::Result<Result<types::Outcome, String>> {
        match self {
            Self::Current(instance) => instance.avtomatika_blueprint_handler().call_handle(store, context).await,
            Self::V1_0(instance) => {
                let answer = instance.avtomatika_blueprint_handler().call_handle(store, &job_context(context)).await?;
                Ok(answer.map(outcome))
            }
        }
    }
}

fn job_context(context: &types::JobContext) -> old::JobContext {
    old::JobContext {
        job_id: context.job_id.clone(),
        blueprint: context.blueprint.clone(),
        current_state: context.current_state.clone(),
        initial_data: context.initial_data.clone(),
        state_history: context.state_history.clone(),
        client: old::Client {
            name: context.client.name.clone(),
            plan: context.client.plan.clone(),
            params: context.client.params.clone(),
        },
        aggregation_results: context.aggregation_results.clone(),
        child_result: context.child_result.clone(),
        webhook_url: context.webhook_url.clone(),
    }
}

fn blueprint_info(info: old::BlueprintInfo) -> types::BlueprintInfo {
    types::BlueprintInfo {
        name: info.name,
        api_version: info.api_version,
        api_endpoint: info.api_endpoint,
        states: info
            .states
            .into_iter()
            .map(|state| types::StateInfo {
                name: state.name,
                start: state.start,
                end: state.end.map(|end| match end {
                    old::TerminalStatus::Finished => types::TerminalStatus::Finished,
                    old::TerminalStatus::Failed => types::TerminalStatus::Failed,
                }),
                transitions: state.transitions,
            })
            .collect(),
    }
}

fn transitions(list: Vec<old::Transition>) -> Vec<types::Transition> {
    list.into_iter().map(|t| types::Transition { status: t.status, state: t.state }).collect()
}

/// What a 1.0.0 task was routed by: any worker, the default strategy.
fn default_routing() -> types::Routing {
    types::Routing {
        strategy: types::DispatchStrategy::Default,
        resource_requirements: None,
        max_cost: None,
        timeout_seconds: None,
    }
}

fn outcome(outcome: old::Outcome) -> types::Outcome {
    let action = match outcome.action {
        old::Action::GoTo(state) => types::Action::GoTo(state),
        old::Action::DispatchTask(task) => types::Action::DispatchTask(types::Task {
            task_type: task.task_type,
            params: task.params,
            transitions: transitions(task.transitions),
            priority: task.priority,
            routing: default_routing(),
        }),
        old::Action::DispatchParallel(parallel) => types::Action::DispatchParallel(types::Parallel {
            branches: parallel
                .branches
                .into_iter()
                .map(|branch| types::Branch {
                    task_type: branch.task_type,
                    params: branch.params,
                    priority: branch.priority,
                    routing: default_routing(),
                })
                .collect(),
            aggregate_into: parallel.aggregate_into,
        }),
        old::Action::AwaitHumanApproval(approval) => types::Action::AwaitHumanApproval(types::Approval {
            message: approval.message,
            transitions: transitions(approval.transitions),
        }),
        old::Action::RunBlueprint(child) => types::Action::RunBlueprint(types::ChildRun {
            blueprint: child.blueprint,
            initial_data: child.initial_data,
            transitions: transitions(child.transitions),
        }),
        old::Action::Fail(message) => types::Action::Fail(message),
    };
    types::Outcome { action, state_history_update: outcome.state_history_update }
}
