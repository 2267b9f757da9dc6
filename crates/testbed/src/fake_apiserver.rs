//! A small stand-in for the Kubernetes API server's review and event
//! endpoints: the API server cannot run here, so its `TokenReview` and
//! `SubjectAccessReview` are served from a table of users and RBAC-like
//! rules, and `Event`s are stored, speaking the real JSON. Every review and
//! event the agent sends is recorded, so tests check what was asked.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A user: bearer token, name, groups.
#[derive(Clone)]
pub struct FakeUser {
    pub token: &'static str,
    pub name: &'static str,
    pub groups: Vec<&'static str>,
}

/// `user` may `verb` `resource` (with `/subresource`; qualified by its group
/// outside the core group: `pods.metrics.k8s.io`) in `namespace` (`None`:
/// everywhere, cluster scope included).
#[derive(Clone)]
pub struct Rule {
    pub user: &'static str,
    pub verb: &'static str,
    pub resource: &'static str,
    pub namespace: Option<String>,
}

/// A rule: `user` may `verb` `resource` in `namespace` (`None`: everywhere).
pub fn rule(
    user: &'static str,
    verb: &'static str,
    resource: &'static str,
    namespace: Option<&str>,
) -> Rule {
    Rule {
        user,
        verb,
        resource,
        namespace: namespace.map(String::from),
    }
}

#[derive(Clone)]
struct Tables {
    users: Vec<FakeUser>,
    rules: Vec<Rule>,
    reviews: Arc<Mutex<Vec<(String, Value)>>>,
    /// The cluster's pods, as `v1.Pod` JSON, for the plugin's lookups.
    pods: Arc<Mutex<Vec<Value>>>,
    /// The cluster's `coordination.k8s.io/v1` Leases (where agents publish
    /// their serving certificates).
    leases: Arc<Mutex<Vec<Value>>>,
    /// The cluster's Nodes, as `v1.Node` JSON.
    nodes: Arc<Mutex<Vec<Value>>>,
    /// Tokens bound to audiences other than the API server's.
    audiences: Arc<Mutex<HashMap<String, Vec<String>>>>,
    /// Answer TokenReviews as an authenticator that ignores `spec.audiences`
    /// does: authenticated, with the token's own audiences.
    ignore_audiences: Arc<AtomicBool>,
    /// The `user.extra` a token's review answers with (by token).
    extras: Arc<Mutex<HashMap<String, Value>>>,
    /// Rules whose `user` is a group: any member is allowed.
    group_rules: Arc<Mutex<Vec<Rule>>>,
    /// The user whose access reviews are held unanswered until released.
    held: Arc<tokio::sync::watch::Sender<Option<String>>>,
}

/// The audience of the API server's own tokens (`--api-audiences`).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

pub struct FakeApiServer {
    pub url: String,
    pub kubeconfig: PathBuf,
    reviews: Arc<Mutex<Vec<(String, Value)>>>,
    pods: Arc<Mutex<Vec<Value>>>,
    leases: Arc<Mutex<Vec<Value>>>,
    nodes: Arc<Mutex<Vec<Value>>>,
    audiences: Arc<Mutex<HashMap<String, Vec<String>>>>,
    ignore_audiences: Arc<AtomicBool>,
    extras: Arc<Mutex<HashMap<String, Value>>>,
    group_rules: Arc<Mutex<Vec<Rule>>>,
    held: Arc<tokio::sync::watch::Sender<Option<String>>>,
    _dir: tempfile::TempDir,
}

async fn token_review(State(t): State<Tables>, Json(review): Json<Value>) -> Json<Value> {
    t.reviews
        .lock()
        .unwrap()
        .push(("TokenReview".into(), review.clone()));
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    // As the kube-apiserver: a token is valid for its own audiences (the
    // API server's unless bound to others); a review names the audiences it
    // accepts (the API server's when it names none) and is answered with
    // the intersection, or refused when there is none.
    let own: Vec<String> = t
        .audiences
        .lock()
        .unwrap()
        .get(token)
        .cloned()
        .unwrap_or_else(|| vec![API_AUDIENCE.to_string()]);
    let wanted: Vec<String> = match review["spec"]["audiences"].as_array() {
        Some(list) if !list.is_empty() => list
            .iter()
            .filter_map(|a| a.as_str().map(String::from))
            .collect(),
        _ => vec![API_AUDIENCE.to_string()],
    };
    let granted: Vec<String> = if t.ignore_audiences.load(Ordering::SeqCst) {
        own.clone()
    } else {
        own.iter().filter(|a| wanted.contains(a)).cloned().collect()
    };
    let status = match t.users.iter().find(|u| u.token == token) {
        Some(_) if granted.is_empty() => json!({
            "authenticated": false,
            "error": format!("[invalid bearer token, token audiences {own:?} is invalid for the target audiences {wanted:?}]"),
        }),
        Some(user) => {
            let mut status = json!({
                "authenticated": true,
                "user": {"username": user.name, "uid": format!("uid-{}", user.name), "groups": user.groups},
                "audiences": granted,
            });
            if let Some(extra) = t.extras.lock().unwrap().get(token) {
                status["user"]["extra"] = extra.clone();
            }
            status
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    Json(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "metadata": {"creationTimestamp": null},
        "spec": review["spec"],
        "status": status,
    }))
}

async fn access_review(State(t): State<Tables>, Json(review): Json<Value>) -> Json<Value> {
    t.reviews
        .lock()
        .unwrap()
        .push(("SubjectAccessReview".into(), review.clone()));
    let spec = &review["spec"];
    let attrs = &spec["resourceAttributes"];
    // A resource of a named group is qualified as RBAC writes it:
    // `pods.metrics.k8s.io`.
    let mut resource = attrs["resource"].as_str().unwrap_or_default().to_string();
    if let Some(group) = attrs["group"].as_str().filter(|g| !g.is_empty()) {
        resource = format!("{resource}.{group}");
    }
    if let Some(sub) = attrs["subresource"].as_str().filter(|s| !s.is_empty()) {
        resource = format!("{resource}/{sub}");
    }
    let namespace = attrs["namespace"].as_str().filter(|ns| !ns.is_empty());
    let user = spec["user"].as_str().unwrap_or_default();
    // A held user's review waits (already recorded) until it is released.
    let mut held = t.held.subscribe();
    let _ = held.wait_for(|h| h.as_deref() != Some(user)).await;
    let verb = attrs["verb"].as_str().unwrap_or_default();
    let groups: Vec<&str> = spec["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let allowed = t.allows(user, verb, &resource, namespace)
        || groups
            .iter()
            .any(|group| t.group_allows(group, verb, &resource, namespace));
    Json(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": if allowed {
            json!({"allowed": true, "reason": "allowed by the test's rules"})
        } else {
            json!({"allowed": false})
        },
    }))
}

/// `POST /api/v1/namespaces/{ns}/events`: validated as the API server does
/// for the fields it requires, stored, and echoed with server-set metadata.
async fn create_event(
    State(t): State<Tables>,
    axum::extract::Path(namespace): axum::extract::Path<String>,
    Json(event): Json<Value>,
) -> (axum::http::StatusCode, Json<Value>) {
    use axum::http::StatusCode;
    let invalid = |message: &str| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422, "message": message}),
            ),
        )
    };
    if event["metadata"]["namespace"] != namespace.as_str()
        || event["involvedObject"]["namespace"] != namespace.as_str()
    {
        return invalid("involvedObject.namespace: does not match event.namespace");
    }
    if event["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        return invalid("metadata.name: Required value");
    }
    if event["reason"].as_str().unwrap_or_default().is_empty()
        || event["source"]["component"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    {
        return invalid("reason and source.component: Required value");
    }
    let mut stored = event.clone();
    stored["metadata"]["uid"] = json!(format!("event-{}", t.reviews.lock().unwrap().len()));
    stored["metadata"]["resourceVersion"] = json!("1");
    t.reviews
        .lock()
        .unwrap()
        .push(("Event".into(), stored.clone()));
    (StatusCode::CREATED, Json(stored))
}

/// Whether `rule` lets `subject` (a user or a group) do `verb` on
/// `resource` in `namespace` (`None`: cluster scope, all namespaces).
fn rule_allows(
    rule: &Rule,
    subject: &str,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    rule.user == subject
        && rule.verb == verb
        && rule.resource == resource
        && match (&rule.namespace, namespace) {
            (None, _) => true,
            (Some(want), Some(ns)) => want == ns,
            (Some(_), None) => false,
        }
}

impl Tables {
    /// Whether the rules let `user` do `verb` on `resource` in `namespace`
    /// (`None`: cluster scope, all namespaces).
    fn allows(&self, user: &str, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
        self.rules
            .iter()
            .any(|rule| rule_allows(rule, user, verb, resource, namespace))
    }

    /// Whether the group rules let members of `group` do it.
    fn group_allows(
        &self,
        group: &str,
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> bool {
        self.group_rules
            .lock()
            .unwrap()
            .iter()
            .any(|rule| rule_allows(rule, group, verb, resource, namespace))
    }

    /// The caller of a request, from its bearer token, as the API server's
    /// authentication does; a `401 Status` otherwise.
    fn caller(&self, headers: &HeaderMap) -> Result<FakeUser, Refused> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        self.users
            .iter()
            .find(|u| u.token == token)
            .cloned()
            .ok_or_else(|| {
                Refused(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "Unauthorized".into(),
                )
            })
    }

    /// RBAC for a request, with the API server's own wording when refused.
    fn authorize(
        &self,
        user: &FakeUser,
        verb: &str,
        resource: &str,
        name: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<(), Refused> {
        if self.allows(user.name, verb, resource, namespace) {
            return Ok(());
        }
        let (resource, sub) = match resource.split_once('/') {
            Some((r, s)) => (r, format!(" subresource \"{s}\"")),
            None => (resource, String::new()),
        };
        let what = match name {
            Some(name) => format!("{resource} \"{name}\""),
            None => resource.to_string(),
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let message = format!(
            "{what} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\"{sub} in API group \"\" {scope}",
            user.name
        );
        Err(Refused(StatusCode::FORBIDDEN, "Forbidden", message))
    }

    fn record(&self, kind: &str, value: Value) {
        self.reviews.lock().unwrap().push((kind.into(), value));
    }
}

/// A refusal of the API server's authentication or authorization.
struct Refused(StatusCode, &'static str, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        status(self.0, self.1, &self.2)
    }
}

/// A `v1.Status` answer.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    (
        code,
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16(),
        })),
    )
        .into_response()
}

/// Whether a pod matches a label selector (`k=v`, `k==v`, `k!=v`, `k`, `!k`,
/// comma-separated).
fn labels_match(pod: &Value, selector: &str) -> bool {
    let labels = &pod["metadata"]["labels"];
    selector
        .split(',')
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .all(|term| {
            if let Some((key, value)) = term.split_once("!=") {
                labels[key.trim()].as_str() != Some(value.trim())
            } else if let Some((key, value)) = term.split_once('=') {
                let value = value.trim_start_matches('=');
                labels[key.trim()].as_str() == Some(value.trim())
            } else if let Some(key) = term.strip_prefix('!') {
                labels[key.trim()].is_null()
            } else {
                !labels[term].is_null()
            }
        })
}

/// A pod's value of a field selector's field; `None` for one the API server
/// does not support for pods.
fn pod_field<'a>(pod: &'a Value, field: &str) -> Option<&'a str> {
    let value = match field {
        "metadata.name" => &pod["metadata"]["name"],
        "metadata.namespace" => &pod["metadata"]["namespace"],
        "spec.nodeName" => &pod["spec"]["nodeName"],
        "status.phase" => &pod["status"]["phase"],
        _ => return None,
    };
    Some(value.as_str().unwrap_or_default())
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    #[serde(default)]
    label_selector: String,
    #[serde(default)]
    field_selector: String,
}

async fn list_pods(
    t: &Tables,
    headers: &HeaderMap,
    namespace: Option<&str>,
    query: &ListQuery,
) -> Response {
    let user = match t.caller(headers) {
        Ok(user) => user,
        Err(refused) => return refused.into_response(),
    };
    if let Err(refused) = t.authorize(&user, "list", "pods", None, namespace) {
        return refused.into_response();
    }
    let mut fields = Vec::new();
    for term in query.field_selector.split(',').filter(|t| !t.is_empty()) {
        let Some((field, value)) = term.split_once('=') else {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("invalid selector: '{term}'; can't understand '{term}'"),
            );
        };
        let field = field.trim_end_matches('=');
        if pod_field(&json!({}), field).is_none() {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("field label not supported: {field}"),
            );
        }
        fields.push((field.to_string(), value.trim_start_matches('=').to_string()));
    }
    let items: Vec<Value> = t
        .pods
        .lock()
        .unwrap()
        .iter()
        .filter(|pod| namespace.is_none_or(|ns| pod["metadata"]["namespace"] == ns))
        .filter(|pod| labels_match(pod, &query.label_selector))
        .filter(|pod| {
            fields
                .iter()
                .all(|(field, value)| pod_field(pod, field) == Some(value.as_str()))
        })
        .cloned()
        .collect();
    t.record(
        "PodList",
        json!({"user": user.name, "namespace": namespace, "labelSelector": query.label_selector, "fieldSelector": query.field_selector}),
    );
    Json(json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }))
    .into_response()
}

async fn list_all_pods(
    State(t): State<Tables>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    list_pods(&t, &headers, None, &query).await
}

async fn list_namespace_pods(
    State(t): State<Tables>,
    headers: HeaderMap,
    Path(namespace): Path<String>,
    Query(query): Query<ListQuery>,
) -> Response {
    list_pods(&t, &headers, Some(&namespace), &query).await
}

fn find_pod(t: &Tables, namespace: &str, name: &str) -> Option<Value> {
    t.pods
        .lock()
        .unwrap()
        .iter()
        .find(|pod| pod["metadata"]["namespace"] == namespace && pod["metadata"]["name"] == name)
        .cloned()
}

async fn get_pod(
    State(t): State<Tables>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let user = match t.caller(&headers) {
        Ok(user) => user,
        Err(refused) => return refused.into_response(),
    };
    if let Err(refused) = t.authorize(&user, "get", "pods", Some(&name), Some(&namespace)) {
        return refused.into_response();
    }
    match find_pod(&t, &namespace, &name) {
        Some(pod) => Json(pod).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{name}\" not found"),
        ),
    }
}

#[derive(serde::Deserialize)]
struct ForwardQuery {
    ports: String,
}

/// `pods/portforward` over WebSocket (`v4.channel.k8s.io`), as the API
/// server and kubelet serve it: each port has a data and an error channel
/// (2i, 2i+1), each first carrying the port (u16, little-endian); the pod's
/// port is dialled on the pod's loopback, which for the agent under test is
/// this machine's.
async fn port_forward(
    State(t): State<Tables>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<ForwardQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let user = match t.caller(&headers) {
        Ok(user) => user,
        Err(refused) => return refused.into_response(),
    };
    if let Err(refused) = t.authorize(
        &user,
        "create",
        "pods/portforward",
        Some(&name),
        Some(&namespace),
    ) {
        return refused.into_response();
    }
    if find_pod(&t, &namespace, &name).is_none() {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{name}\" not found"),
        );
    }
    let Ok(port) = query.ports.parse::<u16>() else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("the fake forwards one port, not {:?}", query.ports),
        );
    };
    t.record(
        "PortForward",
        json!({"user": user.name, "namespace": namespace, "pod": name, "port": port}),
    );
    upgrade
        .protocols(["v4.channel.k8s.io"])
        .on_upgrade(move |socket| forward(socket, name, port))
}

async fn forward(mut socket: WebSocket, pod: String, port: u16) {
    let port_frame = |channel: u8| {
        let mut frame = vec![channel];
        frame.extend_from_slice(&port.to_le_bytes());
        Message::Binary(frame.into())
    };
    if socket.send(port_frame(0)).await.is_err() || socket.send(port_frame(1)).await.is_err() {
        return;
    }
    let tcp = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        Ok(tcp) => tcp,
        Err(err) => {
            // As Go words it.
            let why = match err.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                _ => err.to_string(),
            };
            let message = format!(
                "error forwarding port {port} to pod {pod}, uid : failed to execute portforward in network namespace: dial tcp4 127.0.0.1:{port}: connect: {why}"
            );
            let mut frame = vec![1u8];
            frame.extend_from_slice(message.as_bytes());
            let _ = socket.send(Message::Binary(frame.into())).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let (mut ws_send, mut ws_receive) = socket.split();
    let to_pod = async move {
        while let Some(Ok(message)) = ws_receive.next().await {
            match message {
                Message::Binary(data)
                    if data.len() > 1
                        && data[0] == 0
                        && tcp_write.write_all(&data[1..]).await.is_err() =>
                {
                    break;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = tcp_write.shutdown().await;
    };
    let from_pod = async move {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match tcp_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(0u8);
                    frame.extend_from_slice(&buffer[..n]);
                    if ws_send.send(Message::Binary(frame.into())).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = ws_send.send(Message::Close(None)).await;
    };
    tokio::join!(to_pod, from_pod);
}

fn find_lease(t: &Tables, namespace: &str, name: &str) -> Option<Value> {
    t.leases
        .lock()
        .unwrap()
        .iter()
        .find(|l| l["metadata"]["namespace"] == namespace && l["metadata"]["name"] == name)
        .cloned()
}

/// `GET` a Lease, for a caller with `get leases` in its namespace.
async fn get_lease(
    State(t): State<Tables>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let user = match t.caller(&headers) {
        Ok(user) => user,
        Err(refused) => return refused.into_response(),
    };
    if let Err(refused) = t.authorize(&user, "get", "leases", Some(&name), Some(&namespace)) {
        return refused.into_response();
    }
    match find_lease(&t, &namespace, &name) {
        Some(lease) => Json(lease).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("leases.coordination.k8s.io \"{name}\" not found"),
        ),
    }
}

/// `GET` a Node. As for Leases, the agent's kubeconfig here has no
/// credentials: a request without a token is the agent's service account,
/// whose `get nodes` tests/integration/offline/deploy.rs checks.
async fn get_node(
    State(t): State<Tables>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if headers.contains_key("authorization") {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "only the agent's service account reads Nodes here",
        );
    }
    let node = t
        .nodes
        .lock()
        .unwrap()
        .iter()
        .find(|n| n["metadata"]["name"] == name.as_str())
        .cloned();
    match node {
        Some(node) => Json(node).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("nodes \"{name}\" not found"),
        ),
    }
}

/// A server-side apply (`PATCH`, `application/apply-patch+yaml`) of a
/// Lease: created when missing, its applied fields replaced otherwise. The
/// agent's kubeconfig here has no credentials: a request without a token is
/// the agent's service account, whose RBAC (`create`, `patch` leases in its
/// own namespace) tests/integration/offline/deploy.rs checks in the chart and manifests.
async fn apply_lease(
    State(t): State<Tables>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/apply-patch+yaml" {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("the fake serves server-side apply only, not {content_type:?}"),
        );
    }
    let Ok(applied) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
    };
    if applied["kind"] != "Lease"
        || applied["apiVersion"] != "coordination.k8s.io/v1"
        || applied["metadata"]["name"] != name.as_str()
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the applied object is not this Lease",
        );
    }
    let mut stored = find_lease(&t, &namespace, &name).unwrap_or_else(|| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": name, "namespace": namespace, "uid": format!("lease-{name}")}})
    });
    if let Some(annotations) = applied["metadata"]["annotations"].as_object() {
        for (key, value) in annotations {
            stored["metadata"]["annotations"][key] = value.clone();
        }
    }
    if applied["spec"].is_object() {
        stored["spec"] = applied["spec"].clone();
    }
    {
        let mut leases = t.leases.lock().unwrap();
        leases.retain(|l| {
            !(l["metadata"]["namespace"] == namespace && l["metadata"]["name"] == name)
        });
        leases.push(stored.clone());
    }
    t.record("Lease", stored.clone());
    Json(stored).into_response()
}

impl FakeApiServer {
    pub async fn start(users: Vec<FakeUser>, rules: Vec<Rule>) -> Self {
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let pods = Arc::new(Mutex::new(Vec::new()));
        let leases = Arc::new(Mutex::new(Vec::new()));
        let nodes = Arc::new(Mutex::new(Vec::new()));
        let audiences = Arc::new(Mutex::new(HashMap::new()));
        let ignore_audiences = Arc::new(AtomicBool::new(false));
        let extras = Arc::new(Mutex::new(HashMap::new()));
        let group_rules = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(tokio::sync::watch::Sender::new(None));
        let tables = Tables {
            users,
            rules,
            reviews: reviews.clone(),
            pods: pods.clone(),
            leases: leases.clone(),
            nodes: nodes.clone(),
            audiences: audiences.clone(),
            ignore_audiences: ignore_audiences.clone(),
            extras: extras.clone(),
            group_rules: group_rules.clone(),
            held: held.clone(),
        };
        let app = Router::new()
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                post(token_review),
            )
            .route(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                post(access_review),
            )
            .route("/api/v1/namespaces/{namespace}/events", post(create_event))
            .route("/api/v1/nodes/{name}", get(get_node))
            .route("/api/v1/pods", get(list_all_pods))
            .route(
                "/api/v1/namespaces/{namespace}/pods",
                get(list_namespace_pods),
            )
            .route("/api/v1/namespaces/{namespace}/pods/{name}", get(get_pod))
            .route(
                "/api/v1/namespaces/{namespace}/pods/{name}/portforward",
                get(port_forward),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}",
                get(get_lease).patch(apply_lease),
            )
            .with_state(tables);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\nusers:\n- name: agent\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: agent\ncurrent-context: fake\n"
            ),
        )
        .unwrap();
        Self {
            url,
            kubeconfig,
            reviews,
            pods,
            leases,
            nodes,
            audiences,
            ignore_audiences,
            extras,
            group_rules,
            held,
            _dir: dir,
        }
    }

    /// Adds a Lease (`coordination.k8s.io/v1` JSON) to the cluster.
    pub fn add_lease(&self, lease: Value) {
        self.leases.lock().unwrap().push(lease);
    }

    /// Adds a Node (`v1.Node` JSON) to the cluster.
    pub fn add_node(&self, node: Value) {
        self.nodes.lock().unwrap().push(node);
    }

    /// The Lease `namespace/name`, if there is one.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.leases
            .lock()
            .unwrap()
            .iter()
            .find(|l| l["metadata"]["namespace"] == namespace && l["metadata"]["name"] == name)
            .cloned()
    }

    /// Binds `token` to `audiences` (as `kubectl create token --audience`).
    pub fn bind_token(&self, token: &str, audiences: &[&str]) {
        self.audiences.lock().unwrap().insert(
            token.to_string(),
            audiences.iter().map(|a| a.to_string()).collect(),
        );
    }

    /// From now on, answer TokenReviews ignoring `spec.audiences`, as an
    /// authenticator that knows nothing of audiences would.
    pub fn ignore_audiences(&self) {
        self.ignore_audiences.store(true, Ordering::SeqCst);
    }

    /// The reviews of `token` answer with `extra` as the user's `extra`
    /// (`{"key": ["value", ...]}`, as the API server sends it).
    pub fn set_extra(&self, token: &str, extra: Value) {
        self.extras.lock().unwrap().insert(token.into(), extra);
    }

    /// Members of the group `rule.user` may do what `rule` says.
    pub fn allow_group(&self, rule: Rule) {
        self.group_rules.lock().unwrap().push(rule);
    }

    /// Access reviews for `user` are recorded but not answered until
    /// [`FakeApiServer::release_reviews`] (a slow API server, on demand).
    pub fn hold_reviews_of(&self, user: &str) {
        self.held.send_replace(Some(user.into()));
    }

    /// Answers the held reviews, and holds no more.
    pub fn release_reviews(&self) {
        self.held.send_replace(None);
    }

    /// Adds a pod (`v1.Pod` JSON) to the cluster.
    pub fn add_pod(&self, pod: Value) {
        self.pods.lock().unwrap().push(pod);
    }

    /// A kubeconfig in `dir` for `user` of this server, with `namespace` as
    /// its context's namespace.
    pub fn user_kubeconfig(
        &self,
        dir: &std::path::Path,
        user: &FakeUser,
        namespace: &str,
    ) -> PathBuf {
        let path = dir.join(format!("{}.kubeconfig", user.name));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: {name}\n    namespace: {namespace}\ncurrent-context: fake\n",
                self.url,
                name = user.name,
                token = user.token,
            ),
        )
        .unwrap();
        path
    }

    /// The reviews (or `Event`s) of `kind` received so far.
    pub fn reviews(&self, kind: &str) -> Vec<Value> {
        self.reviews
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }
}
