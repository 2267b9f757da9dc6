//! A write deadline on client connections: a client that takes none of the
//! data written to it for the client timeout (`--client-timeout`) gets an
//! error instead of a connection that waits forever.
//!
//! Without it, a client that stops reading but keeps its socket open holds a
//! session, its command and its slot for as long as it likes: the agent's
//! writes only wait (TCP keeps an idle peer's zero window open indefinitely),
//! and hyper and the WebSocket have no deadline of their own. Wrapping the
//! accepted socket covers every route at once, plain or TLS, streamed HTTP
//! bodies and upgraded WebSockets alike; the failed write ends the connection
//! and, with it, the session (dropping it kills the command).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner` with writes that fail once they made no progress for `timeout`.
pub struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write first waits for the peer; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// Passes a finished write through; a waiting one fails at the deadline.
    fn within<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took no data for {}",
                    humantime::format_duration(timeout)
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.within(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.within(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.within(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.within(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_peer_that_takes_nothing_fails_the_write_at_the_deadline() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut ours = WriteDeadline::new(ours, Duration::from_millis(300));
        ours.write_all(&[7u8; 1024]).await.unwrap();
        // Taking data is progress: the next write goes through.
        let mut buf = [0u8; 1024];
        theirs.read_exact(&mut buf).await.unwrap();
        ours.write_all(&[7u8; 1024]).await.unwrap();
        // Then nothing is taken: an error at the deadline, not a wait.
        let started = std::time::Instant::now();
        let err = ours.write_all(&[7u8; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(err.to_string(), "the client took no data for 300ms");
    }
}
