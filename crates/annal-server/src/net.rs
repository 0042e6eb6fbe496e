//! Accepted connections that answer at once: TCP_NODELAY on our writes, and an
//! immediate ACK of every read so that a client's own Nagle algorithm never waits on
//! our delayed ACK.
//!
//! Why: a client that leaves Nagle on (the official Rust KurrentDB client's connector
//! does) sends a gRPC request as several small writes — HEADERS, then each DATA frame.
//! Nagle holds the second write until the first is acknowledged, and Linux delays that
//! ACK by up to 40 ms when the server has nothing to send yet (a client-streaming call
//! answers only after the whole request). Every call then cost ~45 ms. Linux leaves
//! quick-ACK mode on its own, so [`QuickAck`] re-arms it after each read that
//! returned data (one `setsockopt`, well under a microsecond).
//!
//! Invariant: the wrappers change socket options only; bytes pass through untouched,
//! and a failed `setsockopt` is ignored (the connection still works, only slower).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Sets the options every accepted connection gets (TCP_NODELAY).
pub(crate) fn tune(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

/// A TCP connection that acknowledges what it reads at once.
#[derive(Debug)]
pub(crate) struct QuickAck {
    tcp: TcpStream,
}

impl QuickAck {
    /// Wraps an accepted connection (and [`tune`]s it).
    pub(crate) fn new(tcp: TcpStream) -> Self {
        tune(&tcp);
        Self { tcp }
    }

    /// Completes when the connection has a byte to read (or has ended), without
    /// consuming it.
    pub(crate) async fn first_byte(&self) -> io::Result<()> {
        self.tcp.peek(&mut [0u8; 1]).await.map(|_| ())
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn ack_now(&self) {
        let _ = socket2::SockRef::from(&self.tcp).set_tcp_quickack(true);
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn ack_now(&self) {}
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.ack_now();
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn bytes_pass_through_both_ways_unchanged() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            c.write_all(b"hello annal").await.expect("io");
            let mut back = [0u8; 5];
            c.read_exact(&mut back).await.expect("io");
            back
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut io = QuickAck::new(tcp);
        let mut got = [0u8; 11];
        io.read_exact(&mut got).await.expect("io");
        assert_eq!(&got, b"hello annal");
        assert!(io.tcp.nodelay().expect("io"));
        io.write_all(b"reply").await.expect("io");
        io.flush().await.expect("io");
        assert_eq!(&client.await.expect("io"), b"reply");
    }
}
