//! `avtomatika:blueprint/client-data-store`: the data stores of
//! [`super::data_store`], kept apart per client of the job, so that what one
//! client's job stores is never read by another client's.

use super::super::bindings::avtomatika::blueprint::client_data_store::Host;
use super::super::bindings::avtomatika::blueprint::data_store::StoreError;
use super::super::sandbox::Sandbox;
use super::data_store::Scope;

impl Host for Sandbox {
    async fn get(&mut self, store: String, key: String) -> Result<Option<String>, StoreError> {
        self.store_get(Scope::Client, store, key).await
    }

    async fn set(&mut self, store: String, key: String, value: String) -> Result<(), StoreError> {
        self.store_set(Scope::Client, store, key, value).await
    }

    async fn delete(&mut self, store: String, key: String) -> Result<bool, StoreError> {
        self.store_delete(Scope::Client, store, key).await
    }

    async fn increment(&mut self, store: String, key: String, delta: i64) -> Result<i64, StoreError> {
        self.store_increment(Scope::Client, store, key, delta).await
    }
}
