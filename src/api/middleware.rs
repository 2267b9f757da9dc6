//! What runs around every handler: a request ID ([`request_id`]), a
//! well-formed head ([`well_formed`]: its size, text paths and queries) and,
//! on the protected part of the router, authentication ([`authenticate`]);
//! and [`RequestInfo`], who sent a request, for the audit trail.

use super::{ApiError, AppState, login};

/// Why a request's path or query is not text once percent-decoded (every
/// name, command and path the agent takes is UTF-8; a lossy decoding would
/// run or open something the caller did not ask for).
pub(super) fn not_utf8(uri: &axum::http::Uri) -> Option<String> {
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
pub(super) async fn well_formed(
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
pub(super) async fn authenticate(
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
pub(super) async fn authenticate_token(
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
pub(super) async fn request_id(
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
