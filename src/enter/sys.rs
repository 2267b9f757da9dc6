//! The only `unsafe` code of nsdebug, each use wrapped in a safe function
//! whose contract the caller cannot break.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use tokio::io::unix::AsyncFd;

/// Registers `fd` with the tokio reactor.
pub fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `AsyncFd::register` needs the descriptor to stay open and
    // unchanged while registered. The `OwnedFd` moves into the `AsyncFd`, which
    // owns it until it is dropped (and deregisters first): nothing else can
    // close or replace it.
    #[allow(unsafe_code)]
    let registered = unsafe { AsyncFd::register(fd) };
    registered.map_err(io::Error::from)
}

/// Runs `hook` in the child between `fork` and `exec` (`Command::pre_exec`).
///
/// Only for the enter helper, which is single-threaded: after `fork` the
/// child has a consistent copy of the only thread, so locks and the allocator
/// are in a usable state. `hook` must only make system calls on data it owns.
pub fn before_exec(
    command: &mut Command,
    hook: impl FnMut() -> io::Result<()> + Send + Sync + 'static,
) {
    // SAFETY: the documented hazard of `pre_exec` is code that relies on other
    // threads' state after `fork`; the helper has no other threads (it is
    // dispatched in `main` before any thread or runtime starts), and the hooks
    // it passes only call rustix wrappers of `setsid`, `ioctl`, `prctl`,
    // `setgroups`, `setres[ug]id` and `capset` on data prepared before `fork`.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(hook);
    }
}

/// Marks every descriptor from 3 up close-on-exec (`close_range(2)` with
/// `CLOSE_RANGE_CLOEXEC`), so nothing the helper inherited, from the agent or
/// whatever started the agent, can reach a process inside a container.
pub fn cloexec_from_3() -> io::Result<()> {
    // SAFETY: with CLOSE_RANGE_CLOEXEC nothing is closed, only flagged, so no
    // descriptor owned by a Rust object becomes invalid; the call takes plain
    // integers and touches no memory.
    #[allow(unsafe_code)]
    let result = unsafe {
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
