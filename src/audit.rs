//! The audit trail: one JSON line per decision and per session, in the
//! Kubernetes audit event shape (`audit.k8s.io/v1` `Event`) so existing audit
//! pipelines take it. A session writes `ResponseStarted` when it opens and
//! `ResponseComplete` when it ends, with the same `auditID`; a refusal writes
//! one `ResponseComplete`. nsdebug's own facts travel as annotations.
//!
//! Nobody can flush the trail with refusals: they are written at most
//! [`REFUSALS_PER_SECOND`] a second per response code (in bursts of
//! [`REFUSAL_BURST`]), and the rest are counted and written as one summary
//! event per code every [`SUMMARY_INTERVAL`] (annotation
//! `nsdebug.dev/dropped-refusals`). A request URI is kept to
//! [`MAX_URI_BYTES`], cut with a marker. Sessions are always written.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use governor::{Quota, RateLimiter};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::auth::User;

/// Refusals written one by one per second, per response code.
pub const REFUSALS_PER_SECOND: u32 = 5;
/// Refusals written at once before the rate applies.
pub const REFUSAL_BURST: u32 = 20;
/// How often the refusals not written are summarized.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(5);
/// Longest request URI kept in an event.
pub const MAX_URI_BYTES: usize = 2048;

type Limiter =
    RateLimiter<u16, governor::state::keyed::HashMapStateStore<u16>, governor::clock::DefaultClock>;

/// Where audit lines go.
pub struct AuditLog {
    sink: Option<Mutex<Box<dyn Write + Send>>>,
    refusals: Limiter,
    /// Refusals not written since the last summary, by response code.
    dropped: Mutex<BTreeMap<u16, u64>>,
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
        let quota =
            Quota::per_second(NonZeroU32::new(REFUSALS_PER_SECOND).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(REFUSAL_BURST).unwrap_or(NonZeroU32::MIN));
        Ok(Self {
            sink: sink.map(Mutex::new),
            refusals: RateLimiter::hashmap(quota),
            dropped: Mutex::default(),
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

    /// Writes a refused request's event, unless its code's rate is spent:
    /// then it is counted for the next summary.
    pub fn refused(&self, event: &Value) {
        let code = event["responseStatus"]["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(0);
        if self.refusals.check_key(&code).is_ok() {
            self.record(event);
        } else {
            *self
                .dropped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(code)
                .or_default() += 1;
        }
    }

    /// Writes one summary event per response code whose refusals were not
    /// all written since the last summary.
    pub fn summarize(&self) {
        let dropped = std::mem::take(&mut *self.dropped.lock().unwrap_or_else(|e| e.into_inner()));
        for (code, count) in dropped {
            self.record(&summary_event(code, count));
        }
        self.refusals.retain_recent();
    }

    /// Summarizes every [`SUMMARY_INTERVAL`], and once more at `cancel`.
    pub async fn keep_summarizing(
        self: std::sync::Arc<Self>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(SUMMARY_INTERVAL) => self.summarize(),
            }
        }
        self.summarize();
    }
}

/// The event standing for `count` refusals with `code` not written one by one.
fn summary_event(code: u16, count: u64) -> Value {
    let now = Timestamp::now().to_string();
    json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": uuid::Uuid::new_v4().to_string(),
        "stage": "ResponseComplete",
        "requestURI": "",
        "verb": "create",
        "user": {"username": "system:nsdebug:audit"},
        "sourceIPs": [],
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": now,
        "stageTimestamp": now,
        "annotations": {
            "nsdebug.dev/dropped-refusals": count.to_string(),
            "nsdebug.dev/summary": format!(
                "{count} refused requests answered {code} were not written one by one (at most {REFUSALS_PER_SECOND} a second are)"
            ),
        },
    })
}

/// `uri`, cut to [`MAX_URI_BYTES`] at a character boundary with a marker
/// saying how much was left out.
fn bounded_uri(uri: &str) -> String {
    if uri.len() <= MAX_URI_BYTES {
        return uri.to_string();
    }
    let mut end = MAX_URI_BYTES;
    while !uri.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...[truncated {} bytes]", &uri[..end], uri.len() - end)
}

/// One audited request: what is common to its events.
pub struct AuditRecord {
    id: String,
    received: Timestamp,
    user: User,
    source: Option<SocketAddr>,
    user_agent: String,
    uri: String,
    /// The request's verb: `create` (exec, run, files, ...) or `get` (a log).
    verb: &'static str,
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
            uri: bounded_uri(uri),
            verb: "create",
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
        Self::pod_subresource(user, source, user_agent, uri, namespace, pod, "exec")
    }

    /// A request on `subresource` (`exec`, `portforward`) of `namespace/pod`.
    pub fn pod_subresource(
        user: &User,
        source: Option<SocketAddr>,
        user_agent: &str,
        uri: &str,
        namespace: &str,
        pod: &str,
        subresource: &str,
    ) -> Self {
        Self::new(
            user,
            source,
            user_agent,
            uri,
            json!({"resource": "pods", "subresource": subresource, "namespace": namespace, "name": pod, "apiVersion": "v1"}),
        )
    }

    /// A `get pods/log` request on `namespace/pod`: a read of a container's
    /// log, audited like a file read.
    pub fn pod_log(
        user: &User,
        source: Option<SocketAddr>,
        user_agent: &str,
        uri: &str,
        namespace: &str,
        pod: &str,
    ) -> Self {
        let mut record = Self::new(
            user,
            source,
            user_agent,
            uri,
            json!({"resource": "pods", "subresource": "log", "namespace": namespace, "name": pod, "apiVersion": "v1"}),
        );
        record.verb = "get";
        record
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
    /// The container a session acts on.
    pub fn target(&mut self, target: &crate::resolve::Target) -> &mut Self {
        self.note("container", &target.container)
            .note("container-id", &target.container_id)
            .note("pid", target.pid)
    }

    pub fn entering(
        &mut self,
        target: &crate::resolve::Target,
        request: &crate::enter::EnterRequest,
    ) -> &mut Self {
        self.target(target)
            .note(
                "command",
                serde_json::to_string(&request.argv).unwrap_or_default(),
            )
            .note("tty", request.terminal.is_some())
            .note(
                "namespaces",
                request
                    .namespaces
                    .map(|set| set.to_string())
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
            "verb": self.verb,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_uris_are_cut_with_a_marker() {
        assert_eq!(bounded_uri("/healthz"), "/healthz");
        let long = format!("/v1/x?pad={}", "é".repeat(3000));
        let cut = bounded_uri(&long);
        assert!(cut.len() <= MAX_URI_BYTES + 40, "{}", cut.len());
        let kept = cut.find("...[truncated ").unwrap();
        assert!(kept <= MAX_URI_BYTES && long.starts_with(&cut[..kept]));
        assert!(cut.ends_with(&format!("...[truncated {} bytes]", long.len() - kept)));
    }

    #[test]
    fn refusals_past_the_rate_are_counted_and_summarized() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(path.to_str().unwrap()).unwrap();
        let refusal = json!({"responseStatus": {"code": 403}});
        for _ in 0..1000 {
            log.refused(&refusal);
        }
        log.summarize();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let written = lines.iter().filter(|l| l["annotations"].is_null()).count();
        let summary = lines.last().unwrap();
        let dropped: usize = summary["annotations"]["nsdebug.dev/dropped-refusals"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            written >= REFUSAL_BURST as usize && written < 100,
            "{written}"
        );
        assert_eq!(written + dropped, 1000);
        assert_eq!(summary["responseStatus"]["code"], 403);
    }

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
