//! The `container` profile applies what the container's runtime spec applies
//! to `kubectl exec`: its seccomp filter (Localhost and RuntimeDefault
//! profiles through the CRI), its no_new_privs and its resource limits; the
//! `privileged` profile applies none of them. Real pods, a real containerd.

use crate::support;

use std::process::Command;

use futures::StreamExt;
use serde_json::{Value, json};
use support::pods::{ContainerSpec, SeccompProfile};
use support::{Agent, NODE_NAME};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};

/// A Localhost profile: everything allowed but `mkdir`/`mkdirat` (EPERM) and
/// `chmod`/`fchmodat` to mode 0777 (an argument condition).
const DENY_MKDIR: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
  "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
    {"names": ["chmod"], "action": "SCMP_ACT_ERRNO",
     "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]},
    {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO",
     "args": [{"index": 2, "value": 511, "op": "SCMP_CMP_EQ"}]}
  ]
}"#;

async fn run(agent: &Agent, ns: &str, pod: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/targets/{ns}/{pod}/run", agent.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    let result: Value = response.json().await.unwrap();
    assert_eq!(code, 200, "{body}: {result}");
    result
}

/// `sh -c script` in `profile`: (exit code, stdout, stderr).
async fn sh(
    agent: &Agent,
    ns: &str,
    pod: &str,
    profile: &str,
    script: &str,
) -> (i64, String, String) {
    let result = run(
        agent,
        ns,
        pod,
        json!({"command": ["sh", "-c", script], "profile": profile}),
    )
    .await;
    (
        result["exitCode"].as_i64().unwrap_or(-1),
        result["stdout"].as_str().unwrap_or_default().to_string(),
        result["stderr"].as_str().unwrap_or_default().to_string(),
    )
}

/// The `Seccomp:` and `NoNewPrivs:` lines of the command's own status.
const SECURITY_LINES: &str = "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status";

#[tokio::test]
async fn localhost_seccomp_profile_binds_the_container_profile_only() {
    let profiles = tempfile::tempdir().unwrap();
    let file = profiles.path().join("deny-mkdir.json");
    std::fs::write(&file, DENY_MKDIR).unwrap();
    // No no_new_privs: the filter goes in before the credentials change.
    let (ns, mut client, pod) = support::one_pod(
        "profile-localhost",
        "filtered",
        vec![ContainerSpec::busybox("app").seccomp(SeccompProfile::Localhost(file))],
    )
    .await;
    let agent = Agent::start();

    let (code, _, stderr) = sh(&agent, &ns, "filtered", "container", "mkdir /tmp/x").await;
    assert_eq!(code, 1);
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    let (code, out, _) = sh(&agent, &ns, "filtered", "container", SECURITY_LINES).await;
    assert_eq!((code, out.as_str()), (0, "NoNewPrivs:\t0\nSeccomp:\t2\n"));
    // The argument condition: mode 0755 passes, 0777 does not.
    let (code, _, stderr) = sh(
        &agent,
        &ns,
        "filtered",
        "container",
        "touch /tmp/f && chmod 755 /tmp/f && chmod 777 /tmp/f",
    )
    .await;
    assert_eq!(code, 1);
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    let (code, out, _) = sh(&agent, &ns, "filtered", "container", "stat -c %a /tmp/f").await;
    assert_eq!((code, out.as_str()), (0, "755\n"));

    // The container's user and capabilities still apply under the filter.
    let target = agent.get_ok(&format!("/v1/targets/{ns}/filtered")).await;
    let pid = target["pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let cap_eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    let (_, out, _) = sh(
        &agent,
        &ns,
        "filtered",
        "container",
        "id -u; grep CapEff /proc/self/status",
    )
    .await;
    assert_eq!(out, format!("0\n{cap_eff}\n"));

    // The same commands in the privileged profile: no filter at all, so the
    // one above came from the container's spec.
    let (code, out, stderr) = sh(
        &agent,
        &ns,
        "filtered",
        "privileged",
        // Privileged runs the tool tree; the container's files are at /target.
        &format!("mkdir /target/tmp/x && chmod 777 /target/tmp/f && {SECURITY_LINES}"),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out, "NoNewPrivs:\t0\nSeccomp:\t0\n");

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn runtime_default_profile_and_no_new_privs() {
    let (ns, mut client, pod) = support::one_pod(
        "profile-default",
        "defaulted",
        vec![
            ContainerSpec::busybox("app")
                .seccomp(SeccompProfile::RuntimeDefault)
                .no_new_privs(),
        ],
    )
    .await;
    let agent = Agent::start();

    // containerd's default profile allows unshare(2) only with CAP_SYS_ADMIN,
    // which the container lacks; an unprivileged user namespace would
    // otherwise be allowed by the kernel.
    let (code, _, stderr) = sh(&agent, &ns, "defaulted", "container", "unshare -U true").await;
    assert_ne!(code, 0);
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    // Forks (clone with no namespace flags, a masked argument condition) work.
    let (code, out, _) = sh(
        &agent,
        &ns,
        "defaulted",
        "container",
        &format!("(echo child) & wait; {SECURITY_LINES}"),
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(out, "child\nNoNewPrivs:\t1\nSeccomp:\t2\n");

    let (code, out, stderr) = sh(
        &agent,
        &ns,
        "defaulted",
        "privileged",
        &format!("unshare -U true && {SECURITY_LINES}"),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out, "NoNewPrivs:\t0\nSeccomp:\t0\n");

    pod.remove(&mut client).await;
}

/// `nsdebug serve` on the test bed with a soft RLIMIT_NOFILE of 777 and a
/// hard one of `hard`.
fn agent_with_few_files(hard: u64) -> Agent {
    let socket = support::testbed_socket();
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile=777:{hard}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_nsdebug"))
        .args(["serve", "--listen", "127.0.0.1:0", "--node-name", NODE_NAME])
        .args([
            "--insecure-http",
            "--auth",
            "none",
            "--resync-interval",
            "1h",
        ])
        .arg("--cri-socket")
        .arg(socket);
    Agent::spawn_command(command)
}

/// (soft, hard) of each limit in a `/proc/PID/limits` text, by name;
/// `None` for unlimited.
fn limits(text: &str) -> Vec<(String, Option<u64>, Option<u64>)> {
    text.lines()
        .skip(1)
        .map(|line| {
            let name = line[..26].trim().to_string();
            let mut values = line[26..].split_whitespace().map(|v| v.parse::<u64>().ok());
            (name, values.next().flatten(), values.next().flatten())
        })
        .collect()
}

#[tokio::test]
async fn resource_limits_are_the_containers() {
    let (ns, mut client, pod) = support::one_pod(
        "profile-rlimits",
        "limited",
        vec![ContainerSpec::busybox("app")],
    )
    .await;
    let cri_pid = support::pods::cri_pid(&mut client, pod.id("app")).await;
    let theirs = std::fs::read_to_string(format!("/proc/{cri_pid}/limits")).unwrap();
    let their_limits = limits(&theirs);
    let (_, soft, hard) = their_limits
        .iter()
        .find(|(name, ..)| name == "Max open files")
        .cloned()
        .unwrap();
    let hard = hard.expect("a finite RLIMIT_NOFILE");
    assert_ne!(
        soft,
        Some(777),
        "the test needs the agent's soft limit to differ"
    );
    // The same hard limit: raising one needs CAP_SYS_RESOURCE, which root on
    // this test machine does not have (the helper then clamps, see identity.rs).
    let agent = agent_with_few_files(hard);

    let (code, ours, _) = sh(&agent, &ns, "limited", "container", "cat /proc/self/limits").await;
    assert_eq!(code, 0);
    let our_limits = limits(&ours);
    assert_eq!(our_limits.len(), 16, "{ours}");
    let nofile = our_limits
        .iter()
        .find(|(name, ..)| name == "Max open files");
    assert_eq!(
        nofile,
        Some(&("Max open files".to_string(), soft, Some(hard)))
    );
    // Every limit is the container's, or lower where the agent's own hard
    // limit is lower: never above.
    let above = |ours: Option<u64>, theirs: Option<u64>| match (ours, theirs) {
        (None, None) | (Some(_), None) => false,
        (None, Some(_)) => true,
        (Some(o), Some(t)) => o > t,
    };
    for ((name, soft, hard), (_, their_soft, their_hard)) in our_limits.iter().zip(&their_limits) {
        assert!(
            !above(*soft, *their_soft) && !above(*hard, *their_hard),
            "{name}: ours {soft:?}/{hard:?}, theirs {their_soft:?}/{their_hard:?}"
        );
    }
    let (_, privileged, _) = sh(&agent, &ns, "limited", "privileged", "ulimit -n").await;
    assert_eq!(
        privileged, "777\n",
        "the privileged profile keeps the agent's"
    );

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn terminal_sessions_run_under_the_filter_too() {
    let profiles = tempfile::tempdir().unwrap();
    let file = profiles.path().join("deny-mkdir.json");
    std::fs::write(&file, DENY_MKDIR).unwrap();
    let (ns, mut client, pod) = support::one_pod(
        "profile-tty",
        "filtered",
        vec![
            ContainerSpec::busybox("app")
                .seccomp(SeccompProfile::Localhost(file))
                .no_new_privs(),
        ],
    )
    .await;
    let agent = Agent::start();

    // kubectl exec -t, as the WebSocket remote-command protocol carries it.
    let script =
        "tty >/dev/null && echo on-a-terminal; grep Seccomp: /proc/self/status; mkdir /tmp/t";
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("command", "sh"), ("command", "-c"), ("command", script)])
        .extend_pairs([("tty", "true"), ("stdout", "true")])
        .finish();
    let url = format!(
        "{}/api/v1/namespaces/{ns}/pods/filtered/exec?{query}",
        agent.url.replace("http://", "ws://")
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v5.channel.k8s.io"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut stdout = Vec::new();
    let mut status = Value::Null;
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Binary(data) if data[0] == 1 => stdout.extend_from_slice(&data[1..]),
            Message::Binary(data) if data[0] == 3 => {
                status = serde_json::from_slice(&data[1..]).unwrap();
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let screen = String::from_utf8_lossy(&stdout);
    assert!(screen.contains("on-a-terminal\r\n"), "{screen}");
    assert!(screen.contains("Seccomp:\t2\r\n"), "{screen}");
    assert!(screen.contains("Operation not permitted"), "{screen}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "1", "{status}");

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn a_filter_that_forbids_a_later_step_is_named() {
    // Forbids prctl(PR_SET_PDEATHSIG): runc's exec never calls it after
    // installing the filter, nsdebug's child does (credential changes clear
    // it). Without no_new_privs the filter goes in first, so it stops that step.
    let profiles = tempfile::tempdir().unwrap();
    let file = profiles.path().join("deny-pdeathsig.json");
    std::fs::write(
        &file,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["prctl"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
    )
    .unwrap();
    let (ns, mut client, pod) = support::one_pod(
        "profile-step",
        "strict",
        vec![ContainerSpec::busybox("app").seccomp(SeccompProfile::Localhost(file))],
    )
    .await;
    let agent = Agent::start();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/targets/{ns}/strict/run", agent.url))
        .json(&json!({"command": ["true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let body: Value = response.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "failed to set the parent-death signal after installing the container's seccomp filter: Operation not permitted"
        ),
        "{body}"
    );
    assert!(message.contains("profile=privileged"), "{message}");
    let (code, _, stderr) = sh(&agent, &ns, "strict", "privileged", "true").await;
    assert_eq!(code, 0, "{stderr}");

    pod.remove(&mut client).await;
}
