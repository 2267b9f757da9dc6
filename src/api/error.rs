//! Every error the HTTP API returns, rendered once as a Kubernetes `v1.Status`.
//!
//! kubectl and the client libraries print a `Status`'s message verbatim and branch
//! on its `reason` and `code`, so the agent speaks that shape on every route. A
//! 5xx caused by the agent itself says only that something failed; the cause goes
//! to the log, not to the caller.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nsdebug_wire::status::{Status, StatusDetails, reason};

use crate::cri::CriError;
use crate::resolve::ResolveError;

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    // Boxed: most errors have none, and every `Result` carries the size.
    details: Option<Box<StatusDetails>>,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, reason::NOT_FOUND, message)
    }

    /// The API server's answer for a named object that does not exist.
    pub fn object_not_found(kind: &str, name: &str, message: impl Into<String>) -> Self {
        let mut err = Self::not_found(message);
        err.details = Some(Box::new(StatusDetails {
            kind: Some(kind.to_string()),
            name: Some(name.to_string()),
            ..StatusDetails::default()
        }));
        err
    }

    /// The API group of the object in `details` (`metrics.k8s.io`).
    pub fn in_group(mut self, group: &str) -> Self {
        if let Some(details) = self.details.as_mut() {
            details.group = Some(group.to_string());
        }
        self
    }

    /// The API server's answer to options that fail its validation: 422
    /// `Invalid`, `KIND "NAME" is invalid: ...`.
    pub fn invalid(kind: &str, name: &str, message: impl Into<String>) -> Self {
        let mut err = Self::new(StatusCode::UNPROCESSABLE_ENTITY, reason::INVALID, message);
        err.details = Some(Box::new(StatusDetails {
            kind: Some(kind.to_string()),
            name: Some(name.to_string()),
            ..StatusDetails::default()
        }));
        err
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            reason::REQUEST_ENTITY_TOO_LARGE,
            message,
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, reason::CONFLICT, message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            reason::METHOD_NOT_ALLOWED,
            message,
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            reason::SERVICE_UNAVAILABLE,
            message,
        )
    }

    /// A failure of the agent itself: logged in full, reported without internals.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %crate::error_chain(err), "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            reason::INTERNAL_ERROR,
            "internal error in the nsdebug agent; its log has the cause",
        )
    }

    /// A failure to enter a container: the message is about the target, not
    /// the agent's internals, and tells the operator what went wrong.
    pub fn internal_with(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            reason::INTERNAL_ERROR,
            message,
        )
    }

    /// The target's file system is full.
    pub fn insufficient_storage(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            reason::INSUFFICIENT_STORAGE,
            message,
        )
    }

    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            reason::TOO_MANY_REQUESTS,
            message,
        )
    }

    pub fn header_too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            reason::REQUEST_HEADER_FIELDS_TOO_LARGE,
            message,
        )
    }

    /// 421: the request names a host this agent does not answer to.
    pub fn misdirected(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::MISDIRECTED_REQUEST,
            reason::MISDIRECTED_REQUEST,
            message,
        )
    }

    /// 415: a body of a type the route does not take.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reason::UNSUPPORTED_MEDIA_TYPE,
            message,
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, reason::FORBIDDEN, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, reason::UNAUTHORIZED, message)
    }

    /// Tells the client when to try again: `Retry-After` and the Status's
    /// `details.retryAfterSeconds`, as the API server does.
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        let seconds = u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX);
        self.details
            .get_or_insert_with(Default::default)
            .retry_after_seconds = Some(seconds);
        self
    }

    pub fn code(&self) -> StatusCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `v1.Status` body.
    pub fn status(&self) -> Status {
        let status =
            Status::failure(self.message.clone(), self.reason).with_code(self.code.as_u16());
        match &self.details {
            Some(details) => status.with_details(details.as_ref().clone()),
            None => status,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.status();
        let retry = self
            .details
            .as_ref()
            .and_then(|d| d.retry_after_seconds)
            .map(|s| s.to_string());
        let mut response = (self.code, Json(body)).into_response();
        if let Some(seconds) = retry
            && let Ok(value) = axum::http::HeaderValue::from_str(&seconds)
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<CriError> for ApiError {
    fn from(err: CriError) -> Self {
        if err.is_unavailable() {
            return Self::unavailable(format!(
                "the container runtime is unavailable: {}",
                crate::error_chain(&err)
            ));
        }
        match &err {
            CriError::Call { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                reason::INTERNAL_ERROR,
                format!("the container runtime failed: {}", crate::error_chain(&err)),
            ),
            _ => Self::internal(&err),
        }
    }
}

impl From<ResolveError> for ApiError {
    fn from(err: ResolveError) -> Self {
        let message = err.to_string();
        match err {
            ResolveError::PodNotFound { pod, .. } => Self::object_not_found("pods", &pod, message),
            ResolveError::ContainerNotFound { .. }
            | ResolveError::ContainerIdNotFound { .. }
            | ResolveError::NoContainers { .. } => Self::not_found(message),
            ResolveError::ContainerAmbiguous { .. }
            | ResolveError::ContainerIdAmbiguous { .. }
            | ResolveError::InvalidContainerId { .. } => Self::bad_request(message),
            ResolveError::NotRunning { .. } | ResolveError::NoProcess { .. } => {
                Self::conflict(message)
            }
            ResolveError::Runtime(err) => err.into(),
        }
    }
}

impl From<crate::session::TooManySessions> for ApiError {
    fn from(err: crate::session::TooManySessions) -> Self {
        Self::too_many_requests(err.to_string())
    }
}

impl From<crate::session::OutputBudgetError> for ApiError {
    fn from(err: crate::session::OutputBudgetError) -> Self {
        match err {
            crate::session::OutputBudgetError::Exhausted { .. } => {
                Self::too_many_requests(err.to_string())
            }
            crate::session::OutputBudgetError::TooLarge { .. } => {
                Self::bad_request(err.to_string())
            }
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(err: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError;
        match err {
            AuthError::Unauthenticated(reason) => Self::new(
                StatusCode::UNAUTHORIZED,
                reason::UNAUTHORIZED,
                format!("Unauthorized: {reason}"),
            ),
            AuthError::Forbidden { message } => {
                Self::new(StatusCode::FORBIDDEN, reason::FORBIDDEN, message)
            }
            err @ AuthError::Unavailable(_) => Self::unavailable(crate::error_chain(&err)),
        }
    }
}
