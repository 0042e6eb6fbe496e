//! The whole conformance suite, and the subscription suite (subscriptions,
//! projections, triggers, consumer groups), against PostgreSQL, one fresh schema per
//! test (skipped, with a notice, when `ANNAL_TEST_POSTGRES_URL` is not set).

mod common;

use annal_core::testkit::{Harness, streams};
use annal_postgres::PgStore;
use async_trait::async_trait;

struct Pg {
    store: PgStore,
    url: String,
    schema: String,
    _guard: common::SchemaGuard,
}

async fn fresh() -> Pg {
    let schema = common::fresh_schema();
    let url = common::store_url(&schema);
    let guard = common::SchemaGuard(schema.clone());
    let store = PgStore::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot open a store on the test server: {e}"));
    Pg {
        store,
        url,
        schema,
        _guard: guard,
    }
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
        self.store = PgStore::connect(&self.url).await.expect("reopen");
    }
}

annal_core::conformance_suite!(fresh, skip_unless = common::available);

mod subscriptions {
    use super::{common, fresh};
    annal_core::subscription_suite!(fresh, skip_unless = common::available);
}

mod stream_rules {
    use super::{common, fresh};
    annal_core::stream_suite!(fresh, skip_unless = common::available);
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
        "DROP TABLE \"{s}\".streams; DELETE FROM \"{s}\".schema_version WHERE version > 2"
    ))
    .await
    .expect("back to version 2");
    let store = PgStore::connect(&h.url).await.expect("migrate");
    streams::check_migrated(&store, &names, kept).await;
}
