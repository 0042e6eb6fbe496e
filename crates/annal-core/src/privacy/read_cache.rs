//! Data keys kept for reads from one page to the next while the key table is unchanged.
//!
//! A read opens a page's personal parts with the data keys that the key-table rows of
//! the page's key ids hold, read after the page's events. Reading those rows again for
//! every page (one query naming every key the page uses) was about 7% of a personal
//! read. A backend that marks the changes to its key table (SQLite: `key_changes`, set
//! to a new random value by triggers on every update, deletion and replacement of a
//! row, in the transaction that makes it) reads that mark, the "counter" here, with the
//! page's events (in the same snapshot, or after it) and asks [`Keys::keys_for_read`],
//! which reads rows only for the key ids it does not hold. A counter value must never
//! come back with other rows behind it.
//!
//! Invariants:
//! - an entry is served only to a read whose counter, read in the same snapshot as its
//!   events (or after them), is the one the entry was kept under
//!   ([`Keys::keys_for_read`], and `Keys::kept_keys` for a reader opening a page in
//!   parts on another thread): a forgetting or rotation committed before those events
//!   were read changed the counter, so no key kept from before it is served;
//! - an entry is kept only from rows read after the counter they are kept under (never
//!   older than it), and only while no read has moved the cache to another counter;
//! - a key id whose row was not found is never kept (it is read again every time);
//! - forgetting and rotating in this process drop entries too (a read already under way
//!   on an older snapshot may keep one again, which the next change of the counter
//!   drops), and at most [`super::CACHE_CAPACITY`] entries are kept (past that it
//!   starts again empty).

use super::kek::{DataKey, SubjectKey};
use super::keys::Keys;
use crate::error::Result;
use std::collections::HashMap;
use std::sync::PoisonError;

/// The data keys kept for reads, and the key table's change counter they were read under.
#[derive(Default)]
pub(super) struct ReadCache {
    pub(super) counter: Option<i64>,
    pub(super) keys: HashMap<String, Option<DataKey>>,
}

impl Keys {
    /// The data keys of `ids` for a read that read the key table's change counter
    /// `counter` in its events' snapshot: the ones kept under that counter, and for the
    /// others what `fetch` reads of their rows (unwrapped as [`Keys::data_keys`] does;
    /// `None` for a forgotten key; ids without a row are left out), kept for later reads
    /// under `counter`.
    pub fn keys_for_read(
        &self,
        counter: i64,
        ids: &[String],
        fetch: impl FnOnce(&[String]) -> Result<Vec<SubjectKey>>,
    ) -> Result<HashMap<String, Option<DataKey>>> {
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let mut cache = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.counter != Some(counter) {
                cache.keys.clear();
                cache.counter = Some(counter);
            }
            for id in ids {
                match cache.keys.get(id) {
                    Some(key) => {
                        found.insert(id.clone(), key.clone());
                    }
                    None => missing.push(id.clone()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let fetched = self.data_keys(&fetch(&missing)?)?;
        {
            let mut cache = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.counter == Some(counter) {
                if cache.keys.len() + fetched.len() > super::CACHE_CAPACITY {
                    cache.keys.clear();
                }
                for (id, key) in fetched.iter().take(super::CACHE_CAPACITY) {
                    cache.keys.insert(id.clone(), key.clone());
                }
            }
        }
        found.extend(fetched);
        Ok(found)
    }

    /// The data keys of `ids`, in order, kept for reads under `counter` (`None` for a
    /// forgotten one), or `None` when one of them is not kept (or the cache was kept
    /// under another counter): a reader without its connection at hand then falls back
    /// to [`Keys::keys_for_read`]. One lock, nothing allocated but the answer.
    pub(super) fn kept_keys<'a>(
        &self,
        counter: i64,
        ids: impl Iterator<Item = &'a str>,
    ) -> Option<Vec<Option<[u8; 32]>>> {
        let cache = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.counter != Some(counter) {
            return None;
        }
        ids.map(|id| cache.keys.get(id).map(|key| key.as_ref().map(|k| k.key)))
            .collect()
    }

    /// Drops every data key kept for reads (a rotation or restore in this process).
    pub(super) fn clear_reads(&self) {
        let mut cache = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        cache.keys.clear();
        cache.counter = None;
    }

    /// Drops one data key kept for reads (its subject was forgotten in this process).
    pub(super) fn forget_for_reads(&self, key_id: &str) {
        self.reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .remove(key_id);
    }
}
