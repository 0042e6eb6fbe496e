//! HTTP/2 abuse against `annal serve` (docs/security.md): a client that opens and
//! cancels streams as fast as it can ("rapid reset"), and one that opens thousands of
//! streams and leaves them open. The abusive connection is ended or held to the
//! server's stream limit, and everyone else is still served meanwhile.

mod common;

use std::time::{Duration, Instant};

/// `/health/live` on a fresh HTTP/1.1 connection answers 200 within a second.
async fn others_are_served(port: u16) {
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(1), async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        tcp.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut text = String::new();
        let _ = tcp.read_to_string(&mut text).await;
        text
    })
    .await
    .expect("an answer within a second");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "after {:?}: {answer}",
        started.elapsed()
    );
}

fn request(port: u16) -> http::Request<()> {
    http::Request::get(format!("http://127.0.0.1:{port}/v1/head"))
        .body(())
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_ends_its_own_connection_and_no_other() {
    let dir = tempfile::tempdir().expect("dir");
    let served = common::serve(dir.path(), &[]);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", served.port))
        .await
        .expect("connect");
    let (mut h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let mut opened = 0u32;
    for _ in 0..20_000 {
        let Ok(ready) = tokio::time::timeout(Duration::from_secs(2), h2.ready()).await else {
            break;
        };
        let Ok(mut ready) = ready else { break };
        let Ok((response, _send)) = ready.send_request(request(served.port), true) else {
            break;
        };
        opened += 1;
        // Dropping the response cancels the stream: RST_STREAM at once.
        drop(response);
        h2 = ready;
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(
        ended.is_ok(),
        "the server ended the flooding connection (after {opened} streams)"
    );
    others_are_served(served.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_open_streams_are_held_to_the_servers_limit() {
    let dir = tempfile::tempdir().expect("dir");
    let served = common::serve(dir.path(), &[]);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", served.port))
        .await
        .expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    // The server's SETTINGS (its stream limit among them) come before its answer to a
    // first request. Until they land a client may open any number of streams: on a
    // busy machine (`cargo test` runs this beside the other floods) over a thousand.
    let mut h2 = h2.ready().await.expect("ready");
    let (first, _) = h2
        .send_request(request(served.port), true)
        .expect("a first request");
    first.await.expect("its answer");
    let mut held = Vec::new();
    for _ in 0..5_000 {
        // Each stream subscribes and is never read: it stays open.
        let subscribe = http::Request::get(format!(
            "http://127.0.0.1:{}/v1/subscribe?after_position=0",
            served.port
        ))
        .body(())
        .expect("request");
        let Ok(Ok(mut ready)) = tokio::time::timeout(Duration::from_millis(500), h2.ready()).await
        else {
            break;
        };
        let Ok((response, send)) = ready.send_request(subscribe, true) else {
            break;
        };
        held.push((response, send));
        h2 = ready;
    }
    // What counts is how many the server holds open at once: streams it answered whose
    // body has not ended. The client queues the rest itself (its `ready` does not always
    // wait), so how many requests it sent in all says nothing about the server: on a
    // loaded machine it queued over a thousand.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut answered_open, mut waiting) = (0, 0);
    for (response, _) in &mut held {
        match futures_util::FutureExt::now_or_never(response) {
            None => waiting += 1,
            Some(Ok(r)) if !r.body().is_end_stream() => answered_open += 1,
            Some(_) => {}
        }
    }
    eprintln!(
        "{} requests sent: {answered_open} answered and open, {waiting} waiting",
        held.len()
    );
    // The server's limit (docs/http.md: 256 streams at once); a server without one
    // answers every request the client sends.
    assert!(
        (1..=256).contains(&answered_open),
        "the server holds {answered_open} streams open at once ({} sent, {waiting} waiting)",
        held.len()
    );
    others_are_served(served.port).await;
    drop(held);
    driver.abort();
}

/// One HTTP/2 frame: length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// An HPACK literal header field without indexing, of a new name.
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00, u8::try_from(name.len()).expect("short")];
    out.extend(name.as_bytes());
    out.push(u8::try_from(value.len()).expect("short"));
    out.extend(value.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_and_others_are_served() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const HEADERS: u8 = 0x1;
    const CONTINUATION: u8 = 0x9;
    const SETTINGS: u8 = 0x4;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    let dir = tempfile::tempdir().expect("dir");
    let served = common::serve(dir.path(), &[]);
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", served.port))
        .await
        .expect("connect");
    let mut start = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    start.extend(frame(SETTINGS, 0, 0, &[]));
    // A request's headers that never end: HEADERS without END_HEADERS, then
    // CONTINUATION frames of 100-byte fields, up to 10 MB.
    let mut block = vec![0x82, 0x86, 0x84]; // :method GET, :scheme http, :path /
    block.extend(literal(":authority", "x"));
    start.extend(frame(HEADERS, END_STREAM, 1, &block));
    tcp.write_all(&start).await.expect("preface");
    let field = literal("x-flood", &"a".repeat(90));
    let mut sent = 0usize;
    for _ in 0..100_000 {
        let wrote = tokio::time::timeout(
            Duration::from_secs(5),
            tcp.write_all(&frame(CONTINUATION, 0, 1, &field)),
        )
        .await;
        if !matches!(wrote, Ok(Ok(()))) {
            break;
        }
        sent += field.len();
    }
    // The server ends the connection with GOAWAY within seconds.
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
    assert!(
        closed.is_ok(),
        "the server closed the flooding connection (after {sent} bytes of headers were sent)"
    );
    assert!(
        frame_types(&got).contains(&GOAWAY),
        "a GOAWAY ended it: {:?}",
        frame_types(&got)
    );
    others_are_served(served.port).await;

    // The same frames, ended after one CONTINUATION, are a request like any other: the
    // flood, not the encoding, is what was refused.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", served.port))
        .await
        .expect("connect");
    let mut request = start;
    request.extend(frame(CONTINUATION, END_HEADERS, 1, &field));
    tcp.write_all(&request).await.expect("request");
    // The server's SETTINGS may come in a read of their own: read until the answer's
    // HEADERS arrive (or the server closes).
    let mut answer = Vec::new();
    let got_headers = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if frame_types(&answer).contains(&HEADERS) {
                return true;
            }
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        matches!(got_headers, Ok(true)),
        "answered: {:?}",
        frame_types(&answer)
    );
}

/// The types of the whole frames at the start of `bytes`.
fn frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 9) {
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        types.push(head[3]);
        at += 9 + len;
    }
    types
}
