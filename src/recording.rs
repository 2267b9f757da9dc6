//! Interactive sessions recorded as asciicast v2 files, which `asciinema
//! play` replays and `asciinema cat` prints.
//!
//! A file is a JSON header line, then one `[seconds, "o", text]` line per
//! output chunk (a terminal's screen, or a command's stdout and stderr),
//! `[seconds, "r", "COLSxROWS"]` per resize, and with `--record-input`
//! `[seconds, "i", text]` per input chunk. Input is off by default: a
//! password typed at a prompt that does not echo stays out of the file.
//!
//! The record fails closed. A chunk is encoded and counted against the cap
//! before the session forwards it, and waits for room in a small queue to
//! the writer thread (the session slows down with the disk rather than
//! dropping what it cannot record). A chunk that would pass the cap, or a
//! write that fails, ends the recording and [`Recording::ended`] fires: the
//! session then closes and says why, so nothing goes on unrecorded. Files
//! older than the retention are deleted.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Lines queued for the writer at most (each one chunk of a session).
const QUEUE: usize = 8;

/// Where recordings go and how big and old they may grow.
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub retention: Duration,
    /// Record input too (`--record-input`).
    pub input: bool,
}

/// What the header of a recording says.
pub struct Header {
    pub cols: u16,
    pub rows: u16,
    pub command: String,
    pub title: String,
    /// Makes the file name: `TIME-NAME.cast`.
    pub name: String,
}

/// Why a recording ended before its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordingStopped {
    #[error(
        "this session is recorded and its recording reached its {max_bytes} byte cap (--record-max-bytes)"
    )]
    Cap { max_bytes: u64 },
    #[error("this session is recorded and its recording could not be written")]
    WriteFailed,
}

impl RecordingStopped {
    /// How the audit trail names the end of the session.
    pub fn outcome(self) -> &'static str {
        match self {
            Self::Cap { .. } => "recording cap reached",
            Self::WriteFailed => "recording failed",
        }
    }
}

/// Which of a session's streams a chunk comes from: each keeps its own
/// partial UTF-8 sequence.
#[derive(Clone, Copy)]
enum Stream {
    Output = 0,
    Errors = 1,
    Input = 2,
}

/// What the session side of a recording keeps.
struct State {
    written: u64,
    /// The start of a UTF-8 sequence split across two chunks, per stream.
    pending: [Vec<u8>; 3],
    stopped: Option<RecordingStopped>,
}

/// One session's recording; clones feed the same file, which is complete
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Recording {
    queue: mpsc::Sender<String>,
    started: Instant,
    path: Arc<Path>,
    max_bytes: u64,
    input: bool,
    state: Arc<Mutex<State>>,
    ended: CancellationToken,
}

impl RecordingConfig {
    /// Creates the directory (mode 0700: recordings show what was on screen).
    pub fn prepare(&self) -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
    }

    /// Starts a recording: the file exists (mode 0600) when this returns.
    pub fn start(&self, header: &Header) -> std::io::Result<Recording> {
        let now = SystemTime::now();
        let stamp = k8s_openapi::jiff::Timestamp::try_from(now)
            .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
            .unwrap_or_default();
        let name: String = header
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir.join(format!("{stamp}-{name}.cast"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut out = BufWriter::new(file);
        let line = json!({
            "version": 2,
            "width": header.cols,
            "height": header.rows,
            "timestamp": now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "command": header.command,
            "title": header.title,
            "env": {"TERM": "xterm"},
        });
        writeln!(out, "{line}")?;
        out.flush()?;
        let (queue, lines) = mpsc::channel(QUEUE);
        let ended = CancellationToken::new();
        let state = Arc::new(Mutex::new(State {
            written: line.to_string().len() as u64 + 1,
            pending: Default::default(),
            stopped: None,
        }));
        let writer = Writer {
            out,
            path: path.clone(),
            state: state.clone(),
            ended: ended.clone(),
        };
        std::thread::Builder::new()
            .name("nsdebug-recorder".into())
            .spawn(move || writer.run(lines))?;
        Ok(Recording {
            queue,
            started: Instant::now(),
            path: path.into(),
            max_bytes: self.max_bytes,
            input: self.input,
            state,
            ended,
        })
    }

    /// Deletes recordings older than the retention; returns how many.
    pub fn prune(&self) -> std::io::Result<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(self.retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "cast") {
                continue;
            }
            let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            if modified < cutoff && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Prunes now and every hour until `cancel`.
    pub async fn keep_pruned(self, cancel: tokio_util::sync::CancellationToken) {
        loop {
            let config = self.clone();
            match tokio::task::spawn_blocking(move || config.prune()).await {
                Ok(Ok(0)) | Err(_) => {}
                Ok(Ok(removed)) => {
                    tracing::info!(removed, dir = %self.dir.display(), "old recordings deleted")
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, dir = %self.dir.display(), "failed to prune recordings")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
        }
    }
}

impl Recording {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fires when the recording ended before its session (see
    /// [`Recording::stopped`] for why): the session must end too.
    pub fn ended(&self) -> CancellationToken {
        self.ended.clone()
    }

    /// Why the recording ended, once it has.
    pub fn stopped(&self) -> Option<RecordingStopped> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stopped
    }

    /// Records what the session shows (a terminal's screen, or stdout);
    /// `Err` when the recording has ended and `data` must not be forwarded.
    pub async fn output(&self, data: &[u8]) -> Result<(), RecordingStopped> {
        self.chunk(Stream::Output, "o", data).await
    }

    /// Records a command's stderr (an "o" event too: asciicast has one
    /// output stream).
    pub async fn error_output(&self, data: &[u8]) -> Result<(), RecordingStopped> {
        self.chunk(Stream::Errors, "o", data).await
    }

    /// Records what the user sent, with `--record-input`.
    pub async fn input(&self, data: &[u8]) -> Result<(), RecordingStopped> {
        if !self.input {
            return Ok(());
        }
        self.chunk(Stream::Input, "i", data).await
    }

    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), RecordingStopped> {
        let at = self.started.elapsed().as_secs_f64();
        self.line(json!([at, "r", format!("{cols}x{rows}")]).to_string())
            .await
    }

    async fn chunk(&self, stream: Stream, code: &str, data: &[u8]) -> Result<(), RecordingStopped> {
        let at = self.started.elapsed().as_secs_f64();
        let text = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            decode(&mut state.pending[stream as usize], data)
        };
        if text.is_empty() {
            return self.stopped().map_or(Ok(()), Err);
        }
        self.line(json!([at, code, text]).to_string()).await
    }

    /// Counts `line` against the cap and queues it for the writer; at the
    /// cap, queues the closing note instead and ends the recording.
    async fn line(&self, mut line: String) -> Result<(), RecordingStopped> {
        line.push('\n');
        let verdict = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match state.stopped {
                Some(stopped) => Err((stopped, false)),
                None if state.written + line.len() as u64 > self.max_bytes => {
                    let stopped = RecordingStopped::Cap {
                        max_bytes: self.max_bytes,
                    };
                    state.stopped = Some(stopped);
                    Err((stopped, true))
                }
                None => {
                    state.written += line.len() as u64;
                    Ok(())
                }
            }
        };
        match verdict {
            Ok(()) => {
                // The writer is gone only after a failed write, which
                // ended the recording already.
                let _ = self.queue.send(line).await;
                self.stopped().map_or(Ok(()), Err)
            }
            Err((stopped, first)) => {
                if first {
                    let at = self.started.elapsed().as_secs_f64();
                    let note = json!([
                        at,
                        "o",
                        format!(
                            "\r\n[nsdebug: recording stopped at its {} byte cap; the session was ended]\r\n",
                            self.max_bytes
                        )
                    ]);
                    let _ = self.queue.send(format!("{note}\n")).await;
                    self.ended.cancel();
                }
                Err(stopped)
            }
        }
    }
}

/// Writes queued lines to the file, on its own thread.
struct Writer {
    out: BufWriter<File>,
    path: PathBuf,
    state: Arc<Mutex<State>>,
    ended: CancellationToken,
}

impl Writer {
    fn run(mut self, mut lines: mpsc::Receiver<String>) {
        while let Some(line) = lines.blocking_recv() {
            // Flushed line by line: what the session showed is on disk.
            if let Err(err) = self
                .out
                .write_all(line.as_bytes())
                .and_then(|()| self.out.flush())
            {
                tracing::warn!(error = %err, path = %self.path.display(), "recording failed; the session is ended");
                self.state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .stopped
                    .get_or_insert(RecordingStopped::WriteFailed);
                self.ended.cancel();
                return;
            }
        }
    }
}

/// `data` as text, after what `pending` kept of the last chunk: invalid
/// bytes become U+FFFD, and a character split across chunks waits for its
/// end in `pending`.
fn decode(pending: &mut Vec<u8>, data: &[u8]) -> String {
    pending.extend_from_slice(data);
    let mut text = String::with_capacity(pending.len());
    let mut rest: &[u8] = pending;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                rest = &[];
                break;
            }
            Err(err) => {
                let (valid, after) = rest.split_at(err.valid_up_to());
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                match err.error_len() {
                    Some(bad) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        rest = &after[bad..];
                    }
                    // An incomplete sequence at the end: keep it.
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
        }
    }
    *pending = rest.to_vec();
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_across_chunks_are_joined() {
        let mut pending = Vec::new();
        let euro = "€".as_bytes();
        assert_eq!(decode(&mut pending, &[b'a', euro[0]]), "a");
        assert_eq!(decode(&mut pending, &euro[1..]), "€");
        assert_eq!(decode(&mut pending, b"\xffb"), "\u{fffd}b");
    }

    fn config(dir: &Path, max_bytes: u64, input: bool) -> RecordingConfig {
        RecordingConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            retention: Duration::from_secs(3600),
            input,
        }
    }

    fn header() -> Header {
        Header {
            cols: 80,
            rows: 24,
            command: "sh".into(),
            title: "t".into(),
            name: "n".into(),
        }
    }

    #[tokio::test]
    async fn the_cap_ends_the_recording_and_refuses_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let recording = config(dir.path(), 1024, false).start(&header()).unwrap();
        let ended = recording.ended();
        assert_eq!(recording.output(b"first\n").await, Ok(()));
        let big = vec![b'x'; 2048];
        let stopped = RecordingStopped::Cap { max_bytes: 1024 };
        assert_eq!(recording.output(&big).await, Err(stopped));
        assert!(ended.is_cancelled());
        assert_eq!(recording.output(b"after\n").await, Err(stopped));
        let path = recording.path().to_path_buf();
        drop(recording);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains("byte cap") {
                break text;
            }
            tokio::task::yield_now().await;
        };
        assert!(text.contains("first") && !text.contains("after"), "{text}");
    }

    #[tokio::test]
    async fn input_is_recorded_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        for input in [false, true] {
            let mut header = header();
            header.name = format!("input-{input}");
            let recording = config(dir.path(), 1 << 20, input).start(&header).unwrap();
            recording.input(b"typed-secret").await.unwrap();
            recording.output(b"shown").await.unwrap();
            let path = recording.path().to_path_buf();
            drop(recording);
            let text = loop {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains("shown") {
                    break text;
                }
                tokio::task::yield_now().await;
            };
            assert_eq!(text.contains(r#""i","typed-secret""#), input, "{text}");
        }
    }
}
