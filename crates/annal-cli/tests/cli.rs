//! The `annal` command as users run it: append, read, verify, exit codes and messages,
//! and the documented chain recipe re-checked by docs/verify_chain.py.

mod common;

use common::annal;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const ENROL: &str = r#"{"aggregate_type":"Family","aggregate_id":"family_123","expected_version":"no_stream","user_id":"sarah","correlation_id":"enrollment_abc123","events":[{"event_type":"FamilyEnrolled","data":{"family_name": "Martinez Family",  "enrollment_date":"2024-09-01"}},{"event_type":"ChildAdded","data":{"child_name":"Sofia Martinez","age":8,"grade":3}}]}"#;
const PAY: &str = r#"{"aggregate_type":"Family","aggregate_id":"family_123","expected_version":2,"correlation_id":"payment_xyz789","events":[{"event_type":"PaymentReceived","event_version":2,"data":{"amount":450,"date":"2024-09-15","method":"credit_card"}}]}"#;

fn store(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("annal.db").display())
}

/// The head after an `annal append` run: the `last_position` of its last result line
/// (a served store holds its `$epoch` before the first append, so this is not the
/// number of events appended).
fn appended_head(stdout: &[u8]) -> u64 {
    let last = text(stdout);
    let line: serde_json::Value =
        serde_json::from_str(last.lines().last().expect("a result line")).expect("JSON");
    line["last_position"].as_u64().expect("last_position")
}

#[test]
fn append_prints_one_result_per_line_and_read_filters_them() {
    let dir = tempfile::tempdir().expect("dir");
    let s = store(dir.path());
    let out = annal(&["append", "--store", &s], &format!("{ENROL}\n\n{PAY}\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let results: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON result line"))
        .collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["last_position"], 2);
    assert_eq!(results[1]["aggregate_version"], 3);

    let out = annal(
        &[
            "read",
            "--store",
            &s,
            "--event-type",
            "PaymentReceived,ChildAdded",
        ],
        "",
    );
    let types: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("event")["event_type"]
                .as_str()
                .expect("type")
                .to_owned()
        })
        .collect();
    assert_eq!(types, ["ChildAdded", "PaymentReceived"]);

    let out = annal(
        &[
            "read",
            "--store",
            &s,
            "--correlation-id",
            "enrollment_abc123",
        ],
        "",
    );
    assert_eq!(text(&out.stdout).lines().count(), 2);
    let first = text(&out.stdout).lines().next().expect("a line").to_owned();
    assert!(
        first.contains(
            r#""data":{"family_name": "Martinez Family",  "enrollment_date":"2024-09-01"}"#
        ),
        "data is printed exactly as written: {first}"
    );

    let out = annal(
        &[
            "read",
            "--store",
            &s,
            "--aggregate",
            "family_123",
            "--from-version",
            "3",
        ],
        "",
    );
    assert_eq!(text(&out.stdout).lines().count(), 1);

    let out = annal(&["verify", "--store", &s], "");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), r#"{"ok":true,"checked":3}"#);
}

#[test]
fn append_stops_at_the_first_failure_and_says_which_line_and_why() {
    let dir = tempfile::tempdir().expect("dir");
    let s = store(dir.path());
    let out = annal(&["append", "--store", &s], &format!("{ENROL}\n{ENROL}\n"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "the first line's result was printed"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("wrong expected version"),
        "{err}"
    );
    assert!(
        err.contains("family_123") && err.contains("actual version is 2"),
        "{err}"
    );

    let out = annal(
        &["append", "--store", &s],
        "{\"aggregate_type\": \"Family\",\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("line 1"),
        "{}",
        text(&out.stderr)
    );

    let out = annal(
        &["append", "--store", &s],
        r#"{"aggregate_type":"Family","aggregate_id":"f","expected_version":"sometimes","events":[{"event_type":"X","data":{}}]}"#,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("expected_version"),
        "{}",
        text(&out.stderr)
    );

    let out = annal(
        &["append", "--store", &s],
        r#"{"aggregate_type":"Family","aggregate_id":"f","events":[{"event_type":"X","data":{},"metadata":[1]}]}"#,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("events[0].metadata"),
        "{}",
        text(&out.stderr)
    );

    let out = annal(&["read", "--store", &s], "");
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "failed lines wrote nothing"
    );
}

#[test]
fn a_bad_store_url_is_refused_with_a_clear_message() {
    let out = annal(&["read", "--store", "mysql://localhost/x"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("sqlite:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_exported_log_reverifies_with_the_documented_python_recipe() {
    let dir = tempfile::tempdir().expect("dir");
    let s = store(dir.path());
    let weird = r#"{"aggregate_type":"Odd","aggregate_id":"o-1","causation_id":"c-1","events":[{"event_type":"Ünïcode","data":{"z":1.50,"a":[1e3,{"é":"\u00e9\n"}]},"metadata":{ "k" : null }}]}"#;
    let out = annal(
        &["append", "--store", &s],
        &format!("{ENROL}\n{PAY}\n{weird}\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // One event with a principal, hashed by the recipe's version 2.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use annal::{AppendRequest, ExpectedVersion, NewEvent, RawJson, Store};
        let store = annal::sqlite::SqliteStore::open(dir.path().join("annal.db")).expect("open");
        let request = AppendRequest::new("Family", "family_9", ExpectedVersion::NoStream)
            .by("sarah")
            .authenticated_as("svc-enrolment")
            .event(NewEvent::raw("Noted", RawJson::parse("{}").expect("json")));
        store.append(request).await.expect("append");
    });
    let export = text(&annal(&["read", "--store", &s], "").stdout);
    assert!(
        export.contains(r#""principal":"svc-enrolment""#),
        "{export}"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/verify_chain.py");
    let run_with = |input: &str, args: &[&str]| {
        let mut child = Command::new("python3")
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed to check the documented recipe");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        child.wait_with_output().expect("python3 finishes")
    };
    let run = |input: &str| run_with(input, &[]);
    let ok = run(&export);
    assert!(ok.status.success(), "{}", text(&ok.stdout));
    assert_eq!(text(&ok.stdout).trim(), "ok: 5 events");
    let edited = export.replacen(r#""amount":450"#, r#""amount":451"#, 1);
    assert_ne!(edited, export);
    let bad = run(&edited);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stdout).contains("position 3"),
        "{}",
        text(&bad.stdout)
    );
    let other_principal = export.replacen("svc-enrolment", "svc-other", 1);
    let bad = run(&other_principal);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stdout).contains("position 5"),
        "{}",
        text(&bad.stdout)
    );

    // The digest check, taught to the script too: it holds on the export, and fails on
    // an export cut before the digest's position.
    let digest: serde_json::Value =
        serde_json::from_slice(&annal(&["digest", "--store", &s], "").stdout).expect("digest");
    let expect = format!(
        "{}:{}",
        digest["position"],
        digest["hash"].as_str().expect("hash")
    );
    let held = run_with(&export, &["--expect", &expect]);
    assert!(held.status.success(), "{}", text(&held.stdout));
    let cut: String = export.lines().take(3).map(|l| format!("{l}\n")).collect();
    let short = run_with(&cut, &["--expect", &expect]);
    assert_eq!(short.status.code(), Some(1));
    assert!(
        text(&short.stdout).contains("cut off"),
        "{}",
        text(&short.stdout)
    );
    // No events is no "ok" (an export that failed prints none), unless the digest is an
    // empty log's; an export that starts later says to pass --prev.
    let none = run("");
    assert_eq!(none.status.code(), Some(1), "{}", text(&none.stdout));
    let empty_log = run_with("", &["--expect", &format!("0:{}", "0".repeat(64))]);
    assert!(empty_log.status.success(), "{}", text(&empty_log.stdout));
    let later: String = export.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let unlinked = run(&later);
    assert_eq!(unlinked.status.code(), Some(1));
    assert!(
        text(&unlinked.stdout).contains("pass --prev"),
        "{}",
        text(&unlinked.stdout)
    );
}

#[test]
fn read_follow_prints_events_committed_after_it_started() {
    let dir = tempfile::tempdir().expect("dir");
    let s = store(dir.path());
    assert!(annal(&["append", "--store", &s], ENROL).status.success());
    let mut follower = Command::new(env!("CARGO_BIN_EXE_annal"))
        .args([
            "read",
            "--store",
            &s,
            "--follow",
            "--event-type",
            "PaymentReceived",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start follower");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(annal(&["append", "--store", &s], PAY).status.success());
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the follower printed the new event");
    follower.kill().expect("stop follower");
    follower.wait().expect("reap");
    let e: serde_json::Value = serde_json::from_str(&line).expect("event JSON");
    assert_eq!(e["position"], 3);
    assert_eq!(e["event_type"], "PaymentReceived");
}

#[test]
fn serve_refuses_a_public_address_without_auth_and_says_how_to_fix_it() {
    let out = annal(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--data",
            "/nonexistent-annal-test",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("--allow-anonymous") && err.contains("--tokens-file"),
        "{err}"
    );
}

#[test]
fn append_read_and_verify_work_against_a_running_server() {
    let dir = tempfile::tempdir().expect("dir");
    let server = common::serve(dir.path(), &[]);
    let url = format!("http://127.0.0.1:{}", server.port);
    let appended = annal(&["append", "--server", &url], &format!("{ENROL}\n{PAY}\n"));
    let read = annal(
        &["read", "--server", &url, "--event-type", "PaymentReceived"],
        "",
    );
    let verified = annal(&["verify", "--server", &url], "");
    let conflict = annal(&["append", "--server", &url], ENROL);
    let later = r#"{"aggregate_type":"Family","aggregate_id":"family_123","events":[{"event_type":"Noted","data":{}}]}"#;
    let after_failure = annal(
        &["append", "--server", &url],
        &format!("{ENROL}\n{later}\n"),
    );
    let count = annal(&["read", "--server", &url, "--aggregate", "family_123"], "");
    let checkpointed = annal(&["append", "--server", &url], CHECKPOINT);
    let projections = annal(&["projections", "--server", &url, "--json"], "");
    drop(server);
    assert!(appended.status.success(), "{}", text(&appended.stderr));
    assert_eq!(text(&appended.stdout).lines().count(), 2);
    let head = appended_head(&appended.stdout);
    let e: serde_json::Value = serde_json::from_str(text(&read.stdout).trim()).expect("one event");
    assert_eq!(
        (e["position"].as_u64(), e["event_type"].as_str()),
        (Some(head), Some("PaymentReceived"))
    );
    assert_eq!(
        text(&verified.stdout).trim(),
        format!(r#"{{"ok":true,"checked":{head}}}"#)
    );
    assert_eq!(conflict.status.code(), Some(1));
    assert!(
        text(&conflict.stderr).contains("wrong expected version"),
        "{}",
        text(&conflict.stderr)
    );
    assert_eq!(after_failure.status.code(), Some(1));
    assert_eq!(
        text(&count.stdout).lines().count(),
        3,
        "the line after the failed one was not submitted"
    );
    assert!(
        checkpointed.status.success(),
        "{}",
        text(&checkpointed.stderr)
    );
    let p: serde_json::Value =
        serde_json::from_str(text(&projections.stdout).trim()).expect("one checkpoint");
    assert_eq!(
        (
            p["name"].as_str(),
            p["position"].as_u64(),
            p["lag"].as_u64()
        ),
        (Some("payments-projection"), Some(2), Some(head - 2))
    );
}

const CHECKPOINT: &str = r#"{"appends":[],"checkpoint":{"name":"payments-projection","position":2,"status":"faulted","error_count":3,"last_error":"bad amount"}}"#;

#[test]
fn projections_lists_each_checkpoint_with_status_lag_and_last_error() {
    let dir = tempfile::tempdir().expect("dir");
    let s = store(dir.path());
    let missing = annal(&["projections", "--store", &s], "");
    assert_eq!(missing.status.code(), Some(3), "{}", text(&missing.stderr));
    assert!(text(&missing.stderr).contains("no store at"));
    let out = annal(
        &["append", "--store", &s],
        &format!("{ENROL}\n{PAY}\n{CHECKPOINT}\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = annal(&["projections", "--store", &s], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        [
            "payments-projection",
            "faulted",
            "2",
            "1",
            "3",
            "bad",
            "amount"
        ],
        "{table}"
    );
}

#[test]
fn each_start_of_a_served_store_writes_the_next_epoch() {
    let dir = tempfile::tempdir().expect("dir");
    let mut first = common::serve(dir.path(), &[]);
    let url = format!("http://127.0.0.1:{}", first.port);
    let appended = annal(&["append", "--server", &url], ENROL);
    assert!(appended.status.success(), "{}", text(&appended.stderr));
    let head = appended_head(&appended.stdout);
    assert!(
        first.terminate(Duration::from_secs(20)),
        "the server stops on SIGTERM"
    );
    let second = common::serve(dir.path(), &[]);
    let url = format!("http://127.0.0.1:{}", second.port);
    let read = annal(&["read", "--server", &url, "--aggregate", "$epochs"], "");
    drop(second);
    assert!(read.status.success(), "{}", text(&read.stderr));
    let epochs: Vec<serde_json::Value> = text(&read.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON event"))
        .collect();
    assert_eq!(epochs.len(), 2, "one $epoch per start: {epochs:?}");
    assert!(epochs.iter().all(|e| e["event_type"] == "$epoch"));
    let (one, two) = (&epochs[0]["data"], &epochs[1]["data"]);
    assert_eq!(
        (&one["epochNumber"], &two["epochNumber"]),
        (&0.into(), &1.into())
    );
    // The first term began on an empty store, the second where the first left it.
    assert_eq!(one["epochPosition"], 0);
    assert_eq!(one["prevEpochPosition"], -1);
    assert_eq!(two["epochPosition"], head);
    assert_eq!(two["prevEpochPosition"], one["epochPosition"]);
    assert_eq!(epochs[1]["position"], head + 1);
    assert_ne!(
        one["leaderInstanceId"], two["leaderInstanceId"],
        "a new instance id at every start"
    );
    // The CLI on the file itself starts no term.
    let s = store(dir.path());
    let more = annal(
        &["append", "--store", &s],
        ENROL.replace("family_123", "family_9").as_str(),
    );
    assert!(more.status.success(), "{}", text(&more.stderr));
    assert_eq!(appended_head(&more.stdout), head + 3);
}

#[test]
fn the_cli_talks_to_an_https_server_that_trusts_a_private_ca() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = common::test_certificate(dir.path());
    let data = dir.path().join("data");
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let server = common::serve(&data, &["--tls-cert", &cert_arg, "--tls-key", &key_arg]);
    let url = format!("https://localhost:{}", server.port);
    let ca = cert.display().to_string();
    let appended = annal(&["append", "--server", &url, "--ca-cert", &ca], ENROL);
    let verified = annal(&["verify", "--server", &url, "--ca-cert", &ca], "");
    let untrusted = annal(&["verify", "--server", &url], "");
    drop(server);
    assert!(appended.status.success(), "{}", text(&appended.stderr));
    let head = appended_head(&appended.stdout);
    assert_eq!(
        text(&verified.stdout).trim(),
        format!(r#"{{"ok":true,"checked":{head}}}"#)
    );
    assert_eq!(
        untrusted.status.code(),
        Some(1),
        "a server the client does not trust is refused"
    );
}

/// Copies the store's files (main file, and `-wal` / `-shm` when present) from one
/// folder to another: a backup, or that backup put back.
fn copy_store_files(from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("annal.db{suffix}");
        let target = to.join(&name);
        let _ = std::fs::remove_file(&target);
        if from.join(&name).exists() {
            std::fs::copy(from.join(&name), &target).expect("copy a store file");
        }
    }
}

#[test]
fn a_digest_kept_elsewhere_proves_the_prefix_and_catches_a_tail_cut_off() {
    let dir = tempfile::tempdir().expect("dir");
    let old = tempfile::tempdir().expect("backup dir");
    let s = store(dir.path());
    assert!(
        annal(&["append", "--store", &s], &format!("{ENROL}\n"))
            .status
            .success()
    );
    copy_store_files(dir.path(), old.path());
    assert!(
        annal(&["append", "--store", &s], &format!("{PAY}\n"))
            .status
            .success()
    );

    let out = annal(&["digest", "--store", &s], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let digest: serde_json::Value = serde_json::from_slice(&out.stdout).expect("digest JSON");
    assert_eq!(digest["position"], 3);
    let hash = digest["hash"].as_str().expect("hash").to_owned();
    let file = dir.path().join("digest.json");
    std::fs::write(&file, &out.stdout).expect("keep the digest");
    let file = file.display().to_string();

    let ok = annal(&["verify", "--store", &s, "--digest", &file], "");
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(text(&ok.stdout).trim(), r#"{"ok":true,"checked":3}"#);
    let earlier = annal(
        &[
            "verify",
            "--store",
            &s,
            "--expect",
            "0:0000000000000000000000000000000000000000000000000000000000000000",
        ],
        "",
    );
    assert!(earlier.status.success(), "{}", text(&earlier.stderr));

    // The store is put back from the backup taken before the payment: its own chain
    // verifies, but it lacks the digest's event.
    copy_store_files(old.path(), dir.path());
    let chain_only = annal(&["verify", "--store", &s], "");
    assert!(chain_only.status.success(), "the shorter chain is whole");
    let cut = annal(
        &["verify", "--store", &s, "--expect", &format!("3:{hash}")],
        "",
    );
    assert_eq!(cut.status.code(), Some(1), "{}", text(&cut.stderr));
    assert!(
        text(&cut.stderr).contains("cut off"),
        "{}",
        text(&cut.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&cut.stdout).expect("report");
    assert_eq!(
        (
            report["ok"].as_bool(),
            report["first_bad_position"].as_u64()
        ),
        (Some(false), Some(3))
    );

    let bad = annal(&["verify", "--store", &s, "--expect", "three"], "");
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("POSITION:HASH"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn a_backup_of_a_live_server_store_is_whole_and_a_stopped_server_leaves_no_wal() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = common::serve(dir.path(), &[]);
    let url = format!("http://127.0.0.1:{}", server.port);
    let appended = annal(&["append", "--server", &url], &format!("{ENROL}\n{PAY}\n"));
    assert!(appended.status.success(), "{}", text(&appended.stderr));
    let head = appended_head(&appended.stdout);
    let s = store(dir.path());
    let copy = dir.path().join("backup.db");
    let copy_text = copy.display().to_string();

    // Taken while the server runs: one consistent file, verified.
    let out = annal(&["backup", "--store", &s, "--to", &copy_text], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON line");
    assert_eq!(
        (line["events"].as_u64(), line["verified"].as_bool()),
        (Some(head), Some(true))
    );
    assert!(
        !dir.path().join("backup.db-wal").exists(),
        "the copy needs no WAL"
    );
    let again = annal(&["backup", "--store", &s, "--to", &copy_text], "");
    assert_eq!(again.status.code(), Some(2), "never over an existing file");
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    let pg = annal(
        &[
            "backup",
            "--store",
            "postgres://nobody@127.0.0.1:1/none",
            "--to",
            "x.db",
        ],
        "",
    );
    assert!(text(&pg.stderr).contains("pg_dump"), "{}", text(&pg.stderr));

    // A clean stop checkpoints the WAL into the main file: the file alone is whole.
    assert!(
        server.terminate(Duration::from_secs(20)),
        "the server stops on SIGTERM"
    );
    let wal = dir.path().join("annal.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "the WAL is emptied on a clean stop"
    );
    let alone = tempfile::tempdir().expect("dir");
    std::fs::copy(dir.path().join("annal.db"), alone.path().join("annal.db")).expect("copy");
    let verified = annal(&["verify", "--store", &store(alone.path())], "");
    assert_eq!(
        text(&verified.stdout).trim(),
        format!(r#"{{"ok":true,"checked":{head}}}"#)
    );
}
