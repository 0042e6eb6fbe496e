//! Before SQLite opens a store, its WAL is read for commits SQLite would throw away.
//!
//! SQLite replays a WAL up to the first frame whose checksum fails and silently drops
//! everything after it. After a torn write at the very end (a crash while a commit was
//! being written, before its sync) that is right: the commit was never acknowledged. But
//! damage in the middle of the WAL also drops every later commit, acknowledged and synced,
//! and SQLite's next checkpoint then erases the evidence.
//!
//! Invariant: a store whose WAL holds a commit frame of the current WAL generation (its
//! salts match the header's) *after* a frame that fails its checksum is refused at open
//! ([`Discarded`]), unless the operator accepts the loss (`ANNAL_ACCEPT_TRUNCATED_WAL=1`,
//! [`crate::Options::accept_truncated_wal`]). Because every acknowledged commit was synced
//! with its commit frame, such a frame can only be an acknowledged commit.
//!
//! The format (sqlite.org/walformat.html): a 32-byte header (magic, version, page size,
//! checkpoint sequence, two salts, a checksum of its first 24 bytes), then frames of a
//! 24-byte header (page number, database size for a commit frame else 0, the two salts,
//! a checksum) and one page. Checksums are cumulative over 32-bit word pairs, in the byte
//! order the magic names.

use std::path::Path;

/// Commits SQLite would drop from a damaged WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    /// The frames SQLite would keep.
    pub kept_frames: u64,
    /// The commit frames after the damage, which SQLite would drop.
    pub lost_commits: u64,
}

const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

fn be32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(w)
}

/// The WAL checksum of `data` (a multiple of 8 bytes) continuing from `s`.
fn checksum(big_endian: bool, mut s: (u32, u32), data: &[u8]) -> (u32, u32) {
    for pair in data.chunks_exact(8) {
        let word = |b: &[u8]| {
            let mut w = [0u8; 4];
            w.copy_from_slice(b);
            if big_endian {
                u32::from_be_bytes(w)
            } else {
                u32::from_le_bytes(w)
            }
        };
        s.0 = s.0.wrapping_add(word(&pair[..4])).wrapping_add(s.1);
        s.1 = s.1.wrapping_add(word(&pair[4..])).wrapping_add(s.0);
    }
    s
}

/// What SQLite would drop from the WAL of the store file at `store`, if anything. Damage
/// is confirmed by a second read after [`CONFIRM_AFTER`]: another process may have been
/// writing a commit while the first read passed (its frames half-written then), but
/// damage to committed frames stays.
pub fn check(store: &Path) -> std::io::Result<Option<Discarded>> {
    let path = crate::durable::wal_path(store);
    let read = || match std::fs::read(&path) {
        Ok(b) => Ok(discarded(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    if read()?.is_none() {
        return Ok(None);
    }
    std::thread::sleep(CONFIRM_AFTER);
    read()
}

/// How long [`check`] waits before reading a damaged-looking WAL again.
pub const CONFIRM_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// [`check`] on the WAL's bytes.
pub fn discarded(wal: &[u8]) -> Option<Discarded> {
    if wal.len() < 32 {
        return None;
    }
    let big_endian = match be32(wal, 0) {
        MAGIC_LE => false,
        MAGIC_BE => true,
        _ => return None,
    };
    let page = usize::try_from(be32(wal, 8)).ok()?;
    let salts = (be32(wal, 16), be32(wal, 20));
    let header_sum = checksum(big_endian, (0, 0), &wal[..24]);
    if header_sum != (be32(wal, 24), be32(wal, 28)) {
        // SQLite ignores the whole file; nothing in it can be told apart.
        return None;
    }
    let frame = 24 + page;
    let frames = wal[32..].chunks_exact(frame);
    let mut sum = header_sum;
    let mut kept = 0u64;
    let mut damaged = false;
    let mut lost = 0u64;
    for f in frames {
        if (be32(f, 8), be32(f, 12)) != salts {
            // An older generation's frame: the WAL ends here.
            break;
        }
        let commit = be32(f, 4) != 0;
        if damaged {
            lost += u64::from(commit);
            continue;
        }
        let next = checksum(big_endian, checksum(big_endian, sum, &f[..8]), &f[24..]);
        if next != (be32(f, 16), be32(f, 20)) {
            damaged = true;
            continue;
        }
        sum = next;
        kept += 1;
    }
    (lost > 0).then_some(Discarded {
        kept_frames: kept,
        lost_commits: lost,
    })
}
