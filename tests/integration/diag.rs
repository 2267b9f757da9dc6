//! Built-in diagnostics against real pods, compared with what the host's
//! own tools (`nsenter` with `ss` and `ip`, `/proc`, the cgroup files) say.

use crate::support;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{Value, json};
use support::fake_apiserver::{FakeApiServer, FakeUser, Rule};
use support::pods::ContainerSpec;
use support::{Agent, eth0_ipv4};

async fn view(agent: &Agent, ns: &str, pod: &str, view: &str, query: &str) -> (u16, Value) {
    let response = reqwest::get(format!(
        "{}/v1/targets/{ns}/{pod}/diag/{view}{query}",
        agent.url
    ))
    .await
    .unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap())
}

async fn items(agent: &Agent, ns: &str, pod: &str, name: &str, query: &str) -> Vec<Value> {
    let (code, body) = view(agent, ns, pod, name, query).await;
    assert_eq!(code, 200, "{name}: {body}");
    assert_eq!(body["view"], name);
    body["items"].as_array().unwrap().clone()
}

/// `command` run by the host's own tools inside the network of `pid`.
fn nsenter_net(pid: u64, command: &[&str]) -> String {
    let output = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "--"])
        .args(command)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Host PIDs of every process in the PID namespace of `pid`.
fn pid_namespace_members(pid: u64) -> BTreeSet<u64> {
    let wanted = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/pid"))
                .ok()
                .as_ref()
                == Some(&wanted)
        })
        .collect()
}

#[tokio::test]
async fn diagnostics_match_the_hosts_own_views() {
    let (ns, mut client, pod) = support::one_pod(
        "diag",
        "mixed",
        vec![
            ContainerSpec::distroless("web"),
            ContainerSpec::busybox("shell")
                .memory_limit(64 * 1024 * 1024)
                .env("DB_PASSWORD", "hunter2")
                .env("APP_MODE", "debug"),
        ],
    )
    .await;
    let web = support::pods::cri_pid(&mut client, pod.id("web")).await;
    let shell = support::pods::cri_pid(&mut client, pod.id("shell")).await;
    let agent = Agent::start();

    // Processes: exactly the container's PID namespace, init first.
    let processes = items(&agent, &ns, "mixed", "processes", "?container=shell").await;
    let host_pids: BTreeSet<u64> = processes
        .iter()
        .map(|p| p["hostPid"].as_u64().unwrap())
        .collect();
    assert_eq!(host_pids, pid_namespace_members(shell));
    let init = &processes[0];
    assert_eq!(
        (init["pid"].as_u64(), init["hostPid"].as_u64()),
        (Some(1), Some(shell))
    );
    assert_eq!(init["cmdline"][0], "sh");
    assert_eq!(init["uid"], 0);
    assert_eq!(
        init["parentPid"],
        Value::Null,
        "its parent is the runtime's"
    );
    let sleep = processes
        .iter()
        .find(|p| p["command"] == "sleep")
        .expect("the container's sleep");
    assert_eq!(sleep["parentPid"], 1);
    assert!(init["rssBytes"].as_u64().unwrap() > 0);

    // Sockets: the distroless server's listener, held by its init, as ss sees it.
    let sockets = items(&agent, &ns, "mixed", "sockets", "?container=web").await;
    let listening: Vec<&Value> = sockets
        .iter()
        .filter(|s| s["protocol"] == "tcp" && s["state"] == "LISTEN")
        .collect();
    assert_eq!(listening.len(), 1, "{sockets:?}");
    assert_eq!(listening[0]["local"], "0.0.0.0:8080");
    assert_eq!(listening[0]["processes"][0]["command"], "hello");
    let ss = nsenter_net(web, &["ss", "-tlnH"]);
    assert!(ss.contains("0.0.0.0:8080"), "{ss}");

    // Interfaces and routes, as ip sees them.
    let interfaces = items(&agent, &ns, "mixed", "interfaces", "?container=web").await;
    let eth0 = interfaces.iter().find(|i| i["name"] == "eth0").unwrap();
    let ip = eth0_ipv4(web);
    assert!(
        eth0["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap() == format!("{ip}/24")),
        "{eth0}"
    );
    assert!(eth0["up"].as_bool().unwrap() && eth0["rxPackets"].as_u64().unwrap() > 0);
    let link = nsenter_net(web, &["ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains(eth0["mac"].as_str().unwrap()), "{link}");
    assert!(
        interfaces
            .iter()
            .any(|i| i["name"] == "lo" && i["loopback"] == true)
    );
    let routes = items(&agent, &ns, "mixed", "routes", "?container=web").await;
    let default = routes
        .iter()
        .find(|r| r["destination"] == "0.0.0.0/0")
        .unwrap();
    let ip_route = nsenter_net(web, &["ip", "-4", "route", "show", "default"]);
    assert!(
        ip_route.contains(&format!(
            "via {} dev eth0",
            default["gateway"].as_str().unwrap()
        )),
        "{ip_route} vs {default}"
    );

    // Cgroup: the memory limit the pod asked for, the PIDs the files count.
    let (code, body) = view(&agent, &ns, "mixed", "cgroup", "?container=shell").await;
    assert_eq!(code, 200, "{body}");
    let usage = &body["usage"];
    assert_eq!(usage["memory"]["limitBytes"], 64 * 1024 * 1024);
    assert!(usage["memory"]["usageBytes"].as_u64().unwrap() > 0);
    let pids_dir = usage["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| std::path::PathBuf::from(p.as_str().unwrap()))
        .find(|p| p.join("pids.current").exists())
        .expect("a cgroup with pids.current");
    let current: u64 = std::fs::read_to_string(pids_dir.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(usage["pids"]["current"], current);

    // Open files: the listening socket is the server's fd 3.
    let files = items(&agent, &ns, "mixed", "open-files", "?container=web").await;
    let inode = listening[0]["inode"].as_u64().unwrap();
    assert!(
        files
            .iter()
            .any(|f| f["target"] == format!("socket:[{inode}]")),
        "{files:?}"
    );

    // Environment: secrets hidden unless asked for.
    let env = items(&agent, &ns, "mixed", "env", "?container=shell").await;
    let var = |env: &[Value], name: &str| env.iter().find(|v| v["name"] == name).cloned().unwrap();
    assert_eq!(
        var(&env, "DB_PASSWORD"),
        json!({"name": "DB_PASSWORD", "value": null, "redacted": true})
    );
    assert_eq!(var(&env, "APP_MODE")["value"], "debug");
    let env = items(&agent, &ns, "mixed", "env", "?container=shell&reveal=true").await;
    assert_eq!(var(&env, "DB_PASSWORD")["value"], "hunter2");
    // Of another process, by its PID inside.
    let sleep_pid = sleep["pid"].as_u64().unwrap();
    let env = items(
        &agent,
        &ns,
        "mixed",
        "env",
        &format!("?container=shell&pid={sleep_pid}"),
    )
    .await;
    assert_eq!(var(&env, "APP_MODE")["value"], "debug");

    // Mounts: the container's root and /proc.
    let mounts = items(&agent, &ns, "mixed", "mounts", "?container=shell").await;
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPoint"] == "/" && m["fsType"] == "overlay")
    );
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPoint"] == "/proc" && m["fsType"] == "proc")
    );

    // Clear errors.
    let (code, body) = view(&agent, &ns, "mixed", "env", "?container=shell&pid=99999").await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(
        body["message"],
        "no process with PID 99999 in the container (its PID namespace and its cgroup)"
    );
    let (code, body) = view(&agent, &ns, "mixed", "gossip", "?container=shell").await;
    assert_eq!(code, 404);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("no diagnostic view \"gossip\"; the views are processes, sockets")
    );
    let (code, _) = view(&agent, &ns, "nobody", "sockets", "").await;
    assert_eq!(code, 404);
    pod.remove(&mut client).await;
}

// Multi-threaded: the fake API server answers on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_need_the_exec_right() {
    let (ns, mut client, pod) =
        support::one_pod("diag-auth", "watched", vec![ContainerSpec::busybox("main")]).await;
    let users = vec![FakeUser {
        token: "viewer-token",
        name: "viewer",
        groups: vec![],
    }];
    let rules = vec![Rule {
        user: "viewer",
        verb: "get",
        resource: "pods",
        namespace: Some(ns.clone()),
    }];
    let api = FakeApiServer::start(users, rules).await;
    let socket = support::testbed_socket();
    let agent = Agent::start_secure(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--kubeconfig",
        api.kubeconfig.to_str().unwrap(),
    ]);
    let client_tls = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let code = |view: &'static str| {
        let request = client_tls
            .get(format!("{}/v1/targets/{ns}/watched/diag/{view}", agent.url))
            .bearer_auth("viewer-token");
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for allowed in ["sockets", "interfaces", "routes", "cgroup"] {
        assert_eq!(code(allowed).await, 200, "{allowed}");
    }
    for refused in ["processes", "env", "open-files", "mounts"] {
        assert_eq!(code(refused).await, 403, "{refused}");
    }
    pod.remove(&mut client).await;
}
