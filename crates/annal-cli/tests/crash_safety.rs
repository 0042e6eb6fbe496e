//! Crash safety: a child `annal append` process appends in a loop and reports each
//! acknowledged append; it is killed with SIGKILL at a random moment, the store is
//! reopened and checked. Rounds: `ANNAL_CRASH_ROUNDS` (default 20).

use annal::{AppendResult, Filter, Store, StoreUrl, Uuid};
use std::collections::HashMap;
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
    let url = format!("sqlite:{}", path.display());
    let mut acked: Vec<AppendResult> = Vec::new();
    for round in 0..rounds() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_annal"))
            .args(["append", "--store", &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start annal append");
        let mut stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let writer = std::thread::spawn(move || {
            for seq in 0u64.. {
                let n = 1 + seq % 5;
                let events: Vec<String> = (0..n)
                    .map(|k| {
                        format!(
                            r#"{{"event_id":"{}","event_type":"Tick","data":{{"batch":"{round}-{seq}","n":{n},"k":{k}}}}}"#,
                            Uuid::now_v7()
                        )
                    })
                    .collect();
                let line = format!(
                    r#"{{"aggregate_type":"Clock","aggregate_id":"clock-{}","expected_version":"any","events":[{}]}}"#,
                    seq % 7,
                    events.join(",")
                );
                if writeln!(stdin, "{line}").is_err() {
                    return;
                }
            }
        });
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                got.push(serde_json::from_str::<AppendResult>(&line).expect("an append result"));
            }
            got
        });
        std::thread::sleep(Duration::from_millis(fastrand::u64(20..250)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        acked.extend(reader.join().expect("reader"));
        writer.join().expect("writer");

        let store = annal::open(&url.parse::<StoreUrl>().expect("url")).expect("reopen after kill");
        check(&*store, &acked, round).await;
    }
    assert!(
        acked.len() > 20,
        "the child acknowledged appends ({})",
        acked.len()
    );
}

async fn check(store: &dyn Store, acked: &[AppendResult], round: u32) {
    let head = store.head(&[]).await.expect("head");
    let mut log = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .read_all(after, 5000, &Filter::default())
            .await
            .expect("read");
        let Some(last) = page.last() else { break };
        after = last.position;
        log.extend(page);
    }
    assert_eq!(
        log.len() as u64,
        head,
        "round {round}: positions are contiguous"
    );
    for (i, e) in log.iter().enumerate() {
        assert_eq!(
            e.position,
            i as u64 + 1,
            "round {round}: no gap in positions"
        );
    }
    let mut versions: HashMap<&str, u64> = HashMap::new();
    let mut batches: HashMap<String, (u64, u64)> = HashMap::new();
    for e in &log {
        let v = versions.entry(&e.aggregate_id).or_insert(0);
        *v += 1;
        assert_eq!(
            e.aggregate_version, *v,
            "round {round}: versions are contiguous"
        );
        let data: serde_json::Value = e.data.to_value().expect("json");
        let b = batches
            .entry(data["batch"].as_str().expect("batch").to_owned())
            .or_insert((0, 0));
        b.0 += 1;
        b.1 = data["n"].as_u64().expect("n");
    }
    for (batch, (have, want)) in &batches {
        assert_eq!(have, want, "round {round}: batch {batch} is whole");
    }
    for r in acked {
        for e in &r.events {
            let stored = &log[usize::try_from(e.position - 1).expect("a position")];
            assert_eq!(
                stored, e,
                "round {round}: acknowledged event is stored as acknowledged"
            );
        }
    }
    let report = store.verify(None, None).await.expect("verify");
    assert!(report.ok, "round {round}: chain verifies: {report:?}");
}
