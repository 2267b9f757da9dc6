//! Uploads: a request body written to a file in the container, atomically.
//!
//! The body goes into a new temporary file next to the target
//! (`.NAME.nsdebug-RANDOM`, created with `O_EXCL | O_NOFOLLOW`, so it never
//! opens anything that was already there), which is synced and renamed over
//! the target only once the whole body arrived within the limit: readers see
//! the old content or the new one, never half, and a failed upload leaves
//! nothing behind. The directory part of the path is resolved inside the
//! container's root (symlinks in it followed there); the final name is
//! replaced, never followed, so a symlink at the path is replaced by the file
//! as `tar` extracting over it would do.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxAttributes, StatxFlags};
use rustix::io::Errno;
use tokio::sync::{mpsc, oneshot};

use super::{ContainerFs, FileError, checked_path};
use crate::process::{ProcRoot, ProcessIdentity};

/// The mode of a new file when the caller names none (a replaced regular
/// file keeps its permission bits instead).
const DEFAULT_MODE: u32 = 0o644;
/// Body chunks in flight between the request and the worker thread.
const CHUNKS_IN_FLIGHT: usize = 4;

/// A file written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    pub path: String,
    pub size: u64,
    /// It did not exist before (else it was replaced).
    pub created: bool,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

enum Piece {
    Data(Bytes),
    End,
}

/// Writes `body` to `path` in the container of `process` as the container's
/// user, with `mode` (octal permission bits; see [`DEFAULT_MODE`]). Every
/// check that needs no data (bad path, missing directory, permission) fails
/// before the body is read. A body error ends the upload with that error.
pub async fn upload<S>(
    proc_root: ProcRoot,
    process: ProcessIdentity,
    path: &str,
    mode: Option<u32>,
    limit: u64,
    mut body: S,
) -> Result<Written, FileError>
where
    S: Stream<Item = Result<Bytes, FileError>> + Unpin,
{
    let path = checked_path(path)?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    super::spawn_worker(proc_root, process, move |fs| {
        match fs.and_then(|fs| Pending::create(fs, path, mode)) {
            Err(err) => {
                let _ = ready_tx.send(Err(err));
            }
            Ok(pending) => {
                let _ = ready_tx.send(Ok(()));
                let _ = done_tx.send(pending.fill(rx, limit));
            }
        }
    })?;
    let stopped = || FileError::Thread(io::Error::other("the file worker thread stopped"));
    ready_rx.await.map_err(|_| stopped())??;
    let mut body_error = None;
    while let Some(item) = body.next().await {
        match item {
            Ok(data) => {
                // A worker that stopped (an error, the limit) says why below.
                if tx.send(Piece::Data(data)).await.is_err() {
                    break;
                }
            }
            Err(err) => {
                body_error = Some(err);
                break;
            }
        }
    }
    if body_error.is_none() {
        let _ = tx.send(Piece::End).await;
    }
    drop(tx);
    match (done_rx.await.map_err(|_| stopped())?, body_error) {
        (Err(FileError::UploadCut { .. }), Some(err)) => Err(err),
        (result, _) => result,
    }
}

/// The temporary file an upload goes into, removed unless it was renamed
/// into place.
struct TempFile<'a> {
    parent: &'a OwnedFd,
    name: CString,
    committed: bool,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = rustix::fs::unlinkat(self.parent, self.name.as_c_str(), AtFlags::empty());
        }
    }
}

/// An upload whose target was checked, waiting for the body.
struct Pending {
    fs: ContainerFs,
    path: String,
    parent: OwnedFd,
    name: CString,
    temp_name: CString,
    file: File,
    mode: u32,
    created: bool,
}

impl Pending {
    fn create(fs: ContainerFs, path: String, mode: Option<u32>) -> Result<Self, FileError> {
        let (dir, name) = split(&path)?;
        let parent =
            fs.resolve(dir, OFlags::PATH | OFlags::DIRECTORY)
                .map_err(|errno| match errno {
                    Errno::NOENT => FileError::ParentNotFound { path: path.clone() },
                    errno => fs.error("open", dir, errno),
                })?;
        let name = CString::new(name).map_err(|_| FileError::BadPath {
            path: path.clone(),
            reason: "it contains a NUL byte",
        })?;
        let existing = rustix::fs::statx(
            &parent,
            name.as_c_str(),
            AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
            StatxFlags::TYPE | StatxFlags::MODE,
        );
        let (created, kept_mode) = match existing {
            Err(Errno::NOENT) => (true, DEFAULT_MODE),
            Err(errno) => return Err(fs.error("stat", &path, errno)),
            // A file mounted over (a ConfigMap key, /etc/hosts): renaming
            // over it from the agent's mount namespace would unmount it in
            // the container's (the kernel's EBUSY check only sees the
            // caller's namespace), so it is refused as the container would
            // see it refused. Kernels before 5.8 cannot tell.
            Ok(stat) if stat.stx_attributes.contains(StatxAttributes::MOUNT_ROOT) => {
                return Err(FileError::MountPoint { path });
            }
            Ok(stat) => {
                let mode = u32::from(stat.stx_mode);
                match FileType::from_raw_mode(mode) {
                    FileType::RegularFile => (false, mode & 0o777),
                    FileType::Symlink => (false, DEFAULT_MODE),
                    FileType::Directory => return Err(FileError::WriteToDirectory { path }),
                    other => {
                        return Err(FileError::NotRegularFile {
                            path,
                            kind: super::kind_name(other),
                        });
                    }
                }
            }
        };
        let temp_name = temp_name(name.as_bytes());
        let file = rustix::fs::openat(
            &parent,
            temp_name.as_c_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|errno| fs.error("create a file in", dir, errno))?;
        Ok(Self {
            fs,
            path,
            parent,
            name,
            temp_name,
            file: File::from(file),
            mode: mode.unwrap_or(kept_mode),
            created,
        })
    }

    /// Writes the body as it comes, then puts the file in place.
    fn fill(mut self, mut rx: mpsc::Receiver<Piece>, limit: u64) -> Result<Written, FileError> {
        let mut temp = TempFile {
            parent: &self.parent,
            name: self.temp_name.clone(),
            committed: false,
        };
        let fs = &self.fs;
        let path = self.path.as_str();
        let failed = |op, err: io::Error| match err.raw_os_error() {
            Some(raw) => fs.error(op, path, Errno::from_raw_os_error(raw)),
            None => FileError::Io {
                op,
                path: path.into(),
                source: err,
            },
        };
        let mut size = 0u64;
        loop {
            match rx.blocking_recv() {
                Some(Piece::Data(data)) => {
                    size += data.len() as u64;
                    if size > limit {
                        return Err(FileError::UploadTooLarge {
                            path: path.into(),
                            limit,
                        });
                    }
                    self.file
                        .write_all(&data)
                        .map_err(|err| failed("write", err))?;
                }
                Some(Piece::End) => break,
                None => {
                    return Err(FileError::UploadCut {
                        path: path.into(),
                        reason: "the client went away".into(),
                    });
                }
            }
        }
        rustix::fs::fchmod(&self.file, Mode::from_raw_mode(self.mode))
            .map_err(|errno| fs.error("set the mode of", path, errno))?;
        self.file.sync_all().map_err(|err| failed("write", err))?;
        rustix::fs::renameat(
            &self.parent,
            self.temp_name.as_c_str(),
            &self.parent,
            self.name.as_c_str(),
        )
        .map_err(|errno| fs.error("replace", path, errno))?;
        temp.committed = true;
        let stat = rustix::fs::fstat(&self.file).map_err(|errno| fs.error("stat", path, errno))?;
        Ok(Written {
            path: self.path.clone(),
            size,
            created: self.created,
            mode: stat.st_mode & 0o7777,
            uid: stat.st_uid,
            gid: stat.st_gid,
        })
    }
}

/// `path` as its directory and the name to write in it.
fn split(path: &str) -> Result<(&str, &str), FileError> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let dir = if dir.is_empty() { "/" } else { dir };
    match name {
        "" | "." | ".." => Err(FileError::WriteToDirectory { path: path.into() }),
        name => Ok((dir, name)),
    }
}

/// `.NAME.nsdebug-RANDOM`, short enough for `NAME_MAX` whatever NAME is.
fn temp_name(name: &[u8]) -> CString {
    let keep = &name[..name.len().min(200)];
    let mut temp = b".".to_vec();
    temp.extend_from_slice(keep);
    temp.extend_from_slice(b".nsdebug-");
    temp.extend_from_slice(&uuid::Uuid::new_v4().simple().to_string().as_bytes()[..12]);
    // No NUL: `name` came from a CString and the rest is ASCII.
    CString::new(temp).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_directory_and_name() {
        assert_eq!(split("/tmp/x").unwrap(), ("/tmp", "x"));
        assert_eq!(split("/x").unwrap(), ("/", "x"));
        assert_eq!(split("/a/b/c.txt").unwrap(), ("/a/b", "c.txt"));
        for bad in ["/tmp/", "/", "/tmp/..", "/tmp/."] {
            assert!(
                matches!(split(bad), Err(FileError::WriteToDirectory { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn temporary_names_fit() {
        let long = vec![b'a'; 255];
        let temp = temp_name(&long);
        assert!(temp.as_bytes().len() <= 255);
        assert!(temp.as_bytes().starts_with(b".aaa"));
        assert_ne!(temp_name(b"x"), temp_name(b"x"));
    }
}
