//! Who may call: API clients by `X-Avtomatika-Token` (or `X-Client-Token`),
//! workers by `X-Worker-Token` — a secret token, or an access token issued
//! for one (see [`access`]).
//!
//! Only SHA-256 digests of tokens are kept. A presented token is hashed and
//! compared in constant time, so neither tokens nor their prefixes leak
//! through response timing. Worker token digests live in storage (they are
//! reloaded at run time and shared between instances); client tokens are
//! fixed at start-up and kept here.

pub mod access;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::clients::ClientConfig;
use crate::config::workers::WorkerTokenConfig;
use crate::config::{Config, Secret};

/// The SHA-256 digest of a token.
pub type TokenHash = [u8; 32];

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two digests.
pub fn same(a: &TokenHash, b: &TokenHash) -> bool {
    bool::from(a.ct_eq(b))
}

/// An API client, as blueprints see it (`job-context.client`).
#[derive(Debug)]
pub struct Client {
    /// The client's id; stored in its jobs and used in logs. Never a token.
    pub name: String,
    pub plan: Option<String>,
    /// Job creations allowed per calendar month; `None` is unlimited.
    pub monthly_attempts: Option<u64>,
    /// The client's other configured fields (a JSON object).
    pub params: Value,
    token_hash: TokenHash,
}

impl Client {
    /// A client the server itself acts as (the scheduler). No token matches
    /// it: it is not among the clients requests are checked against.
    pub fn internal(name: String) -> Self {
        Self { name, plan: None, monthly_attempts: None, params: Value::Object(Map::new()), token_hash: [0; 32] }
    }
}

/// A worker token as presented in a request.
pub enum WorkerToken {
    /// A secret (the global token or a worker's own), already hashed. Which
    /// worker it belongs to is decided against storage (see
    /// `Orchestrator::authorize_worker`).
    Secret(TokenHash),
    /// A verified access token, good for this worker only.
    Access { worker_id: String },
}

/// The client credentials the server accepts, and the global worker token.
#[derive(Debug)]
pub struct Credentials {
    clients: Vec<Arc<Client>>,
    by_name: HashMap<String, Arc<Client>>,
    global_worker: TokenHash,
}

/// The id of the client behind the global `CLIENT_TOKEN`.
pub const DEFAULT_CLIENT: &str = "default";

impl Credentials {
    /// The clients of `clients.toml` when given, else the one client holding
    /// `CLIENT_TOKEN`.
    pub fn new(config: &Config, clients: Option<Vec<ClientConfig>>) -> Self {
        let clients: Vec<Arc<Client>> = match clients {
            Some(clients) => clients
                .into_iter()
                .map(|c| {
                    Arc::new(Client {
                        token_hash: hash(c.token.expose()),
                        name: c.name,
                        plan: c.plan,
                        monthly_attempts: c.monthly_attempts,
                        params: Value::Object(c.params),
                    })
                })
                .collect(),
            None => vec![Arc::new(Client {
                name: DEFAULT_CLIENT.to_owned(),
                plan: None,
                monthly_attempts: None,
                params: Value::Object(Map::new()),
                token_hash: hash(config.client_token.expose()),
            })],
        };
        let by_name = clients.iter().map(|c| (c.name.clone(), c.clone())).collect();
        Self { clients, by_name, global_worker: hash(config.global_worker_token.expose()) }
    }

    /// The client holding `token`, if any.
    pub fn client_by_token(&self, token: &str) -> Option<Arc<Client>> {
        let presented = hash(token);
        // Visit every client so the time taken does not depend on which one matched.
        let mut found = None;
        for client in &self.clients {
            if same(&client.token_hash, &presented) {
                found = Some(client.clone());
            }
        }
        found
    }

    /// The client called `name` (a job's creator).
    pub fn client(&self, name: &str) -> Option<&Arc<Client>> {
        self.by_name.get(name)
    }

    /// Whether `token` is the global worker token.
    pub fn is_global_worker(&self, token: &WorkerToken) -> bool {
        matches!(token, WorkerToken::Secret(hash) if same(&self.global_worker, hash))
    }
}

/// The digests of individual worker tokens, keyed by worker id.
pub fn worker_token_hashes(workers: &[WorkerTokenConfig]) -> HashMap<String, TokenHash> {
    workers.iter().map(|w| (w.worker_id.clone(), hash(w.token.expose()))).collect()
}

/// Whether `token` is one of the documented default tokens.
pub fn is_default(token: &Secret, default: &str) -> bool {
    token.expose() == default
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash() {
        let config =
            Config { client_token: "c-token".into(), global_worker_token: "w-token".into(), ..Config::default() };
        let creds = Credentials::new(&config, None);
        assert_eq!(creds.client_by_token("c-token").unwrap().name, DEFAULT_CLIENT);
        assert!(creds.client_by_token("c-toke").is_none());
        assert!(creds.client_by_token("w-token").is_none());
        assert!(creds.is_global_worker(&WorkerToken::Secret(hash("w-token"))));
        assert!(!creds.is_global_worker(&WorkerToken::Secret(hash("c-token"))));
        assert!(!format!("{creds:?}").contains("c-token"), "tokens must not be kept in clear");
    }

    #[test]
    fn a_clients_file_replaces_the_global_client_token() {
        let config = Config { client_token: "global".into(), ..Config::default() };
        let file = vec![ClientConfig {
            name: "acme".into(),
            token: "acme-token".into(),
            plan: Some("pro".into()),
            monthly_attempts: Some(5),
            params: Map::new(),
        }];
        let creds = Credentials::new(&config, Some(file));
        assert!(creds.client_by_token("global").is_none());
        let acme = creds.client_by_token("acme-token").unwrap();
        assert_eq!((acme.name.as_str(), acme.plan.as_deref(), acme.monthly_attempts), ("acme", Some("pro"), Some(5)));
        assert!(creds.client("acme").is_some());
    }
}
