//! The one-shot run API for runbooks: run an argv inside a container, get JSON
//! back with the exit code, the output (capped) and how long it took.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::StreamExt;
use nsdebug_wire::run::{Chunk, Encoding, RunEvent};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::enter::Exit;
use crate::enter::{EnterRequest, Profile, parse_namespaces};
use crate::resolve::{Target, TargetRef};
use crate::session::{
    self, Captured, Outcome, OutputReservation, RunLimits, SessionTrail, StreamEvent,
};

/// Default and largest run time.
const DEFAULT_TIMEOUT_SECS: f64 = 30.0;
const MAX_TIMEOUT_SECS: f64 = 3600.0;
/// Default and largest output kept per stream.
const DEFAULT_OUTPUT_BYTES: usize = 1024 * 1024;
const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/targets/{namespace}/{pod}/run", post(run_in_target))
        .route("/v1/containers/{id}/run", post(run_in_target))
}

/// `POST .../run`: what to run (the wire contract's run request).
pub use nsdebug_wire::RunRequest as RunBody;

/// A [`RunBody`] checked before anything is resolved or started.
#[derive(Debug, PartialEq)]
pub struct RunPlan {
    pub timeout: std::time::Duration,
    /// Output kept per stream.
    pub output_bytes: usize,
    /// Namespaces to join, `None` for all the container has.
    pub namespaces: Option<crate::enter::NamespaceSet>,
    /// Run the agent's tool tree (toolbox mode, and every privileged run).
    pub toolbox: bool,
    pub stdin: Vec<u8>,
}

impl RunPlan {
    /// Validates everything the caller sent: the argv, the limits, the
    /// namespaces, the environment (names without `=` or NUL, values
    /// without NUL: `execve(2)` takes C strings) and stdin.
    pub fn check(body: &RunBody) -> Result<RunPlan, ApiError> {
        validate_command(&body.command)?;
        let timeout = body.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECS);
        // Checked as a `Duration` too: a positive float below a nanosecond
        // rounds to a zero timeout.
        if !(timeout > 0.0 && timeout <= MAX_TIMEOUT_SECS)
            || std::time::Duration::from_secs_f64(timeout).is_zero()
        {
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
            Some(list) => parse_namespaces(&list.join(","))
                .map_err(|err| ApiError::bad_request(err.to_string()))?,
            None => None,
        };
        let view = super::choose_view(body.profile.unwrap_or_default(), body.toolbox, namespaces)?;
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
        if let Some((name, value)) = body
            .env
            .iter()
            .find(|(name, value)| name.len() + 1 + value.len() > MAX_ARG_BYTES)
        {
            return Err(ApiError::bad_request(format!(
                "env {name} is {} bytes; Linux takes at most {MAX_ARG_BYTES} bytes in one variable",
                name.len() + 1 + value.len()
            )));
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
        Ok(RunPlan {
            timeout: std::time::Duration::from_secs_f64(timeout),
            output_bytes,
            namespaces: view.namespaces,
            toolbox: view.toolbox,
            stdin,
        })
    }
}

/// The answer of a run (the wire contract's, naming the resolved target).
pub type RunResult = nsdebug_wire::RunResult<Target>;

#[derive(Debug, Default, Deserialize)]
struct ContainerQuery {
    /// Read by [`Wanted`](super::target::Wanted); named here so every other
    /// name stays checked.
    #[serde(rename = "container")]
    _container: Option<String>,
    /// Stream NDJSON events as the command runs instead of one JSON answer.
    #[serde(default)]
    stream: super::query::Flag,
}

/// The JSON body, whatever Content-Type says (`curl -d` sends a form type).
type Body = Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>;

type QueryResult = super::QueryOf<ContainerQuery>;
use super::query;
use super::target::Wanted;

/// `POST /v1/targets/{namespace}/{pod}/run` and `/v1/containers/{id}/run`.
async fn run_in_target(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<crate::auth::User>,
    info: super::RequestInfo,
    Wanted(wanted): Wanted,
    q: QueryResult,
    body: Body,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    run(state, user, info, wanted, q.stream.0, body).await
}

/// Longest single argument Linux takes (`MAX_ARG_STRLEN`, with its NUL).
const MAX_ARG_BYTES: usize = 128 * 1024 - 1;
/// Largest whole command line taken (arguments, their NULs and pointers):
/// well inside `ARG_MAX` and the helper's request.
const MAX_COMMAND_BYTES: usize = 512 * 1024;

/// Validates a caller's argv: a program, no NUL byte anywhere, and a size
/// `execve` takes.
pub fn validate_command(command: &[String]) -> Result<(), ApiError> {
    if let Some((index, arg)) = command
        .iter()
        .enumerate()
        .find(|(_, arg)| arg.len() > MAX_ARG_BYTES)
    {
        return Err(ApiError::bad_request(format!(
            "command[{index}] is {} bytes; Linux takes at most {MAX_ARG_BYTES} bytes in one argument",
            arg.len()
        )));
    }
    let total: usize = command.iter().map(|arg| arg.len() + 1 + 8).sum();
    if total > MAX_COMMAND_BYTES {
        return Err(ApiError::bad_request(format!(
            "the command line is {total} bytes in {} arguments (counting their terminators and pointers); the agent takes at most {MAX_COMMAND_BYTES}",
            command.len()
        )));
    }
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

async fn run(
    state: AppState,
    user: crate::auth::User,
    info: super::RequestInfo,
    wanted: TargetRef,
    stream: bool,
    body: Body,
) -> Result<Response, ApiError> {
    let body = body.map_err(|err| {
        if err.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "the request body is larger than this agent's limit of {} bytes (--max-request-bytes)",
                state.limits.max_request_bytes
            ))
        } else {
            ApiError::bad_request(err.body_text())
        }
    })?;
    let body: RunBody = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("invalid run request: {err}")))?;
    let RunPlan {
        timeout,
        output_bytes,
        namespaces,
        toolbox,
        stdin,
    } = RunPlan::check(&body)?;

    let profile = body.profile.unwrap_or_default();
    let mut session = super::admission::admit(
        &state,
        &user,
        &info,
        wanted,
        super::admission::Right::Exec {
            privileged: profile == Profile::Privileged,
        },
    )
    .await?
    .start_session(
        &state,
        super::admission::SessionAsk {
            kind: "run",
            profile: profile.as_str(),
            note: &|_| {},
        },
    )
    .await?;
    let request = super::admission::enter(
        &mut session,
        &state,
        &user,
        "run",
        super::admission::Command {
            argv: body.command.clone(),
            env: body.env.into_iter().collect(),
            profile,
            namespaces,
            toolbox,
            terminal: None,
        },
    );
    if stream {
        let (target, mut trail) = session.start(200);
        trail.bytes_in = stdin.len() as u64;
        return streamed(&state.enter, target, &request, stdin, timeout, trail).await;
    }
    // The output is buffered whole: its room is taken from the agent's
    // budget first, or the run is refused before it starts.
    let reservation = match state.output_budget.reserve(output_bytes) {
        Ok(reservation) => reservation,
        Err(err) => return Err(super::admission::refuse(session, ApiError::from(err))),
    };
    let (target, mut trail) = session.start(200);
    trail.bytes_in = stdin.len() as u64;
    let limits = RunLimits {
        timeout,
        output_bytes,
    };
    let outcome = session::run_once(&state.enter, &request, stdin, limits).await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(err) => {
            trail.note("error", &err);
            trail.outcome = Outcome::of_start_failure(&err);
            let answer = failed_to_start(target, err);
            if let Err(err) = &answer {
                trail.failed(err.code().as_u16(), err.message());
            }
            return answer.map(IntoResponse::into_response);
        }
    };
    let (stdout_bytes, stderr_bytes) = (outcome.stdout.bytes.len(), outcome.stderr.bytes.len());
    trail.bytes_out = (stdout_bytes + stderr_bytes) as u64;
    trail.outcome = outcome
        .exit
        .map_or(Outcome::TimedOut, |e| Outcome::Exited(e.code()));
    trail
        .note("stdout-bytes", stdout_bytes)
        .note("stderr-bytes", stderr_bytes);
    // The trail ends (`ResponseComplete`) and the slot is given back before
    // the answer is rendered.
    drop(trail);
    let (stdout_truncated, stderr_truncated) = (outcome.stdout.truncated, outcome.stderr.truncated);
    // Each capture is given up as it is encoded, and the answer is
    // rendered before the reservation goes back.
    let (stdout, stdout_encoding) = encode(outcome.stdout);
    let (stderr, stderr_encoding) = encode(outcome.stderr);
    let answer = RunResult {
        target,
        exit_code: outcome.exit.map(|e| e.code()),
        signal: outcome.exit.and_then(Exit::signal),
        timed_out: outcome.exit.is_none(),
        error: None,
        stdout,
        stdout_encoding,
        stdout_truncated,
        stderr,
        stderr_encoding,
        stderr_truncated,
        duration_ms: outcome.duration.as_secs_f64() * 1000.0,
    };
    let json = serde_json::to_vec(&answer).map_err(|err| ApiError::internal(&err))?;
    drop(answer);
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/json".to_string(),
            ),
            (axum::http::header::CONTENT_LENGTH, json.len().to_string()),
        ],
        reserved_body(json, reservation),
    )
        .into_response())
}

/// Pieces a rendered answer is written in.
const ANSWER_CHUNK: usize = 256 * 1024;

/// A rendered answer as a body that holds its share of the output budget
/// until the client has taken it all (or gone).
fn reserved_body(json: Vec<u8>, reservation: OutputReservation) -> axum::body::Body {
    let json = Bytes::from(json);
    let pieces = (0..json.len()).step_by(ANSWER_CHUNK).map(move |at| {
        Ok::<_, std::convert::Infallible>(json.slice(at..json.len().min(at + ANSWER_CHUNK)))
    });
    axum::body::Body::from_stream(futures::stream::iter(pieces).map(move |piece| {
        let _held = &reservation;
        piece
    }))
}

/// One line of a streamed run (`?stream=true`, `application/x-ndjson`).
fn event_line(event: RunEvent<Target>) -> Result<Bytes, std::convert::Infallible> {
    Ok(Bytes::from(event.to_line()))
}

/// A streamed run: `started`, then `stdout`/`stderr` chunks as they come, then
/// `exit` (or `error` if the command could not start). The audit trail ends
/// with the stream: at the exit, or when the client hangs up early.
async fn streamed(
    enter: &crate::enter::Enter,
    target: Target,
    request: &EnterRequest,
    stdin: Vec<u8>,
    timeout: std::time::Duration,
    mut trail: SessionTrail,
) -> Result<Response, ApiError> {
    let started = RunEvent::Started { target };
    let events: futures::stream::BoxStream<'static, Result<Bytes, std::convert::Infallible>> =
        match session::run_streaming(enter, request, stdin, timeout).await {
            Ok(rx) => {
                let body = tokio_stream_from(rx).map(move |event| {
                    // The trail and its slot (whole, not just the fields
                    // written here) live as long as the stream.
                    let trail = &mut trail;
                    event_line(match event {
                        StreamEvent::Stdout(data) => {
                            trail.bytes_out += data.len() as u64;
                            RunEvent::Stdout(Chunk::of(&data))
                        }
                        StreamEvent::Stderr(data) => {
                            trail.bytes_out += data.len() as u64;
                            RunEvent::Stderr(Chunk::of(&data))
                        }
                        StreamEvent::Exit { exit, duration } => {
                            trail.outcome =
                                exit.map_or(Outcome::TimedOut, |e| Outcome::Exited(e.code()));
                            RunEvent::Exit {
                                exit_code: exit.map(|e| e.code()),
                                signal: exit.and_then(Exit::signal),
                                timed_out: exit.is_none(),
                                duration_ms: duration.as_secs_f64() * 1000.0,
                            }
                        }
                    })
                });
                futures::stream::once(async move { event_line(started) })
                    .chain(body)
                    .boxed()
            }
            Err(err) => {
                trail.outcome = Outcome::of_start_failure(&err);
                let code = match super::exit_code_for(&err) {
                    Ok(code) => code,
                    Err(err) => {
                        trail.failed(err.code().as_u16(), err.message());
                        return Err(err);
                    }
                };
                let error = RunEvent::Error {
                    exit_code: code,
                    message: err.to_string(),
                };
                futures::stream::iter([event_line(started), event_line(error)]).boxed()
            }
        };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(events),
    )
        .into_response())
}

/// The receiver as a stream of events.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<StreamEvent>,
) -> impl futures::Stream<Item = StreamEvent> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
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
        stdout_encoding: Encoding::Utf8,
        stdout_truncated: false,
        stderr: String::new(),
        stderr_encoding: Encoding::Utf8,
        stderr_truncated: false,
        duration_ms: 0.0,
    }))
}

/// Output as it goes in the JSON answer: text when it is UTF-8 that JSON
/// escaping at most doubles, else base64 (a third larger), so the answer
/// never holds more than twice the output (NUL bytes, escaped as `\u0000`,
/// would make it six times).
fn encode(captured: Captured) -> (String, Encoding) {
    let escaped: usize = captured
        .bytes
        .iter()
        .map(|&b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum();
    if escaped <= 2 * captured.bytes.len() {
        match String::from_utf8(captured.bytes) {
            Ok(text) => return (text, Encoding::Utf8),
            Err(err) => return (BASE64.encode(err.as_bytes()), Encoding::Base64),
        }
    }
    (BASE64.encode(&captured.bytes), Encoding::Base64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str) -> Result<RunPlan, ApiError> {
        RunPlan::check(&serde_json::from_str::<RunBody>(body).unwrap())
    }

    #[test]
    fn a_valid_body_is_planned() {
        let plan =
            check(r#"{"command":["cat"],"timeoutSeconds":2.5,"stdinBase64":"aGk="}"#).unwrap();
        assert_eq!(plan.timeout, std::time::Duration::from_millis(2500));
        assert_eq!(plan.stdin, b"hi");
        assert_eq!(plan.output_bytes, DEFAULT_OUTPUT_BYTES);
    }

    /// Found by the `run_body` fuzz target: a timeout above 0 but below a
    /// nanosecond passed the check and became a zero `Duration`, which times
    /// the command out before it runs.
    #[test]
    fn a_timeout_that_rounds_to_nothing_is_refused() {
        for timeout in ["1e-10", "1e-300", "0", "-1", "3600.5"] {
            let body = format!(r#"{{"command":["true"],"timeoutSeconds":{timeout}}}"#);
            let err = check(&body).unwrap_err();
            assert!(
                err.message().contains("timeoutSeconds"),
                "{timeout}: {}",
                err.message()
            );
        }
        assert!(check(r#"{"command":["true"],"timeoutSeconds":1e-9}"#).is_ok());
    }

    #[test]
    fn nul_bytes_and_bad_env_names_are_refused() {
        for body in [
            r#"{"command":["a\u0000b"]}"#,
            r#"{"command":["env"],"env":{"A=B":"x"}}"#,
            r#"{"command":["env"],"env":{"":"x"}}"#,
            r#"{"command":["env"],"env":{"A":"x\u0000"}}"#,
        ] {
            assert!(check(body).is_err(), "{body}");
        }
    }
}
