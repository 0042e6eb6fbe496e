//! Digests kept in a folder (`annal serve --digest-dir DIR --digest-every 1h`), and the
//! newest of them checked before a store is served (`annal verify --digest DIR` reads
//! the same folder).
//!
//! Invariants:
//! - each digest is one file, `digest-<taken_at>-<position>.json`, holding exactly what
//!   `annal digest` prints, so `annal verify --digest FILE` and `docs/verify_chain.py
//!   --expect` take it as is; it is written to a temporary name, synced, then renamed,
//!   so a crash never leaves half a digest under a digest's name;
//! - the newest digest is the one taken last (then the highest position); a file in the
//!   folder named like a digest that does not parse is an error, never skipped;
//! - a server refuses to start on a store that no longer holds the newest digest's
//!   prefix (its tail cut off, or its history rewritten), before it writes anything;
//! - a digest is written only when the head moved since the last one.

use super::CliError;
use annal::{Digest, Store, digest};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const PREFIX: &str = "digest-";
const SUFFIX: &str = ".json";

/// A folder of digests.
#[derive(Debug, Clone)]
pub struct DigestDir {
    dir: PathBuf,
}

impl DigestDir {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The newest digest in the folder, with its file; `None` when there is none (or no
    /// folder yet).
    pub fn latest(&self) -> Result<Option<(PathBuf, Digest)>, CliError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CliError::Usage(format!(
                    "cannot read the digest folder {}: {e}",
                    self.dir.display()
                )));
            }
        };
        let mut newest: Option<(PathBuf, Digest)> = None;
        for entry in entries {
            let path = entry?.path();
            let is_digest = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX));
            if !is_digest {
                continue;
            }
            let d = read(&path)?;
            let newer = newest
                .as_ref()
                .is_none_or(|(_, n)| (d.taken_at, d.position) > (n.taken_at, n.position));
            if newer {
                newest = Some((path, d));
            }
        }
        Ok(newest)
    }

    /// Writes `d` as a new file in the folder (made 0700 if missing), durably.
    pub fn write(&self, d: &Digest) -> Result<PathBuf, CliError> {
        let failed = |e: std::io::Error| {
            CliError::Failed(format!(
                "cannot write a digest into {}: {e}",
                self.dir.display()
            ))
        };
        create_private_dir(&self.dir).map_err(failed)?;
        let stamp: String = d
            .taken_at
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        let name = format!("{PREFIX}{stamp}-{}{SUFFIX}", d.position);
        let path = self.dir.join(&name);
        let partial = self.dir.join(format!(".{name}.partial"));
        let mut json = serde_json::to_vec(d).map_err(std::io::Error::from)?;
        json.push(b'\n');
        let write = || -> std::io::Result<()> {
            std::fs::write(&partial, &json)?;
            std::fs::File::open(&partial)?.sync_all()?;
            std::fs::rename(&partial, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(failed)?;
        Ok(path)
    }
}

/// Reads one digest file, as `annal digest` printed it.
pub fn read(path: &Path) -> Result<Digest, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read digest file {}: {e}", path.display())))?;
    serde_json::from_str(text.trim()).map_err(|e| {
        CliError::Usage(format!(
            "{} is not a digest as `annal digest` prints it: {e}",
            path.display()
        ))
    })
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Checks that `store` still holds the prefix the folder's newest digest names (one
/// event read, not the whole chain). Returns that digest's position (`None`: no digest
/// yet), so the next one is written only once the head has moved on.
pub async fn check_before_serving(
    store: &dyn Store,
    dir: &DigestDir,
) -> Result<Option<u64>, CliError> {
    let Some((path, last)) = dir.latest()? else {
        return Ok(None);
    };
    if let Some(bad) = digest::check_anchor(store, last.position, last.hash).await? {
        return Err(CliError::Failed(format!(
            "refusing to serve: the store does not hold what the last digest recorded \
             ({}, taken {}): {}. Run `annal verify --digest {}` for the whole report. If \
             the store was restored from an older copy on purpose, move the digests after \
             it out of {} and start again",
            path.display(),
            last.taken_at,
            bad.reason.as_deref().unwrap_or("it differs"),
            path.display(),
            dir.dir.display(),
        )));
    }
    tracing::info!(
        digest = %path.display(),
        position = last.position,
        "the store holds the last digest's prefix"
    );
    Ok(Some(last.position))
}

/// Takes a digest and writes it unless the head is still at `last`; returns the
/// position now written down.
pub async fn write_if_moved(
    store: &dyn Store,
    dir: &DigestDir,
    last: Option<u64>,
) -> Result<Option<u64>, CliError> {
    let d = digest::take(store).await?;
    if Some(d.position) == last {
        return Ok(last);
    }
    // Writing syncs the file and the folder: off tokio's workers.
    let (path, d) = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || dir.write(&d).map(|path| (path, d)))
            .await
            .map_err(|e| CliError::Failed(format!("the digest writer stopped: {e}")))??
    };
    tracing::info!(
        digest = %path.display(),
        position = d.position,
        hash = %d.hash,
        "digest written"
    );
    Ok(Some(d.position))
}

/// Writes a digest every `every` while the server runs, and a last one when `stop`
/// fires (or its sender is dropped). A failed write is logged at error level and tried
/// again at the next tick; the last one's failure is returned.
pub fn spawn(
    store: Arc<dyn Store>,
    dir: DigestDir,
    every: Duration,
    mut last: Option<u64>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<Result<(), CliError>> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => break,
            }
            match write_if_moved(store.as_ref(), &dir, last).await {
                Ok(position) => last = position,
                Err(e) => tracing::error!(error = %e, "could not write the scheduled digest"),
            }
        }
        write_if_moved(store.as_ref(), &dir, last).await.map(drop)
    })
}

/// The longest `--digest-every`: a year (a longer one is surely a typo, and past some
/// length a timer cannot be set at all).
const MAX_EVERY: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses `--digest-every`: a duration such as `1h`, `15m` or `90s`, from a second to a
/// year.
pub fn parse_every(text: &str) -> Result<Duration, String> {
    let every =
        humantime::parse_duration(text).map_err(|e| format!("{e} (for example 1h, 15m, 90s)"))?;
    if every < Duration::from_secs(1) {
        return Err("at least 1s".into());
    }
    if every > MAX_EVERY {
        return Err("at most a year (366d)".into());
    }
    Ok(every)
}

#[cfg(test)]
mod tests {
    use super::*;
    use annal::{Hash, Timestamp};

    fn digest(position: u64, micros: i64) -> Digest {
        Digest {
            position,
            hash: Hash::ZERO,
            recorded_at: None,
            taken_at: Timestamp::from_micros(micros),
        }
    }

    #[test]
    fn the_newest_digest_is_the_one_taken_last() {
        let tmp = tempfile::tempdir().expect("dir");
        let dir = DigestDir::new(tmp.path().join("digests"));
        assert!(dir.latest().expect("no folder yet").is_none());
        dir.write(&digest(7, 2_000_000)).expect("write");
        let newest = dir.write(&digest(9, 3_000_000)).expect("write");
        dir.write(&digest(8, 1_000_000)).expect("write");
        std::fs::write(tmp.path().join("digests/notes.txt"), "not a digest").expect("other file");
        let (path, d) = dir.latest().expect("read").expect("some");
        assert_eq!((path, d.position), (newest, 9));
    }

    #[test]
    fn a_damaged_digest_file_is_an_error_not_skipped() {
        let tmp = tempfile::tempdir().expect("dir");
        let dir = DigestDir::new(tmp.path().to_path_buf());
        dir.write(&digest(7, 2_000_000)).expect("write");
        std::fs::write(tmp.path().join("digest-x-1.json"), "{").expect("damaged");
        let e = dir.latest().expect_err("damaged");
        assert!(e.to_string().contains("is not a digest"), "{e}");
    }

    #[test]
    fn the_schedule_takes_human_durations_of_a_second_or_more() {
        assert_eq!(parse_every("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_every("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_every("0s").is_err());
        assert!(
            parse_every("300000000000y").is_err(),
            "too long to set a timer"
        );
        assert_eq!(parse_every("366d"), Ok(MAX_EVERY));
        assert!(parse_every("soon").is_err());
    }
}
