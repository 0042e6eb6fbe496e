//! A store's keys at run time: its key-encryption key (KEK) and a bounded cache of
//! unwrapped data keys, shared by its writer and its readers.
//!
//! Invariants:
//! - a cached data key is only ever served against its key-table row as read by the
//!   caller, in the read or the commit that needs it: the row must still hold the very
//!   wrapped key the cached one was unwrapped from. A row whose wrapped key is gone (the
//!   subject was forgotten, by this process or any other) evicts the cached key and
//!   opens nothing. This cache saves the unwrapping, never the reading of the row. (Two
//!   other caches do save that reading, each with a check of its own that the key
//!   table did not change: the keys a writer keeps from group to group,
//!   [`crate::commit::KeyCache`], and the keys readers keep from page to page,
//!   [`super::read_cache`].);
//! - new data keys are wrapped by [`Keys::current`], which the writer reads inside its
//!   commit; a KEK rotation swaps it while it holds the store's write lock, before its
//!   own commit ([`Keys::install`], undone by [`Keys::restore`] if that commit fails), so
//!   every commit of this process wraps with the KEK its key table names;
//! - a KEK replaced by a rotation in this process is kept, to unwrap only, for reads
//!   whose snapshot of the key table predates the rotation; it never wraps again;
//! - at most [`CACHE_CAPACITY`] data keys are cached here, and as many again for reads;
//!   forgetting in this process and rotating evict from both at once (the checks above
//!   are what make them safe; the eviction keeps a forgotten key out of memory).

use super::kek::{DataKey, Keyring, SubjectKey};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// The refusal of an imported key row ([`Keys::check_imported`]) whose subject has a
/// row in the store already.
pub fn imported_key_exists(subject: &str) -> Error {
    Error::invalid(
        "keys",
        format!(
            "subject '{subject}' has a data key in this store already: key rows are copied \
             only into a store that has none of theirs (annal copy fills an empty store)"
        ),
    )
}

/// The keys of a store that must have been opened with a KEK for what it is asked
/// (`to`: what to open it with, for the message), or `invalid_request` naming `kek`.
pub fn opened_with_kek(keys: Option<Arc<Keys>>, to: &str) -> Result<Arc<Keys>> {
    keys.ok_or_else(|| {
        Error::invalid(
            "kek",
            format!("the store was opened without a key-encryption key: open it with {to}"),
        )
    })
}

/// Why a process cannot serve the store's personal data, given the KEK id one row of
/// the key table names (`in_use`, `None`: no rows) and the process's keys (`keys`,
/// `None`: it has no KEK): the message of [`super::kek_rotated`], or of a process
/// started without a KEK on a store that holds keys now; `None` when nothing is wrong.
/// What a readiness check reports (the reads and appends that meet it answer
/// `unavailable`).
pub fn kek_problem(in_use: Option<&str>, keys: Option<&Keys>) -> Option<String> {
    let stored = in_use?;
    match keys.map(Keys::current) {
        Some(given) if given.id() == stored => None,
        Some(given) => Some(super::kek_rotated(stored, given.id()).to_string()),
        None => Some(format!(
            "this process has no key-encryption key, and the store holds personal data whose \
             keys the key with id {stored} wraps: restart it with that key (ANNAL_KEK_FILE \
             or ANNAL_KEK)"
        )),
    }
}

/// The most unwrapped data keys each of a store's caches keeps in memory.
pub const CACHE_CAPACITY: usize = 16_384;

struct Cached {
    kek_id: String,
    wrapped: String,
    key: DataKey,
}

struct Keks {
    current: Arc<Keyring>,
    /// KEKs this process rotated away from, newest last (unwrap only).
    retired: Vec<Arc<Keyring>>,
}

/// A store's KEK and its cache of unwrapped data keys.
pub struct Keys {
    keks: RwLock<Keks>,
    cache: Mutex<HashMap<String, Cached>>,
    /// Data keys kept for reads while the key table is unchanged ([`super::read_cache`]).
    pub(super) reads: Mutex<super::read_cache::ReadCache>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("kek_id", &self.current().id())
            .finish()
    }
}

/// Two handles are equal when they are the same store's keys.
impl PartialEq for Keys {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Keys {
    /// The keys of a store opened with `kek`.
    pub fn new(kek: Keyring) -> Self {
        Self {
            keks: RwLock::new(Keks {
                current: Arc::new(kek),
                retired: Vec::new(),
            }),
            cache: Mutex::new(HashMap::new()),
            reads: Mutex::default(),
        }
    }

    /// The KEK new data keys are wrapped with.
    pub fn current(&self) -> Arc<Keyring> {
        self.keks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .current
            .clone()
    }

    /// Refuses a rotation that would change nothing, asked under the lock the rotation
    /// holds, with the `rows` of the key table it read there: to the KEK already in use
    /// (it would rewrap every key while whoever asked believes the old one retired), or
    /// of an empty key table (no row would name the new KEK, so a process still holding
    /// the old one would make the first key under it, and the store would then open
    /// with the old KEK only).
    pub fn check_rotation(&self, new: &Keyring, rows: usize) -> Result<()> {
        if self.current().id() == new.id() {
            return Err(Error::invalid(
                "new_kek",
                format!(
                    "the new key-encryption key is the one the store uses already (id {}): \
                     nothing to rotate; give a new key (`openssl rand -hex 32`)",
                    new.id()
                ),
            ));
        }
        if rows == 0 {
            return Err(Error::invalid(
                "new_kek",
                "the store holds no data keys yet, so there is nothing to rewrap: give the \
                 new key-encryption key to every process using the store instead (restart \
                 them with it); the first personal data is then sealed under it",
            ));
        }
        Ok(())
    }

    /// Refuses key rows read from another store's key table (`annal copy`) that this
    /// store could not use as they are: a row wrapped by another KEK than this store's
    /// (the copy must be opened with the source's KEK), a live key that does not open
    /// with it, or a forgotten row that does not say when and where it was forgotten.
    pub fn check_imported(&self, rows: &[SubjectKey]) -> Result<()> {
        let kek = self.current();
        for row in rows {
            if row.kek_id != kek.id() {
                return Err(Error::invalid(
                    "kek",
                    format!(
                        "the data key of subject '{}' is wrapped by the key-encryption key \
                         with id {}, and this store's has id {}: open both stores with the \
                         same key (ANNAL_KEK_FILE or ANNAL_KEK)",
                        row.subject,
                        row.kek_id,
                        kek.id()
                    ),
                ));
            }
            match &row.wrapped {
                Some(_) => {
                    kek.unwrap(row)?;
                }
                None if row.forgotten_at.is_none() || row.forgotten_position.is_none() => {
                    return Err(Error::Corrupt(format!(
                        "the key-table row of subject '{}' has no key, but does not say when \
                         or at which position it was forgotten",
                        row.subject
                    )));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// The KEK that wrapped `row`: the current one, or one this process rotated away
    /// from; otherwise the current one (whose unwrap then names both ids).
    fn kek_for(&self, row: &SubjectKey) -> Arc<Keyring> {
        let keks = self.keks.read().unwrap_or_else(PoisonError::into_inner);
        if keks.current.id() == row.kek_id {
            return keks.current.clone();
        }
        keks.retired
            .iter()
            .rev()
            .find(|k| k.id() == row.kek_id)
            .unwrap_or(&keks.current)
            .clone()
    }

    /// The data key `row` wraps, from the cache when it holds that very wrapped key;
    /// `None` (and evicted) once the subject was forgotten. A row that does not unwrap
    /// is [`crate::Error::Corrupt`].
    pub fn data_key(&self, row: &SubjectKey) -> Result<Option<DataKey>> {
        let mut found = self.data_keys(std::slice::from_ref(row))?;
        Ok(found.remove(&row.key_id).flatten())
    }

    /// The data keys of `rows`, by key id ([`Keys::data_key`] for each, under one lock).
    pub fn data_keys(&self, rows: &[SubjectKey]) -> Result<HashMap<String, Option<DataKey>>> {
        let mut out = HashMap::with_capacity(rows.len());
        let mut missing = Vec::new();
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            for row in rows {
                let Some(wrapped) = &row.wrapped else {
                    cache.remove(&row.key_id);
                    out.insert(row.key_id.clone(), None);
                    continue;
                };
                match cache.get(&row.key_id) {
                    Some(c) if c.wrapped == *wrapped && c.kek_id == row.kek_id => {
                        out.insert(row.key_id.clone(), Some(c.key.clone()));
                    }
                    _ => missing.push(row),
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        // Unwrap outside the lock: other readers go on meanwhile.
        let mut unwrapped = Vec::with_capacity(missing.len());
        for row in missing {
            let key = self.kek_for(row).unwrap(row)?;
            if let (Some(key), Some(wrapped)) = (&key, &row.wrapped) {
                unwrapped.push(Cached {
                    kek_id: row.kek_id.clone(),
                    wrapped: wrapped.clone(),
                    key: key.clone(),
                });
            }
            out.insert(row.key_id.clone(), key);
        }
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        for c in unwrapped {
            remember(&mut cache, c);
        }
        Ok(out)
    }

    /// Caches a data key the writer just made for `row`.
    pub fn remember(&self, row: &SubjectKey, key: &DataKey) {
        if let Some(wrapped) = &row.wrapped {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            remember(
                &mut cache,
                Cached {
                    kek_id: row.kek_id.clone(),
                    wrapped: wrapped.clone(),
                    key: key.clone(),
                },
            );
        }
    }

    /// Evicts a data key whose subject was forgotten.
    pub fn forgotten(&self, key_id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key_id);
        self.forget_for_reads(key_id);
    }

    /// Makes `new` the KEK new data keys are wrapped with, keeping the old one to unwrap
    /// only, and empties the cache; answers the old one. A rotation calls this while it
    /// holds the store's write lock, before it commits.
    pub fn install(&self, new: Arc<Keyring>) -> Arc<Keyring> {
        let old = {
            let mut keks = self.keks.write().unwrap_or_else(PoisonError::into_inner);
            let old = std::mem::replace(&mut keks.current, new);
            keks.retired.retain(|k| k.id() != old.id());
            keks.retired.push(old.clone());
            old
        };
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.clear_reads();
        old
    }

    /// Undoes [`Keys::install`] after the rotation's commit failed.
    pub fn restore(&self, old: Arc<Keyring>) {
        let mut keks = self.keks.write().unwrap_or_else(PoisonError::into_inner);
        let failed = std::mem::replace(&mut keks.current, old.clone());
        keks.retired
            .retain(|k| k.id() != old.id() && k.id() != failed.id());
        drop(keks);
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.clear_reads();
    }
}

fn remember(cache: &mut HashMap<String, Cached>, c: Cached) {
    if cache.len() >= CACHE_CAPACITY
        && !cache.contains_key(&*c.key.key_id)
        && let Some(evicted) = cache.keys().next().cloned()
    {
        cache.remove(&evicted);
    }
    cache.insert(c.key.key_id.to_string(), c);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Timestamp;

    fn kek(b: u8) -> Keyring {
        Keyring::from_bytes([b; 32])
    }

    /// A new key row for `family_1` under `keys`' KEK.
    fn new_row(keys: &Keys) -> SubjectKey {
        keys.current()
            .new_key("family_1", Timestamp::now())
            .expect("key")
            .1
    }

    #[test]
    fn imported_rows_are_taken_only_when_this_stores_kek_opens_them() {
        let keys = Keys::new(kek(1));
        let row = new_row(&keys);
        let forgotten = SubjectKey {
            subject: "family_2".into(),
            wrapped: None,
            forgotten_at: Some(Timestamp::now()),
            forgotten_position: Some(9),
            ..new_row(&keys)
        };
        keys.check_imported(&[row.clone(), forgotten.clone()])
            .expect("rows of this KEK, live and forgotten");
        let other = Keys::new(kek(2));
        let refused = other
            .check_imported(std::slice::from_ref(&row))
            .expect_err("another KEK");
        assert!(
            matches!(&refused, Error::InvalidRequest { field, .. } if field == "kek"),
            "{refused:?}"
        );
        let mut bad = row.clone();
        bad.wrapped = Some(new_row(&other).wrapped.expect("wrapped"));
        assert!(matches!(
            keys.check_imported(&[bad]),
            Err(Error::Corrupt(_))
        ));
        let no_time = SubjectKey {
            forgotten_at: None,
            ..forgotten.clone()
        };
        assert!(matches!(
            keys.check_imported(&[no_time]),
            Err(Error::Corrupt(_))
        ));
        let no_position = SubjectKey {
            forgotten_position: None,
            ..forgotten
        };
        assert!(matches!(
            keys.check_imported(&[no_position]),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn a_cached_key_is_not_served_once_its_row_lost_the_wrapped_key() {
        let keys = Keys::new(kek(1));
        let row = new_row(&keys);
        assert!(keys.data_key(&row).expect("unwrap").is_some());
        let forgotten = SubjectKey {
            wrapped: None,
            ..row.clone()
        };
        assert!(keys.data_key(&forgotten).expect("row").is_none());
        assert!(
            keys.cache.lock().expect("lock").is_empty(),
            "a forgotten row evicts its key"
        );
    }

    #[test]
    fn a_cached_key_is_served_only_for_the_wrapped_key_it_came_from() {
        let keys = Keys::new(kek(1));
        let row = new_row(&keys);
        assert!(keys.data_key(&row).expect("unwrap").is_some());
        // Another wrapped key under the same id (a tampered row): unwrapped afresh, and
        // refused, not answered from the cache.
        let other = new_row(&keys);
        let swapped = SubjectKey {
            wrapped: other.wrapped,
            ..row
        };
        assert!(keys.data_key(&swapped).is_err());
    }

    #[test]
    fn after_a_rotation_new_keys_use_the_new_kek_and_old_rows_still_open() {
        let keys = Keys::new(kek(1));
        let (_, old_row) = keys.current().new_key("a", Timestamp::now()).expect("key");
        let old = keys.install(Arc::new(kek(2)));
        assert_eq!(old.id(), kek(1).id());
        assert_eq!(keys.current().id(), kek(2).id());
        assert!(keys.data_key(&old_row).expect("retired KEK").is_some());
        let moved = kek(1).rewrap(&old_row, &kek(2)).expect("rewrap");
        assert!(keys.data_key(&moved).expect("new KEK").is_some());
        keys.restore(old);
        assert_eq!(keys.current().id(), kek(1).id());
        assert!(
            keys.data_key(&moved).is_err(),
            "kek 2 is gone after restore"
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let keys = Keys::new(kek(1));
        let k = keys.current();
        let mut cache = HashMap::new();
        for i in 0..CACHE_CAPACITY + 10 {
            let (key, row) = k.new_key(&format!("s{i}"), Timestamp::now()).expect("key");
            remember(
                &mut cache,
                Cached {
                    kek_id: row.kek_id,
                    wrapped: row.wrapped.unwrap_or_default(),
                    key,
                },
            );
        }
        assert_eq!(cache.len(), CACHE_CAPACITY);
    }
}
