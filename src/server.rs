//! The API's HTTP server: the accept loop, connection limits, the first request
//! head read by hand (a slow one gets a 408, an oversized one a 431), and
//! draining the connections at shutdown. It knows nothing of what the agent
//! serves: `serve` builds the router and binds the listener, this runs it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::write_deadline::WriteDeadline;

/// A listener's connections: what serves them and how many at once.
pub struct Server {
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    slots: Arc<tokio::sync::Semaphore>,
    header_timeout: Duration,
    /// Writes that make no progress for this long end the connection.
    client_timeout: Duration,
    connections: TaskTracker,
}

impl Server {
    /// A server for `app`, over TLS when `tls` is given, within `limits`.
    pub fn new(app: axum::Router, tls: Option<TlsAcceptor>, limits: &Limits) -> Self {
        Self {
            app,
            tls,
            // At most this many connections at once; the next wait in the
            // kernel's accept queue, so a flood of clients cannot run the agent
            // out of descriptors or memory.
            slots: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            header_timeout: limits.request_header_timeout,
            client_timeout: limits.client_timeout,
            connections: TaskTracker::new(),
        }
    }

    /// Accepts and serves connections until `stop` completes.
    pub async fn accept_until(
        &self,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut accept_errors = AcceptErrors::default();
        tokio::pin!(stop);
        loop {
            let slot = tokio::select! {
                _ = &mut stop => break,
                slot = self.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of descriptors and the like: the error repeats
                        // until a connection closes, so wait a little rather
                        // than spin, and say so once in a while.
                        accept_errors.note(&err);
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let app = self.app.clone();
            let tls = self.tls.clone();
            let header_timeout = self.header_timeout;
            let _ = stream.set_nodelay(true);
            // Under TLS too: a client that stops reading stalls the socket.
            let stream = WriteDeadline::new(stream, self.client_timeout);
            self.connections.spawn(async move {
                let _slot = slot;
                match tls {
                    Some(tls) => match tokio::time::timeout(header_timeout, tls.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => serve_connection(stream, peer, app, header_timeout).await,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    },
                    None => serve_connection(stream, peer, app, header_timeout).await,
                }
            });
        }
    }
}

/// How long the accept loop waits after a failed accept (EMFILE and such).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Failed accepts, logged at most every ten seconds with their count.
#[derive(Default)]
struct AcceptErrors {
    since_logged: u64,
    logged_at: Option<std::time::Instant>,
}

impl AcceptErrors {
    fn note(&mut self, err: &std::io::Error) {
        self.since_logged += 1;
        let due = self
            .logged_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10));
        if due {
            tracing::warn!(error = %err, failures = self.since_logged, "accepting connections fails; retrying");
            self.since_logged = 0;
            self.logged_at = Some(std::time::Instant::now());
        }
    }
}
/// How long requests in flight may finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Server {
    /// Waits, at most [`SHUTDOWN_GRACE`], for the connections in flight to end.
    pub async fn drain(self) {
        self.connections.close();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.connections.wait()).await;
    }
}

/// Serves HTTP/1.1 (with upgrades, for exec) on one connection.
pub async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    app: axum::Router,
    header_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            tower::ServiceExt::oneshot(app.clone(), request)
        });
    let Some(stream) = first_head(stream, header_timeout).await else {
        return;
    };
    let result = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(READ_BUFFER_BYTES)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// The largest request head (request line and headers) the agent takes;
/// a larger one gets a `431` `v1.Status`. It is the one head limit: the
/// first head of a connection is measured here as it is read (in bytes
/// sent), and every request again by the API before it authenticates (the
/// line and the header names and values), so a later request on a kept-alive
/// connection gets the same answer. 32 KiB is the limit the agent has always
/// documented: kubectl's heads take a few hundred bytes and the largest
/// header a client sends, its bearer token, a few KiB.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// hyper's read buffer, the memory a connection may hold for a head: twice
/// the limit, so a later head just over it is still read whole and the API
/// answers it with a `v1.Status`; past this hyper answers a bare `431`.
const READ_BUFFER_BYTES: usize = 2 * MAX_HEAD_BYTES;

/// Reads a connection's first request head before hyper does, so that a
/// client too slow to send it gets a `408` (hyper's own header timeout, which
/// still guards the requests after it, closes without a word). `None` when
/// the connection is done: closed early, or answered 408. What was read is
/// replayed to hyper.
async fn first_head<S>(mut stream: S, timeout: Duration) -> Option<Rewind<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    let from = head.len().saturating_sub(3);
                    head.extend_from_slice(&chunk[..n]);
                    // A whole head, or more than the agent takes (a 431).
                    if head[from..].windows(4).any(|w| w == b"\r\n\r\n")
                        || head.len() > MAX_HEAD_BYTES
                    {
                        return true;
                    }
                }
            }
        }
    };
    let outcome = tokio::time::timeout(timeout, read).await;
    let refusal = match outcome {
        Ok(true) if head.len() > MAX_HEAD_BYTES => Some((
            "431 Request Header Fields Too Large",
            format!(
                "the request line and headers are more than {MAX_HEAD_BYTES} bytes; the agent takes at most {MAX_HEAD_BYTES}"
            ),
            "RequestHeaderFieldsTooLarge",
        )),
        Err(_) if !head.is_empty() => Some((
            "408 Request Timeout",
            format!(
                "the request's line and headers did not arrive within {}",
                humantime::format_duration(timeout)
            ),
            "Timeout",
        )),
        _ => None,
    };
    if let Some((status, message, reason)) = refusal {
        let code: u16 = status[..3].parse().unwrap_or(400);
        let body = nsdebug_wire::Status::failure(message, reason)
            .with_code(code)
            .to_json();
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
        return None;
    }
    match outcome {
        Ok(true) => Some(Rewind {
            prefix: head,
            at: 0,
            inner: stream,
        }),
        _ => None,
    }
}

/// A stream whose first bytes were read already: they are read again first.
struct Rewind<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// What the agent answers to a first head of `head`, when it answers.
    async fn first_answer(head: Vec<u8>) -> (Option<Vec<u8>>, String) {
        let (mut client, agent) = tokio::io::duplex(4 * MAX_HEAD_BYTES);
        client.write_all(&head).await.unwrap();
        let replayed = match first_head(agent, Duration::from_secs(5)).await {
            Some(mut rewind) => {
                let mut again = vec![0u8; head.len()];
                rewind.read_exact(&mut again).await.unwrap();
                Some(again)
            }
            None => None,
        };
        let _ = client.shutdown().await;
        let mut answer = String::new();
        let _ = client.read_to_string(&mut answer).await;
        (replayed, answer)
    }

    fn head_of(bytes: usize) -> Vec<u8> {
        let start = b"GET /version HTTP/1.1\r\nx-padding: ";
        let mut head = start.to_vec();
        head.resize(bytes - 4, b'p');
        head.extend_from_slice(b"\r\n\r\n");
        head
    }

    #[tokio::test]
    async fn a_head_at_the_limit_is_replayed_to_hyper() {
        let head = head_of(MAX_HEAD_BYTES);
        let (replayed, answer) = first_answer(head.clone()).await;
        assert_eq!(replayed, Some(head));
        assert_eq!(answer, "");
    }

    #[tokio::test]
    async fn a_head_over_the_limit_gets_a_431_status() {
        let (replayed, answer) = first_answer(head_of(MAX_HEAD_BYTES + 1)).await;
        assert_eq!(replayed, None);
        assert!(
            answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let status: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["code"], 431);
        assert_eq!(
            status["message"],
            "the request line and headers are more than 32768 bytes; the agent takes at most 32768"
        );
    }
}
