//! Gap-free global order across processes on PostgreSQL: 4 `annal append` processes,
//! each with 4 writers' appends in flight at once (16 writers), append to one store while
//! a reader in this process tails it by position. The reader must see every position
//! exactly once, in order, and end with exactly the acknowledged events; the chain must
//! verify. Skipped (with a notice) when `ANNAL_TEST_POSTGRES_URL` is not set.

mod common;

use annal::{AppendResult, Filter, StoreUrl, Uuid};
use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const PROCESSES: usize = 4;
const WRITERS: usize = 4;
const APPENDS_PER_WRITER: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_of_four_writers_keep_positions_gap_free_for_a_tailing_reader() {
    let Some(base) = common::pg::server_url() else {
        return;
    };
    let schema = common::pg::TestSchema::new(&base);
    let url = schema.url.clone();

    let store = annal::connect(&url.parse::<StoreUrl>().expect("url"))
        .await
        .unwrap_or_else(|e| panic!("cannot open the store on the test server: {e}"));

    // The reader tails by position from the start, while the processes write.
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen: Vec<Uuid> = Vec::new();
            let mut after = 0u64;
            loop {
                let finished = *done_rx.borrow_and_update();
                let page = store
                    .read_all(after, 200, &Filter::default())
                    .await
                    .expect("tail");
                for e in &page {
                    assert_eq!(e.position, after + 1, "no gap, no duplicate, no reordering");
                    after = e.position;
                    seen.push(e.event_id);
                }
                if page.is_empty() {
                    if finished && store.head(&[]).await.expect("head") == after {
                        return seen;
                    }
                    store
                        .wait_for_head(after, Duration::from_millis(200))
                        .await
                        .expect("wait");
                }
            }
        })
    };

    let children: Vec<_> = (0..PROCESSES)
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
                // The process's 4 writers' appends, interleaved; annal append keeps them
                // in flight together, so they race inside the process as well as across.
                for i in 0..APPENDS_PER_WRITER {
                    for w in 0..WRITERS {
                        let n = 1 + (i + w) % 3;
                        let agg = if i % 3 == 0 {
                            format!("shared-{}", (i + w) % 5)
                        } else {
                            format!("p{p}-w{w}-{}", i % 4)
                        };
                        let events: Vec<String> = (0..n)
                            .map(|k| {
                                format!(
                                    r#"{{"event_type":"Tick","data":{{"p":{p},"w":{w},"i":{i},"k":{k}}}}}"#
                                )
                            })
                            .collect();
                        writeln!(
                            stdin,
                            r#"{{"aggregate_type":"Clock","aggregate_id":"{agg}","events":[{}]}}"#,
                            events.join(",")
                        )
                        .expect("write line");
                    }
                }
            });
            child
        })
        .collect();

    let mut acked: HashSet<(u64, Uuid)> = HashSet::new();
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("join")
            .expect("child finishes");
        assert!(
            out.status.success(),
            "annal append failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let mut lines = 0;
        for line in text.lines() {
            let r: AppendResult = serde_json::from_str(line).expect("an append result");
            acked.extend(r.events.iter().map(|e| (e.position, e.event_id)));
            lines += 1;
        }
        assert_eq!(
            lines,
            WRITERS * APPENDS_PER_WRITER,
            "every append acknowledged"
        );
    }
    done_tx.send(true).expect("reader alive");
    let seen = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the reader finishes")
        .expect("reader task");

    let head = store.head(&[]).await.expect("head");
    assert_eq!(
        head,
        acked.len() as u64,
        "the log holds the acknowledged events"
    );
    assert_eq!(
        seen.len() as u64,
        head,
        "the reader saw every position once"
    );
    let seen_pairs: HashSet<(u64, Uuid)> = seen
        .iter()
        .enumerate()
        .map(|(i, id)| (i as u64 + 1, *id))
        .collect();
    assert_eq!(
        seen_pairs, acked,
        "exactly the acknowledged events, each at its acknowledged position"
    );
    let report = store.verify(None, None).await.expect("verify");
    assert!(report.ok && report.checked == head, "{report:?}");
}
