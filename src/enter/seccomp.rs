//! A container's seccomp profile (`linux.seccomp` of its OCI spec) compiled to
//! the classic BPF program the kernel runs (`seccomp(2)`), the way runc does
//! it: with libseccomp, the library runc, crun and youki use.
//!
//! The helper compiles before `fork` (libseccomp allocates); the child only
//! hands the finished instructions to `seccomp(2)` ([`Program::install`]).
//! Everything runc honours is honoured: the default action and errno, the
//! architectures, each syscall group's action, errno and argument conditions,
//! the filter flags. What cannot be reproduced refuses the session instead of
//! running without the filter: `SCMP_ACT_NOTIFY` (it needs the runtime's
//! seccomp agent) and anything libseccomp rejects.
//!
//! Like runc, syscall names libseccomp does not know are skipped (the kernel it
//! was built for has no such call to filter), and a rule whose action is the
//! default action is left out (libseccomp refuses those). Unlike runc, no stub
//! answers `ENOSYS` for syscalls newer than the profile: those get the default
//! action, which is stricter, never looser.

use std::io::{Read, Seek};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

/// The kernel's limit on one filter's length (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// Why a profile could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error(
        "the profile uses SCMP_ACT_NOTIFY, which needs the runtime's seccomp agent; nsdebug cannot reproduce it"
    )]
    Notify,
    #[error("errno {value} of {action} is out of range")]
    ErrnoOutOfRange { action: String, value: u32 },
    #[error("architecture {arch} is not supported by libseccomp")]
    Architecture {
        arch: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("libseccomp refused the rule for {syscall}")]
    Rule {
        syscall: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("libseccomp failed to {what}")]
    Library {
        what: &'static str,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("failed to {what} the compiled filter")]
    Export {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the compiled filter has {0} instructions; the kernel takes at most 4096")]
    TooLong(usize),
}

/// A compiled filter, ready to install.
#[derive(Debug)]
pub struct Program {
    instructions: Vec<libc::sock_filter>,
    /// `SECCOMP_FILTER_FLAG_*` for `seccomp(2)`.
    flags: libc::c_ulong,
}

impl Program {
    /// Installs the filter on the calling thread; only raw system calls, so
    /// safe between `fork` and `exec`. Without `no_new_privs` it needs
    /// `CAP_SYS_ADMIN` (`seccomp(2)`).
    pub fn install(&self) -> std::io::Result<()> {
        super::sys::install_seccomp_filter(&self.instructions, self.flags)
    }
}

/// Compiles `profile` for this machine's architectures.
pub fn compile(profile: &LinuxSeccomp) -> Result<Program, SeccompError> {
    let library = |what| move |source| SeccompError::Library { what, source };
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut filter = ScmpFilterContext::new(default).map_err(library("create a filter"))?;
    for arch in profile.architectures().iter().flatten() {
        // The spec's names are libseccomp's (`SCMP_ARCH_X86_64`), as serde writes them.
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{arch:?}"));
        let parsed: ScmpArch = name.parse().map_err(|source| SeccompError::Architecture {
            arch: name.clone(),
            source,
        })?;
        filter
            .add_arch(parsed)
            .map_err(|source| SeccompError::Architecture { arch: name, source })?;
    }
    for group in profile.syscalls().iter().flatten() {
        let wanted = action(group.action(), group.errno_ret())?;
        if wanted == default {
            continue;
        }
        let conditions = group.args().as_deref().unwrap_or_default();
        for name in group.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            add_rule(&mut filter, wanted, syscall, conditions).map_err(|source| {
                SeccompError::Rule {
                    syscall: name.clone(),
                    source,
                }
            })?;
        }
    }
    let flags = profile
        .flags()
        .iter()
        .flatten()
        .map(|flag| match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // One thread: nothing to synchronise, but it is what was asked.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            // Qualifies a notification listener, which is never created here
            // (SCMP_ACT_NOTIFY is refused); the kernel rejects it without one.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        })
        .fold(0, |all, flag| all | flag);
    let instructions = export(&filter)?;
    Ok(Program {
        instructions,
        flags,
    })
}

/// The libseccomp action for an OCI action, with runc's defaults: `EPERM` for
/// `SCMP_ACT_ERRNO` and `SCMP_ACT_TRACE` without a value, `SCMP_ACT_KILL` as
/// killing the thread.
fn action(action: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<ScmpAction, SeccompError> {
    let value = |name: &str| {
        let value = errno_ret.unwrap_or(libc::EPERM as u32);
        u16::try_from(value).map_err(|_| SeccompError::ErrnoOutOfRange {
            action: name.to_string(),
            value,
        })
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(value("SCMP_ACT_ERRNO")?.into()),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(value("SCMP_ACT_TRACE")?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => return Err(SeccompError::Notify),
    })
}

/// Adds one syscall's rule with runc's reading of `args`: all conditions in one
/// rule (they must all hold), except when two name the same argument, where
/// each becomes a rule of its own (any may hold), as before runc 1.0.
fn add_rule(
    filter: &mut ScmpFilterContext,
    action: ScmpAction,
    syscall: ScmpSyscall,
    args: &[LinuxSeccompArg],
) -> Result<(), libseccomp::error::SeccompError> {
    if args.is_empty() {
        filter.add_rule(action, syscall)?;
        return Ok(());
    }
    let conditions: Vec<ScmpArgCompare> = args.iter().map(condition).collect();
    let repeats_an_argument = args
        .iter()
        .enumerate()
        .any(|(i, a)| args[..i].iter().any(|b| b.index() == a.index()));
    if repeats_an_argument {
        for one in &conditions {
            filter.add_rule_conditional(action, syscall, std::slice::from_ref(one))?;
        }
    } else {
        filter.add_rule_conditional(action, syscall, &conditions)?;
    }
    Ok(())
}

/// One argument condition; `SCMP_CMP_MASKED_EQ` takes `value` as the mask and
/// `valueTwo` as what the masked argument must equal (`seccomp_rule_add(3)`).
fn condition(arg: &LinuxSeccompArg) -> ScmpArgCompare {
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(arg.value()),
    };
    let datum = match arg.op() {
        LinuxSeccompOperator::ScmpCmpMaskedEq => arg.value_two().unwrap_or(0),
        _ => arg.value(),
    };
    ScmpArgCompare::new(arg.index() as u32, op, datum)
}

/// The filter as BPF instructions, through a memfd (libseccomp 2.5 exports to
/// a descriptor only).
fn export(filter: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let io = |what| move |source| SeccompError::Export { what, source };
    let memfd = rustix::fs::memfd_create("nsdebug-seccomp", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| io("create a memfd for")(e.into()))?;
    filter
        .export_bpf(&memfd)
        .map_err(|source| SeccompError::Library {
            what: "export the filter",
            source,
        })?;
    let mut file = std::fs::File::from(memfd);
    file.rewind().map_err(io("rewind"))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io("read"))?;
    // struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; } in native byte order.
    let instructions: Vec<libc::sock_filter> = bytes
        .chunks_exact(8)
        .map(|b| libc::sock_filter {
            code: u16::from_ne_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        })
        .collect();
    if instructions.is_empty() || instructions.len() > MAX_INSTRUCTIONS {
        return Err(SeccompError::TooLong(instructions.len()));
    }
    Ok(instructions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn profile(value: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(value).unwrap()
    }

    /// Installs `program` on a throwaway thread (filters and no_new_privs are
    /// per thread, `seccomp(2)`), runs `probe` there and returns its result.
    fn under_filter<T: Send + 'static>(
        program: Program,
        probe: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        std::thread::spawn(move || {
            rustix::thread::set_no_new_privs(true).unwrap();
            program.install().unwrap();
            probe()
        })
        .join()
        .unwrap()
    }

    fn raw(nr: libc::c_long, arg: libc::c_long) -> Result<libc::c_long, i32> {
        super::super::sys::raw_syscall_for_tests(nr, arg)
    }

    #[test]
    fn errno_rules_are_enforced_by_the_kernel() {
        let program = compile(&profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat", "no_such_syscall_here"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        })))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let (mkdir, getppid, write) = under_filter(program, move || {
            (
                std::fs::create_dir(path.join("x")).map_err(|e| e.raw_os_error()),
                raw(libc::SYS_getppid, 0),
                std::fs::write(path.join("y"), b"ok").is_ok(),
            )
        });
        assert_eq!(mkdir, Err(Some(libc::EPERM)), "the default errno is EPERM");
        assert_eq!(getppid, Err(libc::ENOSYS), "errnoRet 38");
        assert!(write, "calls the profile does not name are allowed");
        assert!(
            raw(libc::SYS_getppid, 0).is_ok(),
            "other threads are not filtered"
        );
    }

    #[test]
    fn argument_conditions_and_a_deny_by_default_profile() {
        // Deny by default, allow what a Rust thread needs, and allow
        // `umask` only for the value 0o022: the condition decides.
        let allowed = [
            "read",
            "write",
            "close",
            "exit",
            "exit_group",
            "futex",
            "munmap",
            "mmap",
            "madvise",
            "sigaltstack",
            "rt_sigprocmask",
            "rt_sigreturn",
            "sched_yield",
            "rseq",
            "set_robust_list",
            "brk",
            "getrandom",
            "mprotect",
        ];
        let program = compile(&profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "syscalls": [
                {"names": allowed, "action": "SCMP_ACT_ALLOW"},
                {"names": ["umask"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0o022, "op": "SCMP_CMP_EQ"}]},
                {"names": ["getpriority"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0xff, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        })))
        .unwrap();
        let results = under_filter(program, || {
            [
                raw(libc::SYS_umask, 0o022),
                raw(libc::SYS_umask, 0o077),
                raw(libc::SYS_getpriority, libc::PRIO_PROCESS as libc::c_long),
                raw(libc::SYS_getpriority, libc::PRIO_PGRP as libc::c_long),
                raw(libc::SYS_getpid, 0),
            ]
        });
        let [same_umask, other_umask, masked_zero, masked_one, getpid] = results;
        assert!(same_umask.is_ok(), "{same_umask:?}");
        assert_eq!(other_umask, Err(libc::EPERM));
        assert!(
            masked_zero.is_ok(),
            "PRIO_PROCESS & 0xff == 0: {masked_zero:?}"
        );
        assert_eq!(masked_one, Err(libc::EPERM), "PRIO_PGRP & 0xff != 0");
        assert_eq!(getpid, Err(libc::EPERM), "denied by default, errno 1");
    }

    #[test]
    fn containerds_recorded_default_profile() {
        let info: serde_json::Value = serde_json::from_str(include_str!(
            "../cri/testdata/containerd-1.6-runtime-default.json"
        ))
        .unwrap();
        let program = compile(&profile(info["runtimeSpec"]["linux"]["seccomp"].clone())).unwrap();
        let (unshare, getpid) = under_filter(program, || {
            (raw(libc::SYS_unshare, 0), raw(libc::SYS_getpid, 0))
        });
        assert_eq!(unshare, Err(libc::EPERM), "not in the allow list");
        assert!(getpid.is_ok());
        assert!(
            raw(libc::SYS_unshare, 0).is_ok(),
            "unshare(0) is a no-op unfiltered"
        );
    }

    #[test]
    fn what_cannot_be_reproduced_is_an_error() {
        let notify = compile(&profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        })));
        assert!(matches!(notify, Err(SeccompError::Notify)), "{notify:?}");
        let errno = compile(&profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000
        })));
        assert_eq!(
            errno.unwrap_err().to_string(),
            "errno 70000 of SCMP_ACT_ERRNO is out of range"
        );
        let index = compile(&profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]
        })));
        let err = index.unwrap_err();
        assert!(
            matches!(err, SeccompError::Rule { ref syscall, .. } if syscall == "mkdir"),
            "{err:?}"
        );
    }
}
