//! containerd stops and comes back while the agent runs: readiness and listings
//! say so with a clear 503, lookups of known live containers keep working, and
//! the agent recovers by itself. Alone in its test binary because it stops the
//! runtime every other test uses (cargo runs test binaries one at a time).

mod support;

use std::process::Command;
use std::time::Duration;

use support::testbed::ContainerSpec;
use support::{Agent, assert_status, eventually, repo};

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

    let restart = RestartOnDrop;
    testbed("stop-runtime");

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

    pod.remove(&mut client).await;
}
