//! The Kubernetes remote-command protocol over WebSocket, as the agent
//! serves it on `/api/v1/namespaces/{ns}/pods/{pod}/exec`: every frame
//! starts with a channel number, and the subprotocol says how the rest is
//! written (binary, or base64 text with an ASCII channel digit).

use serde::{Deserialize, Serialize};

/// The client's input.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// The error/status channel: the last frame, a [`crate::Status`] (v4, v5) or
/// a plain message (older protocols).
pub const ERROR: u8 = 3;
/// A [`Resize`] message.
pub const RESIZE: u8 = 4;
/// v5: the client half-closes a stream (`[255, 0]` closes stdin).
pub const CLOSE: u8 = 255;

/// The subprotocols the agent serves, most preferred first.
pub const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// The resize message on channel 4, as client-go's `TerminalSize` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resize {
    pub width: u16,
    pub height: u16,
}

impl Resize {
    /// The terminal size a resize frame asks for: 80x24 for a missing or
    /// non-numeric field, a number beyond what a `winsize` holds clamped to
    /// the largest; `None` when the frame is not a JSON object, which the
    /// session ignores (as the kubelet does a frame it cannot decode).
    pub fn parse(data: &[u8]) -> Option<Self> {
        let size = serde_json::from_slice::<serde_json::Value>(data).ok()?;
        if !size.is_object() {
            return None;
        }
        let dimension = |name: &str, default: u16| {
            size[name]
                .as_u64()
                .map_or(default, |n| n.min(u64::from(u16::MAX)) as u16)
        };
        Some(Self {
            width: dimension("Width", 80),
            height: dimension("Height", 24),
        })
    }

    /// The frame's data.
    pub fn to_json(self) -> String {
        serde_json::to_string(&self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_round_trip_and_clamp() {
        let size = Resize {
            width: 132,
            height: 43,
        };
        assert_eq!(size.to_json(), r#"{"Width":132,"Height":43}"#);
        assert_eq!(Resize::parse(size.to_json().as_bytes()), Some(size));
        assert_eq!(
            Resize::parse(br#"{"Width":100000,"Height":-1}"#),
            Some(Resize {
                width: u16::MAX,
                height: 24
            })
        );
        assert_eq!(Resize::parse(b"{"), None);
        assert_eq!(Resize::parse(b"[1,2]"), None);
    }
}
