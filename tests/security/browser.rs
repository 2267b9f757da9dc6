//! Findings 2, 4, 5 and 7 of "Only the right caller, at the right agent",
//! the browser's share. Any web page could drive an `--auth none` agent (the
//! demo): a cross-site POST with `Content-Type: text/plain` ran a command, a
//! page on a rebound name (`Host: evil.example`) was served, and a
//! cross-site WebSocket got a shell. Login links travelled in the browser's
//! argv, a link minted by one user silently logged another user's tab in,
//! and one user's logins evicted everybody else's UI sessions.

use serde_json::{Value, json};

use crate::support::testbed::ContainerSpec;
use crate::support::{Agent, one_pod};

/// Where the attacks below would leave their mark in the container.
const MARKER: &str = "/tmp/nsdebug-browser-marker";

/// A command that leaves the marker, as the attacking page sends it.
fn attack_body() -> String {
    json!({"command": ["sh", "-c", format!("echo pwned > {MARKER}")]}).to_string()
}

/// Whether the marker exists, asked with a legitimate request.
async fn marker_written(agent: &Agent, run: &str) -> bool {
    let answer: Value = reqwest::Client::new()
        .post(format!("{}{run}", agent.url))
        .json(&json!({"command": ["cat", MARKER]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["exitCode"].is_number(), "{answer}");
    answer["stdout"]
        .as_str()
        .unwrap_or_default()
        .contains("pwned")
}

/// The status and body of a raw request.
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let code = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn assert_refusal(code: u16, body: &Value, want: u16, says: &str) {
    assert_eq!(code, want, "{body}");
    assert_eq!(body["kind"], "Status", "a Kubernetes Status: {body}");
    assert_eq!(body["code"], want, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "the refusal says why: {message}");
}

#[tokio::test]
async fn a_cross_site_post_runs_nothing_even_without_authentication() {
    let (ns, mut client, pod) = one_pod(
        "sec-browser-origin",
        "victim",
        vec![ContainerSpec::busybox("app")],
    )
    .await;
    let agent = Agent::start();
    let run = format!("/v1/targets/{ns}/victim/run");
    let http = reqwest::Client::new();

    // A page on another site posts JSON (a preflight would stop fetch; a
    // form or sendBeacon does not wait for one).
    let (code, body) = send(
        http.post(format!("{}{run}", agent.url))
            .header("Origin", "https://evil.example")
            .header("Content-Type", "application/json")
            .body(attack_body()),
    )
    .await;
    assert_refusal(code, &body, 403, "https://evil.example");
    assert!(!marker_written(&agent, &run).await, "the command ran");

    // The form-able content type, with no Origin at all (as a proxy or an
    // old browser might strip it).
    let (code, body) = send(
        http.post(format!("{}{run}", agent.url))
            .header("Content-Type", "text/plain")
            .body(attack_body()),
    )
    .await;
    assert_refusal(code, &body, 415, "application/json");
    assert!(!marker_written(&agent, &run).await, "the command ran");

    // The agent's own page (same origin) still works.
    let (code, body) = send(
        http.post(format!("{}{run}", agent.url))
            .header("Origin", &agent.url)
            .json(&json!({"command": ["hostname"]})),
    )
    .await;
    assert_eq!((code, body["stdout"].as_str()), (200, Some("victim\n")));
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn a_rebound_host_name_is_refused() {
    let (ns, mut client, pod) = one_pod(
        "sec-browser-host",
        "victim",
        vec![ContainerSpec::busybox("app")],
    )
    .await;
    let agent = Agent::start();
    let run = format!("/v1/targets/{ns}/victim/run");
    let http = reqwest::Client::new();

    // evil.example now resolves to 127.0.0.1: the page is same-origin with
    // itself, so only the Host header tells.
    for (method, path) in [("GET", "/"), ("GET", "/v1/targets"), ("POST", run.as_str())] {
        let request = http
            .request(method.parse().unwrap(), format!("{}{path}", agent.url))
            .header("Host", "evil.example")
            .header("Origin", "http://evil.example");
        let request = if method == "POST" {
            request
                .header("Content-Type", "application/json")
                .body(attack_body())
        } else {
            request
        };
        let (code, body) = send(request).await;
        assert_refusal(code, &body, 421, "evil.example");
    }
    assert!(!marker_written(&agent, &run).await, "the command ran");

    // Loopback names with any port, and the names the agent was given.
    drop(agent);
    let agent = Agent::start_on_testbed(&["--allowed-host", "agent.example"]);
    let port = agent.url.rsplit(':').next().unwrap();
    for host in [
        format!("localhost:{port}"),
        "127.0.0.1".to_string(),
        "[::1]:9".to_string(),
        "agent.example".to_string(),
        format!("Agent.Example:{port}"),
    ] {
        let (code, body) = send(
            http.get(format!("{}/v1/targets", agent.url))
                .header("Host", &host),
        )
        .await;
        assert_eq!(code, 200, "{host}: {body}");
    }
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn a_cross_site_websocket_gets_no_shell() {
    let (ns, mut client, pod) = one_pod(
        "sec-browser-ws",
        "victim",
        vec![ContainerSpec::busybox("app")],
    )
    .await;
    let agent = Agent::start();
    let run = format!("/v1/targets/{ns}/victim/run");
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("command", "sh")
        .append_pair("command", "-c")
        .append_pair("command", &format!("echo pwned > {MARKER}"))
        .append_pair("stdout", "true")
        .finish();
    let url = format!(
        "{}/api/v1/namespaces/{ns}/pods/victim/exec?{query}",
        agent.url.replace("http", "ws")
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    request
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    let response = match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response,
        Ok((mut socket, _)) => {
            use futures::StreamExt;
            while socket.next().await.is_some() {}
            panic!(
                "the upgrade was accepted; the marker: {}",
                marker_written(&agent, &run).await
            );
        }
        Err(other) => panic!("{other}"),
    };
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default())
        .unwrap_or(Value::Null);
    assert_refusal(response.status().as_u16(), &body, 403, "evil.example");
    assert!(!marker_written(&agent, &run).await, "the command ran");
    pod.remove(&mut client).await;
}
