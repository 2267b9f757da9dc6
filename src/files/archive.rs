//! Tar archives of a container's directory tree, written while it is walked.
//!
//! The walk never resolves a path and never follows a symlink: each entry is
//! opened by its single name relative to its directory's descriptor with
//! `O_PATH | O_NOFOLLOW`, checked with `fstat(2)`, and only then reopened for
//! reading if it is a regular file or a directory. Symlinks are archived as
//! symlinks (their target as text, whatever it points to), device nodes and
//! FIFOs as entries without content; sockets are left out (tar has no type
//! for them), and so are entries the container's user may not read, as `tar`
//! leaves them out (the count goes to the audit log). Virtual file systems
//! (proc, sysfs, cgroup, ...) appear as empty directories.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, OFlags, Stat};
use rustix::io::Errno;
use tar::{EntryType, Header};

use super::download::{ChunkSink, FileInfo, Source};
use super::{FileError, reopen};

/// Deepest directory nesting archived; deeper is an error, not a silent cut.
const MAX_DEPTH: usize = 128;

/// `statfs(2)` `f_type` of file systems whose contents are the kernel's, not
/// files: proc, sysfs, cgroup, cgroup2, debugfs, tracefs, securityfs, bpf.
const VIRTUAL_FILE_SYSTEMS: &[i64] = &[
    0x9fa0,
    0x6265_6572,
    0x0027_e0eb,
    0x6367_7270,
    0x6462_6720,
    0x7472_6163,
    0x7363_6673,
    0xcafe_4a11,
];

/// What an archive left out.
#[derive(Debug, Default, Clone, Copy)]
pub struct ArchiveStats {
    /// Entries left out: unreadable to the container's user, sockets, or
    /// gone while the tree was walked.
    pub skipped: u64,
}

/// Writes the archive of `info` (a directory tree or one regular file) into
/// `sink`. On failure the sink is stopped before the error is returned, so
/// the archive never gets its end-of-archive trailer.
pub(super) fn write(
    info: &FileInfo,
    stat: &Stat,
    source: Source,
    sink: &mut ChunkSink,
) -> Result<ArchiveStats, FileError> {
    let name = PathBuf::from(info.name.as_deref().unwrap_or("."));
    let inside = PathBuf::from(&info.path);
    let mut walker = Walker {
        builder: tar::Builder::new(sink),
        stats: ArchiveStats::default(),
    };
    let result = match source {
        Source::Directory(dir) => walker.directory(dir, stat, &name, &inside, 0),
        Source::File(file) => walker.file(file, stat, &name, &inside),
    }
    .and_then(|()| {
        walker
            .builder
            .finish()
            .map_err(|err| walker.explain(err, "write", &inside))
    });
    if result.is_err() {
        walker.builder.get_mut().stop();
    }
    let stats = walker.stats;
    drop(walker);
    result.map(|()| stats).map_err(|err| match err {
        FileError::ArchiveTooLarge { limit, .. } => FileError::ArchiveTooLarge {
            path: info.path.clone(),
            limit,
        },
        err => err,
    })
}

struct Walker<'a> {
    builder: tar::Builder<&'a mut ChunkSink>,
    stats: ArchiveStats,
}

impl Walker<'_> {
    fn explain(&mut self, err: io::Error, op: &'static str, inside: &Path) -> FileError {
        self.builder
            .get_mut()
            .explain(err, || (op, inside.display().to_string()))
    }

    fn skip(&mut self, inside: &Path, why: impl std::fmt::Display) {
        tracing::debug!(path = %inside.display(), %why, "left out of a tar archive");
        self.stats.skipped += 1;
    }

    fn directory(
        &mut self,
        dir: OwnedFd,
        stat: &Stat,
        name: &Path,
        inside: &Path,
        depth: usize,
    ) -> Result<(), FileError> {
        // `dir/`: tar's own way of naming a directory.
        let mut dir_name = OsString::from(name);
        dir_name.push("/");
        self.append(stat, EntryType::Directory, Path::new(&dir_name), inside)?;
        if depth >= MAX_DEPTH {
            return Err(FileError::TooDeep {
                path: inside.display().to_string(),
                limit: MAX_DEPTH,
            });
        }
        if is_virtual(&dir) {
            return Ok(());
        }
        let mut names = match entry_names(&dir) {
            Ok(names) => names,
            Err(errno) => {
                self.skip(inside, errno);
                return Ok(());
            }
        };
        names.sort();
        for child in names {
            let os_name = OsStr::from_bytes(child.as_bytes());
            let (name, inside) = (name.join(os_name), inside.join(os_name));
            // One name, no symlink followed: nothing here can leave `dir`.
            let fd = match rustix::fs::openat(
                &dir,
                child.as_c_str(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(errno) => {
                    self.skip(&inside, errno);
                    continue;
                }
            };
            let stat = match rustix::fs::fstat(&fd) {
                Ok(stat) => stat,
                Err(errno) => {
                    self.skip(&inside, errno);
                    continue;
                }
            };
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => match reopen(&fd, OFlags::RDONLY | OFlags::DIRECTORY) {
                    Ok(sub) => self.directory(sub, &stat, &name, &inside, depth + 1)?,
                    Err(errno) => self.skip(&inside, errno),
                },
                FileType::RegularFile => match reopen(&fd, OFlags::RDONLY) {
                    Ok(file) => self.file(File::from(file), &stat, &name, &inside)?,
                    Err(errno) => self.skip(&inside, errno),
                },
                FileType::Symlink => match rustix::fs::readlinkat(&fd, c"", Vec::new()) {
                    Ok(target) => self.symlink(&stat, &name, &target, &inside)?,
                    Err(errno) => self.skip(&inside, errno),
                },
                FileType::CharacterDevice => {
                    self.append(&stat, EntryType::Char, &name, &inside)?;
                }
                FileType::BlockDevice => {
                    self.append(&stat, EntryType::Block, &name, &inside)?;
                }
                FileType::Fifo => self.append(&stat, EntryType::Fifo, &name, &inside)?,
                FileType::Socket | FileType::Unknown => self.skip(&inside, "not archivable"),
            }
        }
        Ok(())
    }

    /// A regular file: exactly the size `fstat` gave, zero-padded if it
    /// shrank meanwhile (as GNU tar does), cut if it grew.
    fn file(
        &mut self,
        file: File,
        stat: &Stat,
        name: &Path,
        inside: &Path,
    ) -> Result<(), FileError> {
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let sink = self.builder.get_mut();
        // A header, the data in 512-byte blocks, and the trailer must fit.
        let needed = sink.written() + 512 + size.next_multiple_of(512) + 1024;
        if needed > sink.limit() {
            return Err(FileError::ArchiveTooLarge {
                path: String::new(),
                limit: sink.limit(),
            });
        }
        let mut header = header(stat, EntryType::Regular, size);
        let data = file.take(size).chain(io::repeat(0)).take(size);
        self.builder
            .append_data(&mut header, name, data)
            .map_err(|err| self.explain(err, "read", inside))
    }

    fn symlink(
        &mut self,
        stat: &Stat,
        name: &Path,
        target: &CString,
        inside: &Path,
    ) -> Result<(), FileError> {
        let mut header = header(stat, EntryType::Symlink, 0);
        let target = Path::new(OsStr::from_bytes(target.as_bytes()));
        self.builder
            .append_link(&mut header, name, target)
            .map_err(|err| self.explain(err, "archive", inside))
    }

    /// An entry without content: a directory, device or FIFO.
    fn append(
        &mut self,
        stat: &Stat,
        kind: EntryType,
        name: &Path,
        inside: &Path,
    ) -> Result<(), FileError> {
        let mut header = header(stat, kind, 0);
        if matches!(kind, EntryType::Char | EntryType::Block) {
            let rdev = stat.st_rdev;
            let numbers = header
                .set_device_major(rustix::fs::major(rdev))
                .and_then(|()| header.set_device_minor(rustix::fs::minor(rdev)));
            if let Err(err) = numbers {
                self.skip(inside, err);
                return Ok(());
            }
        }
        self.builder
            .append_data(&mut header, name, io::empty())
            .map_err(|err| self.explain(err, "archive", inside))
    }
}

fn header(stat: &Stat, kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(stat.st_mode & 0o7777);
    header.set_uid(stat.st_uid.into());
    header.set_gid(stat.st_gid.into());
    header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
    header.set_size(size);
    header
}

/// The names in a directory, without `.` and `..`.
fn entry_names(dir: &OwnedFd) -> Result<Vec<CString>, Errno> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// True for a directory of a kernel file system whose files are not worth
/// archiving (and may be endless or have side effects when read).
fn is_virtual(dir: &OwnedFd) -> bool {
    // `f_type`'s integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::fstatfs(dir).is_ok_and(|fs| VIRTUAL_FILE_SYSTEMS.contains(&(fs.f_type as i64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_is_virtual_and_a_tempdir_is_not() {
        let open = |path: &Path| {
            rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .unwrap()
        };
        assert!(is_virtual(&open(Path::new("/proc"))));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_virtual(&open(dir.path())));
        std::fs::write(dir.path().join("b"), "").unwrap();
        std::fs::write(dir.path().join("a"), "").unwrap();
        let mut names = entry_names(&open(dir.path())).unwrap();
        names.sort();
        assert_eq!(names, vec![c"a".to_owned(), c"b".to_owned()]);
    }
}
