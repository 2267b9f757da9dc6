//! The HTTP API: the Kubernetes-compatible facade, the native JSON API and health.
//!
//! Every handler parses its request, admits it ([`admission`]: the one path
//! that authorizes, resolves, takes the session slot and audits), runs it
//! (the session layer, diagnostics, files) and renders the answer; every
//! failure is rendered once by [`ApiError`]. Here: the router (a public and a
//! protected part) and its fallbacks; [`state`] is what handlers reach,
//! [`middleware`] what runs around them, [`query`] how queries are read,
//! [`target`] how a route names its target.

mod admission;
mod browser;
mod capture;
mod diag;
mod discovery;
mod error;
mod exec;
mod files;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod login;
mod logs;
mod middleware;
mod namespaces;
mod native;
mod nodes;
mod openapi;
pub mod pod_object;
mod pods;
mod portforward;
mod probe;
mod query;
mod resource_metrics;
mod run;
pub mod selector;
mod state;
mod table;
mod target;
mod ui;

use axum::Router;
use axum::http::{Method, Uri};

pub use error::ApiError;
pub use middleware::{RequestId, RequestInfo};
use middleware::{authenticate, authenticate_token, request_id, well_formed};
pub use query::QueryOf;
use query::{label_selector, query};
pub use state::AppState;

use crate::enter::EnterError;
use crate::enter::protocol::FailureKind;

/// The view a caller asked for ([`crate::enter::View::choose`]), or the 400
/// that says why it is refused.
pub fn choose_view(
    profile: crate::enter::Profile,
    toolbox: bool,
    namespaces: Option<crate::enter::NamespaceSet>,
) -> Result<crate::enter::View, ApiError> {
    crate::enter::View::choose(profile, toolbox, namespaces)
        .map_err(|err| ApiError::bad_request(err.to_string()))
}

/// The exit code a shell reports for a command that could not start (127: not
/// found, 126: not executable); other failures are API errors.
fn exit_code_for(err: &EnterError) -> Result<i32, ApiError> {
    if let Some(code) = crate::session::shell_exit_code(err) {
        return Ok(code);
    }
    match err {
        EnterError::Failed {
            kind: FailureKind::TargetGone,
            message,
        } => Err(ApiError::conflict(message.clone())),
        // A refusal is about this target, not a fault: its reason is the answer.
        EnterError::Failed {
            kind: FailureKind::Refused,
            message,
        } => Err(ApiError::conflict(message.clone())),
        EnterError::Failed {
            kind: FailureKind::Setup,
            message,
        } => {
            tracing::error!(%message, "entering a container failed");
            Err(ApiError::internal_with(format!(
                "failed to enter the container: {message}"
            )))
        }
        other => Err(ApiError::internal(other)),
    }
}

/// Health only (`--health-listen`): what the kubelet's probes ask, on an
/// address they reach, with nothing else behind it.
pub fn health_router(state: AppState) -> Router {
    health::routes()
        .route("/metrics", axum::routing::get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Every route the agent serves, in two parts: what anyone may use (the web
/// page, which logs in by itself, its login, health, version, the OpenAPI
/// document, metrics) and everything else, behind [`authenticate`]. An
/// unknown path or method outside the public part is answered only to a
/// caller who authenticated (401 first, then 404/405).
pub fn router(state: AppState) -> Router {
    let public = Router::new()
        .merge(ui::routes())
        .merge(health::routes())
        .merge(discovery::public_routes())
        .merge(openapi::routes())
        .merge(login::public_routes())
        .route("/metrics", axum::routing::get(metrics));
    let protected = Router::new()
        .merge(discovery::routes())
        .merge(pods::routes())
        .merge(logs::routes())
        .merge(namespaces::routes())
        .merge(nodes::routes())
        .merge(resource_metrics::routes())
        .merge(native::routes())
        .merge(run::routes())
        .merge(diag::routes())
        .merge(capture::routes())
        .merge(probe::routes())
        .merge(exec::routes())
        .merge(portforward::routes())
        .merge(files::routes(state.limits.max_file_bytes))
        .merge(login::routes())
        .route("/v1/whoami", axum::routing::get(whoami))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    public
        .merge(protected)
        // The public part's own 405s (a method it lacks on a public path).
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            state.limits.max_request_bytes,
        ))
        .layer(axum::middleware::from_fn(well_formed))
        // Before authentication: a browser's request from another site or
        // through a rebound name is refused whatever credentials it carries.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            browser::guard,
        ))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// `GET /metrics`: Prometheus text format (no user or pod names in it).
async fn metrics() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}

/// `GET /v1/whoami`: the caller as the agent sees them, and the auth mode.
async fn whoami(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::Extension(user): axum::Extension<crate::auth::User>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"user": user, "authMode": state.auth.mode()}))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "the server could not find the requested resource ({})",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{method} is not supported on {}; the agent's Kubernetes API is read-only",
        uri.path()
    ))
}
