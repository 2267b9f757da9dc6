//! Findings 2, 3 and 4 of "Never more than `kubectl exec`": what the
//! privileged profile and the toolbox run, with which environment, from
//! which files, in which user namespace.
//!
//! - A privileged session ran the container's own `/bin/sh`, libc and loader
//!   as node root, and took init's live environment: `ENV=` in a pod spec
//!   made `sh` run the container's script with every capability. The
//!   toolbox passed `ENV` on too.
//! - The toolbox showed the agent's live `/etc` (the TLS key, the host's
//!   `/etc/shadow` on the test bed), and only its top mount was read-only.
//! - The toolbox never joined the container's user namespace.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::security::common::{output, post_run};
use crate::support::pods::ContainerSpec;
use crate::support::{Agent, one_pod, toolbox_root};

/// A container that plants a script and points `ENV` at it, where both the
/// container's root and a toolbox's `/target` would find it.
fn planting_container() -> ContainerSpec {
    let plant = "echo 'echo PWNED-uid-$(id -u)' > /evil.sh; chmod 755 /evil.sh; \
                 mkdir -p /target; cp /evil.sh /target/evil.sh; \
                 exec sleep 100000";
    ContainerSpec::new(
        "app",
        crate::support::pods::BUSYBOX_IMAGE,
        &["sh", "-c", plant],
    )
    .env("ENV", "/target/evil.sh")
    .env("BASH_ENV", "/target/evil.sh")
}

#[tokio::test]
async fn a_privileged_session_never_runs_the_containers_code_or_environment() {
    let (ns, mut client, pod) = one_pod("sec-privenv", "planted", vec![planting_container()]).await;
    let agent = Agent::start();
    let path = format!("/v1/targets/{ns}/planted/run");
    crate::support::eventually(
        "the planted script",
        std::time::Duration::from_secs(10),
        || async {
            let (_, answer) = post_run(&agent, &path, json!({"command": ["ls", "/evil.sh"]})).await;
            (answer["exitCode"] == 0).then_some(())
        },
    )
    .await;

    // An interactive shell reads $ENV: the container's script as node root.
    for body in [
        json!({"command": ["sh", "-i"], "stdin": "exit 0\n", "profile": "privileged"}),
        json!({"command": ["sh", "-i"], "stdin": "exit 0\n", "toolbox": true}),
        json!({"command": ["sh", "-i"], "stdin": "exit 0\n", "toolbox": true, "profile": "privileged"}),
    ] {
        let (code, answer) = post_run(&agent, &path, body.clone()).await;
        assert_eq!(code, 200, "{body}: {answer}");
        assert!(
            !output(&answer).contains("PWNED"),
            "{body}: the container's script ran: {answer}"
        );
    }
    // The privileged profile's environment holds nothing of the container's.
    let (_, answer) = post_run(
        &agent,
        &path,
        json!({"command": ["env"], "profile": "privileged"}),
    )
    .await;
    let env = answer["stdout"].as_str().unwrap_or_default();
    assert!(!env.contains("ENV="), "{env}");
    assert!(
        !env.contains("HOSTNAME="),
        "nothing of the container's: {env}"
    );
    // Nor does it run the container's binaries: /evil.sh is not in the tool tree.
    let (code, answer) = post_run(
        &agent,
        &path,
        json!({"command": ["/evil.sh"], "profile": "privileged"}),
    )
    .await;
    assert!(
        !output(&answer).contains("PWNED"),
        "the container's program ran as node root: {code} {answer}"
    );
    // The container profile keeps what kubectl exec gives: the spec's environment.
    let (_, answer) = post_run(&agent, &path, json!({"command": ["env"]})).await;
    let env = answer["stdout"].as_str().unwrap_or_default();
    assert!(env.contains("ENV=/target/evil.sh"), "{env}");
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn the_agents_own_root_is_refused_as_a_tool_tree() {
    let (ns, mut client, pod) = one_pod(
        "sec-agentroot",
        "victim",
        vec![ContainerSpec::busybox("app").run_as_user(1000)],
    )
    .await;
    // A secret in the agent's /etc, readable by all, as a Secret volume of
    // mode 0644 is.
    let secret_dir = Path::new("/etc").join(format!("nsdebug-sec-test-{}", std::process::id()));
    std::fs::create_dir_all(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("tls.key"), "PRIVATE KEY").unwrap();
    let socket = crate::support::testbed_socket();
    let started = start_or_refusal(&[
        "--listen",
        "127.0.0.1:0",
        "--node-name",
        crate::support::NODE_NAME,
        "--insecure-http",
        "--auth",
        "none",
        "--resync-interval",
        "1h",
        "--cri-socket",
        socket.to_str().unwrap(),
        "--toolbox-root",
        "/",
    ]);
    match started {
        Err(stderr) => {
            let _ = std::fs::remove_dir_all(&secret_dir);
            assert!(
                stderr.contains("is the agent's own root filesystem"),
                "{stderr}"
            );
        }
        Ok(agent) => {
            let (_, answer) = post_run(
                &agent,
                &format!("/v1/targets/{ns}/victim/run"),
                json!({"command": ["sh", "-c", format!("cat {}/tls.key; head -1 /etc/shadow", secret_dir.display())], "toolbox": true}),
            )
            .await;
            let _ = std::fs::remove_dir_all(&secret_dir);
            panic!("an agent with --toolbox-root / served a toolbox: {answer}");
        }
    }
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn the_tool_tree_is_read_only_and_shows_no_mount_below_it() {
    let (ns, mut client, pod) = one_pod(
        "sec-tooltree",
        "victim",
        vec![ContainerSpec::busybox("app").run_as_user(1000)],
    )
    .await;
    // A copy of the test bed's tool tree with a secret volume mounted inside
    // its /etc, as a careless image could have.
    let tree = tempfile::tempdir().unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", toolbox_root().display()))
        .arg(tree.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let secrets = tree.path().join("etc/secret");
    std::fs::create_dir_all(&secrets).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "secret"])
        .arg(&secrets)
        .status()
        .unwrap();
    assert!(mounted.success());
    std::fs::write(secrets.join("tls.key"), "PRIVATE KEY").unwrap();

    let agent = Agent::start_on_testbed(&["--toolbox-root", tree.path().to_str().unwrap()]);
    let (code, answer) = post_run(
        &agent,
        &format!("/v1/targets/{ns}/victim/run"),
        json!({"command": ["sh", "-c", "cat /etc/secret/tls.key; touch /usr/planted /etc/planted; id -u"], "toolbox": true}),
    )
    .await;
    let _ = Command::new("umount").arg(&secrets).status();
    assert_eq!(code, 200, "{answer}");
    let out = output(&answer);
    assert!(
        !out.contains("PRIVATE KEY"),
        "a mount below the tool tree: {out}"
    );
    assert!(
        !tree.path().join("usr/planted").exists() && !tree.path().join("etc/planted").exists(),
        "the tool tree was written: {out}"
    );
    assert!(
        answer["stdout"].as_str().unwrap().ends_with("1000\n"),
        "{answer}"
    );
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn the_toolbox_joins_the_containers_user_namespace() {
    // The container's process lives in a user namespace of its own (what a
    // `hostUsers: false` pod gets; containerd 1.6 cannot make one, so the
    // container makes it).
    let (ns, mut client, pod) = one_pod(
        "sec-userns",
        "userns",
        vec![ContainerSpec::new(
            "app",
            crate::support::pods::BUSYBOX_IMAGE,
            &["unshare", "-U", "-r", "sleep", "100000"],
        )],
    )
    .await;
    let agent = Agent::start();
    let pid = agent.get_ok(&format!("/v1/targets/{ns}/userns")).await["pid"]
        .as_u64()
        .unwrap();
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let host = std::fs::read_to_string("/proc/self/uid_map").unwrap();
    assert_ne!(
        theirs, host,
        "the test container has a user namespace of its own"
    );
    let (code, answer) = post_run(
        &agent,
        &format!("/v1/targets/{ns}/userns/run"),
        json!({"command": ["cat", "/proc/self/uid_map"], "toolbox": true}),
    )
    .await;
    // Inside its user namespace, or not at all: never with the host's IDs.
    // Here it is not at all: this container's network and PID namespaces
    // belong to the host's user namespace, so inside the container's the
    // kernel refuses the toolbox its sysfs and procfs (`mount_too_revealing`,
    // `net_current_may_mount`). A `hostUsers: false` pod's belong to its own.
    if code == 200 {
        assert_eq!(answer["stdout"], theirs, "{answer}");
    } else {
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains("toolbox"), "{code} {answer}");
    }
    pod.remove(&mut client).await;
}

/// `nsdebug serve ARGS`: the agent when it starts, or what it said when it
/// refused to (a refusal exits at once; a serving agent prints its address).
fn start_or_refusal(args: &[&str]) -> Result<Agent, String> {
    let command = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nsdebug"));
        command.arg("serve").args(args);
        // The flag, not the test bed's tree through the variable.
        command.env("NSDEBUG_TOOLBOX_ROOT", "/");
        command
    };
    let mut child = command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    let mut stdout = child.stdout.take().unwrap();
    if std::io::Read::read(&mut stdout, &mut first).unwrap_or(0) == 1 {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(Agent::spawn_command(command()));
    }
    let out = child.wait_with_output().unwrap();
    Err(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The toolbox mounts a procfs and a sysfs of its own: they must hide what
/// the container's hide. Writable `/proc/sys/kernel/core_pattern` names a
/// program the kernel runs as node root on the next crash (found by an
/// adversarial review; the test writes back the value already there).
#[tokio::test]
async fn the_toolbox_procfs_hides_what_the_containers_hides() {
    let (ns, mut client, pod) = one_pod(
        "sec-procmask",
        "victim",
        vec![ContainerSpec::busybox("app")],
    )
    .await;
    let agent = Agent::start();
    let path = format!("/v1/targets/{ns}/victim/run");
    // Each write in a subshell: a failed redirection ends a POSIX shell.
    let script = "v=$(cat /proc/sys/kernel/core_pattern); \
                  (echo \"$v\" > /proc/sys/kernel/core_pattern) && echo WROTE-core_pattern; \
                  cat /proc/timer_list /proc/keys | wc -c; ls /sys/firmware | wc -l";
    for body in [
        json!({"command": ["sh", "-c", script]}),
        json!({"command": ["sh", "-c", script], "toolbox": true}),
    ] {
        let (code, answer) = post_run(&agent, &path, body.clone()).await;
        assert_eq!(code, 200, "{body}: {answer}");
        let out = output(&answer);
        assert!(!out.contains("WROTE-core_pattern"), "{body}: {out}");
        let stdout = answer["stdout"].as_str().unwrap_or_default();
        assert_eq!(
            stdout, "0\n0\n",
            "/proc/timer_list, /proc/keys and /sys/firmware hidden (this kernel has no\
             /proc/kcore or /proc/sysrq-trigger): {body}: {out}"
        );
    }
    pod.remove(&mut client).await;
}

/// A container holding `CAP_SYS_PTRACE` could attach to a privileged
/// session in its PID namespace (root with every capability, no filter) and
/// act as node root: the privileged profile enters it only from outside its
/// PID namespace (found by an adversarial review).
#[tokio::test]
async fn a_tracer_container_gets_no_privileged_session_in_its_pid_namespace() {
    let (ns, mut client, pod) = one_pod(
        "sec-tracer",
        "tracer",
        vec![ContainerSpec::busybox("app").add_capabilities(&["SYS_PTRACE"])],
    )
    .await;
    let agent = Agent::start();
    let path = format!("/v1/targets/{ns}/tracer/run");
    let (code, answer) = post_run(
        &agent,
        &path,
        json!({"command": ["sh", "-c", "echo RAN-AS-ROOT"], "profile": "privileged"}),
    )
    .await;
    assert!(!output(&answer).contains("RAN-AS-ROOT"), "{answer}");
    assert_eq!(code, 409, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("CAP_SYS_PTRACE") && m.contains("namespaces=")),
        "{answer}"
    );
    // From outside its PID namespace it still works.
    let (code, answer) = post_run(
        &agent,
        &path,
        json!({"command": ["sh", "-c", "echo RAN-AS-ROOT"], "profile": "privileged",
               "namespaces": ["net", "ipc", "uts", "cgroup"]}),
    )
    .await;
    assert_eq!(
        (code, answer["stdout"].as_str()),
        (200, Some("RAN-AS-ROOT\n")),
        "{answer}"
    );
    pod.remove(&mut client).await;
}

/// A root container can put anything at its own `/dev/ptmx`: a terminal
/// session into it must fail clearly, never hang or open what was planted.
#[tokio::test]
async fn a_planted_dev_ptmx_fails_a_terminal_session_clearly() {
    let plant = "rm -f /dev/ptmx; mkfifo /dev/ptmx; exec sleep 100000";
    let (ns, mut client, pod) = one_pod(
        "sec-ptmx",
        "planted",
        vec![ContainerSpec::new(
            "app",
            crate::support::pods::BUSYBOX_IMAGE,
            &["sh", "-c", plant],
        )],
    )
    .await;
    let agent = Agent::start();
    let pid = agent.get_ok(&format!("/v1/targets/{ns}/planted")).await["pid"]
        .as_u64()
        .unwrap();
    crate::support::eventually(
        "the planted FIFO",
        std::time::Duration::from_secs(10),
        || async {
            let meta = std::fs::symlink_metadata(format!("/proc/{pid}/root/dev/ptmx")).ok()?;
            std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()).then_some(())
        },
    )
    .await;
    let url = format!(
        "{}/api/v1/namespaces/{ns}/pods/planted/exec?command=sh&stdin=true&stdout=true&tty=true",
        agent.url.replace("http://", "ws://")
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // Every frame until the agent closes, within a bound: a hang fails here.
    let frames = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        use futures::StreamExt;
        let mut text = String::new();
        while let Some(Ok(message)) = socket.next().await {
            if let tokio_tungstenite::tungstenite::Message::Binary(data) = message {
                text.push_str(&String::from_utf8_lossy(&data[1..]));
            }
        }
        text
    })
    .await
    .expect("the session hung on a planted /dev/ptmx");
    assert!(
        frames.contains("/dev/ptmx is not a terminal multiplexer"),
        "{frames}"
    );
    pod.remove(&mut client).await;
}
