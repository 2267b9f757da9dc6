//! The one output pump: a command's stdout, stderr or terminal copied into a
//! channel of chunks, recorded first when the session is recorded, with the
//! drain rule every session shares (what the command wrote before it ended is
//! never dropped; what a process left behind writes afterwards is bounded).

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::recording::Recording;

/// How long output is still taken after the command exits, for what its
/// background children (which may keep the pipes open) already wrote.
pub const DRAIN: Duration = Duration::from_millis(200);

/// Output still taken after `stop`, at most: what a command left running
/// (holding its pipe open and writing) cannot hold the session.
const AFTER_STOP_BYTES: usize = 4 << 20;

/// Which of the command's outputs a chunk came from (a terminal is `Stdout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A piece of a command's output, as read.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub stream: Stream,
    pub data: Bytes,
}

/// One read of a command's output: the byte count, or `None` at its end.
/// `stop` (the command ended a while ago) ends reading only once nothing
/// can be read right away, so what the command wrote before it ended is
/// never dropped however late this task runs (a busy agent can take longer
/// than the drain to get here); after it, `after_stop` bytes at most.
pub async fn read_or_stop(
    read: impl std::future::Future<Output = std::io::Result<usize>>,
    stop: &CancellationToken,
    after_stop: &mut usize,
) -> Option<usize> {
    let n = tokio::select! {
        biased;
        read = read => match read {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        },
        () = stop.cancelled() => return None,
    };
    if stop.is_cancelled() {
        if *after_stop == 0 {
            return None;
        }
        *after_stop = after_stop.saturating_sub(n);
    }
    Some(n)
}

/// Copies `reader` into `out` as `stream` chunks of at most `chunk` bytes
/// until its end, `stop` (see [`read_or_stop`]) or a receiver that is gone.
/// With a recording each chunk is recorded first, and what cannot be
/// recorded is not passed on (the record fails closed).
pub async fn pump(
    mut reader: impl AsyncRead + Unpin,
    stream: Stream,
    chunk: usize,
    out: mpsc::Sender<Chunk>,
    stop: CancellationToken,
    recording: Option<Recording>,
) {
    let mut buf = vec![0u8; chunk];
    let mut budget = AFTER_STOP_BYTES;
    while let Some(n) = read_or_stop(reader.read(&mut buf), &stop, &mut budget).await {
        let data = &buf[..n];
        if let Some(recording) = &recording {
            let recorded = match stream {
                Stream::Stderr => recording.error_output(data).await,
                Stream::Stdout => recording.output(data).await,
            };
            if recorded.is_err() {
                return;
            }
        }
        let chunk = Chunk {
            stream,
            data: Bytes::copy_from_slice(data),
        };
        if out.send(chunk).await.is_err() {
            return;
        }
    }
}

/// Cancels `stop` after the drain: the pumps then end once nothing is ready.
pub fn stop_after_drain(stop: &CancellationToken) {
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(DRAIN).await;
        stop.cancel();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pumped(
        reader: impl AsyncRead + Unpin + Send + 'static,
        stop: CancellationToken,
    ) -> Vec<u8> {
        let (tx, mut rx) = mpsc::channel(8);
        let pumping = tokio::spawn(pump(reader, Stream::Stdout, 16, tx, stop, None));
        let mut got = Vec::new();
        while let Some(chunk) = rx.recv().await {
            assert_eq!(chunk.stream, Stream::Stdout);
            assert!(chunk.data.len() <= 16);
            got.extend_from_slice(&chunk.data);
        }
        pumping.await.unwrap();
        got
    }

    /// Under load the pump can first run after the drain has already ended:
    /// what the command wrote must still all be taken.
    #[tokio::test]
    async fn output_written_before_the_end_is_kept_however_late_it_is_read() {
        for _ in 0..200 {
            let stop = CancellationToken::new();
            stop.cancel();
            let written: &[u8] = b"hi\nthere, a line longer than one chunk\n";
            assert_eq!(pumped(written, stop).await, written);
        }
    }

    /// A writer left behind (endless output after the end) is cut off after
    /// the budget, not followed forever.
    #[tokio::test]
    async fn an_endless_writer_after_the_end_is_cut_off() {
        let stop = CancellationToken::new();
        stop.cancel();
        let got = pumped(tokio::io::repeat(b'y'), stop).await;
        assert!(got.len() >= AFTER_STOP_BYTES && got.len() < AFTER_STOP_BYTES + 16);
    }

    /// Without `stop`, a read waits for data; once `stop` fires, a reader
    /// with nothing ready ends.
    #[tokio::test]
    async fn stop_ends_a_reader_with_nothing_ready() {
        let (_writer, mut reader) = tokio::io::duplex(64);
        let stop = CancellationToken::new();
        let mut budget = AFTER_STOP_BYTES;
        let mut buf = [0u8; 16];
        let read = read_or_stop(reader.read(&mut buf), &stop, &mut budget);
        tokio::pin!(read);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut read)
                .await
                .is_err(),
            "a read with nothing to read waits"
        );
        stop.cancel();
        assert_eq!(read.await, None);
    }
}
