//! The durability stage: makes committed groups durable with one fdatasync of the WAL and
//! only then answers them, while the writer thread already applies the next group.
//!
//! The writer's connection commits with `synchronous=NORMAL`: a COMMIT writes its WAL
//! frames (into the OS's page cache, so they survive a killed process) but does not sync
//! them. It hands the committed group here. This thread takes every group handed to it
//! so far, calls fdatasync once on the `-wal` file, and then, in commit order, moves the
//! head and answers each job. So:
//!
//! - **an acknowledged commit is on the disk**: its frames were written before the
//!   fdatasync that precedes its answer began, and fdatasync flushes every written page
//!   of the file, whoever wrote it;
//! - **answers keep commit order**: groups are answered in the order they committed,
//!   refusals too (a conflict is never reported against a version not yet durable);
//! - **syncing overlaps applying**: while the disk syncs one batch of groups, the writer
//!   applies and commits the next, so the disk's sync time no longer adds to the CPU's;
//! - **a failed sync stops the store's writes for good**: after an fdatasync error the
//!   kernel may have dropped the pages it could not write, so a later sync could succeed
//!   without them. Every group waiting here is answered with the error, and every job
//!   after it too, until the store is reopened (SQLite then recovers the WAL it finds).
//!
//! SQLite itself still syncs where the WAL's consistency needs it under `NORMAL`: the WAL
//! before each checkpoint copies it into the store file, the store file after, and the
//! WAL header when the WAL restarts. The `-wal` file is opened here once, on the first
//! sync, and its folder synced then too (SQLite syncs a new WAL's folder only on its own
//! first sync, which `NORMAL` puts off until a checkpoint). Another connection's commits
//! (a lease write, another process) sync themselves (`synchronous=FULL`).
//!
//! Committed but not yet answered groups are visible to readers for the length of one
//! fdatasync. A killed process loses none of them (the OS holds the written pages); only
//! an OS crash or power loss inside that window can drop them, and then none was
//! acknowledged.

use annal_core::failures::WriteHealth;
use annal_core::job::{Job, Outcome};
use annal_core::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A group the writer committed, waiting for the sync that makes it durable.
pub struct Committed {
    /// The group's jobs and what each is to be answered.
    pub answers: Vec<(Job, Result<Outcome>)>,
    /// The log's last position after the group.
    pub head: u64,
}

/// Why the store stopped writing after a failed sync, shared with the writer.
#[derive(Clone, Default)]
pub struct Stopped(Arc<Mutex<Option<String>>>);

impl Stopped {
    /// The reason, once a sync failed.
    pub fn reason(&self) -> Option<String> {
        self.0.lock().map_or_else(
            |_| Some("the durability stage's state is poisoned".into()),
            |r| r.clone(),
        )
    }

    fn stop(&self, reason: &str) {
        if let Ok(mut r) = self.0.lock() {
            r.get_or_insert_with(|| reason.to_owned());
        }
    }
}

/// The `-wal` file beside the store file at `path`.
pub fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Starts the durability stage for the store file at `path`; returns where the writer
/// hands committed groups, and the thread (it ends once that sender is dropped and every
/// group handed to it is answered).
pub fn start(
    path: &Path,
    head: watch::Sender<u64>,
    health: WriteHealth,
    stopped: Stopped,
) -> std::io::Result<(Sender<Committed>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let wal = wal_path(path);
    let thread = std::thread::Builder::new()
        .name("annal-sqlite-sync".into())
        .spawn(move || run(&wal, &rx, &head, &health, &stopped))?;
    Ok((tx, thread))
}

fn run(
    wal: &Path,
    groups: &Receiver<Committed>,
    head: &watch::Sender<u64>,
    health: &WriteHealth,
    stopped: &Stopped,
) {
    let mut file: Option<File> = None;
    while let Ok(first) = groups.recv() {
        let mut batch = vec![first];
        batch.extend(groups.try_iter());
        let synced = match (stopped.reason(), &file) {
            (Some(reason), _) => Err(reason),
            (None, Some(f)) => f.sync_data().map_err(|e| sync_failed(wal, &e)),
            (None, None) => open_synced(wal)
                .map(|f| file = Some(f))
                .map_err(|e| sync_failed(wal, &e)),
        };
        match synced {
            Ok(()) => {
                health.succeeded();
                for group in batch {
                    head.send_if_modified(|h| {
                        let moved = *h != group.head;
                        *h = group.head;
                        moved
                    });
                    for (job, outcome) in group.answers {
                        job.answer(outcome);
                    }
                }
            }
            Err(reason) => {
                stopped.stop(&reason);
                let e = Error::Storage(reason.clone().into());
                health.failed(&e);
                tracing::error!(error = %reason, "annal stopped writing this store");
                for group in batch {
                    for (job, _) in group.answers {
                        job.answer(Err(Error::Storage(reason.clone().into())));
                    }
                }
            }
        }
    }
}

fn sync_failed(wal: &Path, e: &std::io::Error) -> String {
    format!(
        "the disk failed to make commits durable (fdatasync of {}: {e}); nothing \
         unacknowledged is known to be on disk, and this store accepts no more writes \
         until it is reopened",
        wal.display()
    )
}

/// Opens the `-wal` file, syncs its folder (so the file itself survives a crash) and
/// then the file.
fn open_synced(wal: &Path) -> std::io::Result<File> {
    let file = File::options().read(true).write(true).open(wal)?;
    let dir = wal
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()?;
    file.sync_data()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn group(head: u64) -> (Committed, oneshot::Receiver<Result<u64>>) {
        let (tx, rx) = oneshot::channel();
        let answers = vec![(Job::Import(Vec::new(), tx), Ok(Outcome::Import(head)))];
        (Committed { answers, head }, rx)
    }

    #[test]
    fn a_group_is_answered_and_the_head_moved_only_after_the_wal_is_synced() {
        let dir = tempfile::tempdir().expect("dir");
        let store = dir.path().join("s.db");
        std::fs::write(wal_path(&store), b"frames").expect("wal");
        let (head_tx, head_rx) = watch::channel(0);
        let stopped = Stopped::default();
        let (tx, stage) =
            start(&store, head_tx, WriteHealth::default(), stopped.clone()).expect("start");
        let (g, answer) = group(7);
        tx.send(g).expect("send");
        assert_eq!(answer.blocking_recv().expect("answered").expect("ok"), 7);
        assert_eq!(*head_rx.borrow(), 7);
        assert!(stopped.reason().is_none());
        drop(tx);
        stage.join().expect("stage ends once the writer is gone");
    }

    #[test]
    fn a_failed_sync_fails_its_groups_and_every_later_one() {
        // No -wal file: opening it for the first sync fails, as a failed fdatasync does.
        let dir = tempfile::tempdir().expect("dir");
        let store = dir.path().join("s.db");
        let (head_tx, head_rx) = watch::channel(0);
        let health = WriteHealth::default();
        let stopped = Stopped::default();
        let (tx, stage) = start(&store, head_tx, health.clone(), stopped.clone()).expect("start");
        let (g, answer) = group(3);
        tx.send(g).expect("send");
        let e = answer
            .blocking_recv()
            .expect("answered")
            .expect_err("not durable");
        assert!(
            e.to_string().contains("failed to make commits durable"),
            "{e}"
        );
        assert_eq!(
            *head_rx.borrow(),
            0,
            "the head never shows an unsynced group"
        );
        assert!(stopped.reason().is_some());
        assert!(health.failure().is_some());
        // The file appears: still refused, a failed sync is never retried.
        std::fs::write(wal_path(&store), b"frames").expect("wal");
        let (g, answer) = group(4);
        tx.send(g).expect("send");
        assert!(answer.blocking_recv().expect("answered").is_err());
        drop(tx);
        stage.join().expect("stage ends");
    }
}
