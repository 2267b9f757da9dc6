//! One-shot runs: a command on pipes with its input given up front, its
//! output collected with a cap (or streamed as it comes), a deadline, and the
//! pump's bounded drain, so no client can grow the agent's memory or hold it
//! forever.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe::Receiver;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::pump::{Chunk, Stream, pump, stop_after_drain};
use crate::enter::{Enter, EnterError, EnterRequest, Entered, Exit, Io};

/// Output read per chunk of a one-shot run.
const CHUNK: usize = 64 * 1024;

/// Captured output of one stream.
#[derive(Debug, Default)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// More was written than the limit; the rest was read and dropped.
    pub truncated: bool,
}

impl Captured {
    /// Keeps what fits under `limit` of `data`.
    fn take(&mut self, data: &[u8], limit: usize) {
        let room = limit.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// The result of a one-shot run.
#[derive(Debug)]
pub struct RunOutcome {
    /// `None` when the deadline passed and the command was killed.
    pub exit: Option<Exit>,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
}

/// Limits of a one-shot run.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    pub timeout: Duration,
    /// Per stream.
    pub output_bytes: usize,
}

/// A started one-shot command: its output as chunks, both streams in one
/// channel that closes when both have ended.
struct Started {
    entered: Entered,
    output: mpsc::Receiver<Chunk>,
    /// Fired a drain after the command ends (see [`super::pump`]).
    stop: CancellationToken,
}

/// Starts `request` on pipes, writes `stdin` to it in the background (so a
/// command that fills its stdout before reading all its input cannot
/// deadlock; the pipe closes after it and the command reads end of file),
/// and pumps both outputs.
async fn start(
    enter: &Enter,
    request: &EnterRequest,
    stdin: Vec<u8>,
) -> Result<Started, EnterError> {
    if request.terminal.is_some() {
        return Err(EnterError::Io {
            what: "run a one-shot command",
            source: std::io::Error::other("one-shot commands run on pipes, not a terminal"),
        });
    }
    let mut entered = enter.spawn(request).await?;
    let Some(Io::Pipes {
        stdin: Some(mut input),
        stdout,
        stderr,
    }) = entered.io.take()
    else {
        return Err(EnterError::HelperVanished);
    };
    tokio::spawn(async move {
        let _ = input.write_all(&stdin).await;
    });
    let stop = CancellationToken::new();
    let (tx, output) = mpsc::channel(8);
    let outputs: [(Receiver, Stream); 2] = [(stdout, Stream::Stdout), (stderr, Stream::Stderr)];
    for (reader, stream) in outputs {
        tokio::spawn(pump(reader, stream, CHUNK, tx.clone(), stop.clone(), None));
    }
    Ok(Started {
        entered,
        output,
        stop,
    })
}

/// Runs `request` to completion with `stdin` as its input.
pub async fn run_once(
    enter: &Enter,
    request: &EnterRequest,
    stdin: Vec<u8>,
    limits: RunLimits,
) -> Result<RunOutcome, EnterError> {
    let started = Instant::now();
    let Started {
        mut entered,
        output,
        stop,
    } = start(enter, request, stdin).await?;
    let collected = tokio::spawn(collect(output, limits.output_bytes));
    let exit = match tokio::time::timeout(limits.timeout, entered.wait()).await {
        Ok(exit) => Some(exit?),
        Err(_deadline) => None,
    };
    // Kills what is left of the session (all of it on a timeout).
    drop(entered);
    stop_after_drain(&stop);
    let (stdout, stderr) = collected.await.unwrap_or_default();
    stop.cancel();
    Ok(RunOutcome {
        exit,
        stdout,
        stderr,
        duration: started.elapsed(),
    })
}

/// Both streams' chunks until both end, at most `limit` bytes kept of each.
async fn collect(mut output: mpsc::Receiver<Chunk>, limit: usize) -> (Captured, Captured) {
    let (mut stdout, mut stderr) = (Captured::default(), Captured::default());
    while let Some(chunk) = output.recv().await {
        match chunk.stream {
            Stream::Stdout => stdout.take(&chunk.data, limit),
            Stream::Stderr => stderr.take(&chunk.data, limit),
        }
    }
    (stdout, stderr)
}

/// One event of a streamed run.
#[derive(Debug)]
pub enum StreamEvent {
    Stdout(Bytes),
    Stderr(Bytes),
    /// The end: `None` when the deadline passed and the command was killed.
    Exit {
        exit: Option<Exit>,
        duration: Duration,
    },
}

/// Runs `request`, sending its output as it comes. The command is killed when
/// the receiver is dropped (the client went away) or the deadline passes.
pub async fn run_streaming(
    enter: &Enter,
    request: &EnterRequest,
    stdin: Vec<u8>,
    timeout: Duration,
) -> Result<mpsc::Receiver<StreamEvent>, EnterError> {
    let started = Instant::now();
    let Started {
        mut entered,
        mut output,
        stop,
    } = start(enter, request, stdin).await?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let ended = async {
            let exit = tokio::time::timeout(timeout, entered.wait()).await;
            // Kills what is left of the session (all of it on a timeout).
            drop(entered);
            stop_after_drain(&stop);
            match exit {
                Ok(Ok(exit)) => Some(exit),
                Ok(Err(_)) | Err(_) => None,
            }
        };
        tokio::pin!(ended);
        let mut exit = None;
        let mut output_open = true;
        // Output the command wrote comes first, however late it is read;
        // after the drain only what is ready right away.
        while exit.is_none() || output_open {
            tokio::select! {
                result = &mut ended, if exit.is_none() => exit = Some(result),
                chunk = output.recv(), if output_open => {
                    let Some(Chunk { stream, data }) = chunk else {
                        output_open = false;
                        continue;
                    };
                    let event = match stream {
                        Stream::Stdout => StreamEvent::Stdout(data),
                        Stream::Stderr => StreamEvent::Stderr(data),
                    };
                    // The client is gone: end here, which kills the command.
                    if tx.send(event).await.is_err() {
                        return;
                    }
                },
                // The client is gone: end here, which kills the command.
                () = tx.closed() => return,
            }
        }
        stop.cancel();
        let _ = tx
            .send(StreamEvent::Exit {
                exit: exit.flatten(),
                duration: started.elapsed(),
            })
            .await;
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each stream keeps at most the limit and says it dropped the rest.
    #[tokio::test]
    async fn output_over_the_limit_is_cut_and_marked() {
        let (tx, rx) = mpsc::channel(8);
        for (stream, data) in [
            (Stream::Stdout, &b"0123"[..]),
            (Stream::Stderr, b"ab"),
            (Stream::Stdout, b"4567"),
        ] {
            tx.send(Chunk {
                stream,
                data: Bytes::from_static(data),
            })
            .await
            .unwrap();
        }
        drop(tx);
        let (stdout, stderr) = collect(rx, 6).await;
        assert_eq!(
            (&stdout.bytes[..], stdout.truncated),
            (&b"012345"[..], true)
        );
        assert_eq!((&stderr.bytes[..], stderr.truncated), (&b"ab"[..], false));
    }
}
