//! Toolbox mode: the agent's own tools run inside the target's network, PID,
//! IPC, UTS and cgroup namespaces, so `ps`, `ss`, `ip`, `tcpdump` and
//! `strace -p 1` work in a container that has none of them, with nothing
//! of ours written into it.
//!
//! The helper builds a private filesystem view for the command (every step a
//! mount in a mount namespace of its own, `unshare(2)` with `CLONE_NEWNS`, so
//! neither the host nor the container sees any of it):
//!
//! | path | what |
//! |---|---|
//! | `/usr`, `/bin`, `/lib*`, `/sbin`, `/etc`, `/opt` | the toolbox root's (the agent's filesystem), bind-mounted **read-only**, `nosuid`, `nodev`: nothing in the container can change a tool that runs there |
//! | `/proc` | a new procfs of the target's PID namespace (mounted by the command's process, the first one inside it) |
//! | `/sys` | a sysfs of the target's network namespace, read-only |
//! | `/dev` | `null`, `zero`, `full`, `random`, `urandom`, `tty` and a private `devpts` |
//! | `/etc/resolv.conf`, `/etc/hosts`, `/etc/hostname` | the pod's, copied in, so name resolution is the pod's |
//! | `/target` | the container's root with its volumes (a link to `/proc/PID/root` of its init) |
//! | `/tmp`, `/root` | empty scratch space (tmpfs) |
//!
//! The new root replaces the old one with `pivot_root(2)` and the old one is
//! detached, so nothing of the host's filesystem stays reachable (a `chroot`
//! could be escaped with `CAP_SYS_CHROOT`, which containers often keep). The
//! agent's own secrets (`/var`, `/run`, a service account token) are not
//! among the directories shown.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

/// The toolbox root's directories shown, read-only. Nothing else of the
/// agent's filesystem is (no `/var`, `/run`, `/home`, service account token).
const SHOWN: &[&str] = &[
    "bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "opt",
];

/// The pod's files copied over the toolbox's own, at most this big each.
const POD_FILES: &[&str] = &["etc/resolv.conf", "etc/hosts", "etc/hostname"];
const MAX_POD_FILE: u64 = 64 * 1024;

/// Where the container's root appears.
pub const TARGET_DIR: &str = "/target";

/// `PATH` of toolbox commands (the container's own would name its paths).
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the toolbox view could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ToolboxError {
    #[error("failed to {what}")]
    Step {
        what: String,
        #[source]
        source: rustix::io::Errno,
    },
    #[error("the toolbox root '{}' has none of the directories a toolbox needs (usr, bin, lib)", root.display())]
    EmptyRoot { root: PathBuf },
}

fn step(what: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> ToolboxError {
    let what = what.into();
    move |source| ToolboxError::Step { what, source }
}

/// What the helper reads from the target before it enters anything: the
/// pod's name-resolution files and the init process's PID inside its PID
/// namespace.
pub struct PodView {
    files: Vec<(&'static str, Vec<u8>)>,
    pid_inside: u32,
}

impl PodView {
    /// Reads through `/proc/PID/root` with `openat2(RESOLVE_IN_ROOT)`, so a
    /// symlink in the container cannot point the read at the host's files.
    pub fn read(proc: &Path, pid: u32) -> Result<Self, ToolboxError> {
        let root = crate::process::ProcRoot::new(proc);
        let files = POD_FILES
            .iter()
            .filter_map(|path| Some((*path, root.read_in_root(pid, path, MAX_POD_FILE).ok()?)))
            .collect();
        let status =
            std::fs::read_to_string(proc.join(pid.to_string()).join("status")).unwrap_or_default();
        // `NSpid:` lists the PID in each nested namespace, innermost last.
        let pid_inside = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        Ok(Self { files, pid_inside })
    }

    /// `/target` through the host's PID for the init, for a view whose
    /// procfs is the host's (the PID namespace was not joined).
    pub fn use_host_pid(&mut self, host_pid: u32) {
        self.pid_inside = host_pid;
    }
}

/// Where the old root waits under the new one until the command detaches it.
const OLD_ROOT_NAME: &str = ".old";

/// The paths the container's own `/proc` and `/sys` hide or show read-only
/// (`linux.maskedPaths`, `linux.readonlyPaths` of its spec). The toolbox
/// mounts a procfs and a sysfs of its own, which would otherwise show them
/// all, writable: `/proc/sys/kernel/core_pattern` names a program the
/// kernel runs as node root.
#[derive(Debug, Clone, Default)]
pub struct Masks {
    masked: Vec<CString>,
    readonly: Vec<CString>,
}

/// What the kubelet asks every container without `procMount: Unmasked` to
/// hide (`k8s.io/kubernetes/pkg/securitycontext`), for a runtime that
/// reports no spec.
const DEFAULT_MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const DEFAULT_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

impl Masks {
    /// The spec's lists; only absolute paths below `/proc` and `/sys` (the
    /// toolbox's own mounts) are kept.
    pub fn of(masked: &[String], readonly: &[String]) -> Self {
        let keep = |list: &[String]| {
            list.iter()
                .filter(|p| {
                    (p.starts_with("/proc/") || p.starts_with("/sys/")) && !p.contains("/../")
                })
                .filter_map(|p| CString::new(p.as_str()).ok())
                .collect()
        };
        Self {
            masked: keep(masked),
            readonly: keep(readonly),
        }
    }

    /// The kubelet's defaults.
    pub fn kubelet_default() -> Self {
        let owned = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        Self::of(&owned(DEFAULT_MASKED), &owned(DEFAULT_READONLY))
    }

    /// Applies them as runc does: `/dev/null` over a masked file, an empty
    /// read-only tmpfs over a masked directory, a read-only bind over a
    /// read-only path; a path that does not exist is skipped. Only system
    /// calls on data prepared before `fork`.
    fn apply(&self) -> std::io::Result<()> {
        use rustix::fs::FileType;
        for path in &self.masked {
            let stat = match rustix::fs::stat(path.as_c_str()) {
                Ok(stat) => stat,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                rustix::mount::mount(
                    c"tmpfs",
                    path.as_c_str(),
                    c"tmpfs",
                    MountFlags::RDONLY
                        | MountFlags::NOSUID
                        | MountFlags::NODEV
                        | MountFlags::NOEXEC,
                    None,
                )?;
            } else {
                rustix::mount::mount_bind(c"/dev/null", path.as_c_str())?;
            }
        }
        for path in &self.readonly {
            match rustix::mount::mount_bind_recursive(path.as_c_str(), path.as_c_str()) {
                Ok(()) => {}
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            }
            rustix::mount::mount_remount(
                path.as_c_str(),
                MountFlags::BIND
                    | MountFlags::RDONLY
                    | MountFlags::NOSUID
                    | MountFlags::NODEV
                    | MountFlags::NOEXEC,
                c"",
            )?;
        }
        Ok(())
    }
}

/// What the command's process does after `fork`, in the target's PID
/// namespace: mount the procfs of that namespace at `/proc`, hide what the
/// container's own hides ([`Masks`]), then detach the host's filesystem, so
/// nothing of it stays reachable.
pub struct ProcMount {
    target: CString,
    old_root: CString,
    masks: Masks,
}

impl ProcMount {
    /// Only system calls on data prepared before `fork`.
    pub fn mount(&self) -> std::io::Result<()> {
        rustix::mount::mount(
            c"proc",
            self.target.as_c_str(),
            c"proc",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            None,
        )?;
        self.masks.apply()?;
        rustix::mount::unmount(self.old_root.as_c_str(), UnmountFlags::DETACH)?;
        rustix::fs::rmdir(self.old_root.as_c_str())?;
        Ok(())
    }
}

/// Builds the toolbox view from `toolbox_root` and makes it the helper's
/// root. Runs in the helper after it joined the target's namespaces (the
/// sysfs it mounts is then the pod network's).
pub fn enter(toolbox_root: &Path, pod: &PodView, masks: Masks) -> Result<ProcMount, ToolboxError> {
    super::sys::unshare_mount_namespace().map_err(step("make a private mount namespace"))?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(step("make the mounts private"))?;
    // The toolbox root is held open first: the tmpfs below may hide it (a
    // toolbox root under /tmp), and its entries are then reached through
    // the descriptor (`/proc/self/fd/N/NAME`), never by path again.
    let source_dir = rustix::fs::open(
        toolbox_root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(step(format!(
        "open the toolbox root {}",
        toolbox_root.display()
    )))?;
    let through_fd =
        Path::new("/proc/self/fd").join(std::os::fd::AsRawFd::as_raw_fd(&source_dir).to_string());
    // The new root: a tmpfs over /tmp, which every system has; only this
    // mount namespace sees it.
    let root = Path::new("/tmp");
    rustix::mount::mount(
        c"nsdebug-toolbox",
        root,
        c"tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        c"mode=0755,size=16m",
    )
    .map_err(step("mount the toolbox's root"))?;
    let mut shown = 0;
    for name in SHOWN {
        let place = root.join(name);
        let Ok(stat) =
            rustix::fs::statat(&source_dir, *name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        else {
            continue;
        };
        match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
            rustix::fs::FileType::Symlink => {
                // A merged /usr: `/bin -> usr/bin`, kept as it is.
                if let Ok(link) = rustix::fs::readlinkat(&source_dir, *name, Vec::new()) {
                    rustix::fs::symlink(link.as_c_str(), &place)
                        .map_err(step(format!("link {}", place.display())))?;
                }
                continue;
            }
            rustix::fs::FileType::Directory => {}
            _ => continue,
        }
        mkdir(&place)?;
        // Not recursive: a mount below the tool tree (a secret volume, say)
        // is not shown, and what is shown is read-only all the way down.
        rustix::mount::mount_bind(through_fd.join(name), &place).map_err(step(format!(
            "bind {}/{name} into the toolbox",
            toolbox_root.display()
        )))?;
        rustix::mount::mount_remount(
            &place,
            MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
            c"",
        )
        .map_err(step(format!("make the toolbox's {name} read-only")))?;
        if *name != "etc" {
            shown += 1;
        }
    }
    drop(source_dir);
    if shown == 0 {
        return Err(ToolboxError::EmptyRoot {
            root: toolbox_root.into(),
        });
    }
    make_dev(&root.join("dev"))?;
    let proc = root.join("proc");
    mkdir(&proc)?;
    let sys = root.join("sys");
    mkdir(&sys)?;
    rustix::mount::mount(
        c"sysfs",
        &sys,
        c"sysfs",
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(step("mount the pod network's sysfs"))?;
    for (dir, mode) in [
        ("tmp", "mode=1777,size=64m"),
        ("root", "mode=0700,size=16m"),
    ] {
        let place = root.join(dir);
        mkdir(&place)?;
        let data = CString::new(mode).unwrap_or_default();
        rustix::mount::mount(
            c"tmpfs",
            &place,
            c"tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            data.as_c_str(),
        )
        .map_err(step(format!("mount /{dir}")))?;
    }
    // The pod's resolv.conf, hosts and hostname over the toolbox's own.
    let copies = root.join(".pod");
    mkdir(&copies)?;
    for (path, content) in &pod.files {
        let over = root.join(path);
        if !over.is_file() {
            continue;
        }
        let copy = copies.join(path.rsplit('/').next().unwrap_or(path));
        std::fs::write(&copy, content).map_err(|e| ToolboxError::Step {
            what: format!("copy the pod's /{path}"),
            source: rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO),
        })?;
        rustix::mount::mount_bind(&copy, &over).map_err(step(format!("show the pod's /{path}")))?;
    }
    let target = format!("/proc/{}/root", pod.pid_inside);
    rustix::fs::symlink(&target, root.join(TARGET_DIR.trim_start_matches('/')))
        .map_err(step("link /target"))?;

    // pivot_root(2): the new root in, the old one detached and gone.
    rustix::process::chdir(root).map_err(step("enter the toolbox's root"))?;
    mkdir(Path::new(OLD_ROOT_NAME))?;
    rustix::process::pivot_root(".", OLD_ROOT_NAME)
        .map_err(step("pivot into the toolbox's root"))?;
    rustix::process::chdir("/").map_err(step("enter /"))?;
    // The old root stays attached until the command's process has mounted
    // its procfs: in a user namespace the kernel mounts a procfs only where
    // a full one is visible (`mount_too_revealing`). It detaches it then.
    Ok(ProcMount {
        target: c"/proc".into(),
        old_root: c"/.old".into(),
        masks,
    })
}

fn mkdir(path: &Path) -> Result<(), ToolboxError> {
    rustix::fs::mkdir(path, Mode::from_raw_mode(0o755))
        .map_err(step(format!("create {}", path.display())))
}

/// The character devices a toolbox's `/dev` shows.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// A minimal `/dev`: the usual character devices and a devpts of its own
/// (the terminal of a toolbox session is made there).
fn make_dev(dev: &Path) -> Result<(), ToolboxError> {
    mkdir(dev)?;
    rustix::mount::mount(
        c"tmpfs",
        dev,
        c"tmpfs",
        // nodev: a node the command makes here opens nothing; the devices
        // below are binds, which keep their own mounts' flags.
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        c"mode=0755,size=64k",
    )
    .map_err(step("mount /dev"))?;
    let dir = rustix::fs::open(
        dev,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(step("open /dev"))?;
    // The agent's own device nodes, bound in: mknod(2) is refused inside
    // a user namespace, and a bind keeps them exactly what they are.
    for name in DEVICES {
        rustix::fs::openat(
            &dir,
            *name,
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .map_err(step(format!("create /dev/{name}")))?;
        rustix::mount::mount_bind(Path::new("/dev").join(name), dev.join(name))
            .map_err(step(format!("bind /dev/{name}")))?;
    }
    let pts = dev.join("pts");
    mkdir(&pts)?;
    rustix::mount::mount(
        c"devpts",
        &pts,
        c"devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        c"newinstance,ptmxmode=0666,mode=0620",
    )
    .map_err(step("mount /dev/pts"))?;
    for (name, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        rustix::fs::symlinkat(to, dir.as_fd(), name).map_err(step(format!("link /dev/{name}")))?;
    }
    Ok(())
}

/// Variables of the container's that never reach a tool: they would make
/// the tool tree's programs load the container's libraries or run its
/// scripts (`sh` reads `$ENV`, bash `$BASH_ENV`).
fn steers_tools(name: &str) -> bool {
    matches!(name, "PATH" | "HOME" | "ENV" | "BASH_ENV" | "PS1" | "PS4") || name.starts_with("LD_")
}

/// The environment of a toolbox command in the `container` profile: the
/// container's spec environment, with the toolbox's `PATH` and `HOME`, and
/// without the variables that steer the tools ([`steers_tools`]).
pub fn environment(container: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = container
        .into_iter()
        .filter(|(k, _)| !steers_tools(k))
        .collect();
    env.push(("PATH".into(), PATH.into()));
    env.push(("HOME".into(), "/root".into()));
    env
}

/// The environment of a privileged command: nothing of the container's
/// (its variables are the attacker's), a fixed prompt, an empty `HOME`
/// (so no rc file is read), and what the caller sets.
pub fn clean_environment() -> Vec<(String, String)> {
    vec![
        ("PATH".into(), PATH.into()),
        ("HOME".into(), "/root".into()),
        ("PS1".into(), "nsdebug(privileged)# ".into()),
        ("LANG".into(), "C.UTF-8".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_keeps_the_containers_but_not_its_paths() {
        let env = environment(vec![
            ("PATH".into(), "/app/bin".into()),
            ("LD_PRELOAD".into(), "/app/lib/hook.so".into()),
            ("API_URL".into(), "http://api".into()),
        ]);
        assert!(env.contains(&("API_URL".into(), "http://api".into())));
        assert!(env.contains(&("PATH".into(), PATH.into())));
        assert!(!env.iter().any(|(k, _)| k == "LD_PRELOAD"));
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
    }

    #[test]
    fn variables_that_steer_the_tools_are_dropped() {
        let env = environment(vec![
            ("ENV".into(), "/target/evil.sh".into()),
            ("BASH_ENV".into(), "/target/evil.sh".into()),
            ("PS1".into(), "$(evil)".into()),
            ("TZ".into(), "UTC".into()),
        ]);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["TZ", "PATH", "HOME"]);
        let clean = clean_environment();
        assert!(
            clean
                .iter()
                .all(|(k, _)| ["PATH", "HOME", "PS1", "LANG"].contains(&k.as_str()))
        );
    }

    #[test]
    fn the_agents_secrets_are_not_shown() {
        for hidden in ["var", "run", "home", "root", "tmp", "proc", "sys", "dev"] {
            assert!(!SHOWN.contains(&hidden), "{hidden}");
        }
    }
}
