//! How ids and hashes are stored in `events` (schema version 8): as bytes, not text.
//!
//! - `event_id` is the UUID's 16 bytes;
//! - `correlation_id` and `causation_id` are the 16 bytes of a UUID when the id given
//!   is a UUID in its canonical text form (lowercase, hyphenated), and the text as given
//!   otherwise (KurrentDB clients and the seed use ids such as `enrollment_abc123`);
//! - `hash` is the SHA-256's 32 bytes.
//!
//! Invariant: reading gives back exactly the text that was written. Only the canonical
//! form is stored as bytes, and bytes are read back in that form; any other text is
//! stored as it is. A value of another shape (text where bytes belong and cannot be
//! read, a blob of the wrong length) is reported as corrupt, never guessed at. Reads
//! accept the text forms of versions before 8 too, so a row an older tool wrote by hand
//! still reads.

use annal_core::{Hash, Uuid};
use rusqlite::types::{Value, ValueRef};

/// The stored form of a correlation or causation id (and of a filter's value for them).
pub fn id_value(id: &str) -> Value {
    match canonical_uuid(id) {
        Some(uuid) => Value::Blob(uuid.as_bytes().to_vec()),
        None => Value::Text(id.to_owned()),
    }
}

/// `id` as a UUID if it is one in canonical text form, the only form stored as bytes.
fn canonical_uuid(id: &str) -> Option<Uuid> {
    if id.len() != 36 {
        return None;
    }
    let uuid = Uuid::try_parse(id).ok()?;
    let mut buf = Uuid::encode_buffer();
    (uuid.hyphenated().encode_lower(&mut buf) == id).then_some(uuid)
}

/// A stored correlation or causation id.
pub fn id_from(v: ValueRef<'_>) -> Result<Option<String>, String> {
    match v {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map(|t| Some(t.to_owned()))
            .map_err(|e| e.to_string()),
        ValueRef::Blob(b) => Uuid::from_slice(b)
            .map(|u| Some(u.hyphenated().to_string()))
            .map_err(|_| format!("{} bytes where a UUID's 16 belong", b.len())),
        other => Err(format!("a {} value", other.data_type())),
    }
}

/// A stored event id.
pub fn event_id_from(v: ValueRef<'_>) -> Result<Uuid, String> {
    match v {
        ValueRef::Blob(b) => {
            Uuid::from_slice(b).map_err(|_| format!("{} bytes where 16 belong", b.len()))
        }
        ValueRef::Text(t) => Uuid::try_parse_ascii(t).map_err(|e| e.to_string()),
        other => Err(format!("a {} value", other.data_type())),
    }
}

/// A stored hash.
pub fn hash_from(v: ValueRef<'_>) -> Result<Hash, String> {
    match v {
        ValueRef::Blob(b) => <[u8; 32]>::try_from(b)
            .map(Hash)
            .map_err(|_| format!("{} bytes where 32 belong", b.len())),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map_err(|e| e.to_string())?
            .parse()
            .map_err(|e: annal_core::chain::ParseHashError| e.to_string()),
        other => Err(format!("a {} value", other.data_type())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(id: &str) -> Option<String> {
        let stored = id_value(id);
        id_from(ValueRef::from(&stored)).expect("reads back")
    }

    #[test]
    fn a_canonical_uuid_is_stored_as_its_16_bytes_and_read_back_exactly() {
        let id = "0190a5b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b";
        assert!(matches!(id_value(id), Value::Blob(ref b) if b.len() == 16));
        assert_eq!(round_trip(id).as_deref(), Some(id));
    }

    #[test]
    fn any_other_id_is_stored_as_the_text_given() {
        for id in [
            "enrollment_abc123",
            "0190A5B2-7C3D-7E4F-8A9B-0C1D2E3F4A5B",
            "0190a5b27c3d7e4f8a9b0c1d2e3f4a5b",
            "{0190a5b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b}",
            "urn:uuid:0190a5b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b",
            "",
        ] {
            assert_eq!(id_value(id), Value::Text(id.to_owned()), "{id}");
            assert_eq!(round_trip(id).as_deref(), Some(id));
        }
    }

    #[test]
    fn a_blob_of_the_wrong_length_is_refused_not_guessed() {
        assert!(id_from(ValueRef::Blob(&[1; 15])).is_err());
        assert!(event_id_from(ValueRef::Blob(&[1; 17])).is_err());
        assert!(hash_from(ValueRef::Blob(&[1; 31])).is_err());
        assert!(event_id_from(ValueRef::Integer(7)).is_err());
    }

    #[test]
    fn the_text_forms_of_older_versions_still_read() {
        let id = Uuid::from_u128(42);
        let text = id.hyphenated().to_string();
        assert_eq!(event_id_from(ValueRef::Text(text.as_bytes())), Ok(id));
        let hash = Hash([7; 32]);
        assert_eq!(
            hash_from(ValueRef::Text(hash.to_hex().as_bytes())),
            Ok(hash)
        );
        assert_eq!(hash_from(ValueRef::Blob(&[7; 32])), Ok(hash));
    }
}
