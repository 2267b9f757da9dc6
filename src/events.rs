//! Kubernetes Events on the pods nsdebug enters, so `kubectl describe pod`
//! and every event pipeline show that someone opened a session there.
//!
//! One `v1` Event per session, written by the agent's service account (it
//! needs `create events`) in the background: a slow or failing API server
//! never delays a session, and at most [`MAX_PENDING`] writes are in flight
//! (beyond that an event is dropped with a warning rather than queued without
//! bound).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::Semaphore;

use crate::auth::User;
use crate::enter::{EnterRequest, Profile};
use crate::resolve::Target;

/// Event writes in flight at most.
const MAX_PENDING: usize = 32;
/// The API server's limit on an Event's message.
const MAX_MESSAGE: usize = 1024;

/// The reason of every session Event.
pub const REASON: &str = "NsdebugSession";

/// Writes session Events, or nothing when the agent has no API server.
#[derive(Clone)]
pub struct PodEvents {
    client: Option<kube::Client>,
    node: Arc<str>,
    pending: Arc<Semaphore>,
}

/// A session that just started.
pub struct SessionStart<'a> {
    pub user: &'a User,
    pub target: &'a Target,
    /// `exec`, `run`, `capture`...
    pub kind: &'a str,
    pub audit_id: &'a str,
    /// Whose privileges it runs with (a capture: the agent's own).
    pub profile: Profile,
    pub tty: bool,
    /// What it does: a command's program name (never its arguments, which
    /// may hold passwords; the audit trail has them), or a description.
    pub what: String,
}

impl<'a> SessionStart<'a> {
    /// A session running `request`'s command.
    pub fn command(
        user: &'a User,
        target: &'a Target,
        request: &EnterRequest,
        kind: &'a str,
        audit_id: &'a str,
    ) -> Self {
        Self {
            user,
            target,
            kind,
            audit_id,
            profile: request.profile,
            tty: request.terminal.is_some(),
            what: program_name(&request.argv),
        }
    }
}

/// The program an argv runs, without its directory or arguments: Events
/// are read by many more people than may exec, and command lines carry
/// secrets (`mysql --password=...`).
fn program_name(argv: &[String]) -> String {
    let program = argv.first().map(String::as_str).unwrap_or_default();
    let name = program.rsplit('/').next().unwrap_or(program);
    name.to_string()
}

impl PodEvents {
    pub fn new(client: Option<kube::Client>, node: &str) -> Self {
        Self {
            client,
            node: node.into(),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
        }
    }

    /// The Event of `session`, to send once the session really runs.
    pub fn prepare(&self, session: &SessionStart<'_>) -> Option<PendingEvent> {
        let client = self.client.clone()?;
        Some(PendingEvent {
            api: Api::namespaced(client, &session.target.namespace),
            event: session_event(session, &self.node),
            pending: self.pending.clone(),
        })
    }
}

/// An Event ready to be written.
pub struct PendingEvent {
    api: Api<Event>,
    event: Event,
    pending: Arc<Semaphore>,
}

impl PendingEvent {
    /// Writes the Event in the background.
    pub fn send(self) {
        let Ok(permit) = self.pending.try_acquire_owned() else {
            tracing::warn!(
                pod = self
                    .event
                    .involved_object
                    .name
                    .as_deref()
                    .unwrap_or_default(),
                "{MAX_PENDING} Event writes already pending; this session's Event is dropped"
            );
            return;
        };
        let (api, event) = (self.api, self.event);
        tokio::spawn(async move {
            if let Err(err) = api.create(&PostParams::default(), &event).await {
                tracing::warn!(
                    error = %err,
                    namespace = event.metadata.namespace.as_deref().unwrap_or_default(),
                    pod = event.involved_object.name.as_deref().unwrap_or_default(),
                    "failed to write the session's Event"
                );
            }
            drop(permit);
        });
    }
}

/// The Event of a session, as the kubelet shapes its own pod events.
pub fn session_event(session: &SessionStart<'_>, node: &str) -> Event {
    let target = session.target;
    let now = Timestamp::now();
    let mut message = format!(
        "{} started an nsdebug {} session in container \"{}\" (profile {}{}, audit ID {}): {}",
        session.user.name,
        session.kind,
        target.container,
        session.profile.as_str(),
        if session.tty { ", tty" } else { "" },
        session.audit_id,
        session.what,
    );
    cut(&mut message, MAX_MESSAGE);
    Event {
        metadata: ObjectMeta {
            // The kubelet's naming: the object's name and a unique suffix.
            name: Some(format!("{}.{:x}", target.pod, now.as_nanosecond())),
            namespace: Some(target.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(target.pod.clone()),
            namespace: Some(target.namespace.clone()),
            uid: Some(target.pod_uid.clone()).filter(|uid| !uid.is_empty()),
            field_path: Some(format!("spec.containers{{{}}}", target.container)),
            ..Default::default()
        },
        reason: Some(REASON.into()),
        message: Some(message),
        // A session that bypasses the container's profile stands out.
        type_: Some(
            match session.profile {
                Profile::Privileged => "Warning",
                Profile::Container => "Normal",
            }
            .into(),
        ),
        action: Some(session.kind.into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(EventSource {
            component: Some("nsdebug".into()),
            host: Some(node.into()),
        }),
        reporting_component: Some("nsdebug".into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    }
}

/// Shortens `text` to at most `limit` bytes, ending in `...` when cut.
fn cut(text: &mut String, limit: usize) {
    if text.len() <= limit {
        return;
    }
    let mut end = limit - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("...");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_program_is_named() {
        let argv = ["/usr/bin/mysql", "--password=hunter2"].map(String::from);
        let what = program_name(&argv);
        assert_eq!(what, "mysql");
        assert_eq!(program_name(&[]), "");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let mut short = "ls /".to_string();
        cut(&mut short, 1024);
        assert_eq!(short, "ls /");
        // 'é' is two bytes: a cut inside it moves back one byte.
        let mut long = "é".repeat(600);
        cut(&mut long, 1024);
        assert!(long.len() <= 1024, "{}", long.len());
        assert!(long.ends_with("é..."));
    }
}
