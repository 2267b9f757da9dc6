//! Terminal sessions recorded as asciicast v2 files, which `asciinema play`
//! replays and `asciinema cat` prints.
//!
//! A file is a JSON header line, then one `[seconds, "o", text]` line per
//! output chunk and `[seconds, "r", "COLSxROWS"]` per resize. Only output is
//! recorded: typed input shows only as far as the terminal echoes it, so a
//! password typed at a prompt that does not echo stays out of the file.
//!
//! The session never waits for the disk: chunks go through a bounded queue
//! to a writer thread, and if the disk falls behind, chunks are dropped and
//! the file says so. A file stops growing at its size cap with a note, and
//! files older than the retention are deleted.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

/// Chunks queued for the writer at most.
const QUEUE: usize = 1024;

/// Where recordings go and how big and old they may grow.
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub retention: Duration,
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

enum Entry {
    Output(f64, Vec<u8>),
    Resize(f64, u16, u16),
}

/// One session's recording; clones feed the same file, which is complete
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Recording {
    queue: SyncSender<Entry>,
    started: Instant,
    path: Arc<Path>,
    lost: Arc<AtomicBool>,
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
        let (queue, entries) = sync_channel(QUEUE);
        let lost = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            out,
            written: line.to_string().len() as u64 + 1,
            max_bytes: self.max_bytes,
            pending: Vec::new(),
            lost: lost.clone(),
            path: path.clone(),
        };
        std::thread::Builder::new()
            .name("nsdebug-recorder".into())
            .spawn(move || writer.run(entries))?;
        Ok(Recording {
            queue,
            started: Instant::now(),
            path: path.into(),
            lost,
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

    fn send(&self, entry: Entry) {
        match self.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.lost.store(true, Ordering::Relaxed),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    pub fn output(&self, data: &[u8]) {
        self.send(Entry::Output(
            self.started.elapsed().as_secs_f64(),
            data.to_vec(),
        ));
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        self.send(Entry::Resize(
            self.started.elapsed().as_secs_f64(),
            cols,
            rows,
        ));
    }
}

struct Writer {
    out: BufWriter<File>,
    written: u64,
    max_bytes: u64,
    /// The start of a UTF-8 sequence split across two chunks.
    pending: Vec<u8>,
    lost: Arc<AtomicBool>,
    path: PathBuf,
}

impl Writer {
    fn run(mut self, entries: Receiver<Entry>) {
        let mut cut = false;
        let mut last: f64;
        let mut noted_loss = false;
        while let Ok(entry) = entries.recv() {
            if cut {
                continue;
            }
            let line = match entry {
                Entry::Output(at, data) => {
                    last = at;
                    let text = self.decode(&data);
                    if !noted_loss && self.lost.load(Ordering::Relaxed) {
                        noted_loss = true;
                        let note =
                            "\r\n[nsdebug: the disk fell behind; some output is missing here]\r\n";
                        json!([at, "o", format!("{note}{text}")])
                    } else if text.is_empty() {
                        continue;
                    } else {
                        json!([at, "o", text])
                    }
                }
                Entry::Resize(at, cols, rows) => {
                    last = at;
                    json!([at, "r", format!("{cols}x{rows}")])
                }
            };
            let line = format!("{line}\n");
            if self.written + line.len() as u64 > self.max_bytes {
                cut = true;
                let note = json!([
                    last,
                    "o",
                    format!(
                        "\r\n[nsdebug: recording stopped at its {} byte cap]\r\n",
                        self.max_bytes
                    )
                ]);
                let _ = writeln!(self.out, "{note}");
                continue;
            }
            if let Err(err) = self.out.write_all(line.as_bytes()) {
                tracing::warn!(error = %err, path = %self.path.display(), "recording failed; it stops here");
                cut = true;
                continue;
            }
            self.written += line.len() as u64;
        }
        if let Err(err) = self.out.flush() {
            tracing::warn!(error = %err, path = %self.path.display(), "failed to finish a recording");
        }
    }

    /// `data` as text: invalid bytes become U+FFFD, and a character split
    /// across chunks waits for its end.
    fn decode(&mut self, data: &[u8]) -> String {
        self.pending.extend_from_slice(data);
        let mut text = String::with_capacity(self.pending.len());
        let mut rest: &[u8] = &self.pending;
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
        self.pending = rest.to_vec();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> Writer {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("x.cast")).unwrap();
        Writer {
            out: BufWriter::new(file),
            written: 0,
            max_bytes: 1 << 20,
            pending: Vec::new(),
            lost: Arc::new(AtomicBool::new(false)),
            path: dir.path().join("x.cast"),
        }
    }

    #[test]
    fn characters_split_across_chunks_are_joined() {
        let mut w = writer();
        let euro = "€".as_bytes();
        assert_eq!(w.decode(&[b'a', euro[0]]), "a");
        assert_eq!(w.decode(&euro[1..]), "€");
        assert_eq!(w.decode(b"\xffb"), "\u{fffd}b");
    }
}
