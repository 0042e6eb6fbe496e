//! The PostgreSQL store's own consistency checks, for a deep verify: the head row
//! (which every commit locks and moves) against the log's last event, the read cap
//! (`crate::schema::read_cap`) never past the head, and the stream records against the
//! log they summarise.
//!
//! Invariants: read-only; every finding is a sentence naming what is wrong and where,
//! at most [`MOST`] of each kind. Page and index damage is PostgreSQL's to find
//! (`amcheck`, checksums); this checks what annal keeps beside its events.

use crate::PgStore;
use crate::rows::get;
use annal_core::Result;
use annal_core::stream_record::{check_queries, disagreement, missing_event};

/// Most findings of one kind reported.
pub const MOST: i64 = 20;

impl PgStore {
    /// What is wrong with the store's own tables, if anything.
    pub(crate) async fn problems(&self) -> Result<Vec<String>> {
        let s = &self.inner.quoted;
        let cap = crate::schema::read_cap(s);
        let mut found = Vec::new();
        let head = self
            .query(
                "checking the head row",
                &format!(
                    "SELECT h.position, h.hash, e.position, e.hash, {cap}
                     FROM {s}.head h
                     LEFT JOIN (SELECT position, hash FROM {s}.events
                                ORDER BY position DESC LIMIT 1) e ON true"
                ),
                &[],
            )
            .await?;
        match head.first() {
            None => found.push("the head row is missing".to_owned()),
            Some(r) => {
                let (head, hash): (i64, String) = (get(r, 0)?, get(r, 1)?);
                let (last, last_hash): (Option<i64>, Option<String>) = (get(r, 2)?, get(r, 3)?);
                // Readers trust the cap: one past the head would show the next commits
                // before they are durable.
                let cap: i64 = get(r, 4)?;
                if cap > head {
                    found.push(format!(
                        "the read cap (head.durable_position, the durable table) says \
                         position {cap}, past the head row's {head}"
                    ));
                }
                if head != last.unwrap_or(0) {
                    found.push(format!(
                        "the head row says position {head}, the last stored event is at {}",
                        last.unwrap_or(0)
                    ));
                } else if let Some(last_hash) = last_hash.filter(|h| *h != hash) {
                    found.push(format!(
                        "the head row's hash {hash} is not the last event's ({last_hash})"
                    ));
                }
            }
        }
        let [disagreeing, dangling] =
            check_queries(&format!("{s}.events"), &format!("{s}.streams"), MOST);
        for r in self
            .query("checking the stream records", &disagreeing, &[])
            .await?
        {
            found.push(disagreement(
                &get::<String>(&r, 0)?,
                get(&r, 1)?,
                get(&r, 2)?,
            ));
        }
        for r in self
            .query("checking the stream records", &dangling, &[])
            .await?
        {
            found.push(missing_event(&get::<String>(&r, 0)?, get(&r, 1)?));
        }
        Ok(found)
    }
}
