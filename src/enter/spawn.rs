//! The agent's side of entering: prepare the command's stdio, start a helper,
//! hand it the request, and follow what it reports. Nothing here changes the
//! agent's own namespaces or credentials; that is the helper's job.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use super::protocol::{self, FailureKind, HelperEvent};
use super::{EnterRequest, HELPER_ARG};

/// Why a command could not be started or followed.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    #[error("failed to {what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{message}")]
    Failed { kind: FailureKind, message: String },
    #[error("the enter helper exited without reporting")]
    HelperVanished,
}

fn io_error(what: &'static str) -> impl FnOnce(io::Error) -> EnterError {
    move |source| EnterError::Io { what, source }
}

/// Kernel buffer of the command's stdout and stderr pipes (the default is 64 KiB).
const OUTPUT_PIPE_BYTES: usize = 256 * 1024;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The exit code a shell would report: the code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(code) => code,
            Exit::Signal(signal) => 128 + signal,
        }
    }

    /// The signal that ended the command, if one did.
    pub fn signal(self) -> Option<i32> {
        match self {
            Exit::Code(_) => None,
            Exit::Signal(signal) => Some(signal),
        }
    }
}

/// The command's stdio as the agent holds it.
pub enum Io {
    Pipes {
        stdin: Option<pipe::Sender>,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
    },
    Tty(std::sync::Arc<Pty>),
}

/// A running command inside a container. Dropping it kills the command and
/// every process it started: the helper kills its session cgroup when its
/// control socket closes.
pub struct Entered {
    /// The command's PID on the host.
    pub pid: u32,
    pub io: Option<Io>,
    control: AsyncFd<OwnedFd>,
    helper: tokio::process::Child,
    /// The pool the helper came from, topped up when the session ends.
    pool: Enter,
}

/// The agent's way into containers: it owns the helpers started ahead of
/// need. `serve` makes one and hands it down (in the API's state); clones
/// share the same idle helpers.
#[derive(Clone, Default)]
pub struct Enter {
    idle: std::sync::Arc<std::sync::Mutex<Vec<pool::IdleHelper>>>,
}

impl Enter {
    /// A handle with no helper waiting yet ([`Enter::refill_in_background`]
    /// starts them).
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts `request` in its container and waits until it runs (or fails to):
    /// with three pipes, or on a terminal when `request.terminal` is set.
    pub async fn spawn(&self, request: &EnterRequest) -> Result<Entered, EnterError> {
        let asked = std::time::Instant::now();
        let (io, child_fds) = if request.terminal.is_some() {
            // The helper makes the terminal inside the container and sends its master.
            (None, Vec::new())
        } else {
            let (stdin_rx, stdin_tx) = pipe_pair()?;
            let (stdout_rx, stdout_tx) = pipe_pair()?;
            let (stderr_rx, stderr_tx) = pipe_pair()?;
            // Bigger output pipes: fewer wake-ups and larger frames for commands
            // that stream (a failure only costs speed).
            for pipe in [&stdout_rx, &stderr_rx] {
                let _ = rustix::pipe::fcntl_setpipe_size(pipe, OUTPUT_PIPE_BYTES);
            }
            let io = Io::Pipes {
                stdin: Some(
                    pipe::Sender::from_owned_fd(stdin_tx).map_err(io_error("watch stdin"))?,
                ),
                stdout: pipe::Receiver::from_owned_fd(stdout_rx)
                    .map_err(io_error("watch stdout"))?,
                stderr: pipe::Receiver::from_owned_fd(stderr_rx)
                    .map_err(io_error("watch stderr"))?,
            };
            (Some(io), vec![stdin_rx, stdout_tx, stderr_tx])
        };
        let message = serde_json::to_vec(request)
            .map_err(|e| io_error("encode the request")(io::Error::other(e)))?;
        if message.len() > protocol::MAX_REQUEST {
            return Err(EnterError::Failed {
                kind: FailureKind::Setup,
                message: format!(
                    "the command and environment are {} bytes; at most {} are accepted",
                    message.len(),
                    protocol::MAX_REQUEST
                ),
            });
        }
        let borrowed: Vec<_> = child_fds.iter().map(|fd| fd.as_fd()).collect();
        let mut helper = self.take()?;
        if protocol::send(helper.control.as_fd(), &message, &borrowed).is_err() {
            // An idle helper died (killed from outside): a fresh one, once.
            helper = pool::start()?;
            protocol::send(helper.control.as_fd(), &message, &borrowed)
                .map_err(io_error("send the request to the helper"))?;
        }
        drop(borrowed);
        drop(child_fds);
        let pool::IdleHelper {
            control,
            process: helper,
        } = helper;
        rustix::io::ioctl_fionbio(&control, true)
            .map_err(|e| io_error("configure the control socket")(e.into()))?;
        let control =
            super::sys::async_fd(control).map_err(io_error("watch the control socket"))?;
        let mut entered = Entered {
            pid: 0,
            io,
            control,
            helper,
            pool: self.clone(),
        };
        match entered.next_event().await? {
            (HelperEvent::Started { pid }, mut fds) => {
                crate::metrics::entered(asked.elapsed());
                entered.pid = pid;
                if request.terminal.is_some() {
                    let master = fds.pop().ok_or(EnterError::HelperVanished)?;
                    entered.io = Some(Io::Tty(std::sync::Arc::new(Pty::from_master(master)?)));
                }
                Ok(entered)
            }
            (HelperEvent::Failed { kind, message }, _) => Err(EnterError::Failed { kind, message }),
            (HelperEvent::Exited { .. } | HelperEvent::Signaled { .. }, _) => {
                Err(EnterError::HelperVanished)
            }
        }
    }

    /// A waiting helper, or a new one.
    fn take(&self) -> Result<pool::IdleHelper, EnterError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(helper) => Ok(helper),
            None => pool::start(),
        }
    }

    /// Tops the idle helpers up to [`pool::IDLE`]. A failure here is not the
    /// caller's: the next `spawn` starts a helper itself and reports it.
    fn refill(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle.len() < pool::IDLE {
            match pool::start() {
                Ok(helper) => idle.push(helper),
                Err(_) => break,
            }
        }
    }

    /// Starts idle helpers up to the pool size, on a blocking thread.
    pub fn refill_in_background(&self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = self.clone();
            runtime.spawn_blocking(move || pool.refill());
        }
    }
}

/// Helpers started ahead of need: exec'ing the agent binary and initialising
/// it is most of what entering costs, so a few wait, blocked on their control
/// socket, for the next request.
mod pool {
    use super::*;

    /// How many helpers wait at any time.
    pub const IDLE: usize = 2;

    /// A started helper that has not received its request yet.
    pub struct IdleHelper {
        pub control: OwnedFd,
        pub process: tokio::process::Child,
    }

    /// A new helper process (`/proc/self/exe __enter`) with its control socket.
    pub fn start() -> Result<IdleHelper, EnterError> {
        let (control, helper_end) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| io_error("create the helper's control socket")(e.into()))?;
        // A request is one packet, which must fit the sender's buffer (the
        // default, about 208 KiB, is less than the largest request): forced
        // past net.core.wmem_max when the agent may, else up to it.
        let wanted = protocol::MAX_REQUEST + 64 * 1024;
        if rustix::net::sockopt::set_socket_send_buffer_size_force(&control, wanted).is_err() {
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(&control, wanted);
        }
        let process = tokio::process::Command::new("/proc/self/exe")
            .arg(HELPER_ARG)
            .stdin(std::process::Stdio::from(helper_end))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            // Not kill_on_drop: killing the helper would leave the session's
            // processes behind. Closing the control socket (dropping
            // `Entered`) makes the helper kill them and exit; tokio reaps it.
            .spawn()
            .map_err(io_error("start the enter helper"))?;
        Ok(IdleHelper { control, process })
    }
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), EnterError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| io_error("create a pipe")(e.into()))
}

impl Drop for Entered {
    fn drop(&mut self) {
        // Replace the helper this session used once it is over, so starting
        // the next one never competes with this command for the CPU.
        self.pool.refill_in_background();
    }
}

impl Entered {
    async fn next_event(&mut self) -> Result<(HelperEvent, Vec<OwnedFd>), EnterError> {
        loop {
            let mut guard = self
                .control
                .readable()
                .await
                .map_err(io_error("wait for the helper"))?;
            match guard.try_io(|fd| protocol::recv(fd.get_ref().as_fd(), protocol::MAX_EVENT)) {
                Ok(Ok((message, _))) if message.is_empty() => {
                    return Err(EnterError::HelperVanished);
                }
                Ok(Ok((message, fds))) => {
                    let event = serde_json::from_slice(&message)
                        .map_err(|e| io_error("read the helper's report")(io::Error::other(e)))?;
                    return Ok((event, fds));
                }
                Ok(Err(e)) => return Err(io_error("read from the helper")(e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Waits for the command to end. Cancel-safe: dropping the future (or the
    /// `Entered`) kills the command.
    pub async fn wait(&mut self) -> Result<Exit, EnterError> {
        let exit = match self.next_event().await?.0 {
            HelperEvent::Exited { code } => Exit::Code(code),
            HelperEvent::Signaled { signal } => Exit::Signal(signal),
            HelperEvent::Failed { kind, message } => {
                return Err(EnterError::Failed { kind, message });
            }
            HelperEvent::Started { .. } => return Err(EnterError::HelperVanished),
        };
        // The helper exits right after reporting; reap it now.
        let _ = self.helper.wait().await;
        Ok(exit)
    }
}

/// The agent's end of a pseudo-terminal, readable and writable without blocking.
pub struct Pty {
    master: AsyncFd<OwnedFd>,
}

impl Pty {
    /// Wraps a terminal master the helper made inside the container.
    fn from_master(master: OwnedFd) -> Result<Self, EnterError> {
        rustix::io::ioctl_fionbio(&master, true)
            .map_err(|e| io_error("configure the terminal")(e.into()))?;
        let master = super::sys::async_fd(master).map_err(io_error("watch the terminal"))?;
        Ok(Self { master })
    }

    /// Sets the terminal size; the command gets `SIGWINCH`.
    pub fn resize(&self, cols: u16, rows: u16) -> Result<(), EnterError> {
        let size = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(self.master.get_ref(), size)
            .map_err(|e| io_error("resize the terminal")(e.into()))
    }
}

/// The terminal as a byte stream: what the command wrote, read; keyboard
/// input, written. Reading and writing share the one master (clone the `Arc`).
pub struct PtyStream(pub std::sync::Arc<Pty>);

impl tokio::io::AsyncRead for PtyStream {
    /// What the command wrote; end of file once the terminal is closed on
    /// its side.
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        loop {
            let mut guard = std::task::ready!(self.0.master.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut *unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                // EIO: every holder of the terminal's other side closed it.
                Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl tokio::io::AsyncWrite for PtyStream {
    /// Keyboard input.
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        loop {
            let mut guard = std::task::ready!(self.0.master.poll_write_ready(cx))?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(result) => return std::task::Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
