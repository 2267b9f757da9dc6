//! Unmodified kubectl against the agent: discovery, `get pods` tables, `-o yaml`,
//! `-o json`, label selectors and server errors, as a user would type them.

use crate::support;

use serde_json::Value;
use support::pods::{ContainerSpec, PodSpec, run_pod};
use support::{Agent, NODE_NAME, test_namespace};

#[tokio::test]
async fn kubectl_reads_pods_from_the_agent() {
    let ns = test_namespace("kubectl");
    let mut client = support::cri().await;
    let web = PodSpec::new(
        &ns,
        "web",
        vec![
            ContainerSpec::distroless("web"),
            ContainerSpec::busybox("logger"),
        ],
    )
    .label("app", "web");
    let shell =
        PodSpec::new(&ns, "shell", vec![ContainerSpec::busybox("shell")]).label("app", "shell");
    let web_pod = run_pod(&mut client, &web, "test").await;
    let shell_pod = run_pod(&mut client, &shell, "test").await;
    let agent = Agent::start();

    let (code, out, err) = agent.kubectl(&["version", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let version: Value = serde_json::from_str(&out).unwrap();
    assert!(
        version["serverVersion"]["gitVersion"]
            .as_str()
            .unwrap()
            .contains("nsdebug")
    );

    // `get pods -A`: the server-side table, one row per pod.
    let (code, out, err) = agent.kubectl(&["get", "pods", "-A"]);
    assert_eq!(code, 0, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let row = |name: &str| -> Vec<String> {
        out.lines()
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .find(|cells| cells[0] == ns && cells[1] == name)
            .unwrap_or_else(|| panic!("no row for {name}:\n{out}"))
    };
    assert_eq!(row("web")[2..5], ["2/2", "Running", "0"]);
    assert_eq!(row("shell")[2..5], ["1/1", "Running", "0"]);

    // `-o wide` adds the pod IP and the node.
    let (code, out, err) = agent.kubectl(&["get", "pods", "-n", &ns, "-o", "wide"]);
    assert_eq!(code, 0, "{err}");
    let listed = agent.get_ok(&format!("/v1/targets?namespace={ns}")).await;
    let web_ip = listed["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "web")
        .unwrap()["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let web_line = out.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(
        web_line.contains(&web_ip) && web_line.contains(NODE_NAME),
        "{out}"
    );

    // `-l`: equality selectors.
    let (code, out, err) = agent.kubectl(&["get", "pods", "-A", "-l", "app=shell", "-o", "name"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "pod/shell");
    let (code, out, _) =
        agent.kubectl(&["get", "pods", "-n", &ns, "-l", "app!=shell", "-o", "name"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "pod/web");

    // `-o json` is the Pod object, with the runtime's container IDs.
    let (code, out, err) = agent.kubectl(&["get", "pod", "web", "-n", &ns, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let pod: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pod["kind"], "Pod");
    let ids: Vec<&str> = pod["status"]["containerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["containerID"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            format!("containerd://{}", web_pod.id("web")),
            format!("containerd://{}", web_pod.id("logger"))
        ]
    );

    // `-o yaml` prints the same object as YAML.
    let (code, out, err) = agent.kubectl(&["get", "pod", "web", "-n", &ns, "-o", "yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("apiVersion: v1\nkind: Pod\n"), "{out}");
    assert!(out.contains(&format!("  nodeName: {NODE_NAME}\n")), "{out}");
    assert!(out.contains(&format!("  podIP: {web_ip}\n")), "{out}");
    assert!(out.contains("  phase: Running\n"), "{out}");

    // Server errors arrive as kubectl prints API server errors.
    let (code, _, err) = agent.kubectl(&["get", "pod", "nope", "-n", &ns]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );
    let (code, _, err) = agent.kubectl(&["get", "pod", "nope", "-n", "no-such-namespace"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "Error from server (NotFound): namespaces \"no-such-namespace\" not found"
    );
    let (code, out, err) = agent.kubectl(&["get", "namespaces"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..2] == [ns.as_str(), "Active"]),
        "{out}"
    );
    let (code, _, err) = agent.kubectl(&["get", "pods", "-A", "-l", "app=a b"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("(BadRequest)") && err.contains("invalid label value"),
        "{err}"
    );

    web_pod.remove(&mut client).await;
    shell_pod.remove(&mut client).await;
}
