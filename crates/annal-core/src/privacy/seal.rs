//! Sealing an event's personal part for its subjects, and opening it on read.
//!
//! The sealed form (an event's `sealed` field, covered by the hash chain) is a JSON
//! object:
//!
//! ```json
//! {"alg":"xchacha20poly1305","subjects":["family_123"],"keys":["<key id>"],
//!  "nonces":["<base64, 24 bytes>"],"ciphertext":"<base64>"}
//! ```
//!
//! Invariants:
//! - with several subjects the personal part is encrypted once per subject, in the order
//!   listed (each layer with its own key and random nonce), so it opens only while
//!   *every* subject's key exists: forgetting any one of them erases it;
//! - each layer's associated data is the event's id, so a sealed part copied into
//!   another event does not open;
//! - opening never fails because a key is gone: the part reads as [`super::ERASED`].
//!   A sealed form that cannot be parsed, or a layer that fails to decrypt with a key
//!   that exists, is [`Error::Corrupt`] (the chain check catches edits first).

use super::ERASED;
use super::kek::{DataKey, Keyring, SubjectKey};
use crate::error::{Error, Result};
use crate::event::{RawJson, RecordedEvent};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::XNonce;
use chacha20poly1305::aead::{Aead, AeadCore, OsRng, Payload};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

const ALG: &str = "xchacha20poly1305";

/// The stored form of a personal part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The cipher: `xchacha20poly1305`.
    pub alg: String,
    /// The subjects the part belongs to, in layer order.
    pub subjects: Vec<String>,
    /// Each subject's data key id.
    pub keys: Vec<String>,
    /// Each layer's nonce, base64.
    pub nonces: Vec<String>,
    /// The innermost plaintext after every layer, base64.
    pub ciphertext: String,
}

impl Envelope {
    /// Parses an event's sealed form; `position` names it in errors.
    pub fn parse(sealed: &RawJson, position: u64) -> Result<Self> {
        let env: Envelope = sealed.to_value().map_err(|e| {
            Error::Corrupt(format!(
                "event at position {position}: its sealed personal part is unreadable: {e}"
            ))
        })?;
        if env.alg != ALG
            || env.subjects.is_empty()
            || env.subjects.len() != env.keys.len()
            || env.keys.len() != env.nonces.len()
        {
            return Err(Error::Corrupt(format!(
                "event at position {position}: its sealed personal part is malformed"
            )));
        }
        Ok(env)
    }
}

fn aad(event_id: Uuid) -> Vec<u8> {
    let mut aad = b"annal-personal-v1\0".to_vec();
    aad.extend_from_slice(event_id.hyphenated().to_string().as_bytes());
    aad
}

/// Seals `plain` for `keys` (one per subject, in order) as the sealed form of event
/// `event_id`.
pub fn seal(event_id: Uuid, plain: &RawJson, keys: &[(String, DataKey)]) -> Result<RawJson> {
    let aad = aad(event_id);
    let mut text = plain.get().as_bytes().to_vec();
    let mut nonces = Vec::with_capacity(keys.len());
    for (_, key) in keys {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        text = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &text,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Corrupt("a personal part could not be encrypted".into()))?;
        nonces.push(B64.encode(nonce));
    }
    let env = Envelope {
        alg: ALG.to_owned(),
        subjects: keys.iter().map(|(s, _)| s.clone()).collect(),
        keys: keys.iter().map(|(_, k)| k.key_id.clone()).collect(),
        nonces,
        ciphertext: B64.encode(text),
    };
    RawJson::from_value(&env).map_err(|e| Error::Corrupt(format!("sealing: {e}")))
}

/// Opens one envelope with the data keys found; `None` keys mean forgotten.
fn open_one(
    event: &RecordedEvent,
    env: &Envelope,
    keys: &HashMap<String, Option<DataKey>>,
) -> Result<RawJson> {
    let bad = |why: &str| {
        Error::Corrupt(format!(
            "event at position {}: its personal part {why}",
            event.position
        ))
    };
    let mut layers = Vec::with_capacity(env.keys.len());
    for id in &env.keys {
        match keys.get(id) {
            Some(Some(k)) => layers.push(k),
            // A key destroyed, or never in this store (a log copied without its keys).
            _ => return Ok(RawJson::from_stored(ERASED.to_owned())),
        }
    }
    let aad = aad(event.event_id);
    let mut text = B64
        .decode(&env.ciphertext)
        .map_err(|_| bad("is not base64"))?;
    for (key, nonce) in layers.iter().zip(&env.nonces).rev() {
        let nonce = B64.decode(nonce).map_err(|_| bad("has a bad nonce"))?;
        if nonce.len() != 24 {
            return Err(bad("has a bad nonce"));
        }
        text = key
            .cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &text,
                    aad: &aad,
                },
            )
            .map_err(|_| bad("does not decrypt with its subject's key"))?;
    }
    let text = String::from_utf8(text).map_err(|_| bad("is not UTF-8"))?;
    Ok(RawJson::from_stored(text))
}

/// The data key ids the sealed parts of `events` name (sorted, distinct): what a
/// backend that reads its key table asynchronously fetches before [`open_events`].
pub fn key_ids(events: &[RecordedEvent]) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for e in events {
        if let Some(sealed) = &e.sealed {
            ids.extend(Envelope::parse(sealed, e.position)?.keys);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Opens the sealed personal parts of `events` in place: each gets `subjects` and
/// `personal` (the decrypted part, or [`ERASED`]). `fetch` reads the key table's rows
/// for the key ids asked (rows it does not find are keys this store never had).
pub fn open_events(
    events: &mut [RecordedEvent],
    keyring: Option<&Keyring>,
    fetch: impl FnOnce(&[String]) -> Result<Vec<SubjectKey>>,
) -> Result<()> {
    let mut envelopes = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if let Some(sealed) = &e.sealed {
            let env = Envelope::parse(sealed, e.position)?;
            ids.extend(env.keys.iter().cloned());
            envelopes.push((i, env));
        }
    }
    if envelopes.is_empty() {
        return Ok(());
    }
    ids.sort_unstable();
    ids.dedup();
    let mut keys = HashMap::with_capacity(ids.len());
    for row in fetch(&ids)? {
        let key = match (&row.wrapped, keyring) {
            (None, _) => None,
            (Some(_), Some(k)) => k.unwrap(&row)?,
            (Some(_), None) => {
                return Err(Error::Corrupt(format!(
                    "the data key of subject '{}' is wrapped by key-encryption key {}, and the store was opened without one",
                    row.subject, row.kek_id
                )));
            }
        };
        keys.insert(row.key_id, key);
    }
    for (i, env) in envelopes {
        if let Some(e) = events.get_mut(i) {
            let personal = open_one(e, &env, &keys)?;
            e.subjects = env.subjects;
            e.personal = Some(personal);
        }
    }
    Ok(())
}
