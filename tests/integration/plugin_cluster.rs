//! `kubectl nsdebug` through the cluster: the user's kubeconfig, the pod's
//! node, the agent pod on that node and a port-forward through the API
//! server. The API server is the test's fake (pods, label and field
//! selectors, RBAC, `pods/portforward` over WebSocket, dialling the pod's
//! loopback as the kubelet does); the agents, pods and commands are real.

use crate::support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::Agent;
use support::fake_apiserver::{FakeApiServer, FakeUser, Rule, rule};
use support::pods::{self, ContainerSpec, PodSpec};

fn user(name: &'static str, token: &'static str) -> FakeUser {
    FakeUser {
        token,
        name,
        groups: vec!["system:authenticated"],
    }
}

/// The rules an SRE using the plugin needs in `ns`: read the pod, find the
/// agent and read the certificate it published, forward to it, exec
/// (checked by the agent).
fn sre_rules(user: &'static str, ns: &str) -> Vec<Rule> {
    vec![
        rule(user, "get", "pods", Some(ns)),
        rule(user, "list", "pods", Some(ns)),
        rule(user, "create", "pods/exec", Some(ns)),
        rule(user, "list", "pods", Some("nsdebug")),
        rule(user, "get", "leases", Some("nsdebug")),
        rule(user, "create", "pods/portforward", Some("nsdebug")),
    ]
}

/// The agent's own pod as the DaemonSet makes it, on `node`, its API port
/// the real agent's.
fn agent_pod(name: &str, node: &str, agent: &Agent, ready: bool) -> Value {
    let port: u16 = agent.url.rsplit(':').next().unwrap().parse().unwrap();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "nsdebug", "labels": {"app.kubernetes.io/name": "nsdebug"}},
        "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "nsdebug:0.1.0",
                 "ports": [{"name": "api", "containerPort": port, "protocol": "TCP"}]}]},
        "status": {"phase": if ready { "Running" } else { "Pending" },
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    })
}

/// The pods of `ns` as the agent serves them (real objects of real pods),
/// placed on `node`.
async fn real_pods(agent: &Agent, token: &str, ns: &str, node: &str) -> Vec<Value> {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let list: Value = client
        .get(format!("{}/api/v1/namespaces/{ns}/pods", agent.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut pods = list["items"].as_array().cloned().unwrap_or_default();
    assert!(!pods.is_empty(), "the agent lists no pod in {ns}: {list}");
    for pod in &mut pods {
        pod["spec"]["nodeName"] = json!(node);
    }
    pods
}

/// Node `node-a` with a real agent (pod `nsdebug/nsdebug-x7k2p`) and the
/// pods of `ns` on it, as `user` sees them; a directory for the test's files.
async fn one_node(api: &FakeApiServer, user: &FakeUser, ns: &str) -> (Agent, tempfile::TempDir) {
    let agent = secure_agent(api, "node-a", "nsdebug-x7k2p").await;
    for pod in real_pods(&agent, user.token, ns, "node-a").await {
        api.add_pod(pod);
    }
    api.add_pod(agent_pod("nsdebug-x7k2p", "node-a", &agent, true));
    (agent, tempfile::tempdir().unwrap())
}

/// The agent of pod `nsdebug/{pod}` on `node`, once it has published its
/// certificate in the node's Lease (which the plugin checks).
async fn secure_agent(api: &FakeApiServer, node: &str, pod: &str) -> Agent {
    let socket = support::testbed_socket();
    let mut command = Command::new(env!("CARGO_BIN_EXE_nsdebug"));
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--node-name", node]);
    command.arg("--cri-socket").arg(&socket);
    command.arg("--kubeconfig").arg(&api.kubeconfig);
    command.env("POD_NAME", pod).env("POD_NAMESPACE", "nsdebug");
    let agent = Agent::spawn_command(command);
    support::eventually(
        "the agent's published certificate",
        std::time::Duration::from_secs(30),
        || async {
            api.lease("nsdebug", node)
                .filter(|lease| lease["spec"]["holderIdentity"] == pod)
        },
    )
    .await;
    agent
}

/// Runs the plugin with `kubeconfig`; (exit code, stdout, stderr).
fn plugin(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(support::plugin_binary())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("NSDEBUG_TOKEN")
        .env_remove("NSDEBUG_AGENT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The scene of the plugin's cluster tests: a pod `app` (busybox `shell`,
/// distroless `web`) in the test's namespace; alice with the SRE rules there,
/// bob who may read pods but not forward to the agent; node `node-a` with a
/// real agent on the fake API server; alice's kubeconfig (its namespace the
/// pods') in a directory for the test's files.
struct Cluster {
    ns: String,
    alice: FakeUser,
    bob: FakeUser,
    api: FakeApiServer,
    agent: Agent,
    dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
    _pod: pods::RunningPod,
}

impl Cluster {
    async fn start(test: &str) -> Self {
        let (ns, _client, pod) = support::one_pod(
            test,
            "app",
            vec![
                ContainerSpec::busybox("shell"),
                ContainerSpec::distroless("web"),
            ],
        )
        .await;
        let alice = user("alice", "alice-token");
        let bob = user("bob", "bob-token");
        let mut rules = sre_rules("alice", &ns);
        // bob may read pods but not forward to the agent.
        rules.push(rule("bob", "get", "pods", Some(&ns)));
        rules.push(rule("bob", "list", "pods", Some("nsdebug")));
        let api = FakeApiServer::start(vec![alice.clone(), bob.clone()], rules).await;
        let (agent, dir) = one_node(&api, &alice, &ns).await;
        // The context's namespace is the pods': no -n needed.
        let kubeconfig = api.user_kubeconfig(dir.path(), &alice, &ns);
        Self {
            ns,
            alice,
            bob,
            api,
            agent,
            dir,
            kubeconfig,
            _pod: pod,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_finds_the_agent_through_the_api_server() {
    let cluster = Cluster::start("plugin-cluster").await;
    let Cluster {
        api, kubeconfig, ..
    } = cluster;
    let run = |args: &[&str], stdin: Option<&str>| blocking(|| plugin(&kubeconfig, args, stdin));

    // exec: streams apart, the exit code propagated.
    let (code, out, err) = run(
        &[
            "exec",
            "app",
            "-c",
            "shell",
            "--",
            "sh",
            "-c",
            "hostname; echo oops >&2; exit 3",
        ],
        None,
    );
    assert_eq!((code, out.as_str(), err.as_str()), (3, "app\n", "oops\n"));
    // It went to the agent pod on the pod's node, as alice, through a
    // port-forward to the agent's API port.
    let forwards = api.reviews("PortForward");
    assert!(!forwards.is_empty());
    assert_eq!(forwards[0]["user"], "alice");
    assert_eq!(forwards[0]["pod"], "nsdebug-x7k2p");
    assert_eq!(forwards[0]["namespace"], "nsdebug");
    let lookups = api.reviews("PodList");
    assert!(
        lookups
            .iter()
            .any(|l| l["namespace"] == "nsdebug" && l["fieldSelector"] == "spec.nodeName=node-a"),
        "{lookups:?}"
    );
    // ...and the agent authorized alice herself for the exec.
    assert!(api.reviews("SubjectAccessReview").iter().any(|r| {
        r["spec"]["user"] == "alice"
            && r["spec"]["resourceAttributes"]["subresource"] == "exec"
            && r["spec"]["resourceAttributes"]["name"] == "app"
    }));

    // exec -i: stdin reaches the command.
    let (code, out, err) = run(
        &["exec", "-i", "app", "-c", "shell", "--", "tr", "a-z", "A-Z"],
        Some("piped through\n"),
    );
    assert_eq!((code, out.as_str()), (0, "PIPED THROUGH\n"), "{err}");
    let (code, _, err) = run(
        &[
            "exec", "-i", "app", "-c", "shell", "--", "sh", "-c", "exit 7",
        ],
        Some(""),
    );
    assert_eq!(code, 7, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_and_diag_find_the_agent_through_the_api_server() {
    let cluster = Cluster::start("plugin-cluster-shell").await;
    let Cluster { kubeconfig, .. } = cluster;
    let run = |args: &[&str], stdin: Option<&str>| blocking(|| plugin(&kubeconfig, args, stdin));

    // shell in a distroless container: no shell there, so the toolbox, in
    // the pod's namespaces with the container's files at /target.
    let (code, out, err) = run(
        &["shell", "app", "-c", "web"],
        Some("echo in-$((6 * 7)); test -d /target/proc && echo target-ok; exit 4\n"),
    );
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(out.contains("in-42") && out.contains("target-ok"), "{out}");
    assert!(err.contains("has no shell"), "{err}");
    // In a container with one, its own.
    let (code, out, err) = run(
        &["shell", "app", "-c", "shell"],
        Some("cat /proc/1/cmdline | tr '\\0' ' '\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("sleep"),
        "the busybox container's own PID 1: {out}"
    );
    assert!(!err.contains("no shell"), "{err}");

    // diag with probe parameters.
    let (code, out, err) = run(&["diag", "app", "-c", "web", "sockets", "-o", "json"], None);
    assert_eq!(code, 0, "{err}");
    let sockets: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sockets["items"][0]["local"], "0.0.0.0:8080");
    let (code, out, err) = run(
        &[
            "diag",
            "app",
            "-c",
            "web",
            "tcp",
            "host=127.0.0.1",
            "port=8080",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Connected:", "yes"]),
        "{out}"
    );
    let (code, _, err) = run(&["diag", "app", "tcp", "port"], None);
    assert_eq!(code, 1);
    assert!(err.contains("\"port\" is not KEY=VALUE"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_finds_the_agent_through_the_api_server() {
    let cluster = Cluster::start("plugin-cluster-cp").await;
    let Cluster {
        ns,
        dir,
        kubeconfig,
        ..
    } = cluster;
    let run = |args: &[&str], stdin: Option<&str>| blocking(|| plugin(&kubeconfig, args, stdin));

    // cp: a file and a directory out, a file in; as the container's files.
    let local = dir.path().join("passwd");
    let (code, _, err) = run(
        &[
            "cp",
            &format!("{ns}/app:/etc/passwd"),
            local.to_str().unwrap(),
            "-c",
            "shell",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (_, want, _) = run(
        &["exec", "app", "-c", "shell", "--", "cat", "/etc/passwd"],
        None,
    );
    assert_eq!(std::fs::read_to_string(&local).unwrap(), want);
    let tree = dir.path().join("etc-copy");
    let (code, _, err) = run(
        &["cp", "app:/etc", tree.to_str().unwrap(), "-c", "shell"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(tree.join("passwd")).unwrap(), want);
    assert!(tree.join("hostname").is_file());
    // Into an existing directory: under the source's name.
    let (code, _, err) = run(
        &[
            "cp",
            "app:/etc/hostname",
            dir.path().to_str().unwrap(),
            "-c",
            "shell",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("hostname"))
            .unwrap()
            .trim(),
        "app"
    );
    let upload = dir.path().join("fix.conf");
    std::fs::write(&upload, "fixed=1\n").unwrap();
    let (code, _, err) = run(
        &["cp", upload.to_str().unwrap(), "app:/tmp/", "-c", "shell"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(
        &["exec", "app", "-c", "shell", "--", "cat", "/tmp/fix.conf"],
        None,
    );
    assert_eq!(out, "fixed=1\n");
    // A missing remote file leaves nothing behind.
    let missing = dir.path().join("missing");
    let (code, _, err) = run(
        &[
            "cp",
            "app:/etc/nope",
            missing.to_str().unwrap(),
            "-c",
            "shell",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("404") && err.contains("/etc/nope"), "{err}");
    assert!(!missing.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("nsdebug-partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_and_forward_errors_are_clear() {
    let cluster = Cluster::start("plugin-cluster-errors").await;
    let Cluster {
        ns,
        alice,
        bob,
        api,
        agent,
        dir,
        kubeconfig,
        ..
    } = cluster;
    let run = |args: &[&str], stdin: Option<&str>| blocking(|| plugin(&kubeconfig, args, stdin));

    // Clear errors, exit 1: a pod that is not there, one on a node without
    // an agent, a user who may not forward.
    let (code, _, err) = run(&["exec", "nope", "--", "true"], None);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("pod {ns}/nope"))
            && err.contains("404")
            && err.contains("pods \"nope\" not found"),
        "{err}"
    );
    let mut stray = real_pods(&agent, alice.token, &ns, "node-b")
        .await
        .remove(0);
    stray["metadata"]["name"] = json!("stray");
    api.add_pod(stray);
    let (code, _, err) = run(&["exec", "stray", "--", "true"], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("on node node-b") && err.contains("none runs there"),
        "{err}"
    );
    let bob_config = api.user_kubeconfig(dir.path(), &bob, &ns);
    let (code, _, err) = blocking(|| plugin(&bob_config, &["exec", "app", "--", "true"], None));
    assert_eq!(code, 1);
    assert!(
        err.contains("403")
            && err.contains(
                "User \"bob\" cannot create resource \"pods\" subresource \"portforward\""
            ),
        "{err}"
    );
    // An agent pod whose port nothing listens on (though it published its
    // certificate): the kubelet's own error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let published = api.lease("nsdebug", "node-a").unwrap();
    api.add_lease(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "node-c", "namespace": "nsdebug", "annotations": published["metadata"]["annotations"]},
        "spec": {"holderIdentity": "nsdebug-dead"},
    }));
    let mut dead = agent_pod("nsdebug-dead", "node-c", &agent, true);
    dead["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(closed_port);
    api.add_pod(dead);
    let mut on_c = real_pods(&agent, alice.token, &ns, "node-c")
        .await
        .remove(0);
    on_c["metadata"]["name"] = json!("on-c");
    api.add_pod(on_c);
    let (code, _, err) = run(&["exec", "on-c", "--", "true"], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("nsdebug-dead") && err.contains("connection refused"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_fans_out_to_every_matching_pod_on_every_node() {
    let ns = support::test_namespace("plugin-fanout");
    let mut cri = support::cri().await;
    let mut fan_pods = Vec::new();
    for name in ["fan-a", "fan-b", "fan-c"] {
        let spec =
            PodSpec::new(&ns, name, vec![ContainerSpec::busybox("main")]).label("app", "fan");
        fan_pods.push(pods::run_pod(&mut cri, &spec, "test").await);
    }
    let other =
        PodSpec::new(&ns, "other", vec![ContainerSpec::busybox("main")]).label("app", "other");
    fan_pods.push(pods::run_pod(&mut cri, &other, "test").await);

    let alice = user("alice", "alice-token");
    let api = FakeApiServer::start(vec![alice.clone()], {
        let mut rules = sre_rules("alice", &ns);
        rules.push(rule("alice", "list", "pods", None));
        rules
    })
    .await;
    // Two nodes, each with its agent; both see the test bed's pods, so the
    // node a pod is on decides which agent runs it.
    let agent_a = secure_agent(&api, "node-a", "nsdebug-aaaaa").await;
    let agent_b = secure_agent(&api, "node-b", "nsdebug-bbbbb").await;
    for pod in real_pods(&agent_a, alice.token, &ns, "node-a").await {
        let node = if pod["metadata"]["name"] == "fan-b" {
            "node-b"
        } else {
            "node-a"
        };
        let mut pod = pod;
        pod["spec"]["nodeName"] = json!(node);
        api.add_pod(pod);
    }
    // A pending pod that matches: skipped, with a note.
    let mut pending = real_pods(&agent_a, alice.token, &ns, "node-a")
        .await
        .remove(0);
    pending["metadata"]["name"] = json!("fan-pending");
    pending["metadata"]["labels"] = json!({"app": "fan"});
    pending["status"] = json!({"phase": "Pending"});
    api.add_pod(pending);
    api.add_pod(agent_pod("nsdebug-aaaaa", "node-a", &agent_a, true));
    api.add_pod(agent_pod("nsdebug-bbbbb", "node-b", &agent_b, true));

    let dir = tempfile::tempdir().unwrap();
    // Credentials from an exec plugin, as with cloud providers' kubeconfigs.
    let helper = dir.path().join("credential-helper");
    std::fs::write(
        &helper,
        "#!/bin/sh\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"alice-token\"}}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let kubeconfig = dir.path().join("exec.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: alice\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      interactiveMode: Never\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: alice\n    namespace: default\ncurrent-context: fake\n",
            api.url,
            helper.display()
        ),
    )
    .unwrap();

    let (code, out, err) = blocking(|| {
        plugin(
            &kubeconfig,
            &[
                "exec",
                "-l",
                "app=fan",
                "-A",
                "--",
                "sh",
                "-c",
                "echo hello from $(hostname); test $(hostname) != fan-b",
            ],
            None,
        )
    });
    // Every line prefixed by its pod; fan-b's command failed, so exit 1.
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            format!("[{ns}/fan-a] hello from fan-a"),
            format!("[{ns}/fan-b] hello from fan-b"),
            format!("[{ns}/fan-c] hello from fan-c"),
        ],
        "{err}"
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("skipping {ns}/fan-pending: phase Pending")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "3 pods, 2 exited 0, 1 did not: {ns}/fan-b (exit 1)"
        )),
        "{err}"
    );
    // One forward per node, to that node's agent.
    let mut forwarded: Vec<String> = api
        .reviews("PortForward")
        .iter()
        .map(|f| f["pod"].as_str().unwrap().to_string())
        .collect();
    forwarded.sort();
    forwarded.dedup();
    assert_eq!(forwarded, ["nsdebug-aaaaa", "nsdebug-bbbbb"]);
    // Every command exits 0: so does the plugin.
    let (code, _, err) = blocking(|| {
        plugin(
            &kubeconfig,
            &["exec", "-l", "app=fan", "-A", "--", "true"],
            None,
        )
    });
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("3 pods, all exited 0"), "{err}");
    // Nothing matches: an error, not silence.
    let (code, _, err) = blocking(|| {
        plugin(
            &kubeconfig,
            &["exec", "-l", "app=none", "-A", "--", "true"],
            None,
        )
    });
    assert_eq!(code, 1);
    assert!(
        err.contains("no running pod matches \"app=none\" in any namespace"),
        "{err}"
    );
    for pod in fan_pods {
        pod.remove(&mut cri).await;
    }
}

/// Starts a long-running plugin command and waits for its "forwarding" line.
fn start_forwarding(
    kubeconfig: &Path,
    args: &[&str],
    path_env: Option<&Path>,
) -> (std::process::Child, Vec<String>) {
    let mut command = Command::new(support::plugin_binary());
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("NSDEBUG_TOKEN")
        .env_remove("NSDEBUG_AGENT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = path_env {
        command.env(
            "PATH",
            format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()),
        );
    }
    let mut child = command.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in stderr.by_ref() {
        let line = line.unwrap();
        let done = line.contains("forwarding https://127.0.0.1:");
        seen.push(line);
        if done {
            // Keep reading what else it says, so its stderr stays open.
            std::thread::spawn(move || stderr.for_each(drop));
            return (child, seen);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the plugin never forwarded: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_and_kubeconfig_forward_until_stopped() {
    let (ns, _client, _pod) =
        support::one_pod("plugin-ui", "app", vec![ContainerSpec::busybox("shell")]).await;
    let alice = user("alice", "alice-token");
    let api = FakeApiServer::start(vec![alice.clone()], sre_rules("alice", &ns)).await;
    let (_agent, dir) = one_node(&api, &alice, &ns).await;
    let kubeconfig = api.user_kubeconfig(dir.path(), &alice, &ns);

    // kubeconfig: plain kubectl against the node's agent, as alice.
    let written = dir.path().join("agent.kubeconfig");
    let (mut child, _) = blocking(|| {
        start_forwarding(
            &kubeconfig,
            &[
                "kubeconfig",
                "--node",
                "node-a",
                "-o",
                written.to_str().unwrap(),
            ],
            None,
        )
    });
    let text = std::fs::read_to_string(&written).unwrap();
    assert!(
        !text.contains("alice-token") || text.contains("\"token\""),
        "{text}"
    );
    // kubectl verifies the agent: its certificate is the cluster's CA.
    assert!(!text.contains("insecure-skip-tls-verify"), "{text}");
    assert!(text.contains("certificate-authority-data"), "{text}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&written).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let output = blocking(|| {
        Command::new("kubectl")
            .args([
                "--kubeconfig",
                written.to_str().unwrap(),
                "get",
                "pods",
                "-o",
                "name",
            ])
            .output()
            .unwrap()
    });
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "pod/app\n");
    let output = blocking(|| {
        Command::new("kubectl")
            .args([
                "--kubeconfig",
                written.to_str().unwrap(),
                "exec",
                "app",
                "--",
                "hostname",
            ])
            .output()
            .unwrap()
    });
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "app\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stop(&mut child);

    // ui: a one-time link handed to the browser (xdg-open, here a stand-in
    // that writes down what it was given) through a private page, never on
    // the browser's command line; the link logs in as alice.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let opened = dir.path().join("opened");
    std::fs::write(
        bin.join("xdg-open"),
        format!("#!/bin/sh\necho \"$1\" > {}\n", opened.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("xdg-open"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (mut child, _) = blocking(|| start_forwarding(&kubeconfig, &["ui", "app"], Some(&bin)));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut login_page = String::new();
    blocking(|| stdout.read_line(&mut login_page).unwrap());
    let login_page = login_page.trim().to_string();
    let browser_got = support::eventually(
        "the browser was started",
        std::time::Duration::from_secs(10),
        || {
            let opened = opened.clone();
            async move {
                std::fs::read_to_string(&opened)
                    .ok()
                    .filter(|s| s.ends_with('\n'))
            }
        },
    )
    .await;
    assert_eq!(browser_got.trim(), login_page);
    assert!(!login_page.contains("login="), "{login_page}");
    let text = std::fs::read_to_string(&login_page).unwrap();
    let link = text
        .split("href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no link in the page: {text}"));
    assert!(
        link.starts_with("https://127.0.0.1:") && link.contains("/#login="),
        "{link}"
    );
    let (base, code) = link.split_once("/#login=").unwrap();
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let page = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("nsdebug"));
    let login: Value = client
        .post(format!("{base}/v1/login"))
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["user"]["name"], "alice", "{login}");
    stop(&mut child);
    assert!(
        !Path::new(&login_page).exists(),
        "the page is removed: {login_page}"
    );
}

/// SIGTERM, and the plugin exits 0.
fn stop(child: &mut std::process::Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_is_a_real_terminal_that_follows_the_window() {
    let (ns, _client, _pod) =
        support::one_pod("plugin-tty", "term", vec![ContainerSpec::busybox("shell")]).await;
    let alice = user("alice", "alice-token");
    let api = FakeApiServer::start(vec![alice.clone()], sre_rules("alice", &ns)).await;
    let (_agent, dir) = one_node(&api, &alice, &ns).await;
    let kubeconfig = api.user_kubeconfig(dir.path(), &alice, &ns);

    // After the plugin: its exit code, and whether the terminal is back in
    // canonical mode (raw mode undone).
    let command = format!(
        "{} --kubeconfig {} shell term; echo EXITED=$?; stty -a | grep -o -- '-\\?icanon' | sed 's/^/MODE=/'; sleep 60",
        support::plugin_binary().display(),
        kubeconfig.display()
    );
    let tmux = support::Tmux::start("nsdebug-plugin", 100, 30, &command);
    let screen = |want: &'static str| tmux.screen(want);
    screen("/ #").await;
    tmux.run(&["send-keys", "stty size; tty", "Enter"]);
    let text = screen("/dev/pts/").await;
    assert!(text.contains("30 100"), "the terminal's size: {text}");
    tmux.run(&["resize-window", "-x", "120", "-y", "40"]);
    tmux.run(&["send-keys", "clear; stty size", "Enter"]);
    screen("40 120").await;
    // Ctrl-C reaches the command in the container, not the plugin.
    tmux.run(&["send-keys", "echo sleeping-$((1 + 1)); sleep 30", "Enter"]);
    screen("sleeping-2").await;
    tmux.run(&["send-keys", "C-c"]);
    tmux.run(&["send-keys", "echo still-$((6 * 7))", "Enter"]);
    let text = screen("still-42").await;
    assert!(text.contains("^C"), "{text}");
    tmux.run(&["send-keys", "exit 7", "Enter"]);
    let text = screen("MODE=").await;
    assert!(text.contains("EXITED=7"), "{text}");
    assert!(
        text.contains("MODE=icanon"),
        "the terminal is restored: {text}"
    );
}
