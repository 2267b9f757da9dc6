//! A session's own cgroup, so that nothing a session started outlives it.
//!
//! A command can leave its process group and session (`setsid(2)`), or fork
//! twice so that its parent exits and it is reparented to the container's
//! init (a child subreaper, `PR_SET_CHILD_SUBREAPER` in `prctl(2)`, is not
//! looked for outside the PID namespace): a signal to the command's process
//! group finds neither. A cgroup finds both, because a child starts in its
//! parent's cgroup and stays there unless it is moved (`cgroups(7)`). So the
//! helper makes a child cgroup of the container's cgroup, `nsdebug-<random>`,
//! joins it before it starts the command, leaves it right after, and at the
//! end of the session kills everything in it, or hands what is left to the
//! container's own cgroup ([`Fate`]); then it removes it, so it never blocks
//! the container's removal and never piles up.
//!
//! - With a cgroup v2 hierarchy (a pure v2 node, or the unified hierarchy of
//!   a hybrid one) the session cgroup is made there: killed by writing `1` to
//!   `cgroup.kill` (Linux >= 5.14), known empty when `cgroup.events` says
//!   `populated 0`. It enables no controller, so the container's limits keep
//!   applying to it (v2 limits are hierarchical).
//! - With cgroup v1 only, it is made in the freezer hierarchy and killed the
//!   way runc kills a v1 container: freeze, SIGKILL every process listed,
//!   thaw, until none is left.
//!
//! Every file is opened before the helper enters the container's namespaces:
//! after `setns(2)` into its mount namespace the host's cgroup mounts are out
//! of reach, and the kernel checks a migration against the credentials and
//! cgroup namespace of the opener of `cgroup.procs`.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, mkdirat, openat, unlinkat};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, kill_process};

use crate::process::CgroupDir;

/// The prefix of every session cgroup's name.
pub const NAME_PREFIX: &str = "nsdebug-";

/// How long the processes of a killed session have to be gone, at most.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// What happens to the processes still in the session cgroup when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Killed, all of them.
    Kill,
    /// Moved into the container's cgroup, where `kubectl exec` would have
    /// left them.
    HandToContainer,
}

/// A failure to make, join, empty or remove a session cgroup.
#[derive(Debug, thiserror::Error)]
pub enum SessionCgroupError {
    #[error(
        "the container has no cgroup v2 hierarchy or v1 freezer mounted here, so its session's processes could not be ended with it"
    )]
    NoHierarchy,
    #[error("failed to {what} '{path}'")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("the session cgroup '{path}' still holds processes {waited:?} after they were killed")]
    StillPopulated { path: PathBuf, waited: Duration },
    #[error(
        "the session cgroup '{path}' still holds processes {waited:?} after they were moved to the container's cgroup"
    )]
    StillHolding { path: PathBuf, waited: Duration },
}

/// How the session cgroup is killed and known empty.
enum Killer {
    /// cgroup v2: its `cgroup.kill` and `cgroup.events`.
    V2 { kill: OwnedFd, events: OwnedFd },
    /// cgroup v1: its `freezer.state`.
    Freezer { state: OwnedFd },
}

/// A session cgroup, made and joined by the helper; ended by [`Self::end`],
/// or killed and removed when dropped without (a session refused or failed
/// after it was made).
pub struct SessionCgroup {
    /// Its directory on the host, for messages.
    path: PathBuf,
    name: CString,
    /// The container's cgroup, its parent.
    parent: OwnedFd,
    parent_procs: OwnedFd,
    dir: OwnedFd,
    procs: OwnedFd,
    killer: Killer,
    fate: Fate,
    /// The calling process is in it (it joined and has not left).
    joined: bool,
    ended: bool,
}

impl SessionCgroup {
    /// Makes a session cgroup under the container's cgroup among `dirs` (the
    /// v2 one, else the v1 freezer) and moves the calling process into it.
    /// `fate` is what [`Self::end`] does after a normal exit.
    pub fn enter(dirs: &[CgroupDir], fate: Fate) -> Result<Self, SessionCgroupError> {
        let mut session = Self::create(dirs, fate)?;
        // "0" is the writing process (cgroups(7)); whatever it starts from
        // now on starts inside.
        write_all(&session.procs, b"0").map_err(session.io_error("join the session cgroup"))?;
        session.joined = true;
        Ok(session)
    }

    /// Makes the session cgroup, empty.
    fn create(dirs: &[CgroupDir], fate: Fate) -> Result<Self, SessionCgroupError> {
        let v2 = dirs.iter().find(|d| d.controllers.is_empty());
        let freezer = dirs
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == "freezer"));
        let (container, is_v2) = match (v2, freezer) {
            (Some(dir), _) => (&dir.dir, true),
            (None, Some(dir)) => (&dir.dir, false),
            (None, None) => return Err(SessionCgroupError::NoHierarchy),
        };
        let name = format!("{NAME_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let path = container.join(&name);
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| SessionCgroupError::Io { what, path, source }
        };
        let parent = open_dir(container).map_err(io("open the container's cgroup", container))?;
        let parent_procs = openat(
            &parent,
            "cgroup.procs",
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("open cgroup.procs of the container's cgroup", container))?;
        mkdirat(&parent, name.as_str(), Mode::from_bits_truncate(0o755))
            .map_err(io("create the session cgroup", &path))?;
        let name = CString::new(name).expect("a generated name has no NUL");
        let (dir, procs, killer) = match open_files(&parent, &name, is_v2) {
            Ok(files) => files,
            Err(source) => {
                let _ = unlinkat(&parent, name.as_c_str(), AtFlags::REMOVEDIR);
                return Err(io("open the control files of", &path)(source));
            }
        };
        // From here on, dropping `session` kills and removes it.
        let session = Self {
            path: path.clone(),
            name,
            parent,
            parent_procs,
            dir,
            procs,
            killer,
            fate,
            joined: false,
            ended: false,
        };
        Ok(session)
    }

    /// Moves the calling process back into the container's cgroup, so that
    /// killing the session does not kill it. Call it once the command runs.
    pub fn leave(&mut self) -> Result<(), SessionCgroupError> {
        if self.joined {
            write_all(&self.parent_procs, b"0").map_err(|source| SessionCgroupError::Io {
                what: "leave the session cgroup",
                path: self.path.clone(),
                source,
            })?;
            self.joined = false;
        }
        Ok(())
    }

    /// Ends the session after its command exited by itself: its processes
    /// meet the fate chosen when it was made; then it is removed.
    pub fn end(mut self) -> Result<(), SessionCgroupError> {
        let fate = self.fate;
        self.finish(fate)
    }

    /// Ends the session early (hang-up, timeout, shutdown): every process of
    /// it is killed, whatever the profile; then it is removed.
    pub fn kill(mut self) -> Result<(), SessionCgroupError> {
        self.finish(Fate::Kill)
    }

    fn finish(&mut self, fate: Fate) -> Result<(), SessionCgroupError> {
        self.ended = true;
        // Never kill the helper itself, whichever path got here.
        self.leave()?;
        let deadline = Instant::now() + KILL_WAIT;
        match fate {
            Fate::Kill => self.kill_all(deadline)?,
            Fate::HandToContainer => self.hand_to_container(deadline)?,
        }
        self.remove(deadline)
    }

    fn io_error(&self, what: &'static str) -> impl FnOnce(Errno) -> SessionCgroupError + '_ {
        move |source| SessionCgroupError::Io {
            what,
            path: self.path.clone(),
            source,
        }
    }

    fn kill_all(&self, deadline: Instant) -> Result<(), SessionCgroupError> {
        match &self.killer {
            Killer::V2 { kill, events } => {
                write_all(kill, b"1").map_err(self.io_error("write cgroup.kill of"))?;
                wait_unpopulated(events, deadline).map_err(|err| match err {
                    Some(source) => self.io_error("read cgroup.events of")(source),
                    None => SessionCgroupError::StillPopulated {
                        path: self.path.clone(),
                        waited: KILL_WAIT,
                    },
                })
            }
            Killer::Freezer { state } => loop {
                write_all(state, b"FROZEN").map_err(self.io_error("freeze"))?;
                // Freezing takes effect asynchronously; a process that does
                // not freeze in time is killed all the same.
                while read_all(state).map_err(self.io_error("read freezer.state of"))?
                    != b"FROZEN\n"
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let pids = pids_in_tree(self.dir.as_fd(), &self.path)?;
                for pid in &pids {
                    // Gone meanwhile (ESRCH): nothing to kill.
                    let _ = kill_process(*pid, Signal::KILL);
                }
                write_all(state, b"THAWED").map_err(self.io_error("thaw"))?;
                if pids.is_empty() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(SessionCgroupError::StillPopulated {
                        path: self.path.clone(),
                        waited: KILL_WAIT,
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            },
        }
    }

    /// Moves every process of the session into the container's cgroup, until
    /// none is left (one may fork while the others are moved).
    fn hand_to_container(&self, deadline: Instant) -> Result<(), SessionCgroupError> {
        loop {
            let pids = pids_in_tree(self.dir.as_fd(), &self.path)?;
            if pids.is_empty() {
                return Ok(());
            }
            for pid in pids {
                match write_all(
                    &self.parent_procs,
                    pid.as_raw_nonzero().to_string().as_bytes(),
                ) {
                    // ESRCH: it exited meanwhile.
                    Ok(()) | Err(Errno::SRCH) => {}
                    Err(source) => {
                        return Err(SessionCgroupError::Io {
                            what: "move a process of the session to the container's cgroup from",
                            path: self.path.clone(),
                            source,
                        });
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(SessionCgroupError::StillHolding {
                    path: self.path.clone(),
                    waited: KILL_WAIT,
                });
            }
        }
    }

    /// Removes the session cgroup and any the command made inside it.
    fn remove(&self, deadline: Instant) -> Result<(), SessionCgroupError> {
        loop {
            match remove_tree(self.parent.as_fd(), &self.name) {
                // ENOENT: removed with the container already.
                Ok(()) | Err(Errno::NOENT) => return Ok(()),
                // EBUSY: a killed process has not quite left yet.
                Err(Errno::BUSY) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(source) => return Err(self.io_error("remove the session cgroup")(source)),
            }
        }
    }
}

impl Drop for SessionCgroup {
    fn drop(&mut self) {
        if !self.ended
            && let Err(err) = self.finish(Fate::Kill)
        {
            eprintln!(
                "nsdebug enter helper: cleaning up a session cgroup: {}",
                crate::error_chain(&err)
            );
        }
    }
}

/// The session cgroup's directory, `cgroup.procs` and the files that kill it.
fn open_files(
    parent: &OwnedFd,
    name: &CStr,
    is_v2: bool,
) -> Result<(OwnedFd, OwnedFd, Killer), Errno> {
    let dir = openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file =
        |file: &str, flags: OFlags| openat(&dir, file, flags | OFlags::CLOEXEC, Mode::empty());
    let procs = file("cgroup.procs", OFlags::RDWR)?;
    let killer = if is_v2 {
        Killer::V2 {
            kill: file("cgroup.kill", OFlags::WRONLY)?,
            events: file("cgroup.events", OFlags::RDONLY)?,
        }
    } else {
        Killer::Freezer {
            state: file("freezer.state", OFlags::RDWR)?,
        }
    };
    Ok((dir, procs, killer))
}

fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Writes `data` in one `write(2)`: a cgroup control file takes one value per write.
fn write_all(fd: &OwnedFd, data: &[u8]) -> Result<(), Errno> {
    match rustix::io::write(fd, data)? {
        n if n == data.len() => Ok(()),
        _ => Err(Errno::IO),
    }
}

/// The whole content of a control file, read from its start.
fn read_all(fd: &OwnedFd) -> Result<Vec<u8>, Errno> {
    let mut content = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = rustix::io::pread(fd, &mut buf, content.len() as u64)?;
        if n == 0 {
            return Ok(content);
        }
        content.extend_from_slice(&buf[..n]);
    }
}

/// Waits until `cgroup.events` says `populated 0`: `None` if it did not
/// before `deadline`. The file signals a change with `POLLPRI`.
fn wait_unpopulated(events: &OwnedFd, deadline: Instant) -> Result<(), Option<Errno>> {
    loop {
        let content = read_all(events).map_err(Some)?;
        let populated = String::from_utf8_lossy(&content)
            .lines()
            .any(|line| line == "populated 1");
        if !populated {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(None);
        }
        // Also woken every 100 ms, in case a change came between the read
        // and the poll.
        let timeout = rustix::event::Timespec::try_from(left.min(Duration::from_millis(100)))
            .map_err(|_| Some(Errno::INVAL))?;
        let mut fds = [PollFd::new(events, PollFlags::PRI)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(Some(e)),
        }
    }
}

/// The processes of the cgroup `dir` and of every cgroup below it, as PIDs of
/// the caller's PID namespace.
fn pids_in_tree(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<Pid>, SessionCgroupError> {
    let io = |what: &'static str| {
        move |source| SessionCgroupError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    let procs = openat(
        dir,
        "cgroup.procs",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("open cgroup.procs of"))?;
    let content = read_all(&procs).map_err(io("read cgroup.procs of"))?;
    let mut pids: Vec<Pid> = String::from_utf8_lossy(&content)
        .lines()
        .filter_map(|line| Pid::from_raw(line.trim().parse().ok()?))
        .collect();
    for child in child_cgroups(dir).map_err(io("list the cgroups in"))? {
        let child_dir = openat(
            dir,
            child.as_c_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        match child_dir {
            Ok(child_dir) => pids.extend(pids_in_tree(
                child_dir.as_fd(),
                &path.join(child.to_string_lossy().as_ref()),
            )?),
            // Removed meanwhile.
            Err(Errno::NOENT) => {}
            Err(source) => return Err(io("open a cgroup in")(source)),
        }
    }
    Ok(pids)
}

/// The names of the cgroups directly below the cgroup `dir`.
fn child_cgroups(dir: BorrowedFd<'_>) -> Result<Vec<CString>, Errno> {
    let mut children = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if entry.file_type() == FileType::Directory && name != c"." && name != c".." {
            children.push(name.to_owned());
        }
    }
    Ok(children)
}

/// Removes the cgroup `name` in `parent`, deepest cgroups first.
fn remove_tree(parent: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    match unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Err(Errno::BUSY) => {}
        other => return other,
    }
    // Busy: maybe cgroups made inside it. Remove those, then try again.
    let dir = openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for child in child_cgroups(dir.as_fd())? {
        match remove_tree(dir.as_fd(), &child) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
    }
    unlinkat(parent, name, AtFlags::REMOVEDIR)
}

#[cfg(test)]
mod tests {
    //! On the real cgroup hierarchies of the machine (root needed): a
    //! directory made for the test stands for the container's cgroup.

    use std::process::{Child, Command};

    use super::*;

    /// The mount point of the first mount of `fs_type` that has `option`.
    fn mount(fs_type: &str, option: &str) -> Option<PathBuf> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        mounts.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[2] == fs_type && fields[3].split(',').any(|o| o == option))
                .then(|| PathBuf::from(fields[1]))
        })
    }

    /// A stand-in for a container's cgroup; removed when dropped.
    struct Container(CgroupDir);

    impl Container {
        fn new(root: PathBuf, controllers: &[&str]) -> Self {
            let dir = root.join(format!("nsdebug-unit-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir(&dir).unwrap();
            Self(CgroupDir {
                controllers: controllers.iter().map(|c| c.to_string()).collect(),
                dir,
            })
        }

        fn procs(&self) -> Vec<u32> {
            std::fs::read_to_string(self.0.dir.join("cgroup.procs"))
                .unwrap()
                .lines()
                .map(|l| l.parse().unwrap())
                .collect()
        }
    }

    impl Drop for Container {
        /// Kills what a failed test left in it, then removes it.
        fn drop(&mut self) {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left = self.procs();
                assert!(!left.contains(&std::process::id()), "the test moved itself");
                if left.is_empty() || Instant::now() >= deadline {
                    break;
                }
                for pid in left {
                    let _ = kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = std::fs::remove_dir(&self.0.dir);
        }
    }

    /// A shell that moves itself into `session`, then leaves a `setsid`
    /// process and a double-forked one and waits; returned once the three
    /// run there.
    fn escapers(session: &SessionCgroup) -> Child {
        let procs = session.path.join("cgroup.procs");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}; setsid sleep 1000 & (setsid sleep 1001 &); exec sleep 1002",
                procs.display()
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Settled when the three are the sleeps: before that the shell and
        // its subshell are still forking, and the count passes through 3
        // with processes about to leave.
        let settled = |pids: &[Pid]| {
            pids.len() == 3
                && pids.iter().all(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|comm| comm.trim() == "sleep")
                })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut listed = Vec::new();
        while !settled(&listed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            listed = pids_in_tree(session.dir.as_fd(), &session.path).unwrap_or_default();
        }
        if !settled(&listed) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the escapers never ran: {listed:?}");
        }
        child
    }

    fn check_kill(container: Container) {
        let session =
            SessionCgroup::create(std::slice::from_ref(&container.0), Fate::Kill).unwrap();
        let path = session.path.clone();
        let mut child = escapers(&session);
        session.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        assert!(!path.exists(), "{} removed", path.display());
        assert_eq!(container.procs(), Vec::<u32>::new());
    }

    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn cgroup_kill_ends_setsid_and_double_forked_processes() {
        let Some(root) = mount("cgroup2", "rw") else {
            eprintln!("no cgroup v2 hierarchy: nothing to test");
            return;
        };
        check_kill(Container::new(root, &[]));
    }

    #[test]
    fn the_v1_freezer_ends_setsid_and_double_forked_processes() {
        let Some(root) = mount("cgroup", "freezer") else {
            eprintln!("no v1 freezer hierarchy: nothing to test");
            return;
        };
        check_kill(Container::new(root, &["freezer"]));
    }

    #[test]
    fn a_session_handed_to_the_container_keeps_running_there() {
        let Some(root) = mount("cgroup2", "rw") else {
            eprintln!("no cgroup v2 hierarchy: nothing to test");
            return;
        };
        let container = Container::new(root, &[]);
        let session =
            SessionCgroup::create(std::slice::from_ref(&container.0), Fate::HandToContainer)
                .unwrap();
        let path = session.path.clone();
        let mut child = escapers(&session);
        session.end().unwrap();
        assert!(!path.exists(), "{} removed", path.display());
        let moved = container.procs();
        assert_eq!(moved.len(), 3, "{moved:?}");
        assert!(
            moved.contains(&child.id()),
            "the command itself moved: {moved:?}"
        );
        // Dropping `container` kills them.
        drop(container);
        child.wait().unwrap();
    }

    #[test]
    fn without_v2_or_a_freezer_it_says_so() {
        let dirs = [CgroupDir {
            controllers: vec!["memory".into()],
            dir: PathBuf::from("/nonexistent"),
        }];
        let err = SessionCgroup::create(&dirs, Fate::Kill).err().unwrap();
        assert!(matches!(err, SessionCgroupError::NoHierarchy), "{err}");
    }
}
