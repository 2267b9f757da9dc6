//! The agent image's filesystem, laid out by `hack/image/toolbox.sh` (what
//! the Dockerfile runs; no container engine runs here): the agent starts from
//! it alone, and its tool tree (`/toolbox` in the image) works as the
//! toolbox root inside a distroless pod.

use crate::support;

use std::process::Command;

use serde_json::{Value, json};
use support::Agent;
use support::pods::ContainerSpec;

#[tokio::test]
async fn the_image_layout_runs_the_agent_and_serves_as_the_toolbox() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("image");
    let made = Command::new("bash")
        .arg(support::repo().join("hack/image/toolbox.sh"))
        .arg(&out)
        .arg(env!("CARGO_BIN_EXE_nsdebug"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");

    // Only what an image needs: no stray directories. The agent's root holds
    // its binary, its libraries, its /etc and /tmp (the toolbox's mount
    // point); the tools are in a tree of their own.
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        listing(&out),
        ["etc", "lib", "lib64", "tmp", "toolbox", "usr"]
    );
    let toolbox = out.join("toolbox");
    assert_eq!(
        listing(&toolbox),
        ["bin", "etc", "lib", "lib64", "tmp", "usr"]
    );
    // The agent's /etc has only what the agent reads; the tool tree's only
    // what the tools read.
    assert_eq!(
        listing(&out.join("etc")),
        ["group", "nsswitch.conf", "passwd", "ssl"]
    );
    assert_eq!(
        listing(&toolbox.join("etc")),
        [
            "group",
            "hostname",
            "hosts",
            "nsswitch.conf",
            "passwd",
            "protocols",
            "resolv.conf",
            "services",
            "ssl"
        ]
    );
    assert!(listing(&toolbox.join("tmp")).is_empty());
    // The agent's root has no tools; its binary is not in the tool tree.
    assert!(!out.join("bin").exists() && !out.join("usr/bin").exists());
    assert!(!toolbox.join("usr/local/bin/nsdebug").exists());

    // The agent runs from the layout alone (as it would in the empty base).
    let version = Command::new("chroot")
        .arg(&out)
        .args(["/usr/local/bin/nsdebug", "--version"])
        .output()
        .unwrap();
    assert!(version.status.success(), "{version:?}");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("nsdebug "));

    // As the toolbox root: every tool runs inside a distroless pod.
    let (ns, mut client, pod) =
        support::one_pod("image", "bare", vec![ContainerSpec::distroless("app")]).await;
    let root = toolbox.to_str().unwrap().to_string();
    let agent = Agent::start_on_testbed(&["--toolbox-root", &root]);
    let script = "ps -e -o pid=,comm= | head -1; ss -tlnH; ip -4 -o addr show eth0 | wc -l; \
                  tcpdump --version 2>&1 | head -1; strace -V | head -1; curl --version | head -1; \
                  lsof -v 2>&1 | grep -c revision; nslookup 2>&1 | head -1; ls /target";
    let result: Value = reqwest::Client::new()
        .post(format!("{}/v1/targets/{ns}/bare/run", agent.url))
        .json(&json!({"command": ["sh", "-c", script], "toolbox": true, "profile": "privileged"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(result["exitCode"], 0, "{result}");
    let out_text = result["stdout"].as_str().unwrap();
    for expected in [
        "1 hello",
        "0.0.0.0:8080",
        "tcpdump version",
        "strace -- version",
        "curl ",
        "BusyBox",
        "hello",
    ] {
        assert!(out_text.contains(expected), "{expected:?} in:\n{out_text}");
    }
    pod.remove(&mut client).await;
}
