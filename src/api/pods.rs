//! `GET` pods the way the API server serves them: `v1.PodList`, `v1.Pod`, or the
//! `Table` kubectl asks for, filtered by label and field selectors.
//!
//! Listings always come from a fresh look at the runtime (two list calls), so
//! what a user sees is what runs now, and a runtime outage is a clear 503.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::pod_object;
use super::selector::{POD_FIELDS, Selector};
use super::table::{ListOptions, ListQuery, wants_table};
use super::{ApiError, AppState};
use crate::auth::Action;
use crate::inventory::Pod;
use crate::resolve;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/pods", get(list_all))
        .route("/api/v1/namespaces/{namespace}/pods", get(list_namespace))
        .route("/api/v1/namespaces/{namespace}/pods/{name}", get(get_pod))
}

async fn list_all(
    state: State<AppState>,
    user: axum::Extension<crate::auth::User>,
    headers: HeaderMap,
    query: ListQuery,
) -> Response {
    list(state, user, headers, None, query)
        .await
        .into_response()
}

async fn list_namespace(
    state: State<AppState>,
    user: axum::Extension<crate::auth::User>,
    headers: HeaderMap,
    Path(namespace): Path<String>,
    query: ListQuery,
) -> Response {
    list(state, user, headers, Some(namespace), query)
        .await
        .into_response()
}

async fn list(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<crate::auth::User>,
    headers: HeaderMap,
    namespace: Option<String>,
    query: ListQuery,
) -> Result<Response, ApiError> {
    let mut action = Action::new("list", "pods");
    action.namespace = namespace.clone();
    state.auth.authorize(&user, &action).await?;
    let options = ListOptions::parse(query)?;
    let labels = super::label_selector(options.label_selector.as_deref())?;
    let fields = Selector::fields(options.field_selector.as_deref().unwrap_or(""), POD_FIELDS)
        .map_err(|err| ApiError::bad_request(format!("invalid fieldSelector: {err}")))?;
    let include = options.include_object()?;
    let snapshot = state.inventory.refresh().await?;
    let pods: Vec<&Pod> = latest_sandboxes(&snapshot.pods)
        .into_iter()
        .filter(|pod| namespace.as_deref().is_none_or(|ns| pod.namespace == ns))
        .filter(|pod| {
            let user_labels = pod.user_labels();
            labels.matches(|key| user_labels.get(key).map(String::as_str))
                && fields.matches(|field| field_value(pod, &state.node_name, field))
        })
        .collect();
    let runtime = &state.inventory.runtime().name;
    if wants_table(&headers) {
        return Ok(
            Json(pod_object::table(&pods, &state.node_name, runtime, include)).into_response(),
        );
    }
    let items: Vec<_> = pods
        .iter()
        .map(|pod| pod_object::to_pod(pod, &state.node_name, runtime))
        .collect();
    Ok(Json(json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": ""},
        "items": items,
    }))
    .into_response())
}

/// The value of a field selector's field for `pod`.
pub(super) fn field_value<'a>(pod: &'a Pod, node_name: &'a str, field: &str) -> Option<&'a str> {
    match field {
        "metadata.name" => Some(&pod.name),
        "metadata.namespace" => Some(&pod.namespace),
        "spec.nodeName" => Some(node_name),
        "status.phase" => Some(pod_object::phase(pod)),
        "status.podIP" => Some(pod.ips.first().map(String::as_str).unwrap_or("")),
        _ => None,
    }
}

/// One sandbox per pod: the runtime may keep a pod's old, stopped sandbox beside
/// the new one; the API server would show the pod once.
pub(super) fn latest_sandboxes(pods: &[Pod]) -> Vec<&Pod> {
    let mut seen = std::collections::HashSet::new();
    pods.iter()
        .filter(|pod| seen.insert((&pod.namespace, &pod.name)))
        .filter_map(|pod| resolve::find_pod_in(pods, &pod.namespace, &pod.name))
        .collect()
}

async fn get_pod(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<crate::auth::User>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    query: ListQuery,
) -> Result<Response, ApiError> {
    let action = Action::new("get", "pods").namespace(&namespace).name(&name);
    state.auth.authorize(&user, &action).await?;
    let options = ListOptions::parse(query)?;
    let include = options.include_object()?;
    let snapshot = state.inventory.refresh().await?;
    let pod = resolve::find_pod_in(&snapshot.pods, &namespace, &name).ok_or_else(|| {
        ApiError::object_not_found("pods", &name, format!("pods \"{name}\" not found"))
    })?;
    let runtime = &state.inventory.runtime().name;
    if wants_table(&headers) {
        return Ok(Json(pod_object::table(
            &[pod],
            &state.node_name,
            runtime,
            include,
        ))
        .into_response());
    }
    let object = serde_json::to_value(pod_object::to_pod(pod, &state.node_name, runtime))
        .map_err(|err| ApiError::internal(&err))?;
    Ok(Json(pod_object::with_type_meta(object, "Pod", "v1")).into_response())
}
