//! The key table (`subject_keys`) and the subject index (`event_subjects`) of the
//! PostgreSQL store: what personal data needs from the database (docs/privacy.md).
//!
//! Invariants:
//! - rows change only in a transaction holding the `head` row lock: the writer's group
//!   commit (new keys, forgetting) or a KEK rotation, so key creation and destruction
//!   are serialised with every append, from every process;
//! - forgetting sets `wrapped_key` to NULL; the old row version stays in the table's
//!   pages until VACUUM reclaims it (docs/privacy.md says what an operator runs);
//! - personal parts are encrypted, so `data_json` never holds them: jsonb queries can
//!   reach `data` and `metadata` only.

use crate::rows::{self, PgTime, clamp, micros_to_timestamptz};
use annal_core::commit::Writes;
use annal_core::privacy::{SubjectInfo, SubjectKey};
use annal_core::{Result, stored};
use tokio_postgres::Row;

/// The columns [`key_from_row`] reads, in order.
pub const KEY_COLUMNS: &str =
    "subject, key_id, kek_id, wrapped_key, created_at, forgotten_at, forgotten_position";

/// Reads one key-table row selected with [`KEY_COLUMNS`].
pub fn key_from_row(r: &Row) -> Result<SubjectKey> {
    let position: Option<i64> = rows::get(r, 6)?;
    Ok(SubjectKey {
        subject: rows::get(r, 0)?,
        key_id: rows::get(r, 1)?,
        kek_id: rows::get(r, 2)?,
        wrapped: rows::get(r, 3)?,
        created_at: rows::get::<PgTime>(r, 4)?.0,
        forgotten_at: rows::get::<Option<PgTime>>(r, 5)?.map(|t| t.0),
        forgotten_position: position
            .map(|p| stored::number("subject_keys.forgotten_position", p))
            .transpose()?,
    })
}

/// The statements of one schema (`s` already quoted).
pub struct KeySql {
    /// Rows of the subjects `$1`.
    pub by_subject: String,
    /// The KEK id one row names (all name the same: a rotation rewraps every row).
    pub kek_in_use: String,
    /// Insert or replace rows.
    pub upsert: String,
    /// Index events by subject.
    pub index: String,
    /// Delete the snapshots of the aggregates with events about the subjects `$1`.
    pub drop_snapshots: String,
}

impl KeySql {
    /// The statements for the quoted schema `s`.
    pub fn new(s: &str) -> Self {
        Self {
            by_subject: format!(
                "SELECT {KEY_COLUMNS} FROM {s}.subject_keys WHERE subject = ANY($1::text[])"
            ),
            kek_in_use: format!("SELECT kek_id FROM {s}.subject_keys LIMIT 1"),
            upsert: format!(
                "INSERT INTO {s}.subject_keys (subject, key_id, kek_id, wrapped_key, created_at,
                   forgotten_at, forgotten_position)
                 SELECT su, k, kk, w, {}, CASE WHEN fa IS NULL THEN NULL ELSE {} END, fp
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                   $6::bigint[], $7::bigint[]) AS t(su, k, kk, w, ca, fa, fp)
                 ON CONFLICT (subject) DO UPDATE SET key_id = excluded.key_id,
                   kek_id = excluded.kek_id, wrapped_key = excluded.wrapped_key,
                   created_at = excluded.created_at, forgotten_at = excluded.forgotten_at,
                   forgotten_position = excluded.forgotten_position",
                micros_to_timestamptz("ca"),
                micros_to_timestamptz("fa")
            ),
            index: format!(
                "INSERT INTO {s}.event_subjects (subject, position)
                 SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING"
            ),
            drop_snapshots: format!(
                "DELETE FROM {s}.snapshots WHERE aggregate_id IN (
                   SELECT DISTINCT e.aggregate_id FROM {s}.event_subjects x
                   JOIN {s}.events e ON e.position = x.position
                   WHERE x.subject = ANY($1::text[]))"
            ),
        }
    }
}

/// A group's key rows as column arrays.
pub struct KeyColumns<'a> {
    pub subject: Vec<&'a str>,
    pub key_id: Vec<&'a str>,
    pub kek_id: Vec<&'a str>,
    pub wrapped: Vec<Option<&'a str>>,
    pub created_at: Vec<i64>,
    pub forgotten_at: Vec<Option<i64>>,
    pub forgotten_position: Vec<Option<i64>>,
    /// The events' subjects: (subject, position) pairs.
    pub index_subject: Vec<&'a str>,
    pub index_position: Vec<i64>,
    /// The subjects forgotten.
    pub forgotten: Vec<&'a str>,
}

impl<'a> KeyColumns<'a> {
    /// Key rows alone as column arrays (no events to index, nobody forgotten).
    pub fn of_rows(rows: &'a [SubjectKey]) -> Self {
        let mut c = Self::empty(Vec::new());
        c.push_rows(rows);
        c
    }

    fn empty(forgotten: Vec<&'a str>) -> Self {
        KeyColumns {
            subject: Vec::new(),
            key_id: Vec::new(),
            kek_id: Vec::new(),
            wrapped: Vec::new(),
            created_at: Vec::new(),
            forgotten_at: Vec::new(),
            forgotten_position: Vec::new(),
            index_subject: Vec::new(),
            index_position: Vec::new(),
            forgotten,
        }
    }

    fn push_rows(&mut self, rows: &'a [SubjectKey]) {
        let c = self;
        for k in rows {
            c.subject.push(&k.subject);
            c.key_id.push(&k.key_id);
            c.kek_id.push(&k.kek_id);
            c.wrapped.push(k.wrapped.as_deref());
            c.created_at.push(k.created_at.as_micros());
            c.forgotten_at.push(k.forgotten_at.map(|t| t.as_micros()));
            c.forgotten_position.push(k.forgotten_position.map(clamp));
        }
    }
}

impl<'a> From<&'a Writes> for KeyColumns<'a> {
    fn from(w: &'a Writes) -> Self {
        let mut c = KeyColumns::empty(w.forgotten.iter().map(String::as_str).collect());
        c.push_rows(&w.keys);
        for e in &w.events {
            for s in &e.subjects {
                c.index_subject.push(s);
                c.index_position.push(clamp(e.position));
            }
        }
        c
    }
}

/// Subjects as listed.
pub fn infos(found: &[Row]) -> Result<Vec<SubjectInfo>> {
    found
        .iter()
        .map(|r| key_from_row(r).map(|k| SubjectInfo::from(&k)))
        .collect()
}

/// Key rows rewrapped per statement by a rotation.
const REWRAP_BATCH: usize = 5_000;

impl crate::PgStore {
    /// Rewraps every live data key from the current KEK of `keys` to `new` in one
    /// transaction holding the head lock (so no commit makes or destroys a key
    /// meanwhile), and makes forgotten rows name `new`; answers how many keys were
    /// rewrapped.
    ///
    /// `new` becomes the KEK of `keys` while the transaction still holds the head lock,
    /// so this process's next commit, which waits for that lock, wraps new keys with
    /// it. If the commit fails, the KEK the key table names afterwards (read again:
    /// a failed COMMIT may still have committed) is the one kept.
    pub(crate) async fn rotate(
        &self,
        keys: &annal_core::privacy::Keys,
        new: annal_core::privacy::Keyring,
    ) -> Result<u64> {
        let ctx = "rotating the key-encryption key";
        let q = &self.inner.quoted;
        let mut client = self.key_table_client(ctx).await?;
        let fail = |e| crate::StorageFailure::new(ctx, e);
        let tx = client.transaction().await.map_err(fail)?;
        lock_head(&tx, q).await.map_err(fail)?;
        let old = keys.current();
        let live = tx
            .query(&format!("SELECT {KEY_COLUMNS} FROM {q}.subject_keys"), &[])
            .await
            .map_err(fail)?;
        keys.check_rotation(&new, live.len())?;
        // Rows go back in batches (one statement per batch, not per key): appends wait
        // for the head lock this transaction holds, so its round trips are their wait.
        let update = format!(
            "UPDATE {q}.subject_keys AS k SET kek_id = u.kek_id, wrapped_key = u.wrapped_key
             FROM unnest($1::text[], $2::text[], $3::text[]) AS u (subject, kek_id, wrapped_key)
             WHERE k.subject = u.subject"
        );
        let mut rewrapped = 0;
        for batch in live.chunks(REWRAP_BATCH) {
            let mut subjects = Vec::with_capacity(batch.len());
            let mut kek_ids = Vec::with_capacity(batch.len());
            let mut wrapped = Vec::with_capacity(batch.len());
            for r in batch {
                let row = key_from_row(r)?;
                rewrapped += u64::from(row.wrapped.is_some());
                let moved = old.rewrap(&row, &new)?;
                subjects.push(moved.subject);
                kek_ids.push(moved.kek_id);
                wrapped.push(moved.wrapped);
            }
            tx.execute(&update, &[&subjects, &kek_ids, &wrapped])
                .await
                .map_err(fail)?;
        }
        let new = std::sync::Arc::new(new);
        let previous = keys.install(new.clone());
        if let Err(e) = tx.commit().await {
            drop(client);
            let named = match self.inner.pool.get().await {
                Ok(c) => kek_ids(&c, q).await.ok(),
                Err(_) => None,
            };
            if named.as_deref() != Some(&[new.id().to_owned()][..]) {
                keys.restore(previous);
            }
            return Err(fail(e).into());
        }
        Ok(rewrapped)
    }
}

impl crate::PgStore {
    /// Adds key rows read from another store (`annal copy`) in one transaction holding
    /// the head lock, so ordered with every commit: refused, with nothing written, when
    /// a row does not fit this store's KEK (`Keys::check_imported`) or its subject has a
    /// row here already.
    pub(crate) async fn import_keys(
        &self,
        keys: &annal_core::privacy::Keys,
        rows: &[SubjectKey],
    ) -> Result<u64> {
        keys.check_imported(rows)?;
        let ctx = "copying key rows";
        let q = &self.inner.quoted;
        let sql = KeySql::new(q);
        let mut client = self.key_table_client(ctx).await?;
        let fail = |e| crate::StorageFailure::new(ctx, e);
        let tx = client.transaction().await.map_err(fail)?;
        lock_head(&tx, q).await.map_err(fail)?;
        let subjects: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
        if let Some(there) = tx
            .query(&sql.by_subject, &[&subjects])
            .await
            .map_err(fail)?
            .first()
        {
            return Err(annal_core::privacy::imported_key_exists(
                &key_from_row(there)?.subject,
            ));
        }
        let c = KeyColumns::of_rows(rows);
        tx.execute(
            &sql.upsert,
            &[
                &c.subject,
                &c.key_id,
                &c.kek_id,
                &c.wrapped,
                &c.created_at,
                &c.forgotten_at,
                &c.forgotten_position,
            ],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(rows.len() as u64)
    }
}

impl crate::PgStore {
    /// A pooled connection for a transaction that changes the key table outside the
    /// writer (a rotation, an import), which takes the head lock first ([`lock_head`]);
    /// `ctx` names the work in errors.
    async fn key_table_client(&self, ctx: &str) -> Result<deadpool_postgres::Object> {
        Ok(self
            .inner
            .pool
            .get()
            .await
            .map_err(|e| crate::pool_failure(ctx, e))?)
    }
}

/// Locks the head row in `tx` (schema `q`, quoted), as every commit does first: the
/// transaction is then ordered with every commit, from every process.
async fn lock_head(
    tx: &tokio_postgres::Transaction<'_>,
    q: &str,
) -> std::result::Result<(), tokio_postgres::Error> {
    tx.query_one(&format!("SELECT position FROM {q}.head FOR UPDATE"), &[])
        .await
        .map(drop)
}

/// The ids of the KEKs a schema's key table names (forgotten rows too).
pub async fn kek_ids(
    client: &tokio_postgres::Client,
    quoted: &str,
) -> std::result::Result<Vec<String>, tokio_postgres::Error> {
    let found = client
        .query(
            &format!("SELECT DISTINCT kek_id FROM {quoted}.subject_keys ORDER BY kek_id"),
            &[],
        )
        .await?;
    found.iter().map(|r| r.try_get(0)).collect()
}
