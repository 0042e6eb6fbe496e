//! The whole conformance suite, and the subscription suite (subscriptions,
//! projections, triggers, consumer groups), against PostgreSQL, one fresh schema per
//! test (skipped, with a notice, when `ANNAL_TEST_POSTGRES_URL` is not set); and what
//! only this backend can show: a schema migrated from an old version, and values edited
//! into the tables by hand reported as corrupt.

mod common;

use annal_core::testkit::fixtures::{ev, req};
use annal_core::testkit::{Harness, streams};
use annal_core::{CheckpointWrite, ExpectedVersion, Filter, Store};
use annal_postgres::PgStore;
use async_trait::async_trait;

struct Pg {
    store: PgStore,
    url: String,
    schema: String,
    /// Whether the store reads through a read store (the same server).
    read_store: bool,
    _guard: common::SchemaGuard,
}

async fn fresh() -> Pg {
    fresh_reading(false).await
}

/// A fresh store, reading through a read store on the same server when `read_store`.
async fn fresh_reading(read_store: bool) -> Pg {
    let schema = common::fresh_schema();
    let url = common::store_url(&schema);
    let guard = common::SchemaGuard(schema.clone());
    let store = open(&url, read_store)
        .await
        .unwrap_or_else(|e| panic!("cannot open a store on the test server: {e}"));
    Pg {
        store,
        url,
        schema,
        read_store,
        _guard: guard,
    }
}

async fn open(url: &str, read_store: bool) -> Result<PgStore, annal_postgres::OpenError> {
    connect_reading(url, None, read_store).await
}

#[async_trait]
impl Harness for Pg {
    type Store = PgStore;

    fn store(&self) -> &PgStore {
        &self.store
    }

    async fn tamper_data(&self, position: u64, data: &str) {
        let c = common::admin().await;
        let s = &self.schema;
        c.batch_execute(&format!(
            "BEGIN; ALTER TABLE \"{s}\".events DISABLE TRIGGER events_are_immutable"
        ))
        .await
        .expect("disable the guard");
        let n = c
            .execute(
                &format!("UPDATE \"{s}\".events SET data = $1 WHERE position = $2"),
                &[&data, &(position as i64)],
            )
            .await
            .expect("edit");
        assert_eq!(n, 1);
        c.batch_execute(&format!(
            "ALTER TABLE \"{s}\".events ENABLE TRIGGER events_are_immutable; COMMIT"
        ))
        .await
        .expect("enable the guard");
    }

    async fn reopen(&mut self) {
        self.store = open(&self.url, self.read_store).await.expect("reopen");
    }
}

annal_core::conformance_suite!(fresh, skip_unless = common::available);

mod subscriptions {
    use super::{common, fresh};
    annal_core::subscription_suite!(fresh, skip_unless = common::available);
}

/// The same suites with every read the store sends to a read store going through it
/// (here the same server, which holds the same log): the reads' routing, capping,
/// hash checks and fallbacks keep every promise (docs/cluster.md#reads-from-a-standby).
mod through_a_read_store {
    use super::common;

    async fn fresh() -> super::Pg {
        super::fresh_reading(true).await
    }

    annal_core::conformance_suite!(fresh, skip_unless = common::available);

    mod stream_rules {
        use super::{common, fresh};
        annal_core::stream_suite!(fresh, skip_unless = common::available);
    }
}

mod stream_rules {
    use super::{common, fresh};
    annal_core::stream_suite!(fresh, skip_unless = common::available);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_principal_is_recorded_read_back_and_chained() {
    if !common::available() {
        return;
    }
    annal_core::testkit::append::a_principal_is_recorded_read_back_and_chained(fresh().await).await;
}

/// A version 2 schema (no stream records) is migrated when opened: each stream's record
/// is rebuilt from its events, equal to the one the writer kept, and the stream rules
/// hold on it at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_2_schema_gets_the_stream_records_the_writer_would_have_kept() {
    if !common::available() {
        return;
    }
    let h = fresh().await;
    let names = streams::populate_streams(&h.store).await;
    let kept = streams::records(&h.store, &names).await;
    let c = common::admin().await;
    let s = &h.schema;
    c.batch_execute(&format!(
        "DROP TABLE \"{s}\".streams; ALTER TABLE \"{s}\".events DROP COLUMN principal;
         ALTER TABLE \"{s}\".checkpoints DROP COLUMN source;
         ALTER TABLE \"{s}\".events DROP COLUMN sealed;
         DROP TABLE \"{s}\".subject_keys; DROP TABLE \"{s}\".event_subjects;
         DROP TABLE \"{s}\".nodes;
         DROP TABLE \"{s}\".durable; ALTER TABLE \"{s}\".head DROP COLUMN durable_position;
         DELETE FROM \"{s}\".schema_version WHERE version > 2"
    ))
    .await
    .expect("back to version 2");
    let store = PgStore::connect(&h.url).await.expect("migrate");
    streams::check_migrated(&store, &names, kept).await;
}

/// A version 5 schema (before personal data) holding events migrates to version 6 when
/// opened with a KEK: its events and their hashes are untouched and verify, and it then
/// takes personal data.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_5_schema_with_events_takes_personal_data_once_migrated() {
    if !common::available() {
        return;
    }
    let h = fresh().await;
    annal_core::testkit::fixtures::seed_family(&h.store, "family_1", 5).await;
    let before = annal_core::testkit::fixtures::all(&h.store).await;
    let c = common::admin().await;
    let s = &h.schema;
    c.batch_execute(&format!(
        "ALTER TABLE \"{s}\".events DROP COLUMN sealed;
         DROP TABLE \"{s}\".subject_keys; DROP TABLE \"{s}\".event_subjects;
         DROP TABLE \"{s}\".nodes;
         DROP TABLE \"{s}\".durable; ALTER TABLE \"{s}\".head DROP COLUMN durable_position;
         DELETE FROM \"{s}\".schema_version WHERE version > 5"
    ))
    .await
    .expect("back to version 5");
    let store = connect_with_kek(&h.url, Some(annal_core::testkit::privacy::kek()))
        .await
        .expect("migrate");
    assert_eq!(annal_core::testkit::fixtures::all(&store).await, before);
    annal_core::testkit::privacy::personal_data_round_trips_on(&store).await;
}

async fn connect_with_kek(
    url: &str,
    keyring: Option<annal_core::privacy::Keyring>,
) -> Result<PgStore, annal_postgres::OpenError> {
    connect_reading(url, keyring, false).await
}

/// Connects with `keyring`, reading through a read store on the same server when
/// `read_store`.
async fn connect_reading(
    url: &str,
    keyring: Option<annal_core::privacy::Keyring>,
    read_store: bool,
) -> Result<PgStore, annal_postgres::OpenError> {
    let config = annal_postgres::PgConfig::from_url(url)?;
    let options = annal_postgres::Options {
        keyring,
        read_store: read_store.then(|| annal_postgres::ReadStoreOptions::new(config.clone())),
        ..annal_postgres::Options::default()
    };
    PgStore::connect_with(config, options).await
}

async fn fresh_with_kek() -> Pg {
    fresh_with_kek_reading(false).await
}

/// A fresh store with a KEK, reading through a read store on the same server when
/// `read_store`.
async fn fresh_with_kek_reading(read_store: bool) -> Pg {
    let schema = common::fresh_schema();
    let url = common::store_url(&schema);
    let guard = common::SchemaGuard(schema.clone());
    let store = connect_reading(&url, Some(annal_core::testkit::privacy::kek()), read_store)
        .await
        .unwrap_or_else(|e| panic!("cannot open a store on the test server: {e}"));
    Pg {
        store,
        url,
        schema,
        read_store,
        _guard: guard,
    }
}

#[async_trait]
impl annal_core::testkit::privacy::PrivacyHarness for Pg {
    async fn reopen_with(
        &mut self,
        keyring: Option<annal_core::privacy::Keyring>,
    ) -> Result<(), String> {
        match connect_reading(&self.url, keyring, self.read_store).await {
            Ok(s) => {
                self.store = s;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn another_process(
        &self,
        keyring: annal_core::privacy::Keyring,
    ) -> Result<PgStore, String> {
        connect_reading(&self.url, Some(keyring), self.read_store)
            .await
            .map_err(|e| e.to_string())
    }

    async fn without_kek(&self) -> Result<PgStore, String> {
        let config = annal_postgres::PgConfig::from_url(&self.url).map_err(|e| e.to_string())?;
        let options = annal_postgres::Options {
            without_kek: true,
            read_store: self
                .read_store
                .then(|| annal_postgres::ReadStoreOptions::new(config.clone())),
            ..annal_postgres::Options::default()
        };
        PgStore::connect_with(config, options)
            .await
            .map_err(|e| e.to_string())
    }
}

mod personal_data {
    use super::{common, fresh_with_kek};
    annal_core::privacy_suite!(fresh_with_kek, skip_unless = common::available);

    /// Through a read store (the same server): events are read there, their keys on
    /// the primary.
    mod through_a_read_store {
        use super::common;

        async fn fresh_with_kek() -> super::super::Pg {
            super::super::fresh_with_kek_reading(true).await
        }

        annal_core::privacy_suite!(fresh_with_kek, skip_unless = common::available);
    }
}

/// Edits the schema behind the store's back (the events guard off for the statement).
async fn tamper(schema: &str, sql: &str) {
    let c = common::admin().await;
    let s = schema;
    c.batch_execute(&format!(
        "BEGIN; ALTER TABLE \"{s}\".events DISABLE TRIGGER events_are_immutable; {sql};
         ALTER TABLE \"{s}\".events ENABLE TRIGGER events_are_immutable; COMMIT"
    ))
    .await
    .expect("tamper");
}

fn corrupt_message<T: std::fmt::Debug>(r: annal_core::Result<T>) -> String {
    match r {
        Err(annal_core::Error::Corrupt(m)) => m,
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}

/// A negative version written into the tables by hand is reported as corrupt, naming
/// the column, by reads and by the writer: never wrapped into a huge version.
#[tokio::test(flavor = "multi_thread")]
async fn a_negative_version_edited_into_the_schema_is_reported_corrupt_not_wrapped() {
    if !common::available() {
        return;
    }
    let h = fresh().await;
    let two = vec![ev("Placed", "{}"), ev("Paid", "{}")];
    h.store
        .append(req("order", "order-1", ExpectedVersion::NoStream, two))
        .await
        .expect("append");
    let s = &h.schema;
    tamper(
        s,
        &format!(
            "UPDATE \"{s}\".events SET aggregate_version = -2 WHERE position = 2;
             UPDATE \"{s}\".streams SET version = -2 WHERE aggregate_id = 'order-1'"
        ),
    )
    .await;
    let read = corrupt_message(h.store.read_all(0, 10, &Filter::default()).await);
    assert!(read.contains("aggregate_version"), "{read}");
    let record = corrupt_message(h.store.stream("order-1").await);
    assert!(
        record.contains("streams.version") && record.contains("-2"),
        "{record}"
    );
    let more = vec![ev("Shipped", "{}")];
    let append = h
        .store
        .append(req("order", "order-1", ExpectedVersion::Any, more))
        .await;
    assert!(corrupt_message(append).contains("streams.version"));
}

/// A negative checkpoint position or lease token written into the tables by hand is
/// reported as corrupt, naming the column.
#[tokio::test(flavor = "multi_thread")]
async fn a_negative_checkpoint_position_or_lease_token_is_reported_corrupt_not_wrapped() {
    if !common::available() {
        return;
    }
    let h = fresh().await;
    h.store
        .put_checkpoint(CheckpointWrite::new("billing", 0))
        .await
        .expect("checkpoint");
    h.store
        .acquire_lease("g", 0, "m", std::time::Duration::from_secs(60))
        .await
        .expect("acquire")
        .expect("free");
    let s = &h.schema;
    tamper(
        s,
        &format!(
            "UPDATE \"{s}\".checkpoints SET position = -5 WHERE name = 'billing';
             UPDATE \"{s}\".leases SET token = -1"
        ),
    )
    .await;
    let checkpoint = corrupt_message(h.store.checkpoint("billing").await);
    assert!(checkpoint.contains("checkpoints.position") && checkpoint.contains("-5"));
    assert!(corrupt_message(h.store.leases("g").await).contains("leases.token"));
}

/// A deep verify checks what annal keeps beside the events: a head row that does not
/// match the last event, and stream records that disagree with the log, fail it; the
/// chain-only verify does not see either.
#[tokio::test(flavor = "multi_thread")]
async fn a_head_row_or_stream_records_out_of_step_with_the_log_fail_the_deep_verify() {
    if !common::available() {
        return;
    }
    let h = fresh().await;
    annal_core::testkit::fixtures::seed_family(&h.store, "family_1", 5).await;
    annal_core::testkit::fixtures::seed_family(&h.store, "family_2", 3).await;
    let intact = h.store.verify_deep(None, None).await.expect("deep");
    assert!(intact.ok && intact.storage.is_empty(), "{intact:?}");
    let c = common::admin().await;
    let s = &h.schema;
    c.batch_execute(&format!(
        "UPDATE \"{s}\".streams SET version = 9 WHERE aggregate_id = 'family_1';
         UPDATE \"{s}\".head SET position = 6"
    ))
    .await
    .expect("edit behind the store's back");
    let deep = h.store.verify_deep(None, None).await.expect("deep");
    assert!(!deep.ok, "{deep:?}");
    let said = deep.storage.join("\n");
    assert!(
        said.contains("the head row says position 6, the last stored event is at 8"),
        "{said}"
    );
    assert!(
        said.contains("stream family_1's record says version 9, its events end at version 5"),
        "{said}"
    );
    assert!(
        said.contains("stream family_1's record says version 9, but no such event is stored"),
        "{said}"
    );
    assert!(h.store.verify(None, None).await.expect("quick").ok);
}

/// A key table edited behind the store's back (a key that no longer opens, a key
/// removed with no forgetting recorded) fails the deep verify.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_table_edited_behind_the_stores_back_fails_the_deep_verify() {
    use annal_core::testkit::privacy;
    if !common::available() {
        return;
    }
    let h = fresh_with_kek().await;
    privacy::seed_for_key_table_check(&h.store).await;
    let c = common::admin().await;
    c.batch_execute(&format!("SET search_path TO \"{}\"", h.schema))
        .await
        .expect("schema");
    for edit in privacy::KEY_TABLE_EDITS {
        c.batch_execute(edit)
            .await
            .expect("edit behind the store's back");
    }
    privacy::edited_key_table_fails_the_deep_verify(&h.store).await;
}
