//! The web terminal in a real browser: headless Chromium driven by
//! playwright-core (`tests/browser/ui.mjs`) against the agent on the test bed.
//! Screenshots of every step land in `target/ui-screenshots/`.

use crate::support;

use std::process::Command;

use support::fake_apiserver::{FakeApiServer, FakeUser, Rule};
use support::pods::{ContainerSpec, PodSpec, run_pod};
use support::{Agent, test_namespace};

/// Chromium aborts page loads and requests with ERR_NETWORK_CHANGED when
/// network interfaces come and go, which creating a pod on the test bed does
/// (its veth pair): the browser tests run one at a time, pods made first.
static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn web_terminal_in_a_real_browser() {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let ns = test_namespace("ui");
    let mut client = support::cri().await;
    let shell = run_pod(
        &mut client,
        &PodSpec::new(&ns, "shellpod", vec![ContainerSpec::busybox("shell")]),
        "test",
    )
    .await;
    let hello = run_pod(
        &mut client,
        &PodSpec::new(&ns, "hello", vec![ContainerSpec::distroless("hello")]),
        "test",
    )
    .await;
    let stopped = run_pod(
        &mut client,
        &PodSpec::new(&ns, "stopped", vec![ContainerSpec::busybox("gone")]),
        "test",
    )
    .await;
    stopped.stop(&mut client, "gone", 10).await;
    let agent = Agent::start();
    let playwright = support::repo().join("hack/web/node_modules/playwright-core");
    assert!(
        playwright.exists(),
        "run hack/test.sh: it installs playwright-core and Chromium"
    );
    let shots = support::repo().join("target/ui-screenshots");
    let output = Command::new("node")
        .arg(support::repo().join("tests/browser/ui.mjs"))
        .args([&agent.url, &ns, shots.to_str().unwrap()])
        .output()
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}\nagent log:\n{}",
        agent.log()
    );
    // Page weight and load time, for docs/benchmarks.md.
    println!("ui metrics: {stdout}");
    for pod in [shell, hello, stopped] {
        pod.remove(&mut client).await;
    }
}

// Multi-threaded: node runs as a blocking child while the fake API server,
// on this runtime, answers the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_login_in_a_real_browser() {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let (ns, mut client, pod) =
        support::one_pod("ui-login", "desk", vec![ContainerSpec::busybox("shell")]).await;
    let users = vec![
        FakeUser {
            token: "alice-token",
            name: "alice",
            groups: vec!["dev"],
        },
        FakeUser {
            token: "bob-token",
            name: "bob",
            groups: vec!["dev"],
        },
    ];
    let rules = ["create pods/exec", "get pods", "list pods"]
        .into_iter()
        .map(|right| {
            let (verb, resource) = right.split_once(' ').unwrap();
            Rule {
                user: "alice",
                verb,
                resource,
                namespace: Some(ns.clone()),
            }
        })
        .collect();
    let api = FakeApiServer::start(users, rules).await;
    let socket = support::testbed_socket();
    let agent = Agent::start_secure(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--kubeconfig",
        api.kubeconfig.to_str().unwrap(),
    ]);
    let mint = |token: &str| {
        let minted = Command::new(env!("CARGO_BIN_EXE_nsdebug"))
            .args([
                "login-link",
                "--agent",
                &agent.url,
                "--insecure-skip-tls-verify",
            ])
            .args(["--token", token])
            .output()
            .unwrap();
        assert!(minted.status.success(), "{minted:?}");
        String::from_utf8(minted.stdout).unwrap().trim().to_string()
    };
    let link = mint("alice-token");
    let bobs_link = mint("bob-token");
    let shots = support::repo().join("target/ui-screenshots");
    let output = Command::new("node")
        .arg(support::repo().join("tests/browser/login.mjs"))
        .args([&agent.url, &link, &ns, shots.to_str().unwrap(), &bobs_link])
        .output()
        .expect("node is installed");
    assert!(
        output.status.success(),
        "browser test failed:\n{}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        agent.log()
    );
    pod.remove(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tab_in_a_real_browser() {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let ns = test_namespace("ui-logs");
    // Log files outlive pods on the test bed: a name of this run.
    let name = format!(
        "ticker-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let mut client = support::cri().await;
    let script = "echo alpha-1; echo beta-2; echo alpha-3; i=0; \
        while true; do echo tick $i; i=$((i+1)); sleep 0.2; done";
    let mut pod = run_pod(
        &mut client,
        &PodSpec::new(
            &ns,
            &name,
            vec![ContainerSpec::new(
                "app",
                support::pods::BUSYBOX_IMAGE,
                &["sh", "-c", script],
            )],
        ),
        "test",
    )
    .await;
    let agent = Agent::start();
    // The first instance wrote its lines before it is stopped.
    let log = format!("/api/v1/namespaces/{ns}/pods/{name}/log?container=app");
    support::eventually(
        "the first instance's lines",
        std::time::Duration::from_secs(20),
        || async {
            let (code, body) = agent.get(&log).await;
            (code == 200 && body.as_str().is_some_and(|text| text.contains("alpha-3")))
                .then_some(())
        },
    )
    .await;
    pod.stop(&mut client, "app", 0).await;
    pod.restart(&mut client, "app", 1).await;
    let shots = support::repo().join("target/ui-screenshots");
    let output = Command::new("node")
        .arg(support::repo().join("tests/browser/logs.mjs"))
        .args([&agent.url, &ns, &name, shots.to_str().unwrap()])
        .output()
        .expect("node is installed");
    assert!(
        output.status.success(),
        "browser test failed:\n{}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        agent.log()
    );
    pod.remove(&mut client).await;
}
