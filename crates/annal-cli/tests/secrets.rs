//! No secret reaches a log or a help text: the store URL's password and the API
//! tokens' secrets never appear in `annal serve`'s output, even at debug level.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN_SECRET: &str = "tok3n-s3cret-0123456789-abcdef";
const PASSWORD: &str = "pg-passw0rd-never-shown";

/// One HTTP/1.1 request to the server on `port`; the answer's text.
fn request(port: u16, path: &str, bearer: &str) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    answer
}

/// Runs `annal serve` with `store_args` and `ANNAL_LOG=debug`, sends requests with the
/// right and a wrong token, stops it, and returns everything it wrote.
fn served_output(store_args: &[&str]) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let tokens =
        format!(r#"{{"tokens":[{{"name":"auditor","token":"{TOKEN_SECRET}","role":"read"}}]}}"#);
    let child = Command::new(env!("CARGO_BIN_EXE_annal"))
        .arg("serve")
        .args(store_args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("ANNAL_LOG", "debug")
        .env("ANNAL_TOKENS", &tokens)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start annal serve");
    let ready = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(ready, "annal serve did not start listening");
    assert!(request(port, "/v1/head", TOKEN_SECRET).starts_with("HTTP/1.1 200"));
    assert!(request(port, "/v1/head", "wrong-secret-0123456789").starts_with("HTTP/1.1 401"));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().expect("annal serve exits");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn serve_help_does_not_echo_a_store_url_from_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(["serve", "--help"])
        .env(
            "ANNAL_STORE",
            format!("postgres://annal:{PASSWORD}@127.0.0.1/db"),
        )
        .env("ANNAL_TOKEN", TOKEN_SECRET)
        .output()
        .expect("annal serve --help");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("--store"), "{text}");
    assert!(!text.contains(PASSWORD), "the password is shown:\n{text}");
    assert!(!text.contains(TOKEN_SECRET), "the token is shown:\n{text}");
}

#[test]
fn token_secrets_never_reach_the_debug_log() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_string_lossy().into_owned();
    let log = served_output(&["--data", &data]);
    assert!(log.contains("annal: serving"), "{log}");
    assert!(
        !log.contains(TOKEN_SECRET),
        "a token secret is logged:\n{log}"
    );
    assert!(
        !log.contains("wrong-secret-0123456789"),
        "a presented secret is logged:\n{log}"
    );
}

#[test]
fn the_postgresql_password_never_reaches_the_log() {
    let Ok(base) = std::env::var("ANNAL_TEST_POSTGRES_URL") else {
        eprintln!(
            "notice: ANNAL_TEST_POSTGRES_URL is not set; skipping the PostgreSQL secret test"
        );
        return;
    };
    // The test server trusts local connections, so any password is accepted.
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let (user, host) = rest.split_once('@').expect("a user in the URL");
    let user = user.split(':').next().unwrap_or(user);
    let schema = format!("annal_secrets_{}", std::process::id());
    let sep = if host.contains('?') { '&' } else { '?' };
    let url = format!("{scheme}://{user}:{PASSWORD}@{host}{sep}schema={schema}");
    let log = served_output(&["--store", &url]);
    assert!(log.contains("annal: serving"), "{log}");
    assert!(
        log.contains(":***@"),
        "the URL is shown with its password hidden:\n{log}"
    );
    assert!(!log.contains(PASSWORD), "the password is logged:\n{log}");
    let dropped = Command::new("psql")
        .arg(&base)
        .args(["-c", &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")])
        .output();
    assert!(
        dropped.is_ok_and(|o| o.status.success()),
        "could not drop {schema}"
    );
}
