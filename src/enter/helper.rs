//! The enter helper: a single-threaded process (this binary, `nsdebug __enter`)
//! that joins a container and runs one command there. See the module above for
//! the sequence; every step that can fail reports why over the control socket.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::fs::{Mode, OFlags, open};
use rustix::process::{
    DumpableBehavior, Pid, PidfdFlags, Signal, kill_process_group, pidfd_open,
    set_dumpable_behavior,
};

use super::confine::{ConfineError, Confinement, HostPaths};
use super::failure::{Failure, SetupError};
use super::identity::{self, Identity, Step};
use super::protocol::{self, FailureKind, HelperEvent};
use super::session_cgroup::{Fate, SessionCgroup};
use super::{EnterRequest, Namespace, NamespaceSet, Profile, toolbox};
use crate::process::{ProcRoot, StatusError, parse_environ};

fn report(control: BorrowedFd<'_>, event: &HelperEvent) {
    if let Ok(bytes) = serde_json::to_vec(event) {
        // The agent may be gone; nothing else to tell then.
        let _ = protocol::send(control, &bytes, &[]);
    }
}

/// Entry point of `nsdebug __enter`: fd 0 is the control socket.
pub fn main() -> ExitCode {
    let stdin = std::io::stdin();
    let control = stdin.as_fd();
    match run(control) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            report(
                control,
                &HelperEvent::Failed {
                    kind: failure.kind,
                    message: failure.message,
                },
            );
            ExitCode::FAILURE
        }
    }
}

fn run(control: BorrowedFd<'_>) -> Result<(), Failure> {
    // Before anything of a container is touched: no ptrace, no /proc/PID/mem,
    // no /proc/self/exe of ours for a process inside to open (CVE-2019-5736).
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(SetupError::NotDumpable)?;
    super::sys::cloexec_from_3().map_err(SetupError::CloseOnExec)?;

    let (message, fds) =
        protocol::recv(control, protocol::MAX_REQUEST).map_err(SetupError::ReadRequest)?;
    let request: EnterRequest =
        serde_json::from_slice(&message).map_err(SetupError::MalformedRequest)?;
    let expected_fds = if request.terminal.is_some() { 0 } else { 3 };
    if fds.len() != expected_fds || request.argv.is_empty() {
        return Err(SetupError::IncompleteRequest.into());
    }

    // The one rule of `view.rs`, again where it is enforced: whatever sent
    // this request, no mixed view and no container binary as node root.
    super::View::check(
        request.profile,
        request.toolbox.is_some(),
        request.namespaces,
    )
    .map_err(|err| Failure::new(FailureKind::Refused, err.to_string()))?;
    let target = pin_target(&request)?;
    refuse_a_tracer_with_node_root(&request)?;
    let profile = TargetProfile::read(&request)?;
    // Toolbox mode reads the pod's files while the host's /proc is at hand.
    let mut pod_view = match &request.toolbox {
        Some(_) => Some(
            toolbox::PodView::read(Path::new("/proc"), request.pid)
                .map_err(SetupError::ReadPodView)?,
        ),
        None => None,
    };
    let session = join_cgroups(&request)?;
    let entered = enter_namespaces(&request, &target)?;
    if let Some(view) = pod_view.as_mut()
        && !entered.contains(Namespace::Pid)
    {
        // A privileged view without the pod's PID namespace: its procfs is
        // the host's, where the container's init has its host PID.
        view.use_host_pid(request.pid);
    }
    let proc_mount = match (&request.toolbox, &pod_view) {
        (Some(root), Some(view)) => {
            Some(toolbox::enter(root, view, masks(&request)).map_err(SetupError::Toolbox)?)
        }
        _ => None,
    };
    // Inside the container's mount namespace `/` is its root already
    // (`setns(2)`); start where its init process works.
    if entered.contains(Namespace::Mnt) {
        if rustix::process::fchdir(&profile.cwd).is_err() {
            let _ = rustix::process::chdir("/");
        }
    } else {
        let _ = rustix::process::chdir("/");
    }

    let (stdio, master) = match request.terminal {
        Some(size) => {
            let uid = profile.confinement.as_ref().map(|c| c.credentials.uid);
            let (master, slave) = open_terminal(size, uid)?;
            (ChildStdio::Terminal(slave), Some(master))
        }
        None => (ChildStdio::Pipes(fds), None),
    };
    let child = spawn(&request, profile, proc_mount, stdio)?;
    let started = serde_json::to_vec(&HelperEvent::Started { pid: child.id() })
        .map_err(SetupError::EncodeStarted)?;
    let master_fds: Vec<BorrowedFd<'_>> = master.iter().map(|m| m.as_fd()).collect();
    protocol::send(control, &started, &master_fds).map_err(SetupError::Report)?;
    drop(master);
    supervise(control, child, session)
}

/// `CAP_SYS_PTRACE` (bit 19 of `capabilities(7)`).
const CAP_SYS_PTRACE: u64 = 1 << 19;

/// A privileged command in the container's PID namespace is node root among
/// the container's processes: one holding `CAP_SYS_PTRACE` (forbidden by the
/// Pod Security baseline, not by Kubernetes) could attach to it and act as
/// node root. Such a target gets a privileged view only from outside its PID
/// namespace.
fn refuse_a_tracer_with_node_root(request: &EnterRequest) -> Result<(), Failure> {
    let joins_pid = request
        .namespaces
        .is_none_or(|set| set.contains(Namespace::Pid));
    if request.profile != Profile::Privileged || !joins_pid {
        return Ok(());
    }
    let creds = ProcRoot::new("/proc")
        .credentials(request.pid)
        .map_err(|err| match err {
            StatusError::Read { path, source } => SetupError::ReadStatus { path, source },
            StatusError::Parse { path, source } => SetupError::ParseStatus { path, source },
        })?;
    if creds.bounding & CAP_SYS_PTRACE != 0 {
        return Err(Failure {
            kind: FailureKind::Refused,
            message: "the container holds CAP_SYS_PTRACE, so its processes could attach to a privileged session in its PID namespace and act as node root; open the privileged session outside it, naming the namespaces without pid (namespaces=net,ipc,uts,cgroup)".into(),
        });
    }
    Ok(())
}

/// What the toolbox's own procfs and sysfs hide: what the container's hide
/// in the `container` profile (its spec's lists, the kubelet's defaults
/// when the runtime reports no spec); nothing in the privileged one, which
/// is node root anyway.
fn masks(request: &EnterRequest) -> toolbox::Masks {
    match Applied::of(request) {
        Applied::Nothing => toolbox::Masks::default(),
        Applied::Spec(spec) => toolbox::Masks::of(&spec.masked_paths, &spec.readonly_paths),
        Applied::ProcessOnly => toolbox::Masks::kubelet_default(),
    }
}

/// What the helper takes from the container besides its namespaces, by
/// profile and by what the runtime reported.
enum Applied<'a> {
    /// The privileged profile: nothing of the container's.
    Nothing,
    /// The `container` profile with the runtime's spec of an exec.
    Spec(&'a crate::oci::ExecSpec),
    /// The `container` profile without a spec (not reported, or unreadable):
    /// what the container's process shows, and the kubelet's defaults.
    ProcessOnly,
}

impl<'a> Applied<'a> {
    fn of(request: &'a EnterRequest) -> Self {
        match (request.profile, &request.runtime_spec) {
            (Profile::Privileged, _) => Self::Nothing,
            (Profile::Container, Some(crate::oci::RuntimeSpec::Reported(spec))) => Self::Spec(spec),
            (Profile::Container, _) => Self::ProcessOnly,
        }
    }
}

/// A pidfd for the target, refused if the PID now names another process.
fn pin_target(request: &EnterRequest) -> Result<OwnedFd, Failure> {
    crate::process::pin(&crate::process::ContainerProcess {
        pid: request.pid,
        start_time: request.start_time,
        container_id: request.container_id.clone(),
    })
    .map_err(|err| Failure {
        kind: FailureKind::TargetGone,
        message: crate::error_chain(&err),
    })
}

/// What the helper reads from the target before entering it.
struct TargetProfile {
    /// What the `container` profile applies; `None` in the privileged one.
    confinement: Option<Confinement>,
    env: Vec<(String, String)>,
    cwd: OwnedFd,
}

impl TargetProfile {
    fn read(request: &EnterRequest) -> Result<Self, Failure> {
        let dir = format!("/proc/{}", request.pid);
        let confinement = match request.profile {
            Profile::Privileged => None,
            Profile::Container => {
                let spec = request.runtime_spec.clone().unwrap_or_default();
                let host = HostPaths {
                    proc: Path::new("/proc"),
                    sys: Path::new("/sys"),
                };
                Some(Confinement::prepare(&spec, request.pid, &host).map_err(confine_failure)?)
            }
        };
        let env = match Applied::of(request) {
            // Nothing of the container's: its variables would steer the
            // agent's tools (`ENV`, `PS1`, `BASH_ENV`...) as node root.
            Applied::Nothing => Vec::new(),
            // What `kubectl exec` gives: the spec's environment.
            Applied::Spec(spec) => parse_spec_env(&spec.env),
            // No spec from the runtime: the container's process's, the
            // only account of its environment there is.
            Applied::ProcessOnly => {
                let environ = std::fs::read(format!("{dir}/environ")).map_err(|source| {
                    SetupError::ReadEnviron {
                        path: format!("{dir}/environ"),
                        source,
                    }
                })?;
                parse_environ(&environ)
            }
        };
        let cwd = open(
            format!("{dir}/cwd"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| SetupError::OpenCwd {
            path: format!("{dir}/cwd"),
            source,
        })?;
        Ok(Self {
            confinement,
            env,
            cwd,
        })
    }
}

/// `NAME=value` entries of a spec's `process.env`; an entry without `=`
/// is a name with an empty value, as `execve(2)` would pass it.
fn parse_spec_env(entries: &[String]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|entry| !entry.contains('\0'))
        .map(|entry| match entry.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => (entry.clone(), String::new()),
        })
        .filter(|(name, _)| !name.is_empty())
        .collect()
}

/// A confinement that cannot be reproduced is a refusal that says why and
/// what still works; failing to read the target is a setup error.
fn confine_failure(err: ConfineError) -> Failure {
    let chain = crate::error_chain(&err);
    if err.is_refusal() {
        Failure {
            kind: FailureKind::Refused,
            message: format!(
                "the container profile cannot apply this container's confinement: {chain}; the privileged profile (profile=privileged) enters without it"
            ),
        }
    } else {
        SetupError::Confine(err).into()
    }
}

/// Moves the helper (and so the command) into every cgroup of the target, on
/// cgroup v1 and v2 hierarchies alike, then into a session cgroup made below
/// the container's (`session_cgroup`), which ends whatever the command starts.
fn join_cgroups(request: &EnterRequest) -> Result<SessionCgroup, Failure> {
    let dirs = crate::process::cgroup_dirs(Path::new("/proc"), request.pid)
        .map_err(SetupError::FindCgroups)?;
    let me = std::process::id().to_string();
    // A hierarchy this mount namespace does not mount is not among them: it
    // cannot be joined here, and the command would not see it either.
    for group in &dirs {
        let procs = group.dir.join("cgroup.procs");
        std::fs::write(&procs, &me).map_err(|source| SetupError::JoinCgroup {
            procs: procs.clone(),
            source,
        })?;
    }
    // What `kubectl exec` leaves after a normal exit, the container profile
    // leaves too; a privileged or toolbox session leaves nothing
    // (docs/session-lifetime.md).
    let fate = if request.profile == Profile::Container && request.toolbox.is_none() {
        Fate::HandToContainer
    } else {
        Fate::Kill
    };
    Ok(SessionCgroup::enter(&dirs, fate).map_err(SetupError::EnterSessionCgroup)?)
}

/// Joins the requested namespaces, or every one the target has that differs
/// from the helper's own, with one `setns(pidfd, flags)`.
fn enter_namespaces(request: &EnterRequest, pidfd: &OwnedFd) -> Result<NamespaceSet, Failure> {
    let differing = ProcRoot::new("/proc")
        .differing_namespaces(request.pid, std::process::id())
        .map_err(SetupError::ReadNamespaces)?;
    let differs = |kind: Namespace| differing.contains(kind.name());
    let mut joined = NamespaceSet::EMPTY;
    for kind in Namespace::ALL {
        let wanted = match request.namespaces {
            // Every view joins the container's user namespace, first: its
            // IDs and capabilities are only the container's inside it.
            _ if kind == Namespace::User => differs(kind),
            Some(set) => set.contains(kind),
            None => differs(kind),
        };
        if wanted {
            joined = joined.with(kind);
        }
    }
    if joined.is_empty() {
        return Ok(joined);
    }
    // `NSDEBUG_SETNS=nsfd` forces the path for kernels before 5.8, to test it.
    let forced = std::env::var_os("NSDEBUG_SETNS").is_some_and(|v| v == "nsfd");
    if !forced {
        match rustix::thread::move_into_thread_name_spaces(pidfd.as_fd(), joined.flags()) {
            Ok(()) => return Ok(joined),
            // Before Linux 5.8 setns(2) takes no pidfd: join one by one.
            Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(SetupError::Setns(e).into()),
        }
    }
    enter_by_namespace_files(request, joined)?;
    Ok(joined)
}

/// Joins `joined` through `/proc/PID/ns/*` files, in the set's order (user
/// first, mount last): all files are opened first (the mount namespace hides
/// the host's `/proc`), then the process is checked again, so a PID recycled
/// meanwhile is refused.
fn enter_by_namespace_files(request: &EnterRequest, joined: NamespaceSet) -> Result<(), Failure> {
    let mut files = Vec::new();
    for kind in joined.iter() {
        let path = format!("/proc/{}/ns/{}", request.pid, kind.name());
        let file = open(
            path.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| SetupError::OpenNamespace { path, source })?;
        files.push((kind, file));
    }
    match ProcRoot::new("/proc").identity(request.pid) {
        Ok(now) if now.start_time == request.start_time => {}
        _ => {
            return Err(Failure {
                kind: FailureKind::TargetGone,
                message: format!(
                    "the container's process {} exited while being entered",
                    request.pid
                ),
            });
        }
    }
    for (kind, file) in files {
        rustix::thread::move_into_link_name_space(file.as_fd(), None)
            .map_err(|source| SetupError::SetnsOne { kind, source })?;
    }
    Ok(())
}

/// A terminal from the `/dev/ptmx` visible now (the container's, once in its
/// mount namespace), sized, its slave owned by the command's user.
fn open_terminal(
    size: super::TerminalSize,
    uid: Option<u32>,
) -> Result<(OwnedFd, OwnedFd), Failure> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, unlockpt};
    let fail = |what: &'static str, source: rustix::io::Errno| {
        Failure::from(SetupError::Terminal { what, source })
    };
    // The container's /dev/ptmx is the container's to plant: it is opened
    // without blocking, must be a character device, and the slave comes
    // from the master itself (`TIOCGPTPEER`), never from a path.
    let nonblock = OpenptFlags::from_bits_retain(OFlags::NONBLOCK.bits());
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC | nonblock)
        .map_err(|e| fail("open", e))?;
    let stat = rustix::fs::fstat(&master).map_err(|e| fail("inspect", e))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::CharacterDevice {
        return Err(Failure {
            kind: FailureKind::Refused,
            message: "the container's /dev/ptmx is not a terminal multiplexer (a character device); open the session without a terminal, or in the toolbox".into(),
        });
    }
    grantpt(&master).map_err(|e| fail("grant", e))?;
    unlockpt(&master).map_err(|e| fail("unlock", e))?;
    let slave = rustix::pty::ioctl_tiocgptpeer(
        &master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )
    .map_err(|e| fail("open the slave of", e))?;
    // Blocking again, as the agent's side has always been handed it.
    rustix::fs::fcntl_setfl(&master, OFlags::empty()).map_err(|e| fail("set up", e))?;
    if let Some(uid) = uid {
        rustix::fs::fchown(&slave, Some(rustix::fs::Uid::from_raw(uid)), None)
            .map_err(|e| fail("hand over", e))?;
    }
    let winsize = rustix::termios::Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&master, winsize).map_err(|e| fail("size", e))?;
    Ok((master, slave))
}

/// The command's stdio: the agent's pipes, or a terminal.
enum ChildStdio {
    Pipes(Vec<OwnedFd>),
    Terminal(OwnedFd),
}

/// Starts the command with the profile's identity, in its own session.
fn spawn(
    request: &EnterRequest,
    profile: TargetProfile,
    proc_mount: Option<toolbox::ProcMount>,
    stdio: ChildStdio,
) -> Result<std::process::Child, Failure> {
    let tty = matches!(stdio, ChildStdio::Terminal(_));
    let mut env = match (request.profile, &proc_mount) {
        (Profile::Privileged, _) => toolbox::clean_environment(),
        (Profile::Container, Some(_)) => toolbox::environment(profile.env),
        (Profile::Container, None) => profile.env,
    };
    for (key, value) in &request.env {
        env.retain(|(k, _)| k != key);
        env.push((key.clone(), value.clone()));
    }
    if tty && !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), "xterm".into()));
    }
    let (stdin, stdout, stderr) = match stdio {
        ChildStdio::Terminal(terminal) => {
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(SetupError::DupTerminal);
            (dup(&terminal)?, dup(&terminal)?, terminal)
        }
        ChildStdio::Pipes(mut fds) => {
            let stderr = fds.remove(2);
            let stdout = fds.remove(1);
            (fds.remove(0), stdout, stderr)
        }
    };
    let mut command = Command::new(&request.argv[0]);
    command
        .args(&request.argv[1..])
        .env_clear()
        .envs(env)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    // The child writes the number of a step that failed here (identity.rs).
    let (steps_read, steps_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(SetupError::Pipe)?;
    let identity = Identity::new(profile.confinement, tty, proc_mount, steps_write);
    let seccomp_first = identity.seccomp_first();
    super::sys::before_exec(&mut command, move || identity.apply());
    let spawned = command.spawn();
    // The closure holds the pipe's write end: dropping it leaves the child's
    // copy, closed by now (it exec'd or exited before `spawn` returned).
    drop(command);
    spawned.map_err(|err| {
        let program = &request.argv[0];
        let mut step = [0u8];
        if let Ok(1) = rustix::io::read(&steps_read, &mut step)
            && let Some(step) = Step::from_byte(step[0])
        {
            let message = identity::failure_message(step, seccomp_first, &err);
            // The container's own filter stops the profile: a refusal, not a fault.
            let kind = if seccomp_first && step.follows_early_seccomp() {
                FailureKind::Refused
            } else {
                FailureKind::Setup
            };
            return Failure { kind, message };
        }
        match err.kind() {
            std::io::ErrorKind::NotFound => Failure {
                kind: FailureKind::NotFound,
                message: format!("exec: \"{program}\": executable file not found in $PATH"),
            },
            std::io::ErrorKind::PermissionDenied => Failure {
                kind: FailureKind::NotExecutable,
                message: format!("exec: \"{program}\": permission denied"),
            },
            _ => SetupError::Start {
                program: program.clone(),
                source: err,
            }
            .into(),
        }
    })
}

/// Waits for the command. If the agent hangs up first (client gone, timeout,
/// shutdown), kills it and everything of the session; once it exits by itself,
/// ends the session as its profile says, before reporting the exit.
fn supervise(
    control: BorrowedFd<'_>,
    mut child: std::process::Child,
    mut session: SessionCgroup,
) -> Result<(), Failure> {
    let pid = Pid::from_raw(child.id() as i32).ok_or(SetupError::NoChildPid)?;
    let child_fd = pidfd_open(pid, PidfdFlags::empty()).map_err(SetupError::PidfdOpen)?;
    // The command runs in the session cgroup; the helper must not, or
    // killing the session would kill it too.
    session.leave().map_err(SetupError::LeaveSessionCgroup)?;
    loop {
        let mut fds = [
            PollFd::new(&control, PollFlags::IN),
            PollFd::new(&child_fd, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(SetupError::Poll(e).into()),
        }
        let hung_up = !fds[0].revents().is_empty();
        let exited = !fds[1].revents().is_empty();
        if exited {
            break;
        }
        if hung_up {
            let _ = kill_process_group(pid, Signal::KILL);
            let ended = session.kill();
            let _ = child.wait();
            // Nobody is left to tell but the agent's log.
            if let Err(err) = ended {
                eprintln!(
                    "nsdebug enter helper: ending a session: {}",
                    crate::error_chain(&err)
                );
            }
            return Ok(());
        }
    }
    let status = child.wait().map_err(SetupError::Wait)?;
    session.end().map_err(SetupError::EndSessionCgroup)?;
    let event = match (status.code(), status.signal()) {
        (Some(code), _) => HelperEvent::Exited { code },
        (None, Some(signal)) => HelperEvent::Signaled { signal },
        (None, None) => HelperEvent::Exited { code: -1 },
    };
    report(control, &event);
    Ok(())
}
