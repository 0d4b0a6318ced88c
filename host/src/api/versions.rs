//! The client routes under every API version the loaded blueprints use.
//!
//! The client routes (job status, cancel, listing, history, files,
//! dashboard, workers, schedules, graphs, admin) are written once, under
//! `/api/v1/`. The Python orchestrator serves them under the version of each
//! blueprint's endpoint instead (`/api/v2/jobs/{id}` next to a `v2`
//! blueprint's `POST /api/v2/…`), and under `/api/` when a blueprint has an
//! unversioned endpoint, so clients written for it call them there. This
//! layer runs before routing and rewrites such a path to its `/api/v1/`
//! form; `/api/v1/` itself always works, whatever the blueprints use.
//!
//! The versions are read from the current blueprints at each request, so a
//! blueprint reload that adds or drops a version takes effect at once. A
//! `POST` to a blueprint's own endpoint is never rewritten: creating a job
//! wins over any client route of the same shape.

use axum::extract::{Request, State};
use axum::http::{Method, Uri};

use super::AppState;

/// The path a rewritten request was sent to, for the handlers that must
/// answer in its terms (the blueprint-endpoint fallback: a miss under
/// `/api/v2/` is not a `v1` blueprint's endpoint, and says `/api/v2/…`).
#[derive(Debug, Clone)]
pub struct AliasedFrom(pub String);

/// The path every client route is registered under.
const CANONICAL: &str = "/api/v1/";

/// Rewrites a client-route path under another loaded API version to its
/// `/api/v1/` form (see the module comment).
pub async fn alias(State(state): State<AppState>, mut request: Request) -> Request {
    let runtime = &state.orchestrator.runtime;
    let path = request.uri().path();
    // The hot paths (`/api/v1/…`, `/_worker/…`) leave here, before the
    // blueprints are looked at.
    if !path.starts_with("/api/") || path.starts_with(CANONICAL) {
        return request;
    }
    if request.method() == Method::POST && runtime.by_endpoint(path.trim_end_matches('/')).is_some() {
        return request;
    }
    let Some(target) = canonical_path(path, &runtime.api_versions()) else { return request };
    let original = path.to_owned();
    let uri = match request.uri().query() {
        Some(query) => format!("{target}?{query}"),
        None => target,
    };
    // Only the path changes, and it came from a valid URI: a failure here
    // would be a bug, and the request then goes on unchanged (to a 404).
    match uri.parse::<Uri>() {
        Ok(uri) => {
            tracing::trace!(from = %original, to = %uri, "client route under another API version");
            *request.uri_mut() = uri;
            request.extensions_mut().insert(AliasedFrom(original));
        }
        Err(e) => tracing::warn!(path = %original, error = %e, "cannot rewrite to the /api/v1/ route"),
    }
    request
}

/// `path` under `/api/v1/` when it is under another of `versions` (longest
/// first; `None` for unversioned `/api/`). `None` when it is already under
/// `/api/v1/`, outside `/api/`, or under no version in use.
fn canonical_path(path: &str, versions: &[Option<String>]) -> Option<String> {
    let rest = path.strip_prefix("/api/")?;
    if path.starts_with(CANONICAL) || rest == "v1" {
        return None;
    }
    for version in versions.iter().flatten() {
        if let Some(tail) = rest.strip_prefix(version.as_str()).and_then(|tail| tail.strip_prefix('/')) {
            return (version != "v1").then(|| format!("{CANONICAL}{tail}"));
        }
    }
    versions.contains(&None).then(|| format!("{CANONICAL}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(list: &[Option<&str>]) -> Vec<Option<String>> {
        list.iter().map(|v| v.map(str::to_owned)).collect()
    }

    #[test]
    fn paths_under_a_used_version_map_to_v1() {
        let used = versions(&[Some("v2/beta"), Some("v2"), Some("v1")]);
        for (path, expected) in [
            ("/api/v2/jobs", Some("/api/v1/jobs")),
            ("/api/v2/jobs/abc/cancel", Some("/api/v1/jobs/abc/cancel")),
            ("/api/v2/beta/dashboard", Some("/api/v1/dashboard")),
            ("/api/v1/jobs", None),
            ("/api/v3/jobs", None),
            ("/api/v2x/jobs", None),
            ("/api/jobs", None),
            ("/_public/status", None),
            ("/_worker/tasks/result", None),
        ] {
            assert_eq!(canonical_path(path, &used).as_deref(), expected, "{path}");
        }
    }

    #[test]
    fn unversioned_endpoints_put_the_client_routes_under_api() {
        let used = versions(&[Some("v2"), None]);
        assert_eq!(canonical_path("/api/jobs/abc", &used).as_deref(), Some("/api/v1/jobs/abc"));
        assert_eq!(canonical_path("/api/v2/jobs", &used).as_deref(), Some("/api/v1/jobs"), "a version first");
        assert_eq!(canonical_path("/api/v1/jobs", &used), None);
        assert_eq!(canonical_path("/api/v1", &used), None);
        assert_eq!(
            canonical_path("/api/workers", &versions(&[Some("v1")])),
            None,
            "only with an unversioned blueprint"
        );
    }
}
