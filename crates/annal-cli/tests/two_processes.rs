//! Two processes appending to the same store file at once stay correct: contiguous
//! positions and versions, one chain, every acknowledged event stored.

use annal::{AppendResult, Direction, Filter, StoreUrl};
use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};

const LINES: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_appending_to_one_file_keep_one_contiguous_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("shared.db").display());
    let children: Vec<_> = (0..2)
        .map(|p| {
            let mut child = Command::new(env!("CARGO_BIN_EXE_annal"))
                .args(["append", "--store", &url])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start annal append");
            let mut stdin = child.stdin.take().expect("stdin");
            std::thread::spawn(move || {
                for i in 0..LINES {
                    // Half the appends go to aggregates both processes share.
                    let agg = if i % 2 == 0 { format!("shared-{}", i % 6) } else { format!("own-{p}-{}", i % 5) };
                    writeln!(
                        stdin,
                        r#"{{"aggregate_type":"Counter","aggregate_id":"{agg}","events":[{{"event_type":"Counted","data":{{"p":{p},"i":{i}}}}},{{"event_type":"Counted","data":{{"p":{p},"i":{i},"second":true}}}}]}}"#
                    )
                    .expect("write line");
                }
            });
            child
        })
        .collect();
    let mut acked = HashSet::new();
    for child in children {
        let out = child.wait_with_output().expect("child finishes");
        assert!(
            out.status.success(),
            "append failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        for line in text.lines() {
            let r: AppendResult = serde_json::from_str(line).expect("result");
            acked.extend(r.events.iter().map(|e| (e.position, e.event_id)));
        }
    }
    assert_eq!(acked.len(), 2 * LINES * 2);
    let store = annal::open(&url.parse::<StoreUrl>().expect("url")).expect("open");
    let log = store
        .read_all(0, 10_000, &Filter::default())
        .await
        .expect("read");
    assert_eq!(log.len(), acked.len());
    let stored: HashSet<_> = log.iter().map(|e| (e.position, e.event_id)).collect();
    assert_eq!(
        stored, acked,
        "every acknowledged event, at the position acknowledged"
    );
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1);
    }
    for agg in (0..6).map(|k| format!("shared-{k}")) {
        let events = store
            .read_aggregate(&agg, Direction::Forward, None, 10_000)
            .await
            .expect("read");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.aggregate_version,
                i as u64 + 1,
                "{agg}: contiguous versions"
            );
        }
        // Each append's two events are adjacent: batches never interleave.
        for pair in events.chunks(2) {
            assert_eq!(pair[0].position + 1, pair[1].position);
        }
    }
    let report = store.verify(None, None).await.expect("verify");
    assert!(report.ok, "{report:?}");
}
