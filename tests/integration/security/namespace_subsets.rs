//! Finding 1 of "Never more than `kubectl exec`": a namespace subset asked
//! for in the `container` profile ran the container's uid and capabilities
//! in the agent's mount namespace, the host's PID namespace and the initial
//! user namespace. One request wrote a file on the node and read the host's
//! PID 1. Every way of asking for a subset is tried here; each must be a 400
//! that names the privileged profile, and nothing may run.

use serde_json::{Value, json};

use crate::security::common::post_run;
use crate::support::pods::ContainerSpec;
use crate::support::{Agent, one_pod};

/// A file on the node (the agent's filesystem) that no container may write.
fn node_marker(test: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("nsdebug-escape-{test}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[tokio::test]
async fn a_namespace_subset_in_the_container_profile_is_refused_on_the_run_api() {
    let (ns, mut client, pod) = one_pod(
        "sec-subset-run",
        "victim",
        vec![ContainerSpec::busybox("app")],
    )
    .await;
    let agent = Agent::start();
    let path = format!("/v1/targets/{ns}/victim/run");
    for subset in [&["net"][..], &["mnt"], &["pid", "mnt"]] {
        let marker = node_marker(&subset.join("-"));
        let script = format!("echo escaped > {}; cat /proc/1/comm; id", marker.display());
        let (code, answer) = post_run(
            &agent,
            &path,
            json!({"command": ["sh", "-c", script], "namespaces": subset}),
        )
        .await;
        assert!(
            !marker.exists(),
            "{subset:?}: the container wrote {} on the node: {answer}",
            marker.display()
        );
        assert_eq!(code, 400, "{subset:?}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("profile=privileged"),
            "{subset:?}: the refusal says what would be allowed: {message}"
        );
    }
    // Asking for every namespace is asking for the container: allowed.
    let (code, answer) = post_run(
        &agent,
        &path,
        json!({"command": ["cat", "/proc/1/comm"],
               "namespaces": ["user", "cgroup", "ipc", "uts", "net", "pid", "mnt"]}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer["stdout"], "sh\n",
        "the container's own PID 1: {answer}"
    );
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn a_namespace_subset_on_the_exec_route_is_refused_before_the_upgrade() {
    let (ns, mut client, pod) = one_pod(
        "sec-subset-exec",
        "victim",
        vec![ContainerSpec::busybox("app")],
    )
    .await;
    let agent = Agent::start();
    let marker = node_marker("exec");
    let script = format!("echo escaped > {}", marker.display());
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("command", "sh")
        .append_pair("command", "-c")
        .append_pair("command", &script)
        .append_pair("stdout", "true")
        .append_pair("namespaces", "net")
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
    let refused = tokio_tungstenite::connect_async(request).await;
    let response = match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response,
        Ok((mut socket, _)) => {
            // The old agent upgraded and ran it: read to the end first.
            use futures::StreamExt;
            while socket.next().await.is_some() {}
            panic!(
                "the upgrade was accepted; the node has the marker: {}",
                marker.exists()
            );
        }
        Err(other) => panic!("{other}"),
    };
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default())
        .unwrap_or(Value::Null);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("profile=privileged")),
        "{body}"
    );
    assert!(!marker.exists());
    pod.remove(&mut client).await;
}

/// "Network only" is now the toolbox: the pod's network and processes with
/// the tool tree's programs, never the agent's own filesystem.
#[tokio::test]
async fn network_only_is_a_private_tool_tree_not_the_agents_files() {
    let (ns, mut client, pod) =
        one_pod("sec-netonly", "victim", vec![ContainerSpec::busybox("app")]).await;
    let agent = Agent::start();
    let marker = node_marker("toolbox");
    let script = format!(
        "echo escaped > {} 2>/dev/null; ls /; cat /proc/1/comm",
        marker.display()
    );
    let (code, answer) = post_run(
        &agent,
        &format!("/v1/targets/{ns}/victim/run"),
        json!({"command": ["sh", "-c", script], "toolbox": true}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert!(!marker.exists(), "the toolbox wrote on the node: {answer}");
    let out = answer["stdout"].as_str().unwrap();
    assert!(
        out.contains("target"),
        "the container's files at /target: {out}"
    );
    assert!(
        out.ends_with("\nsh\n"),
        "the pod's PID namespace, not the host's: {out}"
    );
    pod.remove(&mut client).await;
}
