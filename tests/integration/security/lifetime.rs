//! Nothing a session started outlives it (issue 13, finding 8).
//!
//! The attack: a command that escapes its process group and session
//! (`setsid`), or double-forks so that it is reparented to the container's
//! init, survives a timeout, a hang-up or the agent's shutdown; after a
//! privileged or toolbox session that is a root process left in the pod.
//! Each test starts such processes with a unique marker argument
//! (`sleep 6xxxxx`), proves they ran, ends the session one way, and then
//! looks for the marker in the host's `/proc` and for a session cgroup
//! (`nsdebug-*`) left in any of the container's cgroups. What the
//! `container` profile leaves after a normal exit is what `kubectl exec`
//! leaves (docs/session-lifetime.md).

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};

use crate::support::pods::{ContainerSpec, RunningPod, cri_pid};
use crate::support::{self, Agent, eventually};

/// Long enough for anything the agent and the kernel do by themselves here.
const PATIENCE: Duration = Duration::from_secs(30);

/// Two unique durations for `sleep`: the markers of one test's processes.
fn markers() -> [String; 2] {
    let base = 600_000 + (uuid::Uuid::new_v4().as_u128() % 300_000) as u64;
    [base.to_string(), (base + 1).to_string()]
}

/// A script that leaves a `setsid` process and a double-forked one (its
/// parent exits, so it is reparented to the container's init), waits until
/// both run (so a test cannot pass because they never started), says
/// `ready`, then runs `then`.
fn escaping_script(markers: &[String; 2], then: &str) -> String {
    let [first, second] = markers;
    format!(
        r#"seen() {{ for c in /proc/[0-9]*/cmdline; do [ "$(tr '\0' ' ' < "$c" 2>/dev/null)" = "sleep $1 " ] && return 0; done; return 1; }}
setsid sleep {first} &
(setsid sleep {second} &)
n=0; until seen {first} && seen {second}; do n=$((n+1)); [ $n -gt 200 ] && exit 99; sleep 0.1; done
echo ready
{then}"#
    )
}

/// Host PIDs of the processes whose argv is `sleep MARKER`.
fn marked(markers: &[String; 2]) -> Vec<u32> {
    let wanted: Vec<Vec<u8>> = markers
        .iter()
        .map(|m| format!("sleep\0{m}\0").into_bytes())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            wanted.contains(&cmdline).then_some(pid)
        })
        .collect()
}

/// Waits until no marked process is left.
async fn assert_all_gone(markers: &[String; 2], what: &str) {
    eventually(what, PATIENCE, || async {
        marked(markers).is_empty().then_some(())
    })
    .await;
}

/// The container's cgroup directories on the host: each line of
/// `/proc/PID/cgroup` of its init, under the mount of that hierarchy.
fn container_cgroups(init: u64) -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let lines = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    let mut dirs = Vec::new();
    for line in lines.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let mount = mounts.lines().find_map(|m| {
            let fields: Vec<&str> = m.split_whitespace().collect();
            let options: Vec<&str> = fields[3].split(',').collect();
            let matches = if controllers.is_empty() {
                fields[2] == "cgroup2"
            } else {
                fields[2] == "cgroup" && controllers.split(',').all(|c| options.contains(&c))
            };
            matches.then(|| fields[1].to_string())
        });
        if let Some(mount) = mount {
            dirs.push(PathBuf::from(mount).join(path.trim_start_matches('/')));
        }
    }
    assert!(!dirs.is_empty(), "no cgroup of {init} found: {lines}");
    dirs
}

/// Session cgroups (`nsdebug-*`) left under the container's cgroups.
fn session_cgroups(init: u64) -> Vec<PathBuf> {
    container_cgroups(init)
        .into_iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("nsdebug-"))
        })
        .collect()
}

/// Waits until no session cgroup is left under the container's cgroups
/// (the helper removes it once the killed processes are gone, after the
/// agent answered).
async fn assert_no_session_cgroup(init: u64) {
    eventually("no session cgroup to be left", PATIENCE, || async {
        session_cgroups(init).is_empty().then_some(())
    })
    .await;
}

/// A busybox pod for one test (removed when the test ends, however it
/// ends), the host PID of its init, and an agent.
async fn pod(test: &str) -> (RunningPod, u64, Agent) {
    let (_, mut client, pod) =
        support::one_pod(test, "box", vec![ContainerSpec::busybox("shell")]).await;
    let init = cri_pid(&mut client, pod.id("shell")).await;
    (pod, init, Agent::start())
}

/// A one-shot run; its JSON answer.
async fn run(agent: &Agent, pod: &RunningPod, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/targets/{}/box/run",
            agent.url, pod.spec.namespace
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    let result: Value = response.json().await.unwrap();
    assert_eq!(code, 200, "{body}: {result}");
    result
}

/// A run that times out kills what it started, `setsid` and double-forked
/// processes included, and removes its session cgroup.
#[tokio::test]
async fn a_timed_out_run_leaves_no_process_behind() {
    let (pod, init, agent) = pod("lifetime-timeout").await;
    let markers = markers();
    let script = escaping_script(&markers, "exec sleep 1000");
    let result = run(
        &agent,
        &pod,
        json!({"command": ["sh", "-c", script], "timeoutSeconds": 5}),
    )
    .await;
    assert_eq!(result["timedOut"], true, "{result}");
    assert_eq!(result["stdout"], "ready\n", "the markers ran: {result}");
    assert_all_gone(&markers, "the timed-out run's processes to be gone").await;
    assert_no_session_cgroup(init).await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An exec WebSocket (v5) running `command` on pipes, returned once its
/// stdout said `ready`.
async fn exec_until_ready(agent: &Agent, pod: &RunningPod, command: &[&str]) -> Socket {
    let mut query = format!(
        "/api/v1/namespaces/{}/pods/box/exec?stdin=true&stdout=true&stderr=true",
        pod.spec.namespace
    );
    for word in command {
        query.push_str("&command=");
        query.extend(form_urlencoded::byte_serialize(word.as_bytes()));
    }
    let url = format!("{}{query}", agent.url.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v5.channel.k8s.io"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut stdout = Vec::new();
    while !String::from_utf8_lossy(&stdout).contains("ready") {
        match tokio::time::timeout(PATIENCE, socket.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) if data.first() == Some(&1) => {
                stdout.extend_from_slice(&data[1..]);
            }
            Ok(Some(Ok(_))) => {}
            other => panic!(
                "no `ready` from the command: {other:?}, stdout {:?}",
                String::from_utf8_lossy(&stdout)
            ),
        }
    }
    socket
}

/// A client that hangs up an exec session leaves nothing running.
#[tokio::test]
async fn a_hung_up_exec_leaves_no_process_behind() {
    let (pod, init, agent) = pod("lifetime-hangup").await;
    let markers = markers();
    let script = escaping_script(&markers, "exec sleep 1000");
    let socket = exec_until_ready(&agent, &pod, &["sh", "-c", &script]).await;
    // While it runs, the session has a cgroup of its own in the container's.
    assert_eq!(
        session_cgroups(init).len(),
        1,
        "{:?}",
        session_cgroups(init)
    );
    drop(socket);
    assert_all_gone(&markers, "the hung-up session's processes to be gone").await;
    assert_no_session_cgroup(init).await;
}

/// The agent shutting down ends its sessions and everything they started.
#[tokio::test]
async fn agent_shutdown_leaves_no_process_behind() {
    let (pod, init, mut agent) = pod("lifetime-shutdown").await;
    let markers = markers();
    let script = escaping_script(&markers, "exec sleep 1000");
    let _socket = exec_until_ready(&agent, &pod, &["sh", "-c", &script]).await;
    agent.terminate();
    assert_all_gone(
        &markers,
        "the shut-down agent's session processes to be gone",
    )
    .await;
    assert_no_session_cgroup(init).await;
}

/// A privileged run that exits normally leaves nothing either: by the time
/// its answer arrives, every process it started is gone.
#[tokio::test]
async fn a_privileged_run_leaves_nothing_after_a_normal_exit() {
    let (pod, init, agent) = pod("lifetime-privileged").await;
    let markers = markers();
    let script = escaping_script(&markers, "exit 0");
    let result = run(
        &agent,
        &pod,
        json!({"command": ["sh", "-c", script], "profile": "privileged"}),
    )
    .await;
    assert_eq!(
        (&result["exitCode"], &result["stdout"]),
        (&json!(0), &json!("ready\n")),
        "{result}"
    );
    assert_eq!(
        marked(&markers),
        Vec::<u32>::new(),
        "left by a privileged run"
    );
    assert_eq!(session_cgroups(init), Vec::<PathBuf>::new());
}

/// A toolbox run that exits normally leaves nothing either.
#[tokio::test]
async fn a_toolbox_run_leaves_nothing_after_a_normal_exit() {
    let (pod, init, agent) = pod("lifetime-toolbox").await;
    let markers = markers();
    let script = escaping_script(&markers, "exit 0");
    let result = run(
        &agent,
        &pod,
        json!({"command": ["sh", "-c", script], "toolbox": true}),
    )
    .await;
    assert_eq!(
        (&result["exitCode"], &result["stdout"]),
        (&json!(0), &json!("ready\n")),
        "{result}"
    );
    assert_eq!(marked(&markers), Vec::<u32>::new(), "left by a toolbox run");
    assert_eq!(session_cgroups(init), Vec::<PathBuf>::new());
}

/// The `container` profile after a normal exit leaves what `kubectl exec`
/// leaves: background processes keep running, confined like any of the
/// container's processes (in its cgroups), and the session cgroup is gone.
#[tokio::test]
async fn a_container_run_leaves_what_kubectl_exec_leaves() {
    let (pod, init, agent) = pod("lifetime-container").await;
    let markers = markers();
    let script = escaping_script(&markers, "exit 0");
    let result = run(&agent, &pod, json!({"command": ["sh", "-c", script]})).await;
    assert_eq!(
        (&result["exitCode"], &result["stdout"]),
        (&json!(0), &json!("ready\n")),
        "{result}"
    );
    let left = marked(&markers);
    assert_eq!(left.len(), 2, "both background processes still run");
    let cgroups = |pid: u64| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for pid in left {
        assert_eq!(
            cgroups(pid.into()),
            cgroups(init),
            "{pid} is in the container's cgroups"
        );
    }
    assert_eq!(session_cgroups(init), Vec::<PathBuf>::new());
}

/// A session that fails after its cgroup was made (here: no such program)
/// removes the cgroup before it reports the failure.
#[tokio::test]
async fn a_failed_session_leaves_no_session_cgroup() {
    let (pod, init, agent) = pod("lifetime-failed").await;
    for profile in ["container", "privileged"] {
        let result = run(
            &agent,
            &pod,
            json!({"command": ["no-such-tool"], "profile": profile}),
        )
        .await;
        assert_eq!(result["exitCode"], 127, "{profile}: {result}");
        assert_eq!(session_cgroups(init), Vec::<PathBuf>::new(), "{profile}");
    }
}
