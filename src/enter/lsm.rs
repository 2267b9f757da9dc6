//! The container's AppArmor profile or SELinux label for the command, the way
//! runc applies them: by asking the kernel to switch at the next `execve`
//! (`/proc/thread-self/attr/apparmor/exec`, `/proc/thread-self/attr/exec`,
//! `proc(5)`).
//!
//! A label only applies when its LSM is enabled on the node; where it is not,
//! the container itself runs without it (runc skips it too), so there is
//! nothing to reproduce. AppArmor's `unconfined` needs no switch either. The
//! files are opened in the host's `/proc`, held since before the helper
//! entered the container: a container that mounted something else over its
//! own `/proc` cannot redirect the write.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, openat};

/// The labels the container's processes run with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub apparmor_profile: Option<String>,
    pub selinux_label: Option<String>,
}

/// What to write before `execve`: the values, decided before `fork`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// `exec <profile>` for AppArmor's exec attribute.
    pub apparmor: Option<Vec<u8>>,
    /// The label for SELinux's exec attribute.
    pub selinux: Option<Vec<u8>>,
}

/// True when AppArmor is enabled (`<sys>/module/apparmor/parameters/enabled`
/// says `Y`, as runc checks).
pub fn apparmor_enabled(sys: &Path) -> bool {
    std::fs::read(sys.join("module/apparmor/parameters/enabled"))
        .is_ok_and(|v| v.first() == Some(&b'Y'))
}

/// True when SELinux is enabled: selinuxfs is there (`<sys>/fs/selinux/enforce`).
pub fn selinux_enabled(sys: &Path) -> bool {
    sys.join("fs/selinux/enforce").exists()
}

/// What the command needs so it runs with `labels`, on a node whose sysfs is
/// at `sys`.
pub fn decide(sys: &Path, labels: &Labels) -> Decision {
    let apparmor = labels
        .apparmor_profile
        .as_deref()
        .filter(|p| !p.is_empty() && *p != "unconfined")
        .filter(|_| apparmor_enabled(sys))
        .map(|p| format!("exec {p}").into_bytes());
    let selinux = labels
        .selinux_label
        .as_deref()
        .filter(|l| !l.is_empty())
        .filter(|_| selinux_enabled(sys))
        .map(|l| l.as_bytes().to_vec());
    Decision { apparmor, selinux }
}

/// The labels a running process has, for a container whose runtime reports
/// no spec: its AppArmor profile without the mode (`name (enforce)`), and its
/// SELinux context. Read from its `/proc/PID` directory `dir`; only for the
/// LSMs enabled on the node (`attr/current` belongs to whichever is).
pub fn labels_of_process(sys: &Path, dir: &Path) -> Labels {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).ok().map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .trim_end_matches(['\0', '\n'])
                .to_string()
        })
    };
    let apparmor_profile = apparmor_enabled(sys)
        .then(|| read("attr/apparmor/current").or_else(|| read("attr/current")))
        .flatten()
        .map(|label| match label.rsplit_once(" (") {
            Some((name, _mode)) => name.to_string(),
            None => label,
        });
    let selinux_label = selinux_enabled(sys).then(|| read("attr/current")).flatten();
    Labels {
        apparmor_profile,
        selinux_label,
    }
}

/// The writes to make in the child, with the host's `/proc` to make them in.
pub struct Plan {
    decision: Decision,
    proc_dir: Option<OwnedFd>,
}

impl Plan {
    /// Opens the host's `/proc` (at `proc_root`) when something is to be written;
    /// call before entering the container's mount namespace.
    pub fn new(decision: Decision, proc_root: &Path) -> std::io::Result<Self> {
        let proc_dir = if decision.apparmor.is_some() || decision.selinux.is_some() {
            Some(rustix::fs::open(
                proc_root,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?)
        } else {
            None
        };
        Ok(Self { decision, proc_dir })
    }

    /// Runs in the child before `execve`: only `openat`, `write` and `close`.
    pub fn apply(&self) -> std::io::Result<()> {
        let Some(proc_dir) = &self.proc_dir else {
            return Ok(());
        };
        if let Some(value) = &self.decision.apparmor {
            // Linux 5.8 gave each LSM its own directory; before, AppArmor used
            // the shared attribute.
            write_attr(
                proc_dir,
                &[c"thread-self/attr/apparmor/exec", c"thread-self/attr/exec"],
                value,
            )?;
        }
        if let Some(value) = &self.decision.selinux {
            write_attr(proc_dir, &[c"thread-self/attr/exec"], value)?;
        }
        Ok(())
    }
}

/// Writes `value` to the first of `paths` (under `/proc`) that exists.
fn write_attr(proc_dir: &OwnedFd, paths: &[&CStr], value: &[u8]) -> std::io::Result<()> {
    let mut last = rustix::io::Errno::NOENT;
    for path in paths {
        match openat(
            proc_dir.as_fd(),
            *path,
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(file) => {
                let written = rustix::io::write(&file, value)?;
                return if written == value.len() {
                    Ok(())
                } else {
                    Err(rustix::io::Errno::IO.into())
                };
            }
            Err(rustix::io::Errno::NOENT) => last = rustix::io::Errno::NOENT,
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sysfs with AppArmor and/or SELinux enabled.
    fn sysfs(apparmor: Option<&str>, selinux: bool) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        if let Some(enabled) = apparmor {
            let dir = root.path().join("module/apparmor/parameters");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("enabled"), enabled).unwrap();
        }
        if selinux {
            let dir = root.path().join("fs/selinux");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("enforce"), "1").unwrap();
        }
        root
    }

    fn labels(apparmor: Option<&str>, selinux: Option<&str>) -> Labels {
        Labels {
            apparmor_profile: apparmor.map(Into::into),
            selinux_label: selinux.map(Into::into),
        }
    }

    #[test]
    fn apparmor_profile_applies_only_where_apparmor_is_enabled() {
        let wanted = labels(Some("cri-containerd.apparmor.d"), None);
        let on = sysfs(Some("Y\n"), false);
        assert_eq!(
            decide(on.path(), &wanted).apparmor.as_deref(),
            Some(&b"exec cri-containerd.apparmor.d"[..])
        );
        let off = sysfs(Some("N\n"), false);
        assert_eq!(decide(off.path(), &wanted), Decision::default());
        let absent = sysfs(None, false);
        assert_eq!(decide(absent.path(), &wanted), Decision::default());
    }

    #[test]
    fn unconfined_and_empty_profiles_need_nothing() {
        let on = sysfs(Some("Y"), true);
        assert_eq!(
            decide(on.path(), &labels(Some("unconfined"), Some(""))),
            Decision::default()
        );
        assert_eq!(decide(on.path(), &labels(None, None)), Decision::default());
    }

    #[test]
    fn selinux_label_applies_only_where_selinux_is_enabled() {
        let wanted = labels(None, Some("system_u:system_r:container_t:s0:c1,c2"));
        let on = sysfs(None, true);
        assert_eq!(
            decide(on.path(), &wanted).selinux.as_deref(),
            Some(&b"system_u:system_r:container_t:s0:c1,c2"[..])
        );
        let off = sysfs(Some("Y"), false);
        assert_eq!(decide(off.path(), &wanted), Decision::default());
    }

    #[test]
    fn labels_of_a_process_without_a_spec() {
        let proc_dir = tempfile::tempdir().unwrap();
        let attr = proc_dir.path().join("attr/apparmor");
        std::fs::create_dir_all(&attr).unwrap();
        std::fs::write(attr.join("current"), "docker-default (enforce)\n").unwrap();
        std::fs::write(
            proc_dir.path().join("attr/current"),
            "system_u:system_r:spc_t:s0\0",
        )
        .unwrap();
        let both = sysfs(Some("Y"), true);
        assert_eq!(
            labels_of_process(both.path(), proc_dir.path()),
            labels(Some("docker-default"), Some("system_u:system_r:spc_t:s0"))
        );
        let neither = sysfs(None, false);
        assert_eq!(
            labels_of_process(neither.path(), proc_dir.path()),
            Labels::default()
        );
    }

    #[test]
    fn nothing_to_write_opens_nothing() {
        let plan = Plan::new(Decision::default(), Path::new("/nonexistent")).unwrap();
        assert!(plan.apply().is_ok());
    }
}
