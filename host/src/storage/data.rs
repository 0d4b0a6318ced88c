//! The blueprints' key-value data stores. The only part of storage a plugin's
//! capability reaches (see `runtime::caps::data_store`).

use async_trait::async_trait;

use super::StorageResult;

#[async_trait]
pub trait DataStores: Send + Sync {
    /// The value (JSON) under `key` in store `scope` (`{blueprint}/{store}`).
    async fn data_get(&self, scope: &str, key: &str) -> StorageResult<Option<String>>;

    /// Sets `key` in store `scope` to `value` (JSON).
    async fn data_set(&self, scope: &str, key: &str, value: &str) -> StorageResult<()>;

    /// Deletes `key` from store `scope`; `true` when it existed.
    async fn data_delete(&self, scope: &str, key: &str) -> StorageResult<bool>;

    /// Adds `delta` to the integer under `key` (a missing key counts as 0)
    /// in one atomic step and returns the new value; `None` (and nothing
    /// changed) when the stored value is not an integer or would overflow.
    async fn data_increment(&self, scope: &str, key: &str, delta: i64) -> StorageResult<Option<i64>>;
}
