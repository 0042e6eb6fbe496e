//! Personal data that can be forgotten: per-subject encryption (crypto-shredding).
//!
//! An event may carry a `personal` part beside its `data`, and name the `subjects` (data
//! subjects, e.g. `family_123`) it belongs to. The store never keeps that part in the
//! clear: the writer seals it with each subject's data key ([`seal`]) and stores the
//! ciphertext as the event's `sealed` field, which the hash chain covers (recipe v3,
//! docs/chain.md). Data keys live in the key table, wrapped by a key-encryption key
//! that comes from a file or the environment ([`Keyring`]).
//!
//! Forgetting a subject ([`ForgetRequest`]) removes its wrapped key, the one deletion
//! annal makes, records a [`FORGOTTEN_EVENT_TYPE`] event in [`SUBJECTS_STREAM`] and
//! deletes the snapshots of the aggregates that held the subject's data. From then on
//! every read shows the event's personal part as [`ERASED`]; the chain still verifies,
//! since it covers the ciphertext, which never changes.
//!
//! Invariants:
//! - an event without a personal part is stored exactly as before this module existed;
//! - key creation and destruction happen inside the writer's commit, serialised with the
//!   appends that use the key: an append for a subject forgotten earlier (in the log's
//!   order) is refused with [`crate::Error::SubjectForgotten`], and an event sealed
//!   before the forgetting is unreadable after it;
//! - the personal part is returned byte for byte as written while the keys exist.

mod aead;
mod check;
mod kek;
mod keys;
pub mod packed;
mod read_cache;
mod seal;

pub use check::key_table_problems;
pub use kek::{DataKey, KEK_ENV, KEK_FILE_ENV, KekError, Keyring, SubjectKey, kek_rotated};
pub use keys::{CACHE_CAPACITY, Keys, imported_key_exists, kek_problem, opened_with_kek};
pub use seal::{
    Envelope, SealedPart, key_ids, open_events, open_events_with, open_kept, seal_part,
};

use crate::append::{check_name, check_name_at};
use crate::error::{Error, Result};
use crate::event::{RawJson, Timestamp};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;

/// What a personal part reads as once a subject's key is gone.
pub const ERASED: &str = r#"{"$erased":true}"#;
/// The type of the event that records a forgetting.
pub const FORGOTTEN_EVENT_TYPE: &str = "$subjectForgotten";
/// The stream (and aggregate type) of those events.
pub const SUBJECTS_STREAM: &str = "$subjects";
/// The most subjects one event's personal part may belong to.
pub const MAX_SUBJECTS: usize = 16;
/// The longest reason for a forgetting, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// A personal part on its way to the writer: the plaintext, its subjects and the
/// store's keys (set by the store, not by the caller), whose KEK the writer reads
/// inside its commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Personal {
    /// The subjects, at least one, distinct.
    pub subjects: Vec<String>,
    /// The personal part: a JSON object, verbatim.
    pub plain: RawJson,
    /// The store's keys; `None` until the store takes the append.
    pub keys: Option<Arc<Keys>>,
}

/// Gives every personal part of `proposed` the store's keys. A store without a KEK takes
/// no personal data: [`Error::InvalidRequest`] naming the first event that has some
/// (the store lacks the feature; nothing is written).
pub fn attach(
    proposed: &mut crate::append::ProposedTransaction,
    keys: Option<&Arc<Keys>>,
) -> Result<()> {
    let many = proposed.appends.len() > 1;
    for (i, a) in proposed.appends.iter_mut().enumerate() {
        for (j, e) in a.events.iter_mut().enumerate() {
            let Some(p) = e.personal.as_mut() else {
                continue;
            };
            let Some(keys) = keys else {
                let at = if many {
                    format!("appends[{i}].")
                } else {
                    String::new()
                };
                return Err(Error::invalid(
                    format!("{at}events[{j}].personal"),
                    "this store has no key-encryption key, so it takes no personal data: start it with ANNAL_KEK_FILE or ANNAL_KEK (docs/privacy.md)",
                ));
            };
            p.keys = Some(keys.clone());
        }
    }
    Ok(())
}

/// Refuses, whatever the caller's role, an append that would write what only a
/// forgetting writes ([`crate::store::Store::forget_subject`], which does not come
/// through here): anything in the [`SUBJECTS_STREAM`] or its metadata stream (a
/// tombstone or a deletion there would make every later forgetting fail, and an event
/// of another aggregate type there would too), or a [`FORGOTTEN_EVENT_TYPE`] event
/// anywhere (a forged record, which read models rebuilding on forgettings would act
/// on while the subject's key still exists).
pub fn refuse_reserved(proposed: &crate::append::ProposedTransaction) -> Result<()> {
    let many = proposed.appends.len() > 1;
    let at = |i: usize| {
        if many {
            format!("appends[{i}].")
        } else {
            String::new()
        }
    };
    let metadata = crate::streams::metadata_stream(SUBJECTS_STREAM);
    for (i, a) in proposed.appends.iter().enumerate() {
        if a.aggregate_id == SUBJECTS_STREAM || a.aggregate_id == metadata {
            // A soft deletion or stream metadata of `$subjects` is written to its
            // metadata stream: name the stream the caller meant.
            let which = if a.aggregate_id == metadata {
                format!("'{metadata}' (the metadata of '{SUBJECTS_STREAM}')")
            } else {
                format!("'{SUBJECTS_STREAM}'")
            };
            return Err(Error::invalid(
                format!("{}aggregate_id", at(i)),
                format!(
                    "{which}: '{SUBJECTS_STREAM}' is annal's record of forgettings: only \
                     forgetting a subject writes there (POST /v1/subjects/{{subject}}/forget, \
                     annal forget), and it cannot be deleted, tombstoned or given metadata"
                ),
            ));
        }
        if let Some(j) = a
            .events
            .iter()
            .position(|e| e.event_type == FORGOTTEN_EVENT_TYPE)
        {
            return Err(Error::invalid(
                format!("{}events[{j}].event_type", at(i)),
                format!(
                    "'{FORGOTTEN_EVENT_TYPE}' records a forgetting, and only forgetting a \
                     subject writes it (POST /v1/subjects/{{subject}}/forget, annal forget)"
                ),
            ));
        }
    }
    Ok(())
}

/// A member name of a JSON object, borrowed from its text unless it had escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// The member names of a JSON object, sorted and distinct.
struct Names<'a>(Vec<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Names<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Names<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut names = Vec::new();
                while let Some(Name(name)) = m.next_key()? {
                    m.next_value::<IgnoredAny>()?;
                    names.push(name);
                }
                names.sort_unstable();
                names.dedup();
                Ok(Names(names))
            }
        }
        d.deserialize_map(Visit)
    }
}

fn top_level_keys(json: &RawJson) -> std::result::Result<Vec<Cow<'_, str>>, serde_json::Error> {
    serde_json::from_str::<Names<'_>>(json.get()).map(|n| n.0)
}

/// Checks an event's personal part against its data (`field` prefixes error paths,
/// e.g. `events[2].`): both are JSON objects, they share no member, neither has a
/// `$erased` member, and there are 1 to [`MAX_SUBJECTS`] distinct, well-formed subjects.
pub fn check_personal(
    field: impl Fn() -> String,
    data: &RawJson,
    personal: &RawJson,
    subjects: &[String],
) -> Result<()> {
    let path = |f: &str| format!("{}{f}", field());
    if !personal.is_object() {
        return Err(Error::invalid(path("personal"), "must be a JSON object"));
    }
    if !data.is_object() {
        return Err(Error::invalid(
            path("data"),
            "must be a JSON object when the event has a personal part (the two are merged on read)",
        ));
    }
    if subjects.is_empty() {
        return Err(Error::invalid(
            path("subjects"),
            "an event with a personal part must name the subject(s) it belongs to",
        ));
    }
    if subjects.len() > MAX_SUBJECTS {
        return Err(Error::invalid(
            path("subjects"),
            format!("at most {MAX_SUBJECTS} subjects per event"),
        ));
    }
    for (i, s) in subjects.iter().enumerate() {
        check_name_at(s, || path(&format!("subjects[{i}]")))?;
        if subjects[..i].contains(s) {
            return Err(Error::invalid(
                path(&format!("subjects[{i}]")),
                format!("'{s}' is named twice"),
            ));
        }
    }
    let pkeys =
        top_level_keys(personal).map_err(|e| Error::invalid(path("personal"), e.to_string()))?;
    let dkeys = top_level_keys(data).map_err(|e| Error::invalid(path("data"), e.to_string()))?;
    for (name, keys) in [("personal", &pkeys), ("data", &dkeys)] {
        if keys.iter().any(|k| k == "$erased") {
            return Err(Error::invalid(
                path(name),
                "'$erased' is the marker of an erased personal part; no event may set it",
            ));
        }
    }
    if let Some(k) = pkeys.iter().find(|k| dkeys.binary_search(k).is_ok()) {
        return Err(Error::invalid(
            path("personal"),
            format!("'{k}' is in both data and personal; a member is one or the other"),
        ));
    }
    Ok(())
}

/// `data` with the members of `personal` after its own, each text kept verbatim: what
/// aggregates and upcasters decode. Both must be JSON objects.
pub fn merge(data: &RawJson, personal: &RawJson) -> RawJson {
    let inner = |t: &str| t.len() < 2 || t[1..t.len() - 1].trim().is_empty();
    let (d, p) = (data.get(), personal.get());
    if inner(p) {
        return data.clone();
    }
    if inner(d) {
        return personal.clone();
    }
    let mut out = String::with_capacity(d.len() + p.len());
    out.push_str(d[..d.len() - 1].trim_end());
    out.push(',');
    out.push_str(&p[1..]);
    RawJson::from_stored(out)
}

/// A request to forget a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetRequest {
    /// The subject.
    pub subject: String,
    /// Why (kept in the audit trail: it must hold no personal data).
    pub reason: String,
    /// Who asks (default `system`).
    pub user_id: Option<String>,
    /// Who authenticated the request.
    pub principal: Option<String>,
}

impl ForgetRequest {
    /// Checks the subject and the reason.
    pub fn check(&self) -> Result<()> {
        check_name("subject", &self.subject)?;
        if self.reason.trim().is_empty() {
            return Err(Error::invalid("reason", "say why the subject is forgotten"));
        }
        if self.reason.len() > MAX_REASON_BYTES {
            return Err(Error::invalid(
                "reason",
                format!("at most {MAX_REASON_BYTES} bytes"),
            ));
        }
        if let Some(u) = &self.user_id {
            check_name("user_id", u)?;
        }
        Ok(())
    }
}

/// What forgetting a subject did.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forgotten {
    /// The subject.
    pub subject: String,
    /// The id of the data key destroyed.
    pub key_id: String,
    /// When it was forgotten.
    pub forgotten_at: Timestamp,
    /// The position of the `$subjectForgotten` event.
    pub position: u64,
    /// Whether it had been forgotten before this request (nothing was written now).
    pub already: bool,
}

/// A subject's key status, for listing.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectInfo {
    /// The subject.
    pub subject: String,
    /// Its data key's id.
    pub key_id: String,
    /// `active` (its key exists) or `forgotten`.
    pub status: String,
    /// The KEK that wraps its key (absent once forgotten).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_id: Option<String>,
    /// When its key was made.
    pub created_at: Timestamp,
    /// When it was forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten_at: Option<Timestamp>,
    /// The position of its `$subjectForgotten` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten_position: Option<u64>,
}

impl From<&SubjectKey> for SubjectInfo {
    fn from(k: &SubjectKey) -> Self {
        Self {
            subject: k.subject.clone(),
            key_id: k.key_id.clone(),
            status: if k.wrapped.is_some() {
                "active"
            } else {
                "forgotten"
            }
            .to_owned(),
            kek_id: k.wrapped.as_ref().map(|_| k.kek_id.clone()),
            created_at: k.created_at,
            forgotten_at: k.forgotten_at,
            forgotten_position: k.forgotten_position,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(t: &str) -> RawJson {
        RawJson::parse(t).expect("json")
    }

    #[test]
    fn merging_keeps_both_texts_verbatim() {
        assert_eq!(
            merge(&raw(r#"{"amount": 1.50}"#), &raw(r#"{"card" : "4111"}"#)).get(),
            r#"{"amount": 1.50,"card" : "4111"}"#
        );
        assert_eq!(merge(&raw("{ }"), &raw(r#"{"a":1}"#)).get(), r#"{"a":1}"#);
        assert_eq!(merge(&raw(r#"{"a":1}"#), &raw("{}")).get(), r#"{"a":1}"#);
        assert_eq!(
            merge(&raw(r#"{"a":1}"#), &raw(ERASED)).get(),
            r#"{"a":1,"$erased":true}"#
        );
    }

    #[test]
    fn a_personal_part_must_not_overlap_its_data_nor_name_the_marker() {
        let s = vec!["family_1".to_owned()];
        assert!(check_personal(String::new, &raw(r#"{"a":1}"#), &raw(r#"{"b":2}"#), &s).is_ok());
        assert!(check_personal(String::new, &raw(r#"{"a":1}"#), &raw(r#"{"a":2}"#), &s).is_err());
        assert!(check_personal(String::new, &raw("{}"), &raw(r#"{"$erased":1}"#), &s).is_err());
        assert!(check_personal(String::new, &raw("[1]"), &raw(r#"{"b":2}"#), &s).is_err());
        assert!(check_personal(String::new, &raw("{}"), &raw(r#"{"b":2}"#), &[]).is_err());
        // Names are compared as JSON reads them, escapes and all.
        assert!(
            check_personal(
                String::new,
                &raw(r#"{"ab":1}"#),
                &raw(r#"{"a\u0062":2}"#),
                &s
            )
            .is_err()
        );
        assert!(
            check_personal(String::new, &raw("{}"), &raw(r#"{"\u0024erased":1}"#), &s).is_err()
        );
        assert!(
            check_personal(
                String::new,
                &raw(r#"{"a":1,"a":2}"#),
                &raw(r#"{"b":1,"b":2}"#),
                &s
            )
            .is_ok()
        );
        let twice = vec!["x".to_owned(), "x".to_owned()];
        assert!(check_personal(String::new, &raw("{}"), &raw(r#"{"b":2}"#), &twice).is_err());
    }
}
