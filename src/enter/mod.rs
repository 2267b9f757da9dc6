//! Entering a container: the only place that calls `setns`, joins cgroups,
//! changes credentials and starts processes inside a container.
//!
//! The work happens in a helper: this same binary re-executed as
//! `nsdebug __enter`, dispatched by `main` before any async runtime or thread
//! exists, because `setns(2)` into a mount namespace is refused to a
//! multithreaded process and a PID namespace only applies to children. The
//! helper:
//!
//! 1. receives an [`EnterRequest`] and the child's stdio pipes over its control
//!    socket (fd 0, `SCM_RIGHTS`), never through argv or the environment;
//! 2. opens a pidfd for the target and checks the process start time, so a
//!    recycled PID is never entered (`pidfd_open(2)`);
//! 3. makes itself non-dumpable, reads what the profile needs from the target
//!    and its runtime spec (credentials, rlimits, seccomp filter compiled to
//!    BPF, LSM label, environment, cgroups, working directory; `confine`),
//!    joins its cgroups and a session cgroup of its own below the container's
//!    (`session_cgroup`), then `setns(pidfd, flags)` into the chosen
//!    namespaces at once;
//! 4. spawns the command (a child, so it is inside the PID namespace) in its own
//!    session with the profile's identity (`identity`) and only its stdio open; a
//!    terminal is made from the container's own `/dev/ptmx` (its devpts, so
//!    `tty` and `stty` work inside) and its master is sent back to the agent;
//! 5. leaves the session cgroup, reports `started`/`exited`, or the error,
//!    back over the control socket, and ends the session cgroup: everything in
//!    it is killed when that socket closes first (hang-up, timeout, shutdown)
//!    and after a privileged or toolbox session; after a `container` one, what
//!    is left runs on in the container's cgroup, as after `kubectl exec`
//!    (docs/session-lifetime.md).
//!
//! [`Enter`] is the agent's side of that conversation; it owns the helpers
//! started ahead of need.
//!
//! One thing is entered without the helper: a network namespace joined by a
//! dedicated thread of the agent that only opens sockets there (name
//! resolution, probes, interface addresses, a packet capture), with the same
//! pidfd pinning ([`netns`]).

mod confine;
mod failure;
mod helper;
mod identity;
mod lsm;
mod namespaces;
pub mod netns;
pub mod protocol;
mod seccomp;
mod session_cgroup;
mod spawn;
mod sys;
mod toolbox;
mod view;

use serde::{Deserialize, Serialize};

use crate::oci::RuntimeSpec;

pub use helper::main as helper_main;
pub use namespaces::{Namespace, NamespaceSet, UnknownNamespace, parse_namespaces};
pub use netns::{NetnsError, join_network_namespace};
pub use spawn::{Enter, EnterError, Entered, Exit, Io, Pty, PtyStream};
pub use toolbox::TARGET_DIR as TOOLBOX_TARGET_DIR;
pub use view::{TOOLBOX_NAMESPACES, View, ViewError};

/// The hidden first argument that makes the binary run as the enter helper.
pub const HELPER_ARG: &str = "__enter";

/// Whose identity the command runs with: part of the wire contract (a run
/// request names it).
pub use nsdebug_wire::Profile;

/// The part of a container's runtime spec an exec in `profile` needs: only
/// the `container` profile applies it.
pub fn runtime_spec_for(profile: Profile, spec: &RuntimeSpec) -> Option<RuntimeSpec> {
    (profile == Profile::Container).then(|| spec.clone())
}

/// What to run, where and as whom: the request the helper receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnterRequest {
    /// Host PID of the container's init process.
    pub pid: u32,
    /// Its start time (`proc(5)` stat field 22): the helper refuses any other process.
    pub start_time: u64,
    /// The container ID, which the target's cgroup paths must name.
    pub container_id: String,
    /// Namespaces to join; `None` joins every one the container has that
    /// differs from the agent's. The user namespace is joined whenever the
    /// container has its own, whatever the list says. Only [`View::choose`]
    /// makes this and `toolbox`; the helper checks them with [`View::check`].
    pub namespaces: Option<NamespaceSet>,
    pub profile: Profile,
    /// argv; `argv[0]` is looked up in the container's `PATH`.
    pub argv: Vec<String>,
    /// Variables added to (or replacing in) the target's environment.
    pub env: Vec<(String, String)>,
    /// Run on a terminal of this size, made inside the container, instead of
    /// three pipes from the agent.
    pub terminal: Option<TerminalSize>,
    /// What the runtime says an exec into the container applies; only sent
    /// for the `container` profile (`None` there reads as not reported).
    pub runtime_spec: Option<RuntimeSpec>,
    /// Toolbox mode: run the tools of this root (the agent's filesystem)
    /// inside the target's namespaces; see [`toolbox`]. `namespaces` is then
    /// [`toolbox::NAMESPACES`].
    #[serde(default)]
    pub toolbox: Option<std::path::PathBuf>,
}

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    pub cols: u16,
    pub rows: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles() {
        assert_eq!(Profile::parse("").unwrap(), Profile::Container);
        assert_eq!(Profile::parse("privileged").unwrap(), Profile::Privileged);
        assert!(Profile::parse("root").is_err());
    }
}
