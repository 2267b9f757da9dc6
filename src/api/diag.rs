//! `GET /v1/targets/{ns}/{pod}/diag/{view}` and `/v1/containers/{id}/diag/{view}`:
//! the built-in diagnostics of [`crate::diag`] as JSON, answered as the wire
//! crate's [`DiagAnswer`] (its item types are `nsdebug_wire::diag`'s too).
//!
//! | view | answer | needs |
//! |---|---|---|
//! | `processes` | the processes of the container's PID namespace (PID inside and on the host, parent, command line, user, state, RSS, CPU time, start) | `create pods/exec`; for a `hostPID` pod also the privileged right |
//! | `sockets` | TCP/UDP (v4, v6) and unix sockets of the pod's network, with their processes | `get pods`; for a `hostNetwork` pod also the privileged right |
//! | `interfaces` | interfaces, addresses, counters | `get pods`; for a `hostNetwork` pod also the privileged right |
//! | `routes` | IPv4 routes | `get pods`; for a `hostNetwork` pod also the privileged right |
//! | `cgroup` | memory (usage, limit, OOM kills), CPU (usage, throttling, quota), PIDs | `get pods` |
//! | `open-files` | the open descriptors of `?pid=` (inside PID, one of the container's own; default the init) | `create pods/exec` |
//! | `env` | the environment of `?pid=`, secret-looking values redacted unless `?reveal=true` | `create pods/exec` |
//! | `mounts` | the mounts `?pid=` sees | `create pods/exec` |
//!
//! What can show secrets (command lines, environment, open paths, mounts) needs
//! the right to exec into the pod, and is audited like a session; metadata
//! (sockets, interfaces, routes, cgroup usage) needs the right to read it.
//! No view reaches past the container for those rights alone: `?pid=` names
//! only the container's own processes (its PID namespace and its cgroup;
//! anything else is a 404, whether it exists or not), and a view that would
//! list the node's processes (`hostPID`) or the node's network
//! (`hostNetwork`) needs the privileged right (`create nodes/proxy` by
//! default), a 403 that says why.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use nsdebug_wire::diag::{DiagAnswer, DiagTarget, ViewData};
use serde::Deserialize;

use super::admission::{Right, admit};
use super::target::Wanted;
use super::{ApiError, AppState, QueryOf as Q, RequestInfo, query};
use crate::auth::User;
use crate::diag::host::Reach;
use crate::diag::{self, DiagError};
use crate::resolve::{Target, TargetRef};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/targets/{namespace}/{pod}/diag/{view}",
            get(in_target_route),
        )
        .route("/v1/containers/{id}/diag/{view}", get(in_target_route))
}

/// The views, and whether they need the exec right.
const VIEWS: &[(&str, bool)] = &[
    ("processes", true),
    ("sockets", false),
    ("interfaces", false),
    ("routes", false),
    ("cgroup", false),
    ("open-files", true),
    ("env", true),
    ("mounts", true),
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiagQuery {
    /// Read by [`Wanted`](super::target::Wanted); named here so every other
    /// name stays checked.
    #[serde(rename = "container")]
    _container: Option<String>,
    /// A process by its PID inside the container (open-files, env, mounts).
    pid: Option<u32>,
    /// Show the values of secret-looking environment variables.
    #[serde(default)]
    reveal: super::query::Flag,
}

/// The path's `{view}`, besides the target.
#[derive(Deserialize)]
struct ViewPath {
    view: String,
}

async fn in_target_route(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<User>,
    info: RequestInfo,
    Wanted(wanted): Wanted,
    Path(ViewPath { view }): Path<ViewPath>,
    q: Q<DiagQuery>,
) -> Result<Json<DiagAnswer>, ApiError> {
    let q = query(q)?;
    in_target(state, user, info, wanted, view, q).await
}

/// Admitted (`create pods/exec`, audited, or `get pods`, as the view needs)
/// before anything about the target is resolved.
async fn in_target(
    state: AppState,
    user: User,
    info: RequestInfo,
    wanted: TargetRef,
    view: String,
    q: DiagQuery,
) -> Result<Json<DiagAnswer>, ApiError> {
    let right = if needs_exec(&view)? {
        Right::Exec { privileged: false }
    } else {
        Right::Read
    };
    let admission = admit(&state, &user, &info, wanted, right).await?;
    let (target, record) = admission.resolve(&state).await?;
    answer(&state, &user, record, target, &view, &q).await
}

pub(super) fn needs_exec(view: &str) -> Result<bool, ApiError> {
    VIEWS
        .iter()
        .find(|(name, _)| *name == view)
        .map(|(_, exec)| *exec)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no diagnostic view \"{view}\"; the views are {}",
                VIEWS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ))
        })
}

fn diag_error(err: DiagError, target: &Target) -> ApiError {
    match err {
        DiagError::NoSuchProcess { .. } => ApiError::not_found(err.to_string()),
        err if err.is_target_gone() => ApiError::conflict(format!(
            "container \"{}\" of pod {}/{} stopped while being read",
            target.container, target.namespace, target.pod
        )),
        other => {
            tracing::error!(error = %crate::error_chain(&other), "a diagnostic failed");
            ApiError::internal_with(crate::error_chain(&other))
        }
    }
}

/// Why `view` of `target` needs the privileged right, if it does: it would
/// show the node's processes or the node's network.
fn beyond_the_container(view: &str, reach: Reach, target: &Target) -> Option<String> {
    let pod = format!("pod {}/{}", target.namespace, target.pod);
    match view {
        "processes" if reach.host_pid => Some(format!(
            "{pod} uses the node's PID namespace (hostPID): its process list is the node's"
        )),
        "sockets" | "interfaces" | "routes" if reach.host_network => Some(format!(
            "{pod} uses the node's network namespace (hostNetwork): its {view} are the node's"
        )),
        _ => None,
    }
}

async fn answer(
    state: &AppState,
    user: &User,
    mut record: Option<crate::audit::AuditRecord>,
    target: Target,
    view: &str,
    q: &DiagQuery,
) -> Result<Json<DiagAnswer>, ApiError> {
    let reach = super::admission::target_reach(state, &target).await?;
    if let Some(why) = beyond_the_container(view, reach, &target)
        && let Err(err) = super::admission::authorize_privileged_for(state, user, &why).await
    {
        if let Some(record) = record.as_mut() {
            record.note("diag", view).note("error", err.message());
            state
                .audit
                .refused(&record.event("ResponseComplete", err.code().as_u16()));
        }
        return Err(err);
    }
    let container_id = target.container_id.clone();
    let proc_root = state.inventory.proc_root().clone();
    let pid = target.pid;
    let (inside, reveal) = (q.pid, q.reveal.0);
    let view_name = view.to_string();
    let data: Result<ViewData, DiagError> = if view == "interfaces" {
        diag::network::interfaces(&proc_root, target.container_process())
            .await
            .map(ViewData::Interfaces)
    } else {
        let blocking = tokio::task::spawn_blocking(move || -> Result<ViewData, DiagError> {
            Ok(match view_name.as_str() {
                "processes" => ViewData::Processes(diag::processes::list(&proc_root, pid)?),
                "sockets" => ViewData::Sockets(diag::sockets::list(&proc_root, pid)?),
                "routes" => ViewData::Routes(diag::network::routes(&proc_root, pid)?),
                "cgroup" => ViewData::Cgroup(diag::cgroup::usage(&proc_root, pid)?),
                other => {
                    let host =
                        diag::process_files::host_pid(&proc_root, pid, &container_id, inside)?;
                    match other {
                        "open-files" => {
                            ViewData::OpenFiles(diag::process_files::open_files(&proc_root, host)?)
                        }
                        "env" => ViewData::Env(diag::process_files::environment(
                            &proc_root, host, reveal,
                        )?),
                        _ => ViewData::Mounts(diag::process_files::mounts(&proc_root, host)?),
                    }
                }
            })
        });
        blocking.await.map_err(|err| ApiError::internal(&err))?
    };
    let data = data.map_err(|err| diag_error(err, &target));
    let code = data.as_ref().map_or_else(|e| e.code().as_u16(), |_| 200);
    if let Some(mut record) = record {
        record
            .note("container", &target.container)
            .note("container-id", &target.container_id)
            .note("pid", target.pid)
            .note("diag", view);
        if let Some(inside) = inside {
            record.note("diag-pid", inside);
        }
        if reveal {
            record.note("diag-reveal", true);
        }
        state.audit.record(&record.event("ResponseComplete", code));
    }
    Ok(Json(DiagAnswer {
        data: data?,
        target: DiagTarget {
            container: target.container,
            container_id: target.container_id,
            namespace: target.namespace,
            pid: target.pid,
            pod: target.pod,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routes_views_are_the_wire_contracts() {
        let served: Vec<&str> = VIEWS.iter().map(|(name, _)| *name).collect();
        assert_eq!(served, nsdebug_wire::diag::VIEWS);
    }

    /// Found in the flow restructuring: a container gone while its network
    /// namespace was joined (the interfaces, routes and sockets views) was
    /// a 500, while the same container gone under the other views is a 409.
    #[test]
    fn a_container_gone_while_its_network_is_joined_is_a_conflict() {
        let target = Target {
            namespace: "shop".into(),
            pod: "web".into(),
            pod_uid: String::new(),
            container: "web".into(),
            container_id: "abc".into(),
            state: crate::inventory::ContainerState::Running,
            pid: 1,
            process: crate::process::ProcessIdentity {
                pid: 1,
                start_time: 1,
            },
            namespaces: Default::default(),
            runtime_spec: Default::default(),
        };
        let gone =
            crate::enter::NetnsError::TargetGone(crate::process::PinError::Recycled { pid: 1 });
        let answer = diag_error(DiagError::Netns(gone), &target);
        assert_eq!(answer.code(), axum::http::StatusCode::CONFLICT);
        assert_eq!(
            answer.message(),
            "container \"web\" of pod shop/web stopped while being read"
        );
    }
}
