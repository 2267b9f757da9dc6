//! The HTTP API: the Kubernetes-compatible facade, the native JSON API and health.
//!
//! Routing and request parsing live here; answers come from the inventory and the
//! resolver, and every failure is rendered once by [`ApiError`].

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
mod namespaces;
mod native;
mod openapi;
pub mod pod_object;
mod pods;
mod probe;
mod query;
mod run;
pub mod selector;
mod table;
mod target;
mod ui;

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, Uri};

pub use error::ApiError;

use crate::enter::EnterError;
use crate::enter::protocol::FailureKind;
use crate::inventory::Inventory;
use crate::resolve::Resolver;
use crate::session::Sessions;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub inventory: Arc<Inventory>,
    pub resolver: Resolver,
    /// The Kubernetes node this agent serves, reported as `spec.nodeName`.
    pub node_name: Arc<str>,
    pub sessions: Sessions,
    /// Memory for buffered run output (`--output-budget`).
    pub output_budget: crate::session::OutputBudget,
    pub limits: crate::config::Limits,
    pub auth: Arc<crate::auth::Auth>,
    pub audit: Arc<crate::audit::AuditLog>,
    pub events: crate::events::PodEvents,
    pub recording: Option<crate::recording::RecordingConfig>,
    /// The filesystem whose tools toolbox mode runs (`--toolbox-root`).
    pub toolbox_root: Arc<std::path::Path>,
    pub logins: Arc<crate::login::Logins>,
    pub backoff: Arc<crate::auth::FailureBackoff>,
    /// Served over TLS (for the links the agent hands out, and its own origin).
    pub tls: bool,
    /// Host names the agent answers to besides loopback (`--allowed-host`).
    pub allowed_hosts: browser::AllowedHosts,
    /// Cancelled on SIGTERM: live sessions tell their users, and end when
    /// `shutdown_grace` has passed.
    pub draining: tokio_util::sync::CancellationToken,
    pub shutdown_grace: std::time::Duration,
    /// The way into containers, with its helpers started ahead of need.
    pub enter: crate::enter::Enter,
}

impl AppState {
    pub fn new(
        inventory: Arc<Inventory>,
        config: &crate::config::Config,
        auth: crate::auth::Auth,
        audit: crate::audit::AuditLog,
        events: crate::events::PodEvents,
        enter: crate::enter::Enter,
    ) -> Self {
        Self {
            resolver: Resolver::new(inventory.clone()),
            inventory,
            node_name: config.node_name.as_str().into(),
            sessions: Sessions::new(
                config.limits.max_sessions,
                config.limits.max_sessions_per_user,
            ),
            output_budget: crate::session::OutputBudget::new(config.limits.output_budget),
            limits: config.limits,
            auth: Arc::new(auth),
            audit: Arc::new(audit),
            events,
            recording: config.recording.clone(),
            toolbox_root: config.toolbox_root.as_path().into(),
            logins: Arc::new(crate::login::Logins::new(
                config.login_link_ttl,
                config.ui_session_ttl,
            )),
            backoff: Arc::default(),
            tls: config.tls.is_some(),
            allowed_hosts: browser::AllowedHosts::new(&config.allowed_hosts),
            draining: tokio_util::sync::CancellationToken::new(),
            shutdown_grace: config.shutdown_grace,
            enter,
        }
    }
}

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
        .merge(namespaces::routes())
        .merge(native::routes())
        .merge(run::routes())
        .merge(diag::routes())
        .merge(capture::routes())
        .merge(probe::routes())
        .merge(exec::routes())
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

/// Why a request's path or query is not text once percent-decoded (every
/// name, command and path the agent takes is UTF-8; a lossy decoding would
/// run or open something the caller did not ask for).
fn not_utf8(uri: &axum::http::Uri) -> Option<String> {
    use percent_encoding::percent_decode_str;
    if percent_decode_str(uri.path()).decode_utf8().is_err() {
        return Some("the request path is not valid UTF-8 once percent-decoded".into());
    }
    let query = uri.query()?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode_str(key).decode_utf8();
        let value_ok = percent_decode_str(value).decode_utf8().is_ok();
        match key {
            Err(_) => {
                Some("a query parameter's name is not valid UTF-8 once percent-decoded".into())
            }
            Ok(_) if value_ok => None,
            Ok(key) => Some(format!(
                "query parameter {key:?} is not valid UTF-8 once percent-decoded"
            )),
        }
    })
}

/// Refuses a request whose head is too large or whose path or query is not
/// text, public or not.
async fn well_formed(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let head: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum::<usize>()
        + request.uri().to_string().len();
    // The one head limit (see there), for every request of a connection.
    if head > crate::server::MAX_HEAD_BYTES {
        return ApiError::header_too_large(format!(
            "the request line and headers are {head} bytes; the agent takes at most {}",
            crate::server::MAX_HEAD_BYTES
        ))
        .into_response();
    }
    if let Some(message) = not_utf8(request.uri()) {
        return ApiError::bad_request(message).into_response();
    }
    next.run(request).await
}

/// Puts the caller's [`crate::auth::User`] on every request of the protected
/// part, or answers 401 (429 for a token that failed too often).
async fn authenticate(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let token = crate::auth::bearer_token(request.headers());
    // A UI session stands for the identity reviewed at its login.
    if let Some(session) = token
        .as_deref()
        .filter(|t| t.starts_with(crate::login::SESSION_PREFIX))
    {
        let Some(user) = state.logins.session_user(session) else {
            return ApiError::unauthorized(
                "the web UI login has expired or was logged out; log in again",
            )
            .into_response();
        };
        request
            .extensions_mut()
            .insert(login::UiSession(session.to_string()));
        request.extensions_mut().insert(user);
        return next.run(request).await;
    }
    match authenticate_token(&state, token.as_deref()).await {
        Ok(user) => {
            request.extensions_mut().insert(user);
            if let Some(token) = token {
                request.extensions_mut().insert(login::CallerToken(token));
            }
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}

/// The owner of `token`, with a token that failed again and again made to
/// wait (keyed on the token's digest: never on the address, which every
/// client behind `kubectl port-forward` shares).
async fn authenticate_token(
    state: &AppState,
    token: Option<&str>,
) -> Result<crate::auth::User, ApiError> {
    let digest = token.map(crate::auth::TokenDigest::of);
    if let Some(digest) = &digest
        && let Err(wait) = state.backoff.check(digest)
    {
        return Err(ApiError::too_many_requests(format!(
            "this token failed authentication too often; try again in {}s",
            wait.as_secs().max(1)
        ))
        .retry_after(wait));
    }
    match state.auth.authenticate(token).await {
        Ok(user) => {
            if let Some(digest) = &digest {
                state.backoff.succeeded(digest);
            }
            Ok(user)
        }
        Err(err) => {
            if let crate::auth::AuthError::Unauthenticated(_) = &err {
                crate::metrics::authentication_failed();
                if let Some(digest) = digest {
                    state.backoff.failed(digest);
                }
            }
            Err(err.into())
        }
    }
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

/// A query string as axum extracted it: a malformed one becomes our 400
/// `v1.Status` instead of axum's plain-text rejection.
pub type QueryOf<T> = Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>;

/// The parsed query, or a 400.
fn query<T>(query: QueryOf<T>) -> Result<T, ApiError> {
    query
        .map(|axum::extract::Query(value)| value)
        .map_err(|err| ApiError::bad_request(err.body_text()))
}

/// A `labelSelector` query value, parsed with the API server's rules, or a 400.
fn label_selector(text: Option<&str>) -> Result<selector::Selector, ApiError> {
    selector::Selector::labels(text.unwrap_or(""))
        .map_err(|err| ApiError::bad_request(format!("invalid labelSelector: {err}")))
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

/// Who sent a request and how, for the audit trail.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub peer: Option<std::net::SocketAddr>,
    pub user_agent: String,
    pub uri: String,
    /// The request's ID (`X-Request-Id`), carried into its audit events.
    pub request_id: String,
}

/// A request's ID: the caller's `X-Request-Id` when it is a sane one (up to
/// 128 visible ASCII characters), else a new UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

const REQUEST_ID: &str = "x-request-id";

/// Gives every request an ID and answers with it in `X-Request-Id`.
async fn request_id(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            peer: parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
            user_agent: parts
                .headers
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            uri: parts.uri.to_string(),
            request_id: parts
                .extensions
                .get::<RequestId>()
                .map(|id| id.0.clone())
                .unwrap_or_default(),
        })
    }
}
