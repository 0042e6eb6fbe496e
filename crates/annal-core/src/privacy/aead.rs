//! XChaCha20-Poly1305 for personal parts, built from HChaCha20 (RustCrypto's `chacha20`)
//! and ring's ChaCha20-Poly1305.
//!
//! The construction is the one of draft-irtf-cfrg-xchacha (and of RustCrypto's
//! `XChaCha20Poly1305`, which wraps the data keys): the first 16 bytes of the 24-byte
//! nonce and the key make a subkey with HChaCha20; the message is sealed with
//! ChaCha20-Poly1305 (RFC 8439) under that subkey and the nonce `0000 || nonce[16..24]`.
//! Its output is byte for byte the same as `XChaCha20Poly1305`'s (a test below checks
//! both ways), so stores sealed before keep opening. ring's Poly1305 is what makes the
//! difference: for the short messages personal parts are (about 100 bytes),
//! RustCrypto's AVX2 Poly1305 spent most of an event's read in its set-up and
//! finalisation.
//!
//! Invariant: a nonce is never reused under a key: every nonce is 24 fresh bytes from
//! the operating system's generator ([`nonce`]), drawn 4 KiB at a time per thread and
//! each byte used once.

use chacha20::cipher::consts::U10;
use chacha20::cipher::generic_array::GenericArray;
use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use std::cell::RefCell;

/// Nonce length (bytes).
pub const NONCE_LEN: usize = 24;
/// Tag length (bytes).
pub const TAG_LEN: usize = 16;

/// Why a seal or an open failed (an open: the ciphertext, nonce, key or associated data
/// is not the one sealed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AeadError;

fn subkey(key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> Result<(LessSafeKey, Nonce), AeadError> {
    let (head, tail) = nonce.split_at(16);
    let sub = chacha20::hchacha::<U10>(
        GenericArray::from_slice(key),
        GenericArray::from_slice(head),
    );
    let key = UnboundKey::new(&CHACHA20_POLY1305, sub.as_slice()).map_err(|_| AeadError)?;
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(tail);
    Ok((LessSafeKey::new(key), Nonce::assume_unique_for_key(n)))
}

/// Seals `msg` in place under `key` and `nonce`: its bytes become the ciphertext and
/// the 16-byte tag is appended.
pub fn seal_in_place(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    msg: &mut Vec<u8>,
) -> Result<(), AeadError> {
    let (key, nonce) = subkey(key, nonce)?;
    key.seal_in_place_append_tag(nonce, Aad::from(aad), msg)
        .map_err(|_| AeadError)
}

/// Opens `sealed` (ciphertext and tag) in place; answers the plaintext's length (the
/// plaintext is `sealed[..len]`).
pub fn open_in_place(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    sealed: &mut [u8],
) -> Result<usize, AeadError> {
    let (key, nonce) = subkey(key, nonce)?;
    key.open_in_place(nonce, Aad::from(aad), sealed)
        .map(|plain| plain.len())
        .map_err(|_| AeadError)
}

thread_local! {
    /// Random bytes from the OS not yet used, and how many of them were.
    static POOL: RefCell<([u8; 4096], usize)> = const { RefCell::new(([0; 4096], 4096)) };
}

/// A fresh random nonce.
pub fn nonce() -> Result<[u8; NONCE_LEN], AeadError> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (bytes, used) = &mut *pool;
        if *used + NONCE_LEN > bytes.len() {
            OsRng.try_fill_bytes(bytes).map_err(|_| AeadError)?;
            *used = 0;
        }
        let mut out = [0u8; NONCE_LEN];
        out.copy_from_slice(&bytes[*used..*used + NONCE_LEN]);
        // Each byte serves one nonce only: wipe it as it is handed out.
        bytes[*used..*used + NONCE_LEN].fill(0);
        *used += NONCE_LEN;
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};

    #[test]
    fn it_seals_and_opens_exactly_as_rustcryptos_xchacha20poly1305() {
        let key = [3u8; 32];
        let theirs = XChaCha20Poly1305::new((&key).into());
        for len in [0usize, 1, 63, 64, 65, 100, 1000] {
            let msg: Vec<u8> = (0..len)
                .map(|i| u8::try_from(i % 251).unwrap_or(0))
                .collect();
            let n = nonce().expect("nonce");
            let aad = b"annal-personal-v1\0event";
            let mut ours = msg.clone();
            seal_in_place(&key, &n, aad, &mut ours).expect("seal");
            let expected = theirs
                .encrypt(XNonce::from_slice(&n), Payload { msg: &msg, aad })
                .expect("encrypt");
            assert_eq!(ours, expected, "length {len}");
            let mut back = expected.clone();
            let plain = open_in_place(&key, &n, aad, &mut back).expect("open");
            assert_eq!(&back[..plain], &msg[..]);
            let mut tampered = expected;
            if let Some(b) = tampered.first_mut() {
                *b ^= 1;
            }
            assert!(open_in_place(&key, &n, aad, &mut tampered).is_err());
            let mut wrong_aad = ours;
            assert!(open_in_place(&key, &n, b"other", &mut wrong_aad).is_err());
        }
    }

    #[test]
    fn nonces_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(nonce().expect("nonce")));
        }
    }
}
