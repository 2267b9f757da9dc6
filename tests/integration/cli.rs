//! The command line as an operator meets it against the test bed:
//! environment variables work as flags, the CRI socket is found on its own,
//! SIGTERM and the health listener behave (the checks that need no runtime
//! are in `offline::cli`).

use crate::support;

use support::{Agent, NODE_NAME};

#[tokio::test]
async fn discovery_finds_a_runtime_under_the_host_root() {
    let socket = support::testbed_socket();
    let host = tempfile::tempdir().unwrap();
    // A k3s layout: only the k3s path exists, and it is the test bed's containerd.
    let k3s = host.path().join("run/k3s/containerd");
    std::fs::create_dir_all(&k3s).unwrap();
    std::os::unix::fs::symlink(&socket, k3s.join("containerd.sock")).unwrap();
    let agent = Agent::start_with(&["--host-root", host.path().to_str().unwrap()]);
    let list = agent.get_ok("/v1/targets").await;
    assert_eq!(list["runtime"]["name"], "containerd");
    assert_eq!(list["node"], NODE_NAME);
    assert!(
        agent.log().contains("run/k3s/containerd/containerd.sock"),
        "{}",
        agent.log()
    );
}

#[tokio::test]
async fn environment_configures_the_daemonset_way() {
    let socket = support::testbed_socket();
    let agent = Agent::start_with_env(&[
        ("NSDEBUG_CRI_SOCKET", socket.to_str().unwrap()),
        ("NODE_NAME", "node-from-env"),
    ]);
    let list = agent.get_ok("/v1/targets").await;
    assert_eq!(list["node"], "node-from-env");
    let (code, body) = agent.get("/healthz").await;
    assert_eq!((code, body), (200, serde_json::json!("ok")));
    let (code, _) = agent.get("/readyz").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn sigterm_stops_the_agent_cleanly() {
    let socket = support::testbed_socket();
    let mut agent = Agent::start_with(&["--cri-socket", socket.to_str().unwrap()]);
    assert_eq!(agent.get("/healthz").await.0, 200);
    let status = agent.terminate();
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    assert!(
        agent.log().contains("SIGTERM: shutting down"),
        "{}",
        agent.log()
    );
}

#[tokio::test]
async fn health_listener_answers_probes_and_nothing_else() {
    let socket = support::testbed_socket();
    // A free port for the health listener: bind, note, release.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let health = format!("127.0.0.1:{port}");
    // TLS and Kubernetes authentication on the main port, as in a DaemonSet;
    // the kubeconfig is never used for health.
    let api = support::fake_apiserver::FakeApiServer::start(vec![], vec![]).await;
    let agent = Agent::start_secure(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--kubeconfig",
        api.kubeconfig.to_str().unwrap(),
        "--health-listen",
        &health,
    ]);
    assert!(agent.url.starts_with("https://"));
    let get = |path: &str| reqwest::get(format!("http://{health}{path}"));
    for path in ["/healthz", "/livez", "/readyz"] {
        let response = get(path).await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        assert_eq!(response.text().await.unwrap(), "ok");
    }
    // Nothing of the API is behind it, with or without a token.
    for path in ["/v1/targets", "/api/v1/pods", "/", "/openapi.json"] {
        assert_eq!(get(path).await.unwrap().status().as_u16(), 404, "{path}");
    }
    assert!(api.reviews("TokenReview").is_empty());
    // A malformed address is a usage error.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nsdebug"))
        .args(["serve", "--health-listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("--health-listen 'nowhere' is not an IP address and port"),
        "{output:?}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let socket = support::testbed_socket();
    let agent = Agent::start_with(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    assert_eq!(agent.get("/healthz").await.0, 200);
    let log = agent.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let ready = lines
        .iter()
        .find(|l| l["fields"]["message"] == "inventory ready")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(ready["level"], "INFO");
    assert!(ready["timestamp"].is_string());
    assert_eq!(ready["fields"]["node"], "nsdebug-test-node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_live_sessions_and_ends_them_within_the_grace() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let (ns, mut client, pod) = support::one_pod(
        "shutdown",
        "busy",
        vec![support::pods::ContainerSpec::busybox("main")],
    )
    .await;
    let mut agent = Agent::start_on_testbed(&["--shutdown-grace", "2s"]);
    let url = format!(
        "{}/api/v1/namespaces/{ns}/pods/busy/exec?command=sh&command=-c&command=exec+sleep+6543&stdout=true&tty=true",
        agent.url.replace("http://", "ws://")
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // The first (empty) frame: the command runs.
    assert!(matches!(socket.next().await, Some(Ok(Message::Binary(_)))));
    let started = std::time::Instant::now();
    let stopping = tokio::task::spawn_blocking(move || {
        let status = agent.terminate();
        (status, agent)
    });
    let mut stdout = String::new();
    let mut status = None;
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Binary(data) if data.first() == Some(&1) => {
                stdout.push_str(&String::from_utf8_lossy(&data[1..]))
            }
            Message::Binary(data) if data.first() == Some(&3) => {
                status = Some(serde_json::from_slice::<serde_json::Value>(&data[1..]).unwrap())
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(
        stdout.contains("nsdebug: the agent is shutting down; this session ends within 2s"),
        "{stdout:?}"
    );
    let status = status.expect("a status before the close");
    assert_eq!(status["message"], "the agent is shutting down");
    let (exit, agent) = stopping.await.unwrap();
    assert_eq!(exit.code(), Some(0), "{}", agent.log());
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert!(
        agent.log().contains("waiting for live sessions"),
        "{}",
        agent.log()
    );
    // Nothing of the session is left running.
    support::eventually(
        "the session's command to be gone",
        std::time::Duration::from_secs(10),
        || async {
            let left = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| c == b"sleep\x006543\x00")
                    .unwrap_or(false)
            });
            (!left).then_some(())
        },
    )
    .await;
    pod.remove(&mut client).await;
}
