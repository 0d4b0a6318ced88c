//! `/_public/…`: no authentication.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/_public/status", get(status))
}

async fn status() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
