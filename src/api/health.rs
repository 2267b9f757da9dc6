//! `/healthz` (the process serves) and `/readyz` (the container runtime answers).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the runtime answers `Version` now; the reason otherwise.
async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.inventory.cri().version().await {
        Ok(_) => (StatusCode::OK, "ok".into()),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the container runtime does not answer: {}\n",
                crate::error_chain(&err)
            ),
        ),
    }
}
