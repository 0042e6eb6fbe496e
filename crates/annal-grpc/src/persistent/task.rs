//! A group's task: the one owner of its [`Dispatcher`], feeding it from the store and
//! writing what it decides (checkpoints here, parked records in [`super::parking`]).
//!
//! Invariants: one task per group; everything about the group goes through its command
//! channel ([`Cmd`]), so its state needs no lock. It reads the store only while the
//! dispatcher wants events, waits for commits when caught up, and looks at message
//! timeouts and due checkpoints every [`TICK`]. Stopping (a command, the service gone, or
//! the server shutting down) writes the checkpoint before the consumers' calls end.
//! In a cluster every checkpoint it writes carries the leader lease as its fence
//! ([`super::fence`]): a node that lost the lease to another writes none.

use super::dispatcher::{Consumer, Dispatcher, GroupFull, NackAction, Stats};
use super::fence::LeaderFence;
use super::registry::Definition;
use super::settings::StartFrom;
use crate::filter::EventFilter;
use annal_core::cluster::ClusterView;
use annal_core::streams::{self, StreamRead};
use annal_core::{CheckpointWrite, Direction, Error, Filter, Store, Uuid};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// How often a task looks at message timeouts and due checkpoints.
const TICK: Duration = Duration::from_millis(200);
/// How long a caught-up task waits for a commit before looking again.
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// What a group's task is told.
pub(crate) enum Cmd {
    /// A consumer joins; the answer says whether it may.
    Join(Consumer, oneshot::Sender<Result<(), GroupFull>>),
    /// A consumer acknowledged events.
    Ack(u64, Vec<Uuid>),
    /// A consumer nacked events, with a reason.
    Nack(u64, Vec<Uuid>, NackAction, String),
    /// A consumer's call ended.
    Leave(u64),
    /// Report the group's state.
    Info(oneshot::Sender<Stats>),
    /// Offer parked events again (at most that many).
    Replay(Option<u64>, oneshot::Sender<Result<(), Error>>),
    /// Stop, ending the consumers' calls with the reason.
    Stop(String),
}

/// A running task.
#[derive(Clone)]
pub(crate) struct Handle {
    /// The generation of the group it serves.
    pub(crate) generation: u64,
    /// Its commands.
    pub(crate) cmds: mpsc::UnboundedSender<Cmd>,
    /// Closes when the task has ended (its last checkpoint written).
    pub(crate) exited: watch::Receiver<()>,
}

/// Starts the task of `def`'s group; `shutdown` turning true stops it. In a `cluster`
/// its checkpoints carry the leader lease ([`LeaderFence`]).
pub(crate) fn spawn(
    store: Arc<dyn Store>,
    def: Definition,
    shutdown: watch::Receiver<bool>,
    cluster: Option<watch::Receiver<ClusterView>>,
) -> Handle {
    let (cmds, rx) = mpsc::unbounded_channel();
    let (exit, exited) = watch::channel(());
    let handle = Handle {
        generation: def.generation,
        cmds,
        exited,
    };
    let filter = def.settings.filter.as_ref().and_then(|f| {
        EventFilter::compile(f.on_stream, &f.regex, &f.prefixes, 1)
            .map_err(|e| tracing::warn!(error = %e.message(), "persistent subscription filter unusable; delivering everything"))
            .ok()
    });
    let task = Task {
        store,
        engine: Dispatcher::new(def, filter),
        at_head: false,
        head_seen: 0,
        fence: LeaderFence::new(cluster),
    };
    tokio::spawn(task.run(rx, shutdown, exit));
    handle
}

/// A group's task state.
pub(crate) struct Task {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) engine: Dispatcher,
    at_head: bool,
    head_seen: u64,
    /// What its checkpoint writes are fenced with.
    pub(crate) fence: LeaderFence,
}

impl Task {
    /// Loads the checkpoint and parked counts (once; retried until it works).
    pub(crate) async fn load(&mut self) -> Result<(), Error> {
        if self.engine.loaded() {
            return Ok(());
        }
        let def = self.engine.def().clone();
        let stored = self.store.checkpoint(&def.checkpoint_name()).await?;
        self.head_seen = self.store.head(&[]).await?;
        let cursor = match (stored, def.settings.start) {
            (Some(c), _) => c.position,
            (None, StartFrom::Start) => 0,
            (None, StartFrom::Revision(r)) => r,
            (None, StartFrom::Position(p)) => p.saturating_sub(1),
            (None, StartFrom::End) if def.is_all() => self.head_seen,
            (None, StartFrom::End) => {
                streams::state(self.store.as_ref(), &def.source)
                    .await?
                    .version
            }
        };
        let replayed = self
            .store
            .checkpoint(&def.replay_checkpoint_name())
            .await?
            .map_or(0, |c| c.position);
        let parked = self
            .store
            .aggregate(&def.parked_stream())
            .await?
            .map_or(0, |a| a.version);
        self.engine.start(cursor, replayed, parked);
        Ok(())
    }

    /// Reads the next page into the dispatcher.
    async fn read_page(&mut self) -> Result<(), Error> {
        let size = self.engine.read_size();
        let cursor = self.engine.cursor();
        let def = self.engine.def();
        let events = if def.is_all() {
            self.store
                .read_all(cursor, size, &Filter::default())
                .await?
        } else {
            match streams::read(
                self.store.as_ref(),
                &def.source,
                Direction::Forward,
                Some(cursor + 1),
                size,
            )
            .await
            {
                Ok(StreamRead::Events(e)) => e,
                Ok(StreamRead::NotFound) | Err(Error::StreamDeleted { .. }) => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        self.at_head = events.len() < size;
        self.engine.accept(events);
        Ok(())
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join(consumer, reply) => {
                let _ = reply.send(self.engine.join(consumer));
            }
            Cmd::Ack(consumer, ids) => {
                self.engine.ack(consumer, &ids);
                self.checkpoint_if_due(false).await;
            }
            Cmd::Nack(consumer, ids, action, reason) => {
                self.engine.nack(consumer, &ids, action, &reason);
                self.park_due().await;
                self.checkpoint_if_due(false).await;
            }
            Cmd::Leave(id) => {
                self.engine.leave(id);
                self.park_due().await;
            }
            Cmd::Info(reply) => {
                let _ = reply.send(self.engine.stats());
            }
            Cmd::Replay(stop_at, reply) => {
                let _ = reply.send(self.replay(stop_at).await);
            }
            Cmd::Stop(_) => {}
        }
    }

    /// Writes the checkpoint when the settings say it is due (or `force`).
    async fn checkpoint_if_due(&mut self, force: bool) {
        if !self.engine.checkpoint_due(force) {
            return;
        }
        self.write_replay_marker().await;
        let Some(at) = self.engine.checkpoint_to_write() else {
            return;
        };
        let name = self.engine.def().checkpoint_name();
        let Some(write) = self.fence.apply(CheckpointWrite::new(name, at)) else {
            return;
        };
        match self.store.put_checkpoint(write).await {
            Ok(_) => self.engine.checkpointed(at),
            Err(e) => {
                let group = &self.engine.def().group;
                tracing::warn!(error = %e, group = %group, "could not write a persistent subscription checkpoint")
            }
        }
    }

    /// Offers again what timed out (parking what went past its retry limit).
    async fn expire(&mut self) {
        self.engine.expire(Instant::now());
        self.park_due().await;
    }

    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut shutdown: watch::Receiver<bool>,
        _exit: watch::Sender<()>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watching = true;
        let group = self.engine.def().group.clone();
        let why = 'run: loop {
            if self.engine.has_consumers()
                && let Err(e) = self.load().await
            {
                tracing::warn!(error = %e, group = %group, "could not load a persistent subscription; retrying");
            }
            if self.engine.wants_events()
                && !self.at_head
                && let Err(e) = self.read_page().await
            {
                tracing::warn!(error = %e, group = %group, "persistent subscription read failed; retrying");
                self.at_head = true;
            }
            self.engine.dispatch();
            // Acknowledgements that arrived meanwhile, without waiting.
            while let Ok(cmd) = cmds.try_recv() {
                match cmd {
                    Cmd::Stop(why) => break 'run why,
                    cmd => self.handle(cmd).await,
                }
            }
            if self.engine.wants_events() && !self.at_head {
                continue; // more history to read at once
            }
            let live = self.engine.wants_events();
            let head_seen = self.head_seen;
            let store = self.store.clone();
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => break "the server stopped the group".to_owned(),
                    Some(Cmd::Stop(why)) => break why,
                    Some(cmd) => self.handle(cmd).await,
                },
                head = store.wait_for_head(head_seen, IDLE_WAIT), if live => {
                    match head {
                        Ok(h) => self.head_seen = h,
                        Err(e) => {
                            // A failing store is asked again after a pause, not in a spin.
                            tracing::warn!(error = %e, group = %group, "persistent subscription could not wait for commits");
                            tokio::time::sleep(TICK).await;
                        }
                    }
                    self.at_head = false;
                },
                _ = tick.tick() => {
                    self.expire().await;
                    self.checkpoint_if_due(false).await;
                    if !self.engine.has_consumers() {
                        // Nothing is read for nobody; look again when someone joins.
                        self.at_head = false;
                    }
                },
                changed = shutdown.changed(), if watching => {
                    if changed.is_err() {
                        watching = false; // no one can shut us down any more
                    } else if *shutdown.borrow() {
                        break "the server is shutting down".to_owned();
                    }
                },
            }
        };
        self.checkpoint_if_due(true).await;
        self.engine.drop_all(&why);
    }
}
