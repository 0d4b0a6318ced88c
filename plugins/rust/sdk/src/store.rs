//! Named key-value stores that outlive jobs.
//!
//! Each blueprint has its own stores: two blueprints using the store name
//! `counters` never see each other's keys. A value set by one job is seen by
//! later jobs of the blueprint, on any server instance. Values are JSON
//! documents. Keep small state here (counters, flags, lookup tables); a
//! job's own data belongs in its state history.
//!
//! A store is either shared by every client of the blueprint
//! ([`Store::named`], WIT `data-store`) or kept apart per client
//! ([`Store::for_client`], WIT `client-data-store`): a client-scoped store
//! seen from a job of client A holds only what A's jobs put there. Anything
//! that came from a client's input (names, texts, keys taken from
//! `initial_data`) belongs in a client-scoped store, or one client reads
//! what another sent. The two kinds never share values, even under one name.
//!
//! ```ignore
//! use avtomatika_blueprint::{Next, json, store::Store};
//!
//! fn count_visit(page: &str) -> Result<Next, String> {
//!     // The page name is the client's input: count it per client.
//!     let visits = Store::for_client("visits");
//!     // `?` turns a `StoreError` into the handler's error text.
//!     let count = visits.increment(page, 1)?;
//!     visits.set("last_page", &json!(page))?;
//!     Ok(Next::go_to("finished").with_history(json!({ "count": count })))
//! }
//! ```

use std::fmt;

use serde_json::Value;

use crate::bindings::avtomatika::blueprint::client_data_store as client_wit;
use crate::bindings::avtomatika::blueprint::data_store::{self as wit, StoreError as WitStoreError};

/// Why a store operation failed.
///
/// Converts into `String`, so `?` works in a handler returning
/// `Result<Next, String>`: the handler then fails and the host retries it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The host's storage backend could not be reached. Failing the handler
    /// (with `?`) lets the host retry it later.
    Unavailable(String),
    /// The host refused the request: an empty store name or key, a key or
    /// value over the size limits (256 bytes, 64 KiB), or `increment` on a
    /// value that is not an integer. Retrying will not help.
    Invalid(String),
    /// The host answered `get` with a value that is not JSON (a host fault).
    Malformed(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(message) => write!(f, "data store unavailable: {message}"),
            Self::Invalid(message) => write!(f, "data store request refused: {message}"),
            Self::Malformed(message) => write!(f, "data store returned a value that is not JSON: {message}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<StoreError> for String {
    fn from(error: StoreError) -> Self {
        error.to_string()
    }
}

impl From<WitStoreError> for StoreError {
    fn from(error: WitStoreError) -> Self {
        match error {
            WitStoreError::Unavailable(message) => Self::Unavailable(message),
            WitStoreError::Invalid(message) => Self::Invalid(message),
        }
    }
}

/// One of the blueprint's named stores. Cheap to create: it only holds the
/// name and its scope, and every call goes to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    name: String,
    per_client: bool,
}

impl Store {
    /// The store called `name`, shared by every client of the blueprint
    /// (created on first use).
    pub fn named(name: impl Into<String>) -> Self {
        Self { name: name.into(), per_client: false }
    }

    /// The store called `name` as the job's client sees it: each client has
    /// its own copy, and no other client's job reads what this one sets
    /// (created on first use).
    pub fn for_client(name: impl Into<String>) -> Self {
        Self { name: name.into(), per_client: true }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the store is kept apart per client ([`Store::for_client`]).
    pub fn is_per_client(&self) -> bool {
        self.per_client
    }

    /// The value under `key`, or `None` when the key is not set.
    pub fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let text = if self.per_client { client_wit::get(&self.name, key)? } else { wit::get(&self.name, key)? };
        match text {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StoreError::Malformed(format!("store {:?}, key {key:?}: {e}", self.name))),
        }
    }

    /// Sets `key` to `value`, replacing any earlier value.
    pub fn set(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        let value = value.to_string();
        if self.per_client {
            Ok(client_wit::set(&self.name, key, &value)?)
        } else {
            Ok(wit::set(&self.name, key, &value)?)
        }
    }

    /// Deletes `key`; `true` when it was set.
    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        if self.per_client { Ok(client_wit::delete(&self.name, key)?) } else { Ok(wit::delete(&self.name, key)?) }
    }

    /// Adds `delta` to the integer under `key` (a missing key counts as 0) in
    /// one atomic step, and returns the new value. Safe when many jobs on many
    /// instances increment at once.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        if self.per_client {
            Ok(client_wit::increment(&self.name, key, delta)?)
        } else {
            Ok(wit::increment(&self.name, key, delta)?)
        }
    }
}
