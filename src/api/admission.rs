//! The one admission path of every route that names a pod or a container.
//!
//! In this order, and nowhere else:
//! 1. **authenticate**: the `authenticate` middleware, before any handler;
//! 2. **authorize on what the caller named**: a pod as named; a container ID
//!    by the pod it belongs to, found internally
//!    ([`crate::resolve::Resolver::container_id_owner`]) and told to nobody
//!    who may not use it;
//! 3. **resolve** the target, 4. take the **session slot**, 5. **audit**.
//!
//! [`admit`] does 2 and returns an [`Admission`], the only way to get the
//! [`crate::auth::Admitted`] proof that resolving (3) and the session limits
//! (4) require; [`Admission::resolve`] and [`Admission::start_session`] do the
//! rest.
//!
//! Beyond the pod: [`authorize_privileged_for`] is the privileged right for
//! an act that reaches past the container ([`target_reach`]: a `hostPID` or
//! `hostNetwork` target, a capture the container could not make itself).
//!
//! A container ID a caller may not use is answered with one opaque 404, the
//! same whether the ID matches nothing, is ambiguous, or names a pod the
//! caller may not use: who cannot `list pods` cluster-wide learns no
//! container ID, pod or namespace from it.

use super::{ApiError, AppState, RequestInfo};
use crate::audit::AuditRecord;
use crate::auth::{Action, Admitted, User};
use crate::resolve::{ResolveError, Target, TargetRef};
use crate::session::Session;

/// The right a route needs on the pod it acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// `create pods/exec`, plus the privileged right when asked; audited.
    Exec { privileged: bool },
    /// `get pods` (metadata a pod's reader may see); not audited.
    Read,
    /// `create pods/portforward`; audited as a session.
    PortForward,
    /// `get pods/log`: a container's log, from the runtime's file; audited
    /// like a file read (who read which container's log, bytes, outcome).
    Logs,
}

/// The answer to a container ID the caller may not use, whatever the reason.
pub fn id_not_found_or_forbidden() -> ApiError {
    ApiError::not_found(
        "no container on this node matches this ID, or you may not use it (look it up by namespace and pod under /v1/targets)",
    )
}

/// A request that passed its access review: the proof, and the audit record
/// of the decision (for [`Right::Exec`] and [`Right::Logs`]).
pub struct Admission {
    admitted: Admitted<TargetRef>,
    record: Option<AuditRecord>,
}

/// Authorizes `user` for `right` on what `wanted` names (step 2); nothing is
/// resolved before it passed. An exec right's decision is audited.
pub async fn admit(
    state: &AppState,
    user: &User,
    info: &RequestInfo,
    wanted: TargetRef,
    right: Right,
) -> Result<Admission, ApiError> {
    match wanted {
        TargetRef::Pod {
            ref namespace,
            ref pod,
            ..
        } => {
            let (namespace, pod) = (namespace.clone(), pod.clone());
            authorize(state, user, info, wanted, &namespace, &pod, right).await
        }
        TargetRef::ContainerId(prefix) => {
            admit_container_id(state, user, info, &prefix, right).await
        }
    }
}

/// A container ID: its pod is found without telling the caller anything,
/// authorized like the pod, and any failure is the opaque 404 unless the
/// caller may list every pod anyway.
async fn admit_container_id(
    state: &AppState,
    user: &User,
    info: &RequestInfo,
    prefix: &str,
    right: Right,
) -> Result<Admission, ApiError> {
    let refusal = match state.resolver.container_id_owner(prefix).await {
        Ok(owner) => {
            let wanted = TargetRef::ContainerId(owner.container_id);
            match authorize(
                state,
                user,
                info,
                wanted,
                &owner.namespace,
                &owner.pod,
                right,
            )
            .await
            {
                Ok(admission) => return Ok(admission),
                Err(err) if err.code() == axum::http::StatusCode::FORBIDDEN => err,
                Err(err) => return Err(err),
            }
        }
        // Reveals nothing about the node: answered as such.
        Err(err @ (ResolveError::InvalidContainerId { .. } | ResolveError::Runtime(_))) => {
            return Err(err.into());
        }
        Err(err) => ApiError::from(err),
    };
    if state.auth.may_list_all_pods(user).await? {
        Err(refusal)
    } else {
        Err(id_not_found_or_forbidden())
    }
}

/// The access review of `right` on `namespace/pod`, audited for an exec,
/// a port-forward and a log read.
async fn authorize(
    state: &AppState,
    user: &User,
    info: &RequestInfo,
    wanted: TargetRef,
    namespace: &str,
    pod: &str,
    right: Right,
) -> Result<Admission, ApiError> {
    let (mut record, actions) = match right {
        Right::Read => {
            let read = Action::new("get", "pods").namespace(namespace).name(pod);
            let admitted = state.auth.admit(user, &[read], wanted).await?;
            return Ok(Admission {
                admitted,
                record: None,
            });
        }
        Right::Exec { privileged } => (
            AuditRecord::exec(user, info.peer, &info.user_agent, &info.uri, namespace, pod),
            state.auth.exec_actions(namespace, pod, privileged),
        ),
        Right::PortForward => (
            AuditRecord::pod_subresource(
                user,
                info.peer,
                &info.user_agent,
                &info.uri,
                namespace,
                pod,
                "portforward",
            ),
            vec![
                Action::new("create", "pods")
                    .subresource("portforward")
                    .namespace(namespace)
                    .name(pod),
            ],
        ),
        Right::Logs => (
            AuditRecord::pod_log(user, info.peer, &info.user_agent, &info.uri, namespace, pod),
            vec![
                Action::new("get", "pods")
                    .subresource("log")
                    .namespace(namespace)
                    .name(pod),
            ],
        ),
    };
    record.note("request-id", &info.request_id);
    match state.auth.admit(user, &actions, wanted).await {
        Ok(admitted) => {
            record.decision(true, "allowed");
            Ok(Admission {
                admitted,
                record: Some(record),
            })
        }
        Err(err) => {
            let err = ApiError::from(err);
            record.decision(false, err.message());
            state
                .audit
                .refused(&record.event("ResponseComplete", err.code().as_u16()));
            Err(err)
        }
    }
}

/// What a session runs, as the caller asked for it.
pub struct Command {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub profile: crate::enter::Profile,
    /// The namespaces of the view ([`crate::enter::View`]); `None`: all.
    pub namespaces: Option<crate::enter::NamespaceSet>,
    pub toolbox: bool,
    pub terminal: Option<crate::enter::TerminalSize>,
}

/// The request that enters `session`'s target for `command`, noted in its
/// audit record, with the pod Event that will announce the session once it
/// runs (`kind`: `exec`, `run`).
pub fn enter(
    session: &mut Session,
    state: &AppState,
    user: &User,
    kind: &str,
    command: Command,
) -> crate::enter::EnterRequest {
    let target = &session.target;
    let request = crate::enter::EnterRequest {
        pid: target.pid,
        start_time: target.process.start_time,
        container_id: target.container_id.clone(),
        namespaces: command.namespaces,
        profile: command.profile,
        argv: command.argv,
        env: command.env,
        terminal: command.terminal,
        runtime_spec: crate::enter::runtime_spec_for(command.profile, &target.runtime_spec),
        toolbox: command.toolbox.then(|| state.toolbox_root.to_path_buf()),
    };
    let id = session.id();
    let event = state.events.prepare(&crate::events::SessionStart::command(
        user,
        &session.target,
        &request,
        kind,
        &id,
    ));
    session.entering(&request);
    session.announcing(event);
    request
}

/// `session` refused before it started, with `err`; the error goes on to
/// the client.
pub fn refuse(session: Session, err: ApiError) -> ApiError {
    session.refuse(err.code().as_u16(), err.message());
    err
}

/// What kind of session asks, for the limits and metrics, and what its
/// audit record says.
pub struct SessionAsk<'a> {
    pub kind: &'static str,
    pub profile: &'a str,
    pub note: &'a (dyn Fn(&mut AuditRecord) + Sync),
}

impl Admission {
    /// For an act on the whole pod (its network, which every container
    /// shares): the pod's `container` when the caller named none. The right
    /// was reviewed on the pod, so it covers each of its containers.
    pub fn in_container(self, container: String) -> Self {
        let Self { admitted, record } = self;
        let admitted = admitted.narrowed(|wanted| match wanted {
            TargetRef::Pod {
                namespace,
                pod,
                container: None,
            } => TargetRef::Pod {
                namespace,
                pod,
                container: Some(container),
            },
            other => other,
        });
        Self { admitted, record }
    }

    /// A request refused after its access review but before any session
    /// (a port-forward that is no upgrade): its record is written with `err`,
    /// which goes on to the client.
    pub fn refuse(self, state: &AppState, err: ApiError) -> ApiError {
        if let Some(mut record) = self.record {
            record.note("error", err.message());
            state
                .audit
                .refused(&record.event("ResponseComplete", err.code().as_u16()));
        }
        err
    }

    /// Step 3: the target, for a request that needs no session slot.
    pub async fn resolve(
        self,
        state: &AppState,
    ) -> Result<(Target, Option<AuditRecord>), ApiError> {
        let target = state.resolver.resolve(&self.admitted).await?;
        Ok((target, self.record))
    }

    /// Steps 3 to 5 for an exec right: the target, a session slot, and the
    /// audit record going on with the [`Session`]. A failure (no such
    /// container, no slot) is audited.
    pub async fn start_session(
        self,
        state: &AppState,
        ask: SessionAsk<'_>,
    ) -> Result<Session, ApiError> {
        let Self { admitted, record } = self;
        let Some(mut record) = record else {
            return Err(ApiError::internal_with(
                "a session was started without an exec right",
            ));
        };
        (ask.note)(&mut record);
        let found = async {
            let target = state.resolver.resolve(&admitted).await?;
            let permit = state.sessions.acquire(&admitted, ask.kind, ask.profile)?;
            Ok::<_, ApiError>((permit, target))
        }
        .await;
        match found {
            Ok((permit, target)) => Ok(Session::new(target, record, state.audit.clone(), permit)),
            Err(err) => {
                record.note("error", err.message());
                state
                    .audit
                    .refused(&record.event("ResponseComplete", err.code().as_u16()));
                Err(err)
            }
        }
    }
}

impl Admission {
    /// Steps 3 to 5 for a read of what the runtime keeps about a container
    /// rather than of its live process (its log, also once it exited): a
    /// session slot, then `find` on what the caller named (the admitted
    /// [`TargetRef`]), then the trail, not yet started. A failure is audited.
    pub async fn start_read<T>(
        self,
        state: &AppState,
        ask: SessionAsk<'_>,
        find: impl AsyncFnOnce(&TargetRef) -> Result<T, ApiError>,
    ) -> Result<(T, crate::session::SessionTrail), ApiError> {
        let Self { admitted, record } = self;
        let Some(mut record) = record else {
            return Err(ApiError::internal_with(
                "a read was started without an audited right",
            ));
        };
        (ask.note)(&mut record);
        let found = async {
            let permit = state.sessions.acquire(&admitted, ask.kind, ask.profile)?;
            let found = find(admitted.value()).await?;
            Ok::<_, ApiError>((permit, found))
        }
        .await;
        match found {
            Ok((permit, found)) => Ok((
                found,
                crate::session::SessionTrail::new(record, state.audit.clone(), permit, 200),
            )),
            Err(err) => {
                record.note("error", err.message());
                state
                    .audit
                    .refused(&record.event("ResponseComplete", err.code().as_u16()));
                Err(err)
            }
        }
    }
}

/// The privileged right for an act that reaches beyond the container (a
/// `hostPID` or `hostNetwork` target, a capture the container could not make
/// itself): a refusal says `why` the act needs it, then names the right.
pub(super) async fn authorize_privileged_for(
    state: &AppState,
    user: &crate::auth::User,
    why: &str,
) -> Result<(), ApiError> {
    match state.auth.authorize_privileged(user).await {
        Ok(()) => Ok(()),
        Err(crate::auth::AuthError::Forbidden { message }) => Err(ApiError::forbidden(format!(
            "{why}, which needs the privileged right: {message}"
        ))),
        Err(other) => Err(other.into()),
    }
}

/// How far `target` reaches beyond its container ([`crate::diag::host`]).
pub(super) async fn target_reach(
    state: &AppState,
    target: &crate::resolve::Target,
) -> Result<crate::diag::host::Reach, ApiError> {
    let proc_root = state.inventory.proc_root().clone();
    let (pid, namespaces) = (target.pid, target.namespaces.clone());
    let reach = tokio::task::spawn_blocking(move || {
        crate::diag::host::Reach::of(&proc_root, pid, &namespaces)
    })
    .await
    .map_err(|err| ApiError::internal(&err))?;
    reach.map_err(|err| match err {
        err if err.is_target_gone() => ApiError::conflict(format!(
            "container \"{}\" of pod {}/{} stopped while being read",
            target.container, target.namespace, target.pod
        )),
        other => ApiError::internal(&other),
    })
}
