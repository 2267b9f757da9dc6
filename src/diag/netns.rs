//! Work inside a pod's network namespace, on a throwaway thread.
//!
//! `setns(2)` with `CLONE_NEWNET` moves only the calling thread, and a socket
//! belongs to the network namespace it was created in for its whole life. So
//! the work runs on a fresh `std::thread` (never a tokio worker, never
//! `spawn_blocking`: those threads are reused) that joins the namespace with
//! [`crate::enter::join_network_namespace`] (a pidfd of the container's
//! init, its start time and cgroup checked, so a recycled PID is refused),
//! runs the work (async work on a current-thread runtime of its own, whose
//! sockets are then all the pod's), and exits, taking the namespace with it.

use std::time::Duration;

use crate::enter::join_network_namespace;
use crate::process::ContainerProcess;

/// Why work could not run in the pod's network.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("the container's process {pid} is gone")]
    Gone { pid: u32 },
    #[error("failed to join the pod's network namespace")]
    Join(#[source] crate::enter::NetnsError),
    #[error("failed to start a thread for the pod's network")]
    Thread(#[source] std::io::Error),
    #[error("failed to start a runtime in the pod's network")]
    Runtime(#[source] std::io::Error),
    #[error("the work in the pod's network did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the work in the pod's network panicked")]
    Panicked,
}

/// Runs `work` on a new thread inside the network namespace of `process`,
/// and gives its result to the caller without blocking the runtime. `limit`
/// bounds the wait; a thread that overruns it is left to finish on its own.
pub async fn run<T, F>(process: ContainerProcess, limit: Duration, work: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let pid = process.pid;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("nsdebug-netns".into())
        .spawn(move || {
            let result = match join_network_namespace(&process) {
                Ok(_pidfd) => Ok(work()),
                Err(err) if err.is_target_gone() => Err(NetnsError::Gone { pid }),
                Err(err) => Err(NetnsError::Join(err)),
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
    process: ContainerProcess,
    limit: Duration,
    work: F,
) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    run(process, limit, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(NetnsError::Runtime)?;
        Ok(runtime.block_on(work()))
    })
    .await?
}
