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
//! refuses to run on a thread inside a tokio runtime.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags, open};
use rustix::thread::{LinkNameSpaceType, ThreadNameSpaceType};

use crate::process::{ContainerProcess, PinError, ProcRoot, pin};

/// Why the calling thread could not join a container's network namespace.
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
    #[error("setns into the container's network namespace failed")]
    Setns(#[source] rustix::io::Errno),
}

impl NetnsError {
    /// True when the container's process is gone (a 409 for the caller).
    pub fn is_target_gone(&self) -> bool {
        matches!(self, Self::TargetGone(_))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> ContainerProcess {
        let identity = ProcRoot::new("/proc").identity(std::process::id()).unwrap();
        ContainerProcess {
            pid: identity.pid,
            start_time: identity.start_time,
            container_id: String::new(),
        }
    }

    #[tokio::test]
    async fn a_runtime_thread_is_refused() {
        let err = join_network_namespace(&me()).unwrap_err();
        assert!(matches!(err, NetnsError::RuntimeThread), "{err:?}");
    }

    #[test]
    fn a_plain_thread_may_join() {
        // Joining our own namespace is a no-op for the namespace, but goes
        // through every check and the setns call.
        let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let process = me();
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
