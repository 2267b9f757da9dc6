//! containerd stops and comes back while the agent runs: readiness and listings
//! say so with a clear 503, lookups of known live containers keep working, a
//! terminal session opened before goes on throughout, and the agent recovers
//! by itself. Alone in its test binary (one test function) because it stops
//! the runtime every other test uses (cargo runs test binaries one at a time).

use nsdebug_testbed as support;

use std::process::Command;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::pods::ContainerSpec;
use support::{Agent, assert_status, eventually, repo};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An exec WebSocket (v5) to `pod` running `sh` on a terminal: the socket, or
/// the HTTP answer that refused the upgrade.
async fn open_shell(
    agent: &Agent,
    ns: &str,
    pod: &str,
) -> Result<Socket, tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>> {
    let url = format!(
        "{}/api/v1/namespaces/{ns}/pods/{pod}/exec?command=sh&stdin=true&stdout=true&tty=true",
        agent.url.replace("http://", "ws://")
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(*response),
        Err(err) => panic!("exec: {err}"),
    }
}

/// Types `line` into the terminal and waits for `want` in its output.
async fn echoes(socket: &mut Socket, line: &str, want: &str) {
    let mut frame = vec![0u8];
    frame.extend_from_slice(line.as_bytes());
    frame.push(b'\r');
    socket.send(Message::Binary(frame.into())).await.unwrap();
    let mut seen = String::new();
    let read = async {
        while !seen.contains(want) {
            match socket.next().await {
                Some(Ok(Message::Binary(data))) if data.first() == Some(&1) => {
                    seen.push_str(&String::from_utf8_lossy(&data[1..]))
                }
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("the session ended: {other:?}; output: {seen:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap_or_else(|_| panic!("no {want:?} after typing {line:?}: {seen:?}"));
}

/// A one-shot run: (HTTP status, JSON answer).
async fn run(agent: &Agent, path: &str, command: &[&str]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", agent.url))
        .json(&json!({ "command": command }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn testbed(action: &str) {
    let status = Command::new("bash")
        .arg(repo().join("hack/testbed.sh"))
        .arg(action)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "hack/testbed.sh {action} failed");
}

/// Starts containerd again however the test ends.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        testbed("start-runtime");
    }
}

#[tokio::test]
async fn runtime_outage_is_reported_and_recovered_from() {
    let (ns, mut client, pod) =
        support::one_pod("outage", "steady", vec![ContainerSpec::busybox("main")]).await;
    let agent = Agent::start_with(&[
        "--cri-socket",
        support::testbed_socket().to_str().unwrap(),
        "--cri-timeout",
        "2s",
    ]);
    let target = agent.get_ok(&format!("/v1/targets/{ns}/steady")).await;
    // A terminal session opened before the outage.
    let mut shell = open_shell(&agent, &ns, "steady").await.unwrap();
    echoes(&mut shell, "echo before-$((20+1))", "before-21").await;

    let restart = RestartOnDrop;
    testbed("stop-runtime");

    // The open session does not need the runtime: it echoes on.
    echoes(&mut shell, "echo during-$((20+2))", "during-22").await;
    // A new session in a known live container works (found through /proc);
    // one in a pod the agent does not know is a quick, clear 503.
    let (code, result) = run(&agent, &format!("/v1/targets/{ns}/steady/run"), &["true"]).await;
    assert_eq!((code, &result["exitCode"]), (200, &json!(0)), "{result}");
    let asked = Instant::now();
    let (code, body) = run(&agent, &format!("/v1/targets/{ns}/unknown/run"), &["true"]).await;
    assert_eq!(code, 503, "{body}");
    assert_status(&body, 503, "ServiceUnavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("the container runtime is unavailable: "),
        "{body}"
    );
    let refused = open_shell(&agent, &ns, "unknown").await.unwrap_err();
    assert_eq!(refused.status().as_u16(), 503);
    let body: Value = serde_json::from_slice(refused.body().as_deref().unwrap()).unwrap();
    assert_status(&body, 503, "ServiceUnavailable");
    // Each within the CRI deadline (2 s here), not a hang.
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );

    let (code, body) = agent.get("/readyz").await;
    assert_eq!(code, 503);
    let text = body.as_str().unwrap();
    assert!(
        text.starts_with("not ready: the container runtime does not answer: CRI call Version"),
        "{text}"
    );

    for path in [
        "/api/v1/pods",
        "/v1/targets",
        &format!("/api/v1/namespaces/{ns}/pods/steady"),
    ] {
        let (code, body) = agent.get(path).await;
        assert_eq!(code, 503, "{path}: {body}");
        assert_status(&body, 503, "ServiceUnavailable");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("the container runtime is unavailable: "),
            "{body}"
        );
    }
    let (code, _, err) = agent.kubectl(&["get", "pods", "-A"]);
    assert_eq!(code, 1);
    assert!(err.contains("(ServiceUnavailable)"), "{err}");

    // A container the agent already knows, whose process is alive, is still
    // found: debugging must not depend on a healthy runtime.
    let known = agent.get_ok(&format!("/v1/targets/{ns}/steady")).await;
    assert_eq!(known["pid"], target["pid"]);
    // One it does not know needs the runtime: 503, not a guess.
    let (code, body) = agent.get(&format!("/v1/targets/{ns}/unknown")).await;
    assert_eq!(code, 503, "{body}");

    drop(restart);
    eventually(
        "readiness after containerd restarts",
        Duration::from_secs(30),
        || async { (agent.get("/readyz").await.0 == 200).then_some(()) },
    )
    .await;
    let pods = agent.get_ok(&format!("/api/v1/namespaces/{ns}/pods")).await;
    assert_eq!(pods["items"][0]["metadata"]["name"], "steady");
    let after = agent.get_ok(&format!("/v1/targets/{ns}/steady")).await;
    assert_eq!(
        after["pid"], target["pid"],
        "the pod survived the runtime restart"
    );
    // The session from before the outage goes on; new ones work.
    echoes(&mut shell, "echo after-$((20+3))", "after-23").await;
    let mut second = open_shell(&agent, &ns, "steady").await.unwrap();
    echoes(&mut second, "echo new-$((20+4))", "new-24").await;
    let (code, result) = run(&agent, &format!("/v1/targets/{ns}/steady/run"), &["true"]).await;
    assert_eq!((code, &result["exitCode"]), (200, &json!(0)), "{result}");
    drop(second);

    pod.remove(&mut client).await;
}
