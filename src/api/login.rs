//! Web UI login routes; the model is described in [`crate::login`].
//!
//! - `POST /v1/login-links` (with the user's Kubernetes bearer token): a
//!   one-time link, `201 {"url", "path", "expiresInSeconds"}`.
//! - `POST /v1/login` with `{"code": "..."}` or `{"token": "..."}`: a UI
//!   session, `200 {"session", "user", "expiresInSeconds"}`. Public: this
//!   is how one gets in. A code or token that fails again and again must wait
//!   (the backoff is keyed on what failed, never on the address).
//!   `{"code": "...", "preview": true}` answers whom the link logs in
//!   (`LoginPreview`) without spending it, so the page can ask first. A tab
//!   that sends its current UI session is never switched to another user
//!   unless it says `"switch": true` (409 otherwise): a link someone else
//!   minted does not silently log a logged-in tab in as them.
//! - `DELETE /v1/login` (with the session as bearer token): logs out.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, RequestInfo};
use crate::auth::{Auth, User};

/// The caller's own Kubernetes token (a UI session has none: it holds the
/// reviewed identity only).
#[derive(Clone)]
pub struct CallerToken(pub String);

/// The request came with a UI session token: this one.
#[derive(Clone)]
pub struct UiSession(pub String);

/// Logging in: a link's code (or a token) in, a UI session out.
pub fn public_routes() -> Router<AppState> {
    Router::new().route("/v1/login", post(login))
}

/// Minting links and logging out, as an authenticated caller.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/login-links", post(mint_link))
        .route("/v1/login", delete(logout))
}

fn no_login_needed(state: &AppState) -> Result<(), ApiError> {
    match *state.auth {
        Auth::None => Err(ApiError::bad_request(
            "this agent runs without authentication (--auth none): no login is needed",
        )),
        Auth::Kube(_) => Ok(()),
    }
}

fn audit_login(
    state: &AppState,
    user: &User,
    info: &RequestInfo,
    resource: &str,
    code: u16,
    how: &str,
) {
    let mut record = crate::audit::AuditRecord::new(
        user,
        info.peer,
        &info.user_agent,
        &info.uri,
        json!({"apiGroup": "nsdebug.dev", "apiVersion": "v1", "resource": resource}),
    );
    record
        .note("login", how)
        .note("request-id", &info.request_id);
    state.audit.record(&record.event("ResponseComplete", code));
}

async fn mint_link(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    token: Option<Extension<CallerToken>>,
    session: Option<Extension<UiSession>>,
    info: RequestInfo,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    no_login_needed(&state)?;
    if session.is_some() {
        return Err(ApiError::forbidden(
            "login links are minted with a Kubernetes token, not from a web UI session",
        ));
    }
    let Some(Extension(CallerToken(token))) = token else {
        return Err(ApiError::unauthorized("no bearer token"));
    };
    let (code, ttl) = state
        .logins
        .mint_link(user.clone(), crate::auth::token_expiry(&token))
        .map_err(|err| ApiError::too_many_requests(err.to_string()))?;
    audit_login(&state, &user, &info, "loginlinks", 201, "link minted");
    let path = format!("/#login={code}");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if state.tls { "https" } else { "http" };
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "kind": "LoginLink",
            "url": format!("{scheme}://{host}{path}"),
            "path": path,
            "expiresInSeconds": ttl.as_secs(),
            "user": user,
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    code: Option<String>,
    token: Option<String>,
    /// Only say whom the code logs in; spend nothing.
    #[serde(default)]
    preview: bool,
    /// The tab may change users.
    #[serde(default)]
    switch: bool,
}

/// Refuses to log a tab that is `current` in as someone else, unless it
/// asked to `switch`.
fn no_silent_switch(current: Option<&User>, next: &User, switch: bool) -> Result<(), ApiError> {
    match current {
        Some(current) if !switch && (current.name != next.name || current.uid != next.uid) => {
            Err(ApiError::conflict(format!(
                "this tab is logged in as {}; this login is for {}: log out first, or confirm with \"switch\": true",
                current.name, next.name
            )))
        }
        _ => Ok(()),
    }
}

async fn login(
    State(state): State<AppState>,
    info: RequestInfo,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    no_login_needed(&state)?;
    let body: LoginBody = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_request(format!(
            "a login is {{\"code\": \"...\"}} (from a login link) or {{\"token\": \"...\"}}: {err}"
        ))
    })?;
    // The tab's own live login, when it sent one.
    let current = crate::auth::bearer_token(&headers)
        .filter(|token| token.starts_with(crate::login::SESSION_PREFIX))
        .and_then(|session| state.logins.session_user(&session));
    let (user, token_expires, how) = match (body.code, body.token) {
        (Some(code), None) => {
            let digest = crate::auth::TokenDigest::of(code.trim());
            if let Err(wait) = state.backoff.check(&digest) {
                return Err(ApiError::too_many_requests(format!(
                    "this login link failed too often; try again in {}s",
                    wait.as_secs().max(1)
                ))
                .retry_after(wait));
            }
            let code = code.trim();
            let invalid = || {
                state.backoff.failed(digest);
                ApiError::unauthorized(
                    "this login link is not valid: it was used already, has expired, or was never issued; mint a new one",
                )
            };
            let owner = state.logins.peek(code).ok_or_else(invalid)?;
            if body.preview {
                return Ok(Json(json!({
                    "kind": "LoginPreview",
                    "user": owner,
                    "current": current,
                }))
                .into_response());
            }
            no_silent_switch(current.as_ref(), &owner, body.switch)?;
            let (user, token_expires) = state.logins.redeem(code).ok_or_else(invalid)?;
            (user, token_expires, "login link")
        }
        (None, Some(token)) if !token.trim().is_empty() && !body.preview => {
            let token = token.trim();
            let user = super::authenticate_token(&state, Some(token)).await?;
            no_silent_switch(current.as_ref(), &user, body.switch)?;
            (user, crate::auth::token_expiry(token), "token")
        }
        _ => {
            return Err(ApiError::bad_request(
                "give either \"code\" (from a login link, optionally with \"preview\": true) or \"token\"",
            ));
        }
    };
    let (session, ttl) = state
        .logins
        .open_session(user.clone(), token_expires)
        .map_err(|err| ApiError::too_many_requests(err.to_string()))?;
    audit_login(&state, &user, &info, "logins", 200, how);
    Ok(Json(json!({
        "kind": "Login",
        "session": session,
        "user": user,
        "expiresInSeconds": ttl.as_secs(),
    }))
    .into_response())
}

async fn logout(
    State(state): State<AppState>,
    session: Option<Extension<UiSession>>,
) -> Result<Response, ApiError> {
    let Some(Extension(UiSession(session))) = session else {
        return Err(ApiError::bad_request(
            "DELETE /v1/login ends a web UI session: send its session token as the bearer token",
        ));
    };
    state.logins.close_session(&session);
    Ok(Json(nsdebug_wire::Status::success()).into_response())
}
