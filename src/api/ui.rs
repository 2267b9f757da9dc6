//! The web terminal, served by the agent itself: one page, its script and
//! styles, and the vendored xterm.js (`hack/web/update.sh`), all embedded in
//! the binary at build time. Nothing is fetched from the internet at run time.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::compression::CompressionLayer;

use super::{ApiError, AppState};

/// (path under /ui/, content type, bytes)
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/app.js"),
    ),
    (
        "ports.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/ports.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("ui/app.css"),
    ),
    (
        "vendor/xterm.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/vendor/xterm.mjs"),
    ),
    (
        "vendor/addon-fit.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/vendor/addon-fit.mjs"),
    ),
    (
        "vendor/xterm.css",
        "text/css; charset=utf-8",
        include_bytes!("ui/vendor/xterm.css"),
    ),
    (
        "vendor/LICENSE-xterm.txt",
        "text/plain; charset=utf-8",
        include_bytes!("ui/vendor/LICENSE-xterm.txt"),
    ),
];

const INDEX: &[u8] = include_bytes!("ui/index.html");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{*path}", get(asset))
        .layer(CompressionLayer::new())
}

fn respond(content_type: &'static str, bytes: &'static [u8]) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Revalidated on every load: the agent may have been upgraded.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        bytes,
    )
        .into_response()
}

async fn index() -> Response {
    let mut response = respond("text/html; charset=utf-8", INDEX);
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    response
}

async fn asset(Path(path): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == path)
        .map(|(_, content_type, bytes)| respond(content_type, bytes))
        .ok_or_else(|| ApiError::not_found(format!("no such file in the web UI: {path}")))
}
