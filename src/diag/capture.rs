//! Packet capture in a pod's network namespace, streamed as a pcap or pcapng
//! file that tshark and Wireshark read while it is still being written.
//!
//! **Where it runs.** A dedicated `std::thread` of the agent (named
//! [`THREAD_NAME`]) joins the target's network namespace
//! ([`crate::enter::join_network_namespace`]: pidfd, identity check, `setns`),
//! opens a libpcap handle there (`any`, Linux cooked capture, or one of the
//! pod's interfaces), compiles the BPF filter with libpcap and reads packets
//! until the capture ends. Its socket only ever sees the pod's interfaces. The
//! enter helper process is not used: it exists to run a *program* inside a
//! container (mount and PID namespaces, credentials, cgroups, seccomp), while
//! a capture is one socket that needs the network namespace alone, and every
//! packet would cross a process boundary for nothing. The thread never leaves
//! the namespace and exits with the capture, so nothing else ever runs there;
//! a tokio thread is never used (`setns` would follow it into other tasks).
//!
//! **How it ends.** At the duration, packet or byte cap, when the container's
//! process exits (its pidfd), when the client goes away (the channel closes)
//! or on a libpcap error; then the handle and the thread are gone. The handle
//! is non-blocking and the thread waits in `poll(2)` on it and the pidfd, at
//! most [`POLL_INTERVAL`] at a time: libpcap's own read timeout is not
//! promised to fire while no packet arrives (`pcap(3PCAP)`), and with Debian
//! 12's libpcap 1.10 in immediate mode it does not; a silent capture must
//! still end on time.
//!
//! **Backpressure.** The thread never blocks on the client: records go to the
//! async side over a bounded channel in chunks of whole records; while the
//! channel is full they wait in a buffer of at most [`MAX_PENDING`] bytes, and
//! past that packets are dropped and counted, as the kernel drops them when
//! libpcap's ring is full. What was not handed out when the capture ends is
//! the stream's last chunk (with the pcapng statistics block), so the file is
//! always complete.

mod format;

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use crate::enter::{NetnsError, join_network_namespace};
use crate::process::{ContainerProcess, has_exited};
use format::{Closing, Encoder, FileInfo};

/// The capture thread's name, as `/proc/PID/task/*/comm` shows it.
pub const THREAD_NAME: &str = "nsdebug-capture";
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);
pub const MAX_DURATION: Duration = Duration::from_secs(600);
pub const DEFAULT_PACKETS: u64 = 10_000;
pub const MAX_PACKETS: u64 = 10_000_000;
/// Caps on the file's size, headers included.
pub const DEFAULT_BYTES: u64 = 64 * 1024 * 1024;
pub const MAX_BYTES: u64 = 1024 * 1024 * 1024;
pub const MIN_BYTES: u64 = 1024;
/// libpcap's largest snap length, and ours by default (whole packets).
pub const MAX_SNAPLEN: u32 = 262_144;
/// How often the thread looks at the client when no packet arrives (the
/// deadline and the container's exit wake it at once).
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Chunks in flight to the async side.
const CHANNEL_CHUNKS: usize = 16;
/// Records waiting while the channel is full, at most.
pub const MAX_PENDING: usize = 256 * 1024;

/// The file format of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Classic libpcap format: tcpdump, tshark, Wireshark, everything.
    #[default]
    Pcap,
    /// pcapng: also names the interface and the filter, and ends with the
    /// capture's statistics (received, dropped, why it ended).
    PcapNg,
}

impl Format {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "" | "pcap" => Ok(Self::Pcap),
            "pcapng" => Ok(Self::PcapNg),
            other => Err(format!("unknown format '{other}'; choose pcap or pcapng")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pcap => "pcap",
            Self::PcapNg => "pcapng",
        }
    }

    /// The media type: IANA's for pcap, the common one for pcapng.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Pcap => "application/vnd.tcpdump.pcap",
            Self::PcapNg => "application/x-pcapng",
        }
    }
}

/// What to capture and when to stop.
#[derive(Debug, Clone)]
pub struct CaptureSpec {
    /// `any` (every interface of the pod) or one interface name.
    pub interface: String,
    /// A BPF filter in libpcap's syntax (`pcap-filter(7)`); empty: everything.
    pub filter: String,
    /// Bytes kept of each packet.
    pub snaplen: u32,
    pub duration: Duration,
    pub packets: u64,
    /// The file's size, headers included, stays at or below this.
    pub bytes: u64,
    pub format: Format,
    /// Which pod this is, for the pcapng interface description.
    pub description: String,
}

impl Default for CaptureSpec {
    fn default() -> Self {
        Self {
            interface: "any".into(),
            filter: String::new(),
            snaplen: MAX_SNAPLEN,
            duration: DEFAULT_DURATION,
            packets: DEFAULT_PACKETS,
            bytes: DEFAULT_BYTES,
            format: Format::Pcap,
            description: String::new(),
        }
    }
}

impl CaptureSpec {
    /// Checks every value against the limits; the message says what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.interface;
        if name.is_empty()
            || name.len() > 15
            || name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c == '\0' || c.is_whitespace())
        {
            return Err(format!(
                "interface '{name}' is not an interface name; use any or a name such as eth0"
            ));
        }
        if self.filter.contains('\0') {
            return Err("filter contains a NUL byte".into());
        }
        if !(1..=MAX_SNAPLEN).contains(&self.snaplen) {
            return Err(format!("snaplen must be 1 to {MAX_SNAPLEN}"));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(format!(
                "duration must be more than 0 and at most {}",
                humantime::format_duration(MAX_DURATION)
            ));
        }
        if !(1..=MAX_PACKETS).contains(&self.packets) {
            return Err(format!("packets must be 1 to {MAX_PACKETS}"));
        }
        if !(MIN_BYTES..=MAX_BYTES).contains(&self.bytes) {
            return Err(format!(
                "bytes must be {} to {}",
                bytesize::ByteSize::b(MIN_BYTES).display().iec(),
                bytesize::ByteSize::b(MAX_BYTES).display().iec()
            ));
        }
        Ok(())
    }
}

/// Why a capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("failed to join the pod's network namespace")]
    Enter(#[from] NetnsError),
    /// libpcap's own words, for the caller: the interface does not exist.
    #[error("cannot capture on interface \"{interface}\" of this pod: {message}; its interfaces are: {}", .available.join(", "))]
    Interface {
        interface: String,
        message: String,
        available: Vec<String>,
    },
    /// libpcap's own words, for the caller: the filter does not compile.
    #[error("invalid capture filter \"{filter}\": {message}")]
    Filter { filter: String, message: String },
    /// libpcap's own words: the handle could not be opened.
    #[error("libpcap cannot open a capture on \"{interface}\": {message}")]
    Open { interface: String, message: String },
    #[error("failed to write the capture file's header")]
    Header(#[source] pcap_file::PcapError),
    #[error("failed to start the capture thread")]
    Thread(#[source] std::io::Error),
    #[error("the capture thread stopped before the capture opened")]
    Vanished,
}

/// Why a capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    Duration,
    Packets,
    Bytes,
    ContainerExited,
    ClientGone,
    /// libpcap failed while reading (an interface removed, ...).
    Failed(String),
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Duration => f.write_str("duration limit"),
            Self::Packets => f.write_str("packet limit"),
            Self::Bytes => f.write_str("byte limit"),
            Self::ContainerExited => f.write_str("container exited"),
            Self::ClientGone => f.write_str("client disconnected"),
            Self::Failed(message) => write!(f, "capture failed: {message}"),
        }
    }
}

/// Whole records of the file, in order.
#[derive(Debug)]
pub struct Chunk {
    pub data: Vec<u8>,
    /// Packets in `data`.
    pub packets: u64,
}

/// How a capture ended, with the file's last bytes.
#[derive(Debug)]
pub struct Ending {
    pub reason: EndReason,
    /// Records not handed out as chunks, and the pcapng closing block.
    pub tail: Chunk,
    /// Packets in the file, and its size.
    pub packets: u64,
    pub bytes: u64,
    /// Dropped by the kernel (libpcap's ring was full).
    pub kernel_dropped: u64,
    /// Dropped because the client read slower than the traffic came.
    pub client_dropped: u64,
}

/// A piece of the stream: file bytes, then the end.
#[derive(Debug)]
pub enum Piece {
    Chunk(Chunk),
    End(Ending),
}

/// A running capture, seen from the async side. Dropping it stops the
/// capture within [`POLL_INTERVAL`].
pub struct LiveCapture {
    chunks: mpsc::Receiver<Chunk>,
    ending: Option<oneshot::Receiver<Ending>>,
}

impl LiveCapture {
    /// The next piece: the header and records as they come, then the end;
    /// `None` after that.
    pub async fn next(&mut self) -> Option<Piece> {
        if let Some(chunk) = self.chunks.recv().await {
            return Some(Piece::Chunk(chunk));
        }
        // The thread dropped its sender: it has ended, and said how.
        let ending = self.ending.take()?;
        Some(Piece::End(ending.await.unwrap_or_else(|_| Ending {
            reason: EndReason::Failed("the capture thread stopped".into()),
            tail: Chunk {
                data: Vec::new(),
                packets: 0,
            },
            packets: 0,
            bytes: 0,
            kernel_dropped: 0,
            client_dropped: 0,
        })))
    }
}

/// Starts capturing in the network namespace of `process`: returns once the
/// handle is open and filtering, with the file's header as the first chunk.
pub async fn start(
    spec: CaptureSpec,
    process: ContainerProcess,
) -> Result<LiveCapture, CaptureError> {
    let (opened_tx, opened) = oneshot::channel();
    let (chunks_tx, chunks) = mpsc::channel(CHANNEL_CHUNKS);
    let (ending_tx, ending) = oneshot::channel();
    std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            let mut capture = match Capturing::open(spec, &process) {
                Ok(capture) => capture,
                Err(err) => {
                    let _ = opened_tx.send(Err(err));
                    return;
                }
            };
            // The channel is empty: the header always fits.
            let header = capture.encoder.take();
            let _ = chunks_tx.try_send(Chunk {
                data: header,
                packets: 0,
            });
            if opened_tx.send(Ok(())).is_err() {
                return; // the request went away while the capture opened
            }
            let _ = ending_tx.send(capture.run(&chunks_tx));
        })
        .map_err(CaptureError::Thread)?;
    match opened.await {
        Ok(Ok(())) => Ok(LiveCapture {
            chunks,
            ending: Some(ending),
        }),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(CaptureError::Vanished),
    }
}

/// The capture thread's state.
struct Capturing {
    spec: CaptureSpec,
    handle: pcap::Capture<pcap::Active>,
    /// The container's process: readable once it exited.
    pidfd: OwnedFd,
    encoder: Encoder,
    /// Bytes of the file so far (header included).
    written: u64,
}

impl Capturing {
    /// Joins the namespace and opens the handle: on the capture thread only.
    fn open(spec: CaptureSpec, process: &ContainerProcess) -> Result<Self, CaptureError> {
        let pidfd = join_network_namespace(process)?;
        let open_failed = |err: pcap::Error| {
            let message = libpcap_message(err);
            if message.contains("No such device") {
                CaptureError::Interface {
                    interface: spec.interface.clone(),
                    message,
                    available: own_interfaces(),
                }
            } else {
                CaptureError::Open {
                    interface: spec.interface.clone(),
                    message,
                }
            }
        };
        let mut handle = pcap::Capture::from_device(spec.interface.as_str())
            .map_err(open_failed)?
            .snaplen(spec.snaplen as i32)
            .promisc(false)
            // Every packet is readable as it arrives, not in batches.
            .immediate_mode(true)
            .open()
            .map_err(open_failed)?
            .setnonblock()
            .map_err(open_failed)?;
        if spec.interface == "any" {
            // Cooked v2 names the interface of each packet (tcpdump does the
            // same); v1 if this libpcap cannot.
            let _ = handle.set_datalink(pcap::Linktype::LINUX_SLL2);
        }
        if !spec.filter.is_empty() {
            handle
                .filter(&spec.filter, true)
                .map_err(|err| CaptureError::Filter {
                    filter: spec.filter.clone(),
                    message: libpcap_message(err),
                })?;
        }
        let encoder = Encoder::new(
            spec.format,
            &FileInfo {
                linktype: handle.get_datalink().0,
                snaplen: spec.snaplen,
                interface: &spec.interface,
                filter: &spec.filter,
                description: &spec.description,
            },
        )
        .map_err(CaptureError::Header)?;
        let written = encoder.pending() as u64;
        Ok(Self {
            spec,
            handle,
            pidfd,
            encoder,
            written,
        })
    }

    /// Reads packets until the capture ends; returns how, with the tail.
    fn run(mut self, chunks: &mpsc::Sender<Chunk>) -> Ending {
        let started = SystemTime::now();
        let deadline = Instant::now() + self.spec.duration;
        let budget = match self.spec.format {
            Format::Pcap => self.spec.bytes,
            Format::PcapNg => self.spec.bytes.saturating_sub(format::TRAILER_RESERVE),
        };
        let (mut packets, mut unsent, mut client_dropped) = (0u64, 0u64, 0u64);
        let reason = loop {
            if chunks.is_closed() {
                break EndReason::ClientGone;
            }
            if Instant::now() >= deadline {
                break EndReason::Duration;
            }
            if has_exited(&self.pidfd) {
                break EndReason::ContainerExited;
            }
            match self.handle.next_packet() {
                Ok(packet) => {
                    let before = self.encoder.pending();
                    let ts = packet.header.ts;
                    let record = format::Packet {
                        timestamp: Duration::new(ts.tv_sec as u64, ts.tv_usec as u32 * 1000),
                        original_len: packet.header.len,
                        data: packet.data,
                    };
                    if let Err(err) = self.encoder.write(&record) {
                        self.encoder.truncate(before);
                        break EndReason::Failed(format!("cannot write a packet: {err}"));
                    }
                    let size = (self.encoder.pending() - before) as u64;
                    if self.written + size > budget {
                        self.encoder.truncate(before);
                        break EndReason::Bytes;
                    }
                    if self.encoder.pending() > MAX_PENDING {
                        self.encoder.truncate(before);
                        client_dropped += 1;
                        continue;
                    }
                    self.written += size;
                    packets += 1;
                    unsent += 1;
                    if packets >= self.spec.packets {
                        break EndReason::Packets;
                    }
                    self.hand_out(chunks, &mut unsent);
                }
                // Non-blocking: nothing to read now.
                Err(pcap::Error::TimeoutExpired) => {
                    self.hand_out(chunks, &mut unsent);
                    self.wait(deadline);
                }
                Err(err) => break EndReason::Failed(libpcap_message(err)),
            }
        };
        let stats = self.handle.stats().ok();
        let received = stats.map(|s| u64::from(s.received)).unwrap_or_default();
        let kernel_dropped = stats
            .map(|s| u64::from(s.dropped) + u64::from(s.if_dropped))
            .unwrap_or_default();
        let before = self.encoder.pending();
        let since_epoch =
            |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let closed = self.encoder.close(&Closing {
            started: since_epoch(started),
            ended: since_epoch(SystemTime::now()),
            received,
            dropped: kernel_dropped + client_dropped,
            delivered: packets,
            comment: &format!("nsdebug: the capture ended: {reason}"),
        });
        if closed.is_err() {
            // Without its statistics block the file is still valid.
            self.encoder.truncate(before);
        }
        self.written += (self.encoder.pending() - before) as u64;
        Ending {
            reason,
            tail: Chunk {
                data: self.encoder.take(),
                packets: unsent,
            },
            packets,
            bytes: self.written,
            kernel_dropped,
            client_dropped,
        }
    }

    /// Waits until a packet arrives, the container's process exits, the
    /// deadline passes or [`POLL_INTERVAL`] is over.
    fn wait(&self, deadline: Instant) {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(POLL_INTERVAL);
        let timeout = Timespec {
            tv_sec: wait.as_secs() as _,
            tv_nsec: wait.subsec_nanos() as _,
        };
        let mut fds = [
            PollFd::new(&self.handle, PollFlags::IN),
            PollFd::new(&self.pidfd, PollFlags::IN),
        ];
        // An error or EINTR is a spurious wake-up: the loop looks again.
        let _ = poll(&mut fds, Some(&timeout));
    }

    /// Hands the pending records to the async side if the channel has room;
    /// else they stay pending.
    fn hand_out(&mut self, chunks: &mpsc::Sender<Chunk>, unsent: &mut u64) {
        if self.encoder.pending() == 0 {
            return;
        }
        let chunk = Chunk {
            data: self.encoder.take(),
            packets: *unsent,
        };
        match chunks.try_send(chunk) {
            Ok(()) => *unsent = 0,
            Err(mpsc::error::TrySendError::Full(chunk)) => self.encoder.untake(chunk.data),
            // Seen at the top of the loop.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// libpcap's error text without the crate's prefix.
fn libpcap_message(err: pcap::Error) -> String {
    match err {
        pcap::Error::PcapError(message) => message,
        other => other.to_string(),
    }
}

/// The interfaces of the calling thread's network namespace
/// (`/proc/thread-self/net/dev`, `proc(5)`), for an error message.
fn own_interfaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_to_string("/proc/thread-self/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|line| {
            line.split_once(':')
                .map(|(name, _)| name.trim().to_string())
        })
        .collect();
    names.sort();
    names.insert(0, "any".into());
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert!(CaptureSpec::default().validate().is_ok());
        let with = |f: fn(&mut CaptureSpec)| {
            let mut spec = CaptureSpec::default();
            f(&mut spec);
            spec.validate().unwrap_err()
        };
        assert!(with(|s| s.interface = "../x".into()).contains("not an interface name"));
        assert!(with(|s| s.interface = "a-very-long-interface".into()).contains("eth0"));
        assert_eq!(with(|s| s.snaplen = 0), "snaplen must be 1 to 262144");
        assert_eq!(
            with(|s| s.duration = Duration::from_secs(601)),
            "duration must be more than 0 and at most 10m"
        );
        assert_eq!(with(|s| s.packets = 0), "packets must be 1 to 10000000");
        assert_eq!(
            with(|s| s.bytes = 2 << 30),
            "bytes must be 1.0 KiB to 1.0 GiB"
        );
        assert!(with(|s| s.filter = "tcp\0".into()).contains("NUL"));
    }

    #[test]
    fn formats() {
        assert_eq!(Format::parse("").unwrap(), Format::Pcap);
        assert_eq!(
            Format::parse("pcapng").unwrap().content_type(),
            "application/x-pcapng"
        );
        assert!(
            Format::parse("json")
                .unwrap_err()
                .contains("pcap or pcapng")
        );
    }

    #[test]
    fn end_reasons_read_like_the_audit_log() {
        assert_eq!(EndReason::Packets.to_string(), "packet limit");
        assert_eq!(
            EndReason::Failed("The interface went down".into()).to_string(),
            "capture failed: The interface went down"
        );
    }
}
