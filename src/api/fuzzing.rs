//! The API's parsers of untrusted input, reachable from the fuzz targets in
//! `fuzz/` (feature `fuzzing`, never in the agent). Each function is a thin
//! wrapper that takes what arrives from the network and calls the real parser;
//! what it returns is plain data, so a target can assert on it without this
//! module widening the API's own types. What is wire contract (the run
//! request, the exec subprotocols, the resize message and its parser) the
//! targets take from `nsdebug_wire` itself.

use axum::extract::Query;
use axum::extract::ws::{Message, Utf8Bytes};
use axum::http::Uri;
use bytes::Bytes;
use serde::de::DeserializeOwned;

pub use super::run::RunPlan;
pub use super::selector::{POD_FIELDS, Selector, SelectorError};
use nsdebug_wire::RunRequest;

/// A WebSocket data frame as it arrives: binary, or text (UTF-8 already checked
/// by the WebSocket layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Binary(Vec<u8>),
    Text(String),
}

impl Frame {
    fn into_message(self) -> Message {
        match self {
            Self::Binary(bytes) => Message::Binary(Bytes::from(bytes)),
            Self::Text(text) => Message::Text(Utf8Bytes::from(text)),
        }
    }

    fn from_message(message: Message) -> Self {
        match message {
            Message::Binary(bytes) => Self::Binary(bytes.to_vec()),
            Message::Text(text) => Self::Text(text.as_str().to_owned()),
            other => panic!("the framing only writes data frames, not {other:?}"),
        }
    }
}

/// Whether `protocol` frames its data as base64 text.
pub fn exec_protocol_is_base64(protocol: &str) -> bool {
    super::exec::Framing::of(protocol).base64
}

/// A client's exec frame under `protocol`, as (channel, data).
pub fn exec_frame_parse(protocol: &str, frame: Frame) -> Option<(u8, Vec<u8>)> {
    super::exec::Framing::of(protocol).parse(frame.into_message())
}

/// The frame the agent sends on `channel` under `protocol`.
pub fn exec_frame_encode(protocol: &str, channel: u8, data: &[u8]) -> Frame {
    Frame::from_message(super::exec::Framing::of(protocol).frame(channel, data))
}

/// An exec request's query, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecQuery {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub namespaces: Option<Vec<String>>,
    pub profile: &'static str,
    pub toolbox: bool,
}

/// Parses an exec request's raw query string; `Err` is the 400's message.
pub fn exec_query(query: &str) -> Result<ExecQuery, String> {
    let options = super::exec::ExecOptions::parse(query).map_err(|e| e.message().to_owned())?;
    Ok(ExecQuery {
        command: options.command,
        container: options.container,
        stdin: options.stdin,
        stdout: options.stdout,
        stderr: options.stderr,
        tty: options.tty,
        namespaces: options
            .namespaces
            .map(|set| set.iter().map(|n| n.name().to_string()).collect()),
        profile: options.profile.as_str(),
        toolbox: options.toolbox,
    })
}

/// The namespaces toolbox mode joins, in joining order.
pub static TOOLBOX_NAMESPACES: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| {
        crate::enter::TOOLBOX_NAMESPACES
            .iter()
            .map(crate::enter::Namespace::name)
            .collect()
    });

/// A run request's body through deserialization and validation, as the run
/// handler takes it; `Err` is the 400's message.
pub fn run_body(body: &[u8]) -> Result<(RunRequest, RunPlan), String> {
    let body: RunRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let plan = RunPlan::check(&body).map_err(|e| e.message().to_owned())?;
    Ok((body, plan))
}

/// A query string as axum's `Query` extractor deserializes it; `None` when
/// it is not one an HTTP request could carry or does not deserialize.
fn query<T: DeserializeOwned>(raw: &str) -> Option<T> {
    let uri: Uri = format!("/?{raw}").parse().ok()?;
    Query::<T>::try_from_uri(&uri)
        .ok()
        .map(|Query(value)| value)
}

/// What a checked probe query asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAsk {
    /// The audit trail's address (`name A @server`, `host:port`, the URL).
    pub address: String,
    pub timeout: std::time::Duration,
}

/// The longest timeout a probe may ask for.
pub const PROBE_MAX_TIMEOUT: std::time::Duration = super::probe::MAX_TIMEOUT;

/// A `diag/{dns,tcp,http}` probe's query; `None` when the query does not
/// deserialize, `Some(Err)` for a 400.
pub fn probe_query(kind: &str, raw: &str) -> Option<Result<ProbeAsk, String>> {
    use super::probe::{DnsParams, HttpParams, TcpParams};
    let checked = match kind {
        "dns" => query::<DnsParams>(raw)?.probe(),
        "tcp" => query::<TcpParams>(raw)?.probe(),
        "http" => query::<HttpParams>(raw)?.probe(),
        other => panic!("no probe kind {other}"),
    };
    Some(
        checked
            .map(|(probe, timeout)| ProbeAsk {
                address: probe.address(),
                timeout,
            })
            .map_err(|e| e.message().to_owned()),
    )
}

/// A `files` query's format (`raw` or `tar`) and mode; `None` when the query
/// does not deserialize, `Some(Err)` for a 400.
pub fn files_query(raw: &str) -> Option<Result<(&'static str, Option<u32>), String>> {
    let q = query::<super::files::FilesQuery>(raw)?;
    let checked = q.format().and_then(|format| Ok((format, q.mode()?)));
    Some(
        checked
            .map(|(format, mode)| {
                let format = match format {
                    crate::files::Format::Raw => "raw",
                    crate::files::Format::Tar => "tar",
                };
                (format, mode)
            })
            .map_err(|e| e.message().to_owned()),
    )
}

/// A `diag/{view}` request: whether the view needs the exec right, and whether
/// its query deserializes.
pub fn diag_query(view: &str, raw: &str) -> Result<(bool, bool), String> {
    let exec = super::diag::needs_exec(view).map_err(|e| e.message().to_owned())?;
    Ok((exec, query::<super::diag::DiagQuery>(raw).is_some()))
}
