//! `pods/log` with unmodified kubectl and the Python client: the runtime's
//! log files of real test-bed containers, read through the agent.
//!
//! The test bed keeps log files across runs (pod UIDs are fixed by name), so
//! each test names its pod uniquely for this run.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support;

use serde_json::Value;
use support::fake_apiserver::{FakeApiServer, FakeUser, rule};
use support::pods::{ContainerSpec, PodSpec, run_pod};
use support::{Agent, assert_status, eventually, test_namespace};

/// A pod name of this run only.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{:x}",
        (nanos as u64) ^ u64::from(std::process::id())
    )
}

/// Writes known lines (one of 20000 bytes that containerd splits at 16384),
/// then `later-line` on stderr each time `/tmp/go` appears. (Only one stream
/// at a time: containerd copies stdout and stderr into the file from two
/// readers, so lines written together on both may land in either order.)
const WRITER: &str = "echo first-line; \
    head -c 20000 /dev/zero | tr '\\0' x; echo; echo last-line; \
    while true; do if [ -e /tmp/go ]; then rm /tmp/go; echo later-line >&2; fi; sleep 0.1; done";

fn long_line() -> String {
    "x".repeat(20000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_reads_the_runtime_files() {
    let ns = test_namespace("logs");
    let name = unique("writer");
    let mut client = support::cri().await;
    let spec = PodSpec::new(
        &ns,
        &name,
        vec![
            ContainerSpec::new("app", support::pods::BUSYBOX_IMAGE, &["sh", "-c", WRITER]),
            ContainerSpec::new(
                "side",
                support::pods::BUSYBOX_IMAGE,
                &["sh", "-c", "echo side-says-hi; exec sleep 100000"],
            ),
        ],
    )
    .label("logs-test", &name);
    let mut pod = run_pod(&mut client, &spec, "test").await;
    let agent = Agent::start();
    let logs = |args: &[&str]| {
        let mut all = vec!["logs", "-n", &ns];
        all.extend_from_slice(args);
        agent.kubectl(&all)
    };

    // Everything, whole: the split line joined.
    let out = eventually("the writer's lines", Duration::from_secs(20), || async {
        let (code, out, _) = logs(&[&name, "-c", "app"]);
        (code == 0 && out.contains("last-line")).then_some(out)
    })
    .await;
    let long = long_line();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["first-line", long.as_str(), "last-line"]);

    // --tail counts raw records; --timestamps; --limit-bytes; --since.
    let (code, out, err) = logs(&[&name, "-c", "app", "--tail=1"]);
    assert_eq!((code, out.as_str()), (0, "last-line\n"), "{err}");
    let (code, out, err) = logs(&[&name, "-c", "app", "--tail=2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("{}\nlast-line\n", &long[16384..]),
        "the tail of the split line"
    );
    let (code, out, err) = logs(&[&name, "-c", "app", "--tail=1", "--timestamps"]);
    assert_eq!(code, 0, "{err}");
    let (time, line) = out.split_once(' ').unwrap();
    assert_eq!(line, "last-line\n");
    assert_eq!(time.len(), "2026-12-03T14:31:08.013548680Z".len(), "{out}");
    assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{out}");
    let (code, out, err) = logs(&[&name, "-c", "app", "--limit-bytes=5"]);
    assert_eq!((code, out.as_str()), (0, "first"), "{err}");
    let (code, out, err) = logs(&[&name, "-c", "app", "--since=1h"]);
    assert!(code == 0 && out.contains("first-line"), "{err}");
    let (code, out, err) = logs(&[&name, "-c", "app", "--since-time=2099-01-01T00:00:00Z"]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");

    // No -c: kubectl picks the first container, as against the API server.
    let (code, out, err) = logs(&[&name]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("last-line") && err.contains("Defaulted container \"app\""),
        "{err}"
    );
    let (code, out, err) = logs(&[&name, "--all-containers"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("last-line") && out.contains("side-says-hi"),
        "{out}"
    );
    let (code, out, err) = logs(&["-l", &format!("logs-test={name}")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("last-line"), "{out}");

    // The API server's answers to other clients.
    let path = format!("/api/v1/namespaces/{ns}/pods/{name}/log");
    let (code, body) = agent.get(&path).await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        format!("a container name must be specified for pod {name}, choose one of: [app side]")
    );
    let (code, body) = agent
        .get(&format!("{path}?container=app&tailLines=-1"))
        .await;
    assert_status(&body, 422, "Invalid");
    assert_eq!(code, 422);
    let (code, body) = agent.get(&format!("{path}?container=nope")).await;
    assert_eq!(
        (code, body["message"].as_str().unwrap()),
        (
            400,
            format!("container nope is not valid for pod {name}").as_str()
        )
    );
    let (code, body) = agent
        .get(&format!("/api/v1/namespaces/{ns}/pods/nobody/log"))
        .await;
    assert_eq!(
        (code, body["message"].as_str().unwrap()),
        (404, "pods \"nobody\" not found")
    );

    // -p before any restart: the kubelet's 400.
    let (code, _, err) = logs(&[&name, "-c", "app", "-p"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "Error from server (BadRequest): previous terminated container \"app\" in pod \"{name}\" not found"
        )),
        "{err}"
    );

    // -f: a line written after the start (on stderr) shows within a second;
    // the stream ends when the container stops.
    let mut follow = agent
        .kubectl_command(&["logs", "-n", &ns, &name, "-c", "app", "-f", "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let mut stdout = follow.stdout.take().unwrap();
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let text = |seen: &Arc<Mutex<String>>| seen.lock().unwrap().clone();
    eventually("the followed tail", Duration::from_secs(10), || async {
        text(&seen).contains("last-line").then_some(())
    })
    .await;
    let (code, _, err) = agent.kubectl(&[
        "exec", "-n", &ns, &name, "-c", "app", "--", "touch", "/tmp/go",
    ]);
    assert_eq!(code, 0, "{err}");
    let written = Instant::now();
    eventually("the later line", Duration::from_secs(5), || async {
        text(&seen).contains("later-line").then_some(())
    })
    .await;
    assert!(
        written.elapsed() < Duration::from_secs(1),
        "the later line took {:?}",
        written.elapsed()
    );
    pod.stop(&mut client, "app", 0).await;
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = follow.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "kubectl logs -f did not end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    reader.join().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(text(&seen), "last-line\nlater-line\n");

    // A new attempt in the same sandbox: -p reads the one before.
    pod.restart(&mut client, "app", 1).await;
    eventually(
        "the new attempt's lines",
        Duration::from_secs(20),
        || async {
            let (code, out, _) = logs(&[&name, "-c", "app"]);
            (code == 0 && out.contains("last-line")).then_some(())
        },
    )
    .await;
    let (code, out, err) = logs(&[&name, "-c", "app", "-p"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("last-line\nlater-line\n"), "{out}");
    let (code, out, err) = logs(&[&name, "-c", "app"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("later-line"),
        "the new attempt's own log: {out}"
    );

    // The Python client's read_namespaced_pod_log.
    let python = support::repo().join("target/pyclient/bin/python");
    assert!(
        python.exists(),
        "run hack/test.sh: it makes the venv with the kubernetes client"
    );
    let script = "import sys, kubernetes.client as k\n\
        c = k.Configuration(); c.host = sys.argv[1]\n\
        api = k.CoreV1Api(k.ApiClient(c))\n\
        sys.stdout.write(api.read_namespaced_pod_log(sys.argv[3], sys.argv[2], container='app', previous=True, tail_lines=2))\n";
    let output = Command::new(python)
        .args(["-c", script, &agent.url, &ns, &name])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "last-line\nlater-line\n"
    );

    pod.remove(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_logs_needs_get_pods_log_and_is_audited() {
    let ns = test_namespace("logs-auth");
    let name = unique("guarded");
    let mut client = support::cri().await;
    let spec = PodSpec::new(
        &ns,
        &name,
        vec![ContainerSpec::new(
            "app",
            support::pods::BUSYBOX_IMAGE,
            &["sh", "-c", "echo guarded-line; exec sleep 100000"],
        )],
    );
    let pod = run_pod(&mut client, &spec, "test").await;
    let users = vec![
        FakeUser {
            token: "reader-token",
            name: "reader",
            groups: vec!["dev"],
        },
        FakeUser {
            token: "viewer-token",
            name: "viewer",
            groups: vec!["viewers"],
        },
    ];
    let rules = vec![
        rule("reader", "get", "pods", Some(&ns)),
        rule("reader", "get", "pods/log", Some(&ns)),
        rule("viewer", "get", "pods", Some(&ns)),
    ];
    let api = FakeApiServer::start(users, rules).await;
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
    ]);
    let kubectl = |token: &str, args: &[&str]| {
        let mut all = vec!["--token", token, "--insecure-skip-tls-verify", "-n", &ns];
        all.extend_from_slice(args);
        agent.kubectl(&all)
    };
    let out = eventually("the guarded line", Duration::from_secs(20), || async {
        let (code, out, _) = kubectl("reader-token", &["logs", &name]);
        (code == 0 && out.contains("guarded-line")).then_some(out)
    })
    .await;
    assert_eq!(out, "guarded-line\n");
    let (code, _, err) = kubectl("viewer-token", &["logs", &name]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "Error from server (Forbidden): pods \"{name}\" is forbidden: User \"viewer\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"{ns}\""
        )),
        "{err}"
    );

    // A follower whose client goes away ends: its audit trail says so.
    let mut follow = agent
        .kubectl_command(&[
            "--token",
            "reader-token",
            "--insecure-skip-tls-verify",
            "-n",
            &ns,
            "logs",
            "-f",
            &name,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = [0u8; 13];
    follow
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"guarded-line\n");
    follow.kill().unwrap();
    follow.wait().unwrap();
    let followed_to_the_end = |event: &Value| {
        event["stage"] == "ResponseComplete"
            && event["objectRef"]["subresource"] == "log"
            && event["annotations"]["nsdebug.dev/follow"] == "true"
    };
    let ended = eventually(
        "the follower's ResponseComplete",
        Duration::from_secs(10),
        || async {
            std::fs::read_to_string(&audit_log)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str::<Value>(line).unwrap())
                .find(|event| followed_to_the_end(event))
        },
    )
    .await;
    assert_eq!(
        ended["annotations"]["nsdebug.dev/exit-code"],
        "client disconnected"
    );
    assert_eq!(ended["annotations"]["nsdebug.dev/output-bytes"], "13");

    // The audit log: the read, who, which container, bytes, outcome; the refusal.
    let events: Vec<Value> = std::fs::read_to_string(&audit_log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|event: &Value| event["objectRef"]["subresource"] == "log")
        .collect();
    let complete = events
        .iter()
        .find(|e| {
            e["stage"] == "ResponseComplete"
                && e["user"]["username"] == "reader"
                && e["annotations"]["nsdebug.dev/output-bytes"] == "13"
        })
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(complete["verb"], "get");
    assert_eq!(complete["objectRef"]["name"], name.as_str());
    assert_eq!(complete["annotations"]["nsdebug.dev/container"], "app");
    assert_eq!(complete["annotations"]["nsdebug.dev/exit-code"], "complete");
    assert!(
        events
            .iter()
            .any(|e| e["user"]["username"] == "viewer" && e["responseStatus"]["code"] == 403),
        "{events:#?}"
    );
    pod.remove(&mut client).await;
}
