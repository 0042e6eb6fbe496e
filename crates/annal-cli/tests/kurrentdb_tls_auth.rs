//! TLS with Basic auth, driven by the official Rust KurrentDB client against
//! `annal serve --tls-cert … --tokens-file …`. The client asks ServerFeatures without
//! credentials when it connects: annal answers that (and Gossip) to anyone, and wants
//! Basic credentials (a token's name and secret) for the rest.
//!
//! Also how the client finds the node: Gossip (`kurrentdb+discover://`) reports the host
//! the client connected with, or `--advertise`, and `--listen localhost:…` listens on
//! both loopback addresses.

mod common;

use common::kurrent::{any, event, expecting, read_stream, stream, types};
use common::{Served, serve, serve_listening};
use kurrentdb::{Client, ClientSettings, Error, ReadStreamOptions, StreamState};
use serde_json::json;

const SECRET: &str = "s3cret-s3cret-s3cret";

/// A TLS server with two tokens, `admin` (secret [`SECRET`]) and `reader` (a read
/// token), and a stream holding one event `A` appended by `admin`.
struct Guarded {
    served: Served,
    s: String,
    _dir: tempfile::TempDir,
}

impl Guarded {
    /// A client authenticating with `userinfo` (`name:secret@`, or empty for none).
    fn client(&self, userinfo: &str) -> Client {
        let settings: ClientSettings = format!(
            "kurrentdb://{userinfo}localhost:{}?tls=true&tlsVerifyCert=false",
            self.served.port
        )
        .parse()
        .expect("connection string");
        Client::new(settings).expect("client")
    }
}

async fn guarded() -> Guarded {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = common::test_certificate(dir.path());
    let tokens = dir.path().join("tokens.json");
    std::fs::write(
        &tokens,
        json!({"tokens": [
            {"name": "admin", "token": SECRET, "role": "admin"},
            {"name": "reader", "token": "reader-reader-reader", "role": "read"},
        ]})
        .to_string(),
    )
    .expect("tokens file");
    let (cert, key, tokens) = (
        cert.display().to_string(),
        key.display().to_string(),
        tokens.display().to_string(),
    );
    let served = serve(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tokens-file",
            &tokens,
        ],
    );
    let g = Guarded {
        served,
        s: stream("order"),
        _dir: dir,
    };
    let admin = g.client(&format!("admin:{SECRET}@"));
    let r = admin
        .append_to_stream(
            g.s.as_str(),
            &expecting(StreamState::NoStream),
            event("A", 0),
        )
        .await
        .expect("append over TLS with Basic auth");
    assert_eq!(r.next_expected_version, 0);
    g
}

#[tokio::test]
async fn over_tls_an_admin_token_in_basic_auth_appends_and_reads() {
    let g = guarded().await;
    let admin = g.client(&format!("admin:{SECRET}@"));
    let got = read_stream(&admin, &g.s, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(types(&got), ["A"]);
}

#[tokio::test]
async fn a_read_token_in_basic_auth_reads_but_cannot_append() {
    let g = guarded().await;
    let reader = g.client("reader:reader-reader-reader@");
    assert_eq!(
        read_stream(&reader, &g.s, &ReadStreamOptions::default())
            .await
            .expect("a read token reads")
            .len(),
        1
    );
    let e = reader
        .append_to_stream(g.s.as_str(), &any(), event("B", 1))
        .await
        .expect_err("a read token cannot append");
    assert!(matches!(e, Error::AccessDenied), "{e:?}");
}

#[tokio::test]
async fn wrong_or_missing_basic_credentials_are_access_denied() {
    let g = guarded().await;
    for wrong in [
        "admin:wrong-wrong-wrong-wrong@",
        "nobody:s3cret-s3cret-s3cret@",
        "",
    ] {
        let c = g.client(wrong);
        let e = c
            .append_to_stream(g.s.as_str(), &any(), event("B", 1))
            .await
            .expect_err("refused");
        assert!(matches!(e, Error::AccessDenied), "{wrong:?}: {e:?}");
        let e = read_stream(&c, &g.s, &ReadStreamOptions::default())
            .await
            .expect_err("refused");
        assert!(matches!(e, Error::AccessDenied), "{wrong:?}: {e:?}");
    }
}

/// The node Gossip sent a `kurrentdb+discover://` client to, which connected there.
async fn discovered(host: &str, port: u16) -> kurrentdb::Endpoint {
    let settings: ClientSettings = format!("kurrentdb+discover://{host}:{port}?tls=false")
        .parse()
        .expect("connection string");
    kurrentdb::operations::Client::new(settings)
        .expect("client")
        .current_selected_node()
        .await
        .expect("a node discovered through Gossip")
}

#[tokio::test]
async fn gossip_tells_a_client_that_connected_with_localhost_localhost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let served = serve_listening("localhost", &["--data", data.to_str().expect("utf-8")]);
    let node = discovered("localhost", served.port).await;
    assert_eq!(
        (node.host.as_str(), node.port),
        ("localhost", u32::from(served.port))
    );
    // And one that connected with 127.0.0.1 is told 127.0.0.1.
    let node = discovered("127.0.0.1", served.port).await;
    assert_eq!(node.host, "127.0.0.1");
    // The discovered node takes appends.
    let settings: ClientSettings =
        format!("kurrentdb+discover://localhost:{}?tls=false", served.port)
            .parse()
            .expect("connection string");
    let client = Client::new(settings).expect("client");
    let s = stream("order");
    client
        .append_to_stream(s.as_str(), &expecting(StreamState::NoStream), event("A", 0))
        .await
        .expect("append through the discovered node");
}

#[tokio::test]
async fn gossip_reports_the_advertised_host_whatever_the_client_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = serve(&dir.path().join("data"), &["--advertise", "127.0.0.1"]);
    let node = discovered("localhost", served.port).await;
    assert_eq!(
        (node.host.as_str(), node.port),
        ("127.0.0.1", u32::from(served.port))
    );
}

#[test]
fn a_server_listening_on_localhost_answers_http_on_ipv6_loopback_too() {
    use std::io::{Read as _, Write as _};
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; nothing to check");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let served = serve_listening("localhost", &["--data", data.to_str().expect("utf-8")]);
    let mut tcp = std::net::TcpStream::connect(("::1", served.port)).expect("connect to [::1]");
    write!(
        tcp,
        "GET /health/ready HTTP/1.1\r\nHost: [::1]:{}\r\nConnection: close\r\n\r\n",
        served.port
    )
    .expect("request");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
