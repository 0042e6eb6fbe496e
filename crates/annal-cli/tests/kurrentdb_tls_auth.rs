//! TLS with Basic auth, driven by the official Rust KurrentDB client against
//! `annal serve --tls-cert … --tokens-file …`. The client asks ServerFeatures without
//! credentials when it connects: annal answers that (and Gossip) to anyone, and wants
//! Basic credentials (a token's name and secret) for the rest.

mod common;

use common::kurrent::{any, event, expecting, read_stream, stream, types};
use common::{Served, serve};
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
