//! `kubectl port-forward` against the agent, unmodified kubectl 1.32: the
//! WebSocket tunnel (its default), the SPDY fallback, many connections at
//! once, a large transfer both ways, a refused port, a caller without the
//! right; and the Python client's channel form.
//!
//! The pod: the distroless `hello` HTTP server on 8080 and a busybox `nc`
//! echo (`cat`) on 9000. Nothing listens on 81.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support;

use support::Agent;
use support::fake_apiserver::{FakeApiServer, FakeUser, rule};
use support::pods::{BUSYBOX_IMAGE, ContainerSpec};

fn containers() -> Vec<ContainerSpec> {
    vec![
        ContainerSpec::distroless("hello"),
        ContainerSpec::new(
            "echo",
            BUSYBOX_IMAGE,
            &["nc", "-ll", "-p", "9000", "-e", "cat"],
        ),
    ]
}

/// A running `kubectl port-forward` and the local ports it listens on, in
/// the order of the remote ports asked for.
struct Forward {
    child: Child,
    local: Vec<u16>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Forward {
    fn start(mut command: Command, remote: &[u16]) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl is installed");
        let stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            text
        });
        // "Forwarding from 127.0.0.1:43123 -> 8080", one line per port.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut local = vec![0; remote.len()];
        while local.contains(&0) {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kubectl port-forward ended before it listened: {}",
                    stderr.join().unwrap()
                );
            };
            let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") else {
                continue;
            };
            let (port, to) = rest.split_once(" -> ").unwrap();
            let index = remote
                .iter()
                .position(|r| r.to_string() == to.trim())
                .unwrap();
            local[index] = port.parse().unwrap();
        }
        // kubectl prints "Handling connection for …" per connection: drain it.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            local,
            stderr: Some(stderr),
        }
    }

    /// kubectl's exit code and stderr once it has ended by itself.
    fn ended(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status.code(), stderr)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `kubectl port-forward` that must be refused: its exit code and
/// stderr; a forward that starts fails the test instead of hanging it.
fn refused(mut command: Command) -> (Option<i32>, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is installed");
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap_or_default();
        if line.contains("Forwarding from") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kubectl was let forward: {line}");
        }
    }
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    (child.wait().unwrap().code(), stderr)
}

fn port_forward(agent: &Agent, ns: &str, extra: &[&str], ports: &[u16]) -> Command {
    let specs: Vec<String> = ports.iter().map(|p| format!("0:{p}")).collect();
    let mut args = vec!["port-forward", "-n", ns, "pod/pf"];
    args.extend_from_slice(extra);
    args.extend(specs.iter().map(String::as_str));
    agent.kubectl_command(&args)
}

/// One HTTP GET through `port`, as curl does it.
fn curl(port: u16) -> String {
    let output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Sends `size` bytes through the echo and reads them back; the SHA-256 of
/// what went and of what came back. With `half_close` the end of the
/// upload is a FIN and the echo's close ends the download; without, the
/// download ends after `size` bytes (the channel form has no half-close).
fn echo(port: u16, size: usize, half_close: bool) -> (Vec<u8>, Vec<u8>, usize) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut block = vec![0u8; 64 * 1024];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut sent = 0;
        while sent < size {
            for byte in block.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            let n = block.len().min(size - sent);
            writer.write_all(&block[..n]).unwrap();
            digest.update(&block[..n]);
            sent += n;
        }
        if half_close {
            writer.shutdown(std::net::Shutdown::Write).unwrap();
        }
        digest.finish().as_ref().to_vec()
    });
    let mut reader = stream;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut received = 0;
    while half_close || received < size {
        let n = reader.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        digest.update(&buffer[..n]);
        received += n;
    }
    (
        sender.join().unwrap(),
        digest.finish().as_ref().to_vec(),
        received,
    )
}

/// kubectl's default (SPDY in a WebSocket): curl through it, 50 at once,
/// 100 MB both ways; the SPDY fallback; a refused port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_reaches_the_pod() {
    let (ns, mut client, pod) = support::one_pod("portforward", "pf", containers()).await;
    let agent = Agent::start();

    let forward = Forward::start(port_forward(&agent, &ns, &[], &[8080, 9000]), &[8080, 9000]);
    let (web, echo_port) = (forward.local[0], forward.local[1]);
    assert_eq!(curl(web), "hello from pf\n");

    let answers: Vec<_> = (0..50)
        .map(|_| std::thread::spawn(move || curl(web)))
        .collect();
    for answer in answers {
        assert_eq!(answer.join().unwrap(), "hello from pf\n");
    }

    let size = 100 << 20;
    let (sent, received, count) = tokio::task::spawn_blocking(move || echo(echo_port, size, true))
        .await
        .unwrap();
    assert_eq!(count, size);
    assert_eq!(sent, received, "the echo came back changed");
    drop(forward);

    // The SPDY fallback, as kubectl sends it when told not to use WebSockets.
    let mut command = port_forward(&agent, &ns, &[], &[8080, 9000]);
    command.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
    let forward = Forward::start(command, &[8080, 9000]);
    assert_eq!(curl(forward.local[0]), "hello from pf\n");
    let echo_port = forward.local[1];
    let (sent, received, count) =
        tokio::task::spawn_blocking(move || echo(echo_port, 8 << 20, true))
            .await
            .unwrap();
    assert_eq!((count, &sent), (8 << 20, &received));
    drop(forward);

    // A port nothing listens on: the kubelet's error, printed by kubectl,
    // which then gives up the whole session.
    let forward = Forward::start(port_forward(&agent, &ns, &[], &[81]), &[81]);
    let mut stream = TcpStream::connect(("127.0.0.1", forward.local[0])).unwrap();
    let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let (code, stderr) = forward.ended();
    assert_eq!(code, Some(1), "{stderr}");
    let uid = pod.spec.uid();
    assert!(
        stderr.contains(&format!(
            "error forwarding port 81 to pod {ns}/pf, uid {uid}: IPv4: dial tcp4 127.0.0.1:81: connect: connection refused"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("lost connection to pod"), "{stderr}");

    pod.remove(&mut client).await;
}

/// The Python client's `portforward` (`v4.channel.k8s.io`, ports in the query).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_port_forward() {
    let (ns, mut client, pod) = support::one_pod("portforward-python", "pf", containers()).await;
    let agent = Agent::start();
    let python = support::repo().join("target/pyclient/bin/python");
    assert!(
        python.exists(),
        "run hack/test.sh: it makes the venv with the kubernetes client"
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(support::repo().join("tests/clients/python_portforward.py"))
            .args([&agent.url, &ns, "pf"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["http"], "hello from pf\n", "{result}");
    assert_eq!(result["echo"], true, "{result}");
    assert!(
        result["refused"]
            .as_str()
            .unwrap()
            .contains("error forwarding port 81 to pod"),
        "{result}"
    );
    pod.remove(&mut client).await;
}

/// Without `create pods/portforward`, kubectl's usual Forbidden (both of
/// its attempts, the WebSocket and the SPDY one, are refused alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_needs_its_right() {
    let (ns, mut client, pod) = support::one_pod(
        "portforward-auth",
        "pf",
        vec![ContainerSpec::distroless("hello")],
    )
    .await;
    let users = vec![
        FakeUser {
            token: "alice-token",
            name: "alice",
            groups: vec!["dev"],
        },
        FakeUser {
            token: "bob-token",
            name: "bob",
            groups: vec!["viewers"],
        },
    ];
    let rules = vec![
        rule("alice", "create", "pods/portforward", Some(&ns)),
        rule("alice", "get", "pods", Some(&ns)),
        rule("bob", "get", "pods", Some(&ns)),
        rule("bob", "create", "pods/exec", Some(&ns)),
    ];
    let api = FakeApiServer::start(users, rules).await;
    let socket = support::testbed_socket();
    let agent = Agent::start_secure(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--kubeconfig",
        api.kubeconfig.to_str().unwrap(),
        "--audit-log",
        "",
    ]);
    let with_token = |token: &str| {
        let mut command = agent.kubectl_command(&[
            "--token",
            token,
            "--insecure-skip-tls-verify",
            "port-forward",
            "-n",
            &ns,
            "pod/pf",
            "0:8080",
        ]);
        command.stdin(Stdio::null());
        command
    };
    let forward = Forward::start(with_token("alice-token"), &[8080]);
    let port = forward.local[0];
    let answer = tokio::task::spawn_blocking(move || curl(port))
        .await
        .unwrap();
    assert_eq!(answer, "hello from pf\n");
    drop(forward);

    // A hostNetwork pod's loopback is the node's: alice's right on the pod
    // is not enough.
    let node_net =
        support::pods::PodSpec::new(&ns, "node-net", vec![ContainerSpec::busybox("shell")])
            .host_network();
    let node_net = support::pods::run_pod(&mut client, &node_net, "test").await;
    let command = agent.kubectl_command(&[
        "--token",
        "alice-token",
        "--insecure-skip-tls-verify",
        "port-forward",
        "-n",
        &ns,
        "pod/node-net",
        "0:22",
    ]);
    let (code, stderr) = tokio::task::spawn_blocking(move || refused(command))
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "pod {ns}/node-net uses the node's network namespace (hostNetwork): its ports are the node's, which needs the privileged right"
        )) && stderr.contains("nodes/proxy"),
        "{stderr}"
    );
    node_net.remove(&mut client).await;

    let command = with_token("bob-token");
    let (code, stderr) = tokio::task::spawn_blocking(move || refused(command))
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "pods \"pf\" is forbidden: User \"bob\" cannot create resource \"pods/portforward\" in API group \"\" in the namespace \"{ns}\""
        )),
        "{stderr}"
    );
    pod.remove(&mut client).await;
}

/// `kubectl nsdebug port-forward`: the channel form, one WebSocket per
/// local connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_forwards_through_the_agent() {
    let (ns, mut client, pod) = support::one_pod("portforward-plugin", "pf", containers()).await;
    let agent = Agent::start();
    let mut command = Command::new(support::plugin_binary());
    command
        .args(["--agent-url", &agent.url])
        .args(["port-forward", "-n", &ns, "pf", "0:8080", ":9000"])
        .env("KUBECONFIG", "/nonexistent")
        .env_remove("NSDEBUG_TOKEN");
    let forward = Forward::start(command, &[8080, 9000]);
    let (web, echo_port) = (forward.local[0], forward.local[1]);
    let answers: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || curl(web)))
        .collect();
    for answer in answers {
        assert_eq!(answer.join().unwrap(), "hello from pf\n");
    }
    let (sent, received, count) =
        tokio::task::spawn_blocking(move || echo(echo_port, 8 << 20, false))
            .await
            .unwrap();
    assert_eq!((count, &sent), (8 << 20, &received));
    drop(forward);
    pod.remove(&mut client).await;
}

/// The agent's shutdown ends a port-forward session: kubectl is told (it
/// exits), and the audit trail says why, with the session's facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_port_forward() {
    let (ns, mut client, pod) = support::one_pod(
        "portforward-shutdown",
        "pf",
        vec![ContainerSpec::distroless("hello")],
    )
    .await;
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_log = audit_dir.path().join("audit.jsonl");
    let mut agent = Agent::start_on_testbed(&["--audit-log", audit_log.to_str().unwrap()]);
    let forward = Forward::start(port_forward(&agent, &ns, &[], &[8080]), &[8080]);
    let port = forward.local[0];
    let answer = tokio::task::spawn_blocking(move || curl(port))
        .await
        .unwrap();
    assert_eq!(answer, "hello from pf\n");

    let (status, (code, stderr)) = tokio::task::spawn_blocking(move || {
        let status = agent.terminate();
        (status, forward.ended())
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("lost connection to pod"), "{stderr}");

    let audit = std::fs::read_to_string(&audit_log).unwrap();
    let complete: serde_json::Value = audit
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|event| {
            event["stage"] == "ResponseComplete"
                && event["objectRef"]["subresource"] == "portforward"
        })
        .unwrap_or_else(|| panic!("no port-forward in the audit log:\n{audit}"));
    let notes = &complete["annotations"];
    assert_eq!(
        notes["nsdebug.dev/exit-code"], "agent shutdown",
        "{complete}"
    );
    assert_eq!(notes["nsdebug.dev/ports"], "8080", "{complete}");
    assert_eq!(notes["nsdebug.dev/connections"], "1", "{complete}");
    assert_eq!(
        notes["nsdebug.dev/portforward"], "websocket-spdy",
        "{complete}"
    );
    let out: u64 = notes["nsdebug.dev/output-bytes"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(out > "hello from pf\n".len() as u64, "{complete}");
    pod.remove(&mut client).await;
}
