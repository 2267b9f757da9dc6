//! The one-shot run API against real pods: what runs where, as whom, with
//! which descriptors, and every way a run can go wrong.

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::pods::{ContainerSpec, PodSpec, run_pod};
use support::{Agent, assert_status, eth0_ipv4, eventually, test_namespace};

async fn run(agent: &Agent, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", agent.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap())
}

async fn run_ok(agent: &Agent, path: &str, body: Value) -> Value {
    let (code, result) = run(agent, path, body.clone()).await;
    assert_eq!(code, 200, "{body}: {result}");
    result
}

#[tokio::test]
async fn commands_run_inside_the_container() {
    let ns = test_namespace("run-inside");
    let mut client = support::cri().await;
    let spec = PodSpec::new(
        &ns,
        "box",
        vec![ContainerSpec::busybox("main").working_dir("/tmp")],
    );
    let pod = run_pod(&mut client, &spec, "test").await;
    let agent = Agent::start();
    let path = format!("/v1/targets/{ns}/box/run");

    let result = run_ok(&agent, &path, json!({"command": ["hostname"]})).await;
    assert_eq!(result["stdout"], "box\n");
    assert_eq!(result["exitCode"], 0);
    assert_eq!(result["target"]["containerId"], pod.id("main"));

    // The container's PID namespace: only its processes, and ours has a small PID.
    let ps = run_ok(&agent, &path, json!({"command": ["ps", "-o", "pid,comm"]})).await;
    let lines: Vec<&str> = ps["stdout"].as_str().unwrap().lines().skip(1).collect();
    assert!(
        lines.len() <= 4,
        "more than the container's processes: {lines:?}"
    );
    let own: Vec<u32> = lines
        .iter()
        .filter(|l| l.ends_with(" ps"))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(own.len() == 1 && own[0] < 100, "{lines:?}");
    assert!(
        lines[0].trim_start().starts_with("1 "),
        "PID 1 is the container's init: {lines:?}"
    );

    // Its filesystem, its working directory (the container's, /tmp), and
    // only stdio open.
    let fs = run_ok(&agent, &path, json!({"command": ["sh", "-c", "pwd; ls /proc/self/fd; test -e /etc/debian_version && echo HOST-FILE"]})).await;
    assert_eq!(
        fs["stdout"], "/tmp\n0\n1\n2\n3\n",
        "fd 3 is ls's own directory handle: {fs}"
    );

    // Exit codes, stdout and stderr apart, stdin, env.
    let result = run_ok(
        &agent,
        &path,
        json!({"command": ["sh", "-c", "read line; echo out:$line:$GREETING; echo err >&2; exit 3"],
               "stdin": "typed\n", "env": {"GREETING": "hi"}}),
    )
    .await;
    assert_eq!(result["exitCode"], 3);
    assert_eq!(result["stdout"], "out:typed:hi\n");
    assert_eq!(result["stderr"], "err\n");

    // Binary output comes back as base64; big output is capped, not buffered.
    let binary = run_ok(&agent, &path, json!({"command": ["printf", "\\377\\376"]})).await;
    assert_eq!(
        (binary["stdout"].as_str(), binary["stdoutEncoding"].as_str()),
        (Some("//4="), Some("base64"))
    );
    let big = run_ok(
        &agent,
        &path,
        json!({"command": ["head", "-c", "5000000", "/dev/zero"], "outputLimitBytes": 1000}),
    )
    .await;
    assert_eq!(big["exitCode"], 0);
    assert_eq!(big["stdoutTruncated"], true);
    // NUL bytes would be six times their size as JSON escapes: base64.
    assert_eq!(big["stdoutEncoding"], "base64");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(big["stdout"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, vec![0u8; 1000]);

    // A missing program is 127 with the reason, as a shell says.
    let missing = run_ok(&agent, &path, json!({"command": ["no-such-tool"]})).await;
    assert_eq!(missing["exitCode"], 127);
    assert_eq!(
        missing["error"],
        "exec: \"no-such-tool\": executable file not found in $PATH"
    );

    // A deadline kills the command and everything it started.
    let slow = run_ok(
        &agent,
        &path,
        json!({"command": ["sh", "-c", "sleep 4242 & sleep 4243"], "timeoutSeconds": 0.3}),
    )
    .await;
    assert_eq!(slow["timedOut"], true);
    assert_eq!(slow["exitCode"], Value::Null);
    eventually(
        "the timed-out commands to be gone",
        Duration::from_secs(10),
        || async {
            let ps = run_ok(&agent, &path, json!({"command": ["ps"]})).await;
            (!ps["stdout"].as_str().unwrap().contains("sleep 424")).then_some(())
        },
    )
    .await;

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn namespace_subsets_and_profiles() {
    let ns = test_namespace("run-subsets");
    let mut client = support::cri().await;
    let spec = PodSpec::new(
        &ns,
        "users",
        vec![ContainerSpec::busybox("app").run_as_user(1000)],
    );
    let pod = run_pod(&mut client, &spec, "test").await;
    let agent = Agent::start();
    let path = format!("/v1/targets/{ns}/users/run");
    let target = agent.get_ok(&format!("/v1/targets/{ns}/users")).await;
    let pid = target["pid"].as_u64().unwrap();

    // Network only is the toolbox: the pod's eth0, the tool tree's files,
    // the container's at /target; a bare namespace subset is refused.
    let net = run_ok(
        &agent,
        &path,
        json!({"command": ["sh", "-c", "ip -4 -o addr show dev eth0; ls -d /target"], "toolbox": true}),
    )
    .await;
    assert_eq!(net["exitCode"], 0, "{net}");
    let out = net["stdout"].as_str().unwrap();
    assert!(out.contains(&format!("inet {}/", eth0_ipv4(pid))), "{out}");
    assert!(out.ends_with("/target\n"), "{out}");
    let (code, subset) = run(
        &agent,
        &path,
        json!({"command": ["true"], "namespaces": ["net"]}),
    )
    .await;
    assert_eq!(code, 400, "{subset}");

    // The container profile is the container's user and capabilities.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let cap_eff = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap()
        .to_string();
    let me = run_ok(
        &agent,
        &path,
        json!({"command": ["sh", "-c", "id -u; grep CapEff /proc/self/status"]}),
    )
    .await;
    assert_eq!(me["stdout"], format!("1000\n{cap_eff}\n"));
    // The privileged profile is root with every capability.
    let root = run_ok(
        &agent,
        &path,
        json!({"command": ["sh", "-c", "id -u; grep CapEff /proc/self/status"], "profile": "privileged"}),
    )
    .await;
    let out = root["stdout"].as_str().unwrap();
    assert!(out.starts_with("0\nCapEff:\t000001ff"), "{out}");

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn bad_runs_get_clear_errors() {
    let ns = test_namespace("run-errors");
    let mut client = support::cri().await;
    let spec = PodSpec::new(
        &ns,
        "mixed",
        vec![
            ContainerSpec::distroless("server"),
            ContainerSpec::busybox("stopped"),
        ],
    );
    let pod = run_pod(&mut client, &spec, "test").await;
    pod.stop(&mut client, "stopped", 10).await;
    let agent = Agent::start();
    let path = format!("/v1/targets/{ns}/mixed/run?container=server");

    // Distroless: no shell to run, said cleanly.
    let sh = run_ok(&agent, &path, json!({"command": ["sh"]})).await;
    assert_eq!(sh["exitCode"], 127);

    for (body, message) in [
        (
            json!({"command": []}),
            "command is empty: name a program to run",
        ),
        (
            json!({"command": [""]}),
            "command[0] is empty: name a program to run",
        ),
        (
            json!({"command": ["ls", "a\u{0}b"]}),
            "command contains a NUL byte",
        ),
        (
            json!({"command": ["ls"], "namespaces": ["net", "time"]}),
            "unknown namespace 'time'; choose from user, cgroup, ipc, uts, net, pid, mnt",
        ),
        (
            json!({"command": ["ls"], "timeoutSeconds": 0}),
            "timeoutSeconds must be more than 0 and at most 3600",
        ),
        (
            json!({"command": ["ls"], "profile": "root"}),
            "invalid run request: unknown variant `root`, expected `container` or `privileged` at line 1 column 34",
        ),
    ] {
        let (code, result) = run(&agent, &path, body.clone()).await;
        assert_eq!(code, 400, "{body}: {result}");
        assert_status(&result, 400, "BadRequest");
        assert_eq!(result["message"], message, "{body}");
    }
    let (code, result) = run(
        &agent,
        &format!("/v1/targets/{ns}/mixed/run?container=stopped"),
        json!({"command": ["ls"]}),
    )
    .await;
    assert_eq!(code, 409, "{result}");
    assert_status(&result, 409, "Conflict");
    let (code, result) = run(
        &agent,
        &format!("/v1/targets/{ns}/nope/run"),
        json!({"command": ["ls"]}),
    )
    .await;
    assert_eq!(code, 404, "{result}");

    pod.remove(&mut client).await;
}

/// Inodes of the TCP sockets in the network namespace of `pid`.
fn tcp_socket_inodes(pid: u32) -> std::collections::HashSet<String> {
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| line.split_whitespace().nth(9).map(String::from))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Open descriptors of process `pid` other than TCP connections (the test's
/// own HTTP clients come and go), its zombie children, and its live children
/// that are idle or working enter helpers.
fn fds_zombies_helpers(pid: u32) -> (usize, usize, usize) {
    let tcp = tcp_socket_inodes(pid);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| {
            let target = target.to_string_lossy();
            let inode = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'));
            !inode.is_some_and(|inode| tcp.contains(inode))
        })
        .count();
    let (mut zombies, mut helpers) = (0, 0);
    for child in std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
    {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap();
        let ppid: u32 = fields.next().unwrap().parse().unwrap();
        if ppid != pid {
            continue;
        }
        if state == "Z" {
            zombies += 1;
        } else if std::fs::read(format!("/proc/{child}/cmdline"))
            .is_ok_and(|c| c.windows(7).any(|w| w == b"__enter"))
        {
            helpers += 1;
        }
    }
    (fds, zombies, helpers)
}

/// The agent at rest: its two idle enter helpers started (each holds one
/// control socket in the agent), nothing else running, no zombie.
async fn settled(agent: &Agent) -> usize {
    eventually("the agent to settle", Duration::from_secs(10), || async {
        let (fds, zombies, helpers) = fds_zombies_helpers(agent.pid());
        (zombies == 0 && helpers == 2).then_some(fds)
    })
    .await
}

#[tokio::test]
async fn hundreds_of_sessions_leave_no_descriptors_or_zombies() {
    let (ns, mut client, pod) =
        support::one_pod("run-leaks", "churn", vec![ContainerSpec::busybox("main")]).await;
    let agent = Agent::start();
    let path = format!("/v1/targets/{ns}/churn/run");
    // Warm up: connection pools, the inventory, the reactor.
    for _ in 0..5 {
        run_ok(&agent, &path, json!({"command": ["true"]})).await;
    }
    let fds_before = settled(&agent).await;
    let mut runs = Vec::new();
    for i in 0..200 {
        let body = match i % 4 {
            0 => json!({"command": ["echo", "hi"]}),
            1 => json!({"command": ["sh", "-c", "sleep 30 & exit 1"]}),
            2 => json!({"command": ["no-such-tool"]}),
            _ => json!({"command": ["sleep", "10"], "timeoutSeconds": 0.05}),
        };
        runs.push(run(&agent, &path, body));
        if runs.len() == 8 {
            for (code, answer) in futures::future::join_all(runs.drain(..)).await {
                assert_eq!(code, 200, "{answer}");
            }
        }
    }
    futures::future::join_all(runs).await;
    // Settled again means no zombie and the pool back to two helpers; and not
    // one descriptor more than before the 200 runs.
    let fds_after = settled(&agent).await;
    assert!(
        fds_after <= fds_before,
        "{fds_before} descriptors before, {fds_after} after"
    );
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn streamed_runs_deliver_output_live_and_die_with_the_client() {
    let (ns, mut client, pod) =
        support::one_pod("run-stream", "live", vec![ContainerSpec::busybox("main")]).await;
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_log = audit_dir.path().join("audit.jsonl");
    let agent = Agent::start_on_testbed(&["--audit-log", audit_log.to_str().unwrap()]);
    let path = format!("/v1/targets/{ns}/live/run");
    // The audit events of the streamed run of `command`, once it completed.
    let completed = |command: &'static str| {
        let audit_log = audit_log.clone();
        move || {
            let audit_log = audit_log.clone();
            async move {
                std::fs::read_to_string(&audit_log)
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap())
                    .find(|e| {
                        e["stage"] == "ResponseComplete"
                            && e["annotations"]["nsdebug.dev/command"]
                                .as_str()
                                .is_some_and(|c| c.contains(command))
                    })
            }
        }
    };

    // A finished run: started, the chunks in order, exit.
    let text = reqwest::Client::new()
        .post(format!("{}{path}?stream=true", agent.url))
        .json(&json!({"command": ["sh", "-c", "echo one; echo two >&2; exit 2"]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["type"], "started");
    assert_eq!(events.first().unwrap()["target"]["pod"], "live");
    let last = events.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["exitCode"].as_i64()),
        (Some("exit"), Some(2))
    );
    let data = |kind: &str| -> String {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e["data"].as_str().unwrap())
            .collect()
    };
    assert_eq!(data("stdout"), "one\n");
    assert_eq!(data("stderr"), "two\n");
    let done = eventually(
        "the finished stream's audit event",
        Duration::from_secs(10),
        completed("echo one"),
    )
    .await;
    assert_eq!(done["annotations"]["nsdebug.dev/exit-code"], "2");
    assert_eq!(done["annotations"]["nsdebug.dev/output-bytes"], "8");

    // A long run: the first line arrives while the command still runs, and
    // hanging up kills it.
    let mut response = reqwest::Client::new()
        .post(format!("{}{path}?stream=true", agent.url))
        .json(
            &json!({"command": ["sh", "-c", "echo first; exec sleep 6161"], "timeoutSeconds": 600}),
        )
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("\"first\\n\"") {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("stream ended before the first line");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("\"exit\""), "{seen}");
    drop(response);
    eventually(
        "the streamed command to be killed",
        Duration::from_secs(20),
        || async {
            let ps = run_ok(&agent, &path, json!({"command": ["ps"]})).await;
            (!ps["stdout"].as_str().unwrap().contains("sleep 6161")).then_some(())
        },
    )
    .await;
    // The client that hung up is in the audit trail too.
    let abandoned = eventually(
        "the abandoned stream's audit event",
        Duration::from_secs(10),
        completed("sleep 6161"),
    )
    .await;
    assert_eq!(
        abandoned["annotations"]["nsdebug.dev/exit-code"],
        "client disconnected"
    );
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn namespace_files_path_for_kernels_without_pidfd_setns() {
    let (ns, mut client, pod) =
        support::one_pod("run-nsfd", "old", vec![ContainerSpec::busybox("main")]).await;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nsdebug"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-http",
            "--auth",
            "none",
            "--node-name",
            support::NODE_NAME,
            "--cri-socket",
        ])
        .arg(support::testbed_socket())
        .env("NSDEBUG_SETNS", "nsfd");
    let agent = Agent::spawn_command(command);
    let path = format!("/v1/targets/{ns}/old/run");
    let result = run_ok(
        &agent,
        &path,
        json!({"command": ["sh", "-c", "hostname; for n in pid mnt net; do readlink /proc/self/ns/$n; done"]}),
    )
    .await;
    let ids = &result["target"]["namespaces"];
    assert_eq!(
        result["stdout"],
        format!(
            "old\npid:[{}]\nmnt:[{}]\nnet:[{}]\n",
            ids["pid"], ids["mnt"], ids["net"]
        ),
        "{result}"
    );
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn request_ids_reach_the_audit_trail() {
    let (ns, mut client, pod) =
        support::one_pod("run-reqid", "traced", vec![ContainerSpec::busybox("main")]).await;
    let dir = tempfile::tempdir().unwrap();
    let audit_log = dir.path().join("audit.jsonl");
    let agent = Agent::start_on_testbed(&["--audit-log", audit_log.to_str().unwrap()]);
    let url = format!("{}/v1/targets/{ns}/traced/run", agent.url);
    let http = reqwest::Client::new();
    // The caller's ID is kept...
    let response = http
        .post(&url)
        .header("X-Request-Id", "runbook-42")
        .json(&json!({"command": ["echo", "traced"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "runbook-42");
    // ...and without one (or with a bad one) the agent makes one.
    let response = http
        .post(&url)
        .header("X-Request-Id", "bad id with spaces")
        .json(&json!({"command": ["echo", "made"]}))
        .send()
        .await
        .unwrap();
    let made = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(made.len(), 36, "a UUID: {made}");
    let ids: Vec<String> = std::fs::read_to_string(&audit_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["stage"] == "ResponseComplete")
        .map(|e| {
            e["annotations"]["nsdebug.dev/request-id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["runbook-42".to_string(), made]);
    // Errors carry one too.
    let response = http
        .get(format!("{}/v1/nothing", agent.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert!(response.headers().contains_key("x-request-id"));
    pod.remove(&mut client).await;
}
