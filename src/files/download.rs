//! Downloads: a regular file's bytes, or a tar archive of a directory, sent
//! in chunks from the worker thread through a bounded channel, so neither a
//! big file nor a slow client grows the agent's memory.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use bytes::Bytes;
use rustix::fs::{FileType, OFlags, Stat};
use tokio::sync::{mpsc, oneshot};

use super::archive::{self, ArchiveStats};
use super::{ContainerFs, FileError, checked_path, kind_name, reopen};
use crate::process::{ProcRoot, ProcessIdentity};

/// Chunks in flight between the worker thread and the HTTP body: at most
/// `CHUNKS_IN_FLIGHT * CHUNK_BYTES` (plus one chunk being filled) per download.
const CHUNKS_IN_FLIGHT: usize = 4;
const CHUNK_BYTES: usize = 64 * 1024;

/// How a path is downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A regular file's bytes.
    Raw,
    /// A tar archive of a directory tree or of one regular file.
    Tar,
}

/// The path a download names, as `fstat(2)` reports it (symlinks followed
/// inside the container's root).
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// As the caller named it, absolute.
    pub path: String,
    /// Its last name, what the download is called; `None` for `/`.
    pub name: Option<String>,
    pub kind: &'static str,
    pub size: u64,
    /// Permission bits, `0o7777` at most.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
}

impl FileInfo {
    fn new(path: &str, stat: &Stat) -> Self {
        Self {
            path: path.to_string(),
            name: super::base_name(path).map(str::to_string),
            kind: kind_name(FileType::from_raw_mode(stat.st_mode)),
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mode: stat.st_mode & 0o7777,
            uid: stat.st_uid,
            gid: stat.st_gid,
            mtime: stat.st_mtime,
        }
    }
}

/// A download that started: what it is, and its bytes as they come.
pub struct Download {
    pub info: FileInfo,
    pub format: Format,
    /// The bytes in order. An `Err` is the last item and means the download
    /// failed midway: the response must be aborted so the client sees it,
    /// never ended as if it were complete.
    pub chunks: mpsc::Receiver<Result<Bytes, FileError>>,
    /// What a complete download left out, sent before `chunks` ends; none
    /// when it failed or stopped.
    pub summary: oneshot::Receiver<ArchiveStats>,
}

/// Starts downloading `path` from the container of `process`. Everything
/// that can be known up front (not found, a directory without `Tar`, a file
/// over `limit`, permission) is an error here, before a byte is sent.
pub async fn download(
    proc_root: ProcRoot,
    process: ProcessIdentity,
    path: &str,
    format: Format,
    limit: u64,
) -> Result<Download, FileError> {
    let path = checked_path(path)?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let (summary_tx, summary_rx) = oneshot::channel();
    super::spawn_worker(proc_root, process, move |fs| {
        match fs.and_then(|fs| Opened::open(fs, &path, format, limit)) {
            Err(err) => {
                let _ = ready_tx.send(Err(err));
            }
            Ok(opened) => {
                if ready_tx.send(Ok(opened.info.clone())).is_ok() {
                    let mut sink = ChunkSink::new(tx, limit);
                    if let Some(stats) = opened.send(&mut sink) {
                        let _ = summary_tx.send(stats);
                    }
                    // The channel ends only now, after the summary.
                    drop(sink);
                }
            }
        }
    })?;
    let info = ready_rx
        .await
        .map_err(|_| FileError::Thread(io::Error::other("the file worker thread stopped")))??;
    Ok(Download {
        info,
        format,
        chunks: rx,
        summary: summary_rx,
    })
}

/// What a download reads from, opened for reading once its type was checked.
pub(super) enum Source {
    File(File),
    Directory(OwnedFd),
}

/// A path checked and opened, ready to be sent.
struct Opened {
    // Kept for as long as the download runs: its root is what paths resolve in.
    _fs: ContainerFs,
    info: FileInfo,
    stat: Stat,
    source: Source,
    format: Format,
}

impl Opened {
    fn open(fs: ContainerFs, path: &str, format: Format, limit: u64) -> Result<Self, FileError> {
        let fd = fs
            .resolve(path, OFlags::PATH)
            .map_err(|errno| fs.error("open", path, errno))?;
        let stat = rustix::fs::fstat(&fd).map_err(|errno| fs.error("stat", path, errno))?;
        let info = FileInfo::new(path, &stat);
        let source = match (FileType::from_raw_mode(stat.st_mode), format) {
            (FileType::RegularFile, _) => {
                if info.size > limit {
                    return Err(FileError::FileTooLarge {
                        path: path.into(),
                        size: info.size,
                        limit,
                    });
                }
                Source::File(File::from(
                    reopen(&fd, OFlags::RDONLY).map_err(|errno| fs.error("open", path, errno))?,
                ))
            }
            (FileType::Directory, Format::Tar) => Source::Directory(
                reopen(&fd, OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(|errno| fs.error("open", path, errno))?,
            ),
            (FileType::Directory, Format::Raw) => {
                return Err(FileError::IsDirectory { path: path.into() });
            }
            (_, _) => {
                return Err(FileError::NotRegularFile {
                    path: path.into(),
                    kind: info.kind,
                });
            }
        };
        Ok(Self {
            _fs: fs,
            info,
            stat,
            source,
            format,
        })
    }

    /// Sends the bytes (or the archive) into `sink`; a failure midway is sent
    /// as the last item. Returns what a complete download left out.
    fn send(self, sink: &mut ChunkSink) -> Option<ArchiveStats> {
        let result = match (self.format, self.source) {
            (Format::Raw, Source::File(file)) => {
                copy_file(file, &self.info, sink).map(|()| ArchiveStats::default())
            }
            (Format::Tar, source) => archive::write(&self.info, &self.stat, source, sink),
            (Format::Raw, Source::Directory(_)) => Err(FileError::IsDirectory {
                path: self.info.path.clone(),
            }),
        };
        match result.and_then(|stats| sink.finish().map(|()| stats)) {
            Ok(stats) => Some(stats),
            Err(FileError::ClientGone) => None,
            Err(err) => {
                sink.fail(err);
                None
            }
        }
    }
}

/// Exactly `info.size` bytes of a regular file; a file that shrank while it
/// was read fails the download (the client would otherwise get a short file
/// under a `Content-Length` that promised more).
fn copy_file(file: File, info: &FileInfo, sink: &mut ChunkSink) -> Result<(), FileError> {
    match io::copy(&mut file.take(info.size), sink) {
        Ok(read) if read < info.size => Err(FileError::Shrank {
            path: info.path.clone(),
            expected: info.size,
            read,
        }),
        Ok(_) => Ok(()),
        Err(err) => Err(sink.explain(err, || ("read", info.path.clone()))),
    }
}

/// Why the sink refused more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    ClientGone,
    OverLimit,
    Failed,
}

/// The writing end of a download: buffers into chunks, counts them against
/// the limit and blocks while the client is behind.
pub(super) struct ChunkSink {
    tx: mpsc::Sender<Result<Bytes, FileError>>,
    buf: Vec<u8>,
    written: u64,
    limit: u64,
    refused: Option<Refusal>,
}

impl ChunkSink {
    fn new(tx: mpsc::Sender<Result<Bytes, FileError>>, limit: u64) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK_BYTES),
            written: 0,
            limit,
            refused: None,
        }
    }

    /// Bytes accepted so far.
    pub(super) fn written(&self) -> u64 {
        self.written
    }

    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    /// The error behind `err`, returned by a write into this sink or a read
    /// for it: the sink's own refusal if it refused, else the I/O error of
    /// `what` (the operation and path).
    pub(super) fn explain(
        &self,
        err: io::Error,
        what: impl FnOnce() -> (&'static str, String),
    ) -> FileError {
        match self.refused {
            Some(Refusal::ClientGone) => FileError::ClientGone,
            Some(Refusal::OverLimit) => FileError::ArchiveTooLarge {
                path: what().1,
                limit: self.limit,
            },
            Some(Refusal::Failed) | None => {
                let (op, path) = what();
                FileError::Io {
                    op,
                    path,
                    source: err,
                }
            }
        }
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            self.refused = Some(Refusal::ClientGone);
            io::Error::new(io::ErrorKind::BrokenPipe, "the client went away")
        })
    }

    /// Sends what is buffered: the download is complete.
    fn finish(&mut self) -> Result<(), FileError> {
        self.send_buffer().map_err(|_| FileError::ClientGone)
    }

    /// Refuses every later write (a failed archive must get no trailer).
    pub(super) fn stop(&mut self) {
        self.refused.get_or_insert(Refusal::Failed);
    }

    /// Ends the download with `err` and refuses every later write, so that
    /// nothing (not a tar trailer either) can follow and make a cut-off
    /// download look complete.
    pub(super) fn fail(&mut self, err: FileError) {
        self.refused = Some(Refusal::Failed);
        self.buf.clear();
        let _ = self.tx.blocking_send(Err(err));
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.refused.is_some() {
            return Err(io::Error::other("the download was stopped"));
        }
        if self.written + data.len() as u64 > self.limit {
            self.refused = Some(Refusal::OverLimit);
            return Err(io::Error::other("over the download size limit"));
        }
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_chunks_counts_and_refuses_past_the_limit() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut sink = ChunkSink::new(tx, 100_000);
        sink.write_all(&[1; 70_000]).unwrap();
        assert_eq!(rx.try_recv().unwrap().unwrap().len(), 70_000);
        let err = sink.write_all(&[2; 40_000]).unwrap_err();
        assert!(matches!(
            sink.explain(err, || ("read", "/big".into())),
            FileError::ArchiveTooLarge { limit: 100_000, .. }
        ));
        // A failure is the last thing sent; nothing is accepted after it.
        sink.fail(FileError::ClientGone);
        assert!(sink.write_all(b"trailer").is_err());
        assert!(matches!(rx.try_recv().unwrap(), Err(FileError::ClientGone)));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_gone_client_stops_the_sink() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut sink = ChunkSink::new(tx, u64::MAX);
        let err = sink.write_all(&[0; CHUNK_BYTES]).unwrap_err();
        assert!(matches!(
            sink.explain(err, || ("read", "/x".into())),
            FileError::ClientGone
        ));
    }
}
