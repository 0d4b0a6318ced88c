//! Builders for the blueprint description returned by `describe`.

use crate::bindings::avtomatika::blueprint::types::{BlueprintInfo, StateInfo, TerminalStatus};

/// A blueprint's name, endpoint and states.
#[derive(Debug, Clone)]
pub struct Describe {
    name: String,
    api_version: Option<String>,
    api_endpoint: Option<String>,
    states: Vec<State>,
}

impl Describe {
    /// A blueprint called `name` with no endpoint and no states yet.
    ///
    /// Without [`endpoint`](Self::endpoint), clients cannot create its jobs
    /// over HTTP: it runs only as another blueprint's child
    /// ([`Next::run_blueprint`](crate::Next::run_blueprint)) or on a schedule.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), api_version: None, api_endpoint: None, states: Vec::new() }
    }

    /// Jobs are created with `POST /api/{version}{endpoint}`, e.g.
    /// `.endpoint("v1", "/jobs/hello")` → `POST /api/v1/jobs/hello`.
    pub fn endpoint(mut self, version: impl Into<String>, endpoint: impl Into<String>) -> Self {
        self.api_version = Some(version.into());
        self.api_endpoint = Some(endpoint.into());
        self
    }

    /// Adds a state.
    pub fn state(mut self, state: State) -> Self {
        self.states.push(state);
        self
    }

    pub(crate) fn into_wit(self) -> BlueprintInfo {
        BlueprintInfo {
            name: self.name,
            api_version: self.api_version,
            api_endpoint: self.api_endpoint,
            states: self.states.into_iter().map(State::into_wit).collect(),
        }
    }
}

/// One state and the states it may lead to.
#[derive(Debug, Clone)]
pub struct State {
    name: String,
    start: bool,
    end: Option<TerminalStatus>,
    transitions: Vec<String>,
}

impl State {
    /// An intermediate state whose handler runs when a job enters it.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), start: false, end: None, transitions: Vec::new() }
    }

    /// The state every job begins in (exactly one per blueprint).
    pub fn start(name: impl Into<String>) -> Self {
        Self { start: true, ..Self::new(name) }
    }

    /// An end state: entering it ends the job with status `finished`.
    pub fn finished(name: impl Into<String>) -> Self {
        Self { end: Some(TerminalStatus::Finished), ..Self::new(name) }
    }

    /// An end state: entering it ends the job with status `failed`.
    pub fn failed(name: impl Into<String>) -> Self {
        Self { end: Some(TerminalStatus::Failed), ..Self::new(name) }
    }

    /// The states this state's handler may move the job to: every target of
    /// `go_to`, of a task's, approval's or child run's transitions, and a
    /// parallel step's aggregator state.
    pub fn to<I, S>(mut self, states: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.transitions.extend(states.into_iter().map(Into::into));
        self
    }

    fn into_wit(self) -> StateInfo {
        StateInfo { name: self.name, start: self.start, end: self.end, transitions: self.transitions }
    }
}
