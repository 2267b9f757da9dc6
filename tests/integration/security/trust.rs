//! Only the right agent gets a caller's token (issue 14, finding 2).
//!
//! The plugin hands the agent the user's own API-server token, so it must
//! know it talks to the agent before it sends one: every agent publishes its
//! serving certificate's SHA-256 in a Lease named after its node, in its own
//! namespace, and the plugin refuses a certificate that does not match
//! before it sends a single header. The kubeconfig it writes for plain
//! kubectl carries the agent's certificate as its CA, never
//! `insecure-skip-tls-verify`. And an agent told which audiences its tokens
//! must have (`--token-audiences`) asks for them in its TokenReviews and
//! refuses an answer for others.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;

use crate::support::fake_apiserver::{API_AUDIENCE, FakeApiServer, FakeUser, Rule, rule};
use crate::support::pods::ContainerSpec;
use crate::support::{self, Agent};

const AGENT_NS: &str = "nsdebug";
const ANNOTATION: &str = "nsdebug.io/serving-cert-sha256";

fn user(name: &'static str, token: &'static str) -> FakeUser {
    FakeUser {
        token,
        name,
        groups: vec!["system:authenticated"],
    }
}

/// What a user of the plugin needs: the pod, the agent, its published
/// certificate, the forward, the exec.
fn plugin_rules(user: &'static str, ns: &str) -> Vec<Rule> {
    vec![
        rule(user, "get", "pods", Some(ns)),
        rule(user, "list", "pods", Some(ns)),
        rule(user, "create", "pods/exec", Some(ns)),
        rule(user, "list", "pods", Some(AGENT_NS)),
        rule(user, "get", "leases", Some(AGENT_NS)),
        rule(user, "create", "pods/portforward", Some(AGENT_NS)),
    ]
}

/// An agent pod of the DaemonSet on `node`, its API port `port`.
fn agent_pod(name: &str, node: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": AGENT_NS, "labels": {"app.kubernetes.io/name": "nsdebug"}},
        "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "nsdebug:0.1.0",
                 "ports": [{"name": "api", "containerPort": port, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

/// A Lease as an agent publishes it.
fn published(node: &str, holder: &str, sha256: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": AGENT_NS, "annotations": {ANNOTATION: sha256}},
        "spec": {"holderIdentity": holder},
    })
}

/// The SHA-256 of a DER certificate, in lowercase hex.
fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A TLS server on a loopback port with a certificate of its own (valid for
/// 127.0.0.1, as the agent's is), standing where the agent should be: it
/// keeps whatever a client sends it after the handshake.
struct Impostor {
    port: u16,
    sha256: String,
    received: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Impostor {
    async fn start() -> Self {
        let (cert, key) =
            nsdebug::tls::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let sha256 = sha256_hex(&der);
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, kept) = (acceptor.clone(), kept.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // A request head at most, then hang up.
                    let mut buffer = [0u8; 4096];
                    let mut seen = Vec::new();
                    while let Ok(n) = tls.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        seen.extend_from_slice(&buffer[..n]);
                        kept.lock().unwrap().extend_from_slice(&buffer[..n]);
                        if seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.len() > 64 * 1024 {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            port,
            sha256,
            received,
            task,
        }
    }

    /// What clients sent it, as text.
    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).to_lowercase()
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the plugin with `kubeconfig`; (exit code, stdout, stderr).
fn plugin(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(crate::support::plugin_binary())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("NSDEBUG_TOKEN")
        .env_remove("NSDEBUG_AGENT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_sends_no_token_to_an_agent_whose_certificate_was_not_published() {
    let alice = user("alice", "alice-token");
    let api = FakeApiServer::start(vec![alice.clone()], plugin_rules("alice", "shop")).await;
    // alice's pod on node-a; its agent's port is held by an impostor with a
    // certificate of its own, while the agent published another one.
    api.add_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "web:1"}]},
        "status": {"phase": "Running"},
    }));
    let impostor = Impostor::start().await;
    api.add_pod(agent_pod("nsdebug-x7k2p", "node-a", impostor.port));
    let (real, _) = nsdebug::tls::generate(&["127.0.0.1".into()]).unwrap();
    let real = sha256_hex(&CertificateDer::from_pem_slice(real.as_bytes()).unwrap());
    api.add_lease(published("node-a", "nsdebug-x7k2p", &real));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.user_kubeconfig(dir.path(), &alice, "shop");

    let (code, _, err) = blocking(|| plugin(&kubeconfig, &["exec", "web", "--", "true"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        !impostor.received().contains("authorization"),
        "the impostor got alice's token: {}",
        impostor.received()
    );
    assert!(
        impostor.received().is_empty(),
        "not even a request line: {}",
        impostor.received()
    );
    // Why, naming the agent and both certificates.
    assert!(
        err.contains("nsdebug/nsdebug-x7k2p")
            && err.contains(&real)
            && err.contains(&impostor.sha256),
        "{err}"
    );

    // `kubeconfig` writes nothing that would trust it.
    let written = dir.path().join("agent.kubeconfig");
    let (code, _, err) = blocking(|| {
        plugin(
            &kubeconfig,
            &[
                "kubeconfig",
                "--node",
                "node-a",
                "-o",
                written.to_str().unwrap(),
            ],
        )
    });
    assert_eq!(code, 1, "{err}");
    assert!(!written.exists());
    assert!(err.contains(&impostor.sha256), "{err}");

    // An agent that published nothing (or a Lease of another pod: a
    // restarted agent that has not published yet) is not trusted either.
    api.add_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"nodeName": "node-b", "containers": [{"name": "app", "image": "api:1"}]},
        "status": {"phase": "Running"},
    }));
    api.add_pod(agent_pod("nsdebug-b0b0b", "node-b", impostor.port));
    let (code, _, err) = blocking(|| plugin(&kubeconfig, &["exec", "api", "--", "true"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("nsdebug/nsdebug-b0b0b") && err.contains("not published"),
        "{err}"
    );
    api.add_lease(published("node-b", "nsdebug-old00", &impostor.sha256));
    let (code, _, err) = blocking(|| plugin(&kubeconfig, &["exec", "api", "--", "true"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nsdebug-old00"), "{err}");
    assert!(impostor.received().is_empty(), "{}", impostor.received());
}

/// Starts `kubectl nsdebug kubeconfig` and waits until it forwards.
fn start_forwarding(kubeconfig: &Path, args: &[&str]) -> std::process::Child {
    let mut child = Command::new(crate::support::plugin_binary())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("NSDEBUG_TOKEN")
        .env_remove("NSDEBUG_AGENT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in stderr.by_ref() {
        let line = line.unwrap();
        let done = line.contains("forwarding https://127.0.0.1:");
        seen.push(line);
        if done {
            std::thread::spawn(move || stderr.for_each(drop));
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the plugin never forwarded: {seen:?}");
}

/// Puts the pods of `ns`, as `agent` serves them, on `node`.
async fn on_node(api: &FakeApiServer, agent: &Agent, token: &str, ns: &str, node: &str) {
    let pods: Value = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!("{}/api/v1/namespaces/{ns}/pods", agent.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for pod in pods["items"].as_array().unwrap() {
        let mut pod = pod.clone();
        pod["spec"]["nodeName"] = json!(node);
        api.add_pod(pod);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_publishes_its_certificate_and_the_plugin_and_kubectl_verify_it() {
    let (ns, _client, _pod) =
        support::one_pod("trust-anchor", "app", vec![ContainerSpec::busybox("shell")]).await;
    let alice = user("alice", "alice-token");
    let api = FakeApiServer::start(vec![alice.clone()], plugin_rules("alice", &ns)).await;
    // The agent as the DaemonSet runs it: its pod's name and namespace from
    // the downward API.
    let mut command = Command::new(env!("CARGO_BIN_EXE_nsdebug"));
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--node-name", "node-a"])
        .arg("--cri-socket")
        .arg(support::testbed_socket())
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .env("POD_NAME", "nsdebug-x7k2p")
        .env("POD_NAMESPACE", AGENT_NS);
    let agent = Agent::spawn_command(command);
    let port: u16 = agent.url.rsplit(':').next().unwrap().parse().unwrap();
    api.add_pod(agent_pod("nsdebug-x7k2p", "node-a", port));
    on_node(&api, &agent, alice.token, &ns, "node-a").await;

    // It published its certificate, which is the one it serves.
    let lease = support::eventually("the agent's Lease", Duration::from_secs(30), || async {
        api.lease(AGENT_NS, "node-a")
    })
    .await;
    assert_eq!(lease["spec"]["holderIdentity"], "nsdebug-x7k2p", "{lease}");
    let pinned = lease["metadata"]["annotations"][ANNOTATION]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(pinned.len(), 64, "{lease}");

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.user_kubeconfig(dir.path(), &alice, &ns);
    let (code, out, err) = blocking(|| plugin(&kubeconfig, &["exec", "app", "--", "hostname"]));
    assert_eq!((code, out.as_str()), (0, "app\n"), "{err}");

    // The kubeconfig for plain kubectl trusts that certificate, and only it.
    let written = dir.path().join("agent.kubeconfig");
    let mut child = blocking(|| {
        start_forwarding(
            &kubeconfig,
            &[
                "kubeconfig",
                "--node",
                "node-a",
                "-o",
                written.to_str().unwrap(),
            ],
        )
    });
    let text = std::fs::read_to_string(&written).unwrap();
    assert!(!text.contains("insecure-skip-tls-verify"), "{text}");
    let config: Value = serde_json::from_str(&text).unwrap();
    let ca = config["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap_or_default();
    let ca = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, ca).unwrap();
    let ca = CertificateDer::from_pem_slice(&ca).unwrap();
    assert_eq!(sha256_hex(&ca), pinned);
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
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // `ui` verifies the agent before it asks it for a login link.
    let mut child = blocking(|| start_forwarding(&kubeconfig, &["ui", "app", "--no-browser"]));
    let mut link = String::new();
    blocking(|| {
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut link)
            .unwrap()
    });
    assert!(link.contains("/#login="), "{link}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_authority_given_replaces_the_published_certificate() {
    let (ns, _client, _pod) =
        support::one_pod("trust-ca", "app", vec![ContainerSpec::busybox("shell")]).await;
    let alice = user("alice", "alice-token");
    let api = FakeApiServer::start(vec![alice.clone()], plugin_rules("alice", &ns)).await;
    // An agent serving a certificate of the user's own (here self-signed,
    // its own CA) and not knowing its pod: it publishes nothing.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = nsdebug::tls::generate(&["127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let (other, _) = nsdebug::tls::generate(&["127.0.0.1".into()]).unwrap();
    let other_path = dir.path().join("other.crt");
    std::fs::write(&other_path, other).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_nsdebug"));
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--node-name", "node-a"])
        .arg("--cri-socket")
        .arg(support::testbed_socket())
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE");
    let agent = Agent::spawn_command(command);
    let port: u16 = agent.url.rsplit(':').next().unwrap().parse().unwrap();
    api.add_pod(agent_pod("nsdebug-x7k2p", "node-a", port));
    on_node(&api, &agent, alice.token, &ns, "node-a").await;
    let kubeconfig = api.user_kubeconfig(dir.path(), &alice, &ns);
    let run = |args: &[&str]| blocking(|| plugin(&kubeconfig, args));

    let (code, _, err) = run(&["exec", "app", "--", "hostname"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("has not published"), "{err}");
    let ca = cert_path.to_str().unwrap();
    let (code, out, err) = run(&[
        "--certificate-authority",
        ca,
        "exec",
        "app",
        "--",
        "hostname",
    ]);
    assert_eq!((code, out.as_str()), (0, "app\n"), "{err}");
    let wrong = other_path.to_str().unwrap();
    let (code, out, err) = run(&[
        "--certificate-authority",
        wrong,
        "exec",
        "app",
        "--",
        "hostname",
    ]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(
        api.lease(AGENT_NS, "node-a").is_none(),
        "nothing was published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_is_published_again() {
    let api = FakeApiServer::start(vec![], vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let new_pair = || {
        let (cert, key) = nsdebug::tls::generate(&["127.0.0.1".into()]).unwrap();
        let sha256 = sha256_hex(&CertificateDer::from_pem_slice(cert.as_bytes()).unwrap());
        (cert, key, sha256)
    };
    let (cert, key, first) = new_pair();
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_nsdebug"));
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--node-name", "node-a"])
        .arg("--cri-socket")
        .arg(support::testbed_socket())
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .env("POD_NAME", "nsdebug-x7k2p")
        .env("POD_NAMESPACE", AGENT_NS);
    let _agent = Agent::spawn_command(command);
    let published = |want: String| {
        let api = &api;
        async move {
            let lease = api.lease(AGENT_NS, "node-a")?;
            (lease["metadata"]["annotations"][ANNOTATION] == want.as_str()).then_some(lease)
        }
    };
    let lease = support::eventually("the first certificate", Duration::from_secs(30), || {
        published(first.clone())
    })
    .await;
    // The certificate itself too, for `kubectl --certificate-authority`.
    let pem = lease["metadata"]["annotations"]["nsdebug.io/serving-cert"]
        .as_str()
        .unwrap();
    assert_eq!(
        sha256_hex(&CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()),
        first
    );
    // The Secret is updated: the new certificate is published (the agent
    // looks at the files every few seconds).
    let (cert, key, second) = new_pair();
    std::fs::write(&key_path, key).unwrap();
    std::fs::write(&cert_path, cert).unwrap();
    support::eventually("the reloaded certificate", Duration::from_secs(30), || {
        published(second.clone())
    })
    .await;
}

/// `GET /v1/whoami` with `token`: (status, body).
async fn whoami(agent: &Agent, token: &str) -> (u16, Value) {
    let response = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!("{}/v1/whoami", agent.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_reviews_ask_for_the_agents_audiences_and_refuse_others() {
    let alice = user("alice", "alice-token");
    let runbook = user("system:serviceaccount:ops:runbook", "runbook-token");
    let api = FakeApiServer::start(vec![alice.clone(), runbook.clone()], vec![]).await;
    // A token bound to the agent's audience, as `kubectl create token
    // runbook --audience nsdebug` makes one.
    api.bind_token(runbook.token, &["nsdebug"]);
    let socket = support::testbed_socket();
    let kubeconfig = api.kubeconfig.to_str().unwrap();
    // From the environment, as the DaemonSet sets it.
    let mut command = Command::new(env!("CARGO_BIN_EXE_nsdebug"));
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--node-name", support::NODE_NAME])
        .args([
            "--cri-socket",
            socket.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig,
        ])
        .env("NSDEBUG_TOKEN_AUDIENCES", "nsdebug");
    let agent = Agent::spawn_command(command);

    let (code, body) = whoami(&agent, runbook.token).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["user"]["name"], runbook.name, "{body}");
    let review = api.reviews("TokenReview").pop().unwrap();
    assert_eq!(review["spec"]["audiences"], json!(["nsdebug"]), "{review}");
    // alice's token is the API server's: not for this agent.
    let (code, body) = whoami(&agent, alice.token).await;
    assert_eq!(code, 401, "{body}");
    support::assert_status(&body, 401, "Unauthorized");

    // An authenticator that ignores the audiences asked for answers for the
    // API server's: refused all the same.
    api.ignore_audiences();
    let strict = Agent::start_secure(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig,
        "--token-audiences",
        "nsdebug,nsdebug.example.com",
    ]);
    let (code, body) = whoami(&strict, alice.token).await;
    assert_eq!(code, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains(API_AUDIENCE),
        "{body}"
    );
    let review = api.reviews("TokenReview").pop().unwrap();
    assert_eq!(
        review["spec"]["audiences"],
        json!(["nsdebug", "nsdebug.example.com"]),
        "{review}"
    );
    let (code, body) = whoami(&strict, runbook.token).await;
    assert_eq!(code, 200, "{body}");
}
