//! Which way a group commits: the one synchronous transaction, or an unflushed commit
//! confirmed by a synchronous one of the writer's own (see the module docs of
//! [`crate::writer`], "Durable before visible").
//!
//! The choice is made under the head lock, from the head the group locked:
//!
//! - the head this writer's last group left (no other writer committed since): the
//!   writer is alone, and that head is durable (the last group's callers were answered
//!   only once it was). The group takes the synchronous path, as a store with one
//!   writer always has: one transaction, one flush, the head lock held across it;
//! - any other head (another process committed since, or the writer does not know: its
//!   first group, or its last one failed): that head may not be durable yet, and the
//!   lock is contended. A group that moves the head commits unflushed, and every such
//!   group confirms with the durable row, so its callers (and any answer it read from
//!   another writer's commit) wait for a flush that covers the head it locked;
//! - for [`CONTENDED_FOR`] after the last sight of another writer, groups keep
//!   committing unflushed even when the head is their own: two processes that take
//!   turns at the lock would otherwise fall back to one flush per lock hold every
//!   other group. After it, the writer is alone again and takes the synchronous path.

use std::time::{Duration, Instant};

/// How long after the last sight of another writer's commit groups keep committing
/// unflushed.
pub const CONTENDED_FOR: Duration = Duration::from_secs(1);

/// What one group does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    /// Commit the group's transaction with `synchronous_commit = off` (the head lock is
    /// released without waiting for the flush), and move the head without raising
    /// `head.durable_position` nor notifying.
    pub unflushed: bool,
    /// After the group's COMMIT, raise this writer's `durable` row to the group's head
    /// in a synchronous transaction of its own (which notifies); callers are answered
    /// once it committed.
    pub confirm: bool,
}

/// What a writer remembers between groups.
#[derive(Debug, Default)]
pub struct Adaptive {
    /// The head its last group left, durable when it was answered; `None`: unknown.
    last_end: Option<u64>,
    /// Groups commit unflushed until then.
    contended_until: Option<Instant>,
}

impl Adaptive {
    /// The path of a group that locked the head at `locked` and moves it when `moves`.
    pub fn choose(&mut self, locked: u64, moves: bool, now: Instant) -> Path {
        let others = self.last_end != Some(locked);
        if others && self.last_end.is_some() {
            self.contended_until = Some(now + CONTENDED_FOR);
        }
        let contended = self.contended_until.is_some_and(|t| now < t);
        let unflushed = moves && (others || contended);
        Path {
            unflushed,
            confirm: unflushed || others,
        }
    }

    /// The group committed (and was confirmed, if its path says so): `end` is durable.
    pub fn committed(&mut self, end: u64) {
        self.last_end = Some(end);
    }

    /// The group failed: what it left is unknown.
    pub fn failed(&mut self) {
        self.last_end = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNC: Path = Path {
        unflushed: false,
        confirm: false,
    };
    const UNFLUSHED: Path = Path {
        unflushed: true,
        confirm: true,
    };

    #[test]
    fn a_writer_alone_commits_synchronously_once_it_knows_the_head() {
        let now = Instant::now();
        let mut a = Adaptive::default();
        // Its first group cannot know whether the head it found is durable.
        assert_eq!(a.choose(10, true, now), UNFLUSHED);
        a.committed(12);
        assert_eq!(a.choose(12, true, now), SYNC);
        a.committed(15);
        assert_eq!(a.choose(15, false, now), SYNC);
    }

    #[test]
    fn another_writers_commit_switches_to_unflushed_commits_until_contention_ends() {
        let now = Instant::now();
        let mut a = Adaptive::default();
        a.committed(5);
        // Another process moved the head from 5 to 9.
        assert_eq!(a.choose(9, true, now), UNFLUSHED);
        a.committed(11);
        // Its own head again, but within the contended window.
        assert_eq!(a.choose(11, true, now + CONTENDED_FOR / 2), UNFLUSHED);
        a.committed(12);
        // Nothing to write, its own head: no flush needed.
        assert_eq!(a.choose(12, false, now + CONTENDED_FOR / 2), SYNC);
        // The window has passed: alone again.
        assert_eq!(a.choose(12, true, now + CONTENDED_FOR * 2), SYNC);
    }

    #[test]
    fn a_group_that_writes_nothing_after_another_writer_still_confirms_the_head_it_read() {
        let now = Instant::now();
        let mut a = Adaptive::default();
        a.committed(5);
        let p = a.choose(8, false, now);
        assert!(!p.unflushed);
        assert!(
            p.confirm,
            "an answer read from another writer's commit waits for its flush"
        );
    }

    #[test]
    fn a_failed_group_leaves_the_head_unknown() {
        let now = Instant::now();
        let mut a = Adaptive::default();
        a.committed(5);
        a.failed();
        assert_eq!(a.choose(5, true, now), UNFLUSHED);
    }
}
