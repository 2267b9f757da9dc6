//! Port-forward: TCP connections to a pod's ports, carried over the client's
//! one HTTP connection, as the kubelet serves `pods/portforward`.
//!
//! Two wire forms carry the same thing:
//! - [`tunnel`]: SPDY/3.1 ([`spdy`]), one stream pair (`error`, `data`) per
//!   connection, any number of ports and connections per session; kubectl
//!   speaks it inside a WebSocket (`SPDY/3.1+portforward.k8s.io`) or, as a
//!   fallback, on the raw upgraded connection;
//! - [`channels`]: the WebSocket channel form (`v4.channel.k8s.io`), one
//!   connection per port named in `?ports=`, channels `2i` (data) and `2i+1`
//!   (error), each opened by the port as 2 bytes little-endian.
//!
//! Connections are dialled by the session's [`dialer::Dialer`], a thread in
//! the pod's network namespace. Each connection is [`pump`]ed both ways
//! with bounded buffers: nothing is read from the pod faster than the
//! client's connection takes it, and nothing from the client faster than
//! the pod takes it (TCP's backpressure, not SPDY's flow control, which
//! kubectl does not speak).

pub mod channels;
pub mod dialer;
pub mod spdy;
pub mod tunnel;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The largest chunk read from a pod's socket at once (kubectl's own copy
/// size).
pub const CHUNK: usize = 32 * 1024;
/// Chunks from the client buffered per connection before the session stops
/// reading from the client.
pub const CLIENT_CHUNKS: usize = 8;
/// The client's bytes one session may have on their way to pods, all
/// connections together.
pub const CLIENT_BUDGET: usize = 4 << 20;
/// How long a pod may take none of a connection's bytes (or the session's
/// budget stay full) before that connection ends: meanwhile the whole
/// session waits.
pub const POD_STALL: std::time::Duration = std::time::Duration::from_secs(30);
/// Connections one session may have open at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Ports named one by one in a session's audit record.
pub const AUDITED_PORTS: usize = 32;

/// The client's bytes on their way to a pod, holding their share of the
/// session's [`ClientBudget`] until written.
pub struct Chunk {
    bytes: Bytes,
    _budget: tokio::sync::OwnedSemaphorePermit,
}

/// One session's [`CLIENT_BUDGET`], one permit per KiB (as
/// `session::OutputBudget` counts).
#[derive(Clone)]
pub struct ClientBudget(std::sync::Arc<tokio::sync::Semaphore>);

impl Default for ClientBudget {
    fn default() -> Self {
        Self(std::sync::Arc::new(tokio::sync::Semaphore::new(
            CLIENT_BUDGET >> 10,
        )))
    }
}

impl ClientBudget {
    /// Waits until `bytes` fit the budget (never closed, so always `Some`
    /// in practice). A message longer than the whole budget takes all of it.
    pub async fn take(&self, bytes: Bytes) -> Option<Chunk> {
        let kib = bytes.len().div_ceil(1024).clamp(1, CLIENT_BUDGET >> 10) as u32;
        let permit = self.0.clone().acquire_many_owned(kib).await.ok()?;
        Some(Chunk {
            bytes,
            _budget: permit,
        })
    }
}

/// What a session did, for its audit trail.
#[derive(Default)]
pub struct Counters {
    /// Bytes from the client to the pod.
    pub bytes_in: AtomicU64,
    /// Bytes from the pod to the client.
    pub bytes_out: AtomicU64,
    pub connections: AtomicU64,
    pub failed: AtomicU64,
    /// Connections asked for and not yet over (a tunnel's stream pairs).
    pub open: AtomicU64,
    pub ports: Mutex<BTreeSet<u16>>,
}

impl Counters {
    pub fn port(&self, port: u16) {
        self.ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port);
    }

    /// The ports asked for, as `80,8080`; past [`AUDITED_PORTS`], the first
    /// ones and the count, as `1,2,...,32,... (1001 ports)`.
    pub fn port_list(&self) -> String {
        let ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let list = ports
            .iter()
            .take(AUDITED_PORTS)
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if ports.len() > AUDITED_PORTS {
            format!("{list},... ({} ports)", ports.len())
        } else {
            list
        }
    }
}

/// Resolves once `timeout` passed with no connection open and nothing
/// moved (no byte, no new connection): an idle session, as exec's
/// `--session-idle-timeout` ends one.
pub async fn idle(counters: &Counters, timeout: std::time::Duration) {
    let activity = || {
        [
            &counters.bytes_in,
            &counters.bytes_out,
            &counters.connections,
            &counters.failed,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .fold(0u64, u64::wrapping_add)
    };
    let mut seen = activity();
    loop {
        tokio::time::sleep(timeout).await;
        let now = activity();
        if now == seen && counters.open.load(Ordering::Relaxed) == 0 {
            return;
        }
        seen = now;
    }
}

/// What a forwarded connection needs from its session.
#[derive(Clone)]
pub struct Context {
    pub dialer: std::sync::Arc<dialer::Dialer>,
    pub counters: std::sync::Arc<Counters>,
    /// `namespace/pod` and the pod's UID, for the kubelet's error text.
    pub pod: String,
    pub uid: String,
}

impl Context {
    /// The kubelet's text for a port that could not be reached
    /// (`pkg/kubelet/cri/streaming/portforward/httpstream.go`).
    pub fn dial_error(&self, port: u16, why: &str) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid {}: {why}",
            self.pod, self.uid
        )
    }
}

/// Copies between `socket` and the client until the pod ends its side (or
/// fails): the pod's bytes go out as `to_client(chunk)` messages on `out`,
/// the client's arrive on `from_client`, whose end (the client's FIN) shuts
/// the socket's write side. Returns when the pod's side is done.
pub async fn pump<T>(
    socket: tokio::net::TcpStream,
    mut from_client: mpsc::Receiver<Chunk>,
    out: &mpsc::Sender<T>,
    to_client: impl Fn(Bytes) -> T,
    counters: &Counters,
) {
    let (mut read, mut write) = socket.into_split();
    let upstream = async move {
        while let Some(chunk) = from_client.recv().await {
            if write.write_all(&chunk.bytes).await.is_err() {
                // The pod stopped reading: what the client sends is dropped
                // (the receiver goes with this future).
                return std::future::pending().await;
            }
        }
        let _ = write.shutdown().await;
        std::future::pending::<()>().await
    };
    let downstream = async {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            match read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                    if out
                        .send(to_client(Bytes::copy_from_slice(&buffer[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

/// Writes queued messages to the client, flushing when the queue is empty;
/// the writer of both forms (SPDY frames, channel messages).
async fn write_all<T, W: futures::Sink<T> + Unpin>(
    mut outgoing: tokio::sync::mpsc::Receiver<T>,
    mut sink: W,
) {
    use futures::SinkExt;
    while let Some(message) = outgoing.recv().await {
        if sink.feed(message).await.is_err() {
            return;
        }
        while let Ok(message) = outgoing.try_recv() {
            if sink.feed(message).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    /// The review: a session asking for every port wrote them all (~390 KB)
    /// in one audit line.
    #[test]
    fn the_audited_port_list_names_32_ports_and_counts_the_rest() {
        let counters = Counters::default();
        counters.port(8080);
        counters.port(80);
        assert_eq!(counters.port_list(), "80,8080");
        for port in 1..=1000 {
            counters.port(port);
        }
        let list = counters.port_list();
        let expected: Vec<String> = (1..=32).map(|p| p.to_string()).collect();
        assert_eq!(list, format!("{},... ({} ports)", expected.join(","), 1001));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_with_nothing_open_and_nothing_moving_is_idle() {
        let counters = Counters::default();
        let start = tokio::time::Instant::now();
        idle(&counters, IDLE).await;
        assert_eq!(start.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_connection_or_moving_bytes_keep_a_session() {
        let counters = Counters::default();
        counters.open.store(1, Ordering::Relaxed);
        let waited = tokio::time::timeout(10 * IDLE, idle(&counters, IDLE)).await;
        assert!(waited.is_err(), "an open connection is not idle");

        counters.open.store(0, Ordering::Relaxed);
        let start = tokio::time::Instant::now();
        let moving = async {
            for _ in 0..5 {
                tokio::time::sleep(IDLE / 2).await;
                counters.bytes_in.fetch_add(1, Ordering::Relaxed);
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            () = idle(&counters, IDLE) => {}
            () = moving => unreachable!(),
        }
        // Bytes moved until 150 s; the first quiet full period ends at 240 s.
        assert!(
            start.elapsed() >= IDLE * 5 / 2 + IDLE,
            "{:?}",
            start.elapsed()
        );
    }
}
