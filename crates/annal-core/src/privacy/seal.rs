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
//!   that exists, is [`Error::Corrupt`] (the chain check catches edits first);
//! - [`open_kept`] opens from packed bytes only on its caller's word that each event's
//!   sealed text, as checked against the chain, was rendered from those very bytes (the
//!   page reader renders them, checks the text, then opens): it does not compare them.

use super::ERASED;
use super::aead::{self, NONCE_LEN};
use super::kek::{DataKey, SubjectKey};
use super::keys::Keys;
use crate::error::{Error, Result};
use crate::event::{RawJson, RecordedEvent};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// The one cipher of sealed parts.
pub(super) const ALG: &str = "xchacha20poly1305";

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
        let env: Envelope = sealed.to_value().map_err(|e| unreadable(position, &e))?;
        if env.alg != ALG
            || env.subjects.is_empty()
            || env.subjects.len() != env.keys.len()
            || env.keys.len() != env.nonces.len()
        {
            return Err(malformed(position));
        }
        Ok(env)
    }
}

fn unreadable(position: u64, e: &serde_json::Error) -> Error {
    Error::Corrupt(format!(
        "event at position {position}: its sealed personal part is unreadable: {e}"
    ))
}

fn malformed(position: u64) -> Error {
    Error::Corrupt(format!(
        "event at position {position}: its sealed personal part is malformed"
    ))
}

/// The sealed form as read, borrowing from the stored text where it can.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Stored<'a> {
    #[serde(borrow)]
    pub(super) alg: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) subjects: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) keys: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) nonces: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) ciphertext: Cow<'a, str>,
}

impl<'a> Stored<'a> {
    /// Parses a sealed form: the layout the writer makes (compact, members in order,
    /// strings without escapes) directly, anything else with serde_json.
    fn parse(text: &'a str, position: u64) -> Result<Self> {
        match Self::canonical(text) {
            Some(s) => Ok(s),
            None => serde_json::from_str(text).map_err(|e| unreadable(position, &e)),
        }
    }

    /// The writer's layout, or `None` for anything else (which serde_json then reads,
    /// or refuses).
    pub(super) fn canonical(text: &'a str) -> Option<Self> {
        let rest = text.strip_prefix(r#"{"alg":""#)?;
        let (alg, rest) = plain_str(rest)?;
        let (subjects, rest) = str_array(rest.strip_prefix(r#","subjects":"#)?)?;
        let (keys, rest) = str_array(rest.strip_prefix(r#","keys":"#)?)?;
        let (nonces, rest) = str_array(rest.strip_prefix(r#","nonces":"#)?)?;
        let (ciphertext, rest) = plain_str(rest.strip_prefix(r#","ciphertext":""#)?)?;
        (rest == "}").then_some(Self {
            alg: Cow::Borrowed(alg),
            subjects,
            keys,
            nonces,
            ciphertext: Cow::Borrowed(ciphertext),
        })
    }
}

/// Whether JSON writes this byte of a string escaped (or ends the string with it):
/// a quote, a backslash or a control character. serde_json escapes exactly these and
/// leaves every other byte (non-ASCII UTF-8, DEL, `/`) as it is.
pub(super) fn needs_escape(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// The text of a JSON string up to its closing quote (`s` starts after the opening
/// one) and what follows it; `None` if it has an escape or a control character.
fn plain_str(s: &str) -> Option<(&str, &str)> {
    // The first quote or backslash, then no control character before it (a fold the
    // compiler vectorises): the same answer as a scan for `needs_escape`, for long
    // base64 strings in a fraction of its time.
    let end = memchr::memchr2(b'"', b'\\', s.as_bytes())?;
    let text = s.as_bytes().get(..end)?;
    let control = text.iter().fold(false, |any, &b| any | (b < 0x20));
    (s.as_bytes().get(end) == Some(&b'"') && !control).then(|| (&s[..end], &s[end + 1..]))
}

/// A JSON array of plain strings ([`plain_str`]) and what follows it.
fn str_array(s: &str) -> Option<(Vec<Cow<'_, str>>, &str)> {
    let mut rest = s.strip_prefix('[')?;
    let mut out = Vec::with_capacity(1);
    if let Some(after) = rest.strip_prefix(']') {
        return Some((out, after));
    }
    loop {
        let (item, after) = plain_str(rest.strip_prefix('"')?)?;
        out.push(Cow::Borrowed(item));
        if let Some(after) = after.strip_prefix(']') {
            return Some((out, after));
        }
        rest = after.strip_prefix(',')?;
    }
}

/// A sealed form parsed and decoded, ready to open; subjects and key ids borrowed from
/// its text.
struct Sealed<'a> {
    subjects: Vec<Cow<'a, str>>,
    keys: Vec<Cow<'a, str>>,
    nonces: Vec<[u8; NONCE_LEN]>,
    ciphertext: Vec<u8>,
}

impl<'a> Sealed<'a> {
    fn read(sealed: &'a RawJson, position: u64) -> Result<Self> {
        let bad = |why: &str| {
            Error::Corrupt(format!(
                "event at position {position}: its personal part {why}"
            ))
        };
        let s = Stored::parse(sealed.get(), position)?;
        if s.alg != ALG
            || s.subjects.is_empty()
            || s.subjects.len() != s.keys.len()
            || s.keys.len() != s.nonces.len()
        {
            return Err(malformed(position));
        }
        let mut nonces = Vec::with_capacity(s.nonces.len());
        for n in &s.nonces {
            let mut nonce = [0u8; NONCE_LEN];
            match B64.decode_slice(n.as_bytes(), &mut nonce) {
                Ok(NONCE_LEN) => nonces.push(nonce),
                _ => return Err(bad("has a bad nonce")),
            }
        }
        let ciphertext = B64
            .decode(s.ciphertext.as_bytes())
            .map_err(|_| bad("is not base64"))?;
        Ok(Self {
            subjects: s.subjects,
            keys: s.keys,
            nonces,
            ciphertext,
        })
    }

    /// The subjects and the plaintext with the data keys found (`None`: forgotten), or
    /// [`ERASED`].
    fn open(
        self,
        event_id: Uuid,
        position: u64,
        keys: &HashMap<String, Option<DataKey>>,
    ) -> Result<Opened> {
        let layers: Vec<Option<[u8; 32]>> = self
            .keys
            .iter()
            .map(|id| {
                keys.get(id.as_ref())
                    .and_then(|k| k.as_ref().map(|k| k.key))
            })
            .collect();
        self.open_layers(event_id, position, &layers)
    }

    /// [`Self::open`] with each layer's data key given in order (`None`: gone, or never
    /// in this store).
    fn open_layers(
        self,
        event_id: Uuid,
        position: u64,
        layers: &[Option<[u8; 32]>],
    ) -> Result<Opened> {
        let subjects = self
            .subjects
            .iter()
            .map(|s| String::from(s.as_ref()))
            .collect();
        let at = Part { event_id, position };
        at.open(
            subjects,
            self.nonces.as_flattened(),
            self.ciphertext,
            layers,
        )
    }
}

/// An opened part: its subjects and its plaintext (or [`ERASED`]).
type Opened = (Vec<String>, RawJson);

/// The event a sealed part belongs to.
struct Part {
    event_id: Uuid,
    position: u64,
}

impl Part {
    /// Opens the part's `ciphertext` (sealed by one layer per nonce, [`NONCE_LEN`]
    /// bytes each in `nonces`, the first layer innermost) with each layer's data key
    /// given in order (`None`: gone, or never in this store): its subjects and
    /// plaintext, or [`ERASED`] when a key is missing.
    fn open(
        &self,
        subjects: Vec<String>,
        nonces: &[u8],
        mut text: Vec<u8>,
        layers: &[Option<[u8; 32]>],
    ) -> Result<Opened> {
        let position = self.position;
        let bad = |why: &str| {
            Error::Corrupt(format!(
                "event at position {position}: its personal part {why}"
            ))
        };
        // A key destroyed, or never in this store (a log copied without its keys).
        if layers.iter().any(Option::is_none) {
            return Ok((subjects, RawJson::from_stored(ERASED.to_owned())));
        }
        if layers.len() * NONCE_LEN != nonces.len() {
            return Err(malformed(position));
        }
        let aad = aad(self.event_id);
        let keyed = layers.iter().zip(nonces.chunks_exact(NONCE_LEN)).rev();
        for (key, nonce) in keyed.filter_map(|(k, n)| k.as_ref().map(|k| (k, n))) {
            let nonce = <&[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| malformed(position))?;
            let len = aead::open_in_place(key, nonce, &aad, &mut text)
                .map_err(|_| bad("does not decrypt with its subject's key"))?;
            text.truncate(len);
        }
        let text = String::from_utf8(text).map_err(|_| bad("is not UTF-8"))?;
        Ok((subjects, RawJson::from_stored(text)))
    }
}

const AAD_PREFIX: &[u8] = b"annal-personal-v1\0";

fn aad(event_id: Uuid) -> [u8; AAD_PREFIX.len() + 36] {
    let mut aad = [0u8; AAD_PREFIX.len() + 36];
    aad[..AAD_PREFIX.len()].copy_from_slice(AAD_PREFIX);
    event_id
        .hyphenated()
        .encode_lower(&mut aad[AAD_PREFIX.len()..]);
    aad
}

/// A personal part sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedPart {
    /// The sealed form's JSON text: what the chain hashes and reads show.
    pub text: RawJson,
    /// Its packed form ([`super::packed`]), when it has one: [`super::packed::unpack`]
    /// of these bytes is `text`, byte for byte.
    pub packed: Option<Vec<u8>>,
}

/// Seals `plain` for `keys` (one per subject, in order) as the sealed form of event
/// `event_id`, with its packed form: the packed bytes are made first and the text is
/// rendered from them, so the two agree by construction; parts that have no packed form
/// (see [`super::packed::from_parts`]) are written as JSON text only.
pub fn seal_part(event_id: Uuid, plain: &RawJson, keys: &[(&str, DataKey)]) -> Result<SealedPart> {
    let failed = || Error::Corrupt("a personal part could not be encrypted".into());
    let aad = aad(event_id);
    // Each layer seals the one before in place, its tag appended.
    let mut text = Vec::with_capacity(plain.get().len() + keys.len() * aead::TAG_LEN);
    text.extend_from_slice(plain.get().as_bytes());
    let mut nonces = Vec::with_capacity(keys.len());
    for (_, key) in keys {
        let nonce = aead::nonce().map_err(|_| failed())?;
        aead::seal_in_place(&key.key, &nonce, &aad, &mut text).map_err(|_| failed())?;
        nonces.push(nonce);
    }
    let layers = keys.iter().map(|(s, k)| (*s, &*k.key_id));
    if let Some(packed) = super::packed::from_parts(layers, &nonces, &text)
        && let Ok(rendered) = super::packed::unpack(&packed)
    {
        return Ok(SealedPart {
            text: RawJson::from_stored(rendered),
            packed: Some(packed),
        });
    }
    let env = Envelope {
        alg: ALG.to_owned(),
        subjects: keys.iter().map(|(s, _)| (*s).to_owned()).collect(),
        keys: keys.iter().map(|(_, k)| k.key_id.to_string()).collect(),
        nonces: nonces.iter().map(|n| B64.encode(n)).collect(),
        ciphertext: B64.encode(text),
    };
    let text = RawJson::from_value(&env).map_err(|e| Error::Corrupt(format!("sealing: {e}")))?;
    Ok(SealedPart { text, packed: None })
}

/// The data key ids the sealed parts of `events` name (sorted, distinct): what a
/// backend that reads its key table asynchronously fetches before [`open_events`].
pub fn key_ids(events: &[RecordedEvent]) -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    for e in events {
        if let Some(sealed) = &e.sealed {
            let s = Stored::parse(sealed.get(), e.position)?;
            for k in s.keys {
                if !seen.contains(k.as_ref()) {
                    seen.insert(k.into_owned());
                }
            }
        }
    }
    let mut ids: Vec<String> = seen.into_iter().collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Pages with at least this many sealed parts are parsed and opened on two threads (as
/// [`crate::chain::check_served`] hashes them): decoding and decrypting were most of a
/// personal read's own cost, and a reader otherwise keeps one core busy while the other
/// idles.
const PARALLEL_OPEN_FROM: usize = 256;

/// `f` over `items`, on two threads when there are [`PARALLEL_OPEN_FROM`] or more (and
/// two cores), in order.
fn map_split<T: Send, R: Send>(
    mut items: Vec<T>,
    f: impl Fn(T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let serial = |part: Vec<T>| part.into_iter().map(&f).collect::<Result<Vec<R>>>();
    if items.len() < PARALLEL_OPEN_FROM
        || !std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
    {
        return serial(items);
    }
    let second = items.split_off(items.len() / 2);
    let first = items;
    std::thread::scope(|scope| {
        let later = scope.spawn(|| serial(second));
        let mut out = serial(first)?;
        let later = later
            .join()
            .unwrap_or_else(|_| Err(Error::storage("a thread opening personal parts panicked")))?;
        out.extend(later);
        Ok(out)
    })
}

/// Opens the sealed personal parts of `events` in place: each gets `subjects` and
/// `personal` (the decrypted part, or [`ERASED`]). `fetch` reads the key table's rows
/// for the key ids asked (rows it does not find are keys this store never had), in the
/// read that read the events or after it: a data key is used only while its row, as
/// read now, still holds it ([`Keys`]).
pub fn open_events(
    events: &mut [RecordedEvent],
    keys: Option<&Keys>,
    fetch: impl FnOnce(&[String]) -> Result<Vec<SubjectKey>>,
) -> Result<()> {
    open_events_with(events, |ids| {
        let rows = fetch(ids)?;
        match keys {
            Some(k) => k.data_keys(&rows),
            None => {
                let mut found = HashMap::with_capacity(rows.len());
                for row in rows {
                    if row.wrapped.is_some() {
                        // Not corruption: another process with a KEK wrote personal data
                        // since this one opened the store, which then had none.
                        return Err(Error::Closed(format!(
                            "the data key of subject '{}' is wrapped by the key-encryption \
                             key with id {}, and this process was started without one: \
                             restart it with that key (ANNAL_KEK_FILE or ANNAL_KEK)",
                            row.subject, row.kek_id
                        )));
                    }
                    found.insert(row.key_id, None);
                }
                Ok(found)
            }
        }
    })
}

/// Opens the sealed parts of `events` on this thread with the data keys kept for reads
/// under the key table's change counter `counter` alone (`Keys::kept_keys`), for a
/// reader that opens a page in parts while it reads the rest (annal-sqlite). `packed`
/// holds, by index in `events`, the packed bytes ([`super::packed`]) that sealed texts
/// were rendered from, and so agree with: when it covers every sealed part, the parts
/// are read from the bytes, with no JSON parsed or base64 decoded; otherwise from their
/// text. `false`, with `events` unchanged, when a key id is not kept or a part does not
/// open: the reader then opens them with [`open_events_with`], which reads the missing
/// rows and reports what is wrong.
pub fn open_kept(
    events: &mut [RecordedEvent],
    packed: &[(usize, Vec<u8>)],
    keys: &Keys,
    counter: i64,
) -> bool {
    let sealed = events.iter().filter(|e| e.sealed.is_some()).count();
    if sealed == 0 {
        true
    } else if packed.len() == sealed {
        open_kept_packed(events, packed, keys, counter)
    } else {
        open_kept_text(events, keys, counter)
    }
}

/// [`open_kept`] from the packed bytes of every sealed part (by strictly ascending index
/// in `events`, each of a sealed event).
fn open_kept_packed(
    events: &mut [RecordedEvent],
    packed: &[(usize, Vec<u8>)],
    keys: &Keys,
    counter: i64,
) -> bool {
    const ID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;
    let mut parts = Vec::with_capacity(packed.len());
    let mut after = None;
    for (i, bytes) in packed {
        let sealed = events.get(*i).is_some_and(|e| e.sealed.is_some());
        if !sealed || after.is_some_and(|a| a >= *i) {
            return false;
        }
        after = Some(*i);
        match super::packed::Parts::read(bytes) {
            Ok(p) => parts.push((*i, p)),
            Err(_) => return false,
        }
    }
    // The keys are kept by their ids' text: one buffer holds the chunk's.
    let count: usize = parts.iter().map(|(_, p)| p.subjects.len()).sum();
    let mut ids = String::with_capacity(count * ID_LEN);
    let mut buf = Uuid::encode_buffer();
    for (_, p) in &parts {
        for id in p.keys.chunks_exact(super::packed::KEY_LEN) {
            let Ok(id) = Uuid::from_slice(id) else {
                return false;
            };
            ids.push_str(id.hyphenated().encode_lower(&mut buf));
        }
    }
    let texts = (0..count).filter_map(|j| ids.get(j * ID_LEN..(j + 1) * ID_LEN));
    let Some(layers) = keys.kept_keys(counter, texts) else {
        return false;
    };
    let Some(opened) = open_each(
        events,
        parts,
        &layers,
        |p| p.subjects.len(),
        |p, at, these| {
            let subjects = p.subjects.iter().map(|s| (*s).to_owned()).collect();
            at.open(subjects, p.nonces, p.ciphertext.to_vec(), these)
        },
    ) else {
        return false;
    };
    set_opened(events, opened);
    true
}

/// [`open_kept`] from the sealed parts' text.
fn open_kept_text(events: &mut [RecordedEvent], keys: &Keys, counter: i64) -> bool {
    let events_read: &[RecordedEvent] = events;
    let mut sealed = Vec::new();
    for (i, e) in events_read.iter().enumerate() {
        if let Some(text) = &e.sealed {
            match Sealed::read(text, e.position) {
                Ok(s) => sealed.push((i, s)),
                Err(_) => return false,
            }
        }
    }
    let ids = sealed
        .iter()
        .flat_map(|(_, s)| s.keys.iter().map(AsRef::as_ref));
    let Some(layers) = keys.kept_keys(counter, ids) else {
        return false;
    };
    let Some(opened) = open_each(
        events_read,
        sealed,
        &layers,
        |s| s.keys.len(),
        |s, at, these| s.open_layers(at.event_id, at.position, these),
    ) else {
        return false;
    };
    set_opened(events, opened);
    true
}

/// The parts opened, each (by index in `events`) with its own run of `layers`, the
/// parts' layers in order (`count` says how many a part has); `None` when one does not
/// open or the layers do not line up.
fn open_each<T>(
    events: &[RecordedEvent],
    parts: Vec<(usize, T)>,
    layers: &[Option<[u8; 32]>],
    count: impl Fn(&T) -> usize,
    open: impl Fn(T, Part, &[Option<[u8; 32]>]) -> Result<Opened>,
) -> Option<Vec<(usize, Opened)>> {
    let mut opened = Vec::with_capacity(parts.len());
    let mut next = 0;
    for (i, p) in parts {
        let n = count(&p);
        let e = events.get(i)?;
        let these = layers.get(next..next + n)?;
        next += n;
        let at = Part {
            event_id: e.event_id,
            position: e.position,
        };
        opened.push((i, open(p, at, these).ok()?));
    }
    Some(opened)
}

/// Gives each event of `opened` (by index) its subjects and opened personal part.
fn set_opened(events: &mut [RecordedEvent], opened: Vec<(usize, Opened)>) {
    for (i, (subjects, personal)) in opened {
        if let Some(e) = events.get_mut(i) {
            e.subjects = subjects;
            e.personal = Some(personal);
        }
    }
}

/// [`open_events`] with the data keys found by `resolve`: for the key ids asked, each
/// id's data key, `None` for a key that is gone, no entry for one this store never had
/// (a backend that keeps keys for reads: [`Keys::keys_for_read`]). Long pages are
/// opened on two threads.
pub fn open_events_with(
    events: &mut [RecordedEvent],
    resolve: impl FnOnce(&[String]) -> Result<HashMap<String, Option<DataKey>>>,
) -> Result<()> {
    let at: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].sealed.is_some())
        .collect();
    if at.is_empty() {
        return Ok(());
    }
    let events_read: &[RecordedEvent] = events;
    let sealed = map_split(at.clone(), |i| {
        let e = &events_read[i];
        match &e.sealed {
            Some(s) => Sealed::read(s, e.position),
            None => Err(malformed(e.position)),
        }
    })?;
    let mut ids: Vec<&str> = sealed
        .iter()
        .flat_map(|s| s.keys.iter().map(AsRef::as_ref))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
    let found = resolve(&ids)?;
    let jobs: Vec<(usize, Sealed<'_>)> = at.into_iter().zip(sealed).collect();
    let opened = map_split(jobs, |(i, s)| {
        let e = &events_read[i];
        s.open(e.event_id, e.position, &found).map(|o| (i, o))
    })?;
    set_opened(events, opened);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// alg, subjects, keys, nonces, ciphertext.
    type Parts = (String, Vec<String>, Vec<String>, Vec<String>, String);

    fn parts(s: Stored<'_>) -> Parts {
        let own = |v: Vec<Cow<'_, str>>| v.into_iter().map(Cow::into_owned).collect();
        (
            s.alg.into_owned(),
            own(s.subjects),
            own(s.keys),
            own(s.nonces),
            s.ciphertext.into_owned(),
        )
    }

    fn parsed(text: &str) -> Option<Parts> {
        serde_json::from_str(text).ok().map(parts)
    }

    fn fast(text: &str) -> Option<Parts> {
        Stored::canonical(text).map(parts)
    }

    /// A recorded event of `event_id` whose sealed part is `sealed`.
    fn recorded(event_id: Uuid, sealed: RawJson) -> RecordedEvent {
        let p = crate::append::AppendRequest::new("T", "s", crate::ExpectedVersion::Any)
            .event(crate::append::NewEvent::raw("E", RawJson::empty_object()))
            .prepare(&crate::append::Limits::default())
            .expect("valid");
        let mut e = p.events[0].record(
            1,
            "T",
            "s",
            1,
            crate::event::Timestamp::MIN,
            &crate::chain::Hash::ZERO,
        );
        e.event_id = event_id;
        e.sealed = Some(sealed);
        e
    }

    #[test]
    fn kept_keys_open_a_part_only_under_the_counter_they_were_kept_under() {
        let keys = Keys::new(super::super::Keyring::from_bytes([3; 32]));
        let (data_key, row) = keys
            .current()
            .new_key("family_1", crate::event::Timestamp::now())
            .expect("key");
        let plain = RawJson::parse(r#"{"child_name":"Sofía"}"#).expect("json");
        let id = Uuid::now_v7();
        let part = seal_part(id, &plain, &[("family_1", data_key)]).expect("seal");
        let bytes = part.packed.clone().expect("a packed form");
        // From the text alone, and from the bytes the text was rendered from.
        for packed in [Vec::new(), vec![(0, bytes)]] {
            let keys = Keys::new(super::super::Keyring::from_bytes([3; 32]));
            // Nothing kept yet: the reader must fall back, and nothing changes.
            let mut events = vec![recorded(id, part.text.clone())];
            assert!(!open_kept(&mut events, &packed, &keys, 7));
            assert_eq!(events[0].personal, None);
            keys.keys_for_read(7, std::slice::from_ref(&row.key_id), |_| {
                Ok(vec![row.clone()])
            })
            .expect("kept");
            let mut events = vec![recorded(id, part.text.clone())];
            assert!(open_kept(&mut events, &packed, &keys, 7));
            assert_eq!(events[0].personal.as_ref(), Some(&plain));
            assert_eq!(events[0].subjects, ["family_1"]);
            // Under another counter the kept key is not served.
            let mut events = vec![recorded(id, part.text.clone())];
            assert!(!open_kept(&mut events, &packed, &keys, 8));
            assert_eq!(events[0].personal, None);
        }
    }

    #[test]
    fn parts_opened_from_their_packed_bytes_read_as_from_their_text() {
        let keys = Keys::new(super::super::Keyring::from_bytes([3; 32]));
        let now = crate::event::Timestamp::now();
        let (k1, r1) = keys.current().new_key("family_1", now).expect("key");
        let (k2, r2) = keys.current().new_key("family_2", now).expect("key");
        let (k3, mut r3) = keys.current().new_key("family_3", now).expect("key");
        r3.wrapped = None;
        let plain = RawJson::parse(r#"{"child_name":"Sofía","grade":"A"}"#).expect("json");
        let layers: [&[(&str, DataKey)]; 3] = [
            &[("family_1", k1.clone())],
            &[("family_1", k1), ("family_2", k2.clone())],
            &[("family_2", k2), ("family_3", k3)],
        ];
        // A plain event between sealed ones, so indexes in the page matter.
        let mut events = Vec::new();
        let mut packed = Vec::new();
        for l in layers {
            let id = Uuid::now_v7();
            let part = seal_part(id, &plain, l).expect("seal");
            packed.push((events.len(), part.packed.expect("a packed form")));
            events.push(recorded(id, part.text));
            let mut between = recorded(Uuid::now_v7(), RawJson::empty_object());
            between.sealed = None;
            events.push(between);
        }
        let rows = [r1, r2, r3];
        let ids: Vec<String> = rows.iter().map(|r| r.key_id.clone()).collect();
        keys.keys_for_read(7, &ids, |_| Ok(rows.to_vec()))
            .expect("kept");
        let mut from_text = events.clone();
        assert!(open_kept(&mut from_text, &[], &keys, 7));
        let mut from_bytes = events.clone();
        assert!(open_kept(&mut from_bytes, &packed, &keys, 7));
        assert_eq!(from_bytes, from_text);
        assert_eq!(from_bytes[0].personal.as_ref(), Some(&plain));
        assert_eq!(from_bytes[2].subjects, ["family_1", "family_2"]);
        assert_eq!(from_bytes[2].personal.as_ref(), Some(&plain));
        assert_eq!(
            from_bytes[4].personal.as_ref().map(RawJson::get),
            Some(ERASED)
        );
        assert_eq!(from_bytes[1].personal, None);
        // Bytes that do not line up with the sealed events are not trusted.
        let mut shifted = packed.clone();
        shifted[1].0 = 3;
        let mut events_left = events.clone();
        assert!(!open_kept(&mut events_left, &shifted, &keys, 7));
        assert_eq!(events_left, events);
    }

    #[test]
    fn the_writers_layout_is_read_directly_and_as_serde_reads_it() {
        let key = DataKey {
            key_id: "k-1".into(),
            key: [5; 32],
        };
        let plain = RawJson::parse(r#"{"child_name":"Sofía"}"#).expect("json");
        for subjects in [vec!["family_1"], vec!["family_1", "fam ily \"2\""]] {
            let keys: Vec<(&str, DataKey)> = subjects.iter().map(|s| (*s, key.clone())).collect();
            let sealed = seal_part(Uuid::now_v7(), &plain, &keys).expect("seal").text;
            let text = sealed.get();
            assert!(parsed(text).is_some(), "{text}");
            match fast(text) {
                Some(f) => assert_eq!(Some(f), parsed(text)),
                // An escaped subject takes serde_json's way.
                None => assert!(text.contains('\\'), "{text}"),
            }
        }
    }

    #[test]
    fn anything_but_the_writers_layout_takes_serdes_way() {
        for text in [
            r#"{"alg":"x","subjects":["a"],"keys":["k"],"nonces":["n"],"ciphertext":"c"} "#,
            r#"{ "alg":"x","subjects":["a"],"keys":["k"],"nonces":["n"],"ciphertext":"c"}"#,
            r#"{"subjects":["a"],"alg":"x","keys":["k"],"nonces":["n"],"ciphertext":"c"}"#,
            r#"{"alg":"x","subjects":["a\u0041"],"keys":["k"],"nonces":["n"],"ciphertext":"c"}"#,
            r#"{"alg":"x","subjects":["a"],"keys":["k"],"nonces":["n"],"ciphertext":"c","x":1}"#,
            r#"{"alg":"x","subjects":["a",],"keys":["k"],"nonces":["n"],"ciphertext":"c"}"#,
        ] {
            assert!(fast(text).is_none(), "{text}");
        }
        let text =
            r#"{"alg":"x","subjects":[],"keys":["k","l"],"nonces":["n","m"],"ciphertext":"c"}"#;
        assert_eq!(fast(text), parsed(text));
    }
}
