//! The conversation between the agent and an enter helper over a
//! `SOCK_SEQPACKET` socket pair: one JSON message per packet, file descriptors
//! as `SCM_RIGHTS` (`unix(7)`). The agent sends one [`super::EnterRequest`]
//! with the command's stdio; the helper answers with [`HelperEvent`]s.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use serde::{Deserialize, Serialize};

/// The largest request the agent sends (a long argv and environment).
pub const MAX_REQUEST: usize = 1024 * 1024;

/// The largest event the helper sends (an error message).
pub const MAX_EVENT: usize = 64 * 1024;

/// At most this many descriptors travel with a message (stdin, stdout, stderr).
pub const MAX_FDS: usize = 3;

/// What the helper reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HelperEvent {
    /// The command runs; `pid` is its PID on the host.
    Started { pid: u32 },
    /// The command could not be started.
    Failed { kind: FailureKind, message: String },
    /// The command exited with `code`.
    Exited { code: i32 },
    /// The command was killed by `signal`.
    Signaled { signal: i32 },
}

/// Why a command could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureKind {
    /// The executable does not exist in the container (exit code 127, as a shell says).
    NotFound,
    /// It exists but cannot be executed (exit code 126).
    NotExecutable,
    /// The target process is gone or is no longer the container's.
    TargetGone,
    /// Entering the container failed (setns, cgroups, credentials).
    Setup,
    /// The `container` profile cannot reproduce the container's confinement
    /// (its seccomp filter, say); the message says why.
    Refused,
}

/// Sends one message with `fds` attached.
pub fn send(socket: BorrowedFd<'_>, message: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other(
            "too many descriptors for one message",
        ));
    }
    let sent = sendmsg(
        socket,
        &[IoSlice::new(message)],
        &mut control,
        SendFlags::empty(),
    )?;
    if sent != message.len() {
        return Err(std::io::Error::other("message truncated by the socket"));
    }
    Ok(())
}

/// Receives one message of at most `max` bytes (empty at end of stream) and the
/// descriptors that came with it, which are close-on-exec.
pub fn recv(socket: BorrowedFd<'_>, max: usize) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buffer = vec![0u8; max];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut buffer)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    buffer.truncate(received.bytes);
    Ok((buffer, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn message_and_descriptors_cross_a_socket_pair() {
        use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let (read_end, write_end) = rustix::pipe::pipe().unwrap();
        send(a.as_fd(), b"hello", &[write_end.as_fd()]).unwrap();
        let (message, mut fds) = recv(b.as_fd(), 64).unwrap();
        assert_eq!(message, b"hello");
        assert_eq!(fds.len(), 1);
        rustix::io::write(fds.remove(0), b"via fd").unwrap();
        let mut buf = [0u8; 6];
        rustix::io::read(&read_end, &mut buf).unwrap();
        assert_eq!(&buf, b"via fd");
        drop(a);
        assert_eq!(recv(b.as_fd(), 64).unwrap().0.len(), 0, "end of stream");
    }

    #[test]
    fn events_are_json() {
        let event = HelperEvent::Failed {
            kind: FailureKind::NotFound,
            message: "x".into(),
        };
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(text, r#"{"failed":{"kind":"notFound","message":"x"}}"#);
    }
}
