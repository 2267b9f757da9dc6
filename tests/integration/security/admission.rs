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

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::fake_apiserver::{FakeApiServer, FakeUser, rule};
use crate::support::pods::ContainerSpec;
use crate::support::{Agent, eventually, one_pod, testbed_socket};

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

/// The ID routes, with `{id}` for the container ID.
const ID_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/containers/{id}"),
    ("POST", "/v1/containers/{id}/run"),
    ("GET", "/v1/containers/{id}/diag/processes"),
    ("GET", "/v1/containers/{id}/diag/sockets"),
    ("GET", "/v1/containers/{id}/files?path=/etc/hostname"),
    ("GET", "/v1/containers/{id}/capture?filter=icmp&duration=1s"),
    ("GET", "/v1/containers/{id}/diag/dns?name=localhost"),
    ("GET", "/v1/containers/{id}/diag/tcp?host=127.0.0.1&port=1"),
];

/// A prefix of at least two of `ids` (17 IDs always share a first digit).
fn ambiguous_prefix(ids: &[String]) -> String {
    let first = |id: &String| id[..1].to_string();
    ids.iter()
        .map(first)
        .find(|p| ids.iter().filter(|id| id.starts_with(p.as_str())).count() >= 2)
        .expect("17 hex IDs share a first digit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_without_rights_learns_nothing_from_container_ids() {
    let containers = (0..17)
        .map(|i| ContainerSpec::busybox(&format!("c{i}")))
        .collect();
    let (ns, mut client, pod) = one_pod("sec-admit-ids", "victim", containers).await;
    let ids: Vec<String> = (0..17)
        .map(|i| pod.id(&format!("c{i}")).to_string())
        .collect();
    let api = FakeApiServer::start(
        vec![
            user("mallory-token", "mallory", vec!["system:serviceaccounts"]),
            user("alice-token", "alice", vec!["dev"]),
            user("root-token", "root", vec!["system:masters"]),
        ],
        vec![
            rule("alice", "create", "pods/exec", Some(&ns)),
            rule("alice", "get", "pods", Some(&ns)),
            rule("root", "list", "pods", None),
            rule("root", "get", "pods", None),
        ],
    )
    .await;
    let agent = secure_agent(&api, &[]);
    let real = ids[0].clone();
    let ambiguous = ambiguous_prefix(&ids);
    let random = "0123456789abcdef".repeat(4);
    let secrets: Vec<&str> = std::iter::once(ns.as_str())
        .chain(std::iter::once("victim"))
        .chain(ids.iter().map(String::as_str))
        .collect();

    for (method, route) in ID_ROUTES {
        let mut answers = Vec::new();
        for id in [&real, &ambiguous, &random] {
            let path = route.replace("{id}", id);
            let (code, body) = call(&agent, method, &path, "mallory-token").await;
            let text = body.to_string();
            for secret in &secrets {
                assert!(
                    !text.contains(secret),
                    "{method} {path}: the answer names {secret}: {text}"
                );
            }
            answers.push((code, body));
        }
        assert_eq!(answers[0].0, 404, "{method} {route}: {:?}", answers[0]);
        assert_eq!(
            answers[0], answers[1],
            "{method} {route}: a real ID and an ambiguous prefix look alike"
        );
        assert_eq!(
            answers[0], answers[2],
            "{method} {route}: a real ID and a random one look alike"
        );
    }

    // The owner's rights on the pod open it by ID; an ambiguous prefix still
    // lists nothing for someone who may not list every pod.
    let (code, body) = call(
        &agent,
        "GET",
        &format!("/v1/containers/{real}"),
        "alice-token",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["pod"], "victim");
    let (code, body) = call(
        &agent,
        "GET",
        &format!("/v1/containers/{ambiguous}"),
        "alice-token",
    )
    .await;
    assert_eq!(code, 404, "{body}");
    assert!(!body.to_string().contains(&ids[0][..12]), "{body}");
    // Who may list every pod may see which containers a prefix matches.
    let (_, body) = call(
        &agent,
        "GET",
        &format!("/v1/containers/{ambiguous}"),
        "root-token",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ambiguous"),
        "{body}"
    );
    pod.remove(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_container_id_requests_take_no_session_slot() {
    let (ns, mut client, pod) = one_pod(
        "sec-admit-slots",
        "victim",
        vec![ContainerSpec::busybox("app")],
    )
    .await;
    let id = pod.id("app").to_string();
    let api = FakeApiServer::start(
        vec![
            user("mallory-token", "mallory", vec![]),
            user("alice-token", "alice", vec![]),
        ],
        vec![rule("alice", "create", "pods/exec", Some(&ns))],
    )
    .await;
    let agent = std::sync::Arc::new(secure_agent(&api, &["--max-sessions", "1"]));
    // The API server is slow to answer mallory: whatever his requests hold
    // while they wait for it, they hold for as long as the test needs.
    api.hold_reviews_of("mallory");
    let mut hammering = Vec::new();
    for route in [
        "/v1/containers/{id}/run",
        "/v1/containers/{id}/capture?filter=icmp&duration=1s",
        "/v1/containers/{id}/files?path=/etc/hostname",
        "/v1/containers/{id}/diag/dns?name=localhost",
    ] {
        let agent = agent.clone();
        let path = route.replace("{id}", &id);
        let method = if route.ends_with("/run") {
            "POST"
        } else {
            "GET"
        };
        hammering.push(tokio::spawn(async move {
            call(&agent, method, &path, "mallory-token").await
        }));
    }
    let mallory_waiting = |at_least: usize| {
        let api = &api;
        move || {
            let waiting = api
                .reviews("SubjectAccessReview")
                .iter()
                .filter(|r| r["spec"]["user"] == "mallory")
                .count();
            async move { (waiting >= at_least).then_some(()) }
        }
    };
    let alice_path = format!("/v1/targets/{ns}/victim/run");
    let alice_runs = || call(&agent, "POST", &alice_path, "alice-token");
    eventually(
        "a request of mallory's to reach the API server",
        Duration::from_secs(20),
        mallory_waiting(1),
    )
    .await;
    let (code, body) = alice_runs().await;
    assert_eq!(
        code, 200,
        "the one slot is free for alice while mallory waits: {body}"
    );
    eventually(
        "all of mallory's requests to reach the API server",
        Duration::from_secs(20),
        mallory_waiting(4),
    )
    .await;
    let (code, body) = alice_runs().await;
    assert_eq!(code, 200, "{body}");
    api.release_reviews();
    for request in hammering {
        let (code, body) = request.await.unwrap();
        assert_eq!(code, 404, "{body}");
    }
    pod.remove(&mut client).await;
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
