//! `kubectl top` against the agent: the Metrics API (`metrics.k8s.io`) and
//! the node objects it needs, from the real runtime's stats, with unmodified
//! kubectl, as a user or a runbook sees them.

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::fake_apiserver::{FakeApiServer, FakeUser, rule};
use support::pods::{ContainerSpec, PodSpec, run_pod};
use support::{Agent, NODE_NAME, assert_status, eventually, test_namespace};

/// Samples every second, so a test waits for two readings, not ten seconds.
const RESOLUTION: &str = "1s";

/// The rows of kubectl's output (header left out), split into cells.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// Millicores of a kubectl CPU cell (`250m`, `1`, `0`).
fn millicores(cell: &str) -> u64 {
    match cell.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => cell.parse::<u64>().unwrap() * 1000,
    }
}

/// `kubectl ARGS` once it answers with at least one row (the first samples
/// take a resolution or two), as (stdout, rows).
async fn top(agent: &Agent, args: &[&str]) -> (String, Vec<Vec<String>>) {
    eventually(
        &format!("kubectl {}", args.join(" ")),
        Duration::from_secs(30),
        || async {
            let (code, out, _) = agent.kubectl(args);
            let found = rows(&out);
            (code == 0 && !found.is_empty()).then_some((out, found))
        },
    )
    .await
}

// Multi-threaded: kubectl runs as a blocking child process while the agent's
// run request (the busy loop) goes on.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_top_shows_pods_containers_and_the_node() {
    let ns = test_namespace("top");
    let mut client = support::cri().await;
    let web = PodSpec::new(
        &ns,
        "web",
        vec![
            ContainerSpec::busybox("app"),
            ContainerSpec::busybox("side"),
        ],
    )
    .label("app", "web");
    let burner =
        PodSpec::new(&ns, "burner", vec![ContainerSpec::busybox("main")]).label("app", "burner");
    let _web = run_pod(&mut client, &web, "test").await;
    let _burner = run_pod(&mut client, &burner, "test").await;
    let agent = Agent::start_on_testbed(&["--metric-resolution", RESOLUTION]);

    // A cold-cache kubectl reads the group's resource list once the group is
    // listed: no discovery error on an ordinary command.
    let (code, out, err) = agent.kubectl(&["get", "pods", "-n", &ns, "-o", "name"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("couldn't get resource list"), "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");

    // `top pod`: one row per pod of the namespace, sorted.
    let (out, found) = top(&agent, &["top", "pod", "-n", &ns]).await;
    assert_eq!(
        out.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    );
    let names: Vec<&str> = found.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["burner", "web"], "{out}");
    for row in &found {
        assert!(row[1].ends_with('m') || row[1] == "0", "{out}");
        assert!(row[2].ends_with("Mi") || row[2].ends_with("Ki"), "{out}");
    }

    // `top pod NAME` and `-l`.
    let (out, found) = top(&agent, &["top", "pod", "-n", &ns, "web"]).await;
    assert_eq!(found.len(), 1, "{out}");
    assert_eq!(found[0][0], "web");
    let (out, found) = top(&agent, &["top", "pod", "-n", &ns, "-l", "app=burner"]).await;
    assert_eq!(found.len(), 1, "{out}");
    assert_eq!(found[0][0], "burner");

    // `top pod -A --containers`: a row per container, with its namespace.
    let (out, found) = top(&agent, &["top", "pod", "-A", "--containers"]).await;
    assert_eq!(
        out.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAMESPACE", "POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    );
    let mut ours: Vec<(&str, &str)> = found
        .iter()
        .filter(|r| r[0] == ns)
        .map(|r| (r[1].as_str(), r[2].as_str()))
        .collect();
    ours.sort();
    assert_eq!(
        ours,
        [("burner", "main"), ("web", "app"), ("web", "side")],
        "{out}"
    );

    // A pod the node does not run: metrics-server's 404.
    let (code, _, err) = agent.kubectl(&["top", "pod", "-n", &ns, "nowhere"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "podmetrics.metrics.k8s.io \"{ns}/nowhere\" not found"
        )),
        "{err}"
    );

    // `top node`: this node, with percentages of the host's size.
    let (out, found) = top(&agent, &["top", "node"]).await;
    assert_eq!(found.len(), 1, "{out}");
    assert_eq!(found[0][0], NODE_NAME, "{out}");
    assert!(
        found[0].iter().filter(|c| c.ends_with('%')).count() == 2,
        "{out}"
    );
    let (out, found) = top(&agent, &["top", "node", NODE_NAME]).await;
    assert_eq!(found[0][0], NODE_NAME, "{out}");

    // The CPU number moves when a container burns CPU: a busy loop started
    // through the run API shows in `top` within a few samples.
    let idle = millicores(&top(&agent, &["top", "pod", "-n", &ns, "burner"]).await.1[0][1]);
    assert!(idle < 50, "an idle busybox uses {idle}m");
    let url = format!("{}/v1/targets/{ns}/burner/run", agent.url);
    let burn = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&json!({"command": ["sh", "-c", "while :; do :; done"], "timeoutSeconds": 120}))
            .send()
            .await
    });
    eventually(
        "the busy loop in kubectl top",
        Duration::from_secs(60),
        || {
            let agent = &agent;
            let ns = &ns;
            async move {
                let (code, out, _) = agent.kubectl(&["top", "pod", "-n", ns, "burner"]);
                let cpu = rows(&out).first().map(|row| millicores(&row[1]))?;
                // A tenth of a CPU: the loop gets less than a core on a
                // loaded machine, and an idle busybox never uses that much.
                (code == 0 && cpu >= idle + 100).then_some(cpu)
            }
        },
    )
    .await;
    // Hanging up ends the run and its loop.
    burn.abort();
}

#[tokio::test]
async fn the_json_has_metrics_servers_shape() {
    let (ns, _client, _pod) =
        support::one_pod("top-json", "shaped", vec![ContainerSpec::busybox("main")]).await;
    let agent = Agent::start_on_testbed(&["--metric-resolution", RESOLUTION]);

    let groups = agent.get_ok("/apis").await;
    assert_eq!(
        groups["groups"][0],
        json!({"name": "metrics.k8s.io",
               "versions": [{"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}],
               "preferredVersion": {"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}})
    );
    let resources = agent.get_ok("/apis/metrics.k8s.io/v1beta1").await;
    assert_eq!(resources["kind"], "APIResourceList");
    let kinds: Vec<&str> = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["NodeMetrics", "PodMetrics"]);

    let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/shaped");
    let pod = eventually("the pod's metrics", Duration::from_secs(30), || async {
        let (code, body) = agent.get(&path).await;
        (code == 200).then_some(body)
    })
    .await;
    assert_eq!(pod["kind"], "PodMetrics");
    assert_eq!(pod["apiVersion"], "metrics.k8s.io/v1beta1");
    assert_eq!(pod["metadata"]["name"], "shaped");
    assert_eq!(pod["metadata"]["namespace"], ns.as_str());
    assert!(is_time(&pod["metadata"]["creationTimestamp"]), "{pod}");
    assert!(is_time(&pod["timestamp"]), "{pod}");
    let window = pod["window"].as_str().unwrap();
    // A Go duration: `1.002s`, or `998.1ms` when the runtime's clock says so.
    let seconds: f64 = match window.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().unwrap() / 1000.0,
        None => window.strip_suffix('s').unwrap().parse().unwrap(),
    };
    assert!((0.1..30.0).contains(&seconds), "window {window}");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["name"], "main");
    let usage = &containers[0]["usage"];
    let cpu = usage["cpu"].as_str().unwrap();
    assert!(
        cpu == "0" || cpu.trim_end_matches(['n', 'u', 'm']).parse::<u64>().is_ok(),
        "{usage}"
    );
    let memory = usage["memory"].as_str().unwrap();
    assert!(
        memory.trim_end_matches("Ki").parse::<u64>().unwrap() > 0,
        "{usage}"
    );

    let list = agent
        .get_ok(&format!(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods"
        ))
        .await;
    assert_eq!(list["kind"], "PodMetricsList");
    assert_eq!(list["items"][0]["metadata"]["name"], "shaped");

    let node = agent
        .get_ok(&format!("/apis/metrics.k8s.io/v1beta1/nodes/{NODE_NAME}"))
        .await;
    assert_eq!(node["kind"], "NodeMetrics");
    assert_eq!(node["metadata"]["name"], NODE_NAME);
    assert!(node["usage"]["cpu"].is_string() && node["usage"]["memory"].is_string());
    let (code, body) = agent
        .get("/apis/metrics.k8s.io/v1beta1/nodes/other-node")
        .await;
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
    assert_eq!(
        body["message"],
        "nodemetrics.metrics.k8s.io \"other-node\" not found"
    );

    // Without an API server the host describes itself: its CPUs and memory.
    let nodes = agent.get_ok("/api/v1/nodes").await;
    assert_eq!(nodes["kind"], "NodeList");
    let item = &nodes["items"][0];
    assert_eq!(item["metadata"]["name"], NODE_NAME);
    assert_eq!(
        item["metadata"]["annotations"]["nsdebug.dev/node-source"],
        "host"
    );
    let cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    assert_eq!(item["status"]["allocatable"]["cpu"], cpus.to_string());
    let (code, body) = agent.get("/api/v1/nodes/other-node").await;
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
}

/// A `metav1.Time`: `2026-12-03T18:24:51Z`.
fn is_time(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|t| t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T')
}

// Multi-threaded: kubectl runs as a blocking child process while the fake API
// server answers the agent's reviews on this runtime.
#[tokio::test(flavor = "multi_thread")]
async fn top_needs_the_metrics_rights() {
    let (ns, _client, _pod) = support::one_pod(
        "top-rights",
        "watched",
        vec![ContainerSpec::busybox("main")],
    )
    .await;
    let users = vec![
        FakeUser {
            token: "carol-token",
            name: "carol",
            groups: vec![],
        },
        FakeUser {
            token: "dave-token",
            name: "dave",
            groups: vec![],
        },
    ];
    let rules = vec![
        // Carol may list pods, not their metrics.
        rule("carol", "list", "pods", Some(&ns)),
        rule("carol", "list", "nodes", None),
        rule("dave", "list", "pods.metrics.k8s.io", Some(&ns)),
        rule("dave", "list", "nodes.metrics.k8s.io", None),
        rule("dave", "list", "nodes", None),
        rule("dave", "get", "nodes", None),
    ];
    let api = FakeApiServer::start(users, rules).await;
    // The cluster's Node: what the agent answers for its node when it can read it.
    api.add_node(json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME, "topology.kubernetes.io/zone": "zone-a"}},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"}},
    }));
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_log = audit_dir.path().join("audit.jsonl");
    let socket = support::testbed_socket();
    let agent = Agent::start_secure(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--kubeconfig",
        api.kubeconfig.to_str().unwrap(),
        "--audit-log",
        audit_log.to_str().unwrap(),
        "--metric-resolution",
        RESOLUTION,
    ]);
    let kubectl = |token: &str, args: &[&str]| {
        let mut all = vec!["--token", token, "--insecure-skip-tls-verify"];
        all.extend_from_slice(args);
        agent.kubectl(&all)
    };

    let (code, _, err) = kubectl("carol-token", &["top", "pod", "-n", &ns]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "Error from server (Forbidden): pods.metrics.k8s.io is forbidden: User \"carol\" cannot list resource \"pods\" in API group \"metrics.k8s.io\" in the namespace \"{ns}\""
        )),
        "{err}"
    );
    let (code, _, err) = kubectl("carol-token", &["top", "node"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("nodes.metrics.k8s.io is forbidden: User \"carol\" cannot list resource \"nodes\" in API group \"metrics.k8s.io\" at the cluster scope"),
        "{err}"
    );

    // Dave has the metrics rights: the same commands answer.
    let found = eventually("dave's top pod", Duration::from_secs(30), || async {
        let (code, out, _) = kubectl("dave-token", &["top", "pod", "-n", &ns]);
        (code == 0).then(|| rows(&out)).filter(|r| !r.is_empty())
    })
    .await;
    assert_eq!(found[0][0], "watched");
    let found = eventually("dave's top node", Duration::from_secs(30), || async {
        let (code, out, _) = kubectl("dave-token", &["top", "node"]);
        (code == 0).then(|| rows(&out)).filter(|r| !r.is_empty())
    })
    .await;
    assert_eq!(found[0][0], NODE_NAME);
    // The node is the API server's, labels and allocatable included.
    let (code, out, err) = kubectl(
        "dave-token",
        &["get", "--raw", &format!("/api/v1/nodes/{NODE_NAME}")],
    );
    assert_eq!(code, 0, "{err}");
    let node: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(node["status"]["allocatable"]["cpu"], "64", "{node}");
    assert_eq!(
        node["metadata"]["annotations"]["nsdebug.dev/node-source"],
        Value::Null
    );
    let (code, out, err) = kubectl(
        "dave-token",
        &["top", "node", "-l", "topology.kubernetes.io/zone=zone-a"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows(&out)[0][0], NODE_NAME, "{out}");
    // The agent asked about the metrics group itself.
    let reviews = api.reviews("SubjectAccessReview");
    assert!(reviews.iter().any(|r| {
        let attrs = &r["spec"]["resourceAttributes"];
        attrs["group"] == "metrics.k8s.io" && attrs["resource"] == "pods" && attrs["verb"] == "list"
    }));

    // Carol's refusals are in the audit log, as every refusal is.
    let audit = std::fs::read_to_string(&audit_log).unwrap();
    let refusals: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["user"]["username"] == "carol")
        .collect();
    assert!(
        refusals.iter().any(|e| {
            e["objectRef"]["apiGroup"] == "metrics.k8s.io"
                && e["objectRef"]["resource"] == "pods"
                && e["responseStatus"]["code"] == 403
        }),
        "{audit}"
    );
}
