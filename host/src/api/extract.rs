//! Request extractors that fail with [`ApiError`]: JSON bodies and the two
//! kinds of callers. A handler's signature shows who may call it.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::auth::{Client, WorkerToken, access, hash};

/// A JSON body, whatever its `Content-Type`, parsed into `T`. Malformed JSON is
/// a 400 and a body over `MAX_REQUEST_BODY_BYTES` a 413, both in the API's
/// error format.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The raw body, within `MAX_REQUEST_BODY_BYTES`.
pub struct ApiBody(pub Bytes);

impl FromRequest<AppState> for ApiBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        body_bytes(req, state).await.map(ApiBody)
    }
}

/// Path parameters; an undecodable one is a 400 in the API's error format.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// A route's own body limit, when it is below `MAX_REQUEST_BODY_BYTES`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The layers that give one route a body limit of `bytes` (at most
/// `MAX_REQUEST_BODY_BYTES`): the limit itself, and the figure the 413 names.
pub fn body_limit(bytes: usize, config_max: usize) -> (DefaultBodyLimit, Extension<BodyLimit>) {
    let bytes = bytes.min(config_max);
    (DefaultBodyLimit::max(bytes), Extension(BodyLimit(bytes)))
}

/// [`body_limit`] of the worker routes with small bodies (registration,
/// heartbeats, events, token exchange): `WORKER_MAX_BODY_BYTES`.
pub fn worker_body_limit(config: &crate::config::Config) -> (DefaultBodyLimit, Extension<BodyLimit>) {
    body_limit(config.limits.worker_body_bytes, config.max_request_body_bytes)
}

/// Reads the body within the route's limit.
pub async fn body_bytes(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let limit =
        req.extensions().get::<BodyLimit>().map_or(state.orchestrator.config.max_request_body_bytes, |limit| limit.0);
    Bytes::from_request(req, state).await.map_err(|rejection| ApiError::from_body(rejection, limit))
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

const CLIENT_TOKEN_HEADER: &str = "X-Avtomatika-Token";
/// The header clients written for the RXON generation send the same tokens in.
const RXON_CLIENT_TOKEN_HEADER: &str = "X-Client-Token";
const WORKER_TOKEN_HEADER: &str = "X-Worker-Token";
pub const RXON_VERSION_HEADER: &str = "X-RXON-Version";
/// The header the newest `rxon` SDKs name their worker in.
const WORKER_ID_HEADER: &str = "X-Worker-ID";

fn header<'a>(parts: &'a Parts, name: &'static str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// An authenticated API client.
pub struct ClientAuth(pub Arc<Client>);

impl FromRequestParts<AppState> for ClientAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // One token is checked: `X-Avtomatika-Token` when sent, else
        // `X-Client-Token`, so a wrong token in one header is never saved
        // by a right one in the other.
        header(parts, CLIENT_TOKEN_HEADER)
            .or_else(|| header(parts, RXON_CLIENT_TOKEN_HEADER))
            .and_then(|token| state.orchestrator.credentials.client_by_token(token))
            .map(ClientAuth)
            .ok_or(ApiError::Unauthorized(CLIENT_TOKEN_HEADER))
    }
}

/// A worker's presented token, known to be the global worker token or one
/// of `workers.toml`'s. Which worker ids it may act as depends on the
/// request (path or body), so the orchestrator checks that; a token that is
/// neither is refused here, from the headers alone, before any body is read.
pub struct WorkerAuth(pub WorkerToken);

impl FromRequestParts<AppState> for WorkerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let presented = header(parts, WORKER_TOKEN_HEADER)
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::Unauthorized(WORKER_TOKEN_HEADER))?;
        let orchestrator = &state.orchestrator;
        if access::is_access_token(presented) {
            return match orchestrator.verify_access_token(presented).await? {
                Some(worker_id) => Ok(WorkerAuth(WorkerToken::Access { worker_id })),
                None => Err(ApiError::InvalidWorkerToken("access token invalid, expired or revoked".into())),
            };
        }
        let digest = hash(presented);
        let token = WorkerToken::Secret(digest);
        if orchestrator.credentials.is_global_worker(&token)
            || orchestrator.storage.worker_for_token(&digest).await?.is_some()
        {
            Ok(WorkerAuth(token))
        } else {
            Err(ApiError::Unauthorized(WORKER_TOKEN_HEADER))
        }
    }
}

/// The RXON protocol version a worker speaks (`X-RXON-Version`), if it said.
/// `avtomatika-worker` 1.0b3 sends none; the `rxon`-based SDKs always do.
pub struct RxonVersion(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RxonVersion {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(header(parts, RXON_VERSION_HEADER).map(str::to_owned)))
    }
}

/// The worker id a request names in `X-Worker-ID` (the newest `rxon` SDKs
/// send it with every request), if any.
pub struct WorkerIdHeader(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for WorkerIdHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(header(parts, WORKER_ID_HEADER).filter(|id| !id.is_empty()).map(str::to_owned)))
    }
}
