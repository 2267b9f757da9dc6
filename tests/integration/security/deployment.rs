//! The deployment grants no more than it needs (issue 13, finding 9).
//!
//! An agent that is root on every node is still read-only where it can be,
//! sees of the host only what it uses, keeps its TLS key where no session
//! can see it, and hands toolbox sessions a tool tree that holds no secret.
//! Checked on what is installed, both ways: the chart with its defaults
//! (and with a TLS Secret and recordings, which add volumes) and
//! `kubectl kustomize manifests`; and on the tool tree `hack/image/toolbox.sh`
//! lays out for the image.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::Value;

use crate::offline::deploy::render::{self, helm_template, only, strictly};
use crate::support;

/// The agent's pod and container of an install.
fn agent_pod(objects: &[Value]) -> (PodSpec, Container) {
    let daemonset: DaemonSet = strictly(only(objects, "DaemonSet"));
    let pod = daemonset.spec.unwrap().template.spec.unwrap();
    let agent = pod
        .containers
        .iter()
        .find(|c| c.name == "agent")
        .expect("the agent container")
        .clone();
    (pod, agent)
}

/// The installs to check: the manifests, the chart's defaults, and the
/// chart with every volume it can add (a TLS Secret, recordings).
fn installs() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        ("manifests", render::kustomize()),
        ("chart defaults", helm_template(&[]).unwrap()),
        (
            "chart with tls and recording",
            helm_template(&[
                "--set",
                "tls.existingSecret=nsdebug-tls",
                "--set",
                "recording.enabled=true",
            ])
            .unwrap(),
        ),
    ]
}

/// Host paths no volume may be: each one holds far more than the agent
/// uses (every socket and secret of the host's services under `/run`).
const TOO_WIDE: &[&str] = &[
    "/", "/run", "/var/run", "/var", "/etc", "/proc", "/sys", "/dev",
];

#[test]
fn deployment_agent_root_filesystem_is_read_only() {
    for (name, objects) in installs() {
        let (_, agent) = agent_pod(&objects);
        let context = agent.security_context.clone().unwrap_or_default();
        assert_eq!(
            context.read_only_root_filesystem,
            Some(true),
            "{name}: the agent's root filesystem is writable"
        );
    }
}

#[test]
fn deployment_mounts_of_the_host_are_only_what_the_agent_uses() {
    for (name, objects) in installs() {
        let (pod, agent) = agent_pod(&objects);
        let config = render::serve_config(agent.args.as_ref().unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // The CRI socket is named, not discovered among all of /run.
        let socket = config.cri_socket.clone().unwrap_or_else(|| {
            panic!("{name}: no --cri-socket: the agent searches a mounted /run")
        });
        let socket_dir = socket.parent().unwrap().to_path_buf();
        let mut justified: Vec<PathBuf> = vec![
            // The CRI socket's directory: the socket is recreated when the
            // runtime restarts, which a mount of the file itself would miss.
            socket_dir.clone(),
            // The host's cgroupfs: sessions join the target's cgroups.
            PathBuf::from("/sys/fs/cgroup"),
            // The containers' log files, for pods/log.
            PathBuf::from("/var/log/pods"),
        ];
        // Recordings, when on, are kept on the node.
        if let Some(recording) = &config.recording {
            justified.push(recording.dir.clone());
        }
        for mount in agent.volume_mounts.iter().flatten() {
            let volume = pod
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == mount.name)
                .unwrap();
            let Some(host) = &volume.host_path else {
                continue;
            };
            let host_path = Path::new(&host.path);
            assert!(
                !TOO_WIDE.iter().any(|wide| host_path == Path::new(wide)),
                "{name}: volume {} mounts the host's {}",
                volume.name,
                host.path
            );
            assert!(
                justified.iter().any(|p| p == Path::new(&mount.mount_path)),
                "{name}: hostPath {} at {} is not one the agent uses ({justified:?})",
                host.path,
                mount.mount_path
            );
            if Path::new(&mount.mount_path) == Path::new("/var/log/pods") {
                assert_eq!(
                    (mount.read_only, host.path.as_str()),
                    (Some(true), "/var/log/pods"),
                    "{name}: the pods' logs are mounted writable or elsewhere"
                );
            }
            if Path::new(&mount.mount_path) == socket_dir {
                assert_eq!(
                    mount.read_only,
                    Some(true),
                    "{name}: the CRI socket's directory is writable"
                );
                // The host's directory of the socket, seen at the same place
                // under the mount path the agent is told.
                assert!(
                    socket_dir.ends_with(host_path.strip_prefix("/").unwrap()),
                    "{name}: {} is mounted at {}",
                    host.path,
                    mount.mount_path
                );
            }
        }
        // The socket the agent is told is on the read-only socket mount.
        let (mount, volume) = render::volume_for(&pod, &agent, &socket);
        assert!(volume.host_path.is_some(), "{name}: {}", socket.display());
        assert_eq!(mount.read_only, Some(true), "{name}");
    }
}

#[test]
fn deployment_tls_key_is_private_and_outside_the_toolbox() {
    for (name, objects) in installs() {
        let (pod, agent) = agent_pod(&objects);
        let config = render::serve_config(agent.args.as_ref().unwrap()).unwrap();
        let toolbox = &config.toolbox_root;
        assert_ne!(
            toolbox,
            Path::new("/"),
            "{name}: the toolbox root is the agent's own root"
        );
        // Nothing is mounted into the tool tree, nor over it.
        for mount in agent.volume_mounts.iter().flatten() {
            let path = Path::new(&mount.mount_path);
            assert!(
                !path.starts_with(toolbox) && !toolbox.starts_with(path),
                "{name}: {} is mounted at {} and the toolbox root is {}",
                mount.name,
                mount.mount_path,
                toolbox.display()
            );
        }
        if let Some(nsdebug::tls::CertSource::Files { key, .. }) = &config.tls {
            let (mount, volume) = render::volume_for(&pod, &agent, key);
            let secret = volume.secret.as_ref().expect("the key from a Secret");
            let mode = secret.default_mode.unwrap_or(0o644);
            assert!(
                mode == 0o400 || mode == 0o440,
                "{name}: the TLS key's mode is {mode:o}"
            );
            assert_eq!(mount.read_only, Some(true));
        } else {
            assert!(
                !name.contains("tls"),
                "{name}: the Secret's key is not used"
            );
        }
    }
}

/// Every file under `dir` (not following links).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        out.push(entry.path());
        if kind.is_dir() {
            walk(&entry.path(), out);
        }
    }
}

#[test]
fn deployment_tool_tree_holds_no_secret_and_nothing_setuid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("image");
    let made = Command::new("bash")
        .arg(support::repo().join("hack/image/toolbox.sh"))
        .arg(&out)
        .arg(env!("CARGO_BIN_EXE_nsdebug"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    // The image's tool tree is its own directory, not the image's root.
    let tree = out.join("toolbox");
    assert!(
        tree.join("bin").is_dir() && tree.join("usr").is_dir() && tree.join("etc").is_dir(),
        "no tool tree at {}",
        tree.display()
    );
    let mut files = Vec::new();
    walk(&tree, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let inside = file.strip_prefix(&tree).unwrap();
        let meta = std::fs::symlink_metadata(file).unwrap();
        if meta.file_type().is_symlink() {
            // A link must stay inside the tree (absolute links are read
            // inside it too, where it is the root).
            continue;
        }
        let text = inside.to_string_lossy();
        if ["etc/shadow", "etc/gshadow", "etc/shadow-", "etc/gshadow-"].contains(&text.as_ref())
            || text.contains("serviceaccount")
            || text.contains("nsdebug/tls")
            || inside.file_name().is_some_and(|n| n == "token")
        {
            found.push(format!("{text}: a secret's name"));
        }
        if meta.permissions().mode() & 0o6000 != 0 {
            found.push(format!("{text}: setuid/setgid ({:o})", meta.mode()));
        }
        if meta.is_file() {
            // A key file, PEM or OpenSSH, anywhere. Not in programs and
            // libraries: GnuTLS carries the public test keys of its self
            // tests, and libcrypto and libssh2 the PEM headers they parse.
            let content = std::fs::read(file).unwrap();
            if !content.starts_with(b"\x7fELF") && content.windows(11).any(|w| w == b"PRIVATE KEY")
            {
                found.push(format!("{text}: a private key"));
            }
        }
    }
    assert!(found.is_empty(), "in the tool tree:\n{}", found.join("\n"));

    // The test bed's tool tree is laid out alone the same way.
    let alone = dir.path().join("tools");
    let made = Command::new("bash")
        .arg(support::repo().join("hack/image/toolbox.sh"))
        .args(["--tools-only"])
        .arg(&alone)
        .output()
        .unwrap();
    assert!(made.status.success(), "--tools-only: {made:?}");
    let names = |root: &Path| {
        let mut all = Vec::new();
        walk(root, &mut all);
        let mut names: Vec<String> = all
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".stamp") && !n.starts_with(".toolbox"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&alone), names(&tree));
}
