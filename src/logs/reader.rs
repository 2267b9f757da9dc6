//! Reading one CRI log file the way the kubelet does (its `ReadLogs`, in
//! `k8s.io/cri-client/pkg/logs`): where to start (`tailLines`), which records
//! to write (`sinceSeconds`/`sinceTime`), how to write them (`timestamps`),
//! when to stop (`limitBytes`, the end of the file, or with `follow` the end
//! of the container), and following the file across rotation.
//!
//! The semantics kubectl users rely on, exactly:
//! - `tailLines` counts the file's raw records from its end (a line the
//!   runtime split into `P`, `P`, `F` counts three), and a read without
//!   `follow` stops after that many records;
//! - a record older than `since` is skipped on its own, even the head of a
//!   split line whose tail is written;
//! - `timestamps` prefixes the start of each logical line (not the records
//!   that continue a split line) with the record's time, nine digits;
//! - `limitBytes` counts what is written, prefixes included, and cuts the
//!   last line mid-way.
//!
//! Everything here is blocking file I/O: it runs on a thread of its own,
//! never on an async worker, and writes into a [`Sink`] that says when the
//! client is gone. Memory is bounded: the tail is found by reading the file
//! backwards in blocks, and one record is held at a time (a record longer
//! than [`MAX_RECORD_BYTES`], possible only with a runtime configured without
//! a line limit, is cut there).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::format;

/// The longest record held in memory; the rest of a longer one is skipped.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// How often a follower asks whether the container still runs, as the
/// kubelet's `logForceCheckPeriod`.
pub const RUNNING_CHECK_PERIOD: Duration = Duration::from_secs(1);

/// What to read and how, as the query asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub follow: bool,
    /// The last N records of the file (`tailLines`); `None`: all.
    pub tail: Option<u64>,
    /// Skip records older than this, in Unix nanoseconds.
    pub since_unix_nanos: Option<i128>,
    pub timestamps: bool,
    /// Stop after writing this many bytes (`limitBytes`).
    pub limit_bytes: Option<u64>,
}

/// How a read ended.
#[derive(Debug)]
pub enum End {
    /// Without `follow`: the end of the file, or the last of `tailLines`.
    Complete,
    /// With `follow`: the container stopped and its file was drained.
    ContainerStopped,
    /// `limitBytes` were written.
    LimitReached,
    /// The client went away.
    ClientGone,
    /// Reading the file failed midway.
    Failed(io::Error),
}

impl End {
    /// How the audit trail says it.
    pub fn describe(&self) -> String {
        match self {
            Self::Complete => "complete".into(),
            Self::ContainerStopped => "the container stopped".into(),
            Self::LimitReached => "limitBytes reached".into(),
            Self::ClientGone => "client disconnected".into(),
            Self::Failed(err) => format!("reading the log failed: {err}"),
        }
    }
}

/// The client was gone when bytes were written for it.
#[derive(Debug)]
pub struct Gone;

/// Where the output goes: the response body.
pub trait Sink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Gone>;
    /// Hands over what is buffered (before a follower waits).
    fn flush(&mut self) -> Result<(), Gone>;
    /// Whether the client is gone, for a follower that waits.
    fn gone(&self) -> bool;
}

/// What a follower asks of the world while it waits for more output.
pub trait Follow {
    /// Whether the container still runs (asked at most once per
    /// [`RUNNING_CHECK_PERIOD`]).
    fn running(&mut self) -> bool;
    /// Waits a little for the file to grow.
    fn pause(&mut self);
}

/// A log file opened and placed where the read starts.
pub struct Opened {
    path: PathBuf,
    file: File,
    identity: (u64, u64),
}

/// Opens `path` and seeks to where `tail` records before its end start.
pub fn open(path: &Path, tail: Option<u64>) -> io::Result<Opened> {
    let mut file = File::open(path)?;
    let metadata = file.metadata()?;
    if let Some(tail) = tail {
        let start = tail_start(&file, metadata.len(), tail)?;
        file.seek(SeekFrom::Start(start))?;
    }
    Ok(Opened {
        path: path.to_path_buf(),
        file,
        identity: (metadata.dev(), metadata.ino()),
    })
}

/// The offset of the first of the last `count` lines of a file of `len`
/// bytes, found by reading it backwards (its final newline ends the last
/// line; it does not start another).
fn tail_start(file: &File, len: u64, count: u64) -> io::Result<u64> {
    if count == 0 {
        return Ok(len);
    }
    let mut block = vec![0u8; 8192];
    let mut end = len;
    let mut seen = 0;
    while end > 0 {
        let size = end.min(block.len() as u64);
        let start = end - size;
        let block = &mut block[..size as usize];
        file.read_exact_at(block, start)?;
        for (i, byte) in block.iter().enumerate().rev() {
            let offset = start + i as u64;
            if *byte == b'\n' && offset + 1 != len {
                seen += 1;
                if seen == count {
                    return Ok(offset + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// Writes the records of `opened` into `sink` as `options` say, following
/// the file while `follow` says the container runs.
pub fn read(
    opened: Opened,
    options: &Options,
    sink: &mut dyn Sink,
    follow: &mut dyn Follow,
) -> End {
    let Opened {
        path,
        file,
        mut identity,
    } = opened;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut writer = Writer {
        options,
        remaining: options.limit_bytes,
        new_line: true,
        out: Vec::new(),
    };
    let mut records_left = options.tail.filter(|_| !options.follow);
    let mut line = Vec::new();
    let mut last_check: Option<Instant> = None;
    let mut stopped = false;
    loop {
        if records_left == Some(0) {
            return flushed(sink, End::Complete);
        }
        let room = (MAX_RECORD_BYTES - line.len()) as u64;
        let read = (&mut reader).take(room).read_until(b'\n', &mut line);
        match read {
            Err(err) => return End::Failed(err),
            Ok(_) if line.ends_with(b"\n") || line.len() >= MAX_RECORD_BYTES => {
                if !line.ends_with(b"\n") {
                    // A record too long to hold: the rest of it is skipped.
                    if let Err(err) = reader.skip_until(b'\n') {
                        return End::Failed(err);
                    }
                }
            }
            // The end of the file, maybe in the middle of a record the runtime
            // is still writing.
            Ok(_) => {
                if !options.follow {
                    // The kubelet reads the unfinished last line all the same.
                    if line.is_empty() {
                        return flushed(sink, End::Complete);
                    }
                } else {
                    if sink.flush().is_err() {
                        return End::ClientGone;
                    }
                    if stopped {
                        return End::ContainerStopped;
                    }
                    if last_check.is_none_or(|at| at.elapsed() >= RUNNING_CHECK_PERIOD) {
                        last_check = Some(Instant::now());
                        if !follow.running() {
                            // Drained once more, then done.
                            stopped = true;
                            continue;
                        }
                    }
                    match reopened_if_rotated(&path, identity) {
                        Ok(Some((file, now))) => {
                            identity = now;
                            reader = BufReader::with_capacity(64 * 1024, file);
                            line.clear();
                            continue;
                        }
                        Ok(None) => {}
                        Err(err) => return End::Failed(err),
                    }
                    follow.pause();
                    if sink.gone() {
                        return End::ClientGone;
                    }
                    continue;
                }
            }
        }
        let record = match format::parse(&line) {
            Ok(record) => record,
            Err(err) => {
                tracing::debug!(path = %path.display(), error = %err, "skipping a line that is not a CRI log record");
                line.clear();
                continue;
            }
        };
        match writer.write(&record, sink) {
            Ok(true) => {}
            Ok(false) => return flushed(sink, End::LimitReached),
            Err(Gone) => return End::ClientGone,
        }
        line.clear();
        if let Some(left) = records_left.as_mut() {
            *left -= 1;
        }
    }
}

fn flushed(sink: &mut dyn Sink, end: End) -> End {
    match sink.flush() {
        Ok(()) => end,
        Err(Gone) => End::ClientGone,
    }
}

/// A new file at `path` when the runtime reopened it after a rotation (the
/// kubelet renames `0.log` and asks the runtime to start a new one).
fn reopened_if_rotated(
    path: &Path,
    identity: (u64, u64),
) -> io::Result<Option<(File, (u64, u64))>> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        // Renamed and not yet recreated: wait for it.
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let now = (metadata.dev(), metadata.ino());
    if now == identity {
        return Ok(None);
    }
    match File::open(path) {
        Ok(file) => Ok(Some((file, now))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Writes records as the kubelet's log writer does.
struct Writer<'a> {
    options: &'a Options,
    remaining: Option<u64>,
    /// The next record starts a logical line (the last one was not partial).
    new_line: bool,
    out: Vec<u8>,
}

impl Writer<'_> {
    /// Writes `record`; `false` when `limitBytes` is reached.
    fn write(&mut self, record: &format::Record<'_>, sink: &mut dyn Sink) -> Result<bool, Gone> {
        let starts_line = std::mem::replace(&mut self.new_line, !record.partial);
        if self
            .options
            .since_unix_nanos
            .is_some_and(|since| record.time.unix_nanos < since)
        {
            return Ok(true);
        }
        self.out.clear();
        if self.options.timestamps && starts_line {
            record.time.write_fixed(&mut self.out);
            self.out.push(b' ');
        }
        self.out.extend_from_slice(record.content);
        if !record.partial {
            self.out.push(b'\n');
        }
        let Some(remaining) = self.remaining.as_mut() else {
            sink.write(&self.out)?;
            return Ok(true);
        };
        let len = self.out.len() as u64;
        if len >= *remaining {
            sink.write(&self.out[..*remaining as usize])?;
            *remaining = 0;
            return Ok(false);
        }
        *remaining -= len;
        sink.write(&self.out)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Records as containerd wrote them on the test bed: two full lines, a
    /// line split in three (`P`, `P`, `F`), a line on stderr.
    const RECORDED: &str = "\
2026-12-03T12:46:13.67565821Z stdout F one
2026-12-03T12:46:14.1Z stdout F two
2026-12-03T12:46:15Z stdout P long-a
2026-12-03T12:46:16Z stdout P long-b
2026-12-03T12:46:17Z stdout F long-c
2026-12-03T12:46:18.000000001Z stderr F oops
";

    struct Collect {
        out: Vec<u8>,
        flushes: usize,
    }

    impl Sink for Collect {
        fn write(&mut self, bytes: &[u8]) -> Result<(), Gone> {
            self.out.extend_from_slice(bytes);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), Gone> {
            self.flushes += 1;
            Ok(())
        }
        fn gone(&self) -> bool {
            false
        }
    }

    /// A container that runs for `checks` more questions, and appends
    /// `later` to the file at its first pause.
    struct Script {
        checks: usize,
        later: Option<(PathBuf, String)>,
    }

    impl Follow for Script {
        fn running(&mut self) -> bool {
            let running = self.checks > 0;
            self.checks = self.checks.saturating_sub(1);
            running
        }
        fn pause(&mut self) {
            if let Some((path, text)) = self.later.take() {
                let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
                file.write_all(text.as_bytes()).unwrap();
            } else {
                std::thread::sleep(RUNNING_CHECK_PERIOD / 20);
            }
        }
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn read_with(text: &str, options: Options) -> (String, End) {
        let (_dir, path) = file(text);
        let mut sink = Collect {
            out: Vec::new(),
            flushes: 0,
        };
        let mut follow = Script {
            checks: 0,
            later: None,
        };
        let opened = open(&path, options.tail).unwrap();
        let end = read(opened, &options, &mut sink, &mut follow);
        (String::from_utf8(sink.out).unwrap(), end)
    }

    #[test]
    fn a_whole_read_joins_split_lines() {
        let (out, end) = read_with(RECORDED, Options::default());
        assert_eq!(out, "one\ntwo\nlong-along-blong-c\noops\n");
        assert!(matches!(end, End::Complete));
    }

    #[test]
    fn tail_counts_raw_records() {
        let tail = |n| {
            read_with(
                RECORDED,
                Options {
                    tail: Some(n),
                    ..Default::default()
                },
            )
            .0
        };
        assert_eq!(tail(1), "oops\n");
        assert_eq!(tail(2), "long-c\noops\n");
        assert_eq!(tail(4), "long-along-blong-c\noops\n");
        assert_eq!(tail(0), "");
        assert_eq!(tail(100), "one\ntwo\nlong-along-blong-c\noops\n");
    }

    #[test]
    fn tail_finds_its_start_across_blocks_without_a_final_newline() {
        let text: String = (0..5000)
            .map(|i| format!("2026-12-03T12:46:13Z stdout F line {i}\n"))
            .collect();
        let text = text.trim_end();
        let (out, _) = read_with(
            text,
            Options {
                tail: Some(3),
                ..Default::default()
            },
        );
        assert_eq!(out, "line 4997\nline 4998\nline 4999\n");
    }

    #[test]
    fn timestamps_prefix_logical_lines_only() {
        let (out, _) = read_with(
            RECORDED,
            Options {
                timestamps: true,
                ..Default::default()
            },
        );
        assert_eq!(
            out,
            "2026-12-03T12:46:13.675658210Z one\n\
             2026-12-03T12:46:14.100000000Z two\n\
             2026-12-03T12:46:15.000000000Z long-along-blong-c\n\
             2026-12-03T12:46:18.000000001Z oops\n"
        );
        // The first record written always starts a line.
        let (out, _) = read_with(
            RECORDED,
            Options {
                timestamps: true,
                tail: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(
            out,
            "2026-12-03T12:46:17.000000000Z long-c\n2026-12-03T12:46:18.000000001Z oops\n"
        );
    }

    #[test]
    fn since_skips_each_older_record_on_its_own() {
        let since = format::Timestamp::parse(b"2026-12-03T12:46:16Z").unwrap();
        let (out, _) = read_with(
            RECORDED,
            Options {
                since_unix_nanos: Some(since.unix_nanos),
                ..Default::default()
            },
        );
        assert_eq!(out, "long-blong-c\noops\n");
        // tail first, then since: the tail's records that are too old are dropped.
        let (out, _) = read_with(
            RECORDED,
            Options {
                tail: Some(5),
                since_unix_nanos: Some(since.unix_nanos),
                ..Default::default()
            },
        );
        assert_eq!(out, "long-blong-c\noops\n");
    }

    #[test]
    fn limit_bytes_counts_prefixes_and_cuts_mid_line() {
        let (out, end) = read_with(
            RECORDED,
            Options {
                limit_bytes: Some(6),
                ..Default::default()
            },
        );
        assert_eq!(out, "one\ntw");
        assert!(matches!(end, End::LimitReached));
        let (out, _) = read_with(
            RECORDED,
            Options {
                limit_bytes: Some(35),
                timestamps: true,
                ..Default::default()
            },
        );
        assert_eq!(out, "2026-12-03T12:46:13.675658210Z one\n");
        assert_eq!(out.len(), 35);
    }

    #[test]
    fn lines_that_are_not_records_are_skipped() {
        let (out, _) = read_with(
            "garbage\n2026-12-03T12:46:13Z stdout F ok\n",
            Options::default(),
        );
        assert_eq!(out, "ok\n");
    }

    #[test]
    fn a_record_longer_than_the_bound_is_cut() {
        let long = "x".repeat(MAX_RECORD_BYTES + 10);
        let text =
            format!("2026-12-03T12:46:13Z stdout F {long}\n2026-12-03T12:46:14Z stdout F after\n");
        let (out, _) = read_with(&text, Options::default());
        assert!(out.ends_with("after\n"), "the next record is read");
        assert!(out.len() < MAX_RECORD_BYTES + 10);
    }

    #[test]
    fn follow_writes_what_comes_later_and_ends_when_the_container_stops() {
        let (_dir, path) =
            file("2026-12-03T12:46:13Z stdout F first\n2026-12-03T12:46:14Z stdout F half-");
        let mut sink = Collect {
            out: Vec::new(),
            flushes: 0,
        };
        let mut follow = Script {
            checks: 1,
            later: Some((
                path.clone(),
                "way\n2026-12-03T12:46:15Z stdout F last\n".into(),
            )),
        };
        let options = Options {
            follow: true,
            tail: Some(1),
            ..Default::default()
        };
        let end = read(
            open(&path, options.tail).unwrap(),
            &options,
            &mut sink,
            &mut follow,
        );
        assert!(matches!(end, End::ContainerStopped), "{end:?}");
        assert_eq!(String::from_utf8(sink.out).unwrap(), "half-way\nlast\n");
        assert!(sink.flushes >= 2, "output is handed over before each wait");
    }

    #[test]
    fn follow_reopens_a_rotated_file_from_its_start() {
        let (dir, path) = file("2026-12-03T12:46:13Z stdout F before\n");
        let rotated = dir.path().join("0.log.20261203-124614");
        struct Rotate {
            path: PathBuf,
            rotated: PathBuf,
            done: bool,
            checks: usize,
        }
        impl Follow for Rotate {
            fn running(&mut self) -> bool {
                self.checks += 1;
                self.checks < 3
            }
            fn pause(&mut self) {
                if !std::mem::replace(&mut self.done, true) {
                    std::fs::rename(&self.path, &self.rotated).unwrap();
                    std::fs::write(&self.path, "2026-12-03T12:46:15Z stdout F after\n").unwrap();
                }
                std::thread::sleep(RUNNING_CHECK_PERIOD / 4);
            }
        }
        let mut sink = Collect {
            out: Vec::new(),
            flushes: 0,
        };
        let mut follow = Rotate {
            path: path.clone(),
            rotated,
            done: false,
            checks: 0,
        };
        let options = Options {
            follow: true,
            ..Default::default()
        };
        let end = read(open(&path, None).unwrap(), &options, &mut sink, &mut follow);
        assert!(matches!(end, End::ContainerStopped), "{end:?}");
        assert_eq!(String::from_utf8(sink.out).unwrap(), "before\nafter\n");
    }

    #[test]
    fn follow_stops_when_the_client_is_gone() {
        struct Closed;
        impl Sink for Closed {
            fn write(&mut self, _: &[u8]) -> Result<(), Gone> {
                Err(Gone)
            }
            fn flush(&mut self) -> Result<(), Gone> {
                Err(Gone)
            }
            fn gone(&self) -> bool {
                true
            }
        }
        let (_dir, path) = file("");
        let mut follow = Script {
            checks: usize::MAX,
            later: None,
        };
        let options = Options {
            follow: true,
            ..Default::default()
        };
        let end = read(
            open(&path, None).unwrap(),
            &options,
            &mut Closed,
            &mut follow,
        );
        assert!(matches!(end, End::ClientGone), "{end:?}");
    }
}
