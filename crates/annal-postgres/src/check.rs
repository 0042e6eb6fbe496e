//! The PostgreSQL store's own consistency checks, for a deep verify: the head row
//! (which every commit locks and moves) against the log's last event, and the stream
//! records against the log they summarise.
//!
//! Invariants: read-only; every finding is a sentence naming what is wrong and where,
//! at most [`MOST`] of each kind. Page and index damage is PostgreSQL's to find
//! (`amcheck`, checksums); this checks what annal keeps beside its events.

use crate::PgStore;
use crate::rows::get;
use annal_core::Result;

/// Most findings of one kind reported.
pub const MOST: i64 = 20;

impl PgStore {
    /// What is wrong with the store's own tables, if anything.
    pub(crate) async fn problems(&self) -> Result<Vec<String>> {
        let s = &self.inner.quoted;
        let mut found = Vec::new();
        let head = self
            .query(
                "checking the head row",
                &format!(
                    "SELECT h.position, h.hash, e.position, e.hash
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
        let rows = self
            .query(
                "checking the stream records",
                &format!(
                    "SELECT m.aggregate_id, m.v, s.version
                     FROM (SELECT aggregate_id, max(aggregate_version) AS v FROM {s}.events
                           GROUP BY aggregate_id) m
                     LEFT JOIN {s}.streams s ON s.aggregate_id = m.aggregate_id
                     WHERE s.aggregate_id IS NULL OR s.version <> m.v
                     LIMIT {MOST}"
                ),
                &[],
            )
            .await?;
        for r in rows {
            let (id, last, recorded): (String, i64, Option<i64>) =
                (get(&r, 0)?, get(&r, 1)?, get(&r, 2)?);
            found.push(match recorded {
                None => format!("stream {id} has events up to version {last} but no stream record"),
                Some(v) => {
                    format!(
                        "stream {id}'s record says version {v}, its events end at version {last}"
                    )
                }
            });
        }
        let rows = self
            .query(
                "checking the stream records",
                &format!(
                    "SELECT s.aggregate_id, s.version FROM {s}.streams s
                     WHERE s.version > 0 AND NOT EXISTS (
                         SELECT 1 FROM {s}.events e
                         WHERE e.aggregate_id = s.aggregate_id
                           AND e.aggregate_version = s.version)
                     LIMIT {MOST}"
                ),
                &[],
            )
            .await?;
        for r in rows {
            let (id, v): (String, i64) = (get(&r, 0)?, get(&r, 1)?);
            found.push(format!(
                "stream {id}'s record says version {v}, but no such event is stored"
            ));
        }
        Ok(found)
    }
}
