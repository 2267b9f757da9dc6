//! Kubernetes API discovery: what `kubectl` asks before anything else.
//!
//! The agent serves the core group's `v1` with the resources it implements
//! (`pods`, `namespaces`, `nodes`), so kubectl's resource mapping (`pods`,
//! `pod`, `po`) works unchanged, and the group `metrics.k8s.io` of
//! `kubectl top` ([`super::resource_metrics`]). Once a group is listed in
//! `/apis`, every kubectl command with a cold cache reads its resource list.

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;

/// What anyone may ask: the version.
pub fn public_routes() -> Router<AppState> {
    Router::new().route("/version", get(version))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/api/v1", get(core_v1_resources))
        .route(
            "/apis/metrics.k8s.io/v1beta1",
            get(metrics_v1beta1_resources),
        )
}

/// `version.Info`: kubectl prints it as the server version.
async fn version() -> axum::Json<Value> {
    axum::Json(json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0-nsdebug+", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("linux/{}", std::env::consts::ARCH),
    }))
}

async fn api_versions() -> axum::Json<Value> {
    axum::Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
}

async fn api_groups() -> axum::Json<Value> {
    let metrics = json!({"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"});
    axum::Json(json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{
            "name": super::resource_metrics::GROUP,
            "versions": [metrics],
            "preferredVersion": metrics,
        }],
    }))
}

/// What metrics-server registers for its group.
async fn metrics_v1beta1_resources() -> axum::Json<Value> {
    axum::Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "metrics.k8s.io/v1beta1",
        "resources": [{
            "name": "nodes",
            "singularName": "",
            "namespaced": false,
            "kind": "NodeMetrics",
            "verbs": ["get", "list"],
        }, {
            "name": "pods",
            "singularName": "",
            "namespaced": true,
            "kind": "PodMetrics",
            "verbs": ["get", "list"],
        }],
    }))
}

async fn core_v1_resources() -> axum::Json<Value> {
    axum::Json(json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [{
            "name": "pods",
            "singularName": "pod",
            "namespaced": true,
            "kind": "Pod",
            "verbs": ["get", "list"],
            "shortNames": ["po"],
            "categories": ["all"],
        }, {
            "name": "pods/exec",
            "singularName": "",
            "namespaced": true,
            "kind": "PodExecOptions",
            "verbs": ["create", "get"],
        }, {
            "name": "pods/log",
            "singularName": "",
            "namespaced": true,
            "kind": "Pod",
            "verbs": ["get"],
        }, {
            "name": "pods/portforward",
            "singularName": "",
            "namespaced": true,
            "kind": "PodPortForwardOptions",
            "verbs": ["create", "get"],
        }, {
            "name": "namespaces",
            "singularName": "namespace",
            "namespaced": false,
            "kind": "Namespace",
            "verbs": ["get", "list"],
            "shortNames": ["ns"],
        }, {
            "name": "nodes",
            "singularName": "node",
            "namespaced": false,
            "kind": "Node",
            "verbs": ["get", "list"],
            "shortNames": ["no"],
        }],
    }))
}
