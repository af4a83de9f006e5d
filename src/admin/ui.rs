//! The dashboard's files (`admin-ui/dist`, built by `npm run build` in `admin-ui/`), embedded in
//! the binary at compile time in release builds (read from disk in debug builds) and served at
//! `/` on the admin port. Any other path that is not the API is the single-page app's own route:
//! it gets `index.html`. Hashed assets are cached for a year; `index.html` is revalidated, so a
//! new build is picked up at once. Every page carries a strict Content-Security-Policy: the
//! dashboard loads nothing from anywhere but this port.

use axum::body::Body;
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use super::ApiError;

#[derive(RustEmbed)]
#[folder = "admin-ui/dist"]
#[allow_missing = true]
struct Dist;

/// What a page may load: only this origin; inline styles for the chart library.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// Shown when the binary was built without the dashboard.
const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><title>Tollgate admin</title>\
<h1>The dashboard is not built into this binary</h1>\
<p>Build it with <code>npm --prefix admin-ui ci &amp;&amp; npm --prefix admin-ui run build</code>, \
then rebuild Tollgate (<code>scripts/run</code> does both). The admin API works without it: \
see <code>/api/admin/openapi.json</code>.</p>";

/// Whether this binary has the dashboard's files (embedded in a release build; on disk, in
/// `admin-ui/dist`, for a debug build). Without them `/` explains how to build them.
pub(crate) fn built() -> bool {
    Dist::get("index.html").is_some()
}

/// The router's fallback: API paths get a JSON 404, GET/HEAD of anything else the dashboard.
pub(crate) async fn fallback(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") || path == "/api" {
        return ApiError::not_found("no such admin endpoint").into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the dashboard's pages are read with GET",
        )
        .into_response();
    }
    let file = path.trim_start_matches('/');
    if let Some(asset) = (!file.is_empty()).then(|| Dist::get(file)).flatten() {
        let immutable = file.starts_with("assets/");
        return respond(asset, immutable);
    }
    // A file-looking path that is missing is a 404, not the app.
    if file.starts_with("assets/") {
        return ApiError::not_found("no such file").into_response();
    }
    match Dist::get("index.html") {
        Some(index) => respond(index, false),
        None => {
            let mut resp = (StatusCode::OK, NOT_BUILT).into_response();
            secure(resp.headers_mut(), "text/html; charset=utf-8", false);
            resp
        }
    }
}

fn respond(file: rust_embed::EmbeddedFile, immutable: bool) -> Response {
    let mime = file.metadata.mimetype().to_string();
    let mut resp = Response::new(Body::from(file.data.into_owned()));
    secure(resp.headers_mut(), &mime, immutable);
    resp
}

fn secure(headers: &mut HeaderMap, mime: &str, immutable: bool) {
    if let Ok(v) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}
