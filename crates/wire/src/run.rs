//! `POST .../run`: what to run ([`RunRequest`]), the answer
//! ([`RunResult`]), and with `?stream=true` the NDJSON events of the run as
//! it happens ([`RunEvent`], one per line).
//!
//! The answers name the target the agent resolved; its shape is the agent's
//! (`Target`), so the types are generic over it and a client that does not
//! look at it reads it as JSON.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// Whose identity the command runs with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// What `kubectl exec` gives: what the container's runtime spec applies to
    /// an exec (uid, gid, supplementary groups, capability sets,
    /// no_new_privs, rlimits, seccomp filter, AppArmor/SELinux label), the
    /// environment and the cgroups of the container's process.
    #[default]
    Container,
    /// Root with every capability and no seccomp filter, LSM label or
    /// container rlimits, for strace, tcpdump and reading other processes'
    /// memory. Environment and cgroups are still the container's.
    Privileged,
}

impl Profile {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "" | "container" => Ok(Self::Container),
            "privileged" => Ok(Self::Privileged),
            other => Err(format!(
                "unknown profile '{other}'; choose container or privileged"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Privileged => "privileged",
        }
    }
}

/// `POST .../run`: what to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRequest {
    /// argv: never a shell string; run `["sh", "-c", "..."]` for a shell.
    pub command: Vec<String>,
    /// Text for the command's stdin (closed after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Binary stdin, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_base64: Option<String>,
    /// Variables added to the container's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Namespaces to enter (`["net"]`); default: all the container has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// Run the agent's own tools in the target's net, pid, ipc, uts and
    /// cgroup namespaces, with the container's files at `/target`.
    #[serde(default)]
    pub toolbox: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_limit_bytes: Option<usize>,
}

/// How captured output is written in a [`RunResult`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Encoding {
    /// The bytes were UTF-8: the text itself.
    #[serde(rename = "utf-8")]
    Utf8,
    /// Anything else: base64.
    #[serde(rename = "base64")]
    Base64,
}

impl Encoding {
    /// The bytes a captured output written in this encoding stands for.
    pub fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Self::Utf8 => Some(text.as_bytes().to_vec()),
            Self::Base64 => BASE64.decode(text).ok(),
        }
    }
}

/// The answer of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RunResult<T = serde_json::Value> {
    pub target: T,
    /// The exit code; 128 + signal when killed; `null` on a timeout.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Why the command could not start (then `exitCode` is 127 or 126).
    pub error: Option<String>,
    pub stdout: String,
    /// `utf-8`, or `base64` when the output is not valid UTF-8.
    pub stdout_encoding: Encoding,
    pub stdout_truncated: bool,
    pub stderr: String,
    pub stderr_encoding: Encoding,
    pub stderr_truncated: bool,
    pub duration_ms: f64,
}

/// A piece of output: text when it is UTF-8, else base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Chunk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

impl Chunk {
    /// `bytes` as they go on the wire.
    pub fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self {
                data: Some(text.to_owned()),
                data_base64: None,
            },
            Err(_) => Self {
                data: None,
                data_base64: Some(BASE64.encode(bytes)),
            },
        }
    }

    /// The bytes sent (nothing for a chunk that holds neither field or bad
    /// base64).
    pub fn bytes(&self) -> Vec<u8> {
        match (&self.data, &self.data_base64) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(encoded)) => BASE64.decode(encoded).unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// One line of a streamed run (`?stream=true`, `application/x-ndjson`):
/// `started`, then `stdout`/`stderr` chunks as they come, then `exit` (or
/// `error` if the command could not start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RunEvent<T = serde_json::Value> {
    /// The target is resolved and the command started.
    Started {
        target: T,
    },
    Stdout(Chunk),
    Stderr(Chunk),
    /// How the command ended.
    #[serde(rename_all = "camelCase")]
    Exit {
        /// The exit code; 128 + signal when killed; `null` on a timeout.
        exit_code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
        duration_ms: f64,
    },
    /// The command could not start: 127/126 as a shell says.
    #[serde(rename_all = "camelCase")]
    Error {
        exit_code: i32,
        message: String,
    },
}

impl<T: Serialize> RunEvent<T> {
    /// The event as one NDJSON line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_the_lines_the_agent_has_always_sent() {
        let line = |event: RunEvent| {
            serde_json::from_slice::<serde_json::Value>(&event.to_line()).unwrap()
        };
        assert_eq!(
            line(RunEvent::Started {
                target: json!({"pod": "web"})
            }),
            json!({"type": "started", "target": {"pod": "web"}})
        );
        assert_eq!(
            line(RunEvent::Stdout(Chunk::of(b"hi\n"))),
            json!({"type": "stdout", "data": "hi\n"})
        );
        assert_eq!(
            line(RunEvent::Stderr(Chunk::of(&[0xff, 0]))),
            json!({"type": "stderr", "dataBase64": "/wA="})
        );
        assert_eq!(
            line(RunEvent::Exit {
                exit_code: None,
                signal: None,
                timed_out: true,
                duration_ms: 1.5
            }),
            json!({"type": "exit", "exitCode": null, "signal": null, "timedOut": true, "durationMs": 1.5})
        );
        assert_eq!(
            line(RunEvent::Error {
                exit_code: 127,
                message: "no sh".into()
            }),
            json!({"type": "error", "exitCode": 127, "message": "no sh"})
        );
    }

    #[test]
    fn chunks_round_trip() {
        for bytes in [&b"text"[..], &[0xff, 0xfe, 0][..], &[][..]] {
            let event: RunEvent = serde_json::from_slice(
                &RunEvent::<serde_json::Value>::Stdout(Chunk::of(bytes)).to_line(),
            )
            .unwrap();
            let RunEvent::Stdout(chunk) = event else {
                panic!("{event:?}")
            };
            assert_eq!(chunk.bytes(), bytes);
        }
    }

    #[test]
    fn a_request_refuses_unknown_fields_and_writes_only_what_is_set() {
        assert!(
            serde_json::from_value::<RunRequest>(json!({"command": ["ls"], "cmd": 1})).is_err()
        );
        let request = RunRequest {
            command: vec!["ls".into()],
            profile: Some(Profile::Privileged),
            toolbox: true,
            timeout_seconds: Some(10.0),
            ..RunRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"command": ["ls"], "profile": "privileged", "toolbox": true, "timeoutSeconds": 10.0})
        );
    }
}
