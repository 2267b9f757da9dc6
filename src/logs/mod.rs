//! Containers' logs, read straight from the files the runtime writes
//! (`ContainerStatus.log_path`), as the kubelet serves `pods/log`: the API
//! edge is [`crate::api`]'s `logs` route; the format is [`format`], the
//! reading [`reader`].
//!
//! A read runs on a thread of its own (file I/O and, when following, waits
//! of up to 100 ms between looks at the file) and hands its output to the
//! response through a small bounded channel: a slow client slows the reader,
//! a client that goes away stops it at its next write or wait. A follower
//! asks the runtime whether the container still runs once a second (the
//! kubelet's `logForceCheckPeriod`) from that thread, and ends once the
//! container stopped and its file is drained.

pub mod format;
pub mod reader;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use reader::{End, Options};

use crate::cri::CriClient;

/// How long a follower waits between looks at a file that did not grow.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Output is handed to the response in chunks of up to this size, and at
/// the end of what the file holds now.
const CHUNK_BYTES: usize = 32 * 1024;

/// What the reader thread sends the response.
#[derive(Debug)]
pub enum Message {
    Data(Bytes),
    End(End),
}

/// Why a log could not be opened, before any output.
#[derive(Debug, thiserror::Error)]
#[error("failed to open log file \"{path}\"")]
pub struct OpenError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The container whose log a follower follows.
pub struct Followed {
    pub cri: CriClient,
    pub container_id: String,
}

/// Opens `path` and reads it on a thread of its own as `options` say; the
/// receiver yields the output and then how the read ended. Fails before any
/// output when the file cannot be opened.
pub async fn start(
    path: PathBuf,
    options: Options,
    followed: Followed,
) -> Result<mpsc::Receiver<Message>, OpenError> {
    let (opened_tx, opened_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(4);
    let runtime = tokio::runtime::Handle::current();
    let shown = path.clone();
    std::thread::Builder::new()
        .name("nsdebug-logs".into())
        .spawn(move || {
            let opened = match reader::open(&path, options.tail) {
                Ok(opened) => opened,
                Err(source) => {
                    let _ = opened_tx.send(Err(OpenError { path, source }));
                    return;
                }
            };
            if opened_tx.send(Ok(())).is_err() {
                return;
            }
            let mut sink = ChannelSink {
                tx,
                buffer: Vec::with_capacity(CHUNK_BYTES),
            };
            let mut follow = RuntimeFollow { runtime, followed };
            let end = reader::read(opened, &options, &mut sink, &mut follow);
            let _ = sink.tx.blocking_send(Message::End(end));
        })
        .map_err(|source| OpenError {
            path: shown.clone(),
            source,
        })?;
    match opened_rx.await {
        Ok(Ok(())) => Ok(rx),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(OpenError {
            path: shown,
            source: std::io::Error::other("the log reader ended before it opened the file"),
        }),
    }
}

/// The response body's end of the channel, in chunks.
struct ChannelSink {
    tx: mpsc::Sender<Message>,
    buffer: Vec<u8>,
}

impl reader::Sink for ChannelSink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), reader::Gone> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), reader::Gone> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.tx
            .blocking_send(Message::Data(chunk))
            .map_err(|_| reader::Gone)
    }

    fn gone(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Asks the runtime about the followed container from the reader's thread
/// (never an async worker, so blocking on the call is allowed).
struct RuntimeFollow {
    runtime: tokio::runtime::Handle,
    followed: Followed,
}

impl reader::Follow for RuntimeFollow {
    fn running(&mut self) -> bool {
        let Followed { cri, container_id } = &self.followed;
        match self.runtime.block_on(cri.container_status(container_id)) {
            Ok(answer) => {
                answer.status.state == k8s_cri::v1::ContainerState::ContainerRunning as i32
            }
            Err(err) if err.is_not_found() => false,
            // A runtime that does not answer now may again: keep following,
            // as the kubelet would keep the stream open.
            Err(err) => {
                tracing::debug!(container = %container_id, error = %crate::error_chain(&err), "could not ask whether a followed container runs");
                true
            }
        }
    }

    fn pause(&mut self) {
        std::thread::sleep(POLL_INTERVAL);
    }
}
