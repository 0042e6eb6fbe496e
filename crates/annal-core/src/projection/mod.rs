//! Durable named subscriptions and the projection runner: a [`Handler`] (or a
//! [`TypedHandler`], given each event decoded into an aggregate's own type) fed by a
//! [`Subscription`](crate::subscription::Subscription) whose position, status
//! (running, rebuilding, stopped, faulted), error_count and last_error are kept in the
//! store's checkpoint of the same name.
//!
//! Invariants:
//! - a checkpoint's position only ever covers events the handler has handled (or that
//!   the filters skip); after a crash the runner resumes after it, so delivery is
//!   at-least-once and redelivery is limited to what was handled since the last
//!   checkpoint write (at most `checkpoint_every` events or `checkpoint_interval`);
//! - appends a handler returns are committed in one [`Store::transact`] with the
//!   checkpoint moved to that event's position: they happen exactly once, however often
//!   the event is delivered;
//! - every checkpoint write is a compare-and-set on the position the runner last wrote,
//!   so a second runner (or a reset behind its back) makes it stop with an error rather
//!   than both writing; with a [`ProjectionOptions::fence`] every write (and every
//!   commit of a handler's appends) also needs the partition lease to be held still;
//! - an event that keeps failing is retried `retry.attempts` times with exponential
//!   backoff, then either faults the projection (it stops at the event before) or is
//!   skipped and named in last_error ([`FailurePolicy`]);
//! - a rebuild resets the handler and the checkpoint to 0 (status rebuilding), replays
//!   the whole log while new commits keep arriving, and turns to running once it has
//!   caught up with the head;
//! - with [`ProjectionOptions::rebuild_on_forget`], a `$subjectForgotten` event the
//!   runner has not rebuilt for yet starts a rebuild once handled, so a read model
//!   rebuilds with the forgotten subject's personal parts erased (docs/privacy.md).

use crate::append::{AppendRequest, Transaction};
use crate::checkpoint::{Checkpoint, CheckpointStatus, CheckpointWrite, MAX_LAST_ERROR_BYTES};
use crate::error::{Error, Result};
use crate::event::RecordedEvent;
use crate::lease::LeaseFence;
use crate::store::Store;
use crate::subscription::{Start, Subscription, SubscriptionOptions, subscribe};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

mod typed;

pub use typed::{Typed, TypedHandler, spawn_typed};

/// What a handler's failure carries: any error, shown in last_error.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Reacts to events. Returned appends are committed together with the checkpoint.
#[async_trait]
pub trait Handler: Send + 'static {
    /// Handles one event. The appends returned (none: nothing to write) are committed
    /// in one transaction with the checkpoint at this event's position; an error, or a
    /// refused commit, makes the runner retry the event.
    async fn handle(&mut self, event: &RecordedEvent) -> Result<Vec<AppendRequest>, HandlerError>;

    /// Forgets everything before a rebuild replays the log (default: nothing to forget).
    async fn reset(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// What to do with an event that still fails after every retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Stop the projection with status faulted, before the event.
    #[default]
    Fault,
    /// Move past the event, naming it in last_error.
    Skip,
}

/// How a failing event is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts per event, the first included (at least 1; default 5).
    pub attempts: u32,
    /// The pause after the first failure, doubled after each further one (default 10 ms).
    pub first_backoff: Duration,
    /// The longest pause (default 5 s).
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl Retry {
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// A projection's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionOptions {
    /// Its name: the checkpoint's name.
    pub name: String,
    /// What it reads (its `start` is ignored: the checkpoint says where to resume).
    pub subscription: SubscriptionOptions,
    /// Write the checkpoint after this many handled events (default 10,000)…
    pub checkpoint_every: u64,
    /// …or this long after the first unrecorded one (default 100 ms).
    pub checkpoint_interval: Duration,
    /// Retries of a failing event.
    pub retry: Retry,
    /// What to do when an event still fails after every retry.
    pub on_failure: FailurePolicy,
    /// Start with a rebuild.
    pub rebuild: bool,
    /// Rebuild whenever a data subject is forgotten (a `$subjectForgotten` event, which
    /// the subscription's filter must let through), so the read model holds no personal
    /// data of a forgotten subject.
    pub rebuild_on_forget: bool,
    /// Fence every checkpoint write with this partition lease: once it changes hands,
    /// the runner's writes fail and it stops with [`Error::LeaseConflict`].
    pub fence: Option<LeaseFence>,
}

impl ProjectionOptions {
    /// Defaults for a projection called `name` over every event.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            subscription: SubscriptionOptions::default(),
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_millis(100),
            retry: Retry::default(),
            on_failure: FailurePolicy::Fault,
            rebuild: false,
            rebuild_on_forget: false,
            fence: None,
        }
    }

    /// Reads through `subscription`'s filters.
    pub fn subscription(mut self, subscription: SubscriptionOptions) -> Self {
        self.subscription = subscription;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the failure policy.
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }

    /// Sets how often the checkpoint is written.
    pub fn checkpoint(mut self, every: u64, interval: Duration) -> Self {
        self.checkpoint_every = every.max(1);
        self.checkpoint_interval = interval;
        self
    }

    /// Starts with a rebuild.
    pub fn rebuilding(mut self) -> Self {
        self.rebuild = true;
        self
    }

    /// Rebuilds whenever a data subject is forgotten ([`ProjectionOptions::rebuild_on_forget`]).
    pub fn rebuilding_on_forget(mut self) -> Self {
        self.rebuild_on_forget = true;
        self
    }
}

/// Why a projection ended other than by [`ProjectionHandle::stop`].
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// An event kept failing and the policy is [`FailurePolicy::Fault`]; the checkpoint
    /// says faulted, just before the event.
    #[error("projection '{name}' is faulted at the event at position {position}: {message}")]
    Faulted {
        /// The projection.
        name: String,
        /// The failing event's position.
        position: u64,
        /// The last error.
        message: String,
    },
    /// The store refused or failed (a checkpoint conflict: another runner wrote it).
    #[error("projection '{name}': {source}")]
    Store {
        /// The projection.
        name: String,
        /// The store's error.
        #[source]
        source: Error,
    },
    /// The runner's task ended without an answer (it panicked or was aborted).
    #[error("projection '{0}' ended abnormally")]
    Aborted(String),
}

/// Where a running projection is, as its runner last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Every matching event at or below this position has been handled.
    pub position: u64,
    /// The last checkpoint written.
    pub checkpointed: u64,
    /// Its status.
    pub status: CheckpointStatus,
    /// Errors so far.
    pub error_count: u64,
    /// The last error.
    pub last_error: Option<String>,
}

enum Control {
    Stop,
    Rebuild,
}

/// Reads the store's head for [`ProjectionHandle::wait_caught_up`].
pub(crate) type HeadReader =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<u64>> + Send>> + Send + Sync>;

/// Reads `store`'s head, for handles that do not know the store's type.
pub(crate) fn head_reader<S: Store + ?Sized + 'static>(store: Arc<S>) -> HeadReader {
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move { store.head(&[]).await })
    })
}

/// A running projection.
pub struct ProjectionHandle<H> {
    name: String,
    control: mpsc::Sender<Control>,
    progress: watch::Receiver<Progress>,
    task: tokio::task::JoinHandle<Result<H, ProjectionError>>,
    head: HeadReader,
}

impl<H> std::fmt::Debug for ProjectionHandle<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionHandle")
            .field("name", &self.name)
            .field("progress", &*self.progress.borrow())
            .finish_non_exhaustive()
    }
}

impl<H> ProjectionHandle<H> {
    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it is now.
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Waits until `done` holds for its progress, or the runner ends (then `false`).
    pub async fn wait_until(&self, done: impl FnMut(&Progress) -> bool) -> bool {
        let mut rx = self.progress.clone();
        rx.wait_for(done).await.is_ok()
    }

    /// Waits until it has handled everything committed before this call (its position
    /// reaches the head the store had then; events its filter skips count as handled).
    /// `Ok(true)` once it has; `Ok(false)` if `timeout` passed first or the runner
    /// ended (faulted, stopped); an error if the head could not be read. What tests and
    /// read-your-writes endpoints wait on after an append.
    pub async fn wait_caught_up(&self, timeout: Duration) -> Result<bool> {
        let head = (self.head)().await?;
        let reached = self.wait_until(|p| p.position >= head);
        Ok(tokio::time::timeout(timeout, reached)
            .await
            .unwrap_or(false))
    }

    /// Resets it and replays the log from the beginning, then goes live again.
    pub async fn rebuild(&self) {
        let _ = self.control.send(Control::Rebuild).await;
    }

    /// Writes the checkpoint with status stopped and hands back the handler.
    pub async fn stop(self) -> Result<H, ProjectionError> {
        let _ = self.control.send(Control::Stop).await;
        self.join().await
    }

    /// Waits for it to end on its own (faulted, or a store error).
    pub async fn join(self) -> Result<H, ProjectionError> {
        match self.task.await {
            Ok(out) => out,
            Err(_) => Err(ProjectionError::Aborted(self.name)),
        }
    }

    /// Whether its runner has ended (faulted, failed, or stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Aborts its runner at once, like a crash (no final checkpoint), without waiting.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Kills it like a crash would: no final checkpoint is written.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Starts a projection runner on `store` (a tokio runtime must be running).
pub fn spawn<S, H>(store: Arc<S>, handler: H, options: ProjectionOptions) -> ProjectionHandle<H>
where
    S: Store + ?Sized + 'static,
    H: Handler,
{
    spawn_mapped(store, handler, options, |h| h)
}

/// [`spawn`], handing back `finish(handler)` when the runner stops.
fn spawn_mapped<S, H, T>(
    store: Arc<S>,
    handler: H,
    options: ProjectionOptions,
    finish: fn(H) -> T,
) -> ProjectionHandle<T>
where
    S: Store + ?Sized + 'static,
    H: Handler,
    T: Send + 'static,
{
    let (control_tx, control_rx) = mpsc::channel(4);
    let (progress_tx, progress_rx) = watch::channel(Progress {
        position: 0,
        checkpointed: 0,
        status: CheckpointStatus::Running,
        error_count: 0,
        last_error: None,
    });
    let name = options.name.clone();
    let head = head_reader(store.clone());
    let runner = Runner {
        store,
        handler,
        options,
        expected: None,
        position: 0,
        status: CheckpointStatus::Running,
        error_count: 0,
        last_error: None,
        unrecorded: 0,
        flush_at: None,
        rebuilt_for: 0,
        progress: progress_tx,
        control: control_rx,
    };
    ProjectionHandle {
        name,
        control: control_tx,
        progress: progress_rx,
        task: tokio::spawn(async move { runner.run().await.map(finish) }),
        head,
    }
}

/// A projection's checkpoint with the head and how far behind it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionInfo {
    /// The checkpoint.
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    /// The head position when it was read.
    pub head: u64,
    /// head − checkpoint position; `None` for a checkpoint of another log (its
    /// `source`), whose head this store does not know.
    pub lag: Option<u64>,
}

/// One projection's checkpoint and lag; `None` if it has no checkpoint.
pub async fn info<S: Store + ?Sized>(store: &S, name: &str) -> Result<Option<ProjectionInfo>> {
    let Some(checkpoint) = store.checkpoint(name).await? else {
        return Ok(None);
    };
    let head = store.head(&[]).await?;
    Ok(Some(with_lag(checkpoint, head)))
}

/// Every checkpoint with its lag, by name.
pub async fn list<S: Store + ?Sized>(store: &S) -> Result<Vec<ProjectionInfo>> {
    let checkpoints = store.checkpoints().await?;
    let head = store.head(&[]).await?;
    Ok(checkpoints.into_iter().map(|c| with_lag(c, head)).collect())
}

fn with_lag(checkpoint: Checkpoint, head: u64) -> ProjectionInfo {
    ProjectionInfo {
        lag: checkpoint
            .source
            .is_none()
            .then(|| head.saturating_sub(checkpoint.position)),
        head,
        checkpoint,
    }
}

/// What the runner does next.
enum Flow {
    Continue,
    Stop,
    Rebuild,
}

struct Runner<S: ?Sized, H> {
    store: Arc<S>,
    handler: H,
    options: ProjectionOptions,
    /// The checkpoint position last written (`None`: no checkpoint yet).
    expected: Option<u64>,
    /// Handled through here.
    position: u64,
    status: CheckpointStatus,
    error_count: u64,
    last_error: Option<String>,
    /// Events handled since the last checkpoint write.
    unrecorded: u64,
    /// When the unrecorded progress must be written.
    flush_at: Option<Instant>,
    /// The last `$subjectForgotten` position a rebuild started for (its replay sees
    /// the event again and must not start another).
    rebuilt_for: u64,
    progress: watch::Sender<Progress>,
    control: mpsc::Receiver<Control>,
}

impl<S: Store + ?Sized + 'static, H: Handler> Runner<S, H> {
    async fn run(mut self) -> Result<H, ProjectionError> {
        let name = self.options.name.clone();
        match self.drive().await {
            Ok(()) => Ok(self.handler),
            Err(e) => Err(match e {
                Failure::Faulted { position, message } => ProjectionError::Faulted {
                    name,
                    position,
                    message,
                },
                Failure::Store(source) => ProjectionError::Store { name, source },
            }),
        }
    }

    async fn drive(&mut self) -> Result<(), Failure> {
        let mut was_rebuilding = false;
        if let Some(c) = self.store.checkpoint(&self.options.name).await? {
            // A rebuild interrupted by a crash resumes as a rebuild: `running` only once
            // the replay reaches the head.
            was_rebuilding = c.status == CheckpointStatus::Rebuilding;
            self.expected = Some(c.position);
            self.position = c.position;
            self.error_count = c.error_count;
            self.last_error = c.last_error;
        }
        let mut sub = if self.options.rebuild {
            self.reset().await?
        } else {
            self.status = if was_rebuilding {
                CheckpointStatus::Rebuilding
            } else {
                CheckpointStatus::Running
            };
            self.write_checkpoint().await?;
            self.resubscribe().await?
        };
        loop {
            let flush_at = self.flush_at;
            let flow = tokio::select! {
                biased;
                control = self.control.recv() => match control {
                    Some(Control::Rebuild) => Flow::Rebuild,
                    Some(Control::Stop) | None => Flow::Stop,
                },
                () = sleep_until(flush_at) => {
                    self.write_checkpoint().await?;
                    Flow::Continue
                }
                batch = sub.next_batch() => match batch {
                    Ok(batch) => self.take(batch).await?,
                    Err(e) => {
                        // The store failed under the subscription: note it, back off,
                        // and resubscribe from what has been handled.
                        self.note_error(format!("reading: {e}"));
                        match self.pause(self.options.retry.max_backoff).await {
                            Flow::Continue => {
                                sub = self.resubscribe().await?;
                                Flow::Continue
                            }
                            other => other,
                        }
                    }
                },
            };
            match flow {
                Flow::Continue => {}
                Flow::Stop => {
                    self.status = CheckpointStatus::Stopped;
                    self.write_checkpoint().await?;
                    return Ok(());
                }
                Flow::Rebuild => {
                    drop(sub);
                    sub = self.reset().await?;
                }
            }
        }
    }

    async fn resubscribe(&mut self) -> Result<Subscription, Failure> {
        let mut options = self.options.subscription.clone();
        options.start = Start::After(self.position);
        Ok(subscribe(self.store.clone(), options).await?)
    }

    /// Resets the handler and the checkpoint, and subscribes from the beginning.
    async fn reset(&mut self) -> Result<Subscription, Failure> {
        if let Err(e) = self.handler.reset().await {
            let message = format!("resetting for a rebuild: {e}");
            self.note_error(message.clone());
            self.status = CheckpointStatus::Faulted;
            self.write_checkpoint().await?;
            return Err(Failure::Faulted {
                position: 0,
                message,
            });
        }
        self.position = 0;
        self.error_count = 0;
        self.last_error = None;
        self.status = CheckpointStatus::Rebuilding;
        self.write_checkpoint().await?;
        self.resubscribe().await
    }

    /// Handles a batch's events, then records how far the batch reached.
    async fn take(&mut self, batch: crate::subscription::Batch) -> Result<Flow, Failure> {
        for event in &batch.events {
            if event.position <= self.position {
                continue;
            }
            match self.handle(event).await? {
                Flow::Continue => {}
                other => return Ok(other),
            }
            if self.options.rebuild_on_forget
                && event.event_type == crate::privacy::FORGOTTEN_EVENT_TYPE
                && event.position > self.rebuilt_for
            {
                self.rebuilt_for = event.position;
                return Ok(Flow::Rebuild);
            }
            if self.unrecorded >= self.options.checkpoint_every {
                self.write_checkpoint().await?;
            }
        }
        if batch.through > self.position {
            self.position = batch.through;
            self.mark_unrecorded(0);
        }
        if batch.caught_up && self.status == CheckpointStatus::Rebuilding {
            self.status = CheckpointStatus::Running;
            self.write_checkpoint().await?;
        }
        self.publish();
        Ok(Flow::Continue)
    }

    /// Handles one event, with retries; commits its appends with the checkpoint.
    async fn handle(&mut self, event: &RecordedEvent) -> Result<Flow, Failure> {
        let mut failures = 0u32;
        loop {
            let outcome = match self.handler.handle(event).await {
                Ok(appends) if appends.is_empty() => Ok(false),
                Ok(appends) => self.commit(appends, event.position).await?.map(|()| true),
                Err(e) => Err(e.to_string()),
            };
            let message = match outcome {
                Ok(committed) => {
                    self.position = event.position;
                    if committed {
                        self.unrecorded = 0;
                        self.flush_at = None;
                    } else {
                        self.mark_unrecorded(1);
                    }
                    return Ok(Flow::Continue);
                }
                Err(message) => message,
            };
            failures += 1;
            let what = format!(
                "event {} ({}) at position {}",
                event.event_id, event.event_type, event.position
            );
            self.note_error(format!("{what}: {message}"));
            if failures >= self.options.retry.attempts.max(1) {
                return match self.options.on_failure {
                    FailurePolicy::Fault => {
                        self.status = CheckpointStatus::Faulted;
                        self.write_checkpoint().await?;
                        Err(Failure::Faulted {
                            position: event.position,
                            message,
                        })
                    }
                    FailurePolicy::Skip => {
                        self.note_error(format!(
                            "skipped {what} after {failures} attempts: {message}"
                        ));
                        self.position = event.position;
                        self.write_checkpoint().await?;
                        Ok(Flow::Continue)
                    }
                };
            }
            self.write_checkpoint().await?;
            match self.pause(self.options.retry.backoff(failures)).await {
                Flow::Continue => {}
                other => return Ok(other),
            }
        }
    }

    /// Commits a handler's appends with the checkpoint at `position`. A checkpoint
    /// conflict is fatal; any other refusal is the handler's failure (retried).
    async fn commit(
        &mut self,
        appends: Vec<AppendRequest>,
        position: u64,
    ) -> Result<Result<(), String>, Failure> {
        let transaction = Transaction {
            appends,
            checkpoint: Some(self.write(position)),
        };
        match self.store.transact(transaction).await {
            Ok(_) => {}
            Err(e @ Error::LeaseConflict { .. }) => return Err(Failure::Store(e)),
            Err(e @ Error::CheckpointConflict { .. }) => {
                // An earlier attempt whose answer was lost may have committed.
                match self.store.checkpoint(&self.options.name).await? {
                    Some(c) if c.position == position && self.expected != Some(position) => {}
                    _ => return Err(Failure::Store(e)),
                }
            }
            Err(e) => return Ok(Err(format!("committing its appends: {e}"))),
        }
        self.position = position;
        self.recorded(position);
        Ok(Ok(()))
    }

    /// Sleeps for `pause` unless told to stop or rebuild.
    async fn pause(&mut self, pause: Duration) -> Flow {
        tokio::select! {
            () = tokio::time::sleep(pause) => Flow::Continue,
            control = self.control.recv() => match control {
                Some(Control::Rebuild) => Flow::Rebuild,
                Some(Control::Stop) | None => Flow::Stop,
            },
        }
    }

    fn note_error(&mut self, message: String) {
        self.error_count += 1;
        self.last_error = Some(truncate(message));
        self.publish();
    }

    fn mark_unrecorded(&mut self, events: u64) {
        self.unrecorded += events;
        if self.flush_at.is_none() {
            self.flush_at = Some(Instant::now() + self.options.checkpoint_interval);
        }
    }

    fn write(&self, position: u64) -> CheckpointWrite {
        CheckpointWrite {
            name: self.options.name.clone(),
            position,
            source: None,
            status: self.status,
            error_count: self.error_count,
            last_error: self.last_error.clone(),
            expected_position: Some(self.expected),
            lease: self.options.fence.clone(),
        }
    }

    async fn write_checkpoint(&mut self) -> Result<(), Failure> {
        let written = self.store.put_checkpoint(self.write(self.position)).await?;
        self.recorded(written.position);
        Ok(())
    }

    fn recorded(&mut self, position: u64) {
        self.expected = Some(position);
        self.unrecorded = 0;
        self.flush_at = None;
        self.publish();
    }

    fn publish(&self) {
        let p = Progress {
            position: self.position,
            checkpointed: self.expected.unwrap_or(0),
            status: self.status,
            error_count: self.error_count,
            last_error: self.last_error.clone(),
        };
        self.progress.send_replace(p);
    }
}

/// Why the runner stopped by itself.
enum Failure {
    Faulted { position: u64, message: String },
    Store(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Store(e)
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_LAST_ERROR_BYTES {
        let mut cut = MAX_LAST_ERROR_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}
