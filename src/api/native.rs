//! The native JSON API: everything on the node with host PIDs and namespace
//! identities, and single-target resolution, for runbooks and tools.

use super::target::Wanted;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::admission::{Right, admit};
use super::{ApiError, AppState};
use crate::auth::Action;
use crate::inventory::{ContainerState, Pod};
use crate::process::NamespaceIds;
use crate::resolve::Target;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/targets", get(list_targets))
        .route("/v1/targets/{namespace}/{pod}", get(target))
        .route("/v1/containers/{id}", get(target))
}

/// `GET /v1/targets`: every pod and container on the node.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetList {
    pub node: String,
    pub runtime: crate::cri::RuntimeVersion,
    /// Only the namespaces where the caller may list pods are shown (they
    /// may not list pods cluster-wide).
    pub restricted: bool,
    pub pods: Vec<PodEntry>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodEntry {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub sandbox_id: String,
    /// `ready` or `notready`, the sandbox state.
    pub state: &'static str,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Vec<String>,
    pub containers: Vec<ContainerEntry>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEntry {
    pub name: String,
    pub id: String,
    pub image: String,
    pub state: ContainerState,
    pub attempt: u32,
    pub restart_count: i32,
    /// Host PID of the container's init process; `null` unless running.
    pub pid: Option<u32>,
    /// Inode numbers of `/proc/PID/ns/*`; `null` unless running.
    #[schema(value_type = Option<std::collections::BTreeMap<String, u64>>)]
    pub namespaces: Option<NamespaceIds>,
    /// The shell found in the container's filesystem (`/bin/bash`, `/bin/sh`,
    /// ...), `null` when it has none (distroless) or is not running.
    pub shell: Option<&'static str>,
}

/// Shells looked for in a container, preferred first.
pub const SHELLS: &[&str] = &[
    "/bin/bash",
    "/bin/sh",
    "/bin/ash",
    "/usr/bin/bash",
    "/usr/bin/sh",
    "/busybox/sh",
];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    namespace: Option<String>,
    label_selector: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct TargetQuery {
    /// Read by [`Wanted`](super::target::Wanted); named here so every other
    /// name stays checked.
    #[serde(rename = "container")]
    _container: Option<String>,
}

use super::{QueryOf as Q, query};

async fn list_targets(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<crate::auth::User>,
    q: Q<ListQuery>,
) -> Result<Json<TargetList>, ApiError> {
    let q = query(q)?;
    let mut action = Action::new("list", "pods");
    action.namespace = q.namespace.clone();
    // Without a namespace, a user who may not list pods cluster-wide sees
    // the namespaces where they may (the web UI's picker for a team).
    let visible = match state.auth.authorize(&user, &action).await {
        Ok(()) => None,
        Err(crate::auth::AuthError::Forbidden { message }) if q.namespace.is_none() => {
            let namespaces = listable_namespaces(&state, &user).await?;
            if namespaces.is_empty() {
                return Err(crate::auth::AuthError::Forbidden { message }.into());
            }
            Some(namespaces)
        }
        Err(err) => return Err(err.into()),
    };
    let labels = super::label_selector(q.label_selector.as_deref())?;
    let snapshot = state.inventory.refresh().await?;
    let proc_root = state.inventory.proc_root();
    let pods = snapshot
        .pods
        .iter()
        .filter(|pod| q.namespace.as_deref().is_none_or(|ns| pod.namespace == ns))
        .filter(|pod| {
            visible
                .as_ref()
                .is_none_or(|namespaces| namespaces.contains(&pod.namespace))
        })
        .filter(|pod| {
            let pod_labels = pod.user_labels();
            labels.matches(|key| pod_labels.get(key).map(String::as_str))
        })
        .map(|pod: &Pod| PodEntry {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            sandbox_id: pod.sandbox_id.clone(),
            state: if pod.ready { "ready" } else { "notready" },
            pod_ip: pod.ips.first().cloned(),
            pod_ips: pod.ips.clone(),
            containers: pod
                .containers
                .iter()
                .map(|c| {
                    // Only a process that is still the pinned one is reported.
                    let live = c.process.filter(|p| proc_root.is_alive(*p));
                    ContainerEntry {
                        name: c.name.clone(),
                        id: c.id.clone(),
                        image: c.image.clone(),
                        state: c.state,
                        attempt: c.attempt,
                        restart_count: c.restart_count,
                        pid: live.map(|p| p.pid),
                        namespaces: live.and_then(|p| proc_root.namespaces(p.pid).ok()),
                        shell: live.and_then(|p| proc_root.executable_in_root(p.pid, SHELLS)),
                    }
                })
                .collect(),
        })
        .collect();
    Ok(Json(TargetList {
        node: state.node_name.to_string(),
        runtime: state.inventory.runtime().clone(),
        restricted: visible.is_some(),
        pods,
    }))
}

/// The namespaces with pods on this node where `user` may list pods.
async fn listable_namespaces(
    state: &AppState,
    user: &crate::auth::User,
) -> Result<Vec<String>, ApiError> {
    let snapshot = state.inventory.refresh().await?;
    let mut namespaces: Vec<String> = snapshot.pods.iter().map(|p| p.namespace.clone()).collect();
    namespaces.sort();
    namespaces.dedup();
    let checks = namespaces.into_iter().map(|ns| async move {
        let action = Action::new("list", "pods").namespace(&ns);
        match state.auth.authorize(user, &action).await {
            Ok(()) => Ok(Some(ns)),
            Err(crate::auth::AuthError::Forbidden { .. }) => Ok(None),
            Err(err) => Err(ApiError::from(err)),
        }
    });
    let allowed = futures::future::try_join_all(checks).await?;
    Ok(allowed.into_iter().flatten().collect())
}

async fn target(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<crate::auth::User>,
    info: super::RequestInfo,
    Wanted(wanted): Wanted,
    q: Q<TargetQuery>,
) -> Result<Json<Target>, ApiError> {
    query(q)?;
    let admission = admit(&state, &user, &info, wanted, Right::Read).await?;
    Ok(Json(admission.resolve(&state).await?.0))
}
