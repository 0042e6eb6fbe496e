//! `annal copy`: a whole log moves between stores (SQLite to SQLite always; SQLite to
//! PostgreSQL and back when `ANNAL_TEST_POSTGRES_URL` is set) keeping event_ids,
//! positions, versions, times and hashes, verified at the end; a non-empty target is
//! refused and left as it was. The key table of personal data comes along. Reading or
//! verifying a PostgreSQL schema without a store says so, and creates nothing.

mod common;

use annal::{Filter, RecordedEvent, StoreUrl};
use common::annal;
use std::process::Output;

/// Appends a varied log (several aggregates, multi-event appends, metadata, ids).
fn seed(url: &str) {
    let mut lines = String::new();
    for i in 0..120 {
        lines.push_str(&format!(
            r#"{{"aggregate_type":"Family","aggregate_id":"family_{}","user_id":"sarah","correlation_id":"c{}","events":[{{"event_type":"PaymentReceived","data":{{"amount": {}.50, "i":{i}}},"metadata":{{"source":"portal"}}}},{{"event_type":"Noted","data":[1, 2.0, "x"]}}]}}"#,
            i % 7,
            i % 3,
            400 + i
        ));
        lines.push('\n');
    }
    let out = annal(&["append", "--store", url], &lines);
    assert!(
        out.status.success(),
        "seed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn log(url: &str) -> Vec<RecordedEvent> {
    let store = annal::connect(&url.parse::<StoreUrl>().expect("url"))
        .await
        .expect("open");
    store
        .read_all(0, 100_000, &Filter::default())
        .await
        .expect("read")
}

/// A fresh schema's name on the test server at `base`, and its store URL.
fn fresh_schema(base: &str) -> (String, String) {
    let schema = format!("annal_test_{:016x}", fastrand::u64(..));
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema={schema}");
    (schema, url)
}

fn copy(from: &str, to: &str) -> Output {
    annal(&["copy", "--from", from, "--to", to, "--batch", "50"], "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_between_sqlite_stores_keeps_every_event_exactly_and_refuses_a_non_empty_target() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = format!("sqlite:{}", dir.path().join("a.db").display());
    let b = format!("sqlite:{}", dir.path().join("b.db").display());
    seed(&a);
    let checkpoint = r#"{"appends":[],"checkpoint":{"name":"payments","position":100,"status":"stopped","error_count":2,"last_error":"boom"}}"#;
    assert!(
        annal(&["append", "--store", &a], checkpoint)
            .status
            .success()
    );
    let out = copy(&a, &b);
    assert!(
        out.status.success(),
        "copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["copied"], 240);
    assert_eq!(summary["verified"], true);
    let source = log(&a).await;
    assert_eq!(source.len(), 240);
    assert_eq!(log(&b).await, source, "identical events, hashes and times");
    assert_eq!(summary["checkpoints"], 1);
    let target = annal::connect(&b.parse().expect("url"))
        .await
        .expect("open");
    let c = target
        .checkpoint("payments")
        .await
        .expect("read")
        .expect("copied");
    assert_eq!(
        (c.position, c.error_count, c.last_error.as_deref()),
        (100, 2, Some("boom"))
    );
    assert_eq!(c.status, annal::CheckpointStatus::Stopped);

    let again = copy(&a, &b);
    assert!(!again.status.success(), "a non-empty target is refused");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(log(&b).await.len(), 240, "and left as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_sqlite_to_postgres_and_back_keeps_every_event_exactly() {
    let Ok(base) = std::env::var("ANNAL_TEST_POSTGRES_URL") else {
        eprintln!("notice: ANNAL_TEST_POSTGRES_URL is not set: skipping the PostgreSQL copy");
        return;
    };
    let (schema, pg) = fresh_schema(&base);
    let dir = tempfile::tempdir().expect("temp dir");
    let a = format!("sqlite:{}", dir.path().join("a.db").display());
    let back = format!("sqlite:{}", dir.path().join("back.db").display());
    seed(&a);
    let to_pg = copy(&a, &pg);
    let from_pg = copy(&pg, &back);
    let refused = copy(&a, &pg);
    let (source, in_pg, returned) = (log(&a).await, log(&pg).await, log(&back).await);
    // Clean up before asserting.
    let (c, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    c.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .expect("drop schema");
    for (what, out) in [("to postgres", &to_pg), ("back", &from_pg)] {
        assert!(
            out.status.success(),
            "copy {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!refused.status.success(), "a non-empty target is refused");
    assert_eq!(source.len(), 240);
    assert_eq!(
        in_pg, source,
        "PostgreSQL holds the same events, hashes and times"
    );
    assert_eq!(returned, source, "and they come back the same");
}

const KEK: &str = "3333333333333333333333333333333333333333333333333333333333333333";

/// Runs `annal` with the key-encryption key file `kek`.
fn keyed(args: &[&str], stdin: &str, kek: &std::path::Path) -> Output {
    common::annal_with(args, stdin, |cmd| {
        cmd.env_remove("ANNAL_KEK").env("ANNAL_KEK_FILE", kek);
    })
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What a store shows of its personal data: the log read whole and the subjects listed.
fn personal_view(store: &str, kek: &std::path::Path) -> (String, String) {
    let read = keyed(&["read", "--store", store], "", kek);
    let listed = keyed(&["subjects", "list", "--store", store], "", kek);
    assert!(
        read.status.success() && listed.status.success(),
        "{}",
        said(&read)
    );
    (
        String::from_utf8_lossy(&read.stdout).into_owned(),
        String::from_utf8_lossy(&listed.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_carries_the_key_table_so_personal_data_reads_and_forgotten_subjects_stay_forgotten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kek = dir.path().join("kek.hex");
    std::fs::write(&kek, KEK).expect("kek");
    let a = format!("sqlite:{}", dir.path().join("a.db").display());
    let b = format!("sqlite:{}", dir.path().join("b.db").display());
    let child = |family: &str, name: &str| {
        format!(
            r#"{{"aggregate_type":"Family","aggregate_id":"{family}","events":[{{"event_type":"ChildAdded","data":{{"grade":3}},"subjects":["{family}"],"personal":{{"child_name":"{name}"}}}}]}}"#
        )
    };
    let lines = format!(
        "{}\n{}\n",
        child("family_1", "Sofia Martinez"),
        child("family_2", "Leo Novak")
    );
    let out = keyed(&["append", "--store", &a], &lines, &kek);
    assert!(out.status.success(), "{}", said(&out));
    let out = keyed(
        &[
            "forget",
            "family_2",
            "--reason",
            "erasure request",
            "--store",
            &a,
        ],
        "",
        &kek,
    );
    assert!(out.status.success(), "{}", said(&out));

    let out = keyed(&["copy", "--from", &a, "--to", &b], "", &kek);
    assert!(out.status.success(), "{}", said(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(
        (summary["copied"].clone(), summary["keys"].clone()),
        (3.into(), 2.into())
    );
    let (read, listed) = personal_view(&b, &kek);
    assert_eq!((read.clone(), listed), personal_view(&a, &kek));
    assert!(
        read.contains(r#""personal":{"child_name":"Sofia Martinez"}"#)
            && read.contains(r#""personal":{"$erased":true}"#)
            && !read.contains("Leo"),
        "{read}"
    );
    let again = keyed(
        &["append", "--store", &b],
        &child("family_2", "Leo Novak"),
        &kek,
    );
    assert!(
        !again.status.success() && said(&again).contains("forgotten"),
        "a subject forgotten in the source stays forgotten in the copy: {}",
        said(&again)
    );

    // A target that holds keys but no events (a copy cut short) is refused too.
    let c_file = dir.path().join("c.db");
    {
        use annal::Store as _;
        let keyring = annal::privacy::Keyring::from_hex(KEK, "test").expect("kek");
        let (_, row) = keyring
            .new_key("family_9", annal::Timestamp::now())
            .expect("key");
        let options = annal::sqlite::Options {
            keyring: Some(keyring),
            ..annal::sqlite::Options::default()
        };
        let c = annal::sqlite::SqliteStore::open_with(&c_file, options).expect("open");
        c.import_key_rows(vec![row]).await.expect("a key, no event");
    }
    let c = format!("sqlite:{}", c_file.display());
    let refused = keyed(&["copy", "--from", &a, "--to", &c], "", &kek);
    assert!(
        !refused.status.success() && said(&refused).contains("holds data keys already"),
        "{}",
        said(&refused)
    );

    // Through PostgreSQL and back, when it is there.
    let Ok(base) = std::env::var("ANNAL_TEST_POSTGRES_URL") else {
        eprintln!("notice: ANNAL_TEST_POSTGRES_URL is not set: skipping the PostgreSQL copy");
        return;
    };
    let (schema, pg) = fresh_schema(&base);
    let back = format!("sqlite:{}", dir.path().join("back.db").display());
    let to_pg = keyed(&["copy", "--from", &a, "--to", &pg], "", &kek);
    let from_pg = keyed(&["copy", "--from", &pg, "--to", &back], "", &kek);
    let in_pg = to_pg.status.success().then(|| personal_view(&pg, &kek));
    let drop = std::process::Command::new("psql")
        .args([
            base.as_str(),
            "-qc",
            &format!("DROP SCHEMA \"{schema}\" CASCADE"),
        ])
        .output()
        .expect("psql");
    assert!(to_pg.status.success(), "{}", said(&to_pg));
    assert!(from_pg.status.success(), "{}", said(&from_pg));
    assert_eq!(in_pg, Some(personal_view(&a, &kek)));
    assert_eq!(personal_view(&back, &kek), personal_view(&a, &kek));
    assert!(drop.status.success(), "{}", said(&drop));
}

#[test]
fn reading_or_verifying_a_postgres_schema_without_a_store_says_so_and_creates_nothing() {
    let Ok(base) = std::env::var("ANNAL_TEST_POSTGRES_URL") else {
        eprintln!("notice: ANNAL_TEST_POSTGRES_URL is not set: skipping");
        return;
    };
    let (schema, pg) = fresh_schema(&base);
    for args in [
        &["verify", "--store", pg.as_str()][..],
        &["read", "--store", pg.as_str()][..],
        &["read", "--sealed", "--store", pg.as_str()][..],
    ] {
        let out = annal(args, "");
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", said(&out));
        assert!(said(&out).contains("no store in schema"), "{}", said(&out));
    }
    let there = std::process::Command::new("psql")
        .args([
            base.as_str(),
            "-tAc",
            &format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'"),
        ])
        .output()
        .expect("psql");
    assert_eq!(String::from_utf8_lossy(&there.stdout).trim(), "0");
}
