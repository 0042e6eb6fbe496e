//! Crash safety: a child `annal append` process appends in a loop and reports each
//! acknowledged append; once it acknowledged one, it is killed with SIGKILL at a random
//! moment, and the store is reopened and checked. On SQLite and on PostgreSQL
//! (`ANNAL_TEST_POSTGRES_URL`). Rounds: `ANNAL_CRASH_ROUNDS` (default 20).

mod common;

use annal::{AppendResult, StoreUrl};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

fn rounds() -> u32 {
    std::env::var("ANNAL_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill_and_batches_are_never_partial() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("crash.db");
    sigkill_rounds(&format!("sqlite:{}", path.display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_on_postgres_survive_sigkill_and_batches_are_never_partial() {
    let Some(base) = common::pg::server_url() else {
        return;
    };
    let schema = common::pg::TestSchema::new(&base);
    sigkill_rounds(&schema.url).await;
}

/// Rounds of: an `annal append` child on `url`, killed at a random moment; then the
/// store is reopened and checked against everything acknowledged so far.
async fn sigkill_rounds(url: &str) {
    let mut acked: Vec<AppendResult> = Vec::new();
    for round in 0..rounds() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_annal"))
            .args(["append", "--store", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start annal append");
        let mut stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let writer = std::thread::spawn(move || {
            for seq in 0u64.. {
                let line = common::log_check::batch_line(
                    &format!("clock-{}", seq % 7),
                    &format!("{round}-{seq}"),
                    1 + seq % 5,
                );
                if writeln!(stdin, "{line}").is_err() {
                    return;
                }
            }
        });
        let (first_ack, acking) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                got.push(serde_json::from_str::<AppendResult>(&line).expect("an append result"));
                if got.len() == 1 {
                    let _ = first_ack.send(());
                }
            }
            got
        });
        // Killed at a random moment once it is appending (a loaded machine can take
        // longer than the random delay just to start it and connect).
        let _ = acking.recv_timeout(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..230)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        acked.extend(reader.join().expect("reader"));
        writer.join().expect("writer");

        let store = annal::connect(&url.parse::<StoreUrl>().expect("url"))
            .await
            .expect("reopen after kill");
        common::log_check::check(&*store, &acked, &format!("round {round}")).await;
    }
    assert!(
        acked.len() > 20,
        "the child acknowledged appends ({})",
        acked.len()
    );
}
