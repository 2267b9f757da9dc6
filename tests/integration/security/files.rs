//! The files API acts with the container's rights (its uid and its
//! capability sets, not the agent's), uploads make no setuid or setgid file,
//! and the paths a container controls (`/etc/passwd`, `/etc/hosts`,
//! `/etc/resolv.conf`, which the agent reads for its own answers) are
//! type-checked before they are opened: a FIFO or a device planted there is
//! never opened and never blocks an answer.

use std::os::unix::fs::{PermissionsExt, chown};
use std::process::Command;

use serde_json::{Value, json};

use super::support::files::{download, files_url, pid_of, put, refused};
use super::support::pods::ContainerSpec;
use super::support::{Agent, assert_status, one_pod};

/// A uid-0 container that dropped every capability cannot read a 0600 file
/// of another user, nor write into that user's directory: `kubectl exec`
/// could not (`cat` and `cp` there fail with EACCES), so the files API must
/// not either.
#[tokio::test]
async fn a_root_container_without_capabilities_gets_no_more_than_its_user_could() {
    let (ns, mut client, pod) = one_pod(
        "sec-files-nocaps",
        "nocaps",
        vec![ContainerSpec::busybox("shell").drop_capabilities(&["ALL"])],
    )
    .await;
    let agent = Agent::start();
    let pid = pid_of(&agent, &ns, "nocaps", "shell").await;
    // Laid out from the host: the container could not chown them.
    let root = format!("/proc/{pid}/root");
    let secret = format!("{root}/tmp/secret");
    std::fs::write(&secret, "uid 1000's own\n").unwrap();
    chown(&secret, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(&secret, PermissionsExt::from_mode(0o600)).unwrap();
    let locked = format!("{root}/tmp/locked");
    std::fs::create_dir(&locked).unwrap();
    chown(&locked, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(&locked, PermissionsExt::from_mode(0o755)).unwrap();

    // The container's own root cannot read it: what the API must match.
    let cat = run(&agent, &ns, "nocaps", json!(["cat", "/tmp/secret"])).await;
    assert_ne!(cat["exitCode"], 0, "{cat}");

    let url = files_url(&agent, &ns, "nocaps", "shell", "/tmp/secret", &[]);
    let message = refused(url, 403, "Forbidden").await;
    assert!(message.contains("permission denied"), "{message}");

    let url = files_url(&agent, &ns, "nocaps", "shell", "/tmp/locked/planted", &[]);
    let (code, body) = put(url, b"not allowed\n".to_vec()).await;
    assert_eq!(code, 403, "{body}");
    assert_status(&body, 403, "Forbidden");
    assert!(
        !std::path::Path::new(&format!("{locked}/planted")).exists(),
        "nothing was written"
    );
    // Where its user may write, it still can.
    let url = files_url(&agent, &ns, "nocaps", "shell", "/tmp/mine", &[]);
    let (code, body) = put(url, b"mine\n".to_vec()).await;
    assert_eq!(code, 201, "{body}");
    // ...and read back what its user may read, with no capability at all.
    let mine = download(files_url(&agent, &ns, "nocaps", "shell", "/tmp/mine", &[])).await;
    assert_eq!(mine.text(), "mine\n");
    pod.remove(&mut client).await;
}

/// An upload never makes a setuid or setgid file: a user with exec on a pod
/// must not plant a binary that runs as root for the container's other users.
#[tokio::test]
async fn uploads_make_no_setuid_or_setgid_file() {
    let (ns, mut client, pod) = one_pod(
        "sec-files-suid",
        "suid",
        vec![ContainerSpec::busybox("shell")],
    )
    .await;
    let agent = Agent::start();
    let pid = pid_of(&agent, &ns, "suid", "shell").await;
    for (mode, name) in [("4755", "setuid"), ("2755", "setgid"), ("6755", "both")] {
        let path = format!("/tmp/{name}");
        let url = files_url(&agent, &ns, "suid", "shell", &path, &[("mode", mode)]);
        let (code, body) = put(url, b"#!/bin/sh\nid\n".to_vec()).await;
        assert_eq!(code, 400, "mode {mode}: {body}");
        assert_status(&body, 400, "BadRequest");
        assert!(
            body["message"].as_str().unwrap().contains("setuid"),
            "{body}"
        );
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/root{path}")).exists(),
            "mode {mode}: no file was made"
        );
    }
    // Plain permission bits (and the sticky bit) are still taken.
    let url = files_url(
        &agent,
        &ns,
        "suid",
        "shell",
        "/tmp/tool",
        &[("mode", "0755")],
    );
    let (code, body) = put(url, b"#!/bin/sh\nid\n".to_vec()).await;
    assert_eq!((code, &body["mode"]), (201, &json!("0755")), "{body}");
    pod.remove(&mut client).await;
}

/// Runs `command` in the pod's only container; the run API's answer.
async fn run(agent: &Agent, ns: &str, pod: &str, command: Value) -> Value {
    run_body(agent, ns, pod, json!({ "command": command })).await
}

async fn run_body(agent: &Agent, ns: &str, pod: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/targets/{ns}/{pod}/run", agent.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

/// `IN_OPEN` watches on files, to see whether anyone opened them
/// (`inotify(7)`: an `O_PATH` descriptor is no open).
struct OpenWatch {
    fd: std::os::fd::OwnedFd,
}

impl OpenWatch {
    fn new(paths: &[String]) -> Self {
        use rustix::fs::inotify;
        let fd =
            inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
        for path in paths {
            inotify::add_watch(&fd, path.as_str(), inotify::WatchFlags::OPEN)
                .unwrap_or_else(|err| panic!("watch {path}: {err}"));
        }
        Self { fd }
    }

    /// How many opens happened since the watch began.
    fn opens(&self) -> usize {
        let mut buffer = [std::mem::MaybeUninit::uninit(); 4096];
        let mut reader = rustix::fs::inotify::Reader::new(&self.fd, &mut buffer);
        let mut count = 0;
        while reader.next().is_ok() {
            count += 1;
        }
        count
    }
}

/// A FIFO or a device node where the container's `/etc/passwd`, `/etc/hosts`
/// and `/etc/resolv.conf` were: the routes that read them answer, quickly,
/// and the agent never opens the node (a FIFO would block it; a device's
/// open can have effects, a watchdog's starts it).
#[tokio::test]
async fn special_files_at_the_files_the_agent_reads_are_never_opened() {
    let (ns, mut client, pod) = one_pod(
        "sec-files-special",
        "special",
        vec![ContainerSpec::busybox("shell")],
    )
    .await;
    let agent = Agent::start();
    let pid = pid_of(&agent, &ns, "special", "shell").await;
    let planted = ["/etc/passwd", "/etc/hosts", "/etc/resolv.conf"];
    for (kind, mknod) in [("FIFO", "p"), ("character device", "c 1 3")] {
        // The runtime bind-mounts hosts and resolv.conf; a process of the
        // container with CAP_SYS_ADMIN could unmount them just so.
        let script = planted
            .iter()
            .map(|path| format!("umount {path} 2>/dev/null; rm -f {path} && mknod {path} {mknod}"))
            .collect::<Vec<_>>()
            .join(" && ");
        let status = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "--", "/bin/sh", "-c", &script])
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
        let watch = OpenWatch::new(
            &planted
                .iter()
                .map(|path| format!("/proc/{pid}/root{path}"))
                .collect::<Vec<_>>(),
        );

        let (code, body) = agent
            .get(&format!("/v1/targets/{ns}/special/diag/processes"))
            .await;
        assert_eq!(code, 200, "{kind}: {body}");
        assert_eq!(body["items"][0]["user"], Value::Null, "{kind}: no names");

        let (code, body) = agent
            .get(&format!("/v1/targets/{ns}/special/diag/dns?name=localhost"))
            .await;
        assert!(
            code < 500,
            "{kind}: a clear answer, not a fault: {code} {body}"
        );
        assert!(
            body.to_string().contains("not a regular file"),
            "{kind}: says why: {body}"
        );

        let toolbox = run_body(
            &agent,
            &ns,
            "special",
            json!({"command": ["true"], "toolbox": true}),
        )
        .await;
        assert_eq!(toolbox["exitCode"], 0, "{kind}: {toolbox}");

        assert_eq!(watch.opens(), 0, "{kind}: the agent opened a planted node");
    }
    pod.remove(&mut client).await;
}
