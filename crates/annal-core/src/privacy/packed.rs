//! The packed form of a sealed personal part: the same envelope as its JSON text
//! ([`super::seal_part`]), in bytes, for a backend that can store bytes (the embedded store's
//! `sealed` column holds it as a BLOB).
//!
//! The JSON text stays the envelope's one true form: the hash chain hashes it, reads
//! and exports show it. The packed form is only how it rests on disk, about 140 bytes
//! shorter for a one-subject part of 100 bytes (no base64, no member names, the key id's
//! 16 bytes instead of its 36 characters), and [`unpack`] renders it back.
//!
//! Layout (all lengths in bytes):
//!
//! | bytes | what |
//! |---|---|
//! | 1 | [`TAG`]: packed form 1, cipher `xchacha20poly1305` |
//! | 1 | `n`, the number of subjects (layers), 1 to [`MAX_SUBJECTS`] |
//! | `n` × (1 + len) | each subject: its length (1 to 255), then its UTF-8 text |
//! | `n` × 16 | each subject's data key id, a UUID |
//! | `n` × 24 | each layer's nonce |
//! | the rest, at least 16 × `n` | the ciphertext (every layer's tag included) |
//!
//! Invariants:
//! - `unpack(pack(text)) == text`, byte for byte: [`pack`] answers `None` for any text
//!   it cannot give back exactly (another layout, escapes in a subject, a key id that
//!   is not a UUID in lowercase hyphenated form, non-canonical base64), and it checks
//!   the round trip before it answers; such a text is stored as text;
//! - [`unpack`] never guesses: bytes of any other shape (another tag, a count or length
//!   out of range, too few bytes, a subject that is not UTF-8 or would need escaping in
//!   JSON) are a [`PackedError`], which a backend reports as corruption;
//! - [`subjects`] reads the subjects off the front without rendering anything, and
//!   refuses exactly what [`unpack`] refuses (one check of the bytes serves both).

use super::MAX_SUBJECTS;
use super::aead::{NONCE_LEN, TAG_LEN};
use super::seal::{ALG, Stored, needs_escape};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::fmt;
use uuid::Uuid;

/// The first byte of packed form 1.
pub const TAG: u8 = 1;
pub(crate) const KEY_LEN: usize = 16;

/// Why bytes are not a packed sealed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedError(&'static str);

impl fmt::Display for PackedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a packed sealed form: {}", self.0)
    }
}

impl std::error::Error for PackedError {}

/// The packed form of the sealed form `text`, or `None` if it has none that renders
/// back to exactly `text` (it is then stored as text).
pub fn pack(text: &str) -> Option<Vec<u8>> {
    let s = Stored::canonical(text)?;
    if s.alg != ALG {
        return None;
    }
    let ciphertext = B64.decode(s.ciphertext.as_bytes()).ok()?;
    let mut nonces = Vec::with_capacity(s.nonces.len());
    for nonce in &s.nonces {
        let mut bytes = [0u8; NONCE_LEN];
        match B64.decode_slice(nonce.as_bytes(), &mut bytes) {
            Ok(NONCE_LEN) => nonces.push(bytes),
            _ => return None,
        }
    }
    if s.subjects.len() != s.keys.len() {
        return None;
    }
    let layers = s
        .subjects
        .iter()
        .zip(&s.keys)
        .map(|(s, k)| (s.as_ref(), k.as_ref()));
    let out = from_parts(layers, &nonces, &ciphertext)?;
    // Whatever this function missed (non-canonical base64, say) shows here.
    unpack(&out).ok().filter(|back| back == text).map(|_| out)
}

/// The packed form of a sealed part's parts (each layer's subject and data key id, and
/// its nonce, in layer order, and the ciphertext), or `None` when the parts have none:
/// no subject or too many, a subject of more than 255 bytes or one that JSON would
/// escape, a key id that is not a UUID written in lowercase hyphenated form.
/// What it answers renders ([`unpack`]) as the writer's layout renders those parts.
pub fn from_parts<'a>(
    layers: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    nonces: &[[u8; NONCE_LEN]],
    ciphertext: &[u8],
) -> Option<Vec<u8>> {
    let n = nonces.len();
    if n == 0 || n > MAX_SUBJECTS || layers.clone().count() != n {
        return None;
    }
    if ciphertext.len() < n * TAG_LEN {
        return None;
    }
    let subject_bytes: usize = layers.clone().map(|(s, _)| s.len() + 1).sum();
    let mut out =
        Vec::with_capacity(2 + subject_bytes + n * (KEY_LEN + NONCE_LEN) + ciphertext.len());
    out.push(TAG);
    out.push(u8::try_from(n).ok()?);
    for (subject, _) in layers.clone() {
        if subject.bytes().any(needs_escape) {
            return None;
        }
        out.push(u8::try_from(subject.len()).ok().filter(|l| *l > 0)?);
        out.extend_from_slice(subject.as_bytes());
    }
    let mut id = Uuid::encode_buffer();
    for (_, key) in layers {
        let uuid = Uuid::try_parse(key).ok()?;
        if *uuid.hyphenated().encode_lower(&mut id) != *key {
            return None;
        }
        out.extend_from_slice(uuid.as_bytes());
    }
    for nonce in nonces {
        out.extend_from_slice(nonce);
    }
    out.extend_from_slice(ciphertext);
    Some(out)
}

/// Reads bytes off the front of a packed form.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PackedError> {
        if self.0.len() < n {
            return Err(PackedError(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, PackedError> {
        Ok(self.take(1, what)?[0])
    }
}

/// A packed form's parts, checked as [`unpack`] checks them, nothing rendered.
pub(crate) struct Parts<'a> {
    /// The subjects, in layer order.
    pub(crate) subjects: Vec<&'a str>,
    /// Each layer's data key id, 16 bytes each.
    pub(crate) keys: &'a [u8],
    /// Each layer's nonce, [`NONCE_LEN`] bytes each.
    pub(crate) nonces: &'a [u8],
    /// The ciphertext with every layer's tag.
    pub(crate) ciphertext: &'a [u8],
}

impl<'a> Parts<'a> {
    /// Reads `bytes`, refusing exactly what [`unpack`] refuses.
    pub(crate) fn read(bytes: &'a [u8]) -> Result<Self, PackedError> {
        let mut r = Reader(bytes);
        if r.byte("empty")? != TAG {
            return Err(PackedError("an unknown tag"));
        }
        let n = usize::from(r.byte("no subject count")?);
        if n == 0 || n > MAX_SUBJECTS {
            return Err(PackedError("a subject count out of range"));
        }
        let mut subjects = Vec::with_capacity(n);
        for _ in 0..n {
            let len = usize::from(r.byte("a subject cut short")?);
            let text = std::str::from_utf8(r.take(len, "a subject cut short")?)
                .map_err(|_| PackedError("a subject that is not UTF-8"))?;
            if text.is_empty() || text.bytes().any(needs_escape) {
                return Err(PackedError("a subject that is empty or needs escaping"));
            }
            subjects.push(text);
        }
        let keys = r.take(n * KEY_LEN, "key ids cut short")?;
        let nonces = r.take(n * NONCE_LEN, "nonces cut short")?;
        let ciphertext = r.0;
        if ciphertext.len() < n * TAG_LEN {
            return Err(PackedError("a ciphertext shorter than its tags"));
        }
        Ok(Self {
            subjects,
            keys,
            nonces,
            ciphertext,
        })
    }
}

/// The subjects a packed form names, in layer order, read from its first bytes without
/// rendering the rest: what an index of subjects needs. Refuses exactly the bytes
/// [`unpack`] refuses.
pub fn subjects(bytes: &[u8]) -> Result<Vec<&str>, PackedError> {
    Parts::read(bytes).map(|p| p.subjects)
}

/// The sealed form's JSON text that `bytes` packs.
pub fn unpack(bytes: &[u8]) -> Result<String, PackedError> {
    let Parts {
        subjects,
        keys,
        nonces,
        ciphertext,
    } = Parts::read(bytes)?;
    let n = subjects.len();
    // The text's exact length, so that it is made in one allocation that is never
    // resized (the event keeps it as it is).
    let b64 = |len: usize| len.div_ceil(3) * 4;
    let len = FRAME.iter().map(|f| f.len()).sum::<usize>()
        + ALG.len()
        + subjects.iter().map(|s| s.len() + 2).sum::<usize>()
        + n * (uuid::fmt::Hyphenated::LENGTH + 2)
        + n * (b64(NONCE_LEN) + 2)
        + 3 * n.saturating_sub(1)
        + b64(ciphertext.len());
    let mut out = String::with_capacity(len);
    out.push_str(FRAME[0]);
    out.push_str(ALG);
    out.push_str(FRAME[1]);
    for (i, s) in subjects.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
    out.push_str(FRAME[2]);
    let mut id = Uuid::encode_buffer();
    for (i, key) in keys.chunks_exact(KEY_LEN).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let key = Uuid::from_slice(key).map_err(|_| PackedError("a key id"))?;
        out.push('"');
        out.push_str(key.hyphenated().encode_lower(&mut id));
        out.push('"');
    }
    out.push_str(FRAME[3]);
    for (i, nonce) in nonces.chunks_exact(NONCE_LEN).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        B64.encode_string(nonce, &mut out);
        out.push('"');
    }
    out.push_str(FRAME[4]);
    B64.encode_string(ciphertext, &mut out);
    out.push_str(FRAME[5]);
    debug_assert_eq!(out.len(), len, "the sealed text's length was foreseen");
    Ok(out)
}

/// The fixed pieces of a sealed form's text, as [`unpack`] writes them around its parts.
const FRAME: [&str; 6] = [
    r#"{"alg":""#,
    r#"","subjects":["#,
    r#"],"keys":["#,
    r#"],"nonces":["#,
    r#"],"ciphertext":""#,
    r#""}"#,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RawJson;
    use crate::privacy::{DataKey, seal_part};

    fn key(id: &str) -> DataKey {
        DataKey {
            key_id: id.into(),
            key: [9; 32],
        }
    }

    fn sealed(subjects: &[&str]) -> String {
        let keys: Vec<(&str, DataKey)> = subjects
            .iter()
            .map(|s| (*s, key(&Uuid::now_v7().to_string())))
            .collect();
        let plain = RawJson::parse(r#"{"child_name":"Sofía","grade":"A"}"#).expect("json");
        seal_part(Uuid::now_v7(), &plain, &keys)
            .expect("seal")
            .text
            .get()
            .to_owned()
    }

    #[test]
    fn what_the_writer_seals_packs_and_unpacks_to_the_same_text() {
        for subjects in [
            &["family_123"][..],
            &["family_1", "family_2", "école/ünï"][..],
        ] {
            let text = sealed(subjects);
            let packed = pack(&text).expect("packs");
            assert_eq!(packed[0], TAG);
            assert!(packed.len() + 100 < text.len(), "{}", packed.len());
            assert_eq!(unpack(&packed).as_deref(), Ok(text.as_str()));
            // Rendered at its exact length: the event keeps the text without resizing it.
            let rendered = unpack(&packed).expect("unpacks");
            assert_eq!(rendered.capacity(), rendered.len());
        }
    }

    #[test]
    fn the_writers_packed_form_is_the_packing_of_its_text() {
        let plain = RawJson::parse(r#"{"child_name":"Sofía","grade":"A"}"#).expect("json");
        let longest = "x".repeat(255);
        for subjects in [
            &["family_123"][..],
            &["family_1", "family_2", "école/ünï"][..],
            &["del\u{7f}", &longest][..],
        ] {
            let keys: Vec<(&str, DataKey)> = subjects
                .iter()
                .map(|s| (*s, key(&Uuid::now_v7().to_string())))
                .collect();
            let part = seal_part(Uuid::now_v7(), &plain, &keys).expect("seal");
            let bytes = part.packed.expect("a packed form");
            assert_eq!(unpack(&bytes).as_deref(), Ok(part.text.get()));
            assert_eq!(pack(part.text.get()), Some(bytes));
        }
    }

    #[test]
    fn parts_without_a_packed_form_are_sealed_as_text_alone() {
        let plain = RawJson::parse(r#"{"child_name":"Sofía"}"#).expect("json");
        let uuid = Uuid::now_v7().to_string();
        for (subject, key_id) in [
            ("family \"1\"", uuid.clone()),
            ("family\\1", uuid.clone()),
            ("family\t1", uuid.clone()),
            ("", uuid.clone()),
            ("family_1", "k-1".to_owned()),
            ("family_1", uuid.to_uppercase()),
            (&"x".repeat(256)[..], uuid.clone()),
        ] {
            let keys = vec![(subject, key(&key_id))];
            let part = seal_part(Uuid::now_v7(), &plain, &keys).expect("seal");
            assert_eq!(part.packed, None, "{subject} {key_id}");
            let env = crate::privacy::Envelope::parse(&part.text, 1).expect("its text");
            assert_eq!(
                (env.subjects, env.keys),
                (vec![subject.to_owned()], vec![key_id])
            );
        }
    }

    #[test]
    fn a_text_that_would_not_come_back_exactly_is_not_packed() {
        let text = sealed(&["family_1"]);
        let upper = {
            let at = text.find(r#""keys":[""#).expect("keys") + 9;
            let mut t = text.clone();
            t.replace_range(at..at + 36, &text[at..at + 36].to_uppercase());
            t
        };
        let not_a_uuid = text.replacen(r#""keys":[""#, r#""keys":["k-"#, 1);
        let escaped = text.replacen("family_1", r"family\u005f1", 1);
        let spaced = text.replacen(r#","keys""#, r#", "keys""#, 1);
        let other_alg = text.replacen(ALG, "aes256gcm", 1);
        for t in [upper, not_a_uuid, escaped, spaced, other_alg] {
            assert_eq!(pack(&t), None, "{t}");
        }
    }

    #[test]
    fn the_subjects_are_read_off_the_front_as_the_text_names_them() {
        for subjects_of in [
            &["family_123"][..],
            &["family_1", "family_2", "école/ünï"][..],
        ] {
            let packed = pack(&sealed(subjects_of)).expect("packs");
            assert_eq!(subjects(&packed).as_deref(), Ok(subjects_of));
        }
    }

    #[test]
    fn bytes_of_any_other_shape_are_refused_not_guessed() {
        let good = pack(&sealed(&["family_1"])).expect("packs");
        let mut other_tag = good.clone();
        other_tag[0] = 2;
        let mut no_subjects = good.clone();
        no_subjects[1] = 0;
        let mut too_many = good.clone();
        too_many[1] = 17;
        let mut quoted = good.clone();
        quoted[3] = b'"';
        let mut not_utf8 = good.clone();
        not_utf8[3] = 0xff;
        let short = good[..good.len() - 100].to_vec();
        for bad in [
            vec![],
            vec![TAG],
            other_tag,
            no_subjects,
            too_many,
            quoted,
            not_utf8,
            short,
        ] {
            assert!(unpack(&bad).is_err(), "{bad:?}");
            assert!(subjects(&bad).is_err(), "subjects of {bad:?}");
        }
    }
}
