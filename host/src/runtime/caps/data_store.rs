//! `avtomatika:blueprint/data-store`: named key-value stores per blueprint,
//! kept by the storage backend so every job and instance sees them. The
//! operations here also serve `client-data-store` ([`super::client_data_store`]),
//! which differs only in the [`Scope`] its stores are kept under.

use super::super::bindings::avtomatika::blueprint::data_store::{Host, StoreError};
use super::super::sandbox::Sandbox;
use crate::storage::{DataStores, StorageError};

/// Longest store name or key, in bytes.
const MAX_KEY: usize = 256;
/// Largest value, in bytes of JSON.
const MAX_VALUE: usize = 64 << 10;

/// Whose stores a call reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// The blueprint's, shared by all its clients: `{blueprint}/{store}`.
    Blueprint,
    /// The job's client's copy: `{blueprint}\0{client name's length}:{client}/{store}`.
    /// The NUL byte cannot appear in a blueprint's name (the host refuses
    /// such a blueprint), so no shared store's scope ever equals a client's;
    /// the length prefix keeps client `a/b`'s store `c` apart from client
    /// `a`'s store `b/c`.
    Client,
}

impl Sandbox {
    /// The backend and the store's scope, once the names are checked.
    fn store(&self, scope: Scope, store: &str, key: &str) -> Result<(&dyn DataStores, String), StoreError> {
        for (what, text) in [("store name", store), ("key", key)] {
            if text.is_empty() {
                return Err(StoreError::Invalid(format!("the {what} is empty")));
            }
            if text.len() > MAX_KEY {
                return Err(StoreError::Invalid(format!("the {what} is longer than {MAX_KEY} bytes")));
            }
        }
        let backend =
            self.stores.as_deref().ok_or_else(|| StoreError::Unavailable("no data stores during describe".into()))?;
        let scope = match scope {
            Scope::Blueprint => format!("{}/{store}", self.blueprint),
            Scope::Client => {
                let client = self.client.as_deref().ok_or_else(|| {
                    StoreError::Unavailable("no client: client data stores are not available during describe".into())
                })?;
                format!("{}\0{}:{client}/{store}", self.blueprint, client.len())
            }
        };
        Ok((backend, scope))
    }

    fn failed(&self, operation: &str, store: &str, error: StorageError) -> StoreError {
        tracing::warn!(
            blueprint = &*self.blueprint, job_id = self.job_id.as_deref().unwrap_or(""), store, operation,
            error = %error, "data store operation failed"
        );
        StoreError::Unavailable(error.to_string())
    }

    pub(super) async fn store_get(
        &mut self,
        scope: Scope,
        store: String,
        key: String,
    ) -> Result<Option<String>, StoreError> {
        let (backend, scoped) = self.store(scope, &store, &key)?;
        let answer = backend.data_get(&scoped, &key).await;
        answer.map_err(|e| self.failed("get", &store, e))
    }

    pub(super) async fn store_set(
        &mut self,
        scope: Scope,
        store: String,
        key: String,
        value: String,
    ) -> Result<(), StoreError> {
        if value.len() > MAX_VALUE {
            return Err(StoreError::Invalid(format!("the value is larger than {} KiB", MAX_VALUE >> 10)));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&value) {
            return Err(StoreError::Invalid(format!("the value is not valid JSON: {e}")));
        }
        let (backend, scoped) = self.store(scope, &store, &key)?;
        let answer = backend.data_set(&scoped, &key, &value).await;
        answer.map_err(|e| self.failed("set", &store, e))
    }

    pub(super) async fn store_delete(&mut self, scope: Scope, store: String, key: String) -> Result<bool, StoreError> {
        let (backend, scoped) = self.store(scope, &store, &key)?;
        let answer = backend.data_delete(&scoped, &key).await;
        answer.map_err(|e| self.failed("delete", &store, e))
    }

    pub(super) async fn store_increment(
        &mut self,
        scope: Scope,
        store: String,
        key: String,
        delta: i64,
    ) -> Result<i64, StoreError> {
        let (backend, scoped) = self.store(scope, &store, &key)?;
        match backend.data_increment(&scoped, &key, delta).await {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(StoreError::Invalid(format!(
                "the value under {key:?} is not an integer, or adding {delta} would overflow"
            ))),
            Err(e) => Err(self.failed("increment", &store, e)),
        }
    }
}

impl Host for Sandbox {
    async fn get(&mut self, store: String, key: String) -> Result<Option<String>, StoreError> {
        self.store_get(Scope::Blueprint, store, key).await
    }

    async fn set(&mut self, store: String, key: String, value: String) -> Result<(), StoreError> {
        self.store_set(Scope::Blueprint, store, key, value).await
    }

    async fn delete(&mut self, store: String, key: String) -> Result<bool, StoreError> {
        self.store_delete(Scope::Blueprint, store, key).await
    }

    async fn increment(&mut self, store: String, key: String, delta: i64) -> Result<i64, StoreError> {
        self.store_increment(Scope::Blueprint, store, key, delta).await
    }
}
