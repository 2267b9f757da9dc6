//! Findings 2, 4, 5 and 7 of "Only the right caller, at the right agent",
//! the browser's share. Any web page could drive an `--auth none` agent (the
//! demo): a cross-site POST with `Content-Type: text/plain` ran a command, a
//! page on a rebound name (`Host: evil.example`) was served, and a
//! cross-site WebSocket got a shell. Login links travelled in the browser's
//! argv, a link minted by one user silently logged another user's tab in,
//! and one user's logins evicted everybody else's UI sessions.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::fake_apiserver::{FakeApiServer, FakeUser, rule};
use crate::support::pods::ContainerSpec;
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

#[tokio::test]
async fn a_cross_site_page_cannot_make_the_browser_fetch_from_the_agent() {
    let agent = Agent::start();
    let http = reqwest::Client::new();
    // An <img> or <script> of another site: no Origin on a no-cors GET, but
    // the browser says where the request comes from (Fetch Metadata).
    let (code, body) = send(
        http.get(format!("{}/v1/targets", agent.url))
            .header("Sec-Fetch-Site", "cross-site")
            .header("Sec-Fetch-Mode", "no-cors")
            .header("Sec-Fetch-Dest", "image"),
    )
    .await;
    assert_refusal(code, &body, 403, "another site");
    // A link from another site to the agent's page still opens it.
    let (code, _) = send(
        http.get(format!("{}/", agent.url))
            .header("Sec-Fetch-Site", "cross-site")
            .header("Sec-Fetch-Mode", "navigate")
            .header("Sec-Fetch-Dest", "document"),
    )
    .await;
    assert_eq!(code, 200);
    // ...but not any other route by navigation.
    let (code, body) = send(
        http.get(format!("{}/v1/targets", agent.url))
            .header("Sec-Fetch-Site", "cross-site")
            .header("Sec-Fetch-Mode", "navigate"),
    )
    .await;
    assert_refusal(code, &body, 403, "another site");
    // The page's own requests.
    let (code, body) = send(
        http.get(format!("{}/v1/targets", agent.url))
            .header("Sec-Fetch-Site", "same-origin")
            .header("Sec-Fetch-Mode", "cors"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
}

/// Alice and bob, who may both use the web UI; an agent that reviews them.
async fn two_users() -> (FakeApiServer, Agent) {
    let users = ["alice", "bob"]
        .into_iter()
        .map(|name| FakeUser {
            token: if name == "alice" {
                "alice-token"
            } else {
                "bob-token"
            },
            name,
            groups: vec!["dev"],
        })
        .collect();
    let rules = vec![
        rule("alice", "list", "pods", Some("default")),
        rule("bob", "list", "pods", Some("default")),
    ];
    let api = FakeApiServer::start(users, rules).await;
    let socket = crate::support::testbed_socket();
    let agent = Agent::start_secure(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--kubeconfig",
        api.kubeconfig.to_str().unwrap(),
    ]);
    (api, agent)
}

fn https() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

/// `POST /v1/login` with `body`, as a tab holding `session` (if any).
async fn login(agent: &Agent, body: Value, session: Option<&str>) -> (u16, Value) {
    let mut request = https().post(format!("{}/v1/login", agent.url)).json(&body);
    if let Some(session) = session {
        request = request.bearer_auth(session);
    }
    send(request).await
}

/// A one-time login code minted with `token`.
async fn mint(agent: &Agent, token: &str) -> String {
    let (code, minted) = send(
        https()
            .post(format!("{}/v1/login-links", agent.url))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(code, 201, "{minted}");
    minted["path"]
        .as_str()
        .unwrap()
        .trim_start_matches("/#login=")
        .to_string()
}

async fn whoami(agent: &Agent, session: &str) -> (u16, Value) {
    send(
        https()
            .get(format!("{}/v1/whoami", agent.url))
            .bearer_auth(session),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_link_of_another_user_does_not_silently_switch_a_tab() {
    let (_api, agent) = two_users().await;
    let (code, answer) = login(&agent, json!({"token": "bob-token"}), None).await;
    assert_eq!(code, 200, "{answer}");
    let bobs_tab = answer["session"].as_str().unwrap().to_string();

    // Mallory-as-alice sends bob a link. The page first learns whose it is,
    // without spending it, and shows that before any session exists.
    let link = mint(&agent, "alice-token").await;
    let (code, preview) = login(
        &agent,
        json!({"code": link, "preview": true}),
        Some(&bobs_tab),
    )
    .await;
    assert_eq!(code, 200, "{preview}");
    assert_eq!(preview["kind"], "LoginPreview", "{preview}");
    assert_eq!(preview["user"]["name"], "alice", "{preview}");
    assert!(preview.get("session").is_none(), "{preview}");

    // Redeeming it in bob's tab without saying "switch" is refused...
    let (code, refused) = login(&agent, json!({"code": link}), Some(&bobs_tab)).await;
    assert_refusal(code, &refused, 409, "logged in as bob");
    let (code, me) = whoami(&agent, &bobs_tab).await;
    assert_eq!((code, me["user"]["name"].as_str()), (200, Some("bob")));
    // ...and did not spend the link: the tab may still choose to switch.
    let (code, switched) = login(
        &agent,
        json!({"code": link, "switch": true}),
        Some(&bobs_tab),
    )
    .await;
    assert_eq!(code, 200, "{switched}");
    assert_eq!(switched["user"]["name"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_logins_do_not_end_anothers_ui_session() {
    let (_api, agent) = two_users().await;
    let (code, answer) = login(&agent, json!({"token": "alice-token"}), None).await;
    assert_eq!(code, 200, "{answer}");
    let alices = answer["session"].as_str().unwrap().to_string();
    let (code, answer) = login(&agent, json!({"token": "bob-token"}), None).await;
    assert_eq!(code, 200, "{answer}");
    let bobs_first = answer["session"].as_str().unwrap().to_string();

    // Bob logs in again and again (10,000 filled the old global table).
    let client = https();
    let url = format!("{}/v1/login", agent.url);
    let (client, url) = (&client, &url);
    futures::future::join_all((0..16).map(|_| async move {
        for _ in 0..10_000 / 16 {
            let response = client
                .post(url)
                .json(&json!({"token": "bob-token"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }))
    .await;
    let (code, me) = whoami(&agent, &alices).await;
    assert_eq!(
        (code, me["user"]["name"].as_str()),
        (200, Some("alice")),
        "alice's session survives bob's logins: {me}"
    );
    // Bob's oldest session made way for his newest.
    let (code, me) = whoami(&agent, &bobs_first).await;
    assert_eq!(code, 401, "bob's first session: {me}");
    let (code, answer) = login(&agent, json!({"token": "bob-token"}), None).await;
    assert_eq!(code, 200, "{answer}");
    let (code, me) = whoami(&agent, answer["session"].as_str().unwrap()).await;
    assert_eq!((code, me["user"]["name"].as_str()), (200, Some("bob")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_puts_no_login_secret_in_the_browsers_argv() {
    let (_api, agent) = two_users().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let opened = dir.path().join("opened");
    // The stand-in browser writes down its whole command line, as another
    // user of the machine reads it in /proc/PID/cmdline.
    std::fs::write(
        bin.join("xdg-open"),
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > {0}.tmp && mv {0}.tmp {0}\n",
            opened.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("xdg-open"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut child = std::process::Command::new(crate::support::plugin_binary())
        .args([
            "--agent",
            &agent.url,
            "--token",
            "alice-token",
            "--insecure-skip-tls-verify",
            "ui",
            "--node",
            "here",
        ])
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env_remove("NSDEBUG_TOKEN")
        .env_remove("NSDEBUG_AGENT")
        .env("KUBECONFIG", "/nonexistent")
        // The page goes here, so the test's directory takes it away.
        .env("XDG_RUNTIME_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let argv =
        crate::support::eventually("the browser was started", Duration::from_secs(10), || {
            let opened = opened.clone();
            async move { std::fs::read_to_string(&opened).ok() }
        })
        .await;
    let said = |child: std::process::Child| {
        let output = child.wait_with_output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    if argv.contains("login=") {
        let _ = child.kill();
        panic!(
            "the one-time code is on the browser's command line: {argv}\n{}",
            said(child)
        );
    }
    // What the browser was given leads to the code, for the user alone.
    let page = argv.lines().nth(1).unwrap().trim_start_matches("file://");
    let read = std::fs::metadata(page).and_then(|meta| Ok((meta, std::fs::read_to_string(page)?)));
    let _ = child.kill();
    let (meta, text) = read.unwrap_or_else(|err| panic!("{page}: {err}\n{}", said(child)));
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
    assert_eq!(mode & 0o077, 0, "only the user reads {page}");
    let code = text
        .split("#login=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no link in the page: {text}"));
    let (status, answer) = login(&agent, json!({"code": code}), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["user"]["name"], "alice");
}
