//! `avtomatika:blueprint/data-store`: named key-value stores per blueprint,
//! kept by the storage backend so every job and instance sees them.

use super::super::bindings::avtomatika::blueprint::data_store::{Host, StoreError};
use super::super::sandbox::Sandbox;
use crate::storage::{Storage, StorageError};

/// Longest store name or key, in bytes.
const MAX_KEY: usize = 256;
/// Largest value, in bytes of JSON.
const MAX_VALUE: usize = 64 << 10;

impl Sandbox {
    /// The backend and the store's scope (`{blueprint}/{store}`), once the
    /// names are checked.
    fn store(&self, store: &str, key: &str) -> Result<(&dyn Storage, String), StoreError> {
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
        Ok((backend, format!("{}/{store}", self.blueprint)))
    }

    fn failed(&self, operation: &str, store: &str, error: StorageError) -> StoreError {
        tracing::warn!(
            blueprint = &*self.blueprint, job_id = self.job_id.as_deref().unwrap_or(""), store, operation,
            error = %error, "data store operation failed"
        );
        StoreError::Unavailable(error.to_string())
    }
}

impl Host for Sandbox {
    async fn get(&mut self, store: String, key: String) -> Result<Option<String>, StoreError> {
        let (backend, scope) = self.store(&store, &key)?;
        let answer = backend.data_get(&scope, &key).await;
        answer.map_err(|e| self.failed("get", &store, e))
    }

    async fn set(&mut self, store: String, key: String, value: String) -> Result<(), StoreError> {
        if value.len() > MAX_VALUE {
            return Err(StoreError::Invalid(format!("the value is larger than {} KiB", MAX_VALUE >> 10)));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&value) {
            return Err(StoreError::Invalid(format!("the value is not valid JSON: {e}")));
        }
        let (backend, scope) = self.store(&store, &key)?;
        let answer = backend.data_set(&scope, &key, &value).await;
        answer.map_err(|e| self.failed("set", &store, e))
    }

    async fn delete(&mut self, store: String, key: String) -> Result<bool, StoreError> {
        let (backend, scope) = self.store(&store, &key)?;
        let answer = backend.data_delete(&scope, &key).await;
        answer.map_err(|e| self.failed("delete", &store, e))
    }

    async fn increment(&mut self, store: String, key: String, delta: i64) -> Result<i64, StoreError> {
        let (backend, scope) = self.store(&store, &key)?;
        match backend.data_increment(&scope, &key, delta).await {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(StoreError::Invalid(format!(
                "the value under {key:?} is not an integer, or adding {delta} would overflow"
            ))),
            Err(e) => Err(self.failed("increment", &store, e)),
        }
    }
}
