//! Reads from a standby (issue 17, item 6): `annal serve --store PRIMARY --read-store
//! STANDBY`, on a private PostgreSQL primary and its streaming hot standby
//! (`common::pg_cluster`, ports 5450-5499), with real processes:
//!
//! - reads of the log served while 8 writers append are gap-free prefixes: positions
//!   contiguous after the cursor, never past the primary's head, and never short of
//!   what was committed before the read began (the standby serves them: its counter
//!   moves);
//! - a read right after an append sees it, by stream and in the log, while the standby
//!   replays nothing (`pg_wal_replay_pause()`): the read waits, then the primary
//!   answers;
//! - an SSE subscription delivers every event once, in order, while the standby
//!   pauses and resumes under 8 writers;
//! - with the standby stopped, reads answer from the primary (logged once), and go
//!   back to the standby once it is up again.
//!
//! Run where the PostgreSQL tests run (`ANNAL_TEST_POSTGRES_URL` set): they need
//! PostgreSQL's programs, not that server.

mod common;

use common::pg_cluster::PrivateCluster;
use serde_json::Value;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PORTS: Range<u16> = 5450..5500;
const WRITERS: usize = 8;

/// A private primary and its asynchronous hot standby, or `None` (skipped) where the
/// PostgreSQL tests do not run.
async fn primary_and_standby() -> Option<(PrivateCluster, PrivateCluster)> {
    common::pg::server_url()?;
    Some(
        tokio::task::spawn_blocking(|| {
            let primary = PrivateCluster::start_in(PORTS);
            let standby = primary.standby_in(PORTS);
            (primary, standby)
        })
        .await
        .expect("the clusters start"),
    )
}

/// `annal serve` on the primary, reading from the standby, with `extra` flags; its log
/// in `log` when given.
fn serve(
    primary: &PrivateCluster,
    standby: &PrivateCluster,
    log: Option<&std::path::Path>,
    extra: &[&str],
) -> common::Served {
    let read = format!("{}?connect_timeout=1", standby.url());
    let store = primary.url();
    let mut args = vec!["--store", &store, "--read-store", &read];
    args.extend(extra);
    match log {
        Some(log) => common::serve_logging_to(&args, log),
        None => common::serve_with(&args),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

async fn get(c: &reqwest::Client, port: u16, path: &str) -> Value {
    let r = c
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status();
    let body = r.text().await.expect("body");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

async fn head(c: &reqwest::Client, port: u16) -> u64 {
    get(c, port, "/v1/head").await["position"]
        .as_u64()
        .expect("a head")
}

/// The node's read store, as `GET /v1/cluster` shows it.
async fn read_store(c: &reqwest::Client, port: u16) -> Value {
    let cluster = get(c, port, "/v1/cluster").await;
    let rs = cluster["read_store"].clone();
    assert!(rs.is_object(), "the node shows its read store: {cluster}");
    rs
}

fn count(rs: &Value, field: &str) -> u64 {
    rs[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {rs}"))
}

/// Waits (up to 20 s) until the read store is available and has caught up.
async fn until_caught_up(c: &reqwest::Client, port: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rs = read_store(c, port).await;
        if rs["available"] == true && rs["behind"] == 0 {
            return rs;
        }
        assert!(
            Instant::now() < deadline,
            "the read store never caught up: {rs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Appends one event to `stream`: its (version, position).
async fn append(c: &reqwest::Client, port: u16, stream: &str, n: u64) -> (u64, u64) {
    let body = format!(
        r#"{{"aggregate_type":"Clock","expected_version":"any","events":[{{"event_type":"Ticked","data":{{"n":{n}}}}}]}}"#
    );
    let r = c
        .post(format!("http://127.0.0.1:{port}/v1/streams/{stream}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("append");
    let status = r.status();
    let v: Value = r.json().await.expect("append answer");
    assert_eq!(status, 201, "append: {v}");
    (
        v["aggregate_version"].as_u64().expect("version"),
        v["last_position"].as_u64().expect("position"),
    )
}

/// Positions of a page of `GET /v1/events`.
fn positions(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["position"].as_u64().expect("position"))
        .collect()
}

/// The read-your-writes checks after an append of (version, position) to `stream`:
/// the stream read backwards ends at the version; the log after position - 1 starts
/// with it.
async fn sees_own_append(c: &reqwest::Client, port: u16, stream: &str, version: u64, at: u64) {
    let last = get(
        c,
        port,
        &format!("/v1/streams/{stream}?direction=backward&limit=1"),
    )
    .await;
    let got = last["events"][0]["aggregate_version"].as_u64();
    assert_eq!(
        got,
        Some(version),
        "a read of {stream} right after its append sees it: {last}"
    );
    let log = get(
        c,
        port,
        &format!("/v1/events?after_position={}&limit=1", at - 1),
    )
    .await;
    assert_eq!(
        positions(&log).first(),
        Some(&at),
        "a read of the log right after an append sees it: {log}"
    );
}

/// `WRITERS` writers, each appending to its own stream on a node of `ports` and, when
/// `check`, reading its append back on the next node, until stopped: how many appends
/// they made.
fn writers(ports: &[u16], stop: Arc<AtomicBool>, check: bool) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..WRITERS)
        .map(|i| {
            let stop = stop.clone();
            let port = ports[i % ports.len()];
            let reader = ports[(i + 1) % ports.len()];
            tokio::spawn(async move {
                let c = client();
                let stream = format!("clock-{i}");
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (version, at) = append(&c, port, &stream, n).await;
                    if check {
                        sees_own_append(&c, reader, &stream, version, at).await;
                    }
                }
                n
            })
        })
        .collect()
}

/// Two nodes on the primary, both reading from the standby: one waits for it (the
/// default 100 ms), the other never does (`--read-store-wait 0`), so the primary
/// answers the part of a read past the standby's head at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_from_the_standby_under_eight_writers_are_gap_free_and_see_every_write_before_them() {
    let Some((primary, standby)) = primary_and_standby().await else {
        return;
    };
    let waiting = serve(&primary, &standby, None, &["--node-name", "waiting"]);
    let at_once = serve(
        &primary,
        &standby,
        None,
        &["--node-name", "at-once", "--read-store-wait", "0"],
    );
    let ports = [waiting.port, at_once.port];
    let c = client();
    until_caught_up(&c, ports[0]).await;
    until_caught_up(&c, ports[1]).await;
    let mut before = Vec::new();
    for port in ports {
        before.push(read_store(&c, port).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Each writer reads its append back on the other node.
    let load = writers(&ports, stop.clone(), true);
    // Readers of the log from just behind the head: each page starts right after its
    // cursor, has no gap, ends at or below the primary's head after it, and, when
    // short, shows everything committed before it began.
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let (stop, reads) = (stop.clone(), reads.clone());
            let port = ports[i % 2];
            tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let before = head(&c, port).await;
                    let after = before.saturating_sub(fastrand::u64(0..300));
                    let page = get(
                        &c,
                        port,
                        &format!("/v1/events?after_position={after}&limit=1000"),
                    )
                    .await;
                    let then = head(&c, port).await;
                    let got = positions(&page);
                    let expected: Vec<u64> = (after + 1..after + 1 + got.len() as u64).collect();
                    assert_eq!(got, expected, "a gap-free page after {after}");
                    let end = got.last().copied().unwrap_or(after);
                    assert!(end <= then, "the page ends at {end}, past the head {then}");
                    if got.len() < 1000 {
                        assert!(
                            end >= before,
                            "a short page after {after} ends at {end}, short of the head \
                             {before} read before it"
                        );
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut appended = 0;
    for w in load {
        appended += w.await.expect("a writer");
    }
    for r in readers {
        r.await.expect("a reader");
    }
    // The whole log: positions 1 to the head, contiguous.
    let end = head(&c, ports[0]).await;
    let all = get(
        &c,
        ports[1],
        &format!("/v1/events?limit={}", end.min(10_000)),
    )
    .await;
    assert_eq!(
        positions(&all),
        (1..=end.min(10_000)).collect::<Vec<_>>(),
        "the whole log"
    );
    let mut served = Vec::new();
    for (port, before) in ports.into_iter().zip(&before) {
        let after = read_store(&c, port).await;
        served.push((
            count(&after, "reads_served") - count(before, "reads_served"),
            count(&after, "reads_on_primary") - count(before, "reads_on_primary"),
        ));
    }
    eprintln!(
        "{appended} appends by {WRITERS} writers, each read back twice on the other node; \
         {} log pages read; (reads the standby answered whole, reads the primary answered \
         whole or in part): waiting {:?}, at once {:?}",
        reads.load(Ordering::Relaxed),
        served[0],
        served[1],
    );
    assert!(appended >= WRITERS as u64, "the writers appended");
    assert!(
        served.iter().all(|(standby, _)| *standby > 0),
        "the standby served reads on both nodes: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_right_after_an_append_sees_it_while_the_standby_replays_nothing() {
    let Some((primary, standby)) = primary_and_standby().await else {
        return;
    };
    let served = serve(&primary, &standby, None, &[]);
    let port = served.port;
    let c = client();
    append(&c, port, "clock-a", 1).await;
    until_caught_up(&c, port).await;
    // Caught up: reads go to the standby.
    let caught_up = read_store(&c, port).await;
    get(&c, port, "/v1/streams/clock-a").await;
    get(&c, port, "/v1/events").await;
    let served_then = read_store(&c, port).await;
    assert!(
        count(&served_then, "reads_served") >= count(&caught_up, "reads_served") + 2,
        "the standby answered both reads: {served_then}"
    );
    assert_eq!(
        count(&served_then, "reads_on_primary"),
        count(&caught_up, "reads_on_primary"),
        "the primary answered none: {served_then}"
    );

    standby.query("SELECT pg_wal_replay_pause()");
    for n in 2..6 {
        let (version, at) = append(&c, port, "clock-a", n).await;
        sees_own_append(&c, port, "clock-a", version, at).await;
        let all = get(&c, port, "/v1/events").await;
        assert_eq!(
            positions(&all),
            (1..=at).collect::<Vec<_>>(),
            "the log, from the standby up to its head, then from the primary"
        );
        let counts = get(&c, port, "/v1/events/counts").await;
        assert_eq!(
            counts["up_to_position"].as_u64(),
            Some(at),
            "a count right after an append counts it: {counts}"
        );
        assert_eq!(counts["total"].as_u64(), Some(at), "{counts}");
    }
    let lagging = read_store(&c, port).await;
    assert_eq!(lagging["available"], true, "{lagging}");
    assert!(
        count(&lagging, "behind") >= 4,
        "the standby shows it is behind: {lagging}"
    );
    assert!(
        count(&lagging, "reads_on_primary") >= count(&served_then, "reads_on_primary") + 16,
        "the primary answered the reads the standby was behind for: {lagging}"
    );

    // Replaying again, the standby catches up and serves again.
    standby.query("SELECT pg_wal_replay_resume()");
    let resumed = until_caught_up(&c, port).await;
    get(&c, port, "/v1/streams/clock-a").await;
    let last = read_store(&c, port).await;
    assert_eq!(
        count(&last, "reads_served"),
        count(&resumed, "reads_served") + 1,
        "{last}"
    );
    assert_eq!(
        count(&last, "reads_on_primary"),
        count(&resumed, "reads_on_primary"),
        "{last}"
    );
}

/// Reads an SSE body until it has delivered the event at `until`: the positions, in
/// the order delivered.
async fn sse_positions(mut r: reqwest::Response, until: u64) -> Vec<u64> {
    let mut got = Vec::new();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.last() != Some(&until) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the subscription stalled at {:?}",
            got.last()
        );
        let chunk = tokio::time::timeout(left, r.chunk())
            .await
            .expect("the subscription stalled")
            .expect("the subscription broke")
            .expect("the subscription ended");
        text.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        while let Some(end) = text.find('\n') {
            let line: String = text.drain(..=end).collect();
            if let Some(id) = line.trim_end().strip_prefix("id: ") {
                got.push(id.parse().expect("a position"));
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_on_a_node_with_a_read_store_delivers_every_event_in_order() {
    let Some((primary, standby)) = primary_and_standby().await else {
        return;
    };
    let served = serve(&primary, &standby, None, &[]);
    let port = served.port;
    let c = client();
    until_caught_up(&c, port).await;
    let sse = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{port}/v1/subscribe?after_position=0"
        ))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(sse.status(), 200);
    let stop = Arc::new(AtomicBool::new(false));
    let load = writers(&[port], stop.clone(), false);
    // Live, then with the standby replaying nothing for a while, then replaying again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    standby.query("SELECT pg_wal_replay_pause()");
    tokio::time::sleep(Duration::from_millis(700)).await;
    standby.query("SELECT pg_wal_replay_resume()");
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    for w in load {
        w.await.expect("a writer");
    }
    let end = head(&c, port).await;
    let got = sse_positions(sse, end).await;
    assert_eq!(
        got,
        (1..=end).collect::<Vec<_>>(),
        "every event once, in order"
    );
    let rs = read_store(&c, port).await;
    assert!(count(&rs, "reads_served") > 0, "{rs}");
    eprintln!("{end} events delivered in order; the read store: {rs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_standby_stopped_reads_answer_from_the_primary_and_return_to_it_after() {
    let Some((primary, standby)) = primary_and_standby().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("serve.log");
    let served = serve(&primary, &standby, Some(&log), &[]);
    let port = served.port;
    let c = client();
    append(&c, port, "clock-a", 1).await;
    until_caught_up(&c, port).await;

    let standby = tokio::task::spawn_blocking(move || {
        standby.pg_ctl(&["stop", "-m", "immediate"]);
        standby
    })
    .await
    .expect("stop the standby");
    let logged_before = std::fs::read_to_string(&log).expect("the log").len();
    // The standby caught up: these reads go to it, find it gone, and the primary
    // answers them.
    let stream = get(&c, port, "/v1/streams/clock-a").await;
    assert_eq!(
        stream["events"].as_array().map(Vec::len),
        Some(1),
        "{stream}"
    );
    let all = get(&c, port, "/v1/events").await;
    assert!(!positions(&all).is_empty(), "{all}");
    let mut last = (0, 0);
    for n in 2..12 {
        last = append(&c, port, "clock-a", n).await;
        sees_own_append(&c, port, "clock-a", last.0, last.1).await;
    }
    let down = read_store(&c, port).await;
    assert_eq!(down["available"], false, "{down}");
    assert_eq!(down["head"], Value::Null, "{down}");
    let warned = std::fs::read_to_string(&log).expect("the log")[logged_before..].to_owned();
    let warnings = warned.matches("reads go to the primary").count();
    assert_eq!(warnings, 1, "the lost standby is logged once:\n{warned}");

    let _standby = tokio::task::spawn_blocking(move || {
        standby.pg_ctl(&["start"]);
        standby
    })
    .await
    .expect("start the standby");
    let back = until_caught_up(&c, port).await;
    sees_own_append(&c, port, "clock-a", last.0, last.1).await;
    let last = read_store(&c, port).await;
    assert!(
        count(&last, "reads_served") >= count(&back, "reads_served") + 2,
        "the standby serves again: {last}"
    );
}
