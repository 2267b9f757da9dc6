//! `kubectl nsdebug` (the kubectl-nsdebug binary) against the real agent on
//! the test bed, through `--agent-url`: what a user sees and the exit codes.

use crate::support;

use std::process::Command;

use support::Agent;
use support::pods::ContainerSpec;

fn plugin(agent: &Agent, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(support::plugin_binary())
        .args(["--agent-url", &agent.url])
        .args(args)
        .env("KUBECONFIG", "/nonexistent")
        .env_remove("NSDEBUG_TOKEN")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_diag_and_capture_from_the_command_line() {
    let (ns, mut client, pod) = support::one_pod(
        "plugin",
        "app",
        vec![
            ContainerSpec::busybox("shell"),
            ContainerSpec::distroless("web"),
        ],
    )
    .await;
    let agent = Agent::start();
    let (a, ns_ref) = (&agent, ns.as_str());
    let run = |args: Vec<&str>| {
        let mut all = args;
        all.splice(1..1, ["-n", ns_ref]);
        tokio::task::block_in_place(|| plugin(a, &all))
    };

    // The command's streams apart, its exit code the plugin's.
    let (code, out, err) = run(vec![
        "exec",
        "app",
        "-c",
        "shell",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!((code, out.as_str(), err.as_str()), (3, "out\n", "err\n"));
    // A distroless container: nothing to run, until the toolbox.
    let (code, _, err) = run(vec!["exec", "app", "-c", "web", "--", "ps"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("executable file not found"), "{err}");
    let (code, out, err) = run(vec![
        "exec",
        "app",
        "-c",
        "web",
        "--toolbox",
        "--",
        "ss",
        "-tlnH",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0.0.0.0:8080"), "{out}");

    // Diagnostics as tables for a person: the container's own PID 1 and
    // its command, the socket it listens on and who holds it.
    let (code, out, err) = run(vec!["diag", "app", "-c", "web", "processes"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["PID", "HOST-PID", "PPID", "USER", "STATE", "RSS", "CMD"],
        "{out}"
    );
    let init: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!((init[0], init[2], init[6]), ("1", "-", "/hello"), "{out}");
    let (code, out, err) = run(vec!["diag", "app", "-c", "web", "sockets"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["tcp", "LISTEN", "0.0.0.0:8080", "-", "hello(1)"]),
        "{out}"
    );
    // And as the agent's JSON.
    let (code, out, _) = run(vec!["diag", "app", "-c", "web", "sockets", "-o", "json"]);
    assert_eq!(code, 0);
    let sockets: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sockets["items"][0]["local"], "0.0.0.0:8080");

    // A capture to a file, ended by its duration.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trace.pcap");
    let (code, _, err) = run(vec![
        "capture",
        "app",
        "-c",
        "web",
        "-w",
        file.to_str().unwrap(),
        "--duration",
        "1s",
    ]);
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "a pcap file");

    // Refusals and usage errors say so.
    let (code, _, err) = run(vec!["exec", "nobody", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("the agent answered 404"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| plugin(a, &["exec", "app"]));
    assert_eq!(code, 2, "{err}");
    pod.remove(&mut client).await;
}
