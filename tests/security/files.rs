//! The files API acts with the container's rights (its uid and its
//! capability sets, not the agent's), uploads make no setuid or setgid file,
//! and the paths a container controls (`/etc/passwd`, `/etc/hosts`,
//! `/etc/resolv.conf`, which the agent reads for its own answers) are
//! type-checked before they are opened: a FIFO or a device planted there is
//! never opened and never blocks an answer.

use std::process::Command;

use serde_json::{Value, json};

use super::support::files::pid_of;
use super::support::testbed::ContainerSpec;
use super::support::{Agent, one_pod};

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
