//! Reading the host PID out of a runtime's verbose `ContainerStatus` answer.
//!
//! The CRI has no PID field: runtimes put it in the free-form `info` map that a
//! `ContainerStatus{verbose: true}` call returns. containerd and CRI-O both store
//! one JSON document under the key `"info"` whose top-level `"pid"` is the host PID
//! of the container's init process; CRI-O releases before 1.20 used a flat map with
//! `"pid"` as its own key. Every shape is parsed here and nowhere else.

use std::collections::HashMap;

use serde::Deserialize;

/// Why the verbose `info` map could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("the runtime's verbose container info is not valid JSON")]
    InvalidJson {
        #[source]
        source: serde_json::Error,
    },
    #[error("the runtime's verbose container info has a non-numeric pid '{value}'")]
    InvalidPid { value: String },
}

#[derive(Deserialize)]
struct VerboseInfo {
    #[serde(default)]
    pid: Option<i64>,
}

/// The host PID of a container's init process, from a verbose `ContainerStatus` info
/// map. `Ok(None)` when the runtime reports no process (a created or exited
/// container reports pid 0) or no info at all (cri-dockerd).
pub fn host_pid(info: &HashMap<String, String>) -> Result<Option<u32>, InfoError> {
    if let Some(doc) = info.get("info") {
        let parsed: VerboseInfo =
            serde_json::from_str(doc).map_err(|source| InfoError::InvalidJson { source })?;
        return Ok(parsed.pid.and_then(positive_pid));
    }
    match info.get("pid") {
        Some(value) => {
            value
                .trim()
                .parse::<i64>()
                .map(positive_pid)
                .map_err(|_| InfoError::InvalidPid {
                    value: value.clone(),
                })
        }
        None => Ok(None),
    }
}

fn positive_pid(pid: i64) -> Option<u32> {
    u32::try_from(pid).ok().filter(|pid| *pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Recorded from the test bed's containerd 1.6.20 (verbose `ContainerStatus` of
    /// the demo busybox container), with `config` and `runtimeSpec` trimmed.
    const CONTAINERD_RUNNING: &str = r#"{"sandboxID":"6c6d4be1b4c474bfc9c82194523e33915e898c5585ec4438a4117f260519d133","pid":22504,"removing":false,"snapshotKey":"5ab28d51fbd2223a4bef9226a388f5ab1bf8307c8c30f9994455e21c14677690","snapshotter":"overlayfs","runtimeType":"io.containerd.runc.v2","runtimeOptions":{"root":"/run/nsdebug-testbed/runc"},"config":{"metadata":{"name":"shell"},"image":{"image":"nsdebug.local/busybox:1"},"command":["sh","-c","trap 'exit 0' TERM; while true; do sleep 3600 & wait $!; done"]},"runtimeSpec":{"ociVersion":"1.0.2-dev","process":{"user":{"uid":0,"gid":0,"additionalGids":[0]},"args":["sh","-c","trap 'exit 0' TERM; while true; do sleep 3600 & wait $!; done"],"cwd":"/"},"linux":{"cgroupsPath":"/k8s.io/5ab28d51fbd2223a4bef9226a388f5ab1bf8307c8c30f9994455e21c14677690"}}}"#;

    /// The same container after `StopContainer` (recorded, trimmed): pid 0.
    const CONTAINERD_EXITED: &str = r#"{"sandboxID":"6c6d4be1b4c474bfc9c82194523e33915e898c5585ec4438a4117f260519d133","pid":0,"removing":false,"snapshotter":"overlayfs","runtimeType":"io.containerd.runc.v2"}"#;

    /// CRI-O's shape: its `containerInfo` struct (sandboxID, pid, runtimeSpec,
    /// privileged) marshalled under "info"; runtimeSpec trimmed.
    const CRIO_RUNNING: &str = r#"{"sandboxID":"e7d0c8b1f2a3","pid":7731,"runtimeSpec":{"ociVersion":"1.0.2-dev","process":{"user":{"uid":1000,"gid":1000},"args":["/hello"],"cwd":"/"},"linux":{"cgroupsPath":"kubepods-besteffort-pod1234.slice:crio:4f3e2d"}},"privileged":false}"#;

    #[test]
    fn containerd_running_container() {
        let pid = host_pid(&info(&[("info", CONTAINERD_RUNNING)])).unwrap();
        assert_eq!(pid, Some(22504));
    }

    #[test]
    fn containerd_exited_container_has_no_pid() {
        let pid = host_pid(&info(&[("info", CONTAINERD_EXITED)])).unwrap();
        assert_eq!(pid, None);
    }

    #[test]
    fn crio_running_container() {
        let pid = host_pid(&info(&[("info", CRIO_RUNNING)])).unwrap();
        assert_eq!(pid, Some(7731));
    }

    #[test]
    fn crio_before_1_20_flat_map() {
        let flat = info(&[("pid", "912"), ("sandboxId", "abc"), ("runtimeSpec", "{}")]);
        assert_eq!(host_pid(&flat).unwrap(), Some(912));
    }

    #[test]
    fn no_info_at_all() {
        assert_eq!(host_pid(&HashMap::new()).unwrap(), None);
    }

    #[test]
    fn malformed_info_is_an_error_not_a_panic() {
        let err = host_pid(&info(&[("info", "{not json")])).unwrap_err();
        assert!(matches!(err, InfoError::InvalidJson { .. }));
        let err = host_pid(&info(&[("pid", "twelve")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the runtime's verbose container info has a non-numeric pid 'twelve'"
        );
    }
}
