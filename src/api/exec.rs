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

use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::admission::Right;
use super::{ApiError, AppState};
use crate::audit::SessionTrail;
use crate::enter::{
    self, EnterError, EnterRequest, Exit, Io, Profile, TerminalSize, parse_namespaces,
};
use crate::recording::Recording;
use crate::resolve::TargetRef;
use crate::session::read_or_stop;
use nsdebug_wire::Status;
use nsdebug_wire::status::reason;

/// How long output is still forwarded after the command exits, for what its
/// background children (which may keep stdout open) already wrote.
const DRAIN: Duration = Duration::from_millis(200);
/// Output read per frame.
const CHUNK: usize = 256 * 1024;

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
    pub(super) namespaces: Option<Vec<String>>,
    pub(super) profile: Profile,
    pub(super) toolbox: bool,
}

fn flag(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" | "True" => Ok(true),
        "false" | "0" | "False" | "" => Ok(false),
        other => Err(ApiError::bad_request(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
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
                    options.namespaces = parse_namespaces(&value).map_err(ApiError::bad_request)?
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
    let super::admission::ExecSession {
        mut record,
        permit,
        target,
    } = admission
        .start_session(
            &state,
            super::admission::SessionAsk {
                kind: "exec",
                profile: options.profile.as_str(),
                note: &|_| {},
                audit_refusals: false,
            },
        )
        .await?;
    let request = EnterRequest {
        pid: target.pid,
        start_time: target.process.start_time,
        container_id: target.container_id.clone(),
        namespaces: options.namespaces.clone(),
        profile: options.profile,
        argv: options.command.clone(),
        env: Vec::new(),
        terminal: options.tty.then_some(TerminalSize { cols: 80, rows: 24 }),
        runtime_spec: target.runtime_spec_for(options.profile),
        toolbox: options.toolbox.then(|| state.toolbox_root.to_path_buf()),
    };
    record.entering(&target, &request);
    // Every interactive session, with a terminal or without: a shell on
    // pipes (`kubectl exec -i`) is as interactive as one on a tty.
    let recording = match &state.recording {
        Some(config) => {
            let size = request
                .terminal
                .unwrap_or(TerminalSize { cols: 80, rows: 24 });
            let recording =
                start_recording(config, &user, &target, &request, record.id(), size).await?;
            record.note("recording", recording.path().display());
            Some(recording)
        }
        None => None,
    };
    let event = state.events.prepare(&crate::events::SessionStart::command(
        &user,
        &target,
        &request,
        "exec",
        record.id(),
    ));
    let context = SessionContext {
        trail: SessionTrail::new(record, state.audit.clone(), 101),
        draining: state.draining.clone(),
        grace: state.shutdown_grace,
        recording,
        event,
        limits: state.limits,
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
    Ok(upgrade.on_upgrade(move |socket| async move {
        session(socket, framing, request, options, context).await;
        drop(permit);
    }))
}

/// What a session carries besides its streams.
struct SessionContext {
    trail: SessionTrail,
    /// Cancelled on SIGTERM; the session then has `grace` left.
    draining: tokio_util::sync::CancellationToken,
    grace: Duration,
    recording: Option<Recording>,
    /// The pod's Event, sent once the command runs.
    event: Option<crate::events::PendingEvent>,
    limits: crate::config::Limits,
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

async fn finish(
    socket: &mut futures::stream::SplitSink<WebSocket, Message>,
    status: Option<Message>,
) {
    if let Some(status) = status {
        let _ = socket.send(status).await;
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: close_code::NORMAL,
            reason: Utf8Bytes::from_static(""),
        })))
        .await;
}

/// Copies `reader` to the client as `channel` frames until end of file;
/// each chunk is recorded first, and what cannot be recorded is not sent.
async fn pump(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    channel: u8,
    framing: Framing,
    out: mpsc::Sender<Message>,
    stop: CancellationToken,
    recording: Option<Recording>,
) {
    let mut budget = crate::session::after_stop_budget();
    if framing.base64 {
        let mut buf = vec![0u8; CHUNK];
        while let Some(n) = read_or_stop(reader.read(&mut buf), &stop, &mut budget).await {
            if !recorded(recording.as_ref(), channel, &buf[..n]).await {
                return;
            }
            if out.send(framing.frame(channel, &buf[..n])).await.is_err() {
                return;
            }
        }
        return;
    }
    // Binary frames are read in place behind their channel byte: no copy.
    loop {
        let mut frame = Vec::with_capacity(CHUNK + 1);
        frame.push(channel);
        if read_or_stop(reader.read_buf(&mut frame), &stop, &mut budget)
            .await
            .is_none()
        {
            return;
        }
        if !recorded(recording.as_ref(), channel, &frame[1..]).await {
            return;
        }
        if out.send(Message::Binary(Bytes::from(frame))).await.is_err() {
            return;
        }
    }
}

/// Records `data` of `channel`; false when it must not be forwarded.
async fn recorded(recording: Option<&Recording>, channel: u8, data: &[u8]) -> bool {
    match recording {
        None => true,
        Some(recording) if channel == STDERR => recording.error_output(data).await.is_ok(),
        Some(recording) => recording.output(data).await.is_ok(),
    }
}

/// Input for the command, in order.
enum Input {
    Data(Vec<u8>),
    Close,
}

async fn session(
    socket: WebSocket,
    framing: Framing,
    request: EnterRequest,
    options: ExecOptions,
    context: SessionContext,
) {
    let SessionContext {
        mut trail,
        draining,
        grace,
        recording,
        event,
        limits,
    } = context;
    let (mut ws_tx, mut ws_rx) = socket.split();
    // Never fires without a recording.
    let recording_ended = recording.as_ref().map(Recording::ended).unwrap_or_default();
    let mut entered = match enter::spawn(&request).await {
        Ok(entered) => entered,
        Err(err) => {
            // Say why where the user looks: kubectl prints only the exit code.
            let channel = if options.tty || !options.stderr {
                STDOUT
            } else {
                STDERR
            };
            if options.stdout || options.stderr || options.tty {
                let line = format!("nsdebug: {err}\r\n");
                let _ = ws_tx.send(framing.frame(channel, line.as_bytes())).await;
            }
            trail.outcome = match super::exit_code_for(&err) {
                Ok(code) => code.to_string(),
                Err(_) => format!("failed: {err}"),
            };
            let status = status_frame(framing, &request.argv, Err(&err));
            finish(&mut ws_tx, status).await;
            return;
        }
    };
    trail.started();
    if let Some(event) = event {
        event.send();
    }
    // The stream is up: an empty frame on the lowest channel the client reads.
    let first = if options.stdout || options.tty {
        STDOUT
    } else if options.stderr {
        STDERR
    } else {
        ERROR
    };
    if ws_tx.send(framing.frame(first, &[])).await.is_err() {
        return;
    }

    let (out_tx, mut out_rx) = mpsc::channel::<Message>(8);
    // Fired a drain after the command ends: output then stops once nothing
    // is ready right away (a background child may hold the pipes open).
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let (in_tx, mut in_rx) = mpsc::channel::<Input>(8);
    let mut pty = None;
    match entered.io.take() {
        Some(Io::Pipes {
            stdin,
            stdout,
            stderr,
        }) => {
            if options.stdout {
                tokio::spawn(pump(
                    stdout,
                    STDOUT,
                    framing,
                    out_tx.clone(),
                    stop.clone(),
                    recording.clone(),
                ));
            }
            if options.stderr {
                tokio::spawn(pump(
                    stderr,
                    STDERR,
                    framing,
                    out_tx.clone(),
                    stop.clone(),
                    recording.clone(),
                ));
            }
            let mut stdin = stdin.filter(|_| options.stdin);
            tokio::spawn(async move {
                while let Some(input) = in_rx.recv().await {
                    match (input, stdin.as_mut()) {
                        (Input::Data(data), Some(pipe)) => {
                            if pipe.write_all(&data).await.is_err() {
                                return;
                            }
                        }
                        // Dropping the pipe is the command's end of file.
                        (Input::Close, _) => stdin = None,
                        (Input::Data(_), None) => {}
                    }
                }
            });
        }
        Some(Io::Tty(terminal)) => {
            let reader = terminal.clone();
            let out = out_tx.clone();
            let recording = recording.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                let mut budget = crate::session::after_stop_budget();
                while let Some(n) = read_or_stop(reader.read(&mut buf), &stop, &mut budget).await {
                    // What cannot be recorded is not shown.
                    if let Some(recording) = &recording
                        && recording.output(&buf[..n]).await.is_err()
                    {
                        return;
                    }
                    if out.send(framing.frame(STDOUT, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            });
            let writer = terminal.clone();
            tokio::spawn(async move {
                while let Some(input) = in_rx.recv().await {
                    if let Input::Data(data) = input
                        && writer.write_all(&data).await.is_err()
                    {
                        return;
                    }
                }
            });
            pty = Some(terminal);
        }
        None => {}
    }
    drop(out_tx);

    let wait = entered.wait();
    tokio::pin!(wait);
    let mut exit: Option<Result<Exit, EnterError>> = None;
    let mut outputs_open = true;
    let drain = tokio::time::sleep(Duration::from_secs(86400));
    tokio::pin!(drain);
    // The session's clock: closed at the maximum duration, or when nothing
    // went either way for the idle timeout (checked when it could have run
    // out, not reset on every frame).
    let opened = tokio::time::Instant::now();
    let mut closes_at = opened + limits.max_session_duration;
    let mut active_at = opened;
    let mut shutting_down = false;
    let timer = tokio::time::sleep_until(closes_at.min(opened + limits.session_idle_timeout));
    tokio::pin!(timer);
    // A client that stops reading answers no ping: once nothing at all came
    // back for the client timeout, it is gone (its writes stalling are the
    // connection's deadline, `write_deadline`).
    let mut heard_at = opened;
    let mut keepalive = tokio::time::interval_at(
        opened + limits.client_timeout / 3,
        limits.client_timeout / 3,
    );
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // The record fails closed: a session whose recording ended
            // (its cap, a failed write) ends with it, and says why.
            () = recording_ended.cancelled() => {
                let stopped = recording
                    .as_ref()
                    .and_then(Recording::stopped)
                    .unwrap_or(crate::recording::RecordingStopped::WriteFailed);
                trail.outcome = stopped.outcome().into();
                let why = format!("{stopped}; the session is closed");
                if options.stdout || options.stderr || options.tty {
                    let channel = if options.tty || !options.stderr { STDOUT } else { STDERR };
                    let line = format!("\r\nnsdebug: {why}\r\n");
                    let _ = ws_tx.send(framing.frame(channel, line.as_bytes())).await;
                }
                let status = failure_frame(framing, Status::failure(why, reason::FORBIDDEN));
                finish(&mut ws_tx, Some(status)).await;
                return;
            },
            _ = keepalive.tick() => {
                if heard_at.elapsed() >= limits.client_timeout {
                    trail.outcome = "client unresponsive".into();
                    return;
                }
                if ws_tx.send(Message::Ping(Bytes::new())).await.is_err() { return }
            },
            // SIGTERM: say so now, and end before the agent does.
            () = draining.cancelled(), if !shutting_down => {
                shutting_down = true;
                let ends = tokio::time::Instant::now() + grace.saturating_sub(Duration::from_millis(500));
                closes_at = closes_at.min(ends);
                timer.as_mut().reset(closes_at);
                if options.stdout || options.stderr || options.tty {
                    let channel = if options.tty || !options.stderr { STDOUT } else { STDERR };
                    let line = format!(
                        "\r\nnsdebug: the agent is shutting down; this session ends within {}\r\n",
                        humantime::format_duration(grace)
                    );
                    let _ = ws_tx.send(framing.frame(channel, line.as_bytes())).await;
                }
            },
            () = &mut timer => {
                let now = tokio::time::Instant::now();
                let idle_until = active_at + limits.session_idle_timeout;
                let (why, outcome) = if shutting_down && now >= closes_at {
                    ("the agent is shutting down".to_string(), "agent shutdown")
                } else if now >= closes_at {
                    (format!("the session reached its maximum duration of {}", humantime::format_duration(limits.max_session_duration)), "max duration")
                } else if now >= idle_until {
                    (format!("the session was idle for {}", humantime::format_duration(limits.session_idle_timeout)), "idle timeout")
                } else {
                    timer.as_mut().reset(closes_at.min(idle_until));
                    continue;
                };
                trail.outcome = outcome.into();
                let channel = if options.tty || !options.stderr { STDOUT } else { STDERR };
                if options.stdout || options.stderr || options.tty {
                    let line = format!("\r\nnsdebug: {why}; closing it\r\n");
                    let _ = ws_tx.send(framing.frame(channel, line.as_bytes())).await;
                }
                let status = failure_frame(framing, Status::failure(why, reason::TIMEOUT));
                finish(&mut ws_tx, Some(status)).await;
                return;
            },
            frame = out_rx.recv(), if outputs_open => match frame {
                Some(frame) => {
                    active_at = tokio::time::Instant::now();
                    let size = match &frame {
                        Message::Binary(data) => data.len(),
                        Message::Text(text) => text.len(),
                        _ => 1,
                    };
                    trail.bytes_out += size.saturating_sub(1) as u64;
                    if ws_tx.send(frame).await.is_err() { return }
                }
                None => outputs_open = false,
            },
            incoming = ws_rx.next() => match incoming {
                Some(Ok(message @ (Message::Binary(_) | Message::Text(_)))) => {
                    heard_at = tokio::time::Instant::now();
                    let Some((channel, data)) = framing.parse(message) else {
                        let _ = ws_tx.send(Message::Close(Some(CloseFrame {
                            code: close_code::PROTOCOL,
                            reason: Utf8Bytes::from_static("malformed frame: no channel"),
                        }))).await;
                        return;
                    };
                    match channel {
                        STDIN => {
                            active_at = tokio::time::Instant::now();
                            trail.bytes_in += data.len() as u64;
                            if let Some(recording) = &recording
                                && recording.input(&data).await.is_err()
                            {
                                // Not passed on: the recording's end closes the session.
                                continue;
                            }
                            let _ = in_tx.send(Input::Data(data)).await;
                        }
                        RESIZE => if let Some(pty) = &pty
                            && let Some(size) = parse_resize(&data)
                        {
                            let _ = pty.resize(size.cols, size.rows);
                            if let Some(recording) = &recording {
                                let _ = recording.resize(size.cols, size.rows).await;
                            }
                        },
                        CLOSE if framing.close_channel && data.first() == Some(&STDIN) => {
                            let _ = in_tx.send(Input::Close).await;
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => heard_at = tokio::time::Instant::now(),
                // The client closed or vanished: dropping `entered` kills the command.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            },
            result = &mut wait, if exit.is_none() => {
                exit = Some(result);
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN);
            },
            _ = &mut drain, if exit.is_some() && !stop.is_cancelled() => stop.cancel(),
        }
        // A recording that ended first ends the session as such (above).
        if let Some(result) = &exit
            && !outputs_open
            && !recording_ended.is_cancelled()
        {
            trail.outcome = match result {
                Ok(exit) => exit.code().to_string(),
                Err(err) => format!("failed: {err}"),
            };
            let status = status_frame(framing, &request.argv, result.as_ref().map(|e| *e));
            finish(&mut ws_tx, status).await;
            return;
        }
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
