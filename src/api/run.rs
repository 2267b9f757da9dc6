//! The one-shot run API for runbooks: run an argv inside a container, get JSON
//! back with the exit code, the output (capped) and how long it took.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::enter::{EnterRequest, Profile, parse_namespaces};
use crate::resolve::{Target, TargetRef};
use crate::session::{self, Captured, RunLimits};

/// Default and largest run time.
const DEFAULT_TIMEOUT_SECS: f64 = 30.0;
const MAX_TIMEOUT_SECS: f64 = 3600.0;
/// Default and largest output kept per stream.
const DEFAULT_OUTPUT_BYTES: usize = 1024 * 1024;
const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/targets/{namespace}/{pod}/run", post(run_in_pod))
        .route("/v1/containers/{id}/run", post(run_in_container))
}

/// `POST .../run`: what to run.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunBody {
    /// argv: never a shell string; run `["sh", "-c", "..."]` for a shell.
    pub command: Vec<String>,
    /// Text for the command's stdin (closed after it).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Binary stdin, base64.
    #[serde(default)]
    pub stdin_base64: Option<String>,
    /// Variables added to the container's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Namespaces to enter (`["net"]`); default: all the container has.
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub profile: Option<Profile>,
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    #[serde(default)]
    pub output_limit_bytes: Option<usize>,
}

/// The answer of a run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    pub target: Target,
    /// The exit code; 128 + signal when killed; `null` on a timeout.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Why the command could not start (then `exitCode` is 127 or 126).
    pub error: Option<String>,
    pub stdout: String,
    /// `utf-8`, or `base64` when the output is not valid UTF-8.
    pub stdout_encoding: &'static str,
    pub stdout_truncated: bool,
    pub stderr: String,
    pub stderr_encoding: &'static str,
    pub stderr_truncated: bool,
    pub duration_ms: f64,
}

#[derive(Debug, Default, Deserialize)]
struct ContainerQuery {
    container: Option<String>,
}

/// The JSON body, whatever Content-Type says (`curl -d` sends a form type).
type Body = Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>;

async fn run_in_pod(
    State(state): State<AppState>,
    Path((namespace, pod)): Path<(String, String)>,
    Query(query): Query<ContainerQuery>,
    body: Body,
) -> Result<Json<RunResult>, ApiError> {
    let wanted = TargetRef::Pod {
        namespace,
        pod,
        container: query.container.filter(|c| !c.is_empty()),
    };
    run(state, wanted, body).await
}

async fn run_in_container(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<RunResult>, ApiError> {
    run(state, TargetRef::ContainerId(id), body).await
}

/// Validates a caller's argv: a program, and no NUL byte anywhere.
pub fn validate_command(command: &[String]) -> Result<(), ApiError> {
    match command.first() {
        None => Err(ApiError::bad_request(
            "command is empty: name a program to run",
        )),
        Some(program) if program.is_empty() => Err(ApiError::bad_request(
            "command[0] is empty: name a program to run",
        )),
        _ if command.iter().any(|arg| arg.contains('\0')) => {
            Err(ApiError::bad_request("command contains a NUL byte"))
        }
        _ => Ok(()),
    }
}

async fn run(state: AppState, wanted: TargetRef, body: Body) -> Result<Json<RunResult>, ApiError> {
    let body = body.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let body: RunBody = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("invalid run request: {err}")))?;
    validate_command(&body.command)?;
    let timeout = body.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(timeout > 0.0 && timeout <= MAX_TIMEOUT_SECS) {
        return Err(ApiError::bad_request(format!(
            "timeoutSeconds must be more than 0 and at most {MAX_TIMEOUT_SECS}"
        )));
    }
    let output_bytes = body.output_limit_bytes.unwrap_or(DEFAULT_OUTPUT_BYTES);
    if output_bytes > MAX_OUTPUT_BYTES {
        return Err(ApiError::bad_request(format!(
            "outputLimitBytes must be at most {MAX_OUTPUT_BYTES}"
        )));
    }
    let namespaces = match &body.namespaces {
        Some(list) => parse_namespaces(&list.join(",")).map_err(ApiError::bad_request)?,
        None => None,
    };
    if body
        .env
        .keys()
        .any(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        || body.env.values().any(|v| v.contains('\0'))
    {
        return Err(ApiError::bad_request(
            "env names must be non-empty without '=' or NUL, values without NUL",
        ));
    }
    let stdin = match (&body.stdin, &body.stdin_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give stdin or stdinBase64, not both"));
        }
        (Some(text), None) => text.clone().into_bytes(),
        (None, Some(encoded)) => BASE64
            .decode(encoded)
            .map_err(|e| ApiError::bad_request(format!("stdinBase64 is not base64: {e}")))?,
        (None, None) => Vec::new(),
    };

    let permit = state.sessions.acquire()?;
    let target = state.resolver.resolve(&wanted).await?;
    let request = EnterRequest {
        pid: target.pid,
        start_time: target.process.start_time,
        container_id: target.container_id.clone(),
        namespaces,
        profile: body.profile.unwrap_or_default(),
        argv: body.command.clone(),
        env: body.env.into_iter().collect(),
        terminal: None,
    };
    let limits = RunLimits {
        timeout: std::time::Duration::from_secs_f64(timeout),
        output_bytes,
    };
    let outcome = session::run_once(&request, stdin, limits).await;
    drop(permit);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(err) => return failed_to_start(target, err),
    };
    let (stdout, stdout_encoding) = encode(&outcome.stdout);
    let (stderr, stderr_encoding) = encode(&outcome.stderr);
    Ok(Json(RunResult {
        target,
        exit_code: outcome.exit.map(|e| e.code()),
        signal: match outcome.exit {
            Some(crate::enter::Exit::Signal(signal)) => Some(signal),
            _ => None,
        },
        timed_out: outcome.exit.is_none(),
        error: None,
        stdout,
        stdout_encoding,
        stdout_truncated: outcome.stdout.truncated,
        stderr,
        stderr_encoding,
        stderr_truncated: outcome.stderr.truncated,
        duration_ms: outcome.duration.as_secs_f64() * 1000.0,
    }))
}

/// A command that never started: 127/126 like a shell when the program is
/// missing or not executable, else the error.
fn failed_to_start(
    target: Target,
    err: crate::enter::EnterError,
) -> Result<Json<RunResult>, ApiError> {
    let code = super::exit_code_for(&err)?;
    Ok(Json(RunResult {
        target,
        exit_code: Some(code),
        signal: None,
        timed_out: false,
        error: Some(err.to_string()),
        stdout: String::new(),
        stdout_encoding: "utf-8",
        stdout_truncated: false,
        stderr: String::new(),
        stderr_encoding: "utf-8",
        stderr_truncated: false,
        duration_ms: 0.0,
    }))
}

fn encode(captured: &Captured) -> (String, &'static str) {
    match std::str::from_utf8(&captured.bytes) {
        Ok(text) => (text.to_string(), "utf-8"),
        Err(_) => (BASE64.encode(&captured.bytes), "base64"),
    }
}
