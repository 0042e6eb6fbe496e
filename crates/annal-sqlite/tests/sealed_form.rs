//! How a sealed personal part rests in `events.sealed` (crates/annal-sqlite/src/privacy.rs):
//! packed bytes for what the writer seals, the JSON text for rows written before, and
//! a BLOB of any other shape reported as corrupt.

use annal_core::testkit::fixtures::{ev, req};
use annal_core::{Error, ExpectedVersion, Filter, RawJson, RecordedEvent, Store};
use annal_sqlite::{Options, SqliteStore};

const SOFIA: &str = r#"{"child_name": "Sofía", "grade":"A"}"#;

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: SqliteStore,
}

fn open(path: &std::path::Path) -> SqliteStore {
    let options = Options {
        keyring: Some(annal_core::testkit::privacy::kek()),
        ..Options::default()
    };
    SqliteStore::open_with(path, options).expect("open")
}

/// A store holding one plain event and one personal event about `family_1`.
async fn with_a_personal_event() -> (Fixture, RecordedEvent) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("annal.db");
    let store = open(&path);
    let mut personal = ev("ChildAdded", r#"{"seat":3}"#);
    personal.personal = Some(RawJson::parse(SOFIA).expect("json"));
    personal.subjects = vec!["family_1".into()];
    store
        .append(req(
            "Family",
            "family_1",
            ExpectedVersion::Any,
            vec![ev("Joined", "{}"), personal],
        ))
        .await
        .expect("append");
    let read = all(&store).await.expect("read").pop().expect("an event");
    (
        Fixture {
            _dir: dir,
            path,
            store,
        },
        read,
    )
}

async fn all(store: &SqliteStore) -> annal_core::Result<Vec<RecordedEvent>> {
    store.read_all(0, 10, &Filter::default()).await
}

/// Runs `sql` (one parameter, changing one row) on the file behind the store's back,
/// with the immutability guard off.
fn behind_the_back(path: &std::path::Path, sql: &str, param: rusqlite::types::Value) {
    let conn = rusqlite::Connection::open(path).expect("open behind the store's back");
    conn.execute_batch("DROP TRIGGER IF EXISTS events_are_immutable")
        .expect("drop guard");
    let n = conn.execute(sql, [param]).expect("edit");
    assert_eq!(n, 1);
}

fn stored_type_and_length(path: &std::path::Path) -> (String, i64) {
    let conn = rusqlite::Connection::open(path).expect("open behind the store's back");
    conn.query_row(
        "SELECT typeof(sealed), length(CAST(sealed AS BLOB)) FROM events WHERE position = 2",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("row")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_part_rests_packed_and_reads_back_as_its_json_text() {
    let (f, read) = with_a_personal_event().await;
    assert_eq!(read.personal.as_ref().map(RawJson::get), Some(SOFIA));
    let text = read.sealed.as_ref().expect("sealed").get().to_owned();
    assert!(text.starts_with(r#"{"alg":"xchacha20poly1305","subjects":["family_1"]"#));
    let (kind, len) = stored_type_and_length(&f.path);
    assert_eq!(kind, "blob");
    assert!(len + 100 < text.len() as i64, "{len} bytes for {text}");
    assert!(f.store.verify(None, None).await.expect("verify").ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_text_envelope_still_reads_and_verifies() {
    let (f, read) = with_a_personal_event().await;
    let text = read.sealed.as_ref().expect("sealed").get().to_owned();
    drop(f.store);
    behind_the_back(
        &f.path,
        "UPDATE events SET sealed = ?1 WHERE position = 2",
        rusqlite::types::Value::Text(text.clone()),
    );
    assert_eq!(stored_type_and_length(&f.path).0, "text");
    let store = open(&f.path);
    let again = all(&store).await.expect("read").pop().expect("an event");
    assert_eq!(again, read);
    assert_eq!(again.sealed.as_ref().map(RawJson::get), Some(text.as_str()));
    assert!(store.verify(None, None).await.expect("verify").ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_of_the_wrong_shape_is_reported_corrupt_not_guessed() {
    let (f, _) = with_a_personal_event().await;
    let conn = rusqlite::Connection::open(&f.path).expect("open");
    let packed: Vec<u8> = conn
        .query_row("SELECT sealed FROM events WHERE position = 2", [], |r| {
            r.get(0)
        })
        .expect("packed");
    drop(conn);
    let mut other_tag = packed.clone();
    other_tag[0] = 2;
    let cut = packed[..packed.len() / 2].to_vec();
    for bad in [other_tag, cut, b"{\"alg\":1}".to_vec()] {
        behind_the_back(
            &f.path,
            "UPDATE events SET sealed = ?1 WHERE position = 2",
            rusqlite::types::Value::Blob(bad.clone()),
        );
        match all(&f.store).await {
            Err(Error::Corrupt(m)) => {
                assert!(m.contains("position 2") && m.contains("sealed"), "{m}");
            }
            other => panic!("{bad:?}: expected Error::Corrupt, got {other:?}"),
        }
        // verify reports it at its position, rather than failing without a report,
        // and so does the deep verify, whose own checks step over it.
        for deep in [false, true] {
            let report = if deep {
                f.store.verify_deep(None, None).await
            } else {
                f.store.verify(None, None).await
            }
            .expect("a report");
            assert!(
                !report.ok && report.first_bad_position == Some(2),
                "{bad:?}: {report:?}"
            );
        }
    }
}

/// A page of more than 256 personal parts is opened on two threads: each event still
/// gets its own part, in order, and a forgotten subject's parts read as erased.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_page_opens_every_part_as_its_own_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("annal.db"));
    let events: Vec<_> = (0..600)
        .map(|i| {
            let mut e = ev("Paid", "{}");
            e.personal = Some(RawJson::parse(format!(r#"{{"n":{i}}}"#)).expect("json"));
            e.subjects = vec![format!("family_{}", i % 7)];
            e
        })
        .collect();
    store
        .append(req("Family", "family_all", ExpectedVersion::Any, events))
        .await
        .expect("append");
    store
        .forget_subject(annal_core::privacy::ForgetRequest {
            subject: "family_3".into(),
            reason: "a test".into(),
            user_id: None,
            principal: None,
        })
        .await
        .expect("forget");
    let read = store
        .read_all(0, 600, &Filter::default())
        .await
        .expect("read");
    assert_eq!(read.len(), 600);
    for (i, e) in read.iter().enumerate() {
        let expected = if i % 7 == 3 {
            annal_core::privacy::ERASED.to_owned()
        } else {
            format!(r#"{{"n":{i}}}"#)
        };
        assert_eq!(
            e.personal.as_ref().map(RawJson::get),
            Some(expected.as_str())
        );
        assert_eq!(e.subjects, vec![format!("family_{}", i % 7)]);
    }
    assert!(store.verify(None, None).await.expect("verify").ok);
}
