//! The blueprints' data stores: one hash per store.

use async_trait::async_trait;
use redis::{AsyncCommands, RedisError};

use super::{RedisStorage, unavailable};
use crate::storage::{DataStores, StorageResult};

/// Whether Redis refused an increment because the stored value is not an
/// integer or the result would overflow (`ERR hash value is not an integer`,
/// `ERR increment or decrement would overflow`).
fn is_not_an_integer(error: &RedisError) -> bool {
    error.code() == Some("ERR")
        && error.detail().is_some_and(|detail| detail.contains("not an integer") || detail.contains("overflow"))
}

#[async_trait]
impl DataStores for RedisStorage {
    async fn data_get(&self, scope: &str, key: &str) -> StorageResult<Option<String>> {
        self.conn().hget(self.keys.data(scope), key).await.map_err(unavailable)
    }

    async fn data_set(&self, scope: &str, key: &str, value: &str) -> StorageResult<()> {
        let _: i64 = self.conn().hset(self.keys.data(scope), key, value).await.map_err(unavailable)?;
        Ok(())
    }

    async fn data_delete(&self, scope: &str, key: &str) -> StorageResult<bool> {
        let deleted: i64 = self.conn().hdel(self.keys.data(scope), key).await.map_err(unavailable)?;
        Ok(deleted == 1)
    }

    async fn data_increment(&self, scope: &str, key: &str, delta: i64) -> StorageResult<Option<i64>> {
        // The value is stored as decimal text, which is also its JSON.
        match self.conn().hincr(self.keys.data(scope), key, delta).await {
            Ok(value) => Ok(Some(value)),
            Err(e) if is_not_an_integer(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }
}
