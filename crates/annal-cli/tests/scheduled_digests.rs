//! `annal serve --digest-dir`: digests written at start, on a schedule and at shutdown,
//! and a store that no longer holds the newest digest's prefix refused before it is
//! served (issue 14: "compare against the last digest", "digests on a schedule").

mod common;

use common::annal;
use std::path::Path;
use std::time::{Duration, Instant};

fn family(id: &str, n: u32) -> String {
    let events: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"event_type":"Noted","data":{{"i":{i}}}}}"#))
        .collect();
    format!(
        r#"{{"aggregate_type":"Family","aggregate_id":"{id}","expected_version":"any","events":[{}]}}"#,
        events.join(",")
    )
}

fn append(store: &str, id: &str, n: u32) {
    let out = annal(&["append", "--store", store], &family(id, n));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The positions of the digests in `dir`, in file-name order (the time they were taken).
fn digests(dir: &Path) -> Vec<u64> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("digest-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(n)).expect("read digest");
            let d: serde_json::Value = serde_json::from_str(&text).expect("a digest");
            d["position"].as_u64().expect("position")
        })
        .collect()
}

/// Waits (up to 5 s) until `dir` holds a digest.
fn wait_for_a_digest(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while digests(dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The head of `store`, as `annal digest` reads it.
fn head(store: &str) -> u64 {
    let out = annal(&["digest", "--store", store], "");
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).expect("digest");
    d["position"].as_u64().expect("position")
}

/// Starts `annal serve --digest-dir KEPT` on DATA, which must refuse (exit 1) before
/// serving; what it said.
fn refused_to_serve(data: &Path, kept: &Path) -> String {
    let (data, kept) = (data.to_str().expect("utf-8"), kept.to_str().expect("utf-8"));
    let out = annal(
        &[
            "serve",
            "--data",
            data,
            "--listen",
            "127.0.0.1:0",
            "--digest-dir",
            kept,
        ],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "refused: {stderr}");
    stderr
}

#[test]
fn a_served_store_gets_digests_and_an_older_copy_of_it_is_refused() {
    let tmp = tempfile::tempdir().expect("dir");
    let data = tmp.path().join("data");
    let db = data.join("annal.db");
    let store = format!("sqlite:{}", db.display());
    let kept = tmp.path().join("digests");
    let kept_arg = kept.to_str().expect("utf-8 path");

    append(&store, "family_1", 3);
    let older = tmp.path().join("older.db");
    std::fs::copy(&db, &older).expect("an older copy (the store is closed: whole)");
    append(&store, "family_2", 3);

    let mut served = common::serve(&data, &["--digest-dir", kept_arg, "--digest-every", "1s"]);
    // Written at start, before anything else.
    wait_for_a_digest(&kept);
    // The head at start: the six events and the node's `$epoch`, written before it.
    let start = head(&store);
    assert!(start > 6, "the node's $epoch is in the log");
    assert_eq!(digests(&kept), [start], "a digest of the head at start");
    // Another process appends; the schedule writes it down; an unmoved head is not
    // written again.
    append(&store, "family_3", 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while digests(&kept) != [start, start + 2] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        digests(&kept),
        [start, start + 2],
        "one more digest once the head moved"
    );
    append(&store, "family_4", 1);
    assert!(
        served.terminate(Duration::from_secs(10)),
        "stopped by SIGTERM"
    );
    assert_eq!(
        digests(&kept).last(),
        Some(&(start + 3)),
        "a last digest at shutdown"
    );

    // The store put back to an older copy: its tail (positions 4 and on) is gone.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(&older, &db).expect("restore the older copy");
    let stderr = refused_to_serve(&data, &kept);
    assert!(
        stderr.contains("refusing to serve") && stderr.contains("tail was cut off"),
        "{stderr}"
    );
    // `annal verify --digest DIR` checks against the newest digest in the folder.
    let out = annal(&["verify", "--store", &store, "--digest", kept_arg], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tail was cut off"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Nothing was written to the refused store (no `$epoch` either).
    assert_eq!(head(&store), 3);
}

#[test]
fn a_rewritten_history_is_refused_too() {
    let tmp = tempfile::tempdir().expect("dir");
    let data = tmp.path().join("data");
    let db = data.join("annal.db");
    let store = format!("sqlite:{}", db.display());
    let kept = tmp.path().join("digests");
    let kept_arg = kept.to_str().expect("utf-8 path");
    append(&store, "family_1", 3);
    let mut served = common::serve(&data, &["--digest-dir", kept_arg]);
    // The port is bound before the start digest is written: wait for it.
    wait_for_a_digest(&kept);
    assert!(
        served.terminate(Duration::from_secs(10)),
        "stopped by SIGTERM"
    );
    // The three events and the node's `$epoch`.
    let length = head(&store);
    assert_eq!(digests(&kept), [length]);

    // Another store of the same length: a history written anew.
    std::fs::remove_dir_all(&data).expect("remove the store");
    append(&store, "family_9", u32::try_from(length).expect("small"));
    let stderr = refused_to_serve(&data, &kept);
    assert!(stderr.contains("rewritten"), "{stderr}");
}
