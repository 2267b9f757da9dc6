//! Pinning a container's process: a pidfd for the PID the agent resolved,
//! kept only if that PID still names the same process in the container's
//! cgroup. Whatever is done through the pidfd afterwards (`setns(2)`, waiting
//! for its exit) can never reach a process that reused the number
//! (`pidfd_open(2)`).

use std::os::fd::OwnedFd;

use rustix::process::{Pid, PidfdFlags, pidfd_open};
use serde::{Deserialize, Serialize};

use super::ProcRoot;

/// A container's init process as the agent resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerProcess {
    /// Host PID.
    pub pid: u32,
    /// Its start time (`proc(5)` stat field 22): any other process is refused.
    pub start_time: u64,
    /// The container ID, which the process's cgroup paths must name.
    pub container_id: String,
}

/// Why a container's process could not be pinned: it is gone or is no
/// longer the container's.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("the container's process {pid} is not a valid PID")]
    InvalidPid { pid: u32 },
    #[error("the container's process {pid} is gone")]
    Gone {
        pid: u32,
        #[source]
        source: rustix::io::Errno,
    },
    #[error("the container's process {pid} has exited; its PID belongs to another process now")]
    Recycled { pid: u32 },
    #[error("the container's process {pid} is not in the cgroup of container {container_id}")]
    NotInCgroup { pid: u32, container_id: String },
}

/// A pidfd for `process`, refused if its PID now names another process.
/// `/proc` is the host's: the agent and its helper run with `hostPID`.
pub fn pin(process: &ContainerProcess) -> Result<OwnedFd, PinError> {
    let pid = process.pid;
    let raw = Pid::from_raw(pid as i32).ok_or(PinError::InvalidPid { pid })?;
    let pidfd =
        pidfd_open(raw, PidfdFlags::empty()).map_err(|source| PinError::Gone { pid, source })?;
    // The pidfd now holds the process; check it is the one the agent resolved.
    let proc_root = ProcRoot::new("/proc");
    match proc_root.identity(pid) {
        Ok(now) if now.start_time == process.start_time => {}
        _ => return Err(PinError::Recycled { pid }),
    }
    match proc_root.cgroup_mentions(pid, &process.container_id) {
        Ok(true) => Ok(pidfd),
        _ => Err(PinError::NotInCgroup {
            pid,
            container_id: process.container_id.clone(),
        }),
    }
}

/// True once the pinned process has exited: a pidfd polls readable then
/// (`pidfd_open(2)`). Does not wait.
pub fn has_exited(pidfd: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&now)), Ok(n) if n > 0)
}

#[cfg(test)]
impl ContainerProcess {
    /// This test process, as if it were a container's.
    pub(crate) fn this_one() -> Self {
        let identity = crate::process::ProcRoot::new("/proc")
            .identity(std::process::id())
            .unwrap();
        ContainerProcess {
            pid: identity.pid,
            start_time: identity.start_time,
            container_id: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_pinned_and_has_not_exited() {
        // Every cgroup path mentions the empty string.
        let pidfd = pin(&ContainerProcess::this_one()).unwrap();
        assert!(!has_exited(&pidfd));
    }

    #[test]
    fn another_start_time_or_cgroup_is_refused() {
        let mut other = ContainerProcess::this_one();
        other.start_time += 1;
        assert!(matches!(pin(&other), Err(PinError::Recycled { .. })));
        let mut elsewhere = ContainerProcess::this_one();
        elsewhere.container_id = "no-such-container-0123456789".into();
        assert!(matches!(pin(&elsewhere), Err(PinError::NotInCgroup { .. })));
    }

    #[test]
    fn an_exited_process_is_seen_through_its_pidfd() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let identity = ProcRoot::new("/proc").identity(child.id()).unwrap();
        let pidfd = pin(&ContainerProcess {
            pid: identity.pid,
            start_time: identity.start_time,
            container_id: String::new(),
        })
        .unwrap();
        assert!(!has_exited(&pidfd));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(has_exited(&pidfd));
    }

    /// Starts `sleep 60` with PID `pid` (free now): `ns_last_pid` (`proc(5)`,
    /// root only) is set to the PID before and a child forked; any other
    /// process forking meanwhile takes it first, so this retries.
    fn sleep_with_pid(pid: u32) -> std::process::Child {
        for _ in 0..2000 {
            std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
            let mut child = std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap();
            if child.id() == pid {
                return child;
            }
            child.kill().unwrap();
            child.wait().unwrap();
        }
        panic!("PID {pid} was always taken first");
    }

    #[test]
    fn a_pid_reused_by_another_process_is_refused() {
        let mut original = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let resolved = ProcRoot::new("/proc").identity(original.id()).unwrap();
        let resolved = ContainerProcess {
            pid: resolved.pid,
            start_time: resolved.start_time,
            container_id: String::new(),
        };
        // Start times count clock ticks (1/100 s): the impostor must start in
        // a later one, as it would after a container's init that ran at all.
        std::thread::sleep(std::time::Duration::from_millis(30));
        original.kill().unwrap();
        original.wait().unwrap();
        let mut impostor = sleep_with_pid(resolved.pid);
        assert!(
            matches!(pin(&resolved), Err(PinError::Recycled { pid }) if pid == resolved.pid),
            "the impostor with the same PID was pinned"
        );
        impostor.kill().unwrap();
        impostor.wait().unwrap();
    }
}
