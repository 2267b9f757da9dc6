//! The audit trail: one JSON line per decision and per session, in the
//! Kubernetes audit event shape (`audit.k8s.io/v1` `Event`) so existing audit
//! pipelines take it. A session writes `ResponseStarted` when it opens and
//! `ResponseComplete` when it ends, with the same `auditID`; a refusal writes
//! one `ResponseComplete`. nsdebug's own facts travel as annotations.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::auth::User;

/// Where audit lines go.
pub struct AuditLog {
    sink: Option<Mutex<Box<dyn Write + Send>>>,
}

impl AuditLog {
    /// `-` is stdout, an empty string turns auditing off, anything else is a
    /// file appended to.
    pub fn open(target: &str) -> std::io::Result<Self> {
        let sink: Option<Box<dyn Write + Send>> = match target {
            "" => None,
            "-" => Some(Box::new(std::io::stdout())),
            path => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(Path::new(path))?,
            )),
        };
        Ok(Self {
            sink: sink.map(Mutex::new),
        })
    }

    /// Writes one event as one line. A failing sink is logged, never fatal.
    pub fn record(&self, event: &Value) {
        let Some(sink) = &self.sink else { return };
        let mut line = event.to_string();
        line.push('\n');
        let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = sink.write_all(line.as_bytes()).and_then(|()| sink.flush()) {
            tracing::warn!(error = %err, "failed to write an audit event");
        }
    }
}

/// One audited request: what is common to its events.
pub struct AuditRecord {
    id: String,
    received: Timestamp,
    user: User,
    source: Option<SocketAddr>,
    user_agent: String,
    uri: String,
    object: Value,
    annotations: BTreeMap<String, String>,
}

impl AuditRecord {
    /// A `create` request on `object` (an audit `objectRef`).
    pub fn new(
        user: &User,
        source: Option<SocketAddr>,
        user_agent: &str,
        uri: &str,
        object: Value,
    ) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            received: Timestamp::now(),
            user: user.clone(),
            source,
            user_agent: user_agent.into(),
            uri: uri.into(),
            object,
            annotations: BTreeMap::new(),
        }
    }

    /// A `create pods/exec` request (exec or run) on `namespace/pod`.
    pub fn exec(
        user: &User,
        source: Option<SocketAddr>,
        user_agent: &str,
        uri: &str,
        namespace: &str,
        pod: &str,
    ) -> Self {
        Self::new(
            user,
            source,
            user_agent,
            uri,
            json!({"resource": "pods", "subresource": "exec", "namespace": namespace, "name": pod, "apiVersion": "v1"}),
        )
    }

    /// The `auditID` shared by the events of this request.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Adds an `nsdebug.dev/KEY` annotation.
    pub fn note(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.annotations
            .insert(format!("nsdebug.dev/{key}"), value.to_string());
        self
    }

    /// Notes what is entered: the target and the request's command, terminal,
    /// namespaces and profile.
    pub fn entering(
        &mut self,
        target: &crate::resolve::Target,
        request: &crate::enter::EnterRequest,
    ) -> &mut Self {
        self.note("container", &target.container)
            .note("container-id", &target.container_id)
            .note("pid", target.pid)
            .note(
                "command",
                serde_json::to_string(&request.argv).unwrap_or_default(),
            )
            .note("tty", request.terminal.is_some())
            .note(
                "namespaces",
                request
                    .namespaces
                    .as_ref()
                    .map(|n| n.join(","))
                    .unwrap_or_else(|| "all".into()),
            )
            .note("profile", request.profile.as_str())
            .note("toolbox", request.toolbox.is_some())
    }

    /// Records the authorization decision the way the API server annotates it.
    pub fn decision(&mut self, allowed: bool, reason: &str) -> &mut Self {
        self.annotations.insert(
            "authorization.k8s.io/decision".into(),
            if allowed { "allow" } else { "forbid" }.into(),
        );
        self.annotations
            .insert("authorization.k8s.io/reason".into(), reason.into());
        self
    }

    /// The event of `stage` with the HTTP `code` answered.
    pub fn event(&self, stage: &str, code: u16) -> Value {
        let mut user =
            json!({"username": self.user.name, "uid": self.user.uid, "groups": self.user.groups});
        if !self.user.extra.is_empty() {
            // As the API server's audit records it: what the authorizer saw.
            user["extra"] = json!(self.user.extra);
        }
        json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": self.id,
            "stage": stage,
            "requestURI": self.uri,
            "verb": "create",
            "user": user,
            "sourceIPs": self.source.map(|s| vec![s.ip().to_string()]).unwrap_or_default(),
            "userAgent": self.user_agent,
            "objectRef": self.object,
            "responseStatus": {"metadata": {}, "code": code},
            "requestReceivedTimestamp": self.received.to_string(),
            "stageTimestamp": Timestamp::now().to_string(),
            "annotations": self.annotations,
        })
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
    /// The exit code, or why there is none; until told otherwise the client
    /// went away.
    pub outcome: String,
}

impl SessionTrail {
    pub fn new(record: AuditRecord, log: std::sync::Arc<AuditLog>, code: u16) -> Self {
        Self {
            record,
            log,
            code,
            bytes_in: 0,
            bytes_out: 0,
            outcome: "client disconnected".into(),
        }
    }

    /// The session runs.
    pub fn started(&self) {
        self.log
            .record(&self.record.event("ResponseStarted", self.code));
    }
}

impl Drop for SessionTrail {
    fn drop(&mut self) {
        let (bytes_in, bytes_out, outcome) = (self.bytes_in, self.bytes_out, self.outcome.clone());
        self.record
            .note("stdin-bytes", bytes_in)
            .note("output-bytes", bytes_out)
            .note("exit-code", outcome);
        self.log
            .record(&self.record.event("ResponseComplete", self.code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_audit_shape() {
        let user = User {
            name: "alice".into(),
            uid: "u1".into(),
            groups: vec!["dev".into()],
            extra: Default::default(),
        };
        let mut record = AuditRecord::exec(
            &user,
            Some("127.0.0.1:5000".parse().unwrap()),
            "kubectl/v1.32",
            "/api/v1/namespaces/ns/pods/p/exec?command=ls",
            "ns",
            "p",
        );
        record.decision(true, "allowed").note("exit-code", 0);
        let event = record.event("ResponseComplete", 200);
        assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(event["user"]["username"], "alice");
        assert_eq!(event["sourceIPs"], json!(["127.0.0.1"]));
        assert_eq!(event["objectRef"]["subresource"], "exec");
        assert_eq!(
            event["annotations"]["authorization.k8s.io/decision"],
            "allow"
        );
        assert_eq!(event["annotations"]["nsdebug.dev/exit-code"], "0");
        assert_eq!(event["auditID"].as_str().unwrap().len(), 36);
    }
}
