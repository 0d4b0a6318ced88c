//! The operator dashboard at `/ui/`: static HTML, CSS and JavaScript modules
//! built into the binary (no build step, no front-end libraries), served with
//! an `ETag` and a strict Content-Security-Policy. The pages call the client
//! API with the token the operator pastes; this module only serves files.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::ApiError;
use crate::api::openapi::{NotFound, tags};

/// Scripts, styles, connections and images from this origin only: nothing
/// inline, so data a client put into a job can never run as code even if it
/// reached the page as markup. `data:`/`blob:` images for the graphs.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: &str = "index.html";

const ASSETS: &[Asset] = &[
    Asset { name: INDEX, content_type: "text/html; charset=utf-8", body: include_bytes!("assets/index.html") },
    Asset { name: "style.css", content_type: "text/css; charset=utf-8", body: include_bytes!("assets/style.css") },
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("assets/app.js") },
    Asset { name: "api.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("assets/api.js") },
    Asset { name: "dom.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("assets/dom.js") },
    Asset { name: "pages.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("assets/pages.js") },
    Asset { name: "favicon.svg", content_type: "image/svg+xml", body: include_bytes!("assets/favicon.svg") },
];

/// Each asset's `ETag`, by position in [`ASSETS`]: hashed once, on first use.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| ASSETS.iter().map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.body))[..32])).collect())
}

/// `/` and `/ui` lead to the dashboard; `/ui/` is its page, `/ui/{file}` its
/// files. Documented like every route (the document lists what is served).
pub fn routes<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new().routes(routes!(root)).routes(routes!(bare)).routes(routes!(page)).routes(routes!(file))
}

/// Leads to the dashboard.
#[utoipa::path(get, path = "/", tag = tags::UI, responses((status = 303, description = "To `/ui/`.")))]
async fn root() -> Redirect {
    Redirect::to("/ui/")
}

/// Leads to the dashboard.
#[utoipa::path(get, path = "/ui", tag = tags::UI, responses((status = 303, description = "To `/ui/`.")))]
async fn bare() -> Redirect {
    Redirect::to("/ui/")
}

/// The dashboard's page (it asks for a client token and calls the client API).
#[utoipa::path(
    get, path = "/ui/", tag = tags::UI,
    responses(
        (status = 200, description = "The page, with a strict Content-Security-Policy.", content_type = "text/html", body = String),
        (status = 304, description = "`If-None-Match` named the current `ETag`."),
    ),
)]
async fn page(headers: HeaderMap) -> Response {
    serve(INDEX, &headers)
}

/// One of the dashboard's files (scripts, styles, icon).
#[utoipa::path(
    get, path = "/ui/{file}", tag = tags::UI,
    params(("file" = String, Path, description = "A file of the dashboard, e.g. `app.js`.")),
    responses(
        (status = 200, description = "The file.", body = String),
        (status = 304, description = "`If-None-Match` named the current `ETag`."),
        (status = 404, response = NotFound),
    ),
)]
async fn file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return ApiError::NotFound(format!("the dashboard has no file {name:?}")).into_response();
    };
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    // Revalidate every time: the files change with the binary and their
    // names do not, so a cached copy must never outlive an upgrade; a
    // matching ETag makes that a 304 without a body.
    let mut response = match headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        Some(wanted) if wanted.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*") => {
            StatusCode::NOT_MODIFIED.into_response()
        }
        _ => ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response(),
    };
    let response_headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        response_headers.insert(header::ETAG, value);
    }
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response_headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if asset.name == INDEX {
        response_headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
        response_headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        response_headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        axum::Router::from(routes::<()>()).oneshot(request.body(Body::empty()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn the_page_has_a_strict_csp_and_assets_revalidate_by_etag() {
        let page = get("/ui/", None).await;
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'") && !csp.contains("unsafe"), "{csp}");

        let script = get("/ui/app.js", None).await;
        assert_eq!(script.status(), 200);
        assert_eq!(script.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(script.headers()[header::CACHE_CONTROL], "no-cache");
        let etag = script.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = get("/ui/app.js", Some(&etag)).await;
        assert_eq!(again.status(), 304);
        assert_eq!(again.headers()[header::ETAG], etag.as_str());
        assert_eq!(get("/ui/app.js", Some("\"other\"")).await.status(), 200);
        assert_eq!(get("/ui/nothing.js", None).await.status(), 404);

        for path in ["/", "/ui"] {
            let redirect = get(path, None).await;
            assert!(redirect.status().is_redirection(), "{path}");
            assert_eq!(redirect.headers()[header::LOCATION], "/ui/");
        }
    }

    /// The CSP forbids inline code; the files must not need it.
    #[test]
    fn no_asset_has_inline_script_or_style_or_inner_html() {
        for asset in ASSETS {
            let text = String::from_utf8_lossy(asset.body);
            assert!(!text.contains("innerHTML") && !text.contains("outerHTML"), "{}", asset.name);
            assert!(!text.contains("style=\""), "{}", asset.name);
            if asset.name == INDEX {
                assert!(!text.contains("<script>") && !text.contains("<style"), "{}", asset.name);
            }
        }
    }
}
