//! The resource Metrics API (`metrics.k8s.io/v1beta1`), as metrics-server
//! serves it, for `kubectl top pod` and `kubectl top node` against the node.
//!
//! | route | answer | right needed |
//! |---|---|---|
//! | `GET /apis/metrics.k8s.io/v1beta1/pods` | `PodMetricsList`, every pod | `list pods.metrics.k8s.io` (cluster scope) |
//! | `GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods` | `PodMetricsList` | `list pods.metrics.k8s.io` in `ns` |
//! | `GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}` | `PodMetrics` | `get pods.metrics.k8s.io` `ns/name` |
//! | `GET /apis/metrics.k8s.io/v1beta1/nodes` | `NodeMetricsList` (this node) | `list nodes.metrics.k8s.io` |
//! | `GET /apis/metrics.k8s.io/v1beta1/nodes/{name}` | `NodeMetrics` | `get nodes.metrics.k8s.io` `name` |
//!
//! The numbers come from [`crate::usage`]: CPU as the rate over the last
//! sampling window (stated as `window`), memory as the working set. As in
//! metrics-server, only running pods whose running containers all have a
//! rate are listed, and asking for one without gets 404. These are reads:
//! not sessions, so not audited, but a refusal is audited as every refusal is.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::selector::{POD_FIELDS, Selector};
use super::table::{ListOptions, ListQuery};
use super::{ApiError, AppState, RequestInfo};
use crate::auth::{Action, User};
use crate::inventory::{ContainerState, Pod};
use crate::usage::{Usage, quantity};

/// The API group this module serves.
pub const GROUP: &str = "metrics.k8s.io";
const API_VERSION: &str = "metrics.k8s.io/v1beta1";

pub fn routes() -> Router<AppState> {
    const BASE: &str = "/apis/metrics.k8s.io/v1beta1";
    Router::new()
        .route(&format!("{BASE}/pods"), get(list_all_pods))
        .route(
            &format!("{BASE}/namespaces/{{namespace}}/pods"),
            get(list_namespace_pods),
        )
        .route(
            &format!("{BASE}/namespaces/{{namespace}}/pods/{{name}}"),
            get(get_pod),
        )
        .route(&format!("{BASE}/nodes"), get(list_nodes))
        .route(&format!("{BASE}/nodes/{{name}}"), get(get_node))
}

/// Reviews `action`; a refusal is audited and answered as the API server
/// answers it.
pub(super) async fn authorize(
    state: &AppState,
    user: &User,
    info: &RequestInfo,
    action: Action,
) -> Result<(), ApiError> {
    let Err(err) = state.auth.authorize(user, &action).await else {
        return Ok(());
    };
    let err = ApiError::from(err);
    if err.code() == axum::http::StatusCode::FORBIDDEN {
        let mut object = json!({
            "apiGroup": action.group,
            "resource": action.resource,
        });
        if let Some(namespace) = &action.namespace {
            object["namespace"] = json!(namespace);
        }
        if let Some(name) = &action.name {
            object["name"] = json!(name);
        }
        let mut record =
            crate::audit::AuditRecord::new(user, info.peer, &info.user_agent, &info.uri, object);
        record
            .note("request-id", &info.request_id)
            .decision(false, err.message());
        let mut event = record.event("ResponseComplete", err.code().as_u16());
        event["verb"] = json!(action.verb);
        state.audit.refused(&event);
    }
    Err(err)
}

async fn list_all_pods(
    state: State<AppState>,
    user: Extension<User>,
    info: RequestInfo,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    list_pods(state, user, info, None, query).await
}

async fn list_namespace_pods(
    state: State<AppState>,
    user: Extension<User>,
    info: RequestInfo,
    Path(namespace): Path<String>,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    list_pods(state, user, info, Some(namespace), query).await
}

async fn list_pods(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    info: RequestInfo,
    namespace: Option<String>,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let mut action = Action::new("list", "pods").group(GROUP);
    action.namespace = namespace.clone();
    authorize(&state, &user, &info, action).await?;
    let options = ListOptions::parse(query)?;
    let labels = super::label_selector(options.label_selector.as_deref())?;
    let fields = Selector::fields(options.field_selector.as_deref().unwrap_or(""), POD_FIELDS)
        .map_err(|err| ApiError::bad_request(format!("invalid fieldSelector: {err}")))?;
    let snapshot = state.inventory.refresh().await?;
    let mut pods: Vec<&Pod> = super::pods::latest_sandboxes(&snapshot.pods)
        .into_iter()
        .filter(|pod| namespace.as_deref().is_none_or(|ns| pod.namespace == ns))
        .filter(|pod| {
            let user_labels = pod.user_labels();
            labels.matches(|key| user_labels.get(key).map(String::as_str))
                && fields.matches(|field| super::pods::field_value(pod, &state.node_name, field))
        })
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let items: Vec<Value> = pods
        .into_iter()
        .filter_map(|pod| pod_metrics(pod, |id| state.usage.container(id)))
        .collect();
    Ok(Json(json!({
        "kind": "PodMetricsList",
        "apiVersion": API_VERSION,
        "metadata": {},
        "items": items,
    })))
}

async fn get_pod(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    info: RequestInfo,
    Path((namespace, name)): Path<(String, String)>,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let action = Action::new("get", "pods")
        .group(GROUP)
        .namespace(&namespace)
        .name(&name);
    authorize(&state, &user, &info, action).await?;
    ListOptions::parse(query)?;
    let snapshot = state.inventory.refresh().await?;
    let object = crate::resolve::find_pod_in(&snapshot.pods, &namespace, &name)
        .and_then(|pod| pod_metrics(pod, |id| state.usage.container(id)));
    let mut object =
        object.ok_or_else(|| not_found("podmetrics", &format!("{namespace}/{name}")))?;
    object["kind"] = json!("PodMetrics");
    object["apiVersion"] = json!(API_VERSION);
    Ok(Json(object))
}

async fn list_nodes(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    info: RequestInfo,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    authorize(
        &state,
        &user,
        &info,
        Action::new("list", "nodes").group(GROUP),
    )
    .await?;
    let options = ListOptions::parse(query)?;
    let labels = super::label_selector(options.label_selector.as_deref())?;
    let node = super::nodes::node_object(&state).await?;
    let node_labels = super::nodes::labels(&node);
    let items: Vec<Value> = labels
        .matches(|key| node_labels.get(key).map(String::as_str))
        .then(|| node_metrics(&state.node_name, &node_labels, state.usage.host()))
        .flatten()
        .into_iter()
        .collect();
    Ok(Json(json!({
        "kind": "NodeMetricsList",
        "apiVersion": API_VERSION,
        "metadata": {},
        "items": items,
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
        Action::new("get", "nodes").group(GROUP).name(&name),
    )
    .await?;
    ListOptions::parse(query)?;
    if name != *state.node_name {
        return Err(not_found("nodemetrics", &name));
    }
    let node = super::nodes::node_object(&state).await?;
    let mut object = node_metrics(
        &state.node_name,
        &super::nodes::labels(&node),
        state.usage.host(),
    )
    .ok_or_else(|| not_found("nodemetrics", &name))?;
    object["kind"] = json!("NodeMetrics");
    object["apiVersion"] = json!(API_VERSION);
    Ok(Json(object))
}

/// metrics-server's answer for an object it has no metrics for.
fn not_found(resource: &str, name: &str) -> ApiError {
    ApiError::object_not_found(
        resource,
        name,
        format!("{resource}.{GROUP} \"{name}\" not found"),
    )
    .in_group(GROUP)
}

/// A `PodMetrics` item for `pod`, or `None` when it is not running or a
/// running container of it has no rate yet (`usage` of a container ID).
fn pod_metrics(pod: &Pod, usage: impl Fn(&str) -> Option<Usage>) -> Option<Value> {
    if super::pod_object::phase(pod) != "Running" {
        return None;
    }
    let running: Vec<_> = pod
        .latest_containers()
        .filter(|c| c.state == ContainerState::Running)
        .map(|c| Some((c.name.as_str(), usage(&c.id)?)))
        .collect::<Option<_>>()?;
    // The pod's window is its oldest container reading's.
    let oldest = running
        .iter()
        .map(|(_, u)| *u)
        .min_by_key(|u| u.timestamp)?;
    let containers: Vec<Value> = running
        .iter()
        .map(|(name, usage)| json!({"name": name, "usage": usage_json(usage)}))
        .collect();
    Some(json!({
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "creationTimestamp": rfc3339(now()),
            "labels": pod.user_labels(),
        },
        "timestamp": rfc3339(oldest.timestamp),
        "window": quantity::go_duration(oldest.window),
        "containers": containers,
    }))
}

/// A `NodeMetrics` item for this node, or `None` before the host has a rate.
fn node_metrics(
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
    usage: Option<Usage>,
) -> Option<Value> {
    let usage = usage?;
    Some(json!({
        "metadata": {
            "name": name,
            "creationTimestamp": rfc3339(now()),
            "labels": labels,
        },
        "timestamp": rfc3339(usage.timestamp),
        "window": quantity::go_duration(usage.window),
        "usage": usage_json(&usage),
    }))
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "cpu": quantity::cpu(usage.cpu_nanocores),
        "memory": quantity::memory(usage.memory_bytes),
    })
}

fn now() -> i64 {
    i64::try_from(Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
}

/// A `metav1.Time`: RFC 3339 in UTC, whole seconds.
fn rfc3339(unix_nanos: i64) -> String {
    Timestamp::from_nanosecond(i128::from(unix_nanos))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_whole_seconds_in_utc() {
        assert_eq!(rfc3339(1_796_322_255_467_243_250), "2026-12-03T18:24:15Z");
    }

    #[test]
    fn a_node_item_has_metrics_servers_shape() {
        let usage = Usage {
            timestamp: 1_796_322_255_000_000_000,
            window: std::time::Duration::from_millis(20_018),
            cpu_nanocores: 151_183_335,
            memory_bytes: 1_632_284 * 1024,
        };
        let labels = [("kubernetes.io/hostname".to_string(), "n1".to_string())].into();
        let item = node_metrics("n1", &labels, Some(usage)).unwrap();
        assert_eq!(item["metadata"]["name"], "n1");
        assert_eq!(item["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
        assert_eq!(item["timestamp"], "2026-12-03T18:24:15Z");
        assert_eq!(item["window"], "20.018s");
        assert_eq!(
            item["usage"],
            json!({"cpu": "151183335n", "memory": "1632284Ki"})
        );
        assert_eq!(node_metrics("n1", &labels, None), None);
    }
}
