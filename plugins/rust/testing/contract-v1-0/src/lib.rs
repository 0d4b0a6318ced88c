//! `hello` as a component built against `avtomatika:blueprint@1.0.0` would
//! be: one `greet` task (whose 1.0.0 record has no routing), a log line
//! through the 1.0.0 `log` import, and a history update.

wit_bindgen::generate!({
    path: "../../../../wit/versions/1.0.0",
    world: "blueprint",
});

use avtomatika::blueprint::log::{Level, log};
use avtomatika::blueprint::types::{
    Action, BlueprintInfo, JobContext, Outcome, StateInfo, Task, TerminalStatus, Transition,
};
use exports::avtomatika::blueprint::handler::Guest;

struct ContractV1_0;

fn state(name: &str, start: bool, end: Option<TerminalStatus>, to: &[&str]) -> StateInfo {
    StateInfo { name: name.into(), start, end, transitions: to.iter().map(|s| (*s).into()).collect() }
}

impl Guest for ContractV1_0 {
    fn describe() -> BlueprintInfo {
        BlueprintInfo {
            name: "contract_v1_0".into(),
            api_version: Some("v1".into()),
            api_endpoint: Some("/jobs/contract-v1-0".into()),
            states: vec![
                state("start", true, None, &["finished", "failed"]),
                state("finished", false, Some(TerminalStatus::Finished), &[]),
                state("failed", false, Some(TerminalStatus::Failed), &[]),
            ],
        }
    }

    fn handle(context: JobContext) -> Result<Outcome, String> {
        if context.current_state != "start" {
            return Err(format!("no handler for state {}", context.current_state));
        }
        log(Level::Info, "greeting from a 1.0.0 component", &[("job".into(), context.job_id.clone())]);
        let transition = |status: &str, state: &str| Transition { status: status.into(), state: state.into() };
        Ok(Outcome {
            action: Action::DispatchTask(Task {
                task_type: "greet".into(),
                params: context.initial_data,
                transitions: vec![transition("success", "finished"), transition("failure", "failed")],
                priority: 0,
            }),
            state_history_update: Some(r#"{"built_against":"1.0.0"}"#.into()),
        })
    }
}

export!(ContractV1_0);
