//! The Kubernetes `v1.Status`: every error answer of the agent, and the last
//! frame of an exec stream.
//!
//! kubectl and the client libraries print a Status's message verbatim and
//! branch on its `reason` and `code`, so every error path builds this one type.
//! kube-core's `kube_core::Status` has the builders to copy but serializes
//! neither `kind` nor `apiVersion`, which an HTTP error body must carry, and
//! k8s-openapi's leaves them to a trait; hence our own, with kube-core's
//! builder names (`failure`, `with_code`, `with_details`) and the reasons
//! Kubernetes defines as constants.
//!
//! An HTTP body is a whole object (`kind: Status`, `apiVersion: v1`); the exec
//! stream's status frame is not: the API server writes it without the type
//! fields ([`Status::in_stream`]).

use serde::{Deserialize, Serialize};

/// The reasons (`metav1.StatusReason`) the agent answers with.
pub mod reason {
    pub const BAD_REQUEST: &str = "BadRequest";
    pub const UNAUTHORIZED: &str = "Unauthorized";
    pub const FORBIDDEN: &str = "Forbidden";
    pub const NOT_FOUND: &str = "NotFound";
    pub const METHOD_NOT_ALLOWED: &str = "MethodNotAllowed";
    pub const CONFLICT: &str = "Conflict";
    /// A request's options failed validation (422).
    pub const INVALID: &str = "Invalid";
    pub const REQUEST_ENTITY_TOO_LARGE: &str = "RequestEntityTooLarge";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UnsupportedMediaType";
    pub const MISDIRECTED_REQUEST: &str = "MisdirectedRequest";
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: &str = "RequestHeaderFieldsTooLarge";
    pub const TOO_MANY_REQUESTS: &str = "TooManyRequests";
    pub const INTERNAL_ERROR: &str = "InternalError";
    pub const INSUFFICIENT_STORAGE: &str = "InsufficientStorage";
    pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";
    pub const TIMEOUT: &str = "Timeout";
    /// An exec's command exited non-zero; the code is the `ExitCode` cause.
    pub const NON_ZERO_EXIT_CODE: &str = "NonZeroExitCode";
    /// The cause of a [`NON_ZERO_EXIT_CODE`] that holds the exit code.
    pub const EXIT_CODE_CAUSE: &str = "ExitCode";

    /// The reason Kubernetes gives an HTTP status code (`k8s.io/apimachinery`
    /// `errors.NewGenericServerResponse`'s table, plus the codes the agent
    /// itself answers with).
    pub fn for_code(code: u16) -> &'static str {
        match code {
            400 => BAD_REQUEST,
            401 => UNAUTHORIZED,
            403 => FORBIDDEN,
            404 => NOT_FOUND,
            405 => METHOD_NOT_ALLOWED,
            409 => CONFLICT,
            413 => REQUEST_ENTITY_TOO_LARGE,
            415 => UNSUPPORTED_MEDIA_TYPE,
            422 => INVALID,
            421 => MISDIRECTED_REQUEST,
            429 => TOO_MANY_REQUESTS,
            431 => REQUEST_HEADER_FIELDS_TOO_LARGE,
            503 => SERVICE_UNAVAILABLE,
            504 => TIMEOUT,
            507 => INSUFFICIENT_STORAGE,
            _ => INTERNAL_ERROR,
        }
    }
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// `Success` or `Failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StatusSummary {
    Success,
    Failure,
}

/// The list metadata of a Status: always empty from the agent, but present
/// (`"metadata": {}`), as the API server sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListMeta {}

/// A Kubernetes `v1.Status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
    "message": "pod \"web\" not found in namespace \"shop\" on this node", "reason": "NotFound", "code": 404})))]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `Status` on an HTTP body; absent in an exec stream's status frame.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// `v1` on an HTTP body; absent in an exec stream's status frame.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ListMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusSummary>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `BadRequest`, `Unauthorized`, `Forbidden`, `NotFound`, `Conflict`,
    /// `TooManyRequests`, `RequestEntityTooLarge`, `ServiceUnavailable`, ...
    /// (see [`reason`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// `retryAfterSeconds` on 429s, causes on some answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code; absent (0) in the exec stream's success and
    /// exit-code frames.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: u16,
}

/// What a Status is about, and the causes of a failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// One cause of a failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusCause {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Status {
    /// A successful Status, as an HTTP body.
    pub fn success() -> Self {
        Self {
            kind: "Status".into(),
            api_version: "v1".into(),
            status: Some(StatusSummary::Success),
            ..Self::default()
        }
    }

    /// A failure with `message` and `reason` (one of [`reason`]), as an HTTP
    /// body; set the code with [`Status::with_code`].
    pub fn failure(message: impl Into<String>, reason: &str) -> Self {
        Self {
            kind: "Status".into(),
            api_version: "v1".into(),
            status: Some(StatusSummary::Failure),
            message: message.into(),
            reason: reason.into(),
            ..Self::default()
        }
    }

    /// The failure Kubernetes answers with an HTTP `code`: the reason is the
    /// code's ([`reason::for_code`]).
    pub fn for_code(code: u16, message: impl Into<String>) -> Self {
        Self::failure(message, reason::for_code(code)).with_code(code)
    }

    /// The failure of an exec whose command exited with `exit_code` (what
    /// kubectl turns back into its own exit code).
    pub fn non_zero_exit(exit_code: i32, message: impl Into<String>) -> Self {
        Self::failure(message, reason::NON_ZERO_EXIT_CODE).with_details(StatusDetails {
            causes: vec![StatusCause {
                reason: Some(reason::EXIT_CODE_CAUSE.into()),
                message: Some(exit_code.to_string()),
                field: None,
            }],
            ..StatusDetails::default()
        })
    }

    /// Sets the HTTP status code.
    pub fn with_code(mut self, code: u16) -> Self {
        self.code = code;
        self
    }

    /// Sets the details.
    pub fn with_details(mut self, details: StatusDetails) -> Self {
        self.details = Some(details);
        self
    }

    /// Tells the client when to try again (`details.retryAfterSeconds`).
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.details
            .get_or_insert_with(Default::default)
            .retry_after_seconds = Some(seconds);
        self
    }

    /// The Status as the exec stream's status frame carries it: no `kind` or
    /// `apiVersion`, as the API server (`remotecommand`'s `writeStatus`, a
    /// plain `json.Marshal` of the `metav1.Status`) and the kubelet write it.
    pub fn in_stream(mut self) -> Self {
        self.kind.clear();
        self.api_version.clear();
        self
    }

    pub fn is_success(&self) -> bool {
        self.status == Some(StatusSummary::Success)
    }

    pub fn is_failure(&self) -> bool {
        self.status == Some(StatusSummary::Failure)
    }

    /// The exit code a [`reason::NON_ZERO_EXIT_CODE`] failure carries.
    pub fn exit_code(&self) -> Option<i32> {
        self.details
            .as_ref()?
            .causes
            .iter()
            .find(|c| c.reason.as_deref() == Some(reason::EXIT_CODE_CAUSE))?
            .message
            .as_deref()?
            .parse()
            .ok()
    }

    /// The Status as JSON text.
    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_http_error_body_is_a_whole_object() {
        let status = Status::for_code(404, "pod \"web\" not found");
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "pod \"web\" not found", "reason": "NotFound", "code": 404})
        );
        let slow = Status::for_code(429, "later").with_retry_after(3);
        assert_eq!(
            serde_json::to_value(&slow).unwrap()["details"],
            json!({"retryAfterSeconds": 3})
        );
    }

    #[test]
    fn the_exec_status_frames_are_the_api_servers() {
        assert_eq!(
            serde_json::to_value(Status::success().in_stream()).unwrap(),
            json!({"metadata": {}, "status": "Success"})
        );
        let exit = Status::non_zero_exit(3, "command terminated").in_stream();
        assert_eq!(
            serde_json::to_value(&exit).unwrap(),
            json!({"metadata": {}, "status": "Failure", "message": "command terminated",
                   "reason": "NonZeroExitCode",
                   "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}})
        );
        assert_eq!(exit.exit_code(), Some(3));
        let back: Status = serde_json::from_str(&exit.to_json()).unwrap();
        assert_eq!(back, exit);
    }

    #[test]
    fn every_code_the_agent_answers_has_its_reason() {
        assert_eq!(reason::for_code(409), "Conflict");
        assert_eq!(reason::for_code(503), "ServiceUnavailable");
        assert_eq!(reason::for_code(500), "InternalError");
        assert_eq!(reason::for_code(502), "InternalError");
    }
}
