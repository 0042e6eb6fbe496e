//! The fault suite (issue 14, item 6): `annal serve` under 16 HTTP appenders, then
//! - killed with SIGKILL, on SQLite and on PostgreSQL, round after round;
//! - two servers on one SQLite file, both killed;
//! - its PostgreSQL server restarted (a private cluster, started for the test);
//! - its PostgreSQL primary stopped (`-m immediate`) and its synchronous standby
//!   promoted, the store URL naming both with `target_session_attrs=read-write`
//!   (docs/cluster.md).
//!
//! After each, `common::log_check` holds the store to: one contiguous log, contiguous
//! versions, whole batches, every acknowledged append stored as acknowledged, a chain
//! that verifies. Rounds: `ANNAL_FAULT_ROUNDS` (default 3; more for a long run).
//!
//! The other faults have files of their own: the CLI killed (crash_safety.rs), a full
//! disk (full_disk.rs), a cut-off tail or rewritten history (scheduled_digests.rs,
//! cli.rs), and in annal-sqlite a damaged WAL (damaged_wal.rs), a damaged index
//! (deep_verify.rs), an event edited in the file (conformance.rs) and the file at rest
//! (at_rest.rs).

mod common;

use common::pg_cluster::{PrivateCluster, path};

use annal::{AppendResult, StoreUrl};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const APPENDERS: usize = 16;

fn rounds() -> u32 {
    std::env::var("ANNAL_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// HTTP appenders spread over `ports`, each appending batches of 1 to 3 events in a loop
/// until stopped; what each had acknowledged (201) and how many it had refused.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<(Vec<AppendResult>, u64)>>,
}

impl Load {
    fn start(ports: &[u16], tag: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let tasks = (0..APPENDERS)
            .map(|i| {
                let port = ports[i % ports.len()];
                let (stop, count, tag) = (stop.clone(), acknowledged.clone(), tag.to_owned());
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .expect("client");
                    let (mut acked, mut refused) = (Vec::new(), 0u64);
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        seq += 1;
                        let stream = format!("clock-{}", (i as u64 * 7 + seq) % 11);
                        let body = format!(
                            r#"{{"aggregate_type":"Clock","expected_version":"any","events":{}}}"#,
                            common::log_check::batch_events(
                                &format!("{tag}-{i}-{seq}"),
                                1 + seq % 3
                            )
                        );
                        let sent = client
                            .post(format!("http://127.0.0.1:{port}/v1/streams/{stream}"))
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == 201 => match r.json::<AppendResult>().await {
                                Ok(result) => {
                                    acked.push(result);
                                    count.fetch_add(1, Ordering::Relaxed);
                                }
                                // Cut off mid-answer: not acknowledged.
                                Err(_) => refused += 1,
                            },
                            Ok(r) => {
                                let status = r.status();
                                assert!(
                                    status == 503,
                                    "only 503 may refuse an append here, got {status}: {}",
                                    r.text().await.unwrap_or_default()
                                );
                                refused += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            // The server is gone or restarting.
                            Err(_) => {
                                refused += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    (acked, refused)
                })
            })
            .collect();
        Self {
            stop,
            acknowledged,
            tasks,
        }
    }

    /// Waits (up to 30 s) until the appenders have `n` appends acknowledged, so that a
    /// fault comes under load and not before it (a busy machine starts slowly).
    async fn until_acknowledged(&self, n: u64) {
        for _ in 0..3_000 {
            if self.acknowledged.load(Ordering::Relaxed) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the appenders had {n} appends acknowledged within 30 s");
    }

    /// Stops the appenders: everything they had acknowledged, and the refusals.
    async fn finish(self) -> (Vec<AppendResult>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut acked, mut refused) = (Vec::new(), 0);
        for t in self.tasks {
            let (a, r) = t.await.expect("appender");
            acked.extend(a);
            refused += r;
        }
        (acked, refused)
    }
}

/// Rounds of: the servers `start` gives, 16 appenders spread over them, SIGKILL of them
/// all at a random moment, then the store at `url` reopened and checked against
/// everything acknowledged so far.
async fn sigkill_rounds(url: &str, start: impl Fn() -> Vec<common::Served>) {
    let mut acked = Vec::new();
    for round in 0..rounds() {
        let servers = start();
        let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
        let load = Load::start(&ports, &format!("r{round}"));
        load.until_acknowledged(APPENDERS as u64).await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(100..600))).await;
        drop(servers); // SIGKILL, then reaped
        let (got, _) = load.finish().await;
        assert!(
            !got.is_empty(),
            "round {round}: some appends were acknowledged"
        );
        acked.extend(got);
        let store = annal::connect(&url.parse::<StoreUrl>().expect("url"))
            .await
            .expect("reopen after the kill");
        common::log_check::check(&*store, &acked, &format!("round {round}")).await;
    }
    report(&acked, &format!("over {} rounds", rounds()));
}

/// What a test showed, for the log of a long run.
fn report(acked: &[AppendResult], when: &str) {
    let events: usize = acked.iter().map(|a| a.events.len()).sum();
    eprintln!(
        "{} appends ({events} events) acknowledged {when}: all stored, contiguous, verified",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_sixteen_appenders_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_str().expect("utf-8");
    let url = format!("sqlite:{}", dir.path().join("annal.db").display());
    sigkill_rounds(&url, || vec![common::serve_with(&["--data", data])]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_postgres_killed_under_sixteen_appenders_loses_nothing_it_acknowledged() {
    let Some(base) = common::pg::server_url() else {
        return;
    };
    let schema = common::pg::TestSchema::new(&base);
    sigkill_rounds(&schema.url, || {
        vec![common::serve_with(&["--store", &schema.url])]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_file_killed_together_keep_one_contiguous_log() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite:{}", dir.path().join("annal.db").display());
    sigkill_rounds(&url, || {
        vec![
            common::serve(dir.path(), &[]),
            common::serve(dir.path(), &[]),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_nothing_and_appends_resume() {
    // Runs where the PostgreSQL tests run: it needs PostgreSQL's programs, not its server.
    if common::pg::server_url().is_none() {
        return;
    }
    let cluster = PrivateCluster::start();
    let url = cluster.url();
    let served = common::serve_with(&["--store", &url]);
    let load = Load::start(&[served.port], "before");
    load.until_acknowledged(APPENDERS as u64).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_restart = {
        let store = annal::connect(&url.parse::<StoreUrl>().expect("url"))
            .await
            .expect("connect");
        store.head(&[]).await.expect("head")
    };
    let restarted = tokio::task::spawn_blocking(move || {
        cluster.pg_ctl(&["restart", "-m", "fast"]);
        cluster
    })
    .await
    .expect("restart");
    // Appends resume: the head moves past where it was once the server is back.
    let store = annal::connect(&url.parse::<StoreUrl>().expect("url"))
        .await
        .expect("connect after the restart");
    let resumed_at = store.head(&[]).await.expect("head");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (acked, refused) = load.finish().await;
    let head = store.head(&[]).await.expect("head");
    assert!(
        head > resumed_at && resumed_at >= before_restart,
        "appends resumed after the restart (head {before_restart} before it, {resumed_at} \
         once it was back, {head} at the end; {refused} refused meanwhile)"
    );
    assert!(
        acked.iter().any(|a| a.first_position > resumed_at),
        "appends were acknowledged after the restart"
    );
    drop(served);
    common::log_check::check(&*store, &acked, "after a PostgreSQL restart").await;
    report(
        &acked,
        &format!("around a restart ({refused} refused while it was down)"),
    );
    drop(store);
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_lost_under_load_and_its_synchronous_standby_promoted_loses_nothing_acknowledged()
{
    if common::pg::server_url().is_none() {
        return;
    }
    let primary = PrivateCluster::start();
    let standby = primary.synchronous_standby();
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write&connect_timeout=2",
        primary.port, standby.port
    );
    let served = common::serve_with(&["--store", &url]);
    let load = Load::start(&[served.port], "failover");
    load.until_acknowledged(APPENDERS as u64).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked_before = load.acknowledged.load(Ordering::Relaxed);
    // The primary dies at once (no shutdown checkpoint, no goodbye to clients), then
    // the standby is promoted, as an operator or a failover manager would.
    let lost = std::time::Instant::now();
    let primary = tokio::task::spawn_blocking(move || {
        primary.pg_ctl(&["stop", "-m", "immediate"]);
        primary
    })
    .await
    .expect("stop the primary");
    let standby = tokio::task::spawn_blocking(move || {
        standby.run("pg_ctl", &["promote", "-D", path(&standby.data), "-w"]);
        standby
    })
    .await
    .expect("promote the standby");
    // Appends succeed again through annal, on the new primary.
    let resumed_after = loop {
        let acked = load.acknowledged.load(Ordering::Relaxed);
        if acked > acked_before + APPENDERS as u64 {
            break lost.elapsed();
        }
        assert!(
            lost.elapsed() < Duration::from_secs(30),
            "appends did not resume within 30 s of the primary's loss"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, refused) = load.finish().await;
    drop(served);
    let store = annal::connect(&url.parse::<StoreUrl>().expect("url"))
        .await
        .expect("connect to the new primary");
    common::log_check::check(&*store, &acked, "after a failover").await;
    report(
        &acked,
        &format!(
            "around a failover (appends resumed {resumed_after:?} after the primary's loss; \
             {refused} refused meanwhile)"
        ),
    );
    drop(store);
    drop(standby);
    drop(primary);
}
