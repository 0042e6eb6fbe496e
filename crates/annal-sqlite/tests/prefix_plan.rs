//! How the SQLite store applies an aggregate id prefix (`annal_sqlite::filter`): a
//! prefix covering few events is read through the id index, one covering many
//! aggregates by walking positions; both read what `Filter::matches` says, in order,
//! and count the same.

use annal_core::testkit::fixtures::{all, ev, req};
use annal_core::{ExpectedVersion, Filter, Store, Transaction};
use annal_sqlite::SqliteStore;
use annal_sqlite::filter::{PrefixPlan, prefix_plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_prefix_walks_positions_and_a_narrow_one_uses_the_id_index_with_the_same_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("annal.db");
    let store = SqliteStore::open(&path).expect("open");
    // 2,100 aggregates under "bulk-" (more than the estimate reads), a few others.
    for batch in 0..21 {
        let appends = (0..100)
            .map(|i| {
                req(
                    "Bulk",
                    &format!("bulk-{}", batch * 100 + i),
                    ExpectedVersion::NoStream,
                    vec![ev(if i % 2 == 0 { "Even" } else { "Odd" }, "{}")],
                )
            })
            .collect();
        store
            .transact(Transaction {
                appends,
                checkpoint: None,
            })
            .await
            .expect("batch");
    }
    for id in ["bulk", "bulky-1", "other-1"] {
        store
            .append(req("Bulk", id, ExpectedVersion::Any, vec![ev("Odd", "{}")]))
            .await
            .expect("append");
    }
    let conn = rusqlite::Connection::open(&path).expect("open beside the store");
    let prefix = |p: &str| Filter {
        aggregate_id_prefix: Some(p.to_owned()),
        ..Filter::default()
    };
    assert_eq!(
        prefix_plan(&conn, &prefix("bulk-")).expect("plan"),
        PrefixPlan::ByScan
    );
    assert_eq!(
        prefix_plan(&conn, &prefix("bulk-20")).expect("plan"),
        PrefixPlan::ByIndex
    );
    assert_eq!(
        prefix_plan(&conn, &Filter::default()).expect("plan"),
        PrefixPlan::None
    );
    let everything = all(&store).await;
    for f in [
        prefix("bulk-"),
        prefix("bulk-20"),
        prefix("bulk"),
        Filter {
            event_types: vec!["Odd".into()],
            ..prefix("bulk-1")
        },
        Filter {
            event_types: vec!["Odd".into()],
            ..prefix("bulk-")
        },
    ] {
        let want: Vec<u64> = everything
            .iter()
            .filter(|e| f.matches(e))
            .map(|e| e.position)
            .collect();
        let mut got = Vec::new();
        let mut after = 0;
        loop {
            let page = store.read_all(after, 500, &f).await.expect("read");
            let Some(last) = page.last() else { break };
            after = last.position;
            got.extend(page.iter().map(|e| e.position));
        }
        assert_eq!(got, want, "{f:?}");
        let counts = store.count_by_type(0, None, &f).await.expect("count");
        assert_eq!(counts.total, want.len() as u64, "{f:?}");
    }
}
