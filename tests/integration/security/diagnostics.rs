//! Diagnostics and capture act with the container's rights: a pod-scoped
//! API never reads host processes, host sockets or host traffic for someone
//! who may only `kubectl exec` into (or `get`) that pod. Each test runs the
//! agent against the fake API server, so "exec allowed, privileged denied"
//! is a real case and not the demo mode's "everything allowed".

use serde_json::Value;

use super::support::fake_apiserver::{FakeApiServer, FakeUser, rule};
use super::support::pods::{ContainerSpec, PodSpec, RunningPod, run_pod};
use super::support::{self, Agent, assert_status};

/// `alice` may exec into (and get) the pods of the test's namespace; `bob`
/// may only get them; `root` also has the privileged right on every node.
struct Cluster {
    _api: FakeApiServer,
    agent: Agent,
    https: reqwest::Client,
}

impl Cluster {
    async fn start(ns: &str) -> Self {
        let user = |token, name| FakeUser {
            token,
            name,
            groups: vec!["dev"],
        };
        let users = vec![
            user("alice-token", "alice"),
            user("bob-token", "bob"),
            user("root-token", "root"),
        ];
        let rules = vec![
            rule("alice", "create", "pods/exec", Some(ns)),
            rule("alice", "get", "pods", Some(ns)),
            rule("bob", "get", "pods", Some(ns)),
            rule("root", "create", "pods/exec", None),
            rule("root", "get", "pods", None),
            rule("root", "create", "nodes/proxy", None),
        ];
        let api = FakeApiServer::start(users, rules).await;
        let socket = support::testbed_socket();
        let agent = Agent::start_secure(&[
            "--cri-socket",
            socket.to_str().unwrap(),
            "--kubeconfig",
            api.kubeconfig.to_str().unwrap(),
        ]);
        let https = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap();
        Self {
            _api: api,
            agent,
            https,
        }
    }

    /// `GET path` as the owner of `token`: the status and the body, as JSON
    /// when it is JSON, else its length (a pcap must not be printed).
    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .https
            .get(format!("{}{path}", self.agent.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"));
        let code = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(format!("{} bytes", bytes.len())));
        (code, body)
    }
}

/// A refusal for the missing privileged right: a 403 that names it and says
/// why this target needs it.
fn refused_for_privileged(code: u16, body: &Value, why: &str) {
    assert_eq!(code, 403, "{body}");
    assert_status(body, 403, "Forbidden");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("nodes/proxy"),
        "names the right: {message}"
    );
    assert!(message.contains(why), "says why ({why}): {message}");
}

type Cri = k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

/// Runs `spec` (replacing a pod of the same name an earlier run left).
async fn pod(spec: PodSpec) -> (Cri, RunningPod) {
    let mut client = support::cri().await;
    let running = run_pod(&mut client, &spec, "test").await;
    (client, running)
}

/// With exec on a `hostPID` pod, `?pid=` names host processes: the agent's
/// own (its environment, its open files), the node's init. Those are not the
/// container's, and `kubectl exec` could not read them (the kernel's ptrace
/// rules), so the agent must not either; the process list of such a pod is
/// the node's and needs the privileged right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_pid_pod_does_not_open_the_nodes_processes() {
    let ns = support::test_namespace("sec-diag-hostpid");
    let (mut client, running) =
        pod(PodSpec::new(&ns, "nodepid", vec![ContainerSpec::busybox("shell")]).host_pid()).await;
    let cluster = Cluster::start(&ns).await;
    let base = format!("/v1/targets/{ns}/nodepid/diag");
    let agent_pid = cluster.agent.pid();

    for host in [agent_pid, 1] {
        for view in ["env", "open-files", "mounts"] {
            let (code, body) = cluster
                .get("alice-token", &format!("{base}/{view}?pid={host}"))
                .await;
            assert_eq!(code, 404, "{view}?pid={host}: {body}");
            assert_status(&body, 404, "NotFound");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("no process with PID {host} in the container")),
                "{body}"
            );
        }
    }
    // The container's own processes are still alice's to read.
    let (code, body) = cluster.get("alice-token", &format!("{base}/env")).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "PATH"),
        "{body}"
    );
    // The process list of a hostPID pod is every process of the node.
    let (code, body) = cluster
        .get("alice-token", &format!("{base}/processes"))
        .await;
    refused_for_privileged(code, &body, "hostPID");
    let (code, body) = cluster
        .get("root-token", &format!("{base}/processes"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["hostPid"] == agent_pid),
        "the privileged see the node's processes: {body}"
    );
    running.remove(&mut client).await;
}

/// `get pods` on a `hostNetwork` pod must not list every socket of the node
/// and the processes that hold them; `create pods/exec` on it must not sniff
/// the node's traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_network_pod_does_not_open_the_nodes_network() {
    let ns = support::test_namespace("sec-diag-hostnet");
    let (mut client, running) =
        pod(PodSpec::new(&ns, "nodenet", vec![ContainerSpec::busybox("shell")]).host_network())
            .await;
    let cluster = Cluster::start(&ns).await;
    let sockets = format!("/v1/targets/{ns}/nodenet/diag/sockets");
    for user in ["bob-token", "alice-token"] {
        let (code, body) = cluster.get(user, &sockets).await;
        refused_for_privileged(code, &body, "hostNetwork");
    }
    let (code, body) = cluster.get("root-token", &sockets).await;
    assert_eq!(code, 200, "{body}");

    let capture = format!("/v1/targets/{ns}/nodenet/capture?filter=udp+port+9&duration=1s");
    let (code, body) = cluster.get("alice-token", &capture).await;
    refused_for_privileged(code, &body, "hostNetwork");
    let (code, body) = cluster.get("root-token", &capture).await;
    assert_eq!(
        (code, &body),
        (200, &Value::from("24 bytes")),
        "an empty pcap"
    );
    running.remove(&mut client).await;
}

/// A container that dropped `NET_RAW` could not capture packets through
/// `kubectl exec`; the agent's capture is then a privileged act.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_from_a_container_without_net_raw_needs_the_privileged_right() {
    let ns = support::test_namespace("sec-diag-netraw");
    let (mut client, running) = pod(PodSpec::new(
        &ns,
        "noraw",
        vec![ContainerSpec::busybox("shell").drop_capabilities(&["NET_RAW"])],
    ))
    .await;
    let cluster = Cluster::start(&ns).await;
    let capture = format!("/v1/targets/{ns}/noraw/capture?filter=udp+port+9&duration=1s");
    let (code, body) = cluster.get("alice-token", &capture).await;
    refused_for_privileged(code, &body, "NET_RAW");
    let (code, body) = cluster.get("root-token", &capture).await;
    assert_eq!(
        (code, &body),
        (200, &Value::from("24 bytes")),
        "an empty pcap"
    );
    running.remove(&mut client).await;
}

/// An SRE's privileged session runs in the container's PID namespace and
/// cgroup, with the SRE's secrets in its environment: `diag/env?pid=` of it
/// must not hand them to whoever may exec into the pod (found by an
/// adversarial review). Demo mode: the exec right is all `?pid=` needs.
#[tokio::test]
async fn a_privileged_session_is_not_the_containers_process_to_read() {
    use serde_json::json;
    let ns = support::test_namespace("sec-diag-session");
    let mut client = support::cri().await;
    let pod = run_pod(
        &mut client,
        &PodSpec::new(&ns, "victim", vec![ContainerSpec::busybox("app")]),
        "test",
    )
    .await;
    let agent = Agent::start();
    let run_url = format!("{}/v1/targets/{ns}/victim/run", agent.url);
    let sre = tokio::spawn(async move {
        reqwest::Client::new()
            .post(run_url)
            .json(
                &json!({"command": ["sleep", "20.5"], "profile": "privileged",
                          "env": {"SRE_SECRET": "hunter2-of-the-sre"}, "timeoutSeconds": 20}),
            )
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let processes = format!("/v1/targets/{ns}/victim/diag/processes");
    let pid = support::eventually(
        "the privileged session's process",
        std::time::Duration::from_secs(10),
        || async {
            let (_, listing) = agent.get(&processes).await;
            listing["items"].as_array()?.iter().find_map(|p| {
                (p["cmdline"] == json!(["sleep", "20.5"])).then(|| p["pid"].as_u64())?
            })
        },
    )
    .await;
    for view in ["env", "open-files", "mounts"] {
        let (code, body) = agent
            .get(&format!(
                "/v1/targets/{ns}/victim/diag/{view}?pid={pid}&reveal=true"
            ))
            .await;
        assert!(
            !body.to_string().contains("hunter2"),
            "{view}: the SRE's secret: {body}"
        );
        assert_eq!(code, 404, "{view}: {body}");
    }
    sre.abort();
    pod.remove(&mut client).await;
}
