//! A blueprint's state graph as `describe` declared it, validated once at load
//! time, and the checks every handler outcome must pass against it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::bindings::types;
use crate::model::{Routing, Strategy};

/// How a job ends when it enters an end state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    Finished,
    Failed,
}

/// One state of the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateNode {
    pub end: Option<EndKind>,
    pub transitions: BTreeSet<String>,
}

/// A validated blueprint description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    pub name: String,
    /// `POST` path creating jobs of this blueprint, e.g. `/api/v1/jobs/hello`.
    pub endpoint: Option<String>,
    /// The API version of `endpoint` (`v1`), without slashes; `None` for an
    /// unversioned endpoint (`/api/…`) or none at all.
    pub api_version: Option<String>,
    pub start: String,
    pub states: BTreeMap<String, StateNode>,
}

/// A task a handler asked to dispatch, checked against the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub task_type: String,
    pub params: Value,
    pub transitions: BTreeMap<String, String>,
    pub priority: i32,
    pub routing: Routing,
}

/// One branch of a parallel step.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchSpec {
    pub task_type: String,
    pub params: Value,
    pub priority: i32,
    pub routing: Routing,
}

impl From<BranchSpec> for TaskSpec {
    /// A branch is a task without transitions: its result goes to the aggregator.
    fn from(branch: BranchSpec) -> Self {
        Self {
            task_type: branch.task_type,
            params: branch.params,
            transitions: BTreeMap::new(),
            priority: branch.priority,
            routing: branch.routing,
        }
    }
}

/// A child blueprint a handler asked to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildSpec {
    pub blueprint: String,
    pub initial_data: Value,
    /// The child's terminal status → the parent's next state.
    pub transitions: BTreeMap<String, String>,
}

/// What a handler decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    GoTo(String),
    Dispatch(TaskSpec),
    Parallel { branches: Vec<BranchSpec>, aggregate_into: String },
    AwaitApproval { message: String, transitions: BTreeMap<String, String> },
    RunBlueprint(ChildSpec),
    Fail(String),
}

impl Step {
    /// The WIT name of the action, for the job history.
    pub fn action_name(&self) -> &'static str {
        match self {
            Self::GoTo(_) => "go-to",
            Self::Dispatch(_) => "dispatch-task",
            Self::Parallel { .. } => "dispatch-parallel",
            Self::AwaitApproval { .. } => "await-human-approval",
            Self::RunBlueprint(_) => "run-blueprint",
            Self::Fail(_) => "fail",
        }
    }
}

/// Most branches one parallel step may fan out to.
pub const MAX_BRANCHES: usize = 1000;

/// A handler's checked answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub step: Step,
    pub history_update: Option<Map<String, Value>>,
}

impl Graph {
    /// Validates what `describe` returned. The error says what is wrong in
    /// terms of the blueprint's own names.
    pub fn from_info(info: types::BlueprintInfo) -> Result<Self, String> {
        if info.name.trim().is_empty() {
            return Err("the blueprint's name is empty".into());
        }
        // Names reach logs, metrics and data store scopes, where a NUL byte
        // separates a blueprint's shared stores from its clients' (`caps::data_store`).
        if info.name.chars().any(char::is_control) {
            return Err(format!("the blueprint's name {:?} holds a control character", info.name));
        }
        let (endpoint, api_version) = match (info.api_version, info.api_endpoint) {
            (_, None) => (None, None),
            (version, Some(endpoint)) => {
                let endpoint = endpoint.trim_matches('/');
                if endpoint.is_empty() || endpoint.contains(['{', '}', '*', '?', '#', ' ']) {
                    return Err(format!("api-endpoint {endpoint:?} is not a plain path"));
                }
                match version.as_deref().map(|v| v.trim_matches('/')) {
                    Some(version) if !version.is_empty() => {
                        // The version prefixes the client routes too
                        // (`api::versions`), so it must be a plain path.
                        if version.contains(['{', '}', '*', '?', '#', ' ']) {
                            return Err(format!("api-version {version:?} is not a plain path"));
                        }
                        (Some(format!("/api/{version}/{endpoint}")), Some(version.to_owned()))
                    }
                    _ => (Some(format!("/api/{endpoint}")), None),
                }
            }
        };

        let mut states = BTreeMap::new();
        let mut starts = Vec::new();
        for state in &info.states {
            if state.name.is_empty() {
                return Err("a state has an empty name".into());
            }
            if state.start {
                starts.push(state.name.clone());
            }
            let end = state.end.map(|kind| match kind {
                types::TerminalStatus::Finished => EndKind::Finished,
                types::TerminalStatus::Failed => EndKind::Failed,
            });
            if end.is_some() && !state.transitions.is_empty() {
                return Err(format!("end state {:?} declares transitions, but end states run no handler", state.name));
            }
            let node = StateNode { end, transitions: state.transitions.iter().cloned().collect() };
            if states.insert(state.name.clone(), node).is_some() {
                return Err(format!("state {:?} is declared twice", state.name));
            }
        }
        let start = match starts.as_slice() {
            [start] => start.clone(),
            [] => return Err("no state is marked as the start state".into()),
            several => return Err(format!("several start states: {}", several.join(", "))),
        };
        if states[&start].end.is_some() {
            return Err(format!("start state {start:?} is also an end state"));
        }
        for (name, node) in &states {
            if let Some(unknown) = node.transitions.iter().find(|t| !states.contains_key(*t)) {
                return Err(format!("state {name:?} has a transition to unknown state {unknown:?}"));
            }
        }
        Ok(Self { name: info.name, endpoint, api_version, start, states })
    }

    /// The graph in Graphviz DOT: the start state in bold, `finished` end
    /// states as green double circles, `failed` ones red, every declared
    /// transition an edge. Rendered here, so no graphviz is needed.
    pub fn to_dot(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut dot = format!("digraph {} {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n", quote(&self.name));
        for (name, node) in &self.states {
            let style = match node.end {
                Some(EndKind::Finished) => " [shape=doublecircle, color=darkgreen]",
                Some(EndKind::Failed) => " [shape=doublecircle, color=red]",
                None if *name == self.start => " [style=\"rounded,bold\", penwidth=2]",
                None => "",
            };
            dot.push_str(&format!("  {}{style};\n", quote(name)));
        }
        for (name, node) in &self.states {
            for target in &node.transitions {
                dot.push_str(&format!("  {} -> {};\n", quote(name), quote(target)));
            }
        }
        dot.push_str("}\n");
        dot
    }

    /// The end kind of `state`, or `None` for a state that runs a handler.
    pub fn end_of(&self, state: &str) -> Option<EndKind> {
        self.states.get(state).and_then(|node| node.end)
    }

    /// Checks a handler's answer in `state` and parses its JSON documents.
    pub fn check_outcome(&self, state: &str, outcome: types::Outcome) -> Result<Outcome, String> {
        let allowed = &self
            .states
            .get(state)
            .ok_or_else(|| format!("state {state:?} is not declared by the blueprint"))?
            .transitions;
        let reachable = |target: &str| -> Result<(), String> {
            if allowed.contains(target) {
                Ok(())
            } else {
                Err(format!(
                    "the handler of state {state:?} moved to {target:?}, which is not among its declared transitions"
                ))
            }
        };
        let history_update =
            outcome.state_history_update.map(|text| json_object(&text, "state-history-update")).transpose()?;
        let step = match outcome.action {
            types::Action::GoTo(target) => {
                reachable(&target)?;
                Step::GoTo(target)
            }
            // A failed job always says why, if only where it failed.
            types::Action::Fail(message) if message.trim().is_empty() => {
                Step::Fail(format!("the handler of state {state} failed the job without a message"))
            }
            types::Action::Fail(message) => Step::Fail(message),
            types::Action::DispatchTask(task) => {
                if task.task_type.is_empty() {
                    return Err("dispatched a task with an empty task type".into());
                }
                let mut transitions = BTreeMap::new();
                for t in task.transitions {
                    reachable(&t.state)?;
                    transitions.insert(t.status, t.state);
                }
                Step::Dispatch(TaskSpec {
                    task_type: task.task_type,
                    params: Value::Object(json_object(&task.params, "task params")?),
                    transitions,
                    priority: task.priority,
                    routing: routing(task.routing, "the task")?,
                })
            }
            types::Action::DispatchParallel(parallel) => {
                if parallel.branches.is_empty() {
                    return Err("dispatch-parallel has no branches".into());
                }
                if parallel.branches.len() > MAX_BRANCHES {
                    return Err(format!(
                        "dispatch-parallel has {} branches; at most {MAX_BRANCHES} are allowed",
                        parallel.branches.len()
                    ));
                }
                reachable(&parallel.aggregate_into)?;
                let branches = parallel
                    .branches
                    .into_iter()
                    .enumerate()
                    .map(|(i, branch)| {
                        if branch.task_type.is_empty() {
                            return Err(format!("branch {i} of dispatch-parallel has an empty task type"));
                        }
                        Ok(BranchSpec {
                            task_type: branch.task_type,
                            params: Value::Object(json_object(&branch.params, &format!("params of branch {i}"))?),
                            priority: branch.priority,
                            routing: routing(branch.routing, &format!("branch {i}"))?,
                        })
                    })
                    .collect::<Result<_, String>>()?;
                Step::Parallel { branches, aggregate_into: parallel.aggregate_into }
            }
            types::Action::AwaitHumanApproval(approval) => {
                if approval.transitions.is_empty() {
                    return Err("await-human-approval has no decisions (transitions)".into());
                }
                let transitions = checked_transitions(approval.transitions, "decision", &reachable)?;
                Step::AwaitApproval { message: approval.message, transitions }
            }
            types::Action::RunBlueprint(child) => {
                if child.blueprint.is_empty() {
                    return Err("run-blueprint names no blueprint".into());
                }
                let transitions = checked_transitions(child.transitions, "status", &reachable)?;
                Step::RunBlueprint(ChildSpec {
                    initial_data: Value::Object(json_object(&child.initial_data, "child initial-data")?),
                    blueprint: child.blueprint,
                    transitions,
                })
            }
        };
        Ok(Outcome { step, history_update })
    }
}

/// A transition table whose targets are all reachable and whose keys are unique.
fn checked_transitions(
    list: Vec<types::Transition>,
    key: &str,
    reachable: &dyn Fn(&str) -> Result<(), String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut transitions = BTreeMap::new();
    for t in list {
        if t.status.is_empty() {
            return Err(format!("a transition has an empty {key}"));
        }
        reachable(&t.state)?;
        if transitions.insert(t.status.clone(), t.state).is_some() {
            return Err(format!("{key} {:?} has two transitions", t.status));
        }
    }
    Ok(transitions)
}

/// Longest `resource-requirements` text a task may carry: it is stored with
/// the task and matched against every candidate worker at each dispatch.
const MAX_REQUIREMENTS_BYTES: usize = 16 * 1024;

/// A task's routing as the host keeps it, once its values are checked.
fn routing(routing: types::Routing, what: &str) -> Result<Routing, String> {
    let requirements = match routing.resource_requirements {
        None => None,
        Some(text) if text.len() > MAX_REQUIREMENTS_BYTES => {
            return Err(format!(
                "the resource-requirements of {what} are {} bytes; at most {MAX_REQUIREMENTS_BYTES} are allowed",
                text.len()
            ));
        }
        Some(text) => Some(json_object(&text, &format!("the resource-requirements of {what}"))?),
    };
    if let Some(cost) = routing.max_cost
        && !(cost.is_finite() && cost >= 0.0)
    {
        return Err(format!("the max-cost of {what} must be a finite number of at least 0, got {cost}"));
    }
    if routing.timeout_seconds == Some(0) {
        return Err(format!("the timeout-seconds of {what} must be at least 1"));
    }
    let strategy = match routing.strategy {
        types::DispatchStrategy::Default => Strategy::Default,
        types::DispatchStrategy::RoundRobin => Strategy::RoundRobin,
        types::DispatchStrategy::LeastConnections => Strategy::LeastConnections,
        types::DispatchStrategy::Cheapest => Strategy::Cheapest,
        types::DispatchStrategy::BestValue => Strategy::BestValue,
    };
    Ok(Routing { strategy, requirements, max_cost: routing.max_cost, timeout_seconds: routing.timeout_seconds })
}

fn json_object(text: &str, what: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("{what} must be a JSON object, got {}", kind(&other))),
        Err(e) => Err(format!("{what} is not valid JSON: {e}")),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::{Action, BlueprintInfo, StateInfo, TerminalStatus};

    fn state(name: &str, start: bool, end: Option<TerminalStatus>, to: &[&str]) -> StateInfo {
        StateInfo { name: name.into(), start, end, transitions: to.iter().map(|s| s.to_string()).collect() }
    }

    fn hello() -> BlueprintInfo {
        BlueprintInfo {
            name: "hello".into(),
            api_version: Some("v1".into()),
            api_endpoint: Some("/jobs/hello".into()),
            states: vec![
                state("start", true, None, &["finished", "failed"]),
                state("finished", false, Some(TerminalStatus::Finished), &[]),
                state("failed", false, Some(TerminalStatus::Failed), &[]),
            ],
        }
    }

    #[test]
    fn a_valid_graph_is_accepted() {
        let graph = Graph::from_info(hello()).unwrap();
        assert_eq!(graph.start, "start");
        assert_eq!(graph.endpoint.as_deref(), Some("/api/v1/jobs/hello"));
        assert_eq!(graph.api_version.as_deref(), Some("v1"));
        assert_eq!(graph.end_of("finished"), Some(EndKind::Finished));
        assert_eq!(graph.end_of("failed"), Some(EndKind::Failed));
        assert_eq!(graph.end_of("start"), None);
    }

    #[test]
    fn the_graph_renders_as_dot() {
        let mut info = hello();
        info.name = "say \"hi\"".into();
        let dot = Graph::from_info(info).unwrap().to_dot();
        assert!(dot.starts_with("digraph \"say \\\"hi\\\"\" {"), "{dot}");
        assert!(dot.contains("  \"start\" [style=\"rounded,bold\", penwidth=2];"), "{dot}");
        assert!(dot.contains("  \"finished\" [shape=doublecircle, color=darkgreen];"), "{dot}");
        assert!(dot.contains("  \"failed\" [shape=doublecircle, color=red];"), "{dot}");
        assert!(dot.contains("  \"start\" -> \"failed\";\n  \"start\" -> \"finished\";"), "{dot}");
        assert!(dot.trim_end().ends_with('}'));
    }

    #[test]
    fn broken_graphs_are_refused_with_the_reason() {
        type Mutation = Box<dyn Fn(&mut BlueprintInfo)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|i| i.states[0].start = false), "no state is marked as the start"),
            (Box::new(|i| i.states[1].start = true), "several start states"),
            (Box::new(|i| i.states[0].transitions.push("nowhere".into())), "unknown state \"nowhere\""),
            (Box::new(|i| i.states.push(state("start", false, None, &[]))), "declared twice"),
            (Box::new(|i| i.states[1].transitions.push("start".into())), "end states run no handler"),
            (Box::new(|i| i.name = " ".into()), "name is empty"),
            (Box::new(|i| i.api_endpoint = Some("/jobs/{id}".into())), "not a plain path"),
            (Box::new(|i| i.api_version = Some("v{2}".into())), "api-version \"v{2}\" is not a plain path"),
        ];
        for (mutate, expected) in cases {
            let mut info = hello();
            mutate(&mut info);
            let err = Graph::from_info(info).unwrap_err();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    #[test]
    fn outcomes_must_follow_declared_transitions_and_carry_objects() {
        let graph = Graph::from_info(hello()).unwrap();
        let go = |to: &str| types::Outcome { action: Action::GoTo(to.into()), state_history_update: None };
        assert_eq!(graph.check_outcome("start", go("finished")).unwrap().step, Step::GoTo("finished".into()));
        assert!(graph.check_outcome("start", go("start")).unwrap_err().contains("not among its declared"));

        let with_history = |h: &str| types::Outcome { state_history_update: Some(h.into()), ..go("finished") };
        assert!(graph.check_outcome("start", with_history("[1]")).unwrap_err().contains("an array"));
        assert!(graph.check_outcome("start", with_history("{")).unwrap_err().contains("not valid JSON"));
        let ok = graph.check_outcome("start", with_history(r#"{"a":1}"#)).unwrap();
        assert_eq!(ok.history_update.unwrap()["a"], 1);

        let dispatch = |params: &str, to: &str| types::Outcome {
            action: Action::DispatchTask(types::Task {
                task_type: "greet".into(),
                params: params.into(),
                transitions: vec![types::Transition { status: "success".into(), state: to.into() }],
                priority: 3,
                routing: plain(),
            }),
            state_history_update: None,
        };
        match graph.check_outcome("start", dispatch(r#"{"name":"Ada"}"#, "finished")).unwrap().step {
            Step::Dispatch(task) => {
                assert_eq!(task.params["name"], "Ada");
                assert_eq!(task.transitions["success"], "finished");
                assert_eq!(task.priority, 3);
            }
            other => panic!("unexpected step {other:?}"),
        }
        assert!(graph.check_outcome("start", dispatch("{}", "start")).is_err());
        assert!(graph.check_outcome("start", dispatch("7", "finished")).unwrap_err().contains("task params"));
    }

    fn plain() -> types::Routing {
        types::Routing {
            strategy: types::DispatchStrategy::Default,
            resource_requirements: None,
            max_cost: None,
            timeout_seconds: None,
        }
    }

    #[test]
    fn routing_is_checked_and_kept() {
        let graph = Graph::from_info(hello()).unwrap();
        let dispatch = |routing: types::Routing| {
            outcome(Action::DispatchTask(types::Task {
                task_type: "render".into(),
                params: "{}".into(),
                transitions: vec![transition("success", "finished")],
                priority: 0,
                routing,
            }))
        };
        let asked = types::Routing {
            strategy: types::DispatchStrategy::BestValue,
            resource_requirements: Some(r#"{"gpu_info":{"vram_gb":16}}"#.into()),
            max_cost: Some(0.5),
            timeout_seconds: Some(30),
        };
        match graph.check_outcome("start", dispatch(asked.clone())).unwrap().step {
            Step::Dispatch(task) => {
                assert_eq!(task.routing.strategy, Strategy::BestValue);
                assert_eq!(task.routing.requirements.unwrap()["gpu_info"]["vram_gb"], 16);
                assert_eq!((task.routing.max_cost, task.routing.timeout_seconds), (Some(0.5), Some(30)));
            }
            other => panic!("unexpected step {other:?}"),
        }
        let refused = |routing: types::Routing| graph.check_outcome("start", dispatch(routing)).unwrap_err();
        let array = types::Routing { resource_requirements: Some("[1]".into()), ..asked.clone() };
        assert!(refused(array).contains("resource-requirements of the task must be a JSON object"));
        let huge = format!(r#"{{"k":"{}"}}"#, "x".repeat(MAX_REQUIREMENTS_BYTES));
        assert!(refused(types::Routing { resource_requirements: Some(huge), ..asked.clone() }).contains("at most"));
        assert!(refused(types::Routing { max_cost: Some(f64::NAN), ..asked.clone() }).contains("max-cost"));
        assert!(refused(types::Routing { max_cost: Some(-1.0), ..asked.clone() }).contains("max-cost"));
        assert!(refused(types::Routing { timeout_seconds: Some(0), ..asked }).contains("timeout-seconds"));
    }

    fn outcome(action: Action) -> types::Outcome {
        types::Outcome { action, state_history_update: None }
    }

    fn transition(status: &str, state: &str) -> types::Transition {
        types::Transition { status: status.into(), state: state.into() }
    }

    #[test]
    fn parallel_steps_need_branches_and_a_declared_aggregator() {
        let graph = Graph::from_info(hello()).unwrap();
        let branch = |task_type: &str, params: &str| types::Branch {
            task_type: task_type.into(),
            params: params.into(),
            priority: 1,
            routing: plain(),
        };
        let parallel = |branches: Vec<types::Branch>, into: &str| {
            outcome(Action::DispatchParallel(types::Parallel { branches, aggregate_into: into.into() }))
        };
        match graph.check_outcome("start", parallel(vec![branch("a", "{}"), branch("b", r#"{"x":1}"#)], "finished")) {
            Ok(Outcome { step: Step::Parallel { branches, aggregate_into }, .. }) => {
                assert_eq!(aggregate_into, "finished");
                assert_eq!(branches.len(), 2);
                assert_eq!((branches[1].task_type.as_str(), &branches[1].params["x"]), ("b", &Value::from(1)));
            }
            other => panic!("unexpected {other:?}"),
        }
        let error = |o| graph.check_outcome("start", o).unwrap_err();
        assert!(error(parallel(vec![], "finished")).contains("no branches"));
        assert!(error(parallel(vec![branch("a", "{}")], "start")).contains("not among its declared"));
        assert!(error(parallel(vec![branch("", "{}")], "finished")).contains("branch 0"));
        assert!(error(parallel(vec![branch("a", "{}"), branch("b", "[]")], "finished")).contains("params of branch 1"));
        let many = (0..=MAX_BRANCHES).map(|_| branch("a", "{}")).collect();
        assert!(error(parallel(many, "finished")).contains("at most"));
    }

    #[test]
    fn approvals_and_child_runs_map_declared_states() {
        let graph = Graph::from_info(hello()).unwrap();
        let approval =
            |transitions| outcome(Action::AwaitHumanApproval(types::Approval { message: "ok?".into(), transitions }));
        let step = graph
            .check_outcome("start", approval(vec![transition("approved", "finished"), transition("no", "failed")]))
            .unwrap()
            .step;
        let expected = BTreeMap::from([("approved".into(), "finished".into()), ("no".into(), "failed".into())]);
        assert_eq!(step, Step::AwaitApproval { message: "ok?".into(), transitions: expected });
        let error = |o| graph.check_outcome("start", o).unwrap_err();
        assert!(error(approval(vec![])).contains("no decisions"));
        assert!(error(approval(vec![transition("yes", "nowhere")])).contains("not among its declared"));
        assert!(error(approval(vec![transition("yes", "finished"), transition("yes", "failed")])).contains("two"));
        assert!(error(approval(vec![transition("", "finished")])).contains("empty decision"));

        let child = |blueprint: &str, data: &str, transitions| {
            outcome(Action::RunBlueprint(types::ChildRun {
                blueprint: blueprint.into(),
                initial_data: data.into(),
                transitions,
            }))
        };
        match graph.check_outcome("start", child("pay", r#"{"amount":5}"#, vec![transition("finished", "finished")])) {
            Ok(Outcome { step: Step::RunBlueprint(spec), .. }) => {
                assert_eq!((spec.blueprint.as_str(), &spec.initial_data["amount"]), ("pay", &Value::from(5)));
                assert_eq!(spec.transitions["finished"], "finished");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(error(child("", "{}", vec![])).contains("names no blueprint"));
        assert!(error(child("pay", "1", vec![])).contains("child initial-data"));
        assert!(error(child("pay", "{}", vec![transition("failed", "start")])).contains("not among its declared"));
    }
}
