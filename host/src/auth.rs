//! Who may call: API clients by `X-Avtomatika-Token`, workers by `X-Worker-Token`.
//!
//! Only SHA-256 digests of tokens are kept. A presented token is hashed and
//! compared against every candidate in constant time, so neither the tokens
//! nor their prefixes leak through response timing.

use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;

type TokenHash = [u8; 32];

fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// An API client, as blueprints see it (`job-context.client`).
#[derive(Debug)]
pub struct Client {
    /// The client's id; stored in its jobs and used in logs. Never a token.
    pub name: String,
    pub plan: Option<String>,
    /// The client's other configured fields (a JSON object).
    pub params: Value,
    token_hash: TokenHash,
}

/// A worker credential check that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerIdentity {
    /// The global worker token: the caller may act as any worker id that has
    /// no token of its own.
    Global,
}

/// The credentials the server accepts.
#[derive(Debug)]
pub struct Credentials {
    clients: Vec<Arc<Client>>,
    global_worker: TokenHash,
}

/// The id of the client behind the global `CLIENT_TOKEN`.
pub const DEFAULT_CLIENT: &str = "default";

impl Credentials {
    pub fn from_config(config: &Config) -> Self {
        let default = Client {
            name: DEFAULT_CLIENT.to_owned(),
            plan: None,
            params: Value::Object(Map::new()),
            token_hash: hash(&config.client_token),
        };
        Self { clients: vec![Arc::new(default)], global_worker: hash(&config.global_worker_token) }
    }

    /// The client holding `token`, if any.
    pub fn client_by_token(&self, token: &str) -> Option<Arc<Client>> {
        let presented = hash(token);
        // Visit every client so the time taken does not depend on which one matched.
        let mut found = None;
        for client in &self.clients {
            if bool::from(client.token_hash.ct_eq(&presented)) {
                found = Some(client.clone());
            }
        }
        found
    }

    /// The client called `name` (a job's creator).
    pub fn client(&self, name: &str) -> Option<&Arc<Client>> {
        self.clients.iter().find(|c| c.name == name)
    }

    /// Checks a worker's token.
    pub fn worker(&self, token: &str) -> Option<WorkerIdentity> {
        bool::from(self.global_worker.ct_eq(&hash(token))).then_some(WorkerIdentity::Global)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash() {
        let config =
            Config { client_token: "c-token".into(), global_worker_token: "w-token".into(), ..Config::default() };
        let creds = Credentials::from_config(&config);
        assert_eq!(creds.client_by_token("c-token").unwrap().name, DEFAULT_CLIENT);
        assert!(creds.client_by_token("c-toke").is_none());
        assert!(creds.client_by_token("w-token").is_none());
        assert_eq!(creds.worker("w-token"), Some(WorkerIdentity::Global));
        assert!(creds.worker("c-token").is_none());
        assert!(creds.worker("").is_none());
        assert!(format!("{creds:?}").find("c-token").is_none(), "tokens must not be kept in clear");
    }
}
