//! The durability stage: makes committed groups durable with one fdatasync of the WAL and
//! only then answers them, while the writer thread already applies the next group.
//!
//! The writer's connection commits with `synchronous=NORMAL`: a COMMIT writes its WAL
//! frames (into the OS's page cache, so they survive a killed process) but does not sync
//! them. It hands the committed group here. This stage's thread takes every group handed
//! to it so far, calls fdatasync once on the `-wal` file, and then, in commit order, moves
//! the head and answers each job. When no next job is waiting for the writer and nothing
//! waits at the stage, the writer does the same itself, inline (a lone append then costs
//! no extra thread wake-up, which measured −19% on one writer). So:
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
//! - **readers never see what is not yet durable**: a COMMIT makes a group visible to
//!   other connections before its sync, so the store's reads are capped
//!   ([`Durability::visible_cap`]): before its COMMIT the writer records the group's
//!   first position, after the fdatasync the stage drops it, and a read that takes the
//!   cap after its snapshot began hides every position from the earliest recorded one
//!   on. An event once served therefore survives an OS crash or power loss too, so a
//!   projection's checkpoint never names a position that a crash could give to another
//!   event. Reads stay monotonic: a group's positions follow everything committed before
//!   it (it reads the head under the write lock), so the cap never hides a position that
//!   was visible without it, another process's commits included. The file's WAL is
//!   synced when the store opens, so frames a killed process left unsynced are durable
//!   before anything reads them. (Another process's writer on the same file caps only its
//!   own reads: its groups are visible here for the length of its sync;
//!   docs/storage.md.)

use crate::index::Nudge;
use annal_core::failures::WriteHealth;
use annal_core::job::{Job, Outcome};
use annal_core::{Error, Result};
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Makes committed groups durable and answers them: on the stage's thread, or on the
/// writer's own when nothing else is waiting ([`Durability::hand`]).
pub struct Durability {
    wal: PathBuf,
    /// The `-wal` file, opened on the first sync.
    file: Mutex<Option<File>>,
    head: watch::Sender<u64>,
    health: WriteHealth,
    /// Why the store stopped writing, once a sync failed.
    stopped: Mutex<Option<String>>,
    /// Groups handed to the stage and not answered yet.
    pending: AtomicUsize,
    /// The first position of each group with events that the writer committed (or is
    /// committing) and that is not yet durable, oldest first.
    unsynced: Mutex<VecDeque<u64>>,
    /// Wakes the indexer after each sync.
    nudge: Arc<Nudge>,
}

/// The `-wal` file beside the store file at `path`.
pub fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

impl Durability {
    /// The durability of the store file at `path`; its head and health are the store's.
    /// Everything the file holds counts as durable: call [`sync_at_open`] first.
    pub fn new(path: &Path, head: watch::Sender<u64>, health: WriteHealth) -> Arc<Self> {
        Arc::new(Self {
            wal: wal_path(path),
            file: Mutex::new(None),
            head,
            health,
            stopped: Mutex::new(None),
            pending: AtomicUsize::new(0),
            unsynced: Mutex::new(VecDeque::new()),
            nudge: Arc::default(),
        })
    }

    /// What wakes the indexer ([`crate::index`]) when a group was synced.
    pub fn nudge(&self) -> Arc<Nudge> {
        self.nudge.clone()
    }

    /// The last position this store's syncs made durable.
    pub fn durable_head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Called by the writer before each group: waits while the indexer is too far
    /// behind the durable log ([`Nudge::hold_back`]).
    pub fn hold_back(&self) {
        let head = self.durable_head();
        let waited = self.nudge.hold_back(head);
        if !waited.is_zero() {
            tracing::debug!(
                ?waited,
                head,
                indexed = self.nudge.indexed(),
                "the writer waited for the indexer"
            );
        }
    }

    /// Called by the writer before the COMMIT of a group whose first event is at
    /// `first`: from then on reads hide positions from `first` on until it is synced.
    pub fn committing(&self, first: u64) {
        if let Ok(mut unsynced) = self.unsynced.lock() {
            unsynced.push_back(first);
        }
    }

    /// Called by the writer when the COMMIT announced by [`Self::committing`] failed
    /// (nothing of the group was written).
    pub fn not_committed(&self, first: u64) {
        if let Ok(mut unsynced) = self.unsynced.lock()
            && unsynced.back() == Some(&first)
        {
            unsynced.pop_back();
        }
    }

    /// The last position a read may show, if some commit of this store is visible but
    /// not yet durable; `None` when every commit is. Call it after the read's snapshot
    /// began (its first statement), and cap what that snapshot shows with it. (A
    /// poisoned lock answers 0: nothing is shown rather than something not durable.)
    pub fn visible_cap(&self) -> Option<u64> {
        match self.unsynced.lock() {
            Ok(unsynced) => unsynced.front().map(|first| first.saturating_sub(1)),
            Err(_) => Some(0),
        }
    }

    /// The groups up to `head` are durable.
    fn synced(&self, head: u64) {
        if let Ok(mut unsynced) = self.unsynced.lock() {
            while unsynced.front().is_some_and(|&first| first <= head) {
                unsynced.pop_front();
            }
        }
    }

    /// Why the store accepts no more writes, once a sync failed.
    pub fn stopped(&self) -> Option<String> {
        self.stopped.lock().map_or_else(
            |_| Some("the durability stage's state is poisoned".into()),
            |r| r.clone(),
        )
    }

    /// Starts the stage's thread; returns where groups are handed to it, and the thread
    /// (it ends once that sender is dropped and every group handed to it is answered).
    pub fn start(
        self: &Arc<Self>,
    ) -> std::io::Result<(Sender<Committed>, std::thread::JoinHandle<()>)> {
        let (tx, rx) = std::sync::mpsc::channel();
        let this = self.clone();
        let thread = std::thread::Builder::new()
            .name("annal-sqlite-sync".into())
            .spawn(move || this.run(&rx))?;
        Ok((tx, thread))
    }

    /// Makes `group` durable and answers it. With nothing waiting at the stage and no
    /// next job waiting for the writer (`busy` false), the writer syncs it itself: a
    /// hand-off would only add a thread wake-up to a lone append's time. Otherwise it goes
    /// to the stage, behind the groups there, and the writer moves on.
    pub fn hand(&self, stage: &Sender<Committed>, group: Committed, busy: bool) {
        if !busy && self.pending.load(Ordering::Acquire) == 0 {
            self.settle(vec![group]);
            return;
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(unsent) = stage.send(group) {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            for (job, _) in unsent.0.answers {
                job.answer(Err(Error::Storage(
                    "the durability stage has stopped".into(),
                )));
            }
        }
    }

    fn run(&self, groups: &Receiver<Committed>) {
        while let Ok(first) = groups.recv() {
            let mut batch = vec![first];
            batch.extend(groups.try_iter());
            let n = batch.len();
            self.settle(batch);
            self.pending.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// One fdatasync for `batch`, then its head and answers in commit order; or, if the
    /// sync fails (now or before), the error for every job of it.
    fn settle(&self, batch: Vec<Committed>) {
        let synced = match self.stopped() {
            Some(reason) => Err(reason),
            None => self.sync().map_err(|e| sync_failed(&self.wal, &e)),
        };
        match synced {
            Ok(()) => {
                self.health.succeeded();
                for group in batch {
                    self.synced(group.head);
                    self.head.send_if_modified(|h| {
                        let moved = *h != group.head;
                        *h = group.head;
                        moved
                    });
                    for (job, outcome) in group.answers {
                        job.answer(outcome);
                    }
                }
                self.nudge.nudge();
            }
            Err(reason) => {
                if let Ok(mut r) = self.stopped.lock()
                    && r.is_none()
                {
                    tracing::error!(error = %reason, "annal stopped writing this store");
                    *r = Some(reason.clone());
                }
                self.health.failed(&Error::Storage(reason.clone().into()));
                for group in batch {
                    for (job, _) in group.answers {
                        job.answer(Err(Error::Storage(reason.clone().into())));
                    }
                }
            }
        }
    }

    fn sync(&self) -> std::io::Result<()> {
        let mut file = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("the WAL handle's lock is poisoned"))?;
        match file.as_ref() {
            Some(f) => f.sync_data(),
            None => {
                *file = Some(open_synced(&self.wal)?);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
impl Durability {
    /// Holds every sync (the writer's inline one and the stage's) until the guard is
    /// dropped: what a slow disk does, for tests of what reads show meanwhile.
    pub(crate) fn hold_syncs(&self) -> std::sync::MutexGuard<'_, Option<File>> {
        self.file.lock().expect("the WAL handle's lock")
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

/// Syncs the `-wal` file beside the store file at `path`, if there is one: frames a
/// killed process wrote but never synced become durable before this one reads them.
pub fn sync_at_open(path: &Path) -> std::io::Result<()> {
    match open_synced(&wal_path(path)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map(drop),
    }
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
        let d = Durability::new(&store, head_tx, WriteHealth::default());
        let (tx, stage) = d.start().expect("start");
        let (g, answer) = group(7);
        d.hand(&tx, g, true);
        assert_eq!(answer.blocking_recv().expect("answered").expect("ok"), 7);
        assert_eq!(*head_rx.borrow(), 7);
        let (g, answer) = group(9);
        d.hand(&tx, g, false);
        assert_eq!(answer.blocking_recv().expect("answered").expect("ok"), 9);
        assert_eq!(*head_rx.borrow(), 9);
        assert!(d.stopped().is_none());
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
        let d = Durability::new(&store, head_tx, health.clone());
        let (tx, stage) = d.start().expect("start");
        let (g, answer) = group(3);
        d.hand(&tx, g, true);
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
        assert!(d.stopped().is_some());
        assert!(health.failure().is_some());
        // The file appears: still refused, a failed sync is never retried.
        std::fs::write(wal_path(&store), b"frames").expect("wal");
        let (g, answer) = group(4);
        d.hand(&tx, g, false);
        assert!(answer.blocking_recv().expect("answered").is_err());
        drop(tx);
        stage.join().expect("stage ends");
    }
}
