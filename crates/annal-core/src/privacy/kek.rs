//! The key-encryption key (KEK) and the data keys it wraps.
//!
//! Invariants:
//! - the KEK never reaches the store: it comes from a file or the environment
//!   ([`Keyring::from_env`]) and the store keeps only its id ([`Keyring::id`]), a
//!   SHA-256 of it, so that opening a store with the wrong KEK fails at once, naming both
//!   ids, instead of decrypting garbage;
//! - each subject has one random 256-bit data key, stored only wrapped (XChaCha20-Poly1305
//!   under the KEK, with the subject and key id as associated data, so a wrapped key
//!   moved to another subject's row does not open);
//! - forgetting a subject removes its wrapped key ([`SubjectKey::wrapped`] becomes
//!   `None`); nothing else is ever deleted.

use crate::error::{Error, Result};
use crate::event::Timestamp;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

/// The environment variable naming a file that holds the KEK (64 hex digits).
pub const KEK_FILE_ENV: &str = "ANNAL_KEK_FILE";
/// The environment variable holding the KEK itself (64 hex digits).
pub const KEK_ENV: &str = "ANNAL_KEK";

/// Why a KEK could not be loaded, or does not fit the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KekError {
    /// The KEK's text is not 64 hex digits (32 bytes).
    #[error(
        "the key-encryption key from {from} is not 64 hex digits (32 random bytes; make one with `openssl rand -hex 32`)"
    )]
    Malformed {
        /// Where it came from.
        from: String,
    },
    /// The KEK file could not be read.
    #[error("cannot read the key-encryption key file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Both environment variables are set.
    #[error("both {KEK_FILE_ENV} and {KEK_ENV} are set: give the key-encryption key once")]
    Ambiguous,
    /// The store holds data keys wrapped by another KEK.
    #[error(
        "wrong key-encryption key: this store's data keys are wrapped by the key with id {stored}, the key given has id {given}"
    )]
    Wrong {
        /// The id the store's keys name.
        stored: String,
        /// The given key's id.
        given: String,
    },
    /// The store holds data keys but no KEK was given.
    #[error(
        "this store holds personal data whose keys are wrapped by the key-encryption key with id {stored}: give that key with {KEK_FILE_ENV} (a file) or {KEK_ENV}"
    )]
    Missing {
        /// The id the store's keys name.
        stored: String,
    },
}

/// The key-encryption key: wraps and unwraps subjects' data keys.
#[derive(Clone)]
pub struct Keyring {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("id", &self.id).finish()
    }
}

impl PartialEq for Keyring {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Keyring {
    /// A KEK from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"annal-kek-id-v1")
            .chain_update(bytes)
            .finalize();
        let id = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&bytes)),
            id,
        }
    }

    /// A KEK from 64 hex digits (surrounding whitespace ignored); `from` names the
    /// source in errors.
    pub fn from_hex(text: &str, from: &str) -> Result<Self, KekError> {
        let text = text.trim();
        let bad = || KekError::Malformed {
            from: from.to_owned(),
        };
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self::from_bytes(bytes))
    }

    /// A KEK from a file holding 64 hex digits.
    pub fn from_file(path: &Path) -> Result<Self, KekError> {
        let text = std::fs::read_to_string(path).map_err(|source| KekError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        Self::from_hex(&text, &path.display().to_string())
    }

    /// A warning when the key file `ANNAL_KEK_FILE` names can be read by other users
    /// than its owner (its mode lets the group or others read it), for a server to say
    /// at start; `None` when it cannot, or no file is named. A KEK read by whoever can
    /// read the data defeats keeping it apart (docs/privacy.md).
    pub fn env_file_warning() -> Option<String> {
        let path = std::env::var_os(KEK_FILE_ENV).filter(|v| !v.is_empty())?;
        exposed(Path::new(&path))
    }

    /// The KEK named by the environment: the file in `ANNAL_KEK_FILE`, or the digits in
    /// `ANNAL_KEK`; `None` when neither is set.
    pub fn from_env() -> Result<Option<Self>, KekError> {
        let file = std::env::var_os(KEK_FILE_ENV).filter(|v| !v.is_empty());
        let inline = std::env::var(KEK_ENV).ok().filter(|v| !v.is_empty());
        match (file, inline) {
            (Some(_), Some(_)) => Err(KekError::Ambiguous),
            (Some(path), None) => Self::from_file(Path::new(&path)).map(Some),
            (None, Some(hex)) => Self::from_hex(&hex, KEK_ENV).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The KEK's id: the first 8 bytes of SHA-256("annal-kek-id-v1" || KEK), in hex.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Checks the ids of the KEKs that wrapped a store's data keys against this one (or
    /// against none): the check every backend runs when it opens. With `without_kek`, a
    /// store opened with no KEK at all passes (for verifying, which opens no part); a
    /// KEK that is given is checked all the same.
    pub fn check_store(
        given: Option<&Self>,
        stored_ids: &[String],
        without_kek: bool,
    ) -> Result<(), KekError> {
        let Some(stored) = stored_ids.first() else {
            return Ok(());
        };
        match given {
            None if without_kek => Ok(()),
            None => Err(KekError::Missing {
                stored: stored.clone(),
            }),
            Some(k) => match stored_ids.iter().find(|s| **s != k.id) {
                Some(other) => Err(KekError::Wrong {
                    stored: other.clone(),
                    given: k.id.clone(),
                }),
                None => Ok(()),
            },
        }
    }

    /// A new random data key for `subject`, and its row (wrapped by this KEK).
    pub fn new_key(&self, subject: &str, now: Timestamp) -> Result<(DataKey, SubjectKey)> {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let key_id = uuid::Uuid::now_v7().hyphenated().to_string();
        let wrapped = self.wrap(subject, &key_id, &key)?;
        let data = DataKey {
            key_id: key_id.as_str().into(),
            key: key.into(),
        };
        let row = SubjectKey {
            subject: subject.to_owned(),
            key_id,
            kek_id: self.id.clone(),
            wrapped: Some(wrapped),
            created_at: now,
            forgotten_at: None,
            forgotten_position: None,
        };
        Ok((data, row))
    }

    fn wrap(&self, subject: &str, key_id: &str, key: &Key) -> Result<String> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = wrap_aad(subject, key_id);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: key,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Corrupt("a data key could not be wrapped".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(B64.encode(out))
    }

    fn unwrap_raw(&self, row: &SubjectKey) -> Result<Option<Key>> {
        let Some(wrapped) = &row.wrapped else {
            return Ok(None);
        };
        let bad = |why: &str| {
            Error::Corrupt(format!(
                "the data key of subject '{}' (key {}) {why}",
                row.subject, row.key_id
            ))
        };
        if row.kek_id != self.id {
            return Err(kek_rotated(&row.kek_id, &self.id));
        }
        let bytes = B64.decode(wrapped).map_err(|_| bad("is not base64"))?;
        if bytes.len() < 24 {
            return Err(bad("is too short"));
        }
        let (nonce, sealed) = bytes.split_at(24);
        let aad = wrap_aad(&row.subject, &row.key_id);
        let key = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| bad("does not open with the key-encryption key"))?;
        if key.len() != 32 {
            return Err(bad("has the wrong length"));
        }
        Ok(Some(*Key::from_slice(&key)))
    }

    /// The data key a row wraps; `None` once the subject was forgotten. A row wrapped
    /// by another KEK is [`kek_rotated`]'s error; one that does not open with this KEK
    /// is [`Error::Corrupt`].
    pub fn unwrap(&self, row: &SubjectKey) -> Result<Option<DataKey>> {
        Ok(self.unwrap_raw(row)?.map(|key| DataKey {
            key_id: row.key_id.as_str().into(),
            key: key.into(),
        }))
    }

    /// The row with its data key wrapped by `to` instead (KEK rotation); a forgotten
    /// row, which has no key, only names `to` from then on (so the store remembers
    /// its KEK even when every subject was forgotten).
    pub fn rewrap(&self, row: &SubjectKey, to: &Keyring) -> Result<SubjectKey> {
        let Some(key) = self.unwrap_raw(row)? else {
            return Ok(SubjectKey {
                kek_id: to.id.clone(),
                ..row.clone()
            });
        };
        Ok(SubjectKey {
            kek_id: to.id.clone(),
            wrapped: Some(to.wrap(&row.subject, &row.key_id, &key)?),
            ..row.clone()
        })
    }
}

/// The error of a process whose key-encryption key does not wrap the key table
/// (`stored` does; this process holds `given`): another process rotated it since this
/// one opened the store, or opened an empty store with another key and made its first
/// data key. Not corruption: restarting with the key that wraps the table serves again.
pub fn kek_rotated(stored: &str, given: &str) -> Error {
    Error::Closed(format!(
        "the key table is wrapped by the key-encryption key with id {stored}, not by this \
         process's ({given}): it was rotated since this process opened the store, or \
         another process uses another key; restart this process with the key with id \
         {stored}"
    ))
}

/// The warning for a key file other users may read (unix permissions), if it is one.
#[cfg(unix)]
fn exposed(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "the key-encryption key file {} can be read by other users than its owner \
             (mode {:o}): `chmod 600` it, and keep it apart from the data and its backups \
             (docs/privacy.md)",
            path.display(),
            mode & 0o777
        )
    })
}

#[cfg(not(unix))]
fn exposed(_path: &Path) -> Option<String> {
    None
}

fn wrap_aad(subject: &str, key_id: &str) -> Vec<u8> {
    let mut aad = b"annal-subject-key-v1\0".to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(subject.as_bytes());
    aad
}

/// A subject's data key, unwrapped. Cloning it copies the key and shares its id (the
/// writer hands a key to every event it seals).
#[derive(Clone)]
pub struct DataKey {
    /// Its id, stored with every ciphertext it made.
    pub key_id: std::sync::Arc<str>,
    /// The key itself (sealing and opening: [`super::aead`]).
    pub(crate) key: [u8; 32],
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// A row of the key table: one subject's data key, wrapped, or the record that it was
/// forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectKey {
    /// The data subject (an opaque id such as `family_123`).
    pub subject: String,
    /// The data key's id.
    pub key_id: String,
    /// The id of the KEK that wrapped it.
    pub kek_id: String,
    /// base64(nonce || ciphertext) of the data key; `None` once forgotten.
    pub wrapped: Option<String>,
    /// When the key was made.
    pub created_at: Timestamp,
    /// When the subject was forgotten.
    pub forgotten_at: Option<Timestamp>,
    /// The position of the `$subjectForgotten` event.
    pub forgotten_position: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(b: u8) -> Keyring {
        Keyring::from_bytes([b; 32])
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_warned_about_and_a_private_one_is_not() {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!("annal-kek-{}.hex", uuid::Uuid::now_v7()));
        std::fs::write(&path, "1".repeat(64)).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let warned = exposed(&path);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let private = exposed(&path);
        std::fs::remove_file(&path).expect("remove");
        assert!(
            warned
                .as_deref()
                .is_some_and(|w| w.contains("644") && w.contains("chmod 600")),
            "{warned:?}"
        );
        assert_eq!(private, None);
    }

    #[test]
    fn a_data_key_unwraps_with_its_kek_and_not_with_another() {
        let (_, row) = kek(1).new_key("family_1", Timestamp::now()).expect("key");
        assert!(kek(1).unwrap(&row).expect("unwrap").is_some());
        let moved = SubjectKey {
            kek_id: kek(2).id().to_owned(),
            ..row.clone()
        };
        assert!(matches!(kek(2).unwrap(&moved), Err(Error::Corrupt(_))));
    }

    #[test]
    fn a_wrapped_key_moved_to_another_subject_does_not_open() {
        let (_, row) = kek(1).new_key("family_1", Timestamp::now()).expect("key");
        let moved = SubjectKey {
            subject: "family_2".into(),
            ..row
        };
        assert!(matches!(kek(1).unwrap(&moved), Err(Error::Corrupt(_))));
    }

    #[test]
    fn rewrapping_moves_a_key_to_the_new_kek() {
        let (_, row) = kek(1).new_key("family_1", Timestamp::now()).expect("key");
        let rewrapped = kek(1).rewrap(&row, &kek(2)).expect("rewrap");
        assert_eq!(rewrapped.kek_id, kek(2).id());
        assert!(kek(2).unwrap(&rewrapped).expect("unwrap").is_some());
    }

    #[test]
    fn a_kek_must_be_64_hex_digits() {
        assert!(Keyring::from_hex(&"ab".repeat(32), "test").is_ok());
        assert!(matches!(
            Keyring::from_hex("abc", "test"),
            Err(KekError::Malformed { .. })
        ));
        assert!(Keyring::from_hex(&"zz".repeat(32), "test").is_err());
    }

    #[test]
    fn opening_a_store_checks_the_kek_ids_its_keys_name() {
        let ids = vec![kek(1).id().to_owned()];
        assert!(Keyring::check_store(Some(&kek(1)), &ids, false).is_ok());
        assert!(matches!(
            Keyring::check_store(Some(&kek(2)), &ids, true),
            Err(KekError::Wrong { .. })
        ));
        assert!(matches!(
            Keyring::check_store(None, &ids, false),
            Err(KekError::Missing { .. })
        ));
        assert!(Keyring::check_store(None, &[], false).is_ok());
        assert!(
            Keyring::check_store(None, &ids, true).is_ok(),
            "for verifying"
        );
    }
}
