//! The key table against the log and the KEK, for a deep verify (`Store::check_storage`
//! of each backend): the chain covers the events, not the key table, so a row changed
//! behind the store's back, or a record of forgetting with no forgetting behind it,
//! would otherwise go unseen until a read fails on it.
//!
//! Invariants:
//! - read-only; every finding is a sentence naming the subject or the position, at most
//!   [`MOST`] of them (then one saying how many more);
//! - every forgotten row (no wrapped key) names the position of a `$subjectForgotten`
//!   event in `$subjects` for the same subject and key id, and every such event is
//!   named by its subject's forgotten row: a forgetting writes both in one commit, and
//!   nothing else writes either (`super::refuse_reserved`);
//! - every key id a sealed part in the log names has a row (a row deleted by hand would
//!   otherwise read as a forgetting that no record holds);
//! - with the store's KEK at hand, every row names it, and every live key opens with it;
//!   without it, every row names the same KEK;
//! - a forgetting that commits while the check runs is no finding: the head is read
//!   first, then the rows, then the events up to that head; a row forgotten past that
//!   head is only checked to name a position the log reaches (its event is not read).

use super::{Envelope, FORGOTTEN_EVENT_TYPE, Keys, SUBJECTS_STREAM};
use crate::error::Result;
use crate::read::Filter;
use crate::store::Store;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Most findings reported.
pub const MOST: usize = 20;
/// Rows and events read at a time.
const PAGE: usize = 5000;

/// Findings, capped at [`MOST`].
#[derive(Default)]
struct Findings {
    said: Vec<String>,
    more: usize,
}

impl Findings {
    fn add(&mut self, finding: String) {
        if self.said.len() < MOST {
            self.said.push(finding);
        } else {
            self.more += 1;
        }
    }

    fn done(mut self) -> Vec<String> {
        if self.more > 0 {
            self.said.push(format!(
                "and {} more findings about the key table",
                self.more
            ));
        }
        self.said
    }
}

/// What is wrong between the key table, the record of forgettings and `keys` (the
/// store's KEK, `None` when it was opened without one).
pub async fn key_table_problems<S: Store + ?Sized>(
    store: &S,
    keys: Option<&Keys>,
) -> Result<Vec<String>> {
    let mut found = Findings::default();
    let head = store.head(&[]).await?;
    let kek = keys.map(Keys::current);
    // Forgotten rows by the position of the event that should record them.
    let mut forgotten: HashMap<u64, (String, String)> = HashMap::new();
    // Rows forgotten past the head read first: checked against the head at the end.
    let mut later: Vec<(u64, String)> = Vec::new();
    // Every row's key id, and the KEK ids the rows name.
    let mut key_ids: HashSet<String> = HashSet::new();
    let mut kek_ids: BTreeSet<String> = BTreeSet::new();
    let mut after = String::new();
    loop {
        let rows = store.key_rows(&after, PAGE).await?;
        for row in &rows {
            let s = &row.subject;
            key_ids.insert(row.key_id.clone());
            kek_ids.insert(row.kek_id.clone());
            if let Some(kek) = &kek {
                if row.kek_id != kek.id() {
                    found.add(format!(
                        "the key table's row of subject '{s}' names the key-encryption key \
                         {}, not the store's ({})",
                        row.kek_id,
                        kek.id()
                    ));
                } else if row.wrapped.is_some() && kek.unwrap(row).is_err() {
                    found.add(format!(
                        "the data key of subject '{s}' does not open with the store's \
                         key-encryption key: its row was changed behind the store's back, \
                         and its personal parts cannot be read (restore the row from a backup)"
                    ));
                }
            }
            if row.wrapped.is_some() {
                continue;
            }
            match (row.forgotten_at, row.forgotten_position) {
                // Forgotten after the head was read: its event is not read either.
                (Some(_), Some(p)) if p > head => later.push((p, s.clone())),
                (Some(_), Some(p)) => {
                    forgotten.insert(p, (s.clone(), row.key_id.clone()));
                }
                _ => found.add(format!(
                    "subject '{s}' has no data key, but its row says neither when nor at \
                     which position it was forgotten: it was changed behind the store's back"
                )),
            }
        }
        match rows.last() {
            Some(last) if rows.len() == PAGE => after = last.subject.clone(),
            _ => break,
        }
    }
    if kek.is_none() && kek_ids.len() > 1 {
        // With the KEK the store would not have opened; without it, say so here.
        let ids: Vec<&str> = kek_ids.iter().map(String::as_str).collect();
        found.add(format!(
            "the key table's rows name {} key-encryption keys ({}), where every row names \
             the one the store uses: rows were changed behind the store's back",
            ids.len(),
            ids.join(", ")
        ));
    }

    let records = Filter {
        event_types: vec![FORGOTTEN_EVENT_TYPE.to_owned()],
        ..Filter::default()
    };
    let mut at = 0;
    loop {
        let page = store.read_all_unchecked(at, PAGE, &records).await?;
        for e in page.iter().filter(|e| e.position <= head) {
            let p = e.position;
            let data: serde_json::Value = e.data.to_value().unwrap_or_default();
            let named = |k: &str| {
                data.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned()
            };
            let (subject, key_id) = (named("subject"), named("key_id"));
            if e.aggregate_id != SUBJECTS_STREAM {
                found.add(format!(
                    "the {FORGOTTEN_EVENT_TYPE} event at position {p} is in '{}', not in \
                     '{SUBJECTS_STREAM}': no forgetting wrote it",
                    e.aggregate_id
                ));
                continue;
            }
            match forgotten.remove(&p) {
                Some((s, k)) if s == subject && k == key_id => {}
                Some((s, k)) if s == subject => found.add(format!(
                    "the {FORGOTTEN_EVENT_TYPE} event at position {p} records destroying key \
                     {key_id} of subject '{s}', but the key table's row of '{s}' holds key {k}"
                )),
                Some((s, _)) => found.add(format!(
                    "the {FORGOTTEN_EVENT_TYPE} event at position {p} names subject \
                     '{subject}', but the key table says it recorded forgetting '{s}'"
                )),
                None => found.add(format!(
                    "the {FORGOTTEN_EVENT_TYPE} event at position {p} records forgetting \
                     subject '{subject}', but the key table does not say it was forgotten \
                     there: no forgetting wrote it, or the row was changed since"
                )),
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE && last.position < head => at = last.position,
            _ => break,
        }
    }
    // A row forgotten past the first head is a forgetting that committed meanwhile when
    // the log reaches its position (give a commit not yet durable a moment); a row that
    // names a position the log never reaches was edited.
    let reached = match later.iter().map(|(p, _)| *p).max() {
        Some(last) => {
            store
                .wait_for_head(last - 1, std::time::Duration::from_secs(1))
                .await?
        }
        None => head,
    };
    for (p, s) in later {
        if reached < p {
            found.add(format!(
                "subject '{s}' has no data key, and its row says it was forgotten at position \
                 {p}, past the log's head ({reached}): it was changed behind the store's \
                 back, or the store is a copy cut short (copy again into a new store)"
            ));
        }
    }
    let mut left: Vec<_> = forgotten.into_iter().collect();
    left.sort();
    for (p, (s, _)) in left {
        found.add(format!(
            "subject '{s}' has no data key, but no {FORGOTTEN_EVENT_TYPE} event at position \
             {p} records its forgetting: its key was removed behind the store's back"
        ));
    }
    sealed_with_missing_keys(store, head, &key_ids, &mut found).await?;
    Ok(found.done())
}

/// Every event up to `head` whose sealed part names a key id the key table has no row
/// for (`key_ids`: every row's): a row deleted behind the store's back (its subject's
/// parts read as erased with no forgetting recorded, and a new key could be made for
/// it), or a copy cut short. A sealed part that cannot be read is left to the reads and
/// the chain check, which report it.
async fn sealed_with_missing_keys<S: Store + ?Sized>(
    store: &S,
    head: u64,
    key_ids: &HashSet<String>,
    found: &mut Findings,
) -> Result<()> {
    let all = Filter::default();
    let mut at = 0;
    let mut most = PAGE;
    while at < head {
        let page = match store.read_all_unchecked(at, most, &all).await {
            Ok(page) => page,
            // An event that cannot be read as stored is the chain check's to report:
            // read on one at a time, and step over it.
            Err(crate::error::Error::Corrupt(_)) if most > 1 => {
                most = 1;
                continue;
            }
            Err(crate::error::Error::Corrupt(_)) => {
                at += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(last) = page.last().map(|e| e.position) else {
            break;
        };
        for e in page.iter().filter(|e| e.position <= head) {
            let Some(sealed) = &e.sealed else { continue };
            let Ok(env) = Envelope::parse(sealed, e.position) else {
                continue;
            };
            for (subject, key) in env.subjects.iter().zip(&env.keys) {
                if !key_ids.contains(key) {
                    found.add(format!(
                        "the event at position {} is sealed with key {key} of subject \
                         '{subject}', which the key table has no row for: the row was \
                         removed behind the store's back (its parts read as erased with no \
                         forgetting recorded), or the store is a copy cut short",
                        e.position
                    ));
                }
            }
        }
        at = last;
    }
    Ok(())
}
