//! A small stand-in for the Kubernetes API server's review and event
//! endpoints: the API server cannot run here, so its `TokenReview` and
//! `SubjectAccessReview` are served from a table of users and RBAC-like
//! rules, and `Event`s are stored, speaking the real JSON. Every review and
//! event the agent sends is recorded, so tests check what was asked.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

/// A user: bearer token, name, groups.
#[derive(Clone)]
pub struct FakeUser {
    pub token: &'static str,
    pub name: &'static str,
    pub groups: Vec<&'static str>,
}

/// `user` may `verb` `resource` (with `/subresource`) in `namespace` (`None`:
/// everywhere, cluster scope included).
#[derive(Clone)]
pub struct Rule {
    pub user: &'static str,
    pub verb: &'static str,
    pub resource: &'static str,
    pub namespace: Option<String>,
}

#[derive(Clone)]
struct Tables {
    users: Vec<FakeUser>,
    rules: Vec<Rule>,
    reviews: Arc<Mutex<Vec<(String, Value)>>>,
}

pub struct FakeApiServer {
    pub url: String,
    pub kubeconfig: PathBuf,
    reviews: Arc<Mutex<Vec<(String, Value)>>>,
    _dir: tempfile::TempDir,
}

async fn token_review(State(t): State<Tables>, Json(review): Json<Value>) -> Json<Value> {
    t.reviews
        .lock()
        .unwrap()
        .push(("TokenReview".into(), review.clone()));
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let status = match t.users.iter().find(|u| u.token == token) {
        Some(user) => json!({
            "authenticated": true,
            "user": {"username": user.name, "uid": format!("uid-{}", user.name), "groups": user.groups},
        }),
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
    let resource = match attrs["subresource"].as_str() {
        Some(sub) if !sub.is_empty() => {
            format!("{}/{sub}", attrs["resource"].as_str().unwrap_or_default())
        }
        _ => attrs["resource"].as_str().unwrap_or_default().to_string(),
    };
    let namespace = attrs["namespace"].as_str().filter(|ns| !ns.is_empty());
    let allowed = t.rules.iter().any(|rule| {
        Some(rule.user) == spec["user"].as_str()
            && rule.verb == attrs["verb"].as_str().unwrap_or_default()
            && rule.resource == resource
            && match (&rule.namespace, namespace) {
                (None, _) => true,
                (Some(want), Some(ns)) => want == ns,
                (Some(_), None) => false,
            }
    });
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

impl FakeApiServer {
    pub async fn start(users: Vec<FakeUser>, rules: Vec<Rule>) -> Self {
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let tables = Tables {
            users,
            rules,
            reviews: reviews.clone(),
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
            _dir: dir,
        }
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
