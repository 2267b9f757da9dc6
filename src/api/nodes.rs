//! `GET /api/v1/nodes` and `/api/v1/nodes/{name}`: this node only, for
//! `kubectl top node`, which divides usage by `status.allocatable`.
//!
//! With an API server (`--auth kube`) the answer is the node's own Node
//! object, read from it. Without one, or when it cannot be read (no right to
//! `get nodes`, an API server that is down), the agent describes the host
//! itself: `status.capacity` and `allocatable` are its online CPUs and
//! `MemTotal`, its labels the well-known `kubernetes.io/hostname`, `os` and
//! `arch`, and the annotation `nsdebug.dev/node-source: host` says so.
//! Authorized as `list nodes` / `get nodes` (core group).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};

use super::resource_metrics::authorize;
use super::selector::Selector;
use super::table::{ListOptions, ListQuery};
use super::{ApiError, AppState, RequestInfo};
use crate::auth::{Action, User};
use crate::usage::quantity;

/// How long the API server has to answer for the Node before the host
/// describes itself.
const API_SERVER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where a node object came from (`nsdebug.dev/node-source`).
const SOURCE_ANNOTATION: &str = "nsdebug.dev/node-source";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/nodes", get(list))
        .route("/api/v1/nodes/{name}", get(get_node))
}

async fn list(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    info: RequestInfo,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &user, &info, Action::new("list", "nodes")).await?;
    let options = ListOptions::parse(query)?;
    let labels = super::label_selector(options.label_selector.as_deref())?;
    let fields = Selector::fields(
        options.field_selector.as_deref().unwrap_or(""),
        &["metadata.name"],
    )
    .map_err(|err| ApiError::bad_request(format!("invalid fieldSelector: {err}")))?;
    let node = node_object(&state).await?;
    let node_labels = self::labels(&node);
    let selected = labels.matches(|key| node_labels.get(key).map(String::as_str))
        && fields.matches(|_| Some(&*state.node_name));
    Ok(Json(json!({
        "kind": "NodeList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": ""},
        "items": if selected { vec![node] } else { vec![] },
    })))
}

async fn get_node(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    info: RequestInfo,
    Path(name): Path<String>,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    authorize(
        &state,
        &user,
        &info,
        Action::new("get", "nodes").name(&name),
    )
    .await?;
    ListOptions::parse(query)?;
    if name != *state.node_name {
        return Err(ApiError::object_not_found(
            "nodes",
            &name,
            format!("nodes \"{name}\" not found"),
        ));
    }
    Ok(Json(node_object(&state).await?))
}

/// This node as a `v1.Node`: the API server's, else the host's own account.
pub(super) async fn node_object(state: &AppState) -> Result<Value, ApiError> {
    if let Some(client) = &state.kube {
        let api = kube::Api::<Node>::all(client.clone());
        let read = api.get(&state.node_name);
        // A slow API server is what the agent is for: answer from the host.
        match tokio::time::timeout(API_SERVER_WAIT, read)
            .await
            .unwrap_or_else(|_| Err(kube::Error::Service("timed out".into())))
        {
            Ok(node) => {
                let mut object =
                    serde_json::to_value(node).map_err(|err| ApiError::internal(&err))?;
                object["kind"] = json!("Node");
                object["apiVersion"] = json!("v1");
                return Ok(object);
            }
            Err(err) => tracing::debug!(
                error = %crate::error_chain(&err),
                node = %state.node_name,
                "the API server's Node is not readable; describing the host instead"
            ),
        }
    }
    let capacity = state
        .usage
        .capacity()
        .map_err(|err| ApiError::internal(&err))?;
    Ok(host_node(&state.node_name, capacity))
}

/// The host's own account of itself as a `v1.Node`.
fn host_node(name: &str, capacity: crate::usage::host::Capacity) -> Value {
    let resources = json!({
        "cpu": capacity.cpus.to_string(),
        "memory": quantity::memory(capacity.memory_bytes),
    });
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
            },
            "annotations": {SOURCE_ANNOTATION: "host"},
        },
        "status": {
            "capacity": resources,
            "allocatable": resources,
        },
    })
}

/// A node object's labels.
pub(super) fn labels(node: &Value) -> BTreeMap<String, String> {
    node["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_describes_itself_with_capacity_and_allocatable() {
        let node = host_node(
            "n1",
            crate::usage::host::Capacity {
                cpus: 4,
                memory_bytes: 8 * 1024 * 1024 * 1024,
            },
        );
        assert_eq!(
            node["status"]["allocatable"],
            json!({"cpu": "4", "memory": "8Gi"})
        );
        assert_eq!(node["status"]["capacity"], node["status"]["allocatable"]);
        assert_eq!(labels(&node)["kubernetes.io/hostname"], "n1");
        assert_eq!(node["metadata"]["annotations"][SOURCE_ANNOTATION], "host");
    }
}
