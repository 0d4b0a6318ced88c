//! The capabilities the host grants to blueprints, one module per WIT interface.

pub mod client_data_store;
pub mod data_store;
pub mod log;
pub mod task_files;
