//! Files inside a container: download one, archive a directory as tar, upload
//! one.
//!
//! Every path is resolved inside the container's root directory as its init
//! process sees it: `/proc/PID/root`, which lies in the container's mount
//! namespace, so its volumes are there too. Paths go through `openat2(2)` with
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: `..` stops at the container's
//! `/`, absolute symlinks are taken relative to it and `/proc/*/root`-style
//! magic links are refused, so no path or link a container can make leads to
//! the host's files. Below that point the code only ever walks single names
//! from open directory descriptors, never following a symlink.
//!
//! The work runs as the container's user, as `kubectl cp` (which runs `tar`
//! through exec as that user) would: each request gets its own short-lived
//! thread that takes the effective uid, gid, supplementary groups and the
//! effective and permitted capability sets of the container's init process
//! (`/proc/PID/status`) before it touches a path. Credentials and
//! capabilities are per thread at the kernel level (`setresuid(2)`, NOTES;
//! `capset(2)`), so the change stays on that thread, which exits with the
//! request; no tokio or blocking-pool thread ever carries it. The kernel then
//! checks permissions for that user with the container's capabilities (a
//! uid-0 container that dropped `CAP_DAC_OVERRIDE` cannot read another
//! user's 0600 file, through this API either), and uploaded files are owned
//! by it. Uploads never set the setuid or setgid bit (the API refuses such a
//! mode). No `setns` is needed:
//! the root directory descriptor is all the container a path needs.

mod archive;
mod download;
mod upload;

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::process::{Credentials, ProcRoot, ProcessIdentity, StatusError, reopen};

pub use archive::ArchiveStats;
pub use download::{Download, FileInfo, Format, download};
pub use upload::{Written, upload};

/// Why a file operation in a container failed. Paths are as the container
/// sees them.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the container's process {pid} has exited")]
    TargetGone { pid: u32 },
    #[error("failed to open the root directory of process {pid}")]
    OpenRoot {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("failed to read the credentials of process {pid}")]
    Credentials {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("failed to take on uid {uid} and gid {gid} of the container")]
    BecomeUser {
        uid: u32,
        gid: u32,
        #[source]
        source: io::Error,
    },
    #[error("failed to take on the capability sets of the container")]
    BecomeCapabilities(#[source] io::Error),
    #[error("failed to start a thread for the file operation")]
    Thread(#[source] io::Error),
    #[error("invalid path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("{path}: no such file or directory in the container")]
    NotFound { path: String },
    #[error("{path}: the directory to write into does not exist in the container")]
    ParentNotFound { path: String },
    #[error("{path}: a component of the path is not a directory")]
    NotADirectory { path: String },
    #[error("{path} is a directory; add format=tar to download it as a tar archive")]
    IsDirectory { path: String },
    #[error("{path} is a directory; name the file to write")]
    WriteToDirectory { path: String },
    #[error("{path} is a {kind}, not a regular file")]
    NotRegularFile { path: String, kind: &'static str },
    #[error("{path}: permission denied to the container's user (uid {uid})")]
    PermissionDenied { path: String, uid: u32 },
    #[error(
        "{path}: too many levels of symbolic links, or a /proc magic link (those are not followed)"
    )]
    SymlinkLoop { path: String },
    #[error("{path} is a mount point in the container and cannot be replaced")]
    MountPoint { path: String },
    #[error("{path}: the container's file system is read-only")]
    ReadOnly { path: String },
    #[error("{path}: no space left on the container's file system")]
    NoSpace { path: String },
    #[error(
        "{path} is {size} bytes, more than this agent's limit of {limit} bytes (--max-file-bytes)"
    )]
    FileTooLarge { path: String, size: u64, limit: u64 },
    #[error(
        "the tar archive of {path} grew past this agent's limit of {limit} bytes (--max-file-bytes); the archive was cut off"
    )]
    ArchiveTooLarge { path: String, limit: u64 },
    #[error(
        "the upload to {path} is larger than this agent's limit of {limit} bytes (--max-file-bytes)"
    )]
    UploadTooLarge { path: String, limit: u64 },
    #[error("{path} has directories nested more than {limit} deep; archive a deeper directory")]
    TooDeep { path: String, limit: usize },
    #[error("{path} shrank from {expected} to {read} bytes while it was read")]
    Shrank {
        path: String,
        expected: u64,
        read: u64,
    },
    #[error("the upload to {path} ended before the request body was complete: {reason}")]
    UploadCut { path: String, reason: String },
    #[error("the client went away")]
    ClientGone,
    #[error("failed to {op} {path} in the container")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl FileError {
    /// The error of `op` on `path` for `errno`, named after what a user can
    /// do about it.
    fn from_errno(op: &'static str, path: &str, uid: u32, errno: Errno) -> Self {
        let path = path.to_string();
        match errno {
            Errno::NOENT => Self::NotFound { path },
            Errno::NOTDIR => Self::NotADirectory { path },
            Errno::ACCESS | Errno::PERM => Self::PermissionDenied { path, uid },
            Errno::LOOP => Self::SymlinkLoop { path },
            Errno::NAMETOOLONG => Self::BadPath {
                path,
                reason: "a name in it is too long",
            },
            Errno::BUSY => Self::MountPoint { path },
            Errno::ROFS => Self::ReadOnly { path },
            Errno::NOSPC | Errno::DQUOT => Self::NoSpace { path },
            errno => Self::Io {
                op,
                path,
                source: errno.into(),
            },
        }
    }
}

/// The user a container's files are read and written as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The effective and permitted capability sets (`CAP_*` bits).
    pub effective: u64,
    pub permitted: u64,
}

impl From<&Credentials> for FileUser {
    fn from(creds: &Credentials) -> Self {
        Self {
            uid: creds.uid,
            gid: creds.gid,
            groups: creds.groups.clone(),
            effective: creds.effective,
            permitted: creds.permitted,
        }
    }
}

/// A container's root file system, opened for one request.
pub(crate) struct ContainerFs {
    root: OwnedFd,
    user: FileUser,
}

impl ContainerFs {
    /// Opens the root directory of `process` and reads its credentials; the
    /// PID is checked to still be that process afterwards, so both belong to
    /// the pinned process, never to one that got its PID since.
    fn open(proc_root: &ProcRoot, process: ProcessIdentity) -> Result<Self, FileError> {
        let pid = process.pid;
        let dir = proc_root.pid_dir(pid);
        let gone = |errno: Errno| matches!(errno, Errno::NOENT | Errno::SRCH);
        let root = rustix::fs::open(
            dir.join("root"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| match errno {
            errno if gone(errno) => FileError::TargetGone { pid },
            errno => FileError::OpenRoot {
                pid,
                source: errno.into(),
            },
        })?;
        let creds = proc_root.credentials(pid).map_err(|err| match err {
            StatusError::Read { source, .. }
                if source
                    .raw_os_error()
                    .map(Errno::from_raw_os_error)
                    .is_some_and(gone) =>
            {
                FileError::TargetGone { pid }
            }
            StatusError::Read { source, .. } => FileError::Credentials { pid, source },
            StatusError::Parse { source, .. } => FileError::Credentials {
                pid,
                source: io::Error::new(io::ErrorKind::InvalidData, source),
            },
        })?;
        // Capabilities held in a user namespace of the container's own
        // (`hostUsers: false`) grant nothing over the node's files, where
        // this thread acts: its uid and gid (the host IDs the status file
        // shows) then decide alone.
        let own_user_namespace = !proc_root
            .same_namespace(pid, std::process::id(), "user")
            .unwrap_or(false);
        if !proc_root.is_alive(process) {
            return Err(FileError::TargetGone { pid });
        }
        let mut user = FileUser::from(&creds);
        if own_user_namespace {
            user.effective = 0;
            user.permitted = 0;
        }
        Ok(Self { root, user })
    }

    /// Takes on the container user's groups, gid, uid and capability sets
    /// on this thread (the calling thread only: see the module comment).
    /// Changing the effective uid alone is not enough: a uid-0 container
    /// would keep the agent's every capability, and a non-root uid loses its
    /// effective capabilities (`capabilities(7)`, "Effect of user ID
    /// changes") while a container may have some. So the thread's effective
    /// and permitted sets become the container's (never more than the
    /// agent's own), with no inheritable ones. An agent that is not root
    /// itself keeps its own credentials: it could not change them, and the
    /// kernel checks those.
    fn become_user(&self) -> Result<(), FileError> {
        use rustix::process::{Gid, Uid};
        use rustix::thread::{
            CapabilitySet, CapabilitySets, capabilities, set_capabilities, set_thread_groups,
            set_thread_res_gid, set_thread_res_uid,
        };
        if !rustix::process::geteuid().is_root() {
            return Ok(());
        }
        let FileUser {
            uid,
            gid,
            groups,
            effective,
            permitted,
        } = &self.user;
        let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        set_thread_groups(&groups)
            .and_then(|()| set_thread_res_gid(None, Gid::from_raw(*gid), None))
            .and_then(|()| set_thread_res_uid(None, Uid::from_raw(*uid), None))
            .map_err(|errno| FileError::BecomeUser {
                uid: *uid,
                gid: *gid,
                source: errno.into(),
            })?;
        // The saved uid is still 0, so the agent's permitted set survived the
        // uid change and bounds what this thread can take on.
        let own = capabilities(None).map_err(|e| FileError::BecomeCapabilities(e.into()))?;
        let permitted = CapabilitySet::from_bits_retain(*permitted) & own.permitted;
        let effective = CapabilitySet::from_bits_retain(*effective) & permitted;
        set_capabilities(
            None,
            CapabilitySets {
                effective,
                permitted,
                inheritable: CapabilitySet::empty(),
            },
        )
        .map_err(|e| FileError::BecomeCapabilities(e.into()))
    }

    /// `path` opened with `flags`, resolved inside the container's root.
    fn resolve(&self, path: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
        // openat2(2) refuses any flag O_PATH ignores, O_NOCTTY included.
        let flags = if flags.contains(OFlags::PATH) {
            flags
        } else {
            flags | OFlags::NOCTTY
        };
        rustix::fs::openat2(
            &self.root,
            path,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    fn error(&self, op: &'static str, path: &str, errno: Errno) -> FileError {
        FileError::from_errno(op, path, self.user.uid, errno)
    }
}

/// A path the caller gave, checked: not empty, no NUL. A relative path is
/// taken relative to the container's `/`. Returns it as it is shown in
/// messages (absolute).
fn checked_path(path: &str) -> Result<String, FileError> {
    if path.is_empty() {
        return Err(FileError::BadPath {
            path: path.into(),
            reason: "name a file or directory in the container, e.g. path=/etc/os-release",
        });
    }
    if path.contains('\0') {
        return Err(FileError::BadPath {
            path: path.into(),
            reason: "it contains a NUL byte",
        });
    }
    Ok(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    })
}

/// The last name of `path` after `.` and `..` are applied, as a download is
/// named; `None` for the root.
fn base_name(path: &str) -> Option<&str> {
    let mut names: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                names.pop();
            }
            name => names.push(name),
        }
    }
    names.pop()
}

/// The kind of a file, for messages.
fn kind_name(file_type: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType;
    match file_type {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown type",
    }
}

/// Runs `work` on a new thread acting as the container's user (see the
/// module comment), with the container's file system or why it could not be
/// opened.
fn spawn_worker<F>(proc_root: ProcRoot, process: ProcessIdentity, work: F) -> Result<(), FileError>
where
    F: FnOnce(Result<ContainerFs, FileError>) + Send + 'static,
{
    std::thread::Builder::new()
        .name("nsdebug-files".into())
        .spawn(move || {
            let fs = ContainerFs::open(&proc_root, process).and_then(|fs| {
                fs.become_user()?;
                Ok(fs)
            });
            work(fs)
        })
        .map(drop)
        .map_err(FileError::Thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(checked_path("etc/hosts").unwrap(), "/etc/hosts");
        assert_eq!(checked_path("/etc/hosts").unwrap(), "/etc/hosts");
        assert!(matches!(checked_path(""), Err(FileError::BadPath { .. })));
        assert!(matches!(
            checked_path("a\0b"),
            Err(FileError::BadPath { .. })
        ));
        assert_eq!(base_name("/etc/nginx/"), Some("nginx"));
        assert_eq!(base_name("/etc/./nginx/.."), Some("etc"));
        assert_eq!(base_name("/../../etc/shadow"), Some("shadow"));
        assert_eq!(base_name("/"), None);
        assert_eq!(base_name("/tmp/.."), None);
    }

    #[test]
    fn errno_names_the_problem() {
        let err = FileError::from_errno("open", "/x", 1000, Errno::ACCESS);
        assert_eq!(
            err.to_string(),
            "/x: permission denied to the container's user (uid 1000)"
        );
        assert!(matches!(
            FileError::from_errno("open", "/x", 0, Errno::NOENT),
            FileError::NotFound { .. }
        ));
        let other = FileError::from_errno("read", "/x", 0, Errno::IO);
        assert_eq!(other.to_string(), "failed to read /x in the container");
    }

    /// The root of this very process, opened the way a container's is: `..`
    /// and absolute symlinks stay inside it.
    #[test]
    fn resolution_stays_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hostname"), "inside\n").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/hostname", dir.path().join("up")).unwrap();
        let root = rustix::fs::open(
            dir.path(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let fs = ContainerFs {
            root,
            user: FileUser {
                uid: 0,
                gid: 0,
                groups: vec![],
                effective: 0,
                permitted: 0,
            },
        };
        for path in ["/etc/hostname", "/abs", "up", "/../../etc/hostname"] {
            let fd = fs.resolve(path, OFlags::RDONLY).unwrap();
            let text = std::io::read_to_string(std::fs::File::from(fd)).unwrap();
            assert_eq!(text, "inside\n", "{path}");
            // What downloads do: O_PATH, then reopen the very inode.
            let fd = fs.resolve(path, OFlags::PATH).unwrap();
            let file = std::fs::File::from(reopen(&fd, OFlags::RDONLY).unwrap());
            assert_eq!(std::io::read_to_string(file).unwrap(), "inside\n");
        }
        let dir = fs.resolve("/", OFlags::PATH | OFlags::DIRECTORY).unwrap();
        assert!(reopen(&dir, OFlags::RDONLY | OFlags::DIRECTORY).is_ok());
    }
}
