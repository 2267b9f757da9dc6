//! Work inside a pod's network namespace, on a throwaway thread.
//!
//! `setns(2)` with `CLONE_NEWNET` moves only the calling thread, and a socket
//! belongs to the network namespace it was created in for its whole life. So
//! the work runs on a fresh `std::thread` (never a tokio worker, never
//! `spawn_blocking`: those threads are reused) that joins the namespace
//! through a pidfd of the target (a recycled PID is refused), runs the work
//! (async work on a current-thread runtime of its own, whose sockets are then
//! all the pod's), and exits, taking the namespace with it.

use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, pidfd_open};
use rustix::thread::{ThreadNameSpaceType, move_into_thread_name_spaces};

use crate::process::{ProcRoot, ProcessIdentity};

/// Why work could not run in the pod's network.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("the container's process {pid} is gone")]
    Gone { pid: u32 },
    #[error("failed to join the network namespace of process {pid}")]
    Join {
        pid: u32,
        #[source]
        source: rustix::io::Errno,
    },
    #[error("failed to start a thread for the pod's network")]
    Thread(#[source] std::io::Error),
    #[error("failed to start a runtime in the pod's network")]
    Runtime(#[source] std::io::Error),
    #[error("the work in the pod's network did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the work in the pod's network panicked")]
    Panicked,
}

/// Runs `work` on a new thread inside the network namespace of `target`
/// (checked against `proc` first, so a recycled PID is never joined), and
/// gives its result to the caller without blocking the runtime. `limit`
/// bounds the wait; a thread that overruns it is left to finish on its own.
pub async fn run<T, F>(
    proc: &ProcRoot,
    target: ProcessIdentity,
    limit: Duration,
    work: F,
) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let pid = target.pid;
    let raw = Pid::from_raw(pid as i32).ok_or(NetnsError::Gone { pid })?;
    let pidfd = pidfd_open(raw, PidfdFlags::empty()).map_err(|_| NetnsError::Gone { pid })?;
    // The pidfd holds the process: if it is still the resolved one now, the
    // namespace joined below is the container's.
    if !proc.is_alive(target) {
        return Err(NetnsError::Gone { pid });
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("nsdebug-netns".into())
        .spawn(move || {
            let joined = move_into_thread_name_spaces(
                std::os::fd::AsFd::as_fd(&pidfd),
                ThreadNameSpaceType::NETWORK,
            );
            drop(pidfd);
            let result = match joined {
                Ok(()) => Ok(work()),
                Err(source) => Err(NetnsError::Join { pid, source }),
            };
            let _ = tx.send(result);
        })
        .map_err(NetnsError::Thread)?;
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(NetnsError::Panicked),
        Err(_) => Err(NetnsError::Timeout(limit)),
    }
}

/// Runs async `work` inside the pod's network on a current-thread runtime of
/// the throwaway thread (every socket it opens is the pod's).
pub async fn run_async<T, F, Fut>(
    proc: &ProcRoot,
    target: ProcessIdentity,
    limit: Duration,
    work: F,
) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    run(proc, target, limit, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(NetnsError::Runtime)?;
        Ok(runtime.block_on(work()))
    })
    .await?
}
