//! Online backups: a consistent copy of a live store into a new file.
//!
//! Invariants: the copy is one read snapshot of the store (SQLite's `VACUUM INTO`, run
//! on its own connection, beside the writer and readers, blocking neither); it holds
//! the whole log in its main file, with no WAL to carry along; it is created private
//! (0600) and never over an existing non-empty file; a copy that fails is removed.

use crate::SqliteStore;
use crate::open::open_connection;
use crate::rows::db;
use annal_core::{Error, Result};
use std::path::Path;

impl SqliteStore {
    /// Copies the store, as of one moment, into a new file at `to`. Fails with
    /// [`Error::InvalidRequest`] if `to` exists and is not empty.
    pub async fn backup_to(&self, to: impl AsRef<Path>) -> Result<()> {
        let from = self.path().to_path_buf();
        let to = to.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || backup(&from, &to))
            .await
            .map_err(|e| Error::storage(format!("the backup task failed: {e}")))?
    }
}

fn backup(from: &Path, to: &Path) -> Result<()> {
    create_empty(to)?;
    let copied = open_connection(from, false)
        .and_then(|conn| conn.execute("VACUUM INTO ?1", [to.to_string_lossy()]))
        .map_err(db);
    if let Err(e) = copied {
        let _ = std::fs::remove_file(to);
        return Err(e);
    }
    Ok(())
}

/// Creates `to` empty and private; an existing empty file is taken as it is.
fn create_empty(to: &Path) -> Result<()> {
    let taken = |why: String| Error::invalid("to", why);
    match std::fs::metadata(to) {
        Ok(m) if m.len() > 0 => {
            return Err(taken(format!(
                "{} already exists: a backup never overwrites a file",
                to.display()
            )));
        }
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(taken(format!("cannot use {}: {e}", to.display()))),
    }
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(taken(format!("folder {} does not exist", dir.display())));
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    file.open(to)
        .map(drop)
        .map_err(|e| taken(format!("cannot create {}: {e}", to.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use annal_core::Store;
    use annal_core::testkit::fixtures::seed_family;

    #[tokio::test]
    async fn a_backup_of_a_live_store_is_a_whole_private_store() {
        let dir = tempfile::tempdir().expect("dir");
        let store = SqliteStore::open(dir.path().join("live.db")).expect("open");
        seed_family(&store, "family_1", 30).await;
        let to = dir.path().join("copy.db");
        store.backup_to(&to).await.expect("backup");
        seed_family(&store, "family_2", 5).await;
        let wal = dir.path().join("copy.db-wal");
        assert!(!wal.exists(), "the copy has no WAL to carry");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&to).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let copy = SqliteStore::open(&to).expect("open the copy");
        assert_eq!(
            copy.head(&[]).await.expect("head"),
            30,
            "the copy is of its moment"
        );
        assert!(copy.verify(None, None).await.expect("verify").ok);
        let again = store.backup_to(&to).await.expect_err("never over a file");
        assert_eq!(
            again.kind(),
            annal_core::ErrorKind::InvalidRequest,
            "{again}"
        );
        assert_eq!(
            copy.head(&[]).await.expect("head"),
            30,
            "the copy is untouched"
        );
    }
}
