//! `annal token new`: the secret is printed once and only its salted hash is written;
//! `annal serve` then accepts the secret; a taken name leaves the file as it was.

mod common;

use common::{annal, serve};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The status line of `GET path` with a bearer token.
fn status(port: u16, path: &str, bearer: &str) -> String {
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
    answer.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn a_new_token_is_written_as_a_hash_and_its_secret_opens_the_server() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("tokens.json");
    let file_arg = file.display().to_string();
    let new = |name: &str, role: &str| {
        annal(
            &[
                "token",
                "new",
                name,
                "--role",
                role,
                "--types",
                "Invoice,Order",
                "--tokens-file",
                &file_arg,
            ],
            "",
        )
    };
    let out = new("billing", "write");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(secret.len(), 43, "{secret}");
    let written = std::fs::read_to_string(&file).expect("the tokens file");
    assert!(!written.contains(&secret), "{written}");
    assert!(written.contains("\"secret_hash\": \"sha256:"), "{written}");
    assert!(written.contains("\"Invoice\""), "{written}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    let again = new("billing", "read");
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("same name"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("file"),
        written,
        "unchanged"
    );

    let served = serve(&dir.path().join("data"), &["--tokens-file", &file_arg]);
    assert!(status(served.port, "/v1/head", &secret).contains(" 200 "));
    assert!(status(served.port, "/v1/head", "not-the-secret-at-all").contains(" 401 "));
}
