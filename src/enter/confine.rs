//! What the `container` profile applies to a command, decided and prepared in
//! the helper before `fork`: the credentials, rlimits, seccomp filter and LSM
//! label `runc exec` would give it (what `kubectl exec` gets), never more.
//!
//! The runtime's spec of the container ([`RuntimeSpec`]) is the source, as
//! it is runc's. When the runtime reports none (cri-dockerd), the container's
//! init process is: its credentials (`/proc/PID/status`), rlimits
//! (`/proc/PID/limits`) and LSM labels (`/proc/PID/attr`). A seccomp filter
//! cannot be read back from a process in a form that can be reproduced here,
//! so a process under one (`Seccomp: 2`) refuses the profile, as does a spec
//! that cannot be understood or a filter that cannot be compiled.

use std::path::Path;

use oci_spec::runtime::PosixRlimitType;
use procfs::process::{Limit, LimitValue};
use rustix::process::{Resource, Rlimit};

use super::lsm;
use super::seccomp::{self, Program, SeccompError};
use crate::oci::{ExecSpec, RuntimeSpec, capability_mask};
use crate::process::{Credentials, ProcRoot, StatusError};

/// Why the profile cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// The profile cannot reproduce the container's confinement (a refusal).
    #[error(
        "the runtime reports no spec for this container and its process {pid} runs under a seccomp filter (Seccomp: 2 in /proc/{pid}/status), which nsdebug cannot reproduce"
    )]
    UnknownFilter { pid: u32 },
    #[error("{reason}")]
    UnreadableSpec { reason: String },
    #[error("the container's seccomp profile cannot be compiled")]
    Seccomp(#[source] SeccompError),
    /// Reading the target failed (a setup error, not a refusal).
    #[error("failed to read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the process's {what}")]
    Status {
        what: &'static str,
        #[source]
        source: crate::process::StatusFieldError,
    },
    #[error("failed to read the resource limits of process {pid}")]
    Limits {
        pid: u32,
        #[source]
        source: procfs::ProcError,
    },
    #[error("failed to open the host's /proc for the LSM label")]
    ProcDir(#[source] std::io::Error),
}

impl ConfineError {
    /// True when the container's confinement cannot be reproduced, as opposed
    /// to a failure to read what it is.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::UnknownFilter { .. } | Self::UnreadableSpec { .. } | Self::Seccomp(_)
        )
    }
}

/// Everything the command takes on, ready for the child.
pub struct Confinement {
    pub credentials: Credentials,
    pub rlimits: Vec<(Resource, Rlimit)>,
    pub seccomp: Option<Program>,
    pub lsm: lsm::Plan,
}

/// Where the host's pseudo-filesystems are (tests point them elsewhere).
pub struct HostPaths<'a> {
    pub proc: &'a Path,
    pub sys: &'a Path,
}

impl Confinement {
    /// Prepares the profile for the container whose init process is `pid`.
    pub fn prepare(
        spec: &RuntimeSpec,
        pid: u32,
        host: &HostPaths<'_>,
    ) -> Result<Self, ConfineError> {
        let dir = host.proc.join(pid.to_string());
        let status = ProcRoot::new(host.proc)
            .status(pid)
            .map_err(|err| match err {
                StatusError::Read { path, source } => ConfineError::Read {
                    path: path.display().to_string(),
                    source,
                },
                StatusError::Parse { source, .. } => ConfineError::Status {
                    what: "credentials",
                    source,
                },
            })?;
        let from_status = status.credentials;
        let limits = procfs::process::Process::new_with_root(dir.clone())
            .and_then(|p| p.limits())
            .map_err(|source| ConfineError::Limits { pid, source })?;
        let inherited = limits_of(&limits);
        let (credentials, rlimits, seccomp, labels) = match spec {
            RuntimeSpec::Unreadable { reason } => {
                return Err(ConfineError::UnreadableSpec {
                    reason: reason.clone(),
                });
            }
            RuntimeSpec::NotReported => {
                if status.seccomp_mode == Some(2) {
                    return Err(ConfineError::UnknownFilter { pid });
                }
                (
                    from_status,
                    inherited,
                    None,
                    lsm::labels_of_process(host.sys, &dir),
                )
            }
            RuntimeSpec::Reported(spec) => {
                let seccomp = spec
                    .seccomp
                    .as_ref()
                    .map(seccomp::compile)
                    .transpose()
                    .map_err(ConfineError::Seccomp)?;
                let labels = lsm::Labels {
                    apparmor_profile: spec.apparmor_profile.clone(),
                    selinux_label: spec.selinux_label.clone(),
                };
                (
                    credentials_of(spec, &from_status),
                    with_spec_limits(inherited, spec),
                    seccomp,
                    labels,
                )
            }
        };
        let lsm = lsm::Plan::new(lsm::decide(host.sys, &labels), host.proc)
            .map_err(ConfineError::ProcDir)?;
        Ok(Self {
            credentials,
            rlimits,
            seccomp,
            lsm,
        })
    }
}

/// The credentials runc gives an exec: the spec's user and capability sets
/// and its `noNewPrivileges`. Without capabilities in the spec runc leaves its
/// own (all of root's); the container's process's sets are used instead,
/// which are never more.
fn credentials_of(spec: &ExecSpec, status: &Credentials) -> Credentials {
    let caps = spec.capabilities.as_ref();
    let set = |pick: fn(&crate::oci::CapabilityNames) -> &Vec<String>, fallback: u64| {
        caps.map(|c| capability_mask(pick(c))).unwrap_or(fallback)
    };
    Credentials {
        uid: spec.user.uid(),
        gid: spec.user.gid(),
        groups: spec.user.additional_gids().clone().unwrap_or_default(),
        inheritable: set(|c| &c.inheritable, status.inheritable),
        permitted: set(|c| &c.permitted, status.permitted),
        effective: set(|c| &c.effective, status.effective),
        bounding: set(|c| &c.bounding, status.bounding),
        ambient: set(|c| &c.ambient, status.ambient),
        no_new_privs: spec.no_new_privileges,
    }
}

/// Every resource limit of the container's process, the ones an exec inherits
/// where the spec names none (runc's exec inherits them from the same shim).
fn limits_of(limits: &procfs::process::Limits) -> Vec<(Resource, Rlimit)> {
    let value = |v: &LimitValue| match v {
        LimitValue::Unlimited => None,
        LimitValue::Value(n) => Some(*n),
    };
    let limit = |l: &Limit| Rlimit {
        current: value(&l.soft_limit),
        maximum: value(&l.hard_limit),
    };
    vec![
        (Resource::Cpu, limit(&limits.max_cpu_time)),
        (Resource::Fsize, limit(&limits.max_file_size)),
        (Resource::Data, limit(&limits.max_data_size)),
        (Resource::Stack, limit(&limits.max_stack_size)),
        (Resource::Core, limit(&limits.max_core_file_size)),
        (Resource::Rss, limit(&limits.max_resident_set)),
        (Resource::Nproc, limit(&limits.max_processes)),
        (Resource::Nofile, limit(&limits.max_open_files)),
        (Resource::Memlock, limit(&limits.max_locked_memory)),
        (Resource::As, limit(&limits.max_address_space)),
        (Resource::Locks, limit(&limits.max_file_locks)),
        (Resource::Sigpending, limit(&limits.max_pending_signals)),
        (Resource::Msgqueue, limit(&limits.max_msgqueue_size)),
        (Resource::Nice, limit(&limits.max_nice_priority)),
        (Resource::Rtprio, limit(&limits.max_realtime_priority)),
        (Resource::Rttime, limit(&limits.max_realtime_timeout)),
    ]
}

/// `inherited` with the spec's `process.rlimits` in place of the same resources.
fn with_spec_limits(
    mut inherited: Vec<(Resource, Rlimit)>,
    spec: &ExecSpec,
) -> Vec<(Resource, Rlimit)> {
    let value = |n: u64| (n != u64::MAX).then_some(n);
    for limit in &spec.rlimits {
        let resource = resource_of(limit.typ());
        let wanted = Rlimit {
            current: value(limit.soft()),
            maximum: value(limit.hard()),
        };
        match inherited.iter_mut().find(|(r, _)| *r == resource) {
            Some(entry) => entry.1 = wanted,
            None => inherited.push((resource, wanted)),
        }
    }
    inherited
}

fn resource_of(kind: PosixRlimitType) -> Resource {
    use PosixRlimitType as T;
    match kind {
        T::RlimitCpu => Resource::Cpu,
        T::RlimitFsize => Resource::Fsize,
        T::RlimitData => Resource::Data,
        T::RlimitStack => Resource::Stack,
        T::RlimitCore => Resource::Core,
        T::RlimitRss => Resource::Rss,
        T::RlimitNproc => Resource::Nproc,
        T::RlimitNofile => Resource::Nofile,
        T::RlimitMemlock => Resource::Memlock,
        T::RlimitAs => Resource::As,
        T::RlimitLocks => Resource::Locks,
        T::RlimitSigpending => Resource::Sigpending,
        T::RlimitMsgqueue => Resource::Msgqueue,
        T::RlimitNice => Resource::Nice,
        T::RlimitRtprio => Resource::Rtprio,
        T::RlimitRttime => Resource::Rttime,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> RuntimeSpec {
        RuntimeSpec::from_value(value)
    }

    /// A fake `/proc/4242` with `status` and `limits` (as `proc(5)` prints
    /// them), and an empty sysfs (no LSM).
    fn fake_host(status: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("proc/4242");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(root.path().join("sys")).unwrap();
        std::fs::write(dir.join("status"), status).unwrap();
        std::fs::write(
            dir.join("limits"),
            "Limit                     Soft Limit           Hard Limit           Units     \n\
             Max cpu time              unlimited            unlimited            seconds   \n\
             Max file size             unlimited            unlimited            bytes     \n\
             Max data size             unlimited            unlimited            bytes     \n\
             Max stack size            8388608              unlimited            bytes     \n\
             Max core file size        0                    unlimited            bytes     \n\
             Max resident set          unlimited            unlimited            bytes     \n\
             Max processes             63414                63414                processes \n\
             Max open files            1024                 524288               files     \n\
             Max locked memory         8388608              8388608              bytes     \n\
             Max address space         unlimited            unlimited            bytes     \n\
             Max file locks            unlimited            unlimited            locks     \n\
             Max pending signals       63414                63414                signals   \n\
             Max msgqueue size         819200               819200               bytes     \n\
             Max nice priority         0                    0                    \n\
             Max realtime priority     0                    0                    \n\
             Max realtime timeout      unlimited            unlimited            us        \n",
        )
        .unwrap();
        root
    }

    const STATUS: &str = "Name:\tsh\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t0 10 \nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t2\n";

    fn prepare(spec: &RuntimeSpec, host: &tempfile::TempDir) -> Result<Confinement, ConfineError> {
        let proc = host.path().join("proc");
        let sys = host.path().join("sys");
        Confinement::prepare(
            spec,
            4242,
            &HostPaths {
                proc: &proc,
                sys: &sys,
            },
        )
    }

    #[test]
    fn no_spec_and_a_filter_is_refused() {
        let host = fake_host(STATUS);
        let err = prepare(&RuntimeSpec::NotReported, &host).err().unwrap();
        assert!(err.is_refusal());
        assert!(err.to_string().contains("Seccomp: 2"), "{err}");
        let host = fake_host(&STATUS.replace("Seccomp:\t2", "Seccomp:\t0"));
        let ok = prepare(&RuntimeSpec::NotReported, &host).unwrap();
        assert_eq!(ok.credentials.effective, 0xa80425fb);
        assert!(ok.seccomp.is_none());
        let nofile = ok
            .rlimits
            .iter()
            .find(|(r, _)| *r == Resource::Nofile)
            .unwrap();
        assert_eq!(
            (nofile.1.current, nofile.1.maximum),
            (Some(1024), Some(524288))
        );
    }

    #[test]
    fn the_spec_decides_user_capabilities_rlimits_and_filter() {
        let host = fake_host(STATUS);
        let spec = spec(json!({
            "process": {
                "user": {"uid": 1000, "gid": 3000, "additionalGids": [3000, 4000]},
                "cwd": "/",
                "noNewPrivileges": true,
                "capabilities": {"bounding": ["CAP_NET_RAW", "CAP_CHOWN"], "effective": ["CAP_CHOWN"],
                                  "permitted": ["CAP_CHOWN"]},
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 333, "hard": 444},
                            {"type": "RLIMIT_CORE", "soft": 18446744073709551615u64, "hard": 18446744073709551615u64}]
            },
            "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                                   "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}}
        }));
        let prepared = prepare(&spec, &host).unwrap();
        let creds = &prepared.credentials;
        assert_eq!(
            (creds.uid, creds.gid, creds.groups.clone()),
            (1000, 3000, vec![3000, 4000])
        );
        assert_eq!(
            (creds.bounding, creds.effective, creds.inheritable),
            ((1 << 13) | 1, 1, 0)
        );
        assert!(creds.no_new_privs);
        let limit = |res| prepared.rlimits.iter().find(|(r, _)| *r == res).unwrap().1;
        assert_eq!(limit(Resource::Nofile).current, Some(333));
        assert_eq!(limit(Resource::Nofile).maximum, Some(444));
        assert_eq!(limit(Resource::Core).current, None, "RLIM_INFINITY");
        assert_eq!(limit(Resource::Stack).current, Some(8388608), "inherited");
        assert!(prepared.seccomp.is_some());
    }

    #[test]
    fn an_unreadable_spec_or_filter_is_refused() {
        let host = fake_host(STATUS);
        let unreadable = RuntimeSpec::Unreadable {
            reason: "bad".into(),
        };
        assert!(prepare(&unreadable, &host).err().unwrap().is_refusal());
        let notify = spec(json!({
            "process": {"user": {"uid": 0, "gid": 0}, "cwd": "/"},
            "linux": {"seccomp": {"defaultAction": "SCMP_ACT_NOTIFY"}}
        }));
        let err = prepare(&notify, &host).err().unwrap();
        assert!(err.is_refusal());
        assert!(
            crate::error_chain(&err).contains("SCMP_ACT_NOTIFY"),
            "{err}"
        );
    }
}
