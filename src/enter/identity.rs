//! The steps the command's process takes between `fork` and `exec`: its own
//! session and terminal, then (in the `container` profile) the container's
//! confinement, in runc's order:
//!
//! 1. rlimits, while it may still raise them (`setrlimit(2)`);
//! 2. `no_new_privs`, if the container has it;
//! 3. without `no_new_privs`, the seccomp filter now: installing one needs
//!    `CAP_SYS_ADMIN` then (`seccomp(2)`), so the filter must allow what
//!    follows, as it must for runc;
//! 4. the bounding set, groups, gid, uid, capability sets and ambient set;
//! 5. the AppArmor/SELinux label for the `execve`;
//! 6. the parent-death signal (credential changes clear it, `prctl(2)`);
//! 7. with `no_new_privs`, the seccomp filter last, so it sees as few of
//!    these calls as possible.
//!
//! Only system calls on data prepared before `fork`. A failing step writes its
//! number to a pipe before failing, so the helper can say which one failed.

use std::os::fd::OwnedFd;

use rustix::process::{Gid, Signal, Uid};
use rustix::thread::{self as t, CapabilitySet, CapabilitySets};

use super::confine::Confinement;

/// One step of [`Identity::apply`], as reported over the step pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    Session = 1,
    Terminal,
    Proc,
    Rlimits,
    NoNewPrivs,
    Seccomp,
    BoundingSet,
    Groups,
    Gid,
    Uid,
    Capabilities,
    AmbientSet,
    Label,
    DeathSignal,
}

impl Step {
    const ALL: [Step; 14] = [
        Step::Session,
        Step::Terminal,
        Step::Proc,
        Step::Rlimits,
        Step::NoNewPrivs,
        Step::Seccomp,
        Step::BoundingSet,
        Step::Groups,
        Step::Gid,
        Step::Uid,
        Step::Capabilities,
        Step::AmbientSet,
        Step::Label,
        Step::DeathSignal,
    ];

    pub fn from_byte(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as u8 == byte)
    }

    /// What the step does, for "failed to ...".
    pub fn describe(self) -> &'static str {
        match self {
            Step::Session => "start a session",
            Step::Terminal => "take the terminal",
            Step::Proc => "mount the target's /proc in the toolbox",
            Step::Rlimits => "set the container's resource limits",
            Step::NoNewPrivs => "set no_new_privs",
            Step::Seccomp => "install the container's seccomp filter",
            Step::BoundingSet => "drop capabilities from the bounding set",
            Step::Groups => "set the supplementary groups",
            Step::Gid => "set the group ID",
            Step::Uid => "set the user ID",
            Step::Capabilities => "set the capability sets",
            Step::AmbientSet => "raise ambient capabilities",
            Step::Label => "set the container's AppArmor/SELinux label",
            Step::DeathSignal => "set the parent-death signal",
        }
    }

    /// True for the steps that run after an early seccomp filter.
    pub fn follows_early_seccomp(self) -> bool {
        (self as u8) > (Step::Seccomp as u8)
    }
}

/// The identity the command takes on between `fork` and `exec`.
pub struct Identity {
    tty: bool,
    /// Toolbox mode: the procfs the command mounts first.
    proc_mount: Option<super::toolbox::ProcMount>,
    /// `None` in the privileged profile.
    confinement: Option<Confinement>,
    groups: Vec<Gid>,
    /// The write end of the step pipe.
    steps: OwnedFd,
}

impl Identity {
    pub fn new(
        confinement: Option<Confinement>,
        tty: bool,
        proc_mount: Option<super::toolbox::ProcMount>,
        steps: OwnedFd,
    ) -> Self {
        let groups = confinement
            .as_ref()
            .map(|c| {
                c.credentials
                    .groups
                    .iter()
                    .map(|g| Gid::from_raw(*g))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            tty,
            proc_mount,
            confinement,
            groups,
            steps,
        }
    }

    /// True when the filter goes in before the credentials change.
    pub fn seccomp_first(&self) -> bool {
        self.confinement
            .as_ref()
            .is_some_and(|c| c.seccomp.is_some() && !c.credentials.no_new_privs)
    }

    fn step<T>(&self, step: Step, result: std::io::Result<T>) -> std::io::Result<T> {
        if result.is_err() {
            let _ = rustix::io::write(&self.steps, &[step as u8]);
        }
        result
    }

    /// Runs in the child after `fork`; see the module for the order.
    pub fn apply(&self) -> std::io::Result<()> {
        self.step(Step::Session, rustix::process::setsid().map_err(Into::into))?;
        if self.tty {
            let taken = rustix::process::ioctl_tiocsctty(rustix::stdio::stdin());
            self.step(Step::Terminal, taken.map_err(Into::into))?;
        }
        // The first process in the target's PID namespace mounts its procfs,
        // while it still has the helper's privileges.
        if let Some(proc) = &self.proc_mount {
            self.step(Step::Proc, proc.mount())?;
        }
        if let Some(confinement) = &self.confinement {
            self.confine(confinement)?;
        }
        let death = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
        self.step(Step::DeathSignal, death.map_err(Into::into))?;
        if let Some(program) = self.confinement.as_ref().and_then(|c| c.seccomp.as_ref())
            && !self.seccomp_first()
        {
            self.step(Step::Seccomp, program.install())?;
        }
        Ok(())
    }

    fn confine(&self, confinement: &Confinement) -> std::io::Result<()> {
        let creds = &confinement.credentials;
        for (resource, limit) in &confinement.rlimits {
            let set = match rustix::process::setrlimit(*resource, *limit) {
                // Raising a hard limit above the helper's needs CAP_SYS_RESOURCE
                // (`setrlimit(2)`): without it, the helper's hard limit is
                // the ceiling. Less than the container has, never more.
                Err(rustix::io::Errno::PERM) => {
                    let ceiling = rustix::process::getrlimit(*resource).maximum;
                    rustix::process::setrlimit(*resource, clamp(limit, ceiling))
                }
                other => other,
            };
            self.step(Step::Rlimits, set.map_err(Into::into))?;
        }
        if creds.no_new_privs {
            self.step(
                Step::NoNewPrivs,
                t::set_no_new_privs(true).map_err(Into::into),
            )?;
        }
        if let Some(program) = &confinement.seccomp
            && self.seccomp_first()
        {
            self.step(Step::Seccomp, program.install())?;
        }
        // The bounding set first, while CAP_SETPCAP is still held. Dropping a
        // capability that is not there is a no-op; EINVAL means past the
        // kernel's last capability (`prctl(2)` PR_CAPBSET_DROP).
        for bit in 0..64u32 {
            if creds.bounding & (1u64 << bit) != 0 {
                continue;
            }
            match t::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(1 << bit))
            {
                Ok(()) => {}
                Err(rustix::io::Errno::INVAL) => break,
                Err(e) => return self.step(Step::BoundingSet, Err(e.into())),
            }
        }
        self.step(
            Step::Groups,
            t::set_thread_groups(&self.groups).map_err(Into::into),
        )?;
        self.step(
            Step::Uid,
            t::set_keep_capabilities(true).map_err(Into::into),
        )?;
        let gid = Gid::from_raw(creds.gid);
        self.step(
            Step::Gid,
            t::set_thread_res_gid(gid, gid, gid).map_err(Into::into),
        )?;
        let uid = Uid::from_raw(creds.uid);
        self.step(
            Step::Uid,
            t::set_thread_res_uid(uid, uid, uid).map_err(Into::into),
        )?;
        self.step(
            Step::Uid,
            t::set_keep_capabilities(false).map_err(Into::into),
        )?;
        let sets = CapabilitySets {
            effective: CapabilitySet::from_bits_retain(creds.effective),
            permitted: CapabilitySet::from_bits_retain(creds.permitted),
            inheritable: CapabilitySet::from_bits_retain(creds.inheritable),
        };
        self.step(
            Step::Capabilities,
            t::set_capabilities(None, sets).map_err(Into::into),
        )?;
        for bit in 0..64u32 {
            if creds.ambient & (1u64 << bit) != 0 {
                let raised = t::configure_capability_in_ambient_set(
                    CapabilitySet::from_bits_retain(1u64 << bit),
                    true,
                );
                self.step(Step::AmbientSet, raised.map_err(Into::into))?;
            }
        }
        self.step(Step::Label, confinement.lsm.apply())?;
        Ok(())
    }
}

/// `limit` with neither value above `ceiling` (`None` is unlimited).
fn clamp(limit: &rustix::process::Rlimit, ceiling: Option<u64>) -> rustix::process::Rlimit {
    let lower = |value: Option<u64>| match (value, ceiling) {
        (None, c) => c,
        (v, None) => v,
        (Some(v), Some(c)) => Some(v.min(c)),
    };
    rustix::process::Rlimit {
        current: lower(limit.current),
        maximum: lower(limit.maximum),
    }
}

/// The message for a failed step: `errno` is what the step failed with.
pub fn failure_message(step: Step, seccomp_first: bool, err: &std::io::Error) -> String {
    let what = step.describe();
    if seccomp_first && step.follows_early_seccomp() {
        format!(
            "failed to {what} after installing the container's seccomp filter: {err}. The container does not set no_new_privs, so the filter is installed before the command's privileges are dropped (as runc does), and this filter seems not to allow that; the privileged profile (profile=privileged) enters without it"
        )
    } else {
        format!("failed to {what} for the command: {err}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_clamped_to_a_ceiling() {
        use rustix::process::Rlimit;
        let wanted = Rlimit {
            current: Some(20000),
            maximum: None,
        };
        let clamped = clamp(&wanted, Some(888));
        assert_eq!((clamped.current, clamped.maximum), (Some(888), Some(888)));
        let low = Rlimit {
            current: Some(5),
            maximum: Some(10),
        };
        let same = clamp(&low, Some(888));
        assert_eq!((same.current, same.maximum), (Some(5), Some(10)));
        let open = clamp(&wanted, None);
        assert_eq!((open.current, open.maximum), (Some(20000), None));
    }

    #[test]
    fn steps_round_trip_through_a_byte() {
        for step in Step::ALL {
            assert_eq!(Step::from_byte(step as u8), Some(step));
        }
        assert_eq!(Step::from_byte(0), None);
        assert_eq!(Step::from_byte(200), None);
    }

    #[test]
    fn a_step_after_an_early_filter_blames_the_filter() {
        let eperm = std::io::Error::from_raw_os_error(libc::EPERM);
        let message = failure_message(Step::Uid, true, &eperm);
        assert!(
            message.starts_with(
                "failed to set the user ID after installing the container's seccomp filter: Operation not permitted"
            ),
            "{message}"
        );
        assert!(message.contains("no_new_privs"), "{message}");
        assert_eq!(
            failure_message(Step::Rlimits, true, &eperm),
            "failed to set the container's resource limits for the command: Operation not permitted (os error 1)"
        );
        assert!(!failure_message(Step::Uid, false, &eperm).contains("seccomp"));
    }
}
