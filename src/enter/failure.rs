//! What the helper reports when it cannot start the command: a
//! [`FailureKind`] for the agent (the HTTP status, the exit code) and a
//! message for the user. The setup steps fail with a [`SetupError`], one
//! variant per step with its context; its chain becomes the message, printed
//! once, where the helper reports it.

use std::io;
use std::path::PathBuf;

use super::Namespace;
use super::confine::ConfineError;
use super::protocol::FailureKind;
use super::session_cgroup::SessionCgroupError;
use super::toolbox::ToolboxError;
use crate::process::{CgroupError, ProcError, StatusFieldError};

/// A failure to report: what kind, and the message for the user.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// A step of entering the container that failed (a [`FailureKind::Setup`]).
/// The steps that wrap an error of a lower module that already says what
/// failed pass its message on unchanged (`transparent`).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("failed to make the helper non-dumpable")]
    NotDumpable(#[source] rustix::io::Errno),
    #[error("failed to mark inherited descriptors close-on-exec")]
    CloseOnExec(#[source] io::Error),
    #[error("failed to read the request")]
    ReadRequest(#[source] io::Error),
    #[error("malformed request")]
    MalformedRequest(#[source] serde_json::Error),
    #[error("request without a command or with the wrong stdio")]
    IncompleteRequest,
    #[error("failed to read {}", path.display())]
    ReadStatus {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}", path.display())]
    ParseStatus {
        path: PathBuf,
        #[source]
        source: StatusFieldError,
    },
    #[error(transparent)]
    ReadPodView(ToolboxError),
    #[error("failed to read {path}")]
    ReadEnviron {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to open {path}")]
    OpenCwd {
        path: String,
        #[source]
        source: rustix::io::Errno,
    },
    #[error(transparent)]
    Confine(ConfineError),
    #[error(transparent)]
    FindCgroups(CgroupError),
    #[error("failed to join the container's cgroup {}", procs.display())]
    JoinCgroup {
        procs: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    EnterSessionCgroup(SessionCgroupError),
    #[error(transparent)]
    ReadNamespaces(ProcError),
    #[error("setns into the container's namespaces failed")]
    Setns(#[source] rustix::io::Errno),
    #[error("failed to open {path}")]
    OpenNamespace {
        path: String,
        #[source]
        source: rustix::io::Errno,
    },
    #[error("setns into the container's {kind} namespace failed")]
    SetnsOne {
        kind: Namespace,
        #[source]
        source: rustix::io::Errno,
    },
    #[error("failed to set up the toolbox")]
    Toolbox(#[source] ToolboxError),
    #[error("failed to {what} a terminal in the container")]
    Terminal {
        what: &'static str,
        #[source]
        source: rustix::io::Errno,
    },
    #[error("dup of the terminal failed")]
    DupTerminal(#[source] io::Error),
    #[error("failed to create a pipe")]
    Pipe(#[source] rustix::io::Errno),
    #[error("failed to start \"{program}\"")]
    Start {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("encode")]
    EncodeStarted(#[source] serde_json::Error),
    #[error("failed to report to the agent")]
    Report(#[source] io::Error),
    #[error("child without a PID")]
    NoChildPid,
    #[error("pidfd_open of the command failed")]
    PidfdOpen(#[source] rustix::io::Errno),
    #[error(transparent)]
    LeaveSessionCgroup(SessionCgroupError),
    #[error("poll failed")]
    Poll(#[source] rustix::io::Errno),
    #[error("wait for the command failed")]
    Wait(#[source] io::Error),
    #[error(transparent)]
    EndSessionCgroup(SessionCgroupError),
}

impl From<SetupError> for Failure {
    fn from(err: SetupError) -> Self {
        Self::new(FailureKind::Setup, crate::error_chain(&err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages users saw when these were `format!` strings.
    #[test]
    fn messages_read_as_before() {
        let failure = Failure::from(SetupError::SetnsOne {
            kind: Namespace::Net,
            source: rustix::io::Errno::PERM,
        });
        assert_eq!(failure.kind, FailureKind::Setup);
        assert_eq!(
            failure.message,
            format!(
                "setns into the container's net namespace failed: {}",
                rustix::io::Errno::PERM
            )
        );
        let failure = Failure::from(SetupError::Terminal {
            what: "open",
            source: rustix::io::Errno::NOENT,
        });
        assert_eq!(
            failure.message,
            format!(
                "failed to open a terminal in the container: {}",
                rustix::io::Errno::NOENT
            )
        );
        assert_eq!(
            Failure::from(SetupError::IncompleteRequest).message,
            "request without a command or with the wrong stdio"
        );
    }
}
