//! What the host's `/proc` says about a container's process.
//!
//! A PID from the runtime is only a number: by the time it is used the process may
//! have exited and the number been handed to someone else. This module pins a PID
//! to one process (its start time, `proc(5)` `stat` field 22, never changes and is
//! never reused together with the PID) and reads the namespace identities that
//! tell containers apart. The `/proc` root is configurable (`--proc-root`) for
//! DaemonSets that mount the host's `/proc` elsewhere.
//!
//! The facts that entering a container, resolving it and diagnosing it all
//! share live here, below those stages: a pidfd pinned to the container's
//! process ([`pin`]) and where its cgroups are ([`cgroup_dirs`]).

mod cgroup;
mod pin;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use procfs::process::Process;
use rustix::fs::OFlags;
use serde::Serialize;

pub use cgroup::{CgroupDir, CgroupError, cgroup_dirs};
pub use pin::{ContainerProcess, PinError, has_exited, pin};

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

    /// The directory of `pid` (`/proc/PID`).
    pub fn pid_dir(&self, pid: u32) -> PathBuf {
        self.root.join(pid.to_string())
    }

    fn process(&self, pid: u32) -> Result<Process, ProcError> {
        let dir = self.pid_dir(pid);
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
    /// Where this `/proc` is.
    pub fn path(&self) -> &Path {
        &self.root
    }

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

    /// The first of `candidates` (absolute paths inside the container) that is
    /// an executable file in the root filesystem of `pid`. Paths resolve inside
    /// that root (`openat2(2)` `RESOLVE_IN_ROOT`): an absolute symlink in the
    /// container never leads to the host's files.
    pub fn executable_in_root<'a>(&self, pid: u32, candidates: &[&'a str]) -> Option<&'a str> {
        use rustix::fs::{Mode, ResolveFlags, openat2};
        let root = rustix::fs::open(
            self.root.join(pid.to_string()).join("root"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        candidates.iter().copied().find(|path| {
            openat2(
                &root,
                *path,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT,
            )
            .and_then(|fd| rustix::fs::fstat(&fd))
            .is_ok_and(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
                    && st.st_mode & 0o111 != 0
            })
        })
    }

    /// The contents of the regular file at `path` (absolute, inside the
    /// container) in the root filesystem of `pid`, at most `limit` bytes (more
    /// is an error, not a silent cut). The path resolves inside that root
    /// (`openat2(2)` `RESOLVE_IN_ROOT`, and no magic links such as
    /// `/proc/self/root`), so a symlink in the container never leads to a host
    /// file. The container chooses what lies at `path`: it is first opened
    /// `O_PATH` (which opens nothing, `open(2)`), and only a regular file is
    /// then reopened for reading ([`reopen`], the very inode checked), so a
    /// FIFO planted there never blocks the agent and a device is never opened.
    pub fn read_in_root(&self, pid: u32, path: &str, limit: u64) -> std::io::Result<Vec<u8>> {
        use rustix::fs::{FileType, Mode, ResolveFlags, openat2};
        use std::io::Read;
        let root = rustix::fs::open(
            self.root.join(pid.to_string()).join("root"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let fd = openat2(
            &root,
            path,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{path} is not a regular file"),
            ));
        }
        let fd = reopen(&fd, OFlags::RDONLY)?;
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("larger than {limit} bytes"),
            ));
        }
        Ok(bytes)
    }

    /// What `/proc/PID/status` says about the rights of `pid`.
    pub fn status(&self, pid: u32) -> Result<ProcStatus, StatusError> {
        let path = self.pid_dir(pid).join("status");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(source) => return Err(StatusError::Read { path, source }),
        };
        ProcStatus::parse(&text).map_err(|source| StatusError::Parse { path, source })
    }

    /// The credentials of `pid`, from `/proc/PID/status`.
    pub fn credentials(&self, pid: u32) -> Result<Credentials, StatusError> {
        Ok(self.status(pid)?.credentials)
    }

    /// True when `a` and `b` are in the same `kind` namespace (`mnt`, `user`,
    /// ...: the same inode behind `/proc/PID/ns/KIND`, `namespaces(7)`). A
    /// kind neither process has (the kernel lacks it) counts as shared.
    pub fn same_namespace(&self, a: u32, b: u32, kind: &str) -> Result<bool, ProcError> {
        Ok(!self.differing_namespaces(a, b)?.contains(kind))
    }

    /// The kinds of [`NAMESPACE_KINDS`] whose namespace `a` and `b` do not
    /// share, from one read of each process's namespaces.
    pub fn differing_namespaces(
        &self,
        a: u32,
        b: u32,
    ) -> Result<BTreeSet<&'static str>, ProcError> {
        let (ours, theirs) = (self.namespaces(a)?, self.namespaces(b)?);
        Ok(NAMESPACE_KINDS
            .iter()
            .copied()
            .filter(|kind| ours.get(*kind) != theirs.get(*kind))
            .collect())
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

/// Opens the object an `O_PATH` descriptor refers to for real I/O, through
/// `/proc/self/fd` (`open(2)`, `O_PATH`): the very inode that was checked,
/// even if the name was replaced since, and only after its type was checked,
/// so a device or FIFO is never opened. Permissions are checked now, for the
/// thread's (the container user's) credentials.
/// The caller checks the type: this function cannot tell what it opens.
pub fn reopen(fd: impl AsFd, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let link = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    rustix::fs::open(
        link,
        flags | OFlags::CLOEXEC | OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )
}

/// The credentials of a process, from `/proc/PID/status` (`proc(5)`): what a
/// command entering with the `container` profile takes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Effective user and group IDs.
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
    pub no_new_privs: bool,
}

/// Why `/proc/PID/status` could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("/proc/PID/status has no valid '{field}' line")]
pub struct StatusFieldError {
    pub field: &'static str,
}

/// What `/proc/PID/status` (`proc(5)`) says about a process's rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStatus {
    pub credentials: Credentials,
    /// The `Seccomp:` mode (0 none, 1 strict, 2 filter), if the kernel reports one.
    pub seccomp_mode: Option<u8>,
}

impl ProcStatus {
    /// Parses the text of `/proc/PID/status`.
    pub fn parse(text: &str) -> Result<Self, StatusFieldError> {
        Ok(Self {
            credentials: Credentials::from_status(text)?,
            seccomp_mode: text
                .lines()
                .find_map(|l| l.strip_prefix("Seccomp:"))
                .and_then(|v| v.trim().parse().ok()),
        })
    }
}

/// Why a process's `/proc/PID/status` could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to understand {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: StatusFieldError,
    },
}

impl Credentials {
    /// Parses the text of `/proc/PID/status`.
    pub fn from_status(text: &str) -> Result<Self, StatusFieldError> {
        let line = |field: &'static str| {
            text.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .map(str::trim)
                .ok_or(StatusFieldError { field })
        };
        let nth_id = |field: &'static str, n: usize| -> Result<u32, StatusFieldError> {
            line(field)?
                .split_whitespace()
                .nth(n)
                .and_then(|v| v.parse().ok())
                .ok_or(StatusFieldError { field })
        };
        let caps = |field: &'static str| -> Result<u64, StatusFieldError> {
            u64::from_str_radix(line(field)?, 16).map_err(|_| StatusFieldError { field })
        };
        let groups = line("Groups")?
            .split_whitespace()
            .map(|g| g.parse().map_err(|_| StatusFieldError { field: "Groups" }))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            uid: nth_id("Uid", 1)?,
            gid: nth_id("Gid", 1)?,
            groups,
            inheritable: caps("CapInh")?,
            permitted: caps("CapPrm")?,
            effective: caps("CapEff")?,
            bounding: caps("CapBnd")?,
            // Kernels before 4.3 have no ambient set.
            ambient: caps("CapAmb").unwrap_or(0),
            no_new_privs: line("NoNewPrivs").map(|v| v == "1").unwrap_or(false),
        })
    }
}

/// `KEY=VALUE` pairs of a NUL-separated environment block (`/proc/PID/environ`).
pub fn parse_environ(block: &[u8]) -> Vec<(String, String)> {
    block
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (key, value) = entry.split_once('=')?;
            (!key.is_empty()).then(|| (key.to_string(), value.to_string()))
        })
        .collect()
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

    #[test]
    fn files_are_read_inside_the_container_root() {
        let proc = tempfile::tempdir().unwrap();
        let root = proc.path().join("7").join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/resolv.conf"), "nameserver 10.0.0.10\n").unwrap();
        std::fs::write(root.join("secret"), "the container's\n").unwrap();
        // An absolute symlink and a climb out both stay in the container.
        std::os::unix::fs::symlink("/secret", root.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("../../../../../../secret", root.join("etc/climb")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            root.join("etc/fifo"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        // A device node (/dev/null's numbers): never opened, only refused.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("etc/device"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        let proc_root = ProcRoot::new(proc.path());
        let read = |path: &str, limit| proc_root.read_in_root(7, path, limit);
        assert_eq!(
            read("/etc/resolv.conf", 100).unwrap(),
            b"nameserver 10.0.0.10\n"
        );
        assert_eq!(read("/etc/link", 100).unwrap(), b"the container's\n");
        assert_eq!(read("/etc/climb", 100).unwrap(), b"the container's\n");
        for special in ["/etc/fifo", "/etc/device"] {
            assert_eq!(
                read(special, 100).unwrap_err().kind(),
                std::io::ErrorKind::InvalidInput,
                "{special}"
            );
        }
        assert_eq!(
            read("/etc/resolv.conf", 5).unwrap_err().kind(),
            std::io::ErrorKind::FileTooLarge
        );
        assert_eq!(
            read("/etc/hosts", 100).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
    }

    /// A busybox container's status under containerd on the test bed, trimmed.
    const STATUS: &str = "Name:\tsh\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1001\t1001\t1001\nGid:\t2000\t2001\t2001\t2001\nGroups:\t10 20 \nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t0\n";

    #[test]
    fn credentials_from_status() {
        let creds = Credentials::from_status(STATUS).unwrap();
        assert_eq!((creds.uid, creds.gid), (1001, 2001));
        assert_eq!(creds.groups, vec![10, 20]);
        assert_eq!(creds.bounding, 0xa80425fb);
        assert_eq!(creds.inheritable, 0);
        assert!(creds.no_new_privs);
        let broken = STATUS.replace("CapBnd:\t00000000a80425fb", "CapBnd:\tzz");
        assert_eq!(
            Credentials::from_status(&broken).unwrap_err().to_string(),
            "/proc/PID/status has no valid 'CapBnd' line"
        );
    }

    #[test]
    fn own_credentials_parse() {
        let creds = ProcRoot::new("/proc").credentials(own_pid()).unwrap();
        assert_eq!(creds.uid, rustix::process::geteuid().as_raw());
    }

    #[test]
    fn status_reports_the_seccomp_mode_and_where_it_failed() {
        let status = ProcStatus::parse(STATUS).unwrap();
        assert_eq!(status.seccomp_mode, Some(0));
        let empty = tempfile::tempdir().unwrap();
        let err = ProcRoot::new(empty.path()).status(9).unwrap_err();
        assert!(
            matches!(&err, StatusError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("failed to read {}/9/status", empty.path().display())
        );
    }

    #[test]
    fn a_process_shares_its_own_namespaces() {
        let proc_root = ProcRoot::new("/proc");
        for kind in NAMESPACE_KINDS {
            assert!(
                proc_root
                    .same_namespace(own_pid(), own_pid(), kind)
                    .unwrap()
            );
        }
        assert!(
            proc_root
                .same_namespace(own_pid(), u32::MAX, "net")
                .is_err()
        );
    }

    #[test]
    fn environ_blocks() {
        let env = parse_environ(b"PATH=/bin\0HOME=/root\0EMPTY=\0=bad\0A=b=c\0");
        assert_eq!(
            env,
            vec![
                ("PATH".into(), "/bin".into()),
                ("HOME".into(), "/root".into()),
                ("EMPTY".into(), "".into()),
                ("A".into(), "b=c".into()),
            ]
        );
    }
}
