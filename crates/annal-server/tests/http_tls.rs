//! HTTPS end to end: the same API over TLS with HTTP/2, no plain HTTP on the TLS port,
//! and a clean stop.

use annal_server::Config;
use annal_sqlite::SqliteStore;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// A TLS server over a fresh embedded store, with a self-signed certificate (made by
/// `openssl`) that `curl` trusts through `--cacert`.
struct TlsServer {
    port: u16,
    cert: PathBuf,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start_tls() -> TlsServer {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl makes a test certificate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let tls = annal_server::server_config(&annal_server::TlsFiles {
        cert: cert.clone(),
        key,
    })
    .expect("tls config");
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).expect("open"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(annal_server::serve_tls(
        listener,
        store,
        Config::default(),
        tls,
        async move {
            let _ = rx.await;
        },
    ));
    TlsServer {
        port,
        cert,
        stop,
        done,
        _dir: dir,
    }
}

/// Runs `curl -s --cacert CERT ARGS…`: its standard output.
async fn curl(cert: &std::path::Path, args: Vec<String>) -> String {
    let cert = cert.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(&cert)
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_over_https_is_served_with_http2() {
    let s = start_tls().await;
    let url = format!("https://127.0.0.1:{}", s.port);
    let body =
        r#"{"aggregate_type":"Family","events":[{"event_type":"FamilyEnrolled","data":{"x": 1}}]}"#;
    let created = curl(
        &s.cert,
        vec![
            "-w".into(),
            "\n%{http_code} %{http_version}".into(),
            "--http2".into(),
            "-H".into(),
            "content-type: application/json".into(),
            "-d".into(),
            body.into(),
            format!("{url}/v1/streams/f-1"),
        ],
    )
    .await;
    assert!(
        created.ends_with("201 2"),
        "an append over HTTP/2 with TLS: {created}"
    );
    assert!(created.contains(r#""data":{"x": 1}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_not_served_on_the_tls_port() {
    let s = start_tls().await;
    let plain = curl(
        &s.cert,
        vec![
            "-w".into(),
            "%{http_code}".into(),
            "-o".into(),
            "/dev/null".into(),
            format!("http://127.0.0.1:{}/health/live", s.port),
        ],
    )
    .await;
    assert_ne!(plain, "200", "plain HTTP is not served on the TLS port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_server_stops_cleanly_after_serving() {
    let s = start_tls().await;
    let live = curl(
        &s.cert,
        vec![
            "-w".into(),
            "%{http_code}".into(),
            "-o".into(),
            "/dev/null".into(),
            format!("https://127.0.0.1:{}/health/live", s.port),
        ],
    )
    .await;
    assert_eq!(live, "200", "served before the stop");
    let _ = s.stop.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(10), s.done)
        .await
        .expect("stops")
        .expect("task");
    assert!(stopped.is_ok());
}
