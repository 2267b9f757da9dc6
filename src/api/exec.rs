//! `kubectl exec` against the agent: the Kubernetes remote-command protocol over
//! WebSocket, as the API server and kubelet speak it.
//!
//! Subprotocols `v5.channel.k8s.io`, `v4.channel.k8s.io`, `channel.k8s.io` and
//! their `base64.` text variants. Every frame starts with a channel: 0 stdin,
//! 1 stdout, 2 stderr, 3 error/status, 4 resize (`{"Width":..,"Height":..}`),
//! 255 close (v5: the client half-closes stdin). The first frame is an empty
//! one on the lowest output channel, which tells the client the stream is up;
//! the last is the status: `Success`, or `NonZeroExitCode` with an `ExitCode`
//! cause (v4 and v5; older protocols get the message only).
//!
//! The target is resolved before the upgrade, so a wrong pod or container is
//! an HTTP error with a `v1.Status`, never a 101 followed by a failure.

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade, close_code};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};

use super::admission::Right;
use super::{ApiError, AppState};
use crate::enter::{self, EnterError, EnterRequest, Exit, Profile, TerminalSize, parse_namespaces};
use crate::recording::Recording;
use crate::resolve::TargetRef;
use crate::session::interactive::{
    Channel, Clock, Closed, Ending, FromClient, Interactive, Streams, ToClient,
};
use nsdebug_wire::Status;
use nsdebug_wire::status::reason;

use nsdebug_wire::exec::{CLOSE, ERROR, RESIZE, STDERR, STDIN, STDOUT};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/namespaces/{namespace}/pods/{pod}/exec",
        get(exec).post(exec_post),
    )
}

/// The subprotocols served, most preferred first.
pub(super) const PROTOCOLS: &[&str] = nsdebug_wire::exec::PROTOCOLS;

/// The negotiated protocol's framing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Framing {
    /// Text frames with an ASCII channel digit and base64 data.
    pub(super) base64: bool,
    /// The status frame is a JSON `v1.Status` (v4, v5).
    structured_status: bool,
    /// The client may half-close stdin (v5).
    close_channel: bool,
}

impl Framing {
    pub(super) fn of(protocol: &str) -> Self {
        Self {
            base64: protocol.contains("base64"),
            structured_status: protocol.starts_with("v4.") || protocol.starts_with("v5."),
            close_channel: protocol.starts_with("v5."),
        }
    }

    pub(super) fn frame(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            text.push(char::from(b'0' + channel));
            BASE64.encode_string(data, &mut text);
            Message::Text(Utf8Bytes::from(text))
        } else {
            let mut bytes = Vec::with_capacity(1 + data.len());
            bytes.push(channel);
            bytes.extend_from_slice(data);
            Message::Binary(Bytes::from(bytes))
        }
    }

    /// A client frame as (channel, data); `None` for a malformed one.
    pub(super) fn parse(self, message: Message) -> Option<(u8, Vec<u8>)> {
        match message {
            Message::Binary(bytes) => {
                let (&channel, data) = bytes.split_first()?;
                Some((channel, data.to_vec()))
            }
            Message::Text(text) if self.base64 => {
                let (first, rest) = text.as_str().split_at_checked(1)?;
                let channel = first.parse::<u8>().ok()?;
                Some((channel, BASE64.decode(rest).ok()?))
            }
            _ => None,
        }
    }
}

/// The query of an exec request.
#[derive(Debug, Default)]
pub(super) struct ExecOptions {
    pub(super) command: Vec<String>,
    pub(super) container: Option<String>,
    pub(super) stdin: bool,
    pub(super) stdout: bool,
    pub(super) stderr: bool,
    pub(super) tty: bool,
    pub(super) namespaces: Option<enter::NamespaceSet>,
    pub(super) profile: Profile,
    pub(super) toolbox: bool,
}

fn flag(name: &str, value: &str) -> Result<bool, ApiError> {
    super::query::flag(name, Some(value), false)
}

impl ExecOptions {
    pub(super) fn parse(query: &str) -> Result<Self, ApiError> {
        let mut options = Self::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "command" => options.command.push(value.into_owned()),
                "container" => {
                    options.container = Some(value.into_owned()).filter(|c| !c.is_empty())
                }
                "stdin" | "input" => options.stdin = flag("stdin", &value)?,
                "stdout" | "output" => options.stdout = flag("stdout", &value)?,
                "stderr" | "error" => options.stderr = flag("stderr", &value)?,
                "tty" => options.tty = flag("tty", &value)?,
                "toolbox" => options.toolbox = flag("toolbox", &value)?,
                "namespaces" => {
                    options.namespaces = parse_namespaces(&value)
                        .map_err(|err| ApiError::bad_request(err.to_string()))?
                }
                "profile" => {
                    options.profile = Profile::parse(&value).map_err(ApiError::bad_request)?
                }
                _ => {}
            }
        }
        super::run::validate_command(&options.command)?;
        let view = super::choose_view(options.profile, options.toolbox, options.namespaces)?;
        options.namespaces = view.namespaces;
        options.toolbox = view.toolbox;
        // With a terminal, stderr is the terminal too; then at least one
        // stream must be left (the kubelet's order: `tty` with only `stderr`
        // asks for nothing).
        if options.tty {
            options.stderr = false;
        }
        if !(options.stdin || options.stdout || options.stderr) {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        Ok(options)
    }
}

/// The terminal size a resize frame (channel 4) asks for:
/// `{"Width":..,"Height":..}`, 80x24 for a missing or non-numeric field, at
/// most what a `winsize` holds (`ioctl_tty(2)` `TIOCSWINSZ`); `None` when
/// the frame is not a JSON object, which the session ignores (as the
/// kubelet does a frame it cannot decode).
pub(super) fn parse_resize(data: &[u8]) -> Option<TerminalSize> {
    nsdebug_wire::exec::Resize::parse(data).map(|size| TerminalSize {
        cols: size.width,
        rows: size.height,
    })
}

/// `POST` is how SPDY clients ask (kubectl falls back to it when a WebSocket
/// upgrade fails). Only WebSockets are served, but the request is checked the
/// same way first, so the user sees the real problem (a wrong container, say)
/// rather than a complaint about SPDY.
async fn exec_post(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<crate::auth::User>,
    info: super::RequestInfo,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiError {
    let options = match ExecOptions::parse(query.as_deref().unwrap_or("")) {
        Ok(options) => options,
        Err(err) => return err,
    };
    let privileged = options.profile == Profile::Privileged;
    let wanted = TargetRef::Pod {
        namespace,
        pod,
        container: options.container,
    };
    let admitted =
        super::admission::admit(&state, &user, &info, wanted, Right::Exec { privileged }).await;
    if let Err(err) = async { admitted?.resolve(&state).await }.await {
        return err;
    }
    ApiError::bad_request(
        "the nsdebug agent speaks the WebSocket remote-command protocols (v5/v4.channel.k8s.io), not SPDY; use kubectl 1.30 or newer",
    )
}

async fn exec(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<crate::auth::User>,
    info: super::RequestInfo,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let options = ExecOptions::parse(query.as_deref().unwrap_or(""))?;
    // An exec upgrade arriving as GET is still `create pods/exec`, as the API
    // server treats it; decided before the 101.
    let privileged = options.profile == Profile::Privileged;
    let wanted = TargetRef::Pod {
        namespace,
        pod,
        container: options.container.clone(),
    };
    let admission =
        super::admission::admit(&state, &user, &info, wanted, Right::Exec { privileged }).await?;
    let upgrade = upgrade.map_err(|err| {
        ApiError::bad_request(format!(
            "exec needs a WebSocket upgrade: {}",
            err.body_text()
        ))
    })?;
    let mut session = admission
        .start_session(
            &state,
            super::admission::SessionAsk {
                kind: "exec",
                profile: options.profile.as_str(),
                note: &|_| {},
            },
        )
        .await?;
    let request = super::admission::enter(
        &mut session,
        &state,
        &user,
        "exec",
        super::admission::Command {
            argv: options.command.clone(),
            env: Vec::new(),
            profile: options.profile,
            namespaces: options.namespaces,
            toolbox: options.toolbox,
            terminal: options.tty.then_some(TerminalSize { cols: 80, rows: 24 }),
        },
    );
    // Every interactive session, with a terminal or without: a shell on
    // pipes (`kubectl exec -i`) is as interactive as one on a tty.
    let recording = match &state.recording {
        Some(config) => {
            let size = request
                .terminal
                .unwrap_or(TerminalSize { cols: 80, rows: 24 });
            let id = session.id();
            match start_recording(config, &user, &session.target, &request, &id, size).await {
                Ok(recording) => {
                    session
                        .record()
                        .note("recording", recording.path().display());
                    Some(recording)
                }
                Err(err) => return Err(super::admission::refuse(session, err)),
            }
        }
        None => None,
    };
    // Started (`ResponseStarted`, the pod's Event) when the command runs.
    let (_target, mut trail) = session.into_trail(101);
    let session = Interactive {
        streams: Streams {
            stdin: options.stdin,
            stdout: options.stdout,
            stderr: options.stderr,
            tty: options.tty,
        },
        clock: Clock {
            max_duration: state.limits.max_session_duration,
            idle_timeout: state.limits.session_idle_timeout,
            client_timeout: state.limits.client_timeout,
            grace: state.shutdown_grace,
        },
        draining: state.draining.clone(),
        recording,
    };
    let upgrade = upgrade
        .protocols(PROTOCOLS.iter().copied())
        .max_message_size(state.limits.max_request_bytes)
        .max_frame_size(state.limits.max_request_bytes);
    let framing = Framing::of(
        upgrade
            .selected_protocol()
            .and_then(|p| p.to_str().ok())
            .unwrap_or("channel.k8s.io"),
    );
    let enter = state.enter.clone();
    Ok(upgrade.on_upgrade(move |socket| async move {
        let (to_client, from_client) = socket.split();
        let argv = request.argv.clone();
        let to_client = to_client.with_flat_map(move |said| {
            futures::stream::iter(render(framing, &argv, said).into_iter().map(Ok))
        });
        let from_client = from_client.map(move |message| parse_incoming(framing, message));
        session
            .run(
                enter.spawn(&request),
                Box::pin(to_client),
                from_client,
                &mut trail,
            )
            .await;
        drop(trail);
    }))
}

/// Starts the asciicast recording of a session; a configured recording
/// that cannot be written refuses the session (fail closed).
async fn start_recording(
    config: &crate::recording::RecordingConfig,
    user: &crate::auth::User,
    target: &crate::resolve::Target,
    request: &EnterRequest,
    audit_id: &str,
    size: TerminalSize,
) -> Result<Recording, ApiError> {
    let header = crate::recording::Header {
        cols: size.cols,
        rows: size.rows,
        command: shell_words(&request.argv),
        title: format!(
            "{} in {}/{}/{} ({})",
            user.name,
            target.namespace,
            target.pod,
            target.container,
            request.profile.as_str()
        ),
        name: format!(
            "{}-{}-{}-{}",
            target.namespace, target.pod, target.container, audit_id
        ),
    };
    let config = config.clone();
    tokio::task::spawn_blocking(move || config.start(&header))
        .await
        .map_err(|err| ApiError::internal(&err))?
        .map_err(|err| {
            tracing::error!(error = %err, "cannot start a session recording");
            ApiError::unavailable(format!(
                "sessions are recorded on this agent and the recording could not be started: {err}"
            ))
        })
}

/// `argv` as one line, quoted where needed, for the recording's header.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|word| {
            if !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The status frame of a finished command.
fn status_frame(
    framing: Framing,
    command: &[String],
    exit: Result<Exit, &EnterError>,
) -> Option<Message> {
    let status = match exit {
        Ok(exit) if exit.code() == 0 => {
            return framing
                .structured_status
                .then(|| framing.frame(ERROR, Status::success().in_stream().to_json().as_bytes()));
        }
        Ok(exit) => Status::non_zero_exit(
            exit.code(),
            format!(
                "command terminated with non-zero exit code: error executing command {command:?}, exit code {}",
                exit.code()
            ),
        ),
        Err(err) => match super::exit_code_for(err) {
            Ok(code) => Status::non_zero_exit(code, err.to_string()),
            // The answer any other route gives (409 for a refused target).
            Err(api) => api.status(),
        },
    };
    Some(failure_frame(framing, status))
}

/// The status frame of a failure: the Status (v4, v5) or its message.
fn failure_frame(framing: Framing, status: Status) -> Message {
    let body = if framing.structured_status {
        status.in_stream().to_json()
    } else {
        status.message
    };
    framing.frame(ERROR, body.as_bytes())
}

/// The channel number of a session's channel.
fn channel_number(channel: Channel) -> u8 {
    match channel {
        Channel::Stdout => STDOUT,
        Channel::Stderr => STDERR,
        Channel::Error => ERROR,
    }
}

/// What the session says, as remote-command messages.
fn render(framing: Framing, command: &[String], said: ToClient) -> Vec<Message> {
    let close = Message::Close(Some(CloseFrame {
        code: close_code::NORMAL,
        reason: Utf8Bytes::from_static(""),
    }));
    match said {
        ToClient::Ready(channel) => vec![framing.frame(channel_number(channel), &[])],
        ToClient::Output(channel, data) => vec![framing.frame(channel_number(channel), &data)],
        ToClient::Ping => vec![Message::Ping(Bytes::new())],
        ToClient::End(Ending::Command(result)) => {
            status_frame(framing, command, result.as_ref().map(|exit| *exit))
                .into_iter()
                .chain([close])
                .collect()
        }
        ToClient::End(Ending::Closed { why, cause }) => {
            let reason = match cause {
                Closed::Recording => reason::FORBIDDEN,
                Closed::Clock => reason::TIMEOUT,
            };
            vec![failure_frame(framing, Status::failure(why, reason)), close]
        }
        ToClient::End(Ending::ProtocolError(why)) => vec![Message::Close(Some(CloseFrame {
            code: close_code::PROTOCOL,
            reason: Utf8Bytes::from_static(why),
        }))],
    }
}

/// A client message, as the session understands it.
fn parse_incoming(framing: Framing, message: Result<Message, axum::Error>) -> FromClient {
    match message {
        Ok(message @ (Message::Binary(_) | Message::Text(_))) => match framing.parse(message) {
            None => FromClient::Malformed("malformed frame: no channel"),
            Some((STDIN, data)) => FromClient::Stdin(data.into()),
            Some((RESIZE, data)) => {
                parse_resize(&data).map_or(FromClient::Alive, FromClient::Resize)
            }
            Some((CLOSE, data)) if framing.close_channel && data.first() == Some(&STDIN) => {
                FromClient::CloseStdin
            }
            Some(_) => FromClient::Alive,
        },
        Ok(Message::Ping(_) | Message::Pong(_)) => FromClient::Alive,
        Ok(Message::Close(_)) | Err(_) => FromClient::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_frames_set_the_size_they_name() {
        let size = parse_resize(br#"{"Width":132,"Height":43}"#).unwrap();
        assert_eq!((size.cols, size.rows), (132, 43));
        let size = parse_resize(br#"{"Width":100000,"Height":-1}"#).unwrap();
        assert_eq!((size.cols, size.rows), (u16::MAX, 24));
        assert!(parse_resize(b"{").is_none());
    }

    /// Found writing the `resize` fuzz target's properties: `5`, `null` or
    /// `[]` are JSON, and reset the terminal to 80x24 instead of being ignored.
    #[test]
    fn a_resize_frame_that_is_not_an_object_changes_nothing() {
        for frame in [&b"5"[..], b"null", b"[]", br#""Width""#, b"true"] {
            assert!(
                parse_resize(frame).is_none(),
                "{:?}",
                String::from_utf8_lossy(frame)
            );
        }
    }

    /// Issue 15: the status frame of a command refused for its target (a
    /// 409 on every other route) said `InternalError`.
    #[test]
    fn a_refused_command_s_status_frame_says_conflict() {
        let framing = Framing::of("v5.channel.k8s.io");
        let refused = EnterError::Failed {
            kind: crate::enter::protocol::FailureKind::Refused,
            message: "the container's profile cannot be applied".into(),
        };
        let Some(Message::Binary(frame)) = status_frame(framing, &["sh".into()], Err(&refused))
        else {
            panic!("no binary status frame");
        };
        assert_eq!(frame[0], ERROR);
        let status: serde_json::Value = serde_json::from_slice(&frame[1..]).unwrap();
        assert_eq!(status["reason"], "Conflict", "{status}");
        assert_eq!(status["code"], 409, "{status}");
    }

    /// Found by the `exec_query` fuzz target: `tty` with only `stderr` was
    /// accepted (stderr checked before the terminal took it over), and the
    /// same request without `stderr` refused. The kubelet refuses both.
    #[test]
    fn a_terminal_with_only_stderr_is_no_stream() {
        for query in ["command=sh&tty=true&stderr=true", "command=sh&tty=true"] {
            let err = ExecOptions::parse(query).unwrap_err();
            assert!(
                err.message()
                    .contains("at least 1 of stdin, stdout, stderr"),
                "{query}"
            );
        }
        let options = ExecOptions::parse("command=sh&tty=true&stdout=true&stderr=true").unwrap();
        assert!(options.tty && options.stdout && !options.stderr);
    }
}
