//! A session's audit trail, and how a session ended ([`Outcome`]).

use crate::audit::{AuditLog, AuditRecord};
use crate::enter::EnterError;
use crate::recording::RecordingStopped;

/// How a session ended, as its audit trail says (`exit-code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Until told otherwise: the client went away.
    ClientDisconnected,
    /// The command's exit code (128 + signal for a signal).
    Exited(i32),
    /// The command could not start or its session failed.
    Failed(String),
    /// A one-shot run's deadline passed and it was killed.
    TimedOut,
    IdleTimeout,
    MaxDuration,
    AgentShutdown,
    /// The client answered no ping for the client timeout.
    ClientUnresponsive,
    /// The record fails closed: the recording ended the session.
    Recording(RecordingStopped),
    /// A stream that ends for its own reason (a capture's).
    Stopped(String),
}

impl Outcome {
    /// A command that could not start: the shell's 127/126 when it is
    /// missing or not executable, else the failure.
    pub fn of_start_failure(err: &EnterError) -> Self {
        match super::shell_exit_code(err) {
            Some(code) => Self::Exited(code),
            None => Self::Failed(err.to_string()),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientDisconnected => f.write_str("client disconnected"),
            Self::Exited(code) => write!(f, "{code}"),
            Self::Failed(why) => write!(f, "failed: {why}"),
            Self::TimedOut => f.write_str("timeout"),
            Self::IdleTimeout => f.write_str("idle timeout"),
            Self::MaxDuration => f.write_str("max duration"),
            Self::AgentShutdown => f.write_str("agent shutdown"),
            Self::ClientUnresponsive => f.write_str("client unresponsive"),
            Self::Recording(stopped) => f.write_str(stopped.outcome()),
            Self::Stopped(why) => f.write_str(why),
        }
    }
}

/// The trail of one session: `ResponseStarted` once it runs, and
/// `ResponseComplete` (how it ended, bytes each way) when the trail is
/// dropped, however the session ends: exit, error, timeout or a client that
/// hung up mid-stream.
pub struct SessionTrail {
    pub record: AuditRecord,
    log: std::sync::Arc<AuditLog>,
    /// The HTTP code the session answered with (101 for an upgrade).
    code: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// How it ended; until told otherwise the client went away.
    pub outcome: Outcome,
    /// The pod's Event, sent once the command runs.
    event: Option<crate::events::PendingEvent>,
}

impl SessionTrail {
    pub fn new(record: AuditRecord, log: std::sync::Arc<AuditLog>, code: u16) -> Self {
        Self {
            record,
            log,
            code,
            bytes_in: 0,
            bytes_out: 0,
            outcome: Outcome::ClientDisconnected,
            event: None,
        }
    }

    /// Sends the pod's Event `event` once the session runs.
    pub fn announcing(mut self, event: Option<crate::events::PendingEvent>) -> Self {
        self.event = event;
        self
    }

    /// The session runs: audited, and its Event sent.
    pub fn started(&mut self) {
        self.log
            .record(&self.record.event("ResponseStarted", self.code));
        if let Some(event) = self.event.take() {
            event.send();
        }
    }
}

impl Drop for SessionTrail {
    fn drop(&mut self) {
        let (bytes_in, bytes_out, outcome) =
            (self.bytes_in, self.bytes_out, self.outcome.to_string());
        self.record
            .note("stdin-bytes", bytes_in)
            .note("output-bytes", bytes_out)
            .note("exit-code", outcome);
        self.log
            .record(&self.record.event("ResponseComplete", self.code));
    }
}

impl super::interactive::Trail for SessionTrail {
    fn started(&mut self) {
        SessionTrail::started(self);
    }
    fn bytes_in(&mut self, n: u64) {
        self.bytes_in += n;
    }
    fn bytes_out(&mut self, n: u64) {
        self.bytes_out += n;
    }
    fn ended(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}
