//! `GET` namespaces: the namespaces that have pods on this node.
//!
//! The runtime has no namespace objects; a namespace exists here when a pod of
//! it runs on the node. kubectl asks for the namespace when a pod is not found,
//! to tell "no such pod" from "no such namespace", so this is part of the read API.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use k8s_openapi::api::core::v1::{Namespace, NamespaceSpec, NamespaceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::pod_object::{time, with_type_meta};
use super::table::{self, Column, ListOptions, ListQuery, Row, wants_table};
use super::{ApiError, AppState};
use crate::auth::Action;
use crate::inventory::Snapshot;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/namespaces", get(list))
        .route("/api/v1/namespaces/{name}", get(get_one))
}

/// Namespace name -> creation time of its oldest pod (Unix nanoseconds).
fn namespaces(snapshot: &Snapshot) -> BTreeMap<&str, i64> {
    let mut found: BTreeMap<&str, i64> = BTreeMap::new();
    for pod in &snapshot.pods {
        let oldest = found
            .entry(pod.namespace.as_str())
            .or_insert(pod.created_at);
        *oldest = (*oldest).min(pod.created_at);
    }
    found
}

fn object(name: &str, created_at: i64) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                name.to_string(),
            )])),
            creation_timestamp: time(created_at),
            ..Default::default()
        },
        spec: Some(NamespaceSpec {
            finalizers: Some(vec!["kubernetes".to_string()]),
        }),
        status: Some(NamespaceStatus {
            phase: Some("Active".to_string()),
            ..Default::default()
        }),
    }
}

fn to_json(namespace: &Namespace) -> serde_json::Value {
    with_type_meta(
        serde_json::to_value(namespace).unwrap_or_default(),
        "Namespace",
        "v1",
    )
}

const COLUMNS: &[Column] = &[
    Column {
        name: "Name",
        format: "name",
        priority: 0,
        description: "Name of the namespace.",
    },
    Column {
        name: "Status",
        format: "",
        priority: 0,
        description: "Always Active: a namespace with pods on this node.",
    },
    Column {
        name: "Age",
        format: "",
        priority: 0,
        description: "Time since its oldest pod on this node was created.",
    },
];

fn rows(found: Vec<(Namespace, i64)>) -> Vec<Row> {
    found
        .into_iter()
        .map(|(ns, created_at)| Row {
            cells: vec![
                ns.metadata.name.clone().unwrap_or_default().into(),
                "Active".into(),
                table::age(created_at).into(),
            ],
            metadata: ns.metadata.clone(),
            object: Box::new(move || to_json(&ns)),
        })
        .collect()
}

async fn list(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<crate::auth::User>,
    headers: HeaderMap,
    query: ListQuery,
) -> Result<Response, ApiError> {
    state
        .auth
        .authorize(&user, &Action::new("list", "namespaces"))
        .await?;
    let options = ListOptions::parse(query)?;
    let include = options.include_object()?;
    let labels = super::label_selector(options.label_selector.as_deref())?;
    let snapshot = state.inventory.refresh().await?;
    let found: Vec<(Namespace, i64)> = namespaces(&snapshot)
        .into_iter()
        .map(|(name, created)| (object(name, created), created))
        .filter(|(ns, _)| {
            let labels_of = ns.metadata.labels.as_ref();
            labels.matches(|key| labels_of.and_then(|l| l.get(key)).map(String::as_str))
        })
        .collect();
    if wants_table(&headers) {
        let rows = rows(found);
        return Ok(Json(table::table(COLUMNS, rows, include)).into_response());
    }
    let items: Vec<_> = found
        .iter()
        .map(|(ns, _)| serde_json::to_value(ns).unwrap_or_default())
        .collect();
    Ok(Json(json!({
        "kind": "NamespaceList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": ""},
        "items": items,
    }))
    .into_response())
}

async fn get_one(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<crate::auth::User>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: ListQuery,
) -> Result<Response, ApiError> {
    state
        .auth
        .authorize(&user, &Action::new("get", "namespaces").name(&name))
        .await?;
    let include = ListOptions::parse(query)?.include_object()?;
    let snapshot = state.inventory.refresh().await?;
    let created = namespaces(&snapshot)
        .get(name.as_str())
        .copied()
        .ok_or_else(|| {
            ApiError::object_not_found(
                "namespaces",
                &name,
                format!("namespaces \"{name}\" not found"),
            )
        })?;
    let namespace = object(&name, created);
    if wants_table(&headers) {
        let rows = rows(vec![(namespace, created)]);
        return Ok(Json(table::table(COLUMNS, rows, include)).into_response());
    }
    Ok(Json(to_json(&namespace)).into_response())
}
