//! Toolbox mode against real pods: the agent's own tools (the host's, on the
//! test bed) among a distroless container's processes and network, its files
//! at /target, and nothing written into it or reachable beyond it.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use serde_json::{Value, json};
use support::pods::ContainerSpec;
use support::{Agent, eth0_ipv4, ns_inode};

async fn toolbox(agent: &Agent, ns: &str, pod: &str, script: &str, extra: Value) -> Value {
    let mut body = json!({"command": ["sh", "-c", script], "toolbox": true});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let response = reqwest::Client::new()
        .post(format!("{}/v1/targets/{ns}/{pod}/run", agent.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    let result: Value = response.json().await.unwrap();
    assert_eq!(code, 200, "{result}");
    result
}

/// Every file under `root` (not crossing into other filesystems' mounts
/// such as /proc): path, size, modification time.
fn snapshot(root: &Path) -> BTreeMap<String, (u64, SystemTime)> {
    let mut seen = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            let name = path.strip_prefix(root).unwrap().display().to_string();
            if name == "proc" || name == "sys" || name == "dev" {
                continue;
            }
            if meta.is_dir() {
                stack.push(path.clone());
            }
            seen.insert(name, (meta.len(), meta.modified().unwrap()));
        }
    }
    seen
}

#[tokio::test]
async fn toolbox_in_a_distroless_pod() {
    let (ns, mut client, pod) =
        support::one_pod("toolbox", "bare", vec![ContainerSpec::distroless("app")]).await;
    let pid = support::pods::cri_pid(&mut client, pod.id("app")).await;
    let root = Path::new("/proc").join(pid.to_string()).join("root");
    let before = snapshot(&root);
    assert!(before.contains_key("hello"), "{before:?}");
    // A file of the host's that nothing in the toolbox may reach.
    let marker = std::env::temp_dir().join(format!("nsdebug-host-marker-{}", std::process::id()));
    std::fs::write(&marker, "host").unwrap();
    let agent = Agent::start();

    // Its processes, and no others: PID 1 is the container's own init.
    let result = toolbox(&agent, &ns, "bare", "ps -e -o pid=,comm=", json!({})).await;
    let processes: Vec<(u32, String)> = result["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(|l| {
            let (pid, comm) = l.trim().split_once(' ').unwrap();
            (pid.parse().unwrap(), comm.trim().to_string())
        })
        .collect();
    assert_eq!(processes[0], (1, "hello".to_string()), "{processes:?}");
    let others: Vec<_> = processes
        .iter()
        .filter(|(_, comm)| comm != "hello" && comm != "sh" && comm != "ps")
        .collect();
    assert!(others.is_empty(), "only the pod's processes: {processes:?}");

    // Its network: the listening port of the distroless server, its address,
    // its host name and resolver.
    let result = toolbox(
        &agent,
        &ns,
        "bare",
        "ss -tln; ip -4 -o addr show eth0; hostname; cat /etc/resolv.conf",
        json!({}),
    )
    .await;
    let out = result["stdout"].as_str().unwrap();
    assert!(out.contains("0.0.0.0:8080"), "{out}");
    assert!(out.contains(&eth0_ipv4(pid)), "{out}");
    assert!(out.contains("\nbare\n"), "{out}");
    let pod_resolv = std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap_or_default();
    assert!(out.ends_with(&pod_resolv), "the pod's resolv.conf: {out}");

    // Its files at /target; the toolbox's own are read-only even for root.
    let result = toolbox(
        &agent,
        &ns,
        "bare",
        "ls /target; touch /usr/bin/nsdebug-x; echo scratch > /tmp/x && cat /tmp/x",
        json!({"profile": "privileged"}),
    )
    .await;
    let out = result["stdout"].as_str().unwrap();
    assert!(out.lines().any(|l| l == "hello"), "{out}");
    assert!(out.contains("scratch"), "{out}");
    assert!(
        result["stderr"]
            .as_str()
            .unwrap()
            .contains("/usr/bin/nsdebug-x: Read-only file system"),
        "{result}"
    );

    // Nothing of the host beyond the tools: not its /var, /run or /home,
    // not a file it just wrote, not through /target either.
    let result = toolbox(
        &agent,
        &ns,
        "bare",
        &format!(
            "ls -d /var /run /home 2>&1; find / -xdev -name {} 2>/dev/null; ls /target{} 2>&1; echo done",
            marker.file_name().unwrap().to_str().unwrap(),
            marker.display()
        ),
        json!({"profile": "privileged"}),
    )
    .await;
    let out = result["stdout"].as_str().unwrap();
    for hidden in ["/var", "/run", "/home"] {
        assert!(
            !out.lines().any(|l| l == hidden),
            "{hidden} is shown: {out}"
        );
    }
    assert!(out.contains("/var: No such file or directory"), "{out}");
    let name = marker.file_name().unwrap().to_str().unwrap();
    assert!(
        !out.lines()
            .any(|l| l.contains(name) && !l.starts_with("ls: ")),
        "the host's file was reached: {out}"
    );
    assert!(out.ends_with("done\n"), "{out}");

    // Nothing was written into the container.
    assert_eq!(
        snapshot(&root),
        before,
        "the container's files are untouched"
    );
    // And the agent's own namespaces are untouched too.
    assert_eq!(
        ns_inode(u64::from(agent.pid()), "mnt"),
        ns_inode(std::process::id().into(), "mnt")
    );
    std::fs::remove_file(&marker).unwrap();
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn toolbox_applies_the_profile_and_refuses_namespace_choices() {
    let (ns, mut client, pod) = support::one_pod(
        "toolbox-profile",
        "user",
        vec![ContainerSpec::busybox("main").run_as_user(1000)],
    )
    .await;
    let agent = Agent::start();
    let id = |profile: &str| {
        let agent = &agent;
        let ns = ns.clone();
        let profile = profile.to_string();
        async move {
            toolbox(agent, &ns, "user", "id -u", json!({"profile": profile})).await["stdout"]
                .as_str()
                .unwrap()
                .trim()
                .to_string()
        }
    };
    assert_eq!(id("container").await, "1000", "the container's user");
    assert_eq!(id("privileged").await, "0");

    let response = reqwest::Client::new()
        .post(format!("{}/v1/targets/{ns}/user/run", agent.url))
        .json(&json!({"command": ["true"], "toolbox": true, "namespaces": ["net"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("toolbox mode joins the ipc, uts, net, pid, cgroup namespaces"),
        "{body}"
    );

    // On a terminal over the exec protocol, as the web UI uses it.
    let url = format!(
        "{}/api/v1/namespaces/{ns}/pods/user/exec?command=sh&command=-c&command=tty%3Bhostname&stdout=true&tty=true&toolbox=true",
        agent.url.replace("http://", "ws://")
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut out = String::new();
    use futures::StreamExt;
    while let Some(Ok(message)) = socket.next().await {
        match message {
            tokio_tungstenite::tungstenite::Message::Binary(data) if data.first() == Some(&1) => {
                out.push_str(&String::from_utf8_lossy(&data[1..]))
            }
            tokio_tungstenite::tungstenite::Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(
        out.contains("/dev/pts/0"),
        "a terminal of the toolbox's own: {out}"
    );
    assert!(out.contains("user"), "{out}");
    pod.remove(&mut client).await;
}
