//! Streamed responses: pages of `GET /v1/events` written as they are read (a large page
//! is never one buffer), and Server-Sent Events subscriptions that read history then
//! wait for commits. Both pull from the store only as fast as the client takes bytes,
//! so a slow client costs at most one internal page of memory.
//!
//! Invariant: an internal page holds at most [`CHUNK`] events and, after the first
//! event, about [`annal_core::budget::PAGE_BYTES`] of them ([`PageBudget`], measured on
//! the bytes sent). A client that stops reading thus holds one such page (or one event, if
//! larger) in the server, not a thousand events of up to a MiB each. Every page's bytes
//! count toward the process's read-ahead cap ([`Held`]) until written.

use crate::AppState;
use crate::problem::{Problem, store_failed};
use annal_core::budget::{FIRST_PAGE, Held, PAGE_BYTES, PageBudget, event_bytes};
use annal_core::{Filter, RecordedEvent, Store};
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Most events read from the store per internal page.
const CHUNK: usize = 1000;
/// Most reads of the first internal page of `GET /v1/events` (doubling from one event,
/// enough to reach [`CHUNK`] small events).
const FIRST_READS: usize = 12;
/// How long a subscription waits for a commit before checking for shutdown again.
const LIVE_WAIT: Duration = Duration::from_secs(5);

fn serialise(events: &[RecordedEvent], first: bool) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(events.len() * 512);
    for (i, e) in events.iter().enumerate() {
        if i > 0 || !first {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, e)?;
    }
    Ok(out)
}

/// `{"events": [...], "next_after_position": P|null}`, streamed. The first internal page
/// is read before the response starts, so a failing store is a proper error response.
pub async fn events_body(
    store: Arc<dyn Store>,
    after: u64,
    limit: usize,
    filter: Filter,
) -> Result<Response, Problem> {
    let chunk = limit.min(CHUNK);
    // The first internal page is read before the answer starts, so that a failing store
    // or a corrupt event in it is a proper error response. Event sizes are unknown: one
    // event first, then pages as the byte budget allows, each at most twice the one
    // before ([`PageBudget`]), until it holds about a page's bytes or `chunk` events.
    let mut first = store
        .read_all(after, chunk.min(FIRST_PAGE), &filter)
        .await?;
    let mut more = first.len() == chunk.min(FIRST_PAGE);
    let mut sizing = PageBudget::new(chunk);
    let mut bytes: usize = first.iter().map(event_bytes).sum();
    sizing.observe_bytes(first.len(), bytes);
    for _ in 0..FIRST_READS {
        if !more || first.len() >= chunk || bytes >= PAGE_BYTES {
            break;
        }
        let want = (chunk - first.len()).min(sizing.events());
        let from = first.last().map_or(after, |e| e.position);
        let rest = store.read_all(from, want, &filter).await?;
        more = rest.len() == want;
        let read: usize = rest.iter().map(event_bytes).sum();
        sizing.observe_bytes(rest.len(), read);
        bytes += read;
        first.extend(rest);
    }
    let head = serialise(&first, true)
        .map_err(|e| Problem::from(annal_core::Error::Corrupt(e.to_string())))?;
    struct St {
        store: Arc<dyn Store>,
        filter: Filter,
        after: u64,
        sent: usize,
        limit: usize,
        chunk: usize,
        more: bool,
        done: bool,
        /// Events the next page may hold (its byte budget).
        next: PageBudget,
    }
    let mut next = PageBudget::new(CHUNK);
    next.observe_bytes(first.len(), head.len());
    let st = St {
        next,
        store,
        filter,
        after: first.last().map_or(after, |e| e.position),
        sent: first.len(),
        limit,
        chunk,
        more,
        done: false,
    };
    let mut opening = b"{\"events\":[".to_vec();
    opening.extend(head);
    let rest = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        if st.more && st.sent < st.limit {
            let want = (st.limit - st.sent).min(st.chunk).min(st.next.events());
            let page = match st.store.read_all(st.after, want, &st.filter).await {
                Ok(p) => p,
                Err(e) => {
                    store_failed("http", &e);
                    tracing::warn!(error = %e, "a streamed read failed midway; closing the response");
                    st.done = true;
                    return Some((Err(std::io::Error::other(e.to_string())), st));
                }
            };
            st.more = page.len() == want;
            st.sent += page.len();
            if let Some(last) = page.last() {
                st.after = last.position;
            }
            let bytes = serialise(&page, st.sent == page.len()).map_err(std::io::Error::other);
            if let Ok(b) = &bytes {
                st.next.observe_bytes(page.len(), b.len());
            }
            return Some((bytes.map(held), st));
        }
        st.done = true;
        // A full page may have more after it; a short one reached the head.
        let next = if st.sent == st.limit {
            st.after.to_string()
        } else {
            "null".to_owned()
        };
        Some((
            Ok(Bytes::from(format!("],\"next_after_position\":{next}}}"))),
            st,
        ))
    });
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(held(opening)) });
    let body = Body::from_stream(futures_util::StreamExt::chain(body, rest));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// An SSE stream of every event after `after` that passes `filter`: history, then live
/// commits, without a gap or a duplicate at the switch (both come from the same ordered
/// reads by position). Each store page goes out as one body chunk (one frame per event
/// would cap throughput at the transport's frames per second); a comment line keeps an
/// idle connection open. Ends when the server shuts down.
///
/// SSE treats CR, LF and CRLF alike as line ends, so an event whose verbatim `data` or
/// `metadata` holds a CR in its whitespace arrives with LF there; the paged routes keep
/// every byte.
pub fn subscription(app: AppState, after: u64, filter: Filter) -> Response {
    struct St {
        app: AppState,
        filter: Filter,
        after: u64,
        failed: bool,
        /// Events the next page may hold (its byte budget).
        next: PageBudget,
        _gauge: SseGauge,
    }
    let st = St {
        app,
        filter,
        after,
        failed: false,
        next: PageBudget::new(CHUNK),
        _gauge: SseGauge::new(),
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        // After an error frame the stream ends: the client reconnects with
        // Last-Event-ID (never a tight loop against a failing store).
        if st.failed || *st.app.shutdown.borrow() {
            return None;
        }
        let scanned = match st.app.store.head(&[]).await {
            Ok(h) => h,
            Err(e) => {
                store_failed("sse", &e);
                st.failed = true;
                return Some((Ok::<_, Infallible>(error_frame(&e.to_string())), st));
            }
        };
        match st
            .app
            .store
            .read_all(st.after, st.next.events(), &st.filter)
            .await
        {
            Ok(page) if !page.is_empty() => {
                if let Some(last) = page.last() {
                    st.after = last.position;
                }
                let out = frames(&page);
                st.next.observe_bytes(page.len(), out.len());
                return Some((Ok(out), st));
            }
            Ok(_) => {}
            Err(e) => {
                store_failed("sse", &e);
                st.failed = true;
                return Some((Ok(error_frame(&e.to_string())), st));
            }
        }
        // Caught up: everything up to `scanned` was looked at. Wait for a commit.
        st.after = st.after.max(scanned);
        let mut shutdown = st.app.shutdown.clone();
        tokio::select! {
            _ = st.app.store.wait_for_head(st.after, LIVE_WAIT) => {}
            _ = shutdown.changed() => {}
        }
        Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `id: <position>` and the event JSON as `data:` lines, for each event.
fn frames(events: &[RecordedEvent]) -> Bytes {
    let mut out = Vec::with_capacity(events.len() * 600);
    let mut json = Vec::with_capacity(1024);
    for e in events {
        json.clear();
        if let Err(err) = serde_json::to_writer(&mut json, e) {
            out.extend_from_slice(&error_frame(&err.to_string()));
            continue;
        }
        out.extend_from_slice(format!("id: {}\ndata: ", e.position).as_bytes());
        // A line break in the (verbatim) JSON starts a new data line: CRLF, CR or LF.
        let mut bytes = json.iter().peekable();
        while let Some(&b) = bytes.next() {
            match b {
                b'\r' | b'\n' => {
                    if b == b'\r' && bytes.peek() == Some(&&b'\n') {
                        bytes.next();
                    }
                    out.extend_from_slice(b"\ndata: ");
                }
                _ => out.push(b),
            }
        }
        out.extend_from_slice(b"\n\n");
    }
    held(out)
}

/// A page's bytes, counted as read-ahead ([`Held`]) until the connection has written
/// them and lets them go.
fn held(bytes: Vec<u8>) -> Bytes {
    /// The bytes, and their count as held (released when the bytes are dropped).
    struct Owned {
        bytes: Vec<u8>,
        _held: Held,
    }
    impl AsRef<[u8]> for Owned {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }
    let _held = Held::new(bytes.len());
    Bytes::from_owner(Owned { bytes, _held })
}

fn error_frame(message: &str) -> Bytes {
    let one_line: String = message
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    Bytes::from(format!("event: error\ndata: {one_line}\n\n"))
}

/// Counts open subscriptions in the `annal_sse_clients` gauge while alive.
struct SseGauge;

impl SseGauge {
    fn new() -> Self {
        metrics::gauge!("annal_sse_clients").increment(1.0);
        SseGauge
    }
}

impl Drop for SseGauge {
    fn drop(&mut self) {
        metrics::gauge!("annal_sse_clients").decrement(1.0);
    }
}
