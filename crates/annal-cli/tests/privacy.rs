//! Personal data from the command line: a store keyed by `ANNAL_KEK_FILE` takes a
//! personal part, reads it back, exports it; `annal forget` erases it while `annal
//! verify` and docs/verify_chain.py still pass on the export; a missing or wrong KEK
//! stops every command that reads or writes personal data at start with a clear
//! message (verifying and digests need none); `annal subjects rotate-kek` moves the
//! store to a new KEK.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const KEK_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEK_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

const ENROL: &str = r#"{"aggregate_type":"Family","aggregate_id":"family_123","expected_version":"no_stream","user_id":"sarah","events":[{"event_type":"FamilyEnrolled","data":{"plan":"full"}},{"event_type":"ChildAdded","data":{"age_band":"7-9"},"subjects":["family_123"],"personal":{"child_name": "Sofia Martinez"}}]}"#;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `annal` with `kek` (a file path) as ANNAL_KEK_FILE, or with no KEK at all.
fn annal(args: &[&str], stdin: &str, kek: Option<&Path>) -> Output {
    common::annal_with(args, stdin, |cmd| {
        cmd.env_remove("ANNAL_KEK").env_remove("ANNAL_KEK_FILE");
        if let Some(k) = kek {
            cmd.env("ANNAL_KEK_FILE", k);
        }
    })
}

fn python_verifies(export: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/verify_chain.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed to check the documented recipe");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(export.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3 finishes");
    assert!(out.status.success(), "{}", text(&out.stdout));
    text(&out.stdout).trim().to_owned()
}

#[test]
fn a_family_is_forgotten_from_the_command_line_and_the_chain_still_verifies() {
    let dir = tempfile::tempdir().expect("dir");
    let store = format!("sqlite:{}", dir.path().join("annal.db").display());
    let kek_a = dir.path().join("kek-a.hex");
    let kek_b = dir.path().join("kek-b.hex");
    std::fs::write(&kek_a, format!("{KEK_A}\n")).expect("kek");
    std::fs::write(&kek_b, KEK_B).expect("kek");
    let s = store.as_str();

    let out = annal(
        &["append", "--store", s],
        &format!("{ENROL}\n"),
        Some(&kek_a),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let read = text(&annal(&["read", "--store", s], "", Some(&kek_a)).stdout);
    assert!(
        read.contains(r#""personal":{"child_name": "Sofia Martinez"}"#),
        "{read}"
    );
    assert_eq!(python_verifies(&read), "ok: 2 events");
    // The audit trail shows what every read shows: the personal part with the data.
    let audit = text(&annal(&["audit", "family_123", "--store", s], "", Some(&kek_a)).stdout);
    assert!(audit.contains("Sofia Martinez"), "{audit}");
    let export = text(
        &annal(
            &["subjects", "export", "family_123", "--store", s],
            "",
            Some(&kek_a),
        )
        .stdout,
    );
    assert_eq!(export.lines().count(), 1, "{export}");
    assert!(export.contains("Sofia Martinez"));

    let missing = annal(&["read", "--store", s], "", None);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("ANNAL_KEK_FILE"),
        "{}",
        text(&missing.stderr)
    );
    let wrong = annal(&["read", "--store", s], "", Some(&kek_b));
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("wrong key-encryption key"),
        "{}",
        text(&wrong.stderr)
    );

    let forgot = annal(
        &[
            "forget",
            "family_123",
            "--reason",
            "erasure request, ticket 881",
            "--user-id",
            "dpo",
            "--store",
            s,
        ],
        "",
        Some(&kek_a),
    );
    assert!(forgot.status.success(), "{}", text(&forgot.stderr));
    let done: serde_json::Value = serde_json::from_str(text(&forgot.stdout).trim()).expect("json");
    assert_eq!(done["position"], 3);
    let read = text(&annal(&["read", "--store", s], "", Some(&kek_a)).stdout);
    assert!(read.contains(r#""personal":{"$erased":true}"#), "{read}");
    assert!(!read.contains("Sofia"), "{read}");
    let audit = text(&annal(&["audit", "family_123", "--store", s], "", Some(&kek_a)).stdout);
    assert!(
        audit.contains(r#""$erased":true"#) && !audit.contains("Sofia"),
        "{audit}"
    );
    assert!(
        read.contains(r#""event_type":"$subjectForgotten""#),
        "{read}"
    );
    assert_eq!(python_verifies(&read), "ok: 3 events");
    let verify = annal(&["verify", "--store", s], "", Some(&kek_a));
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    // An auditor verifies the chain (and takes a digest) without the key that decrypts
    // personal data; a wrong key given is still refused.
    for args in [&["verify", "--store", s][..], &["digest", "--store", s][..]] {
        let out = annal(args, "", None);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let wrong = annal(&["verify", "--store", s], "", Some(&kek_b));
    assert!(
        !wrong.status.success() && text(&wrong.stderr).contains("wrong key-encryption key"),
        "{}",
        text(&wrong.stderr)
    );
    // ... and exports the log as stored for docs/verify_chain.py: sealed parts with
    // their subjects, nothing opened.
    let sealed = annal(&["read", "--sealed", "--store", s], "", None);
    let export = text(&sealed.stdout);
    assert!(sealed.status.success(), "{}", text(&sealed.stderr));
    assert_eq!(python_verifies(&export), "ok: 3 events");
    let child = export.lines().nth(1).expect("the sealed event");
    assert!(
        child.contains(r#""sealed":{"alg":"xchacha20poly1305""#)
            && child.contains(r#""subjects":["family_123"]"#)
            && !child.contains(r#""personal""#),
        "{child}"
    );
    let refused = annal(
        &["read", "--sealed", "--server", "http://127.0.0.1:9"],
        "",
        None,
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    let listed = text(&annal(&["subjects", "list", "--store", s], "", Some(&kek_a)).stdout);
    assert!(listed.contains(r#""status":"forgotten""#), "{listed}");

    // Over a server: forgetting records the token's name, so --user-id is refused, and
    // a server cannot rotate its own key.
    let kek_b_path = kek_b.to_str().expect("path");
    let server = "http://127.0.0.1:9";
    for (args, named) in [
        (
            &[
                "forget",
                "family_9",
                "--reason",
                "r",
                "--user-id",
                "dpo",
                "--server",
                server,
            ][..],
            "--user-id",
        ),
        (
            &[
                "subjects",
                "rotate-kek",
                "--new-kek-file",
                kek_b_path,
                "--server",
                server,
            ][..],
            "--server",
        ),
    ] {
        let refused = annal(args, "", Some(&kek_a));
        let said = text(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{args:?}: {said}");
        assert!(said.contains(named), "{args:?}: {said}");
    }

    let rotated = annal(
        &[
            "subjects",
            "rotate-kek",
            "--new-kek-file",
            kek_b.to_str().expect("path"),
            "--store",
            s,
        ],
        "",
        Some(&kek_a),
    );
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    let out = annal(
        &["append", "--store", s],
        &format!("{}\n", ENROL.replace("family_123", "family_456")),
        Some(&kek_a),
    );
    assert!(
        !out.status.success(),
        "the old KEK no longer opens the store"
    );
    let out = annal(
        &["append", "--store", s],
        &format!("{}\n", ENROL.replace("family_123", "family_456")),
        Some(&kek_b),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let read = text(
        &annal(
            &["read", "--aggregate", "family_456", "--store", s],
            "",
            Some(&kek_b),
        )
        .stdout,
    );
    assert!(read.contains("Sofia Martinez"), "{read}");
}

/// A store in a new folder holding ENROL, written with KEK_A (kept there as
/// `kek-a.hex`): the folder, the store's file and its URL.
fn enrolled() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("annal.db");
    let store = format!("sqlite:{}", db.display());
    let kek = dir.path().join("kek-a.hex");
    std::fs::write(&kek, KEK_A).expect("kek");
    let out = annal(
        &["append", "--store", &store],
        &format!("{ENROL}\n"),
        Some(&kek),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    (dir, db, store)
}

/// Runs `sql` on the store's file `db` behind the store's back (its guard dropped).
fn behind_the_back(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).expect("open behind the store's back");
    conn.execute_batch("DROP TRIGGER IF EXISTS events_are_immutable")
        .expect("drop guard");
    conn.execute(sql, []).expect("edit");
}

#[test]
fn the_sealed_export_stops_at_an_event_edited_behind_the_stores_back() {
    let (_dir, db, store) = enrolled();
    let s = store.as_str();
    behind_the_back(
        &db,
        "UPDATE events SET data = '{\"age_band\":\"1-3\"}' WHERE position = 2",
    );

    let sealed = annal(&["read", "--sealed", "--store", s], "", None);
    assert!(!sealed.status.success());
    assert!(
        text(&sealed.stderr).contains("position 2 does not match its hash"),
        "{}",
        text(&sealed.stderr)
    );
    let printed = text(&sealed.stdout);
    assert_eq!(printed.lines().count(), 1, "{printed}");

    // A reader that goes away early takes stderr with it: the failure is still an exit
    // code, not a panic (101).
    let script = format!(
        "{} verify --quick --store {s} 2>&1 | head -c 10 >/dev/null; exit ${{PIPESTATUS[0]}}",
        env!("CARGO_BIN_EXE_annal")
    );
    let cut = Command::new("bash")
        .args(["-c", &script])
        .env_remove("ANNAL_KEK")
        .env_remove("ANNAL_KEK_FILE")
        .output()
        .expect("bash");
    assert!(
        matches!(cut.status.code(), Some(1 | 141)),
        "{:?}: {}",
        cut.status,
        text(&cut.stderr)
    );
}

#[test]
fn a_backup_and_a_forgetting_need_no_kek_and_a_wrong_one_is_still_refused() {
    let (dir, _db, store) = enrolled();
    let kek_a = dir.path().join("kek-a.hex");
    let kek_b = dir.path().join("kek-b.hex");
    std::fs::write(&kek_b, KEK_B).expect("kek");
    let s = store.as_str();

    let copy = dir.path().join("backup.db");
    let to = copy.to_str().expect("path");
    let wrong = annal(&["backup", "--store", s, "--to", to], "", Some(&kek_b));
    assert!(
        !wrong.status.success() && text(&wrong.stderr).contains("wrong key-encryption key"),
        "{}",
        text(&wrong.stderr)
    );
    let backup = annal(&["backup", "--store", s, "--to", to], "", None);
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    assert!(text(&backup.stdout).contains(r#""verified":true"#));

    let unknown = annal(
        &["forget", "nobody", "--reason", "r", "--store", s],
        "",
        None,
    );
    assert_eq!(unknown.status.code(), Some(3), "{}", text(&unknown.stderr));
    let forgot = annal(
        &[
            "forget",
            "family_123",
            "--reason",
            "lost key drill",
            "--store",
            s,
        ],
        "",
        None,
    );
    assert!(forgot.status.success(), "{}", text(&forgot.stderr));
    let read = text(&annal(&["read", "--store", s], "", Some(&kek_a)).stdout);
    assert!(
        read.contains(r#""personal":{"$erased":true}"#) && !read.contains("Sofia"),
        "{read}"
    );
    let kept = format!("sqlite:{}", copy.display());
    let old = text(&annal(&["read", "--store", &kept], "", Some(&kek_a)).stdout);
    assert!(
        old.contains("Sofia Martinez"),
        "the backup predates it: {old}"
    );
}

#[test]
fn the_sealed_export_prints_the_events_before_a_damaged_sealed_part_then_fails() {
    let (_dir, db, store) = enrolled();
    let s = store.as_str();
    // A packed sealed part with an unknown tag: it cannot even be rendered.
    behind_the_back(&db, "UPDATE events SET sealed = X'09' WHERE position = 2");

    let sealed = annal(&["read", "--sealed", "--store", s], "", None);
    assert_eq!(sealed.status.code(), Some(1), "{}", text(&sealed.stderr));
    let printed = text(&sealed.stdout);
    assert_eq!(printed.lines().count(), 1, "{printed}");
    assert!(printed.contains(r#""position":1"#), "{printed}");
}
