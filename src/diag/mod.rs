//! Built-in diagnostics: answers about a target as JSON, with no tool in the
//! container (they work on distroless images). Most read the host's `/proc`
//! for the target's processes; what must happen inside the pod's network
//! (interface addresses, name resolution, probes) runs on a throwaway thread
//! that joined it ([`crate::enter::netns`]). A packet capture ([`capture`]) streams a
//! pcap file instead of JSON, from a thread of its own in the pod's network.

pub mod capture;
pub mod cgroup;
pub mod dns;
pub mod host;
pub mod network;
pub mod probe;
pub mod process_files;
pub mod processes;
pub mod sockets;

/// Why a diagnostic could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("the container's process {pid} is gone")]
    Gone { pid: u32 },
    #[error("no process with PID {pid} in the container (its PID namespace and its cgroup)")]
    NoSuchProcess { pid: u32 },
    #[error("failed to {what}")]
    Proc {
        what: String,
        #[source]
        source: procfs::ProcError,
    },
    #[error("failed to read {what}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] crate::process::CgroupError),
    #[error(transparent)]
    Netns(#[from] crate::enter::NetnsError),
}

impl DiagError {
    /// The container's process is gone: read from `/proc`, or found gone
    /// when its network namespace was to be joined.
    pub fn is_target_gone(&self) -> bool {
        match self {
            Self::Gone { .. } => true,
            Self::Netns(err) => err.is_target_gone(),
            _ => false,
        }
    }
}
