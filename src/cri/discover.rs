//! Finding the node's CRI socket when none is configured.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::{CriClient, CriError, RuntimeVersion};

/// The sockets of the CRI runtimes Kubernetes distributions ship, in the order
/// they are tried. Paths are absolute on the host; `discover` looks them up
/// under a host root so a DaemonSet can mount the host's `/run` elsewhere.
pub const WELL_KNOWN_SOCKETS: &[(&str, &str)] = &[
    ("containerd", "/run/containerd/containerd.sock"),
    ("CRI-O", "/run/crio/crio.sock"),
    ("CRI-O", "/var/run/crio/crio.sock"),
    ("cri-dockerd", "/run/cri-dockerd.sock"),
    ("cri-dockerd", "/var/run/cri-dockerd.sock"),
    ("k3s/RKE2", "/run/k3s/containerd/containerd.sock"),
    ("MicroK8s", "/var/snap/microk8s/common/run/containerd.sock"),
    ("k0s", "/run/k0s/containerd.sock"),
];

/// The first well-known socket under `host_root` whose runtime answers `Version`,
/// or an error naming every path tried and why each failed.
pub async fn discover(
    host_root: &Path,
    timeout: Duration,
) -> Result<(CriClient, RuntimeVersion), CriError> {
    let mut tried = String::new();
    for (runtime, socket) in WELL_KNOWN_SOCKETS {
        let path = host_root.join(socket.trim_start_matches('/'));
        if !tried.is_empty() {
            tried.push_str(", ");
        }
        if !path.exists() {
            let _ = write!(tried, "{} ({runtime}: no such socket)", path.display());
            continue;
        }
        let client = CriClient::new(&path, timeout);
        match client.version().await {
            Ok(version) => return Ok((client, version)),
            Err(err) => {
                let reason = match &err {
                    CriError::Call { code, message, .. } => format!("{code:?}: {message}"),
                    other => other.to_string(),
                };
                let _ = write!(tried, "{} ({runtime}: {reason})", path.display());
            }
        }
    }
    Err(CriError::NoRuntimeFound { tried })
}
