//! Sessions: commands running inside containers on behalf of a client.
//!
//! Every session holds a permit of the agent-wide limit (over it: 429), and
//! ends with its `Entered`: dropping it kills every process the command started.
//! - [`pump`]: the one output pump and its drain rule;
//! - [`oneshot`]: one-shot runs, collected with a cap or streamed;
//! - [`interactive`]: the interactive loop (`kubectl exec`, the web terminal),
//!   generic over the client's transport and the command.

pub mod interactive;
pub mod oneshot;
pub mod pump;
mod trail;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

pub use oneshot::{Captured, RunLimits, RunOutcome, StreamEvent, run_once, run_streaming};
pub use trail::{Outcome, Session, SessionTrail};

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
    pub async fn ended_within(&self, grace: std::time::Duration) -> bool {
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

/// The exit code a shell reports for a command that could not start: 127
/// when it is missing, 126 when it is not executable.
pub fn shell_exit_code(err: &crate::enter::EnterError) -> Option<i32> {
    use crate::enter::EnterError;
    use crate::enter::protocol::FailureKind;
    match err {
        EnterError::Failed {
            kind: FailureKind::NotFound,
            ..
        } => Some(127),
        EnterError::Failed {
            kind: FailureKind::NotExecutable,
            ..
        } => Some(126),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
}
