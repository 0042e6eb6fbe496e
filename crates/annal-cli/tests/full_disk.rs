//! A full disk, as an operator meets it: `annal serve` on a 512 KiB filesystem (a tmpfs
//! mounted in a private user and mount namespace, gone with the process). Appends fail
//! with a clear 503 and write nothing, `/health/ready` turns 503 and says why, and the
//! failure is logged at error level (once per window, not once per request).
#![cfg(target_os = "linux")]

mod common;

use common::annal;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `GET path` on the server at `port`: the status code and the whole answer.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// An append of 50 events of about 4 KiB each to `family_{n}`.
fn big_append(n: u32) -> String {
    let text = "x".repeat(4000);
    let events: Vec<String> = (0..50)
        .map(|_| format!(r#"{{"event_type":"Noted","data":{{"text":"{text}"}}}}"#))
        .collect();
    format!(
        r#"{{"aggregate_type":"Family","aggregate_id":"family_{n}","events":[{}]}}"#,
        events.join(",")
    )
}

#[test]
fn a_full_disk_fails_appends_clearly_turns_readiness_503_and_is_logged() {
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new("unshare")
        .args(["-r", "-m", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=512k tmpfs "$0" && exec "$1" serve --data "$0" --listen "$2""#)
        .arg(dir.path())
        .arg(env!("CARGO_BIN_EXE_annal"))
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs (util-linux, user namespaces)");
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "annal serve did not start on the small filesystem");
    assert_eq!(
        get(port, "/health/ready").0,
        200,
        "ready before the disk fills"
    );

    let url = format!("http://127.0.0.1:{port}");
    let mut failed = None;
    for n in 0..40 {
        let out = annal(&["append", "--server", &url], &big_append(n));
        if !out.status.success() {
            failed = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            break;
        }
    }
    let failed = failed.expect("512 KiB fills within 40 appends of 200 KB");
    assert!(
        failed.contains("503") || failed.contains("unavailable") || failed.contains("storage"),
        "{failed}"
    );
    // Repeated failures: held back in the log, still answered.
    for n in 100..103 {
        assert!(
            !annal(&["append", "--server", &url], &big_append(n))
                .status
                .success()
        );
    }
    let (status, answer) = get(port, "/health/ready");
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("cannot write"), "{answer}");
    assert_eq!(
        get(port, "/health/live").0,
        200,
        "the process itself is fine"
    );
    let read = annal(&["read", "--server", &url, "--limit", "1"], "");
    assert!(
        read.status.success(),
        "reads go on: {}",
        String::from_utf8_lossy(&read.stderr)
    );

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut log = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log);
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("the store failed"))
        .collect();
    assert!(
        !errors.is_empty(),
        "the failure is logged at error level:\n{log}"
    );
    assert!(
        errors.len() <= 2,
        "repeats are held back, not logged each time:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "no colour codes in a piped log");
}
