//! `GET /v1/targets/{ns}/{pod}/diag/{view}` and `/v1/containers/{id}/diag/{view}`:
//! the built-in diagnostics of [`crate::diag`] as JSON.
//!
//! | view | answer | needs |
//! |---|---|---|
//! | `processes` | the container's processes (PID inside and on the host, parent, command line, user, state, RSS, CPU time, start) | `create pods/exec` |
//! | `sockets` | TCP/UDP (v4, v6) and unix sockets of the pod's network, with their processes | `get pods` |
//! | `interfaces` | interfaces, addresses, counters | `get pods` |
//! | `routes` | IPv4 routes | `get pods` |
//! | `cgroup` | memory (usage, limit, OOM kills), CPU (usage, throttling, quota), PIDs | `get pods` |
//! | `open-files` | the open descriptors of `?pid=` (inside PID; default the init) | `create pods/exec` |
//! | `env` | the environment of `?pid=`, secret-looking values redacted unless `?reveal=true` | `create pods/exec` |
//! | `mounts` | the mounts `?pid=` sees | `create pods/exec` |
//!
//! What can show secrets (command lines, environment, open paths, mounts) needs
//! the right to exec into the pod, and is audited like a session; metadata
//! (sockets, interfaces, routes, cgroup usage) needs the right to read it.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::admission::{Right, admit};
use super::{ApiError, AppState, QueryOf as Q, RequestInfo, query};
use crate::auth::User;
use crate::diag::{self, DiagError};
use crate::resolve::{Target, TargetRef};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/targets/{namespace}/{pod}/diag/{view}", get(in_pod))
        .route("/v1/containers/{id}/diag/{view}", get(in_container))
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
    container: Option<String>,
    /// A process by its PID inside the container (open-files, env, mounts).
    pid: Option<u32>,
    /// Show the values of secret-looking environment variables.
    #[serde(default)]
    reveal: bool,
}

async fn in_pod(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<User>,
    info: RequestInfo,
    Path((namespace, pod, view)): Path<(String, String, String)>,
    q: Q<DiagQuery>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let wanted = TargetRef::Pod {
        namespace,
        pod,
        container: q.container.clone().filter(|c| !c.is_empty()),
    };
    in_target(state, user, info, wanted, view, q).await
}

async fn in_container(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<User>,
    info: RequestInfo,
    Path((id, view)): Path<(String, String)>,
    q: Q<DiagQuery>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    in_target(state, user, info, TargetRef::ContainerId(id), view, q).await
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
) -> Result<Json<Value>, ApiError> {
    let right = if needs_exec(&view)? {
        Right::Exec { privileged: false }
    } else {
        Right::Read
    };
    let admission = admit(&state, &user, &info, wanted, right).await?;
    let (target, record) = admission.resolve(&state).await?;
    answer(&state, record, target, &view, &q).await
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
        DiagError::Gone { .. } => ApiError::conflict(format!(
            "container \"{}\" of pod {}/{} stopped while being read",
            target.container, target.namespace, target.pod
        )),
        other => {
            tracing::error!(error = %crate::error_chain(&other), "a diagnostic failed");
            ApiError::internal_with(crate::error_chain(&other))
        }
    }
}

async fn answer(
    state: &AppState,
    record: Option<crate::audit::AuditRecord>,
    target: Target,
    view: &str,
    q: &DiagQuery,
) -> Result<Json<Value>, ApiError> {
    let proc_root = state.inventory.proc_root().clone();
    let pid = target.pid;
    let (inside, reveal) = (q.pid, q.reveal);
    let view_name = view.to_string();
    let data: Result<Value, DiagError> = if view == "interfaces" {
        diag::network::interfaces(&proc_root, target.container_process())
            .await
            .map(|items| json!({ "items": items }))
    } else {
        let blocking = tokio::task::spawn_blocking(move || -> Result<Value, DiagError> {
            let items = match view_name.as_str() {
                "processes" => json!(diag::processes::list(&proc_root, pid)?),
                "sockets" => json!(diag::sockets::list(&proc_root, pid)?),
                "routes" => json!(diag::network::routes(&proc_root, pid)?),
                "cgroup" => return Ok(json!({ "usage": diag::cgroup::usage(&proc_root, pid)? })),
                other => {
                    let host = diag::process_files::host_pid(&proc_root, pid, inside)?;
                    match other {
                        "open-files" => json!(diag::process_files::open_files(&proc_root, host)?),
                        "env" => json!(diag::process_files::environment(&proc_root, host, reveal)?),
                        _ => json!(diag::process_files::mounts(&proc_root, host)?),
                    }
                }
            };
            Ok(json!({ "items": items }))
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
    let mut body = data?;
    body["view"] = json!(view);
    body["target"] = json!({
        "namespace": target.namespace,
        "pod": target.pod,
        "container": target.container,
        "containerId": target.container_id,
        "pid": target.pid,
    });
    Ok(Json(body))
}
