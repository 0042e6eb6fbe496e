//! Connections whose client stops taking bytes are closed: a write (or flush) that
//! cannot proceed for the send timeout fails with `TimedOut`, which ends the connection.
//!
//! Why: a client that opens a subscription or a large read and never reads holds a
//! connection slot and the server's read-ahead page for as long as it likes. Pages are
//! bounded by bytes (`annal_core::budget`); this bounds the time too.
//!
//! Invariants: bytes pass through untouched; the clock runs only while a write is
//! waiting for the socket, so a connection that is idle (nothing to send), however
//! long, is never closed by it; any write that makes progress restarts it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An I/O stream whose writes give up after waiting `timeout` for the peer.
#[derive(Debug)]
pub(crate) struct SendTimeout<T> {
    inner: T,
    timeout: Duration,
    /// Running while a write waits for the peer.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<T> SendTimeout<T> {
    pub(crate) fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            waiting: None,
        }
    }

    /// What a write's poll means with the clock: progress stops it; waiting starts it
    /// (or finds it expired, which fails the write).
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(r) => {
                self.waiting = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let clock = self
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if clock.as_mut().poll(cx).is_ready() {
                    self.waiting = None;
                    metrics::counter!("annal_connections_stalled_total").increment(1);
                    tracing::debug!(
                        ?timeout,
                        "a client took no bytes for the send timeout; closing its connection"
                    );
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took no bytes for the send timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_takes_fails_after_the_timeout() {
        // A pipe whose reader never reads: writes block once its buffer is full.
        let (writer, _reader) = tokio::io::duplex(1024);
        let mut io = SendTimeout::new(writer, Duration::from_secs(30));
        let big = vec![0u8; 64 * 1024];
        let started = tokio::time::Instant::now();
        let e = io.write_all(&big).await.expect_err("times out");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_or_a_slow_reader_is_not_cut_off() {
        let (writer, mut reader) = tokio::io::duplex(1024);
        let mut io = SendTimeout::new(writer, Duration::from_secs(30));
        // Idle for longer than the timeout: nothing is waiting, nothing fails.
        tokio::time::sleep(Duration::from_secs(120)).await;
        // A reader that takes a little every 20 s keeps a long write going.
        let drain = tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut buf = [0u8; 1024];
            let mut got = 0;
            while got < 8 * 1024 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                got += reader.read(&mut buf).await.expect("read");
            }
        });
        io.write_all(&[1u8; 8 * 1024])
            .await
            .expect("a slow reader is served");
        drain.await.expect("drained");
    }
}
