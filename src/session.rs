//! Sessions: commands running inside containers on behalf of a client.
//!
//! Every session holds a permit of the agent-wide limit (over it: 429), and
//! ends with its `Entered`: dropping it kills the command's process group.
//! One-shot runs are collected here with an output cap, a deadline and a
//! bounded drain, so no client can grow the agent's memory or hold it forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use tokio::net::unix::pipe::Receiver;

use crate::enter::{self, EnterError, EnterRequest, Entered, Exit, Io};

/// How long output is still collected after the command exits, for what its
/// background children (which may keep the pipes open) already wrote.
const DRAIN: Duration = Duration::from_millis(200);

/// The session limits: agent-wide and per user.
#[derive(Clone)]
pub struct Sessions {
    permits: Arc<Semaphore>,
    limit: usize,
    per_user_limit: usize,
    per_user: Arc<Mutex<HashMap<String, usize>>>,
}

/// Over a session limit.
#[derive(Debug, thiserror::Error)]
pub enum TooManySessions {
    #[error("the agent already runs its limit of {limit} sessions; try again when one ends")]
    Agent { limit: usize },
    #[error(
        "user \"{user}\" already has {limit} sessions open on this agent, the most one user may have; close one first"
    )]
    User { user: String, limit: usize },
}

/// One session's place in the limits, given back when dropped.
pub struct SessionPermit {
    _agent: OwnedSemaphorePermit,
    _metric: crate::metrics::SessionMetric,
    user: String,
    per_user: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut counts = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

impl Sessions {
    pub fn new(limit: usize, per_user_limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            per_user_limit,
            per_user: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Sessions running now.
    pub fn active(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// A slot for one session of `user`, held until the permit is dropped;
    /// `kind` and `profile` label it in the metrics.
    pub fn acquire(
        &self,
        user: &str,
        kind: &'static str,
        profile: &str,
    ) -> Result<SessionPermit, TooManySessions> {
        let mut counts = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.get(user).copied().unwrap_or(0);
        if count >= self.per_user_limit {
            return Err(TooManySessions::User {
                user: user.into(),
                limit: self.per_user_limit,
            });
        }
        let agent = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| TooManySessions::Agent { limit: self.limit })?;
        counts.insert(user.into(), count + 1);
        Ok(SessionPermit {
            _agent: agent,
            _metric: crate::metrics::SessionMetric::start(kind, profile),
            user: user.into(),
            per_user: self.per_user.clone(),
        })
    }
}

/// Captured output of one stream.
#[derive(Debug, Default)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// More was written than the limit; the rest was read and dropped.
    pub truncated: bool,
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

/// Starts `request` on pipes and writes `stdin` to it in the background, so a
/// command that fills its stdout before reading all its input cannot
/// deadlock; the pipe closes after it (the command reads end of file).
async fn start_with_input(
    request: &EnterRequest,
    stdin: Vec<u8>,
) -> Result<(Entered, Receiver, Receiver, tokio::task::JoinHandle<()>), EnterError> {
    if request.terminal.is_some() {
        return Err(EnterError::Io {
            what: "run a one-shot command",
            source: std::io::Error::other("one-shot commands run on pipes, not a terminal"),
        });
    }
    let mut entered = enter::spawn(request).await?;
    let Some(Io::Pipes {
        stdin: Some(mut input),
        stdout,
        stderr,
    }) = entered.io.take()
    else {
        return Err(EnterError::HelperVanished);
    };
    let feeder = tokio::spawn(async move {
        let _ = input.write_all(&stdin).await;
    });
    Ok((entered, stdout, stderr, feeder))
}

/// Runs `request` to completion with `stdin` as its input.
pub async fn run_once(
    request: &EnterRequest,
    stdin: Vec<u8>,
    limits: RunLimits,
) -> Result<RunOutcome, EnterError> {
    let started = Instant::now();
    let (mut entered, stdout, stderr, feeder) = start_with_input(request, stdin).await?;
    let stop = CancellationToken::new();
    let out = tokio::spawn(capture(stdout, limits.output_bytes, stop.clone()));
    let err = tokio::spawn(capture(stderr, limits.output_bytes, stop.clone()));

    let exit = match tokio::time::timeout(limits.timeout, entered.wait()).await {
        Ok(exit) => Some(exit?),
        Err(_deadline) => None,
    };
    // Kills what is left of the process group (all of it on a timeout).
    drop(entered);
    feeder.abort();
    let drain_stop = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(DRAIN).await;
        drain_stop.cancel();
    });
    let stdout = out.await.unwrap_or_default();
    let stderr = err.await.unwrap_or_default();
    stop.cancel();
    Ok(RunOutcome {
        exit,
        stdout,
        stderr,
        duration: started.elapsed(),
    })
}

/// Reads `reader` to its end (or until `stop`), keeping at most `limit` bytes.
async fn capture(
    mut reader: impl AsyncRead + Unpin,
    limit: usize,
    stop: CancellationToken,
) -> Captured {
    let mut captured = Captured::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.cancelled() => break,
        };
        let room = limit.saturating_sub(captured.bytes.len());
        if n > room {
            captured.truncated = true;
        }
        captured.bytes.extend_from_slice(&buf[..n.min(room)]);
    }
    captured
}

/// One event of a streamed run.
#[derive(Debug)]
pub enum StreamEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The end: `None` when the deadline passed and the command was killed.
    Exit {
        exit: Option<Exit>,
        duration: Duration,
    },
}

/// Runs `request`, sending its output as it comes. The command is killed when
/// the receiver is dropped (the client went away) or the deadline passes.
pub async fn run_streaming(
    request: &EnterRequest,
    stdin: Vec<u8>,
    timeout: Duration,
) -> Result<tokio::sync::mpsc::Receiver<StreamEvent>, EnterError> {
    let started = Instant::now();
    let (mut entered, stdout, stderr, _feeder) = start_with_input(request, stdin).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let forward = |mut reader: Receiver,
                   stdout: bool,
                   tx: tokio::sync::mpsc::Sender<StreamEvent>| async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = reader.read(&mut buf).await {
            let chunk = buf[..n].to_vec();
            let event = if stdout {
                StreamEvent::Stdout(chunk)
            } else {
                StreamEvent::Stderr(chunk)
            };
            if n == 0 || tx.send(event).await.is_err() {
                return;
            }
        }
    };
    let out = tokio::spawn(forward(stdout, true, tx.clone()));
    let err = tokio::spawn(forward(stderr, false, tx.clone()));
    tokio::spawn(async move {
        let exit = tokio::select! {
            result = tokio::time::timeout(timeout, entered.wait()) => match result {
                Ok(Ok(exit)) => Some(exit),
                Ok(Err(_)) | Err(_) => None,
            },
            // The client is gone: end here, which kills the command.
            _ = tx.closed() => return,
        };
        drop(entered);
        let _ = tokio::time::timeout(DRAIN, async {
            let _ = out.await;
            let _ = err.await;
        })
        .await;
        let _ = tx
            .send(StreamEvent::Exit {
                exit,
                duration: started.elapsed(),
            })
            .await;
    });
    Ok(rx)
}
