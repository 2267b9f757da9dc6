//! Sessions: commands running inside containers on behalf of a client.
//!
//! Every session holds a permit of the agent-wide limit (over it: 429), and
//! ends with its `Entered`: dropping it kills every process the command started.
//! One-shot runs are collected here with an output cap, a deadline and a
//! bounded drain, so no client can grow the agent's memory or hold it forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

use tokio::net::unix::pipe::Receiver;

use crate::enter::{Enter, EnterError, EnterRequest, Entered, Exit, Io};

/// How long output is still collected after the command exits, for what its
/// background children (which may keep the pipes open) already wrote.
const DRAIN: Duration = Duration::from_millis(200);

/// The session limits: agent-wide and per user, and the sessions alive now.
#[derive(Clone)]
pub struct Sessions {
    permits: Arc<Semaphore>,
    limit: usize,
    per_user_limit: usize,
    per_user: Arc<Mutex<HashMap<String, usize>>>,
    /// Every permit is a task of this tracker until dropped: shutdown waits
    /// on it for every kind of session, an upgraded WebSocket (which axum's
    /// graceful shutdown does not track) as much as a streamed run.
    tracker: TaskTracker,
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
    _tracked: TaskTrackerToken,
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
            tracker: TaskTracker::new(),
        }
    }

    /// Waits until every session has ended, or `grace` has passed; true
    /// when none is left. Sessions may still start meanwhile (shutdown
    /// stops accepting connections first), and are waited for too.
    pub async fn ended_within(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Sessions running now.
    pub fn active(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// A slot for one session of an admitted user, held until the permit is
    /// dropped (only an admitted request takes one); `kind` and `profile`
    /// label it in the metrics.
    pub fn acquire<T>(
        &self,
        admitted: &crate::auth::Admitted<T>,
        kind: &'static str,
        profile: &str,
    ) -> Result<SessionPermit, TooManySessions> {
        let user = admitted.user().name.as_str();
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
            _tracked: self.tracker.token(),
            _metric: crate::metrics::SessionMetric::start(kind, profile),
            user: user.into(),
            per_user: self.per_user.clone(),
        })
    }
}

/// The agent-wide budget of buffered run output (`--output-budget`): a
/// one-shot run reserves what its output can take before it starts, so no
/// number of concurrent runs can buffer more than the budget.
#[derive(Clone)]
pub struct OutputBudget {
    /// One permit per KiB (a semaphore counts in `u32` per acquisition).
    kib: Arc<Semaphore>,
    total: u64,
}

/// What one run holds of the [`OutputBudget`], given back when dropped.
pub struct OutputReservation {
    _permits: OwnedSemaphorePermit,
}

/// A run's output does not fit the [`OutputBudget`].
#[derive(Debug, thiserror::Error)]
pub enum OutputBudgetError {
    #[error(
        "the agent's output budget ({} MiB, --output-budget) is taken by other runs; stream the output with ?stream=true, or ask for a smaller outputLimitBytes",
        total >> 20
    )]
    Exhausted { total: u64 },
    #[error(
        "outputLimitBytes {asked} needs {needed} bytes of buffer, more than the agent's whole output budget of {total} bytes (--output-budget); stream the output with ?stream=true, or ask for a smaller outputLimitBytes"
    )]
    TooLarge {
        asked: usize,
        needed: u64,
        total: u64,
    },
}

/// Buffer a run takes per byte of its output limit, per stream: the
/// captured bytes, then their rendering in the JSON answer (at most twice
/// the bytes: text with few escapes, else base64), held at once while the
/// answer is written.
pub const BUFFER_PER_OUTPUT_BYTE: u64 = 3;

impl OutputBudget {
    pub fn new(total: u64) -> Self {
        let kib = usize::try_from(total / 1024)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            kib: Arc::new(Semaphore::new(kib)),
            total,
        }
    }

    /// Reserves the buffers of a run keeping `output_bytes` per stream
    /// (stdout and stderr), or says why not, without waiting.
    pub fn reserve(&self, output_bytes: usize) -> Result<OutputReservation, OutputBudgetError> {
        let needed = 2 * BUFFER_PER_OUTPUT_BYTE * output_bytes as u64;
        let kib = needed.div_ceil(1024);
        let too_large = OutputBudgetError::TooLarge {
            asked: output_bytes,
            needed,
            total: self.total,
        };
        if kib > self.total / 1024 {
            return Err(too_large);
        }
        let kib = u32::try_from(kib).map_err(|_| too_large)?;
        let permits = self
            .kib
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| OutputBudgetError::Exhausted { total: self.total })?;
        Ok(OutputReservation { _permits: permits })
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
    enter: &Enter,
    request: &EnterRequest,
    stdin: Vec<u8>,
) -> Result<(Entered, Receiver, Receiver, tokio::task::JoinHandle<()>), EnterError> {
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
    let feeder = tokio::spawn(async move {
        let _ = input.write_all(&stdin).await;
    });
    Ok((entered, stdout, stderr, feeder))
}

/// Runs `request` to completion with `stdin` as its input.
pub async fn run_once(
    enter: &Enter,
    request: &EnterRequest,
    stdin: Vec<u8>,
    limits: RunLimits,
) -> Result<RunOutcome, EnterError> {
    let started = Instant::now();
    let (mut entered, stdout, stderr, feeder) = start_with_input(enter, request, stdin).await?;
    let stop = CancellationToken::new();
    let out = tokio::spawn(capture(stdout, limits.output_bytes, stop.clone()));
    let err = tokio::spawn(capture(stderr, limits.output_bytes, stop.clone()));

    let exit = match tokio::time::timeout(limits.timeout, entered.wait()).await {
        Ok(exit) => Some(exit?),
        Err(_deadline) => None,
    };
    // Kills what is left of the session (all of it on a timeout).
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

/// Output still taken after `stop`, at most: what a command left running
/// (holding its pipe open and writing) cannot hold the session.
const AFTER_STOP_BYTES: usize = 4 << 20;

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

/// A budget for [`read_or_stop`].
pub fn after_stop_budget() -> usize {
    AFTER_STOP_BYTES
}

/// Reads `reader` to its end (or until `stop`), keeping at most `limit` bytes.
async fn capture(
    mut reader: impl AsyncRead + Unpin,
    limit: usize,
    stop: CancellationToken,
) -> Captured {
    let mut captured = Captured::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut budget = AFTER_STOP_BYTES;
    loop {
        let Some(n) = read_or_stop(reader.read(&mut buf), &stop, &mut budget).await else {
            break;
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
    enter: &Enter,
    request: &EnterRequest,
    stdin: Vec<u8>,
    timeout: Duration,
) -> Result<tokio::sync::mpsc::Receiver<StreamEvent>, EnterError> {
    let started = Instant::now();
    let (mut entered, stdout, stderr, _feeder) = start_with_input(enter, request, stdin).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let stop = CancellationToken::new();
    let forward = |mut reader: Receiver,
                   stdout: bool,
                   tx: tokio::sync::mpsc::Sender<StreamEvent>,
                   stop: CancellationToken| async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut budget = AFTER_STOP_BYTES;
        while let Some(n) = read_or_stop(reader.read(&mut buf), &stop, &mut budget).await {
            let chunk = buf[..n].to_vec();
            let event = if stdout {
                StreamEvent::Stdout(chunk)
            } else {
                StreamEvent::Stderr(chunk)
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    };
    let out = tokio::spawn(forward(stdout, true, tx.clone(), stop.clone()));
    let err = tokio::spawn(forward(stderr, false, tx.clone(), stop.clone()));
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
        // Output the command wrote comes first, however late it is read;
        // after the drain only what is ready right away.
        let drain_stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(DRAIN).await;
            drain_stop.cancel();
        });
        let _ = out.await;
        let _ = err.await;
        stop.cancel();
        let _ = tx
            .send(StreamEvent::Exit {
                exit,
                duration: started.elapsed(),
            })
            .await;
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shutdown waits for a live session, and no longer than the grace.
    #[tokio::test]
    async fn shutdown_waits_for_live_sessions() {
        let sessions = Sessions::new(4, 4);
        let auth = crate::auth::Auth::None;
        let user = crate::auth::User::anonymous();
        let admitted = auth
            .admit(&user, &auth.exec_actions("ns", "pod", false), ())
            .await
            .unwrap();
        assert!(sessions.ended_within(Duration::ZERO).await);
        let permit = sessions.acquire(&admitted, "exec", "container").unwrap();
        assert!(!sessions.ended_within(Duration::from_millis(20)).await);
        let waiting = tokio::spawn({
            let sessions = sessions.clone();
            async move { sessions.ended_within(Duration::from_secs(60)).await }
        });
        drop(permit);
        assert!(waiting.await.unwrap());
        assert_eq!(sessions.active(), 0);
    }

    /// Under load the reading task can first run after the drain has
    /// already ended: what the command wrote must still all be taken.
    #[tokio::test]
    async fn output_written_before_the_end_is_kept_however_late_it_is_read() {
        for _ in 0..200 {
            let stop = CancellationToken::new();
            stop.cancel();
            let written: &[u8] = b"hi\n";
            let captured = capture(written, 1024, stop).await;
            assert_eq!(captured.bytes, b"hi\n");
        }
    }

    /// A writer left behind (endless output after the end) is cut off after
    /// the budget, not followed forever.
    #[tokio::test]
    async fn an_endless_writer_after_the_end_is_cut_off() {
        let stop = CancellationToken::new();
        stop.cancel();
        let endless = tokio::io::repeat(b'y');
        let captured = capture(endless, 1024, stop).await;
        assert_eq!(captured.bytes.len(), 1024);
        assert!(captured.truncated);
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
