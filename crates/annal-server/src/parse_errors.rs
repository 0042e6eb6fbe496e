//! hyper's own answers to requests it cannot parse, made problem documents.
//!
//! hyper answers an HTTP/1.1 request it cannot parse (a malformed head, two
//! `Content-Length`s, a NUL in a header: 400; a URI too long: 414; a head over its
//! buffer: 431) by itself, before any service runs, with an empty body, and closes the
//! connection. It offers no hook to change that answer, so this wrapper recognises it
//! on the way out and writes the same status with an RFC 9457 problem document
//! (`invalid_request`) instead.
//!
//! Invariants: only a write that is exactly such an answer is replaced: it starts
//! with `HTTP/1.1 400`, `414` or `431`, its head says `connection: close` and
//! `content-length: 0`, and it ends with the head (annal's own 4xx answers always carry
//! a problem body, so never match); every other byte passes through untouched; the
//! replacement is written whole before any flush or shutdown completes; vectored
//! writes stay vectored (hyper then queues body chunks instead of copying them).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest head hyper writes for such an answer (its status line, `connection`,
/// `content-length` and `date`: about 120 bytes).
const MAX_HEAD: usize = 512;

/// An I/O stream that turns hyper's bodiless parse-error answers into problem documents.
#[derive(Debug)]
pub(crate) struct ParseErrorProblems<T> {
    inner: T,
    /// A replacement answer not yet written whole, and how much of it was.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> ParseErrorProblems<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The problem-document answer that replaces `head`, if `head` is one of hyper's
/// automatic parse-error answers.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    // hyper's answer is a short head; anything else (every body chunk) is let through
    // after two cheap checks.
    if head.len() > MAX_HEAD || !head.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let (status, detail) = match text.get(..12)? {
        "HTTP/1.1 400" => (
            400,
            "the request could not be parsed: a malformed request line or header, a header the server refuses (a NUL, two Content-Lengths), or a body framing it cannot follow",
        ),
        "HTTP/1.1 414" => (414, "the request's URI is too long"),
        "HTTP/1.1 431" => (
            431,
            "the request's head (its request line and headers) is over the server's limit",
        ),
        _ => return None,
    };
    let lower = text.to_ascii_lowercase();
    if !text.ends_with("\r\n\r\n")
        || !lower.contains("\r\nconnection: close\r\n")
        || !lower.contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let title = text.get(13..text.find("\r\n")?)?;
    let body = serde_json::json!({
        "type": "invalid_request",
        "title": title,
        "status": status,
        "detail": detail,
        "field": "request",
        "reason": detail,
    })
    .to_string();
    Some(
        format!(
            "HTTP/1.1 {status} {title}\r\nconnection: close\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<T: AsyncWrite + Unpin> ParseErrorProblems<T> {
    /// Writes what remains of a replacement; ready once it is all written.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written >= bytes.len() {
                self.pending = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ParseErrorProblems<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ParseErrorProblems<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        if let Some(answer) = replacement(buf) {
            self.pending = Some((answer, 0));
            // Written as far as the caller knows; flush and shutdown finish it.
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        // hyper's answer is its head alone: one slice with bytes.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next())
            && let Some(answer) = replacement(only)
        {
            self.pending = Some((answer, 0));
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(only.len()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 07:52:55 GMT\r\n\r\n";

    #[test]
    fn hypers_bodiless_parse_error_answer_becomes_a_problem_document() {
        let answer = String::from_utf8(replacement(HYPER_431).expect("replaced")).expect("text");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("content-type: application/problem+json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let problem: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(problem["type"], "invalid_request");
        assert_eq!(problem["status"], 431);
    }

    #[test]
    fn every_other_write_passes_untouched() {
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 80\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"\x00\x00\x12\x04\x00\x00\x00\x00\x00",
        ] {
            assert!(replacement(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }

    #[tokio::test]
    async fn the_replacement_is_written_whole() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (writer, mut reader) = tokio::io::duplex(16);
        let mut io = ParseErrorProblems::new(writer);
        let read = tokio::spawn(async move {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).await.expect("read");
            all
        });
        io.write_all(HYPER_431).await.expect("write");
        io.flush().await.expect("flush");
        io.shutdown().await.expect("shutdown");
        drop(io);
        let got = read.await.expect("reader");
        assert_eq!(Some(got), replacement(HYPER_431));
    }
}
