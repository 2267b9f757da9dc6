//! What a container's OCI runtime spec says about the processes it runs.
//!
//! `kubectl exec` ends in `runc exec` (or crun's), which starts the command
//! with the container's `process` settings (user, capabilities,
//! `noNewPrivileges`, rlimits, AppArmor profile, SELinux label) under the
//! container's `linux.seccomp` filter. containerd and CRI-O report the whole
//! spec as `runtimeSpec` in the verbose `ContainerStatus` info; this module
//! keeps the part an exec applies, as an [`ExecSpec`], so the `container`
//! profile can apply exactly that.
//!
//! The seccomp, user and rlimit types are the `oci-spec` crate's (youki's):
//! an action, architecture, operator or flag it does not know makes the spec
//! unreadable, which refuses the `container` profile rather than running
//! without the filter. Capability lists are kept as plain names instead: a
//! name this build does not know is one nsdebug does not grant, which only
//! ever gives the command less than the container has.

use std::sync::Arc;

use oci_spec::runtime::{LinuxSeccomp, PosixRlimit, User};
use serde::{Deserialize, Serialize};

/// The settings `runc exec` applies to a process it starts in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecSpec {
    /// uid, gid and supplementary groups, as IDs of the container's user namespace.
    pub user: User,
    /// `None` when the spec has no `capabilities` (runc then leaves them alone).
    pub capabilities: Option<CapabilityNames>,
    pub no_new_privileges: bool,
    pub rlimits: Vec<PosixRlimit>,
    /// An AppArmor profile name; empty or absent means none.
    pub apparmor_profile: Option<String>,
    /// An SELinux process label; empty or absent means none.
    pub selinux_label: Option<String>,
    /// `linux.seccomp`; `None` when the container runs without a filter.
    pub seccomp: Option<LinuxSeccomp>,
    /// `process.env` (`NAME=value`): the environment an exec starts with,
    /// the container's spec and not its init's live one.
    #[serde(default)]
    pub env: Vec<String>,
    /// `linux.maskedPaths`: what the container's `/proc` and `/sys` hide
    /// (the toolbox mounts procfs and sysfs of its own and hides the same).
    #[serde(default)]
    pub masked_paths: Vec<String>,
    /// `linux.readonlyPaths`: what they show read-only (`/proc/sys`, ...).
    #[serde(default)]
    pub readonly_paths: Vec<String>,
}

/// The capability sets of `process.capabilities`, as names (`CAP_NET_RAW`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityNames {
    #[serde(default)]
    pub bounding: Vec<String>,
    #[serde(default)]
    pub effective: Vec<String>,
    #[serde(default)]
    pub inheritable: Vec<String>,
    #[serde(default)]
    pub permitted: Vec<String>,
    #[serde(default)]
    pub ambient: Vec<String>,
}

/// What the runtime reported about a container's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuntimeSpec {
    Reported(Arc<ExecSpec>),
    /// The runtime reports no spec at all (cri-dockerd, for one).
    #[default]
    NotReported,
    /// The runtime reported a spec that cannot be understood: `reason` says why.
    Unreadable {
        reason: String,
    },
}

/// The parts of `runtimeSpec` that are read; every other field is ignored.
#[derive(Deserialize)]
struct SpecParts {
    process: Option<ProcessParts>,
    #[serde(default)]
    linux: Option<LinuxParts>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProcessParts {
    user: User,
    #[serde(default)]
    capabilities: Option<CapabilityNames>,
    #[serde(default)]
    no_new_privileges: Option<bool>,
    #[serde(default)]
    rlimits: Option<Vec<PosixRlimit>>,
    #[serde(default)]
    apparmor_profile: Option<String>,
    #[serde(default)]
    selinux_label: Option<String>,
    #[serde(default)]
    env: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinuxParts {
    #[serde(default)]
    seccomp: Option<LinuxSeccomp>,
    #[serde(default)]
    masked_paths: Option<Vec<String>>,
    #[serde(default)]
    readonly_paths: Option<Vec<String>>,
}

impl RuntimeSpec {
    /// Reads an OCI runtime spec (`config.json`'s document, as JSON).
    pub fn from_value(spec: serde_json::Value) -> Self {
        let parts: SpecParts = match serde_json::from_value(spec) {
            Ok(parts) => parts,
            Err(err) => {
                return Self::Unreadable {
                    reason: format!("the runtime's spec of the container cannot be read: {err}"),
                };
            }
        };
        let Some(process) = parts.process else {
            return Self::Unreadable {
                reason: "the runtime's spec of the container has no process section".into(),
            };
        };
        let linux = parts.linux.unwrap_or(LinuxParts {
            seccomp: None,
            masked_paths: None,
            readonly_paths: None,
        });
        Self::Reported(Arc::new(ExecSpec {
            user: process.user,
            capabilities: process.capabilities,
            no_new_privileges: process.no_new_privileges.unwrap_or(false),
            rlimits: process.rlimits.unwrap_or_default(),
            apparmor_profile: process.apparmor_profile.filter(|p| !p.is_empty()),
            selinux_label: process.selinux_label.filter(|l| !l.is_empty()),
            env: process.env.unwrap_or_default(),
            masked_paths: linux.masked_paths.unwrap_or_default(),
            readonly_paths: linux.readonly_paths.unwrap_or_default(),
            seccomp: linux.seccomp,
        }))
    }
}

/// Capability names by bit number (`capabilities(7)`, `linux/capability.h`).
const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capability set (a bit mask, as in `/proc/PID/status`) of `names`
/// (`CAP_SYS_ADMIN` or `SYS_ADMIN`, any case). Names not known here are left
/// out: a capability that is not granted.
pub fn capability_mask(names: &[String]) -> u64 {
    names
        .iter()
        .filter_map(|name| {
            let upper = name.to_ascii_uppercase();
            let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
            CAPABILITIES.iter().position(|known| *known == bare)
        })
        .fold(0, |mask, bit| mask | (1u64 << bit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn capability_names_to_bits() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(capability_mask(&names(&["CAP_CHOWN"])), 1);
        assert_eq!(
            capability_mask(&names(&["CAP_NET_RAW", "sys_admin", "CAP_NOT_YET"])),
            (1 << 13) | (1 << 21)
        );
        assert_eq!(
            capability_mask(&names(&["CAP_CHECKPOINT_RESTORE"])),
            1 << 40
        );
        assert_eq!(capability_mask(&[]), 0);
    }

    #[test]
    fn spec_without_seccomp_or_capabilities() {
        let spec = RuntimeSpec::from_value(json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 7, "gid": 8}, "cwd": "/", "apparmorProfile": ""},
            "root": {"path": "rootfs"}
        }));
        let RuntimeSpec::Reported(spec) = spec else {
            panic!("{spec:?}")
        };
        assert_eq!((spec.user.uid(), spec.user.gid()), (7, 8));
        assert_eq!(spec.capabilities, None);
        assert_eq!(spec.apparmor_profile, None, "empty means none");
        assert!(spec.seccomp.is_none() && spec.rlimits.is_empty());
        assert!(!spec.no_new_privileges);
    }

    #[test]
    fn unknown_values_make_the_spec_unreadable_with_the_reason() {
        let spec = RuntimeSpec::from_value(json!({
            "process": {"user": {"uid": 0, "gid": 0}, "cwd": "/"},
            "linux": {"seccomp": {"defaultAction": "SCMP_ACT_SOMETHING_NEW"}}
        }));
        let RuntimeSpec::Unreadable { reason } = spec else {
            panic!("{spec:?}")
        };
        assert!(reason.contains("SCMP_ACT_SOMETHING_NEW"), "{reason}");
        let spec = RuntimeSpec::from_value(json!({"linux": {}}));
        assert_eq!(
            spec,
            RuntimeSpec::Unreadable {
                reason: "the runtime's spec of the container has no process section".into()
            }
        );
    }
}
