//! The key-table rows and unwrapped data keys a writer's groups read or wrote, kept
//! from one group commit to the next.
//!
//! A group reads the key-table row of every subject its personal parts name, and unwraps
//! each subject's data key. Under a steady load the same subjects come back group after
//! group, and reading their rows again (one query per transaction) and looking their
//! keys up again were about 14% of the writer's own work on personal events. A
//! backend whose writer knows that nobody else changed the key table since its last
//! group (SQLite: the connection's `data_version` is unchanged, and only its own writer
//! commits through that connection) hands the cache of the last group to the next one
//! ([`crate::commit::Group::with_cache`]).
//!
//! Invariants:
//! - it holds only rows as the key table holds them once the group that read or wrote
//!   them commits: a backend keeps it only after that commit succeeded, and drops it
//!   when the commit failed or when anything else may have written the key table since
//!   ([`KeyCache::default`] starts empty);
//! - a data key is kept only beside the row it was unwrapped from, and a forgotten
//!   subject's row (no wrapped key) keeps no data key;
//! - at most [`MAX_CACHED_SUBJECTS`] subjects are kept: past that the cache starts again empty
//!   (a backend's next read fills it again), so its memory is bounded.

use crate::privacy::{DataKey, SubjectKey};
use std::collections::HashMap;

/// The most subjects a cache keeps (the store's cache of unwrapped keys holds as many).
pub const MAX_CACHED_SUBJECTS: usize = crate::privacy::CACHE_CAPACITY;

/// Key-table rows (`None`: the subject has no row) and unwrapped data keys, by subject.
#[derive(Debug, Default)]
pub struct KeyCache {
    pub(super) rows: HashMap<String, Option<SubjectKey>>,
    pub(super) data_keys: HashMap<String, DataKey>,
}

impl KeyCache {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The cache for the next group: this one, or an empty one once it holds more than
    /// [`MAX_CACHED_SUBJECTS`] subjects.
    pub fn bounded(self) -> Self {
        if self.rows.len() > MAX_CACHED_SUBJECTS {
            Self::default()
        } else {
            self
        }
    }
}
