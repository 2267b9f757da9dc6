//! What the host's `/proc` says about a container's process.
//!
//! A PID from the runtime is only a number: by the time it is used the process may
//! have exited and the number been handed to someone else. This module pins a PID
//! to one process (its start time, `proc(5)` `stat` field 22, never changes and is
//! never reused together with the PID) and reads the namespace identities that
//! tell containers apart. The `/proc` root is configurable (`--proc-root`) for
//! DaemonSets that mount the host's `/proc` elsewhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use procfs::process::Process;
use serde::Serialize;

/// Namespace kinds reported for a process, as named in `/proc/PID/ns/`.
pub const NAMESPACE_KINDS: &[&str] = &["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"];

/// A failed read of `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {pid} does not exist under '{root}'")]
    Gone { pid: u32, root: PathBuf },
    #[error("failed to read {what} of process {pid} under '{root}'")]
    Read {
        pid: u32,
        what: &'static str,
        root: PathBuf,
        #[source]
        source: procfs::ProcError,
    },
}

/// One process, pinned: a PID and the start time it had when it was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    /// Start time in clock ticks after boot (`proc(5)` stat field 22).
    pub start_time: u64,
}

/// Inode numbers of a process's namespaces (`/proc/PID/ns/*`), by kind.
pub type NamespaceIds = BTreeMap<String, u64>;

/// The host's `/proc`.
#[derive(Debug, Clone)]
pub struct ProcRoot {
    root: PathBuf,
}

impl ProcRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    fn process(&self, pid: u32) -> Result<Process, ProcError> {
        let dir = self.root.join(pid.to_string());
        Process::new_with_root(dir).map_err(|source| self.error(pid, "directory", source))
    }

    fn error(&self, pid: u32, what: &'static str, source: procfs::ProcError) -> ProcError {
        match source {
            procfs::ProcError::NotFound(_) => ProcError::Gone {
                pid,
                root: self.root.clone(),
            },
            source => ProcError::Read {
                pid,
                what,
                root: self.root.clone(),
                source,
            },
        }
    }

    /// The identity of the process that has `pid` now.
    pub fn identity(&self, pid: u32) -> Result<ProcessIdentity, ProcError> {
        let stat = self
            .process(pid)?
            .stat()
            .map_err(|source| self.error(pid, "stat", source))?;
        Ok(ProcessIdentity {
            pid,
            start_time: stat.starttime,
        })
    }

    /// True when `identity` still names a live process: the PID exists and has
    /// the same start time.
    pub fn is_alive(&self, identity: ProcessIdentity) -> bool {
        matches!(self.identity(identity.pid), Ok(now) if now == identity)
    }

    /// True when any of the process's cgroup paths mentions `container_id`, as the
    /// cgroups runc, crun and every CRI runtime create do (`/k8s.io/<id>`,
    /// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `.../pod<uid>/<id>`).
    pub fn cgroup_mentions(&self, pid: u32, container_id: &str) -> Result<bool, ProcError> {
        let groups = self
            .process(pid)?
            .cgroups()
            .map_err(|source| self.error(pid, "cgroup", source))?;
        Ok(groups
            .0
            .iter()
            .any(|group| group.pathname.contains(container_id)))
    }

    /// Inode numbers of the namespaces of `pid`.
    pub fn namespaces(&self, pid: u32) -> Result<NamespaceIds, ProcError> {
        let namespaces = self
            .process(pid)?
            .namespaces()
            .map_err(|source| self.error(pid, "namespaces", source))?;
        Ok(namespaces
            .0
            .into_iter()
            .filter_map(|(kind, ns)| {
                let kind = kind.to_str()?;
                NAMESPACE_KINDS
                    .contains(&kind)
                    .then(|| (kind.to_string(), ns.identifier))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_pid() -> u32 {
        std::process::id()
    }

    #[test]
    fn own_process_is_alive_and_pinned() {
        let proc_root = ProcRoot::new("/proc");
        let me = proc_root.identity(own_pid()).unwrap();
        assert!(proc_root.is_alive(me));
        let impostor = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!proc_root.is_alive(impostor));
    }

    #[test]
    fn namespaces_match_readlink() {
        let ids = ProcRoot::new("/proc").namespaces(own_pid()).unwrap();
        let link = std::fs::read_link("/proc/self/ns/net").unwrap();
        let expected = format!("net:[{}]", ids["net"]);
        assert_eq!(link.to_str().unwrap(), expected);
        assert!(ids.contains_key("mnt") && ids.contains_key("pid"));
    }

    #[test]
    fn missing_process_is_gone() {
        let empty = tempfile::tempdir().unwrap();
        let err = ProcRoot::new(empty.path()).identity(1).unwrap_err();
        assert!(matches!(err, ProcError::Gone { pid: 1, .. }), "{err:?}");
    }

    #[test]
    fn cgroup_check_reads_a_proc_root_elsewhere() {
        // A fake proc root, as a DaemonSet mount or a test would lay it out.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("4242");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("cgroup"),
            "0::/kubepods/besteffort/pod1/cri-containerd-abc123.scope\n",
        )
        .unwrap();
        let proc_root = ProcRoot::new(root.path());
        assert!(proc_root.cgroup_mentions(4242, "abc123").unwrap());
        assert!(!proc_root.cgroup_mentions(4242, "def456").unwrap());
    }
}
