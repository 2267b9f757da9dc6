//! The interactive loop of a session (`kubectl exec`, the web terminal):
//! the command's output to the client, the client's input, terminal size and
//! hang-up to the command, and the session's clock (idle timeout, maximum
//! duration, the agent shutting down, a client that stopped answering).
//!
//! It knows nothing of WebSockets: the client is a [`Sink`] of [`ToClient`]
//! and a [`Stream`] of [`FromClient`], the command anything that is a
//! [`Command`]; `api::exec` puts the remote-command framing around it, and
//! the tests below drive it with channels and a fake command.
//!
//! In order, a session: starts the command (a failure is said on the output
//! and in the status); sends an empty frame on the lowest channel the client
//! reads (the stream is up); then forwards both ways until the command has
//! ended and its output has drained ([`super::pump::DRAIN`]), the clock runs
//! out, the recording ends, or the client goes. Whatever ends it, the last
//! thing sent is [`ToClient::End`] (except to a client that is gone), and the
//! command is killed when the loop returns.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Outcome;
use super::pump::{self, Chunk, DRAIN};
use crate::enter::{EnterError, Exit, TerminalSize};
use crate::recording::{Recording, RecordingStopped};

/// Output read per chunk of an interactive session.
const CHUNK: usize = 256 * 1024;

/// A channel of the client's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Channel {
    Stdout,
    Stderr,
    /// Where the status goes: the first frame when the client reads no output.
    Error,
}

/// What the session tells the client.
#[derive(Debug)]
pub enum ToClient {
    /// The stream is up: an empty frame on this channel.
    Ready(Channel),
    /// The command's output, or a line from the agent (`nsdebug: ...`).
    Output(Channel, Bytes),
    /// Are you still there?
    Ping,
    /// The last thing said.
    End(Ending),
}

/// How a session ended, as the client is told.
#[derive(Debug)]
pub enum Ending {
    /// The command ended, or never started or failed: its status.
    Command(Result<Exit, EnterError>),
    /// The agent closed the session, for `why`.
    Closed { why: String, cause: Closed },
    /// The client sent what the protocol cannot carry.
    ProtocolError(&'static str),
}

/// Why the agent closed a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The record fails closed: the recording ended.
    Recording,
    /// The session's clock ran out (idle, maximum duration, shutdown).
    Clock,
}

/// What the client sent.
#[derive(Debug)]
pub enum FromClient {
    Stdin(Bytes),
    Resize(TerminalSize),
    /// The client is done with stdin (the command reads end of file).
    CloseStdin,
    /// Anything else that shows the client is there (a ping, a pong, a frame
    /// on a channel the session does not use, a resize it cannot read).
    Alive,
    /// A frame the protocol cannot carry: the session is closed.
    Malformed(&'static str),
    /// The client closed (the stream ending means the same).
    Gone,
}

/// A reader of a command's output.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// A writer of a command's input.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A command's stdio, as the session holds it.
pub enum CommandIo {
    Pipes {
        stdin: Option<Writer>,
        stdout: Reader,
        stderr: Reader,
    },
    Terminal {
        output: Reader,
        input: Writer,
        resize: Box<dyn Fn(TerminalSize) + Send>,
    },
}

/// A running command: `crate::enter::Entered` in the agent, a fake in tests.
/// Dropping it kills the command.
pub trait Command: Send {
    /// Its stdio, taken once.
    fn take_io(&mut self) -> Option<CommandIo>;
    /// Waits for it to end; cancel-safe.
    fn wait(&mut self) -> impl Future<Output = Result<Exit, EnterError>> + Send;
}

/// What a session's record is told as it goes (the audit trail).
pub trait Trail {
    /// The command runs.
    fn started(&mut self);
    fn bytes_in(&mut self, n: u64);
    fn bytes_out(&mut self, n: u64);
    fn ended(&mut self, outcome: Outcome);
}

/// Which streams the client asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Streams {
    /// Where the agent's own lines go; `None` when the client reads no output.
    fn notices(self) -> Option<Channel> {
        if !(self.stdout || self.stderr || self.tty) {
            None
        } else if self.tty || !self.stderr {
            Some(Channel::Stdout)
        } else {
            Some(Channel::Stderr)
        }
    }

    /// The lowest channel the client reads: the "stream is up" frame's.
    fn first(self) -> Channel {
        if self.stdout || self.tty {
            Channel::Stdout
        } else if self.stderr {
            Channel::Stderr
        } else {
            Channel::Error
        }
    }
}

/// The session's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub max_duration: Duration,
    /// Nothing either way for this long closes the session.
    pub idle_timeout: Duration,
    /// Nothing at all from the client for this long: it is gone.
    pub client_timeout: Duration,
    /// How long a session has once the agent is shutting down.
    pub grace: Duration,
}

/// One interactive session, ready to run.
pub struct Interactive {
    pub streams: Streams,
    pub clock: Clock,
    /// Cancelled on SIGTERM; the session then has `clock.grace` left.
    pub draining: CancellationToken,
    /// Every chunk each way is recorded first; its end ends the session.
    pub recording: Option<Recording>,
}

/// Input for the command, in order.
enum Input {
    Data(Bytes),
    Close,
}

impl Interactive {
    /// Runs the session to its end: `start` is the command starting.
    pub async fn run<C, S, R, T>(
        self,
        start: impl Future<Output = Result<C, EnterError>>,
        mut client: S,
        mut from_client: R,
        trail: &mut T,
    ) where
        C: Command,
        S: Sink<ToClient> + Unpin,
        R: Stream<Item = FromClient> + Unpin,
        T: Trail,
    {
        let Self {
            streams,
            clock,
            draining,
            recording,
        } = self;
        let notices = streams.notices();
        // Never fires without a recording.
        let recording_ended = recording.as_ref().map(Recording::ended).unwrap_or_default();
        let mut command = match start.await {
            Ok(command) => command,
            Err(err) => {
                // Say why where the user looks: kubectl prints only the exit code.
                if let Some(channel) = notices {
                    let line = format!("nsdebug: {err}\r\n");
                    let _ = client.send(ToClient::Output(channel, line.into())).await;
                }
                trail.ended(Outcome::of_start_failure(&err));
                let _ = client.send(ToClient::End(Ending::Command(Err(err)))).await;
                return;
            }
        };
        trail.started();
        if client.send(ToClient::Ready(streams.first())).await.is_err() {
            return;
        }

        let (out_tx, mut out_rx) = mpsc::channel::<Chunk>(8);
        // Fired a drain after the command ends: output then stops once
        // nothing is ready right away (a background child may hold the pipes open).
        let stop = CancellationToken::new();
        let _stop_on_return = stop.clone().drop_guard();
        let (in_tx, in_rx) = mpsc::channel::<Input>(8);
        let mut resize = None;
        let pumped = |reader, stream| {
            pump::pump(
                reader,
                stream,
                CHUNK,
                out_tx.clone(),
                stop.clone(),
                recording.clone(),
            )
        };
        match command.take_io() {
            Some(CommandIo::Pipes {
                stdin,
                stdout,
                stderr,
            }) => {
                if streams.stdout {
                    tokio::spawn(pumped(stdout, pump::Stream::Stdout));
                }
                if streams.stderr {
                    tokio::spawn(pumped(stderr, pump::Stream::Stderr));
                }
                tokio::spawn(feed(stdin.filter(|_| streams.stdin), in_rx, true));
            }
            Some(CommandIo::Terminal {
                output,
                input,
                resize: resizer,
            }) => {
                tokio::spawn(pumped(output, pump::Stream::Stdout));
                tokio::spawn(feed(Some(input), in_rx, false));
                resize = Some(resizer);
            }
            None => {}
        }
        drop(out_tx);

        let wait = command.wait();
        tokio::pin!(wait);
        let mut exit: Option<Result<Exit, EnterError>> = None;
        let mut outputs_open = true;
        let drain = tokio::time::sleep(Duration::from_secs(86400));
        tokio::pin!(drain);
        // The session's clock: closed at the maximum duration, or when
        // nothing went either way for the idle timeout (checked when it
        // could have run out, not reset on every frame).
        let opened = Instant::now();
        let mut closes_at = opened + clock.max_duration;
        let mut active_at = opened;
        let mut shutting_down = false;
        let timer = tokio::time::sleep_until(closes_at.min(opened + clock.idle_timeout));
        tokio::pin!(timer);
        // A client that stops reading answers no ping: once nothing at all
        // came back for the client timeout, it is gone (its writes stalling
        // are the connection's deadline, `write_deadline`).
        let mut heard_at = opened;
        // Input the command has not taken yet. The client is read only when
        // there is none: a command that never reads its stdin holds back the
        // client, never the loop (its clock, keepalive and the command's end
        // stay live; awaiting the queue here once held a session forever).
        let mut pending: Option<Input> = None;
        let mut keepalive =
            tokio::time::interval_at(opened + clock.client_timeout / 3, clock.client_timeout / 3);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // The record fails closed: a session whose recording ended
                // (its cap, a failed write) ends with it, and says why.
                () = recording_ended.cancelled() => {
                    let stopped = recording
                        .as_ref()
                        .and_then(Recording::stopped)
                        .unwrap_or(RecordingStopped::WriteFailed);
                    trail.ended(Outcome::Recording(stopped));
                    let why = format!("{stopped}; the session is closed");
                    if let Some(channel) = notices {
                        let line = format!("\r\nnsdebug: {why}\r\n");
                        let _ = client.send(ToClient::Output(channel, line.into())).await;
                    }
                    let _ = client.send(ToClient::End(Ending::Closed { why, cause: Closed::Recording })).await;
                    return;
                },
                _ = keepalive.tick() => {
                    // Not reading the client (input is stalled) is no sign
                    // that it is gone.
                    if pending.is_none() && heard_at.elapsed() >= clock.client_timeout {
                        trail.ended(Outcome::ClientUnresponsive);
                        return;
                    }
                    if client.send(ToClient::Ping).await.is_err() { return }
                },
                // SIGTERM: say so now, and end before the agent does.
                () = draining.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    let ends = Instant::now() + clock.grace.saturating_sub(Duration::from_millis(500));
                    closes_at = closes_at.min(ends);
                    timer.as_mut().reset(closes_at);
                    if let Some(channel) = notices {
                        let line = format!(
                            "\r\nnsdebug: the agent is shutting down; this session ends within {}\r\n",
                            humantime::format_duration(clock.grace)
                        );
                        let _ = client.send(ToClient::Output(channel, line.into())).await;
                    }
                },
                () = &mut timer => {
                    let now = Instant::now();
                    let idle_until = active_at + clock.idle_timeout;
                    let (why, outcome) = if shutting_down && now >= closes_at {
                        ("the agent is shutting down".to_string(), Outcome::AgentShutdown)
                    } else if now >= closes_at {
                        (format!("the session reached its maximum duration of {}", humantime::format_duration(clock.max_duration)), Outcome::MaxDuration)
                    } else if now >= idle_until {
                        (format!("the session was idle for {}", humantime::format_duration(clock.idle_timeout)), Outcome::IdleTimeout)
                    } else {
                        timer.as_mut().reset(closes_at.min(idle_until));
                        continue;
                    };
                    trail.ended(outcome);
                    if let Some(channel) = notices {
                        let line = format!("\r\nnsdebug: {why}; closing it\r\n");
                        let _ = client.send(ToClient::Output(channel, line.into())).await;
                    }
                    let _ = client.send(ToClient::End(Ending::Closed { why, cause: Closed::Clock })).await;
                    return;
                },
                chunk = out_rx.recv(), if outputs_open => match chunk {
                    Some(Chunk { stream, data }) => {
                        active_at = Instant::now();
                        trail.bytes_out(data.len() as u64);
                        let channel = match stream {
                            pump::Stream::Stdout => Channel::Stdout,
                            pump::Stream::Stderr => Channel::Stderr,
                        };
                        if client.send(ToClient::Output(channel, data)).await.is_err() { return }
                    }
                    None => outputs_open = false,
                },
                permit = in_tx.reserve(), if pending.is_some() => {
                    // The command took what was queued; a queue that is
                    // gone (its stdin closed) drops the input, as before.
                    if let (Ok(permit), Some(input)) = (permit, pending.take()) {
                        permit.send(input);
                    }
                    heard_at = Instant::now();
                },
                incoming = from_client.next(), if pending.is_none() => {
                    let incoming = incoming.unwrap_or(FromClient::Gone);
                    if !matches!(incoming, FromClient::Gone) {
                        heard_at = Instant::now();
                    }
                    match incoming {
                        FromClient::Stdin(data) => {
                            active_at = Instant::now();
                            trail.bytes_in(data.len() as u64);
                            if let Some(recording) = &recording
                                && recording.input(&data).await.is_err()
                            {
                                // Not passed on: the recording's end closes the session.
                                continue;
                            }
                            pending = Some(Input::Data(data));
                        }
                        FromClient::Resize(size) => if let Some(resize) = &resize {
                            resize(size);
                            if let Some(recording) = &recording {
                                let _ = recording.resize(size.cols, size.rows).await;
                            }
                        },
                        FromClient::CloseStdin => {
                            pending = Some(Input::Close);
                        }
                        FromClient::Alive => {}
                        FromClient::Malformed(why) => {
                            let _ = client.send(ToClient::End(Ending::ProtocolError(why))).await;
                            return;
                        }
                        // The client closed or vanished: dropping the command kills it.
                        FromClient::Gone => return,
                    }
                },
                result = &mut wait, if exit.is_none() => {
                    exit = Some(result);
                    drain.as_mut().reset(Instant::now() + DRAIN);
                },
                _ = &mut drain, if exit.is_some() && !stop.is_cancelled() => stop.cancel(),
            }
            // A recording that ended first ends the session as such (above).
            if !outputs_open
                && !recording_ended.is_cancelled()
                && let Some(result) = exit.take()
            {
                trail.ended(match &result {
                    Ok(exit) => Outcome::Exited(exit.code()),
                    Err(err) => Outcome::Failed(err.to_string()),
                });
                let _ = client.send(ToClient::End(Ending::Command(result))).await;
                return;
            }
        }
    }
}

/// Writes the client's input to the command, in order; `Close` drops the
/// writer (the command reads end of file) when `closes`.
async fn feed(mut writer: Option<Writer>, mut input: mpsc::Receiver<Input>, closes: bool) {
    while let Some(input) = input.recv().await {
        match input {
            Input::Data(data) => {
                if let Some(pipe) = writer.as_mut()
                    && pipe.write_all(&data).await.is_err()
                {
                    return;
                }
            }
            Input::Close if closes => writer = None,
            Input::Close => {}
        }
    }
}

impl Command for crate::enter::Entered {
    fn take_io(&mut self) -> Option<CommandIo> {
        Some(match self.io.take()? {
            crate::enter::Io::Pipes {
                stdin,
                stdout,
                stderr,
            } => CommandIo::Pipes {
                stdin: stdin.map(|pipe| Box::new(pipe) as Writer),
                stdout: Box::new(stdout),
                stderr: Box::new(stderr),
            },
            crate::enter::Io::Tty(terminal) => CommandIo::Terminal {
                output: Box::new(crate::enter::PtyStream(terminal.clone())),
                input: Box::new(crate::enter::PtyStream(terminal.clone())),
                resize: Box::new(move |size: TerminalSize| {
                    let _ = terminal.resize(size.cols, size.rows);
                }),
            },
        })
    }

    fn wait(&mut self) -> impl Future<Output = Result<Exit, EnterError>> + Send {
        crate::enter::Entered::wait(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::channel::mpsc as client_mpsc;
    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio::sync::oneshot;

    use super::*;
    use crate::enter::protocol::FailureKind;

    /// A command the test drives: it ends when told, its stdio are in-memory
    /// pipes, and it says whether the session killed it (dropped it).
    struct Fake {
        io: Option<CommandIo>,
        exit: oneshot::Receiver<Exit>,
        killed: Arc<Mutex<bool>>,
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            *self.killed.lock().unwrap() = true;
        }
    }

    impl Command for Fake {
        fn take_io(&mut self) -> Option<CommandIo> {
            self.io.take()
        }
        async fn wait(&mut self) -> Result<Exit, EnterError> {
            (&mut self.exit)
                .await
                .map_err(|_| EnterError::HelperVanished)
        }
    }

    /// The test's side of a fake command on pipes.
    struct PipesEnd {
        stdin: DuplexStream,
        stdout: DuplexStream,
        stderr: DuplexStream,
        exit: oneshot::Sender<Exit>,
        killed: Arc<Mutex<bool>>,
    }

    fn on_pipes() -> (Fake, PipesEnd) {
        let (stdin_ours, stdin_theirs) = tokio::io::duplex(1 << 16);
        let (stdout_ours, stdout_theirs) = tokio::io::duplex(1 << 16);
        let (stderr_ours, stderr_theirs) = tokio::io::duplex(1 << 16);
        let (exit_tx, exit_rx) = oneshot::channel();
        let killed = Arc::new(Mutex::new(false));
        let fake = Fake {
            io: Some(CommandIo::Pipes {
                stdin: Some(Box::new(stdin_ours)),
                stdout: Box::new(stdout_ours),
                stderr: Box::new(stderr_ours),
            }),
            exit: exit_rx,
            killed: killed.clone(),
        };
        let end = PipesEnd {
            stdin: stdin_theirs,
            stdout: stdout_theirs,
            stderr: stderr_theirs,
            exit: exit_tx,
            killed,
        };
        (fake, end)
    }

    #[derive(Default)]
    struct Recorded {
        started: bool,
        bytes_in: u64,
        bytes_out: u64,
        outcome: Option<Outcome>,
    }

    impl Trail for Recorded {
        fn started(&mut self) {
            self.started = true;
        }
        fn bytes_in(&mut self, n: u64) {
            self.bytes_in += n;
        }
        fn bytes_out(&mut self, n: u64) {
            self.bytes_out += n;
        }
        fn ended(&mut self, outcome: Outcome) {
            self.outcome = Some(outcome);
        }
    }

    const PIPES: Streams = Streams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };

    fn new_session(streams: Streams, clock: Clock) -> (Interactive, CancellationToken) {
        let draining = CancellationToken::new();
        let session = Interactive {
            streams,
            clock,
            draining: draining.clone(),
            recording: None,
        };
        (session, draining)
    }

    fn clock() -> Clock {
        Clock {
            max_duration: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(600),
            client_timeout: Duration::from_secs(3000),
            grace: Duration::from_secs(5),
        }
    }

    /// The client's side: what it sends, and what it got.
    struct Client {
        to_session: client_mpsc::UnboundedSender<FromClient>,
        from_session: client_mpsc::UnboundedReceiver<ToClient>,
    }

    /// Runs `session` on `command` in the background.
    fn start<C: Command + 'static>(
        session: Interactive,
        command: Result<C, EnterError>,
    ) -> (Client, tokio::task::JoinHandle<Recorded>) {
        let (to_session, from_client) = client_mpsc::unbounded();
        let (to_client, from_session) = client_mpsc::unbounded();
        let running = tokio::spawn(async move {
            let mut trail = Recorded::default();
            session
                .run(async { command }, to_client, from_client, &mut trail)
                .await;
            trail
        });
        let client = Client {
            to_session,
            from_session,
        };
        (client, running)
    }

    impl Client {
        async fn next(&mut self) -> ToClient {
            self.from_session
                .next()
                .await
                .expect("the session said more")
        }

        /// Output until the end, and the end.
        async fn rest(&mut self) -> (Vec<(Channel, Vec<u8>)>, Option<Ending>) {
            let mut output = Vec::new();
            while let Some(said) = self.from_session.next().await {
                match said {
                    ToClient::Output(channel, data) => output.push((channel, data.to_vec())),
                    ToClient::End(ending) => return (output, Some(ending)),
                    ToClient::Ready(_) | ToClient::Ping => {}
                }
            }
            (output, None)
        }

        fn send(&self, message: FromClient) {
            self.to_session.unbounded_send(message).unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn input_reaches_the_command_and_output_and_status_reach_the_client() {
        let (fake, mut end) = on_pipes();
        let (session, _) = new_session(PIPES, clock());
        let (mut client, running) = start(session, Ok(fake));
        assert!(matches!(
            client.next().await,
            ToClient::Ready(Channel::Stdout)
        ));
        client.send(FromClient::Stdin(Bytes::from_static(b"hello")));
        client.send(FromClient::CloseStdin);
        let mut input = Vec::new();
        end.stdin.read_to_end(&mut input).await.unwrap();
        assert_eq!(input, b"hello", "stdin ends after the close");
        end.stdout.write_all(b"out").await.unwrap();
        end.stderr.write_all(b"err").await.unwrap();
        drop((end.stdout, end.stderr));
        end.exit.send(Exit::Code(3)).unwrap();
        let (mut output, ending) = client.rest().await;
        output.sort();
        assert_eq!(
            output,
            [
                (Channel::Stdout, b"out".to_vec()),
                (Channel::Stderr, b"err".to_vec())
            ]
        );
        assert!(matches!(ending, Some(Ending::Command(Ok(Exit::Code(3))))));
        let trail = running.await.unwrap();
        assert!(trail.started);
        assert_eq!((trail.bytes_in, trail.bytes_out), (5, 6));
        assert_eq!(trail.outcome, Some(Outcome::Exited(3)));
    }

    /// A background child keeps stdout open after the command exits: what
    /// was written is still delivered, and the session ends after the drain.
    #[tokio::test(start_paused = true)]
    async fn the_session_ends_a_drain_after_the_command_even_if_its_pipes_stay_open() {
        let (fake, mut end) = on_pipes();
        let (session, _) = new_session(PIPES, clock());
        let (mut client, running) = start(session, Ok(fake));
        end.stdout.write_all(b"before the end").await.unwrap();
        end.exit.send(Exit::Code(0)).unwrap();
        let opened = tokio::time::Instant::now();
        let (output, ending) = client.rest().await;
        assert_eq!(output, [(Channel::Stdout, b"before the end".to_vec())]);
        assert!(matches!(ending, Some(Ending::Command(Ok(Exit::Code(0))))));
        let took = opened.elapsed();
        assert!(took >= DRAIN && took < DRAIN * 2, "{took:?}");
        running.await.unwrap();
        assert!(
            *end.killed.lock().unwrap(),
            "the command is killed at the end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_session_is_closed_and_says_why() {
        let (fake, end) = on_pipes();
        let clock = Clock {
            idle_timeout: Duration::from_secs(60),
            ..clock()
        };
        let (session, _) = new_session(PIPES, clock);
        let (mut client, running) = start(session, Ok(fake));
        let opened = tokio::time::Instant::now();
        // Activity half-way through moves the idle deadline.
        tokio::time::sleep(Duration::from_secs(30)).await;
        client.send(FromClient::Stdin(Bytes::from_static(b"x")));
        let (output, ending) = client.rest().await;
        assert_eq!(opened.elapsed(), Duration::from_secs(90));
        let Some(Ending::Closed { why, cause }) = ending else {
            panic!("{ending:?}")
        };
        assert_eq!(cause, Closed::Clock);
        assert_eq!(why, "the session was idle for 1m");
        let notice = String::from_utf8(output.last().unwrap().1.clone()).unwrap();
        assert_eq!(
            notice,
            "\r\nnsdebug: the session was idle for 1m; closing it\r\n"
        );
        assert_eq!(running.await.unwrap().outcome, Some(Outcome::IdleTimeout));
        assert!(*end.killed.lock().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_session_still_ends_at_its_maximum_duration() {
        let (fake, mut end) = on_pipes();
        let clock = Clock {
            max_duration: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(60),
            ..clock()
        };
        let (session, _) = new_session(PIPES, clock);
        let (mut client, running) = start(session, Ok(fake));
        let opened = tokio::time::Instant::now();
        let writer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if end.stdout.write_all(b".").await.is_err() {
                    return end;
                }
            }
        });
        let (_, ending) = client.rest().await;
        assert_eq!(opened.elapsed(), Duration::from_secs(120));
        let Some(Ending::Closed { why, .. }) = ending else {
            panic!("{ending:?}")
        };
        assert_eq!(why, "the session reached its maximum duration of 2m");
        assert_eq!(running.await.unwrap().outcome, Some(Outcome::MaxDuration));
        let end = writer.await.unwrap();
        assert!(*end.killed.lock().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn the_agent_shutting_down_ends_the_session_within_the_grace() {
        let (fake, _end) = on_pipes();
        let (session, draining) = new_session(PIPES, clock());
        let (mut client, running) = start(session, Ok(fake));
        assert!(matches!(client.next().await, ToClient::Ready(_)));
        let asked = tokio::time::Instant::now();
        draining.cancel();
        let (output, ending) = client.rest().await;
        assert!(asked.elapsed() < clock().grace, "{:?}", asked.elapsed());
        assert!(String::from_utf8_lossy(&output[0].1).contains("the agent is shutting down"));
        assert!(matches!(
            ending,
            Some(Ending::Closed {
                cause: Closed::Clock,
                ..
            })
        ));
        assert_eq!(running.await.unwrap().outcome, Some(Outcome::AgentShutdown));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_hangs_up_kills_the_command_and_is_told_nothing() {
        let (fake, end) = on_pipes();
        let (session, _) = new_session(PIPES, clock());
        let (mut client, running) = start(session, Ok(fake));
        assert!(matches!(client.next().await, ToClient::Ready(_)));
        client.send(FromClient::Gone);
        let (_, ending) = client.rest().await;
        assert!(ending.is_none(), "{ending:?}");
        assert_eq!(running.await.unwrap().outcome, None);
        assert!(*end.killed.lock().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_answers_nothing_is_gone_after_the_client_timeout() {
        let (fake, _end) = on_pipes();
        let clock = Clock {
            client_timeout: Duration::from_secs(30),
            ..clock()
        };
        let (session, _) = new_session(PIPES, clock);
        let (mut client, running) = start(session, Ok(fake));
        let opened = tokio::time::Instant::now();
        let mut pings = 0;
        while let Some(said) = client.from_session.next().await {
            pings += usize::from(matches!(said, ToClient::Ping));
        }
        assert!(pings >= 2, "pinged first: {pings}");
        assert!(opened.elapsed() >= Duration::from_secs(30));
        assert_eq!(
            running.await.unwrap().outcome,
            Some(Outcome::ClientUnresponsive)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_resize_reaches_the_terminal_and_not_a_command_on_pipes() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (output, _output_theirs) = tokio::io::duplex(64);
        let (input, _input_theirs) = tokio::io::duplex(64);
        let (_exit, exit) = oneshot::channel();
        let seen = sizes.clone();
        let fake = Fake {
            io: Some(CommandIo::Terminal {
                output: Box::new(output),
                input: Box::new(input),
                resize: Box::new(move |size| seen.lock().unwrap().push((size.cols, size.rows))),
            }),
            exit,
            killed: Arc::default(),
        };
        let streams = Streams {
            tty: true,
            stderr: false,
            ..PIPES
        };
        let (session, _) = new_session(streams, clock());
        let (mut client, running) = start(session, Ok(fake));
        assert!(matches!(
            client.next().await,
            ToClient::Ready(Channel::Stdout)
        ));
        client.send(FromClient::Resize(TerminalSize {
            cols: 132,
            rows: 43,
        }));
        client.send(FromClient::Gone);
        running.await.unwrap();
        assert_eq!(*sizes.lock().unwrap(), [(132, 43)]);

        // On pipes there is nothing to resize: the session goes on.
        let (fake, end) = on_pipes();
        let (session, _) = new_session(PIPES, clock());
        let (mut client, running) = start(session, Ok(fake));
        client.send(FromClient::Resize(TerminalSize { cols: 1, rows: 1 }));
        end.exit.send(Exit::Code(0)).unwrap();
        let (_, ending) = client.rest().await;
        assert!(matches!(ending, Some(Ending::Command(Ok(_)))));
        running.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_that_cannot_start_is_explained_on_the_output_and_the_status() {
        let (session, _) = new_session(PIPES, clock());
        let failed: Result<Fake, _> = Err(EnterError::Failed {
            kind: FailureKind::NotFound,
            message: "\"nope\": no such file".into(),
        });
        let (mut client, running) = start(session, failed);
        let (output, ending) = client.rest().await;
        assert_eq!(output.len(), 1);
        assert_eq!(output[0].0, Channel::Stderr);
        assert!(String::from_utf8_lossy(&output[0].1).starts_with("nsdebug: "));
        assert!(matches!(ending, Some(Ending::Command(Err(_)))));
        let trail = running.await.unwrap();
        assert!(!trail.started);
        assert_eq!(trail.outcome, Some(Outcome::Exited(127)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_frame_closes_the_session() {
        let (fake, end) = on_pipes();
        let (session, _) = new_session(PIPES, clock());
        let (mut client, running) = start(session, Ok(fake));
        client.send(FromClient::Malformed("malformed frame: no channel"));
        let (_, ending) = client.rest().await;
        assert!(matches!(ending, Some(Ending::ProtocolError(_))));
        running.await.unwrap();
        assert!(*end.killed.lock().unwrap());
    }

    /// Found by an adversarial review: a command that never reads its stdin
    /// let a client fill the pipe and the input queue, and the loop then
    /// waited on the queue for good: no clock, no keepalive, no hang-up
    /// (`yes | kubectl exec -i POD -- sleep 3600` held a session slot until
    /// the agent restarted). The clock must still close it.
    #[tokio::test(start_paused = true)]
    async fn a_command_that_never_reads_stdin_still_ends_at_its_maximum_duration() {
        let (stdin_ours, _stdin_never_read) = tokio::io::duplex(16);
        let (stdout_ours, _stdout_theirs) = tokio::io::duplex(16);
        let (stderr_ours, _stderr_theirs) = tokio::io::duplex(16);
        let (_exit, exit) = oneshot::channel();
        let killed = Arc::new(Mutex::new(false));
        let fake = Fake {
            io: Some(CommandIo::Pipes {
                stdin: Some(Box::new(stdin_ours)),
                stdout: Box::new(stdout_ours),
                stderr: Box::new(stderr_ours),
            }),
            exit,
            killed: killed.clone(),
        };
        let clock = Clock {
            max_duration: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(60),
            client_timeout: Duration::from_secs(30),
            ..clock()
        };
        let (session, _) = new_session(PIPES, clock);
        let (mut client, running) = start(session, Ok(fake));
        // Far more than the pipe and the queue hold, and the client keeps
        // answering pings all the while.
        for _ in 0..1000 {
            client.send(FromClient::Stdin(Bytes::from_static(b"yyyyyyyyyyyyyyyy")));
        }
        let opened = tokio::time::Instant::now();
        let pinger = client.to_session.clone();
        let alive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if pinger.unbounded_send(FromClient::Alive).is_err() {
                    return;
                }
            }
        });
        let ended = tokio::time::timeout(Duration::from_secs(3600), client.rest()).await;
        alive.abort();
        let (_, ending) = ended.expect("the session is still open an hour later");
        assert!(
            matches!(
                ending,
                Some(Ending::Closed {
                    cause: Closed::Clock,
                    ..
                })
            ),
            "{ending:?}"
        );
        assert!(
            opened.elapsed() <= Duration::from_secs(121),
            "{:?}",
            opened.elapsed()
        );
        let outcome = running.await.unwrap().outcome;
        assert!(
            matches!(outcome, Some(Outcome::IdleTimeout | Outcome::MaxDuration)),
            "{outcome:?}"
        );
        assert!(*killed.lock().unwrap());
    }
}
