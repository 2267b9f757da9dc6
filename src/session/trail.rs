//! A session's audit trail, and how a session ended ([`Outcome`]).

use std::sync::Arc;

use super::SessionPermit;
use crate::audit::{AuditLog, AuditRecord};
use crate::enter::EnterError;
use crate::events::PendingEvent;
use crate::recording::RecordingStopped;
use crate::resolve::Target;

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
    /// Ended for a reason of its own: a capture's limit, a probe's result.
    Stopped(String),
    /// A transfer that moved every byte.
    Complete,
    /// A transfer cut short, and why.
    Aborted(String),
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
            Self::Complete => f.write_str("complete"),
            Self::Aborted(why) => write!(f, "aborted: {why}"),
        }
    }
}

/// A session that passed admission and holds its slot, before it starts:
/// its target, its permit (the limits and the session metrics), and the
/// audit record of its decision. It ends one of two ways:
/// - [`Session::start`]: the work begins (`ResponseStarted`), and the
///   [`SessionTrail`] it returns writes `ResponseComplete` when dropped;
/// - [`Session::refuse`]: it fails before any work, one `ResponseComplete`
///   with the error (rate-limited like every refusal).
///
/// Dropped without either (a bug, or a panic on the way), it still writes a
/// refusal: no admitted session leaves the audit log without its end.
pub struct Session {
    pub target: Target,
    pending: Pending,
}

/// What a session holds until it starts or is refused; dropped unused, a
/// refusal.
struct Pending(Option<Held>);

struct Held {
    record: AuditRecord,
    log: Arc<AuditLog>,
    permit: SessionPermit,
    /// The pod's Event, sent once the session runs.
    event: Option<PendingEvent>,
}

impl Session {
    pub fn new(
        target: Target,
        record: AuditRecord,
        log: Arc<AuditLog>,
        permit: SessionPermit,
    ) -> Self {
        Self {
            target,
            pending: Pending(Some(Held {
                record,
                log,
                permit,
                event: None,
            })),
        }
    }

    fn held(&mut self) -> &mut Held {
        self.pending
            .0
            .as_mut()
            .expect("a session holds its record until it is consumed")
    }

    /// The audit ID, which is the session's ID.
    pub fn id(&mut self) -> String {
        self.held().record.id().to_string()
    }

    /// The audit record, for facts about the session to come.
    pub fn record(&mut self) -> &mut AuditRecord {
        &mut self.held().record
    }

    /// The session acts on its target: noted in the audit record
    /// (container, its ID, its PID) and returned for more notes.
    pub fn noting_target(&mut self) -> &mut AuditRecord {
        let held = self
            .pending
            .0
            .as_mut()
            .expect("a session holds its record until it is consumed");
        held.record.target(&self.target)
    }

    /// The session will enter its target with `request`: noted in the
    /// audit record.
    pub fn entering(&mut self, request: &crate::enter::EnterRequest) {
        let held = self
            .pending
            .0
            .as_mut()
            .expect("a session holds its record until it is consumed");
        held.record.entering(&self.target, request);
    }

    /// Sends the pod's Event `event` once the session runs.
    pub fn announcing(&mut self, event: Option<PendingEvent>) {
        self.held().event = event;
    }

    /// The work begins, answered with `code`: `ResponseStarted`, and the
    /// pod's Event. The target goes to the caller, the rest to the trail.
    pub fn start(self, code: u16) -> (Target, SessionTrail) {
        let (target, mut trail) = self.into_trail(code);
        trail.started();
        (target, trail)
    }

    /// The trail of a session that answers `code` (101 for an upgrade) and
    /// starts later: [`SessionTrail::started`] when its command runs.
    pub fn into_trail(self, code: u16) -> (Target, SessionTrail) {
        let Self {
            target,
            mut pending,
        } = self;
        let Held {
            record,
            log,
            permit,
            event,
        } = pending.0.take().expect("a session is consumed once");
        let mut trail = SessionTrail::new(record, log, permit, code);
        trail.event = event;
        (target, trail)
    }

    /// The session fails before any work: answered with `code`, because
    /// `why`.
    pub fn refuse(mut self, code: u16, why: &str) {
        if let Some(held) = self.pending.0.take() {
            held.refuse(code, why);
        }
    }
}

impl Held {
    fn refuse(mut self, code: u16, why: &str) {
        self.record.note("error", why);
        self.log
            .refused(&self.record.event("ResponseComplete", code));
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(held) = self.0.take() {
            tracing::warn!(
                audit_id = held.record.id(),
                "a session ended before it started or was refused"
            );
            held.refuse(500, "the session ended before it started");
        }
    }
}

/// The trail of one running session, and its slot: `ResponseComplete` (how
/// it ended, bytes each way) is written and the slot given back when the
/// trail is dropped, however the session ends: exit, error, timeout or a
/// client that hung up mid-stream. Every kind of session writes the same
/// facts: `stdin-bytes` (what the client sent: stdin, an upload),
/// `output-bytes` (what it was sent: output, a download, a capture) and
/// `exit-code` (the [`Outcome`]).
pub struct SessionTrail {
    record: AuditRecord,
    log: Arc<AuditLog>,
    /// The HTTP code the session answered with (101 for an upgrade).
    code: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// How it ended; until told otherwise the client went away.
    pub outcome: Outcome,
    /// The pod's Event, sent once the session runs.
    event: Option<PendingEvent>,
    started: bool,
    _permit: SessionPermit,
}

impl SessionTrail {
    /// The trail of a session that answers `code` and acts on no live
    /// process of its target (a container's log is read from the runtime's
    /// file); [`Self::started`] when its work begins.
    pub fn new(record: AuditRecord, log: Arc<AuditLog>, permit: SessionPermit, code: u16) -> Self {
        Self {
            record,
            log,
            code,
            bytes_in: 0,
            bytes_out: 0,
            outcome: Outcome::ClientDisconnected,
            event: None,
            started: false,
            _permit: permit,
        }
    }

    /// The session runs: `ResponseStarted`, and its Event sent (once).
    pub fn started(&mut self) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        self.log
            .record(&self.record.event("ResponseStarted", self.code));
        if let Some(event) = self.event.take() {
            event.send();
        }
    }

    /// A fact about the session for its `ResponseComplete`.
    pub fn note(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.record.note(key, value);
        self
    }

    /// The session answered `code` in the end (an upload's 201).
    pub fn answered(&mut self, code: u16) {
        self.code = code;
    }

    /// The session failed after it started: answered `code` because `why`.
    pub fn failed(&mut self, code: u16, why: &str) {
        self.record.note("error", why);
        self.code = code;
        self.outcome = Outcome::Failed(why.to_string());
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::session::Sessions;

    fn target() -> Target {
        Target {
            namespace: "shop".into(),
            pod: "web".into(),
            pod_uid: "uid".into(),
            container: "app".into(),
            container_id: "c0ffee".into(),
            state: crate::inventory::ContainerState::Running,
            pid: 4242,
            process: crate::process::ProcessIdentity {
                pid: 4242,
                start_time: 7,
            },
            namespaces: Default::default(),
            runtime_spec: Default::default(),
        }
    }

    /// A session, an audit log in a file, and how to read it back.
    fn session() -> (Session, Sessions, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = Arc::new(AuditLog::open(path.to_str().unwrap()).unwrap());
        let sessions = Sessions::new(4, 4);
        let user = crate::auth::User::anonymous();
        let admitted = futures::executor::block_on(crate::auth::Auth::None.admit(
            &user,
            &crate::auth::Auth::None.exec_actions("shop", "web", false),
            (),
        ))
        .unwrap();
        let permit = sessions.acquire(&admitted, "run", "container").unwrap();
        let record = AuditRecord::exec(
            &user,
            None,
            "test",
            "/v1/targets/shop/web/run",
            "shop",
            "web",
        );
        (Session::new(target(), record, log, permit), sessions, dir)
    }

    fn events(dir: &tempfile::TempDir) -> Vec<Value> {
        std::fs::read_to_string(dir.path().join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_session_writes_started_then_complete_with_its_facts() {
        let (session, sessions, dir) = session();
        let (target, mut trail) = session.start(200);
        assert_eq!(target.pod, "web");
        trail.bytes_in = 3;
        trail.bytes_out = 5;
        trail.outcome = Outcome::Exited(2);
        assert_eq!(sessions.active(), 1, "the trail holds the slot");
        drop(trail);
        assert_eq!(sessions.active(), 0);
        let events = events(&dir);
        assert_eq!(events.len(), 2, "{events:#?}");
        assert_eq!(events[0]["stage"], "ResponseStarted");
        assert_eq!(events[1]["stage"], "ResponseComplete");
        assert_eq!(events[0]["auditID"], events[1]["auditID"]);
        let notes = &events[1]["annotations"];
        assert_eq!(notes["nsdebug.dev/stdin-bytes"], "3");
        assert_eq!(notes["nsdebug.dev/output-bytes"], "5");
        assert_eq!(notes["nsdebug.dev/exit-code"], "2");
    }

    #[test]
    fn a_refused_session_writes_one_complete_with_its_error() {
        let (session, sessions, dir) = session();
        session.refuse(429, "no room");
        assert_eq!(sessions.active(), 0);
        let events = events(&dir);
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(events[0]["stage"], "ResponseComplete");
        assert_eq!(events[0]["responseStatus"]["code"], 429);
        assert_eq!(events[0]["annotations"]["nsdebug.dev/error"], "no room");
    }

    #[test]
    fn a_session_dropped_unused_is_still_audited() {
        let (session, sessions, dir) = session();
        drop(session);
        assert_eq!(sessions.active(), 0);
        let events = events(&dir);
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(events[0]["responseStatus"]["code"], 500);
    }

    #[test]
    fn a_failure_after_the_start_is_the_answer_of_the_complete() {
        let (session, _sessions, dir) = session();
        let (_, mut trail) = session.start(200);
        trail.failed(409, "the container stopped");
        drop(trail);
        let events = events(&dir);
        assert_eq!(events[1]["responseStatus"]["code"], 409);
        assert_eq!(
            events[1]["annotations"]["nsdebug.dev/exit-code"],
            "failed: the container stopped"
        );
    }
}
