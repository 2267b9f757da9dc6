//! Resolution against the real runtime: restarts are followed without restarting
//! the agent, a dead PID is never handed out, and every wrong name gets the
//! right `v1.Status`.

use crate::support;

use serde_json::Value;
use support::pods::{ContainerSpec, PodSpec, cri_pid, run_pod};
use support::{Agent, assert_status, test_namespace};

#[tokio::test]
async fn stop_and_restart_are_followed_without_restarting_the_agent() {
    let (ns, mut client, mut pod) =
        support::one_pod("restart", "app", vec![ContainerSpec::busybox("main")]).await;
    let agent = Agent::start();
    let path = format!("/v1/targets/{ns}/app");

    let first = agent.get_ok(&path).await;
    let first_id = pod.id("main").to_string();
    assert_eq!(first["containerId"], first_id);
    assert_eq!(
        first["pid"].as_u64().unwrap(),
        cri_pid(&mut client, &first_id).await
    );

    // Stopped: the agent's memory still says running, but the process is gone;
    // the runtime is asked and the answer is 409, never the dead PID.
    pod.stop(&mut client, "main", 10).await;
    let (code, body) = agent.get(&path).await;
    assert_eq!(code, 409, "{body}");
    assert_status(&body, 409, "Conflict");
    assert_eq!(
        body["message"],
        format!("container \"main\" of pod {ns}/app is not running (state: exited)")
    );
    let object = agent
        .get_ok(&format!("/api/v1/namespaces/{ns}/pods/app"))
        .await;
    let status = &object["status"]["containerStatuses"][0];
    assert_eq!(status["state"]["terminated"]["exitCode"], 0, "{status}");
    assert_eq!(status["ready"], false);
    let (code, _) = agent.get(&format!("/v1/containers/{first_id}")).await;
    assert_eq!(code, 409);

    // Restarted as the kubelet does it: a new instance, attempt 1.
    let second_id = pod.restart(&mut client, "main", 1).await;
    let second = agent.get_ok(&path).await;
    assert_eq!(second["containerId"], second_id);
    let second_pid = second["pid"].as_u64().unwrap();
    assert_eq!(second_pid, cri_pid(&mut client, &second_id).await);
    assert_ne!(second_pid, first["pid"].as_u64().unwrap());
    let object = agent
        .get_ok(&format!("/api/v1/namespaces/{ns}/pods/app"))
        .await;
    let status = &object["status"]["containerStatuses"][0];
    assert_eq!(status["restartCount"], 1);
    assert_eq!(status["containerID"], format!("containerd://{second_id}"));
    assert!(status["state"]["running"].is_object(), "{status}");
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 0, "{status}");

    // By container ID: a unique prefix, and the Kubernetes `containerd://` form.
    let by_prefix = agent
        .get_ok(&format!("/v1/containers/{}", &second_id[..12]))
        .await;
    assert_eq!(by_prefix["pid"].as_u64().unwrap(), second_pid);
    assert_eq!(by_prefix["pod"], "app");
    let by_uri = agent
        .get_ok(&format!("/v1/containers/containerd:%2F%2F{second_id}"))
        .await;
    assert_eq!(by_uri["containerId"], second_id);

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn container_choice_follows_kubectl_rules() {
    let ns = test_namespace("choice");
    let mut client = support::cri().await;
    let two = PodSpec::new(
        &ns,
        "two",
        vec![
            ContainerSpec::busybox("alpha"),
            ContainerSpec::busybox("beta"),
        ],
    );
    let defaulted = PodSpec::new(
        &ns,
        "defaulted",
        vec![
            ContainerSpec::busybox("sidecar"),
            ContainerSpec::distroless("app"),
        ],
    )
    .annotation("kubectl.kubernetes.io/default-container", "app");
    let two_pod = run_pod(&mut client, &two, "test").await;
    let defaulted_pod = run_pod(&mut client, &defaulted, "test").await;
    let agent = Agent::start();

    let (code, body) = agent.get(&format!("/v1/targets/{ns}/two")).await;
    assert_status(&body, 400, "BadRequest");
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        format!("pod {ns}/two has 2 containers (alpha, beta); name one with container=NAME")
    );
    let beta = agent
        .get_ok(&format!("/v1/targets/{ns}/two?container=beta"))
        .await;
    assert_eq!(beta["containerId"], two_pod.id("beta"));

    let app = agent.get_ok(&format!("/v1/targets/{ns}/defaulted")).await;
    assert_eq!(app["container"], "app");
    assert_eq!(app["containerId"], defaulted_pod.id("app"));

    let (code, body) = agent
        .get(&format!("/v1/targets/{ns}/two?container=gamma"))
        .await;
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
    assert_eq!(
        body["message"],
        format!("container \"gamma\" not found in pod {ns}/two; its containers are: alpha, beta")
    );

    two_pod.remove(&mut client).await;
    defaulted_pod.remove(&mut client).await;
}

#[tokio::test]
async fn wrong_names_get_kubernetes_status_errors() {
    support::testbed_socket();
    let agent = Agent::start();

    let (code, body) = agent.get("/v1/targets/no-such-ns/no-such-pod").await;
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
    assert_eq!(
        body["message"],
        "pod \"no-such-pod\" not found in namespace \"no-such-ns\" on this node"
    );

    let (code, body) = agent
        .get("/api/v1/namespaces/default/pods/no-such-pod")
        .await;
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
    assert_eq!(body["message"], "pods \"no-such-pod\" not found");
    assert_eq!(body["details"]["name"], "no-such-pod");
    assert_eq!(body["details"]["kind"], "pods");

    let (code, body) = agent.get("/api/v1/namespaces/no-such-ns/pods").await;
    assert_eq!(
        code, 200,
        "an empty namespace lists nothing, as the API server does"
    );
    assert_eq!(body["items"], serde_json::json!([]));

    let (code, body) = agent.get("/v1/containers/ffffffffffffffff0000").await;
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
    let (code, body) = agent.get("/v1/containers/not-hex").await;
    assert_eq!(code, 400);
    assert_status(&body, 400, "BadRequest");

    for bad in [
        "/api/v1/pods?labelSelector=app%3Da%20b",
        "/api/v1/pods?labelSelector=env%20within%20(x)",
        "/v1/targets?labelSelector=%3Dx",
        "/api/v1/pods?fieldSelector=spec.schedulerName%3Dx",
        "/api/v1/pods?watch=true",
        "/api/v1/pods?includeObject=Everything",
    ] {
        let (code, body) = agent.get(bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert_status(&body, 400, "BadRequest");
    }
    let (_, body) = agent.get("/api/v1/pods?labelSelector=app%3Da%20b").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid label value \"a b\""),
        "{body}"
    );

    // A resource the agent does not serve (nodes it now does: kubectl top).
    let (code, body) = agent.get("/api/v1/services").await;
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");

    let response = reqwest::Client::new()
        .delete(format!("{}/api/v1/namespaces/default/pods/x", agent.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let body: Value = response.json().await.unwrap();
    assert_status(&body, 405, "MethodNotAllowed");
}
