//! Joining a container's network namespace from a thread of the agent itself.
//!
//! Everything that runs inside a container goes through the helper process
//! (see the module above). A diagnostic that needs nothing but a socket in
//! the pod's network (a packet capture) does not: a socket belongs to the
//! network namespace it was created in for its whole life
//! (`network_namespaces(7)`), so a throwaway `std::thread` joins the
//! namespace, creates its socket and never needs to leave. `setns(2)` with
//! `CLONE_NEWNET` is allowed in a multithreaded process (only mount and user
//! namespaces are refused) and changes only the calling thread.
//!
//! The thread must be one the caller spawned for this and that ends with its
//! work: never a tokio worker or `spawn_blocking` thread, which would carry
//! the namespace into unrelated tasks afterwards. [`join_network_namespace`]
//! refuses to run on a thread inside a tokio runtime. [`run`] and
//! [`run_async`] start such a thread, run work there (async work on a
//! current-thread runtime of its own, whose sockets are then all the pod's)
//! and hand its result to the caller without blocking the runtime; the
//! thread exits afterwards, taking the namespace with it. A packet capture
//! joins on a thread of its own instead, which it keeps for the capture.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::fs::{Mode, OFlags, open};
use rustix::thread::{LinkNameSpaceType, ThreadNameSpaceType};

use crate::process::{ContainerProcess, PinError, ProcRoot, pin};

/// Why work could not run in a container's network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The process is gone or no longer the container's.
    #[error("the container cannot be entered")]
    TargetGone(#[from] PinError),
    #[error("refusing to change the network namespace of a thread of the async runtime")]
    RuntimeThread,
    #[error("failed to open '{path}'")]
    OpenNamespaceFile {
        path: String,
        #[source]
        source: rustix::io::Errno,
    },
    /// The namespace joined is not the one the request was admitted for.
    #[error("the container's network namespace changed since it was checked")]
    NetworkChanged,
    #[error("setns into the container's network namespace failed")]
    Setns(#[source] rustix::io::Errno),
    #[error("failed to start a thread for the pod's network")]
    Thread(#[source] std::io::Error),
    #[error("failed to start a runtime in the pod's network")]
    Runtime(#[source] std::io::Error),
    #[error("the work in the pod's network did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the work in the pod's network panicked")]
    Panicked,
}

impl NetnsError {
    /// True when the container's process is gone (a 409 for the caller).
    pub fn is_target_gone(&self) -> bool {
        matches!(self, Self::TargetGone(_) | Self::NetworkChanged)
    }
}

/// Moves the calling thread into the network namespace of `process` for the
/// rest of its life, and returns the process's pidfd (it polls readable when
/// the process exits: see [`crate::process::has_exited`]).
pub fn join_network_namespace(process: &ContainerProcess) -> Result<OwnedFd, NetnsError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(NetnsError::RuntimeThread);
    }
    let pidfd = pin(process)?;
    match rustix::thread::move_into_thread_name_spaces(pidfd.as_fd(), ThreadNameSpaceType::NETWORK)
    {
        Ok(()) => return Ok(pidfd),
        // Before Linux 5.8 setns(2) takes no pidfd: the namespace file then.
        Err(rustix::io::Errno::INVAL) => {}
        Err(errno) => return Err(NetnsError::Setns(errno)),
    }
    let path = format!("/proc/{}/ns/net", process.pid);
    let file = open(
        path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| NetnsError::OpenNamespaceFile {
        path: path.clone(),
        source,
    })?;
    // Opened by PID: make sure it was still the same process.
    match ProcRoot::new("/proc").identity(process.pid) {
        Ok(now) if now.start_time == process.start_time => {}
        _ => return Err(PinError::Recycled { pid: process.pid }.into()),
    }
    rustix::thread::move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(NetnsError::Setns)?;
    Ok(pidfd)
}

/// Runs `work` on a new thread inside the network namespace of `process`,
/// and gives its result to the caller without blocking the runtime. `limit`
/// bounds the wait; a thread that overruns it is left to finish on its own.
pub async fn run<T, F>(process: ContainerProcess, limit: Duration, work: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("nsdebug-netns".into())
        .spawn(move || {
            let result = join_network_namespace(&process).map(|_pidfd| work());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_runtime_thread_is_refused() {
        let err = join_network_namespace(&ContainerProcess::this_one()).unwrap_err();
        assert!(matches!(err, NetnsError::RuntimeThread), "{err:?}");
    }

    #[test]
    fn a_plain_thread_may_join() {
        // Joining our own namespace is a no-op for the namespace, but goes
        // through every check and the setns call.
        let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let process = ContainerProcess::this_one();
        let joined = std::thread::spawn(move || {
            join_network_namespace(&process).map(|_| ())?;
            Ok::<_, NetnsError>(std::fs::read_link("/proc/thread-self/ns/net").unwrap())
        })
        .join()
        .unwrap();
        match joined {
            Ok(link) => assert_eq!(link, own),
            // Unit tests may run without CAP_SYS_ADMIN.
            Err(NetnsError::Setns(rustix::io::Errno::PERM)) => {}
            Err(err) => panic!("{err:?}"),
        }
    }
}
