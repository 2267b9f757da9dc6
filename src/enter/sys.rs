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
    // it passes (identity.rs) only call rustix wrappers of `setsid`, `ioctl`,
    // `mount` (the toolbox's /proc),
    // `setrlimit`/`getrlimit`, `prctl`, `setgroups`, `setres[ug]id`, `capset`,
    // `openat`/`write` and `seccomp` (`install_seccomp_filter`) on data
    // prepared before `fork`.
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

/// Moves the calling process into a new mount namespace of its own
/// (`unshare(2)` with `CLONE_NEWNS`), for the toolbox's private mounts.
pub fn unshare_mount_namespace() -> rustix::io::Result<()> {
    // SAFETY: `unshare_unsafe` is unsafe because `CLONE_FILES` can leave
    // other threads with descriptors that are no longer shared; only
    // `CLONE_NEWNS` is passed, and the helper is single-threaded.
    #[allow(unsafe_code)]
    unsafe {
        rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)
    }
}

/// Installs a classic BPF program as a seccomp filter of the calling thread
/// (`seccomp(2)`, `SECCOMP_SET_MODE_FILTER` with `flags`); on kernels without
/// `seccomp(2)` (before 3.17), through `prctl(PR_SET_SECCOMP)` when no flags
/// are asked for. Only system calls, no allocation: usable after `fork`.
pub fn install_seccomp_filter(
    program: &[libc::sock_filter],
    flags: libc::c_ulong,
) -> io::Result<()> {
    let Ok(len) = u16::try_from(program.len()) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points to `len` initialised instructions borrowed from
    // `program` for the whole call; the kernel copies the program and never
    // writes through the pointer (`seccomp(2)`). The other arguments are integers.
    #[allow(unsafe_code)]
    let result = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if result == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) || flags != 0 {
        return Err(err);
    }
    // SAFETY: as above: `fprog` is valid for the call and only read.
    #[allow(unsafe_code)]
    let result = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A system call with one integer argument, for tests that check what a
/// seccomp filter lets through: `Err(errno)` when it fails.
#[cfg(test)]
pub fn raw_syscall_for_tests(number: libc::c_long, arg: libc::c_long) -> Result<libc::c_long, i32> {
    // SAFETY: the tests pass only calls whose argument is a plain integer
    // (`umask`, `getpriority`, `getpid`, `getppid`): no memory is read or written.
    #[allow(unsafe_code)]
    let result = unsafe { libc::syscall(number, arg) };
    if result == -1 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(result)
    }
}
