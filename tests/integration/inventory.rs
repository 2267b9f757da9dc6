//! The agent's view of the node against the runtime's and the kernel's: every
//! pod, container, host PID, namespace and pod IP it reports is checked with
//! the test's own CRI calls and its own reads of /proc and `ip`.

use crate::support;

use std::collections::HashMap;

use serde_json::Value;
use support::pods::{ContainerSpec, PodSpec, cri_pid, run_pod};
use support::{Agent, NODE_NAME, eth0_ipv4, ns_inode, test_namespace};

fn find_pod<'a>(list: &'a Value, namespace: &str, name: &str) -> &'a Value {
    list["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["namespace"] == namespace && p["name"] == name)
        .unwrap_or_else(|| panic!("{namespace}/{name} missing from {list}"))
}

#[tokio::test]
async fn native_listing_matches_runtime_and_kernel() {
    let ns = test_namespace("listing");
    let mut client = support::cri().await;
    let spec = PodSpec::new(
        &ns,
        "pair",
        vec![
            ContainerSpec::busybox("shell"),
            ContainerSpec::distroless("server"),
        ],
    )
    .label("app", "pair");
    let pod = run_pod(&mut client, &spec, "test").await;
    let agent = Agent::start();

    let list = agent.get_ok("/v1/targets").await;
    assert_eq!(list["node"], NODE_NAME);
    assert_eq!(list["runtime"]["name"], "containerd");
    let entry = find_pod(&list, &ns, "pair");
    assert_eq!(entry["uid"], spec.uid());
    assert_eq!(entry["sandboxId"], pod.sandbox_id);
    assert_eq!(entry["state"], "ready");

    let containers = entry["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "{entry}");
    let mut pids = HashMap::new();
    for container in containers {
        let name = container["name"].as_str().unwrap();
        let id = container["id"].as_str().unwrap();
        assert_eq!(id, pod.id(name));
        assert_eq!(container["state"], "running");
        let pid = container["pid"].as_u64().unwrap();
        assert_eq!(
            pid,
            cri_pid(&mut client, id).await,
            "{name}: PID differs from the CRI's"
        );
        // The PID really is that container's: its cgroup names the container.
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cgroup.contains(id), "{name}: pid {pid} cgroup {cgroup}");
        for kind in ["mnt", "net", "pid", "ipc", "uts", "cgroup", "user"] {
            assert_eq!(
                container["namespaces"][kind].as_u64().unwrap(),
                ns_inode(pid, kind),
                "{name}: {kind} namespace"
            );
        }
        // The shell the web terminal will start, found inside the container's root.
        let shell = if name == "shell" {
            serde_json::json!("/bin/sh")
        } else {
            Value::Null
        };
        assert_eq!(container["shell"], shell, "{name}");
        pids.insert(name.to_string(), pid);
    }
    let (shell, server) = (pids["shell"], pids["server"]);
    let own = std::process::id() as u64;
    // Pod-wide network, per-container PID and mount namespaces, as under the kubelet.
    assert_eq!(ns_inode(shell, "net"), ns_inode(server, "net"));
    assert_ne!(ns_inode(shell, "net"), ns_inode(own, "net"));
    assert_ne!(ns_inode(shell, "pid"), ns_inode(server, "pid"));
    assert_ne!(ns_inode(shell, "mnt"), ns_inode(own, "mnt"));

    // The pod IP is the address on the pod's eth0.
    assert_eq!(entry["podIP"], eth0_ipv4(shell));
    assert_eq!(entry["podIPs"][0], eth0_ipv4(shell));

    // Namespace filter and label selector.
    let only = agent.get_ok(&format!("/v1/targets?namespace={ns}")).await;
    assert_eq!(only["pods"].as_array().unwrap().len(), 1);
    let none = agent
        .get_ok(&format!(
            "/v1/targets?namespace={ns}&labelSelector=app%3Dother"
        ))
        .await;
    assert!(none["pods"].as_array().unwrap().is_empty());

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn pod_objects_are_kubernetes_pods_built_from_cri_data() {
    let ns = test_namespace("podobject");
    let mut client = support::cri().await;
    let spec = PodSpec::new(
        &ns,
        "web",
        vec![
            ContainerSpec::distroless("web"),
            ContainerSpec::busybox("logger"),
        ],
    )
    .label("app", "web")
    .label("tier", "frontend")
    .annotation("kubectl.kubernetes.io/default-container", "web")
    .annotation("example.com/owner", "sre");
    let pod = run_pod(&mut client, &spec, "test").await;
    let agent = Agent::start();

    let object = agent
        .get_ok(&format!("/api/v1/namespaces/{ns}/pods/web"))
        .await;
    assert_eq!(object["kind"], "Pod");
    assert_eq!(object["apiVersion"], "v1");
    let meta = &object["metadata"];
    assert_eq!(meta["name"], "web");
    assert_eq!(meta["namespace"], ns);
    assert_eq!(meta["uid"], spec.uid());
    // The pod's own labels, not the kubelet's bookkeeping labels.
    assert_eq!(
        meta["labels"],
        serde_json::json!({"app": "web", "tier": "frontend"})
    );
    assert_eq!(meta["annotations"]["example.com/owner"], "sre");
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(object["spec"]["nodeName"], NODE_NAME);
    let names: Vec<&str> = object["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "logger"], "declaration order");
    assert_eq!(
        object["spec"]["containers"][0]["image"],
        support::pods::DISTROLESS_IMAGE
    );

    let status = &object["status"];
    assert_eq!(status["phase"], "Running");
    let logger_pid = agent
        .get_ok(&format!("/v1/targets/{ns}/web?container=logger"))
        .await["pid"]
        .as_u64()
        .unwrap();
    assert_eq!(status["podIP"], eth0_ipv4(logger_pid));
    for cs in status["containerStatuses"].as_array().unwrap() {
        let name = cs["name"].as_str().unwrap();
        assert_eq!(cs["containerID"], format!("containerd://{}", pod.id(name)));
        assert_eq!(cs["restartCount"], 0);
        assert_eq!(cs["ready"], true);
        assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");
    }

    // The list forms and a label selector.
    let list = agent.get_ok(&format!("/api/v1/namespaces/{ns}/pods")).await;
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let all = agent
        .get_ok("/api/v1/pods?labelSelector=app%3Dweb,tier%3Dfrontend")
        .await;
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["metadata"]["namespace"] == ns)
    );
    let none = agent
        .get_ok(&format!(
            "/api/v1/namespaces/{ns}/pods?labelSelector=app%21%3Dweb"
        ))
        .await;
    assert!(none["items"].as_array().unwrap().is_empty());
    let by_field = agent
        .get_ok(&format!(
            "/api/v1/pods?fieldSelector=metadata.namespace%3D{ns},status.phase%3DRunning"
        ))
        .await;
    assert_eq!(by_field["items"].as_array().unwrap().len(), 1);

    pod.remove(&mut client).await;
}
