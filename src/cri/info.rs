//! Reading the host PID out of a runtime's verbose `ContainerStatus` answer.
//!
//! The CRI has no PID field: runtimes put it in the free-form `info` map that a
//! `ContainerStatus{verbose: true}` call returns. containerd and CRI-O both store
//! one JSON document under the key `"info"` whose top-level `"pid"` is the host PID
//! of the container's init process; CRI-O releases before 1.20 used a flat map with
//! `"pid"` as its own key. Every shape is parsed here and nowhere else.
//!
//! The same document carries `runtimeSpec`, the container's whole OCI spec
//! (containerd and CRI-O alike; a flat-map CRI-O has it as its own key), from
//! which [`runtime_spec`] keeps what an exec applies ([`crate::oci`]).

use std::collections::HashMap;

use serde::Deserialize;

use crate::oci::RuntimeSpec;

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

/// What the runtime says about the container's spec: the part of
/// `runtimeSpec` an exec applies, `NotReported` when there is none (cri-dockerd
/// reports no info at all). Read apart from the PID, so a spec that cannot be
/// understood never hides the process.
pub fn runtime_spec(info: &HashMap<String, String>) -> RuntimeSpec {
    #[derive(Deserialize)]
    struct WithSpec {
        #[serde(rename = "runtimeSpec", default)]
        runtime_spec: Option<serde_json::Value>,
    }
    let spec = match (info.get("info"), info.get("runtimeSpec")) {
        (Some(doc), _) => match serde_json::from_str::<WithSpec>(doc) {
            Ok(parsed) => parsed.runtime_spec,
            Err(err) => {
                return RuntimeSpec::Unreadable {
                    reason: format!(
                        "the runtime's verbose container info is not valid JSON: {err}"
                    ),
                };
            }
        },
        (None, Some(flat)) => match serde_json::from_str(flat) {
            Ok(spec) => Some(spec),
            Err(err) => {
                return RuntimeSpec::Unreadable {
                    reason: format!("the runtime's container spec is not valid JSON: {err}"),
                };
            }
        },
        (None, None) => None,
    };
    match spec {
        Some(spec) => RuntimeSpec::from_value(spec),
        None => RuntimeSpec::NotReported,
    }
}

/// A PID a process can have: positive and within `pid_t` (an `i32`), which
/// every kernel call taking it reads it as; a larger one would turn negative.
fn positive_pid(pid: i64) -> Option<u32> {
    i32::try_from(pid)
        .ok()
        .filter(|pid| *pid > 0)
        .map(i32::unsigned_abs)
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

    /// Recorded from the test bed's containerd 1.6.20: the verbose info of a
    /// busybox container with a Localhost seccomp profile, and of one with
    /// RuntimeDefault and no_new_privs (`config` and `runtimeSpec.mounts`
    /// removed; everything else as containerd wrote it).
    const CONTAINERD_LOCALHOST: &str =
        include_str!("testdata/containerd-1.6-localhost-seccomp.json");
    const CONTAINERD_RUNTIME_DEFAULT: &str =
        include_str!("testdata/containerd-1.6-runtime-default.json");

    fn reported(doc: &str) -> std::sync::Arc<crate::oci::ExecSpec> {
        match runtime_spec(&info(&[("info", doc)])) {
            RuntimeSpec::Reported(spec) => spec,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn containerd_spec_with_a_localhost_seccomp_profile() {
        assert!(
            host_pid(&info(&[("info", CONTAINERD_LOCALHOST)]))
                .unwrap()
                .is_some()
        );
        let spec = reported(CONTAINERD_LOCALHOST);
        assert_eq!((spec.user.uid(), spec.user.gid()), (0, 0));
        assert_eq!(spec.user.additional_gids().as_deref(), Some(&[0][..]));
        let caps = spec.capabilities.as_ref().unwrap();
        assert_eq!(
            crate::oci::capability_mask(&caps.bounding),
            0xa80425fb,
            "containerd's default set, as /proc/PID/status shows it"
        );
        assert!(!spec.no_new_privileges);
        assert!(spec.rlimits.is_empty() && spec.apparmor_profile.is_none());
        let seccomp = spec.seccomp.as_ref().unwrap();
        assert_eq!(
            seccomp.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActAllow
        );
        let groups = seccomp.syscalls().as_ref().unwrap();
        assert_eq!(groups[0].names(), &["mkdir", "mkdirat"]);
        assert_eq!(groups[0].errno_ret(), Some(1));
        let chmod_mode = groups[1].args().as_ref().unwrap()[0];
        assert_eq!((chmod_mode.index(), chmod_mode.value()), (1, 0o777));
    }

    #[test]
    fn containerd_spec_with_runtime_default() {
        let spec = reported(CONTAINERD_RUNTIME_DEFAULT);
        assert!(spec.no_new_privileges);
        let seccomp = spec.seccomp.as_ref().unwrap();
        assert_eq!(
            seccomp.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
        );
        assert_eq!(seccomp.architectures().as_ref().unwrap().len(), 3);
        let allowed = &seccomp.syscalls().as_ref().unwrap()[0];
        assert!(allowed.names().iter().any(|n| n == "capset"));
        assert!(!allowed.names().iter().any(|n| n == "unshare"));
    }

    #[test]
    fn no_runtime_spec_is_not_reported() {
        assert_eq!(
            runtime_spec(&info(&[("info", CONTAINERD_EXITED)])),
            RuntimeSpec::NotReported
        );
        assert_eq!(runtime_spec(&HashMap::new()), RuntimeSpec::NotReported);
        let flat = info(&[
            ("pid", "912"),
            (
                "runtimeSpec",
                r#"{"process":{"user":{"uid":5,"gid":5},"cwd":"/"}}"#,
            ),
        ]);
        assert!(matches!(runtime_spec(&flat), RuntimeSpec::Reported(spec) if spec.user.uid() == 5));
    }

    #[test]
    fn an_unreadable_spec_keeps_the_pid() {
        let doc = CONTAINERD_LOCALHOST.replace("SCMP_ACT_ERRNO", "SCMP_ACT_FROM_THE_FUTURE");
        assert!(host_pid(&info(&[("info", &doc)])).unwrap().is_some());
        let RuntimeSpec::Unreadable { reason } = runtime_spec(&info(&[("info", &doc)])) else {
            panic!("readable")
        };
        assert!(reason.contains("SCMP_ACT_FROM_THE_FUTURE"), "{reason}");
    }

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

    /// Found by the `cri_info` fuzz target: a PID past `i32::MAX` was taken,
    /// and turns negative as the `pid_t` the kernel calls take.
    #[test]
    fn a_pid_the_kernel_cannot_have_is_no_process() {
        assert_eq!(host_pid(&info(&[("pid", " 4242336422 ")])).unwrap(), None);
        assert_eq!(
            host_pid(&info(&[("info", r#"{"pid":2147483648}"#)])).unwrap(),
            None
        );
        assert_eq!(
            host_pid(&info(&[("info", r#"{"pid":2147483647}"#)])).unwrap(),
            Some(2147483647)
        );
    }
}
