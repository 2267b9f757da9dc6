//! Issue 14, "Only the right caller, at the right agent" (findings 1, 3 and
//! part of 5): every route admits a request the same way, authenticate ->
//! authorize on what the caller named -> resolve -> session slot -> audit.
//!
//! - A container ID resolved before it was authorized: any authenticated
//!   identity enumerated the node's containers (`ambiguous: it matches ...`),
//!   learnt the pod and namespace behind an ID from the 403, and took a
//!   session slot before its refusal.
//! - The access review dropped the user's `extra` and decisions were cached by
//!   user name alone, whatever the groups.
//! - Failed authentications were counted per address: behind `kubectl
//!   port-forward` every client is 127.0.0.1, so five bad tokens locked out
//!   every user.

use serde_json::{Value, json};

use crate::support::fake_apiserver::{FakeApiServer, FakeUser, rule};
use crate::support::{Agent, testbed_socket};

fn https() -> reqwest::Client {
    // The agent's certificate is self-signed (generated at start-up).
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

async fn call(agent: &Agent, method: &str, path: &str, token: &str) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = https()
        .request(method.clone(), format!("{}{path}", agent.url))
        .bearer_auth(token);
    if method == reqwest::Method::POST {
        request = request.json(&json!({"command": ["hostname"]}));
    }
    let response = request.send().await.unwrap();
    let code = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn secure_agent(api: &FakeApiServer, more: &[&str]) -> Agent {
    let socket = testbed_socket();
    let mut args = vec![
        "--cri-socket",
        socket.to_str().unwrap(),
        "--kubeconfig",
        api.kubeconfig.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    Agent::start_secure(&args)
}

fn user(token: &'static str, name: &'static str, groups: Vec<&'static str>) -> FakeUser {
    FakeUser {
        token,
        name,
        groups,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_review_carries_the_users_uid_groups_and_extra() {
    let api = FakeApiServer::start(
        vec![user(
            "carol-token",
            "carol",
            vec!["dev", "system:authenticated"],
        )],
        vec![rule("carol", "list", "pods", None)],
    )
    .await;
    let extra = json!({
        "authentication.kubernetes.io/credential-id": ["JTI=7f3c9a"],
        "scopes.example.com/allowed": ["read-only"],
    });
    api.set_extra("carol-token", extra.clone());
    let agent = secure_agent(&api, &[]);
    let (code, body) = call(
        &agent,
        "GET",
        "/api/v1/namespaces/default/pods",
        "carol-token",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let review = api
        .reviews("SubjectAccessReview")
        .into_iter()
        .next()
        .expect("an access review");
    assert_eq!(review["spec"]["user"], "carol");
    assert_eq!(review["spec"]["uid"], "uid-carol");
    assert_eq!(
        review["spec"]["groups"],
        json!(["dev", "system:authenticated"])
    );
    assert_eq!(
        review["spec"]["extra"], extra,
        "a scoped token stays scoped: {review}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_in_different_groups_gets_different_decisions() {
    let api = FakeApiServer::start(
        vec![
            user("sam-ops-token", "sam", vec!["ops"]),
            user("sam-guest-token", "sam", vec!["guests"]),
        ],
        vec![],
    )
    .await;
    api.allow_group(rule("ops", "list", "pods", None));
    let agent = secure_agent(&api, &[]);
    let (code, body) = call(&agent, "GET", "/api/v1/pods", "sam-ops-token").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = call(&agent, "GET", "/api/v1/pods", "sam-guest-token").await;
    assert_eq!(
        code, 403,
        "the ops decision is not reused for sam as a guest: {body}"
    );
    // And the other way round, with the cache warm for both.
    assert_eq!(
        call(&agent, "GET", "/api/v1/pods", "sam-ops-token").await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_from_one_address_do_not_lock_out_a_good_one() {
    let api = FakeApiServer::start(
        vec![user("alice-token", "alice", vec![])],
        vec![rule("alice", "list", "pods", None)],
    )
    .await;
    let agent = secure_agent(&api, &[]);
    // Everyone behind `kubectl port-forward` is 127.0.0.1.
    for guess in 0..50 {
        let (code, body) = call(&agent, "GET", "/api/v1/pods", &format!("guess-{guess}")).await;
        assert_eq!(code, 401, "{body}");
    }
    let (code, body) = call(&agent, "GET", "/api/v1/pods", "alice-token").await;
    assert_eq!(code, 200, "a good token is not locked out: {body}");
    // One bad token sent again and again is what waits, unreviewed.
    for _ in 0..5 {
        assert_eq!(call(&agent, "GET", "/api/v1/pods", "stale").await.0, 401);
    }
    let reviews = api.reviews("TokenReview").len();
    let (code, body) = call(&agent, "GET", "/api/v1/pods", "stale").await;
    assert_eq!(code, 429, "{body}");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "the refusal is about the token: {body}"
    );
    assert_eq!(
        api.reviews("TokenReview").len(),
        reviews,
        "not reviewed again"
    );
    let (code, body) = call(&agent, "GET", "/api/v1/pods", "alice-token").await;
    assert_eq!(code, 200, "{body}");
}
