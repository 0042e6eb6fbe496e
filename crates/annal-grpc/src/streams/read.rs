//! The `Read` call: stream and `$all` reads, forwards and backwards, and catch-up
//! subscriptions to either.
//!
//! Invariants: one task per call feeds a bounded channel ([`READ_CHANNEL`] messages),
//! reading a page at a time only once the client took what came before, each page sized
//! by bytes ([`PageBudget`]: about 512 KiB, at most [`PAGE`] events), so a client that
//! stops reading holds about one page and a few messages in the server; it ends when the client goes, the deadline
//! passes or the server shuts down. Boundaries follow KurrentDB: `$all` forwards from P
//! includes P, backwards from P excludes P; subscriptions exclude their start; stream
//! reads from revision R include R. A `$all` read or subscription from a position where
//! no event is (commit ≠ prepare, or past the last event: annal's positions are the
//! integers from 1 to the head, each an event's) is refused as KurrentDB refuses one
//! ([`invalid_read_position`], [`invalid_subscription_position`]); 0 is the start.

use super::{RespStream, Streams};
use crate::call::{caller, deadline, within};
use crate::convert::{self, revision_of, stream_id, stream_name};
use crate::filter::EventFilter;
use crate::pb::event_store::client::streams::{ReadReq, ReadResp, read_req, read_resp};
use crate::status::{
    invalid_read_position, invalid_subscription_position, stream_deleted, to_status,
};
use annal_core::access::Operation;
use annal_core::budget::{Held, PageBudget, event_bytes};
use annal_core::streams::{self, StreamRead, StreamState};
use annal_core::{Direction, Filter, RecordedEvent, Store};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Most events read from the store at a time.
const PAGE: usize = 500;
/// Messages a call's task may send ahead of the client.
const READ_CHANNEL: usize = 16;
/// How long a live subscription waits for a commit before looking again.
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// Where a read sends its messages, and how long it waits for its caller to take the
/// next one before it ends the call ([`Options::stalled_call`](crate::Options)). Over
/// HTTP/2 a caller can stop granting flow-control window to one call while its
/// connection stays healthy (it answers pings, so the connection's send timeout never
/// fires); without this, that call would hold its page, and the page's share of the
/// read-ahead cap, for as long as the connection lives.
#[derive(Clone)]
struct Tx {
    sender: mpsc::Sender<Result<ReadResp, Status>>,
    patience: Duration,
}

/// Serves one Read call.
pub(super) async fn read(
    service: &Streams,
    request: Request<ReadReq>,
) -> Result<Response<RespStream<ReadResp>>, Status> {
    caller(&request, Operation::Read)?;
    let deadline = deadline(request.metadata());
    let options = request
        .into_inner()
        .options
        .ok_or_else(|| Status::invalid_argument("a read needs options"))?;
    let plan = ReadPlan::new(options)?;
    let (sender, rx) = mpsc::channel(READ_CHANNEL);
    let tx = Tx {
        sender,
        patience: service.stalled_call,
    };
    let store = service.store.clone();
    let mut shutdown = service.shutdown.clone();
    tokio::spawn(async move {
        let err_tx = tx.clone();
        let run = plan.run(store.as_ref(), &tx);
        let outcome = tokio::select! {
            r = within(deadline, run) => r,
            _ = shutdown.wait_for(|s| *s) => Err(Status::unavailable("the server is shutting down")),
            () = tx.sender.closed() => Ok(()),
        };
        if let Err(status) = outcome {
            let _ = err_tx.sender.send(Err(status)).await;
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// Counts a page as read-ahead ([`Held`]) while it is being sent.
fn held(page: &[RecordedEvent]) -> Held {
    Held::new(page.iter().map(event_bytes).sum())
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// What a `Read` asks for.
struct ReadPlan {
    target: Target,
    backwards: bool,
    /// `None`: a subscription.
    count: Option<u64>,
    filter: Option<EventFilter>,
    /// Whether the request carried a filter (KurrentDB names its refusals after it).
    filtered: bool,
    structured_ids: bool,
}

enum Target {
    Stream(String, read_req::options::stream_options::RevisionOption),
    All(read_req::options::all_options::AllOption),
}

impl ReadPlan {
    fn new(o: read_req::Options) -> Result<Self, Status> {
        use read_req::options::{CountOption, FilterOption, StreamOption, uuid_option};
        let target = match o.stream_option {
            Some(StreamOption::Stream(s)) => Target::Stream(
                stream_name(s.stream_identifier.as_ref())?,
                s.revision_option
                    .ok_or_else(|| Status::invalid_argument("a stream read needs a revision"))?,
            ),
            Some(StreamOption::All(a)) => Target::All(
                a.all_option
                    .ok_or_else(|| Status::invalid_argument("a $all read needs a position"))?,
            ),
            None => return Err(Status::invalid_argument("a read needs a stream or $all")),
        };
        let count = match o.count_option {
            Some(CountOption::Count(n)) => Some(n),
            Some(CountOption::Subscription(_)) => None,
            None => Some(u64::MAX),
        };
        let filter = match &o.filter_option {
            Some(FilterOption::Filter(f)) => {
                if matches!(target, Target::Stream(..)) {
                    return Err(Status::invalid_argument("filters apply to $all reads only"));
                }
                EventFilter::new(Some(f))?
            }
            _ => None,
        };
        let filtered = matches!(o.filter_option, Some(FilterOption::Filter(_)));
        let structured_ids = matches!(
            o.uuid_option.and_then(|u| u.content),
            Some(uuid_option::Content::Structured(_))
        );
        Ok(Self {
            target,
            backwards: o.read_direction == read_req::options::ReadDirection::Backwards as i32,
            count,
            filter,
            filtered,
            structured_ids,
        })
    }

    fn event(&self, e: &RecordedEvent) -> ReadResp {
        ReadResp {
            content: Some(read_resp::Content::Event(convert::read_event(
                e,
                self.structured_ids,
            ))),
        }
    }

    async fn run(&self, store: &dyn Store, tx: &Tx) -> Result<(), Status> {
        match (&self.target, self.count) {
            (Target::Stream(s, from), Some(n)) => self.read_stream(store, tx, s, from, n).await,
            (Target::All(from), Some(n)) => self.read_all(store, tx, from, n).await,
            (Target::Stream(s, from), None) => self.subscribe_stream(store, tx, s, from).await,
            (Target::All(from), None) => self.subscribe_all(store, tx, from).await,
        }
    }

    async fn read_stream(
        &self,
        store: &dyn Store,
        tx: &Tx,
        stream: &str,
        from: &read_req::options::stream_options::RevisionOption,
        count: u64,
    ) -> Result<(), Status> {
        use read_req::options::stream_options::RevisionOption as R;
        let st = streams::state(store, stream).await.map_err(to_status)?;
        if st.tombstoned {
            return Err(stream_deleted(stream));
        }
        if !st.has_visible_events() {
            send(
                tx,
                ReadResp {
                    content: Some(read_resp::Content::StreamNotFound(
                        read_resp::StreamNotFound {
                            stream_identifier: Some(stream_id(stream)),
                        },
                    )),
                },
            )
            .await;
            return Ok(());
        }
        let direction = if self.backwards {
            Direction::Backward
        } else {
            Direction::Forward
        };
        let mut next = match (from, self.backwards) {
            (R::Revision(r), _) => r.saturating_add(1),
            (R::Start(_), false) => 1,
            (R::Start(_), true) => 1,
            (R::End(_), false) => st.version.saturating_add(1),
            (R::End(_), true) => st.version,
        };
        let mut left = count;
        let mut budget = PageBudget::new(PAGE);
        while left > 0 && next >= 1 {
            let page = budget.events().min(usize::try_from(left).unwrap_or(PAGE));
            let events = match streams::read_with(store, &st, stream, direction, Some(next), page)
                .await
                .map_err(to_status)?
            {
                StreamRead::Events(e) => e,
                StreamRead::NotFound => Vec::new(),
            };
            let Some(last) = events.last() else {
                break;
            };
            next = if self.backwards {
                last.aggregate_version.saturating_sub(1)
            } else {
                last.aggregate_version.saturating_add(1)
            };
            let full = events.len() == page;
            budget.observe(&events);
            let _held = held(&events);
            for e in &events {
                if !send(tx, self.event(e)).await {
                    return Ok(());
                }
            }
            left -= events.len() as u64;
            if !full {
                break;
            }
        }
        Ok(())
    }

    async fn read_all(
        &self,
        store: &dyn Store,
        tx: &Tx,
        from: &read_req::options::all_options::AllOption,
        count: u64,
    ) -> Result<(), Status> {
        use read_req::options::all_options::AllOption as A;
        let everything = Filter::default();
        let mut left = count;
        let mut budget = PageBudget::new(PAGE);
        if self.backwards {
            // Exclusive upper bound.
            let mut before = match from {
                A::End(_) => store.head(&[]).await.map_err(to_status)?.saturating_add(1),
                A::Position(p) => {
                    if !names_an_event(store, p).await? {
                        return Err(invalid_read_position(self.filtered));
                    }
                    p.commit_position
                }
                A::Start(_) => 0,
            };
            while left > 0 && before > 1 {
                let want = budget.events() as u64;
                let after = before.saturating_sub(1 + want);
                let span = usize::try_from(before - 1 - after).unwrap_or(PAGE);
                let page = store
                    .read_all(after, span, &everything)
                    .await
                    .map_err(to_status)?;
                budget.observe(&page);
                let _held = held(&page);
                for e in page.iter().rev().filter(|e| e.position < before) {
                    if self.filter.as_ref().is_none_or(|f| f.matches(e)) {
                        if !send(tx, self.event(e)).await {
                            return Ok(());
                        }
                        left -= 1;
                        if left == 0 {
                            return Ok(());
                        }
                    }
                }
                before = after.saturating_add(1);
            }
            return Ok(());
        }
        let mut after = match from {
            A::Start(_) => 0,
            A::Position(p) => {
                if !names_an_event(store, p).await? {
                    return Err(invalid_read_position(self.filtered));
                }
                p.commit_position.saturating_sub(1)
            }
            A::End(_) => return Ok(()),
        };
        while left > 0 {
            let want = budget.events();
            let page = store
                .read_all(after, want, &everything)
                .await
                .map_err(to_status)?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.position;
            let full = page.len() == want;
            budget.observe(&page);
            let _held = held(&page);
            for e in &page {
                if self.filter.as_ref().is_none_or(|f| f.matches(e)) {
                    if !send(tx, self.event(e)).await {
                        return Ok(());
                    }
                    left -= 1;
                    if left == 0 {
                        return Ok(());
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    async fn subscribe_stream(
        &self,
        store: &dyn Store,
        tx: &Tx,
        stream: &str,
        from: &read_req::options::stream_options::RevisionOption,
    ) -> Result<(), Status> {
        use read_req::options::stream_options::RevisionOption as R;
        if !confirm(tx).await {
            return Ok(());
        }
        let mut head = store.head(&[]).await.map_err(to_status)?;
        let st = streams::state(store, stream).await.map_err(to_status)?;
        let mut next = match from {
            R::Start(_) => 1,
            R::End(_) => st.version.saturating_add(1),
            R::Revision(r) => r.saturating_add(2),
        };
        let mut st: StreamState = st;
        let mut caught_up = false;
        let mut budget = PageBudget::new(PAGE);
        loop {
            if st.tombstoned {
                return Err(stream_deleted(stream));
            }
            let want = budget.events();
            let events =
                match streams::read_with(store, &st, stream, Direction::Forward, Some(next), want)
                    .await
                    .map_err(to_status)?
                {
                    StreamRead::Events(e) => e,
                    StreamRead::NotFound => Vec::new(),
                };
            budget.observe(&events);
            let _held = held(&events);
            for e in &events {
                if !send(tx, self.event(e)).await {
                    return Ok(());
                }
                next = e.aggregate_version.saturating_add(1);
            }
            if events.len() < want {
                if !caught_up {
                    caught_up = true;
                    let msg = read_resp::CaughtUp {
                        timestamp: Some(now()),
                        stream_revision: (next > 1).then(|| revision_of(next - 1)),
                        position: None,
                    };
                    if !send(
                        tx,
                        ReadResp {
                            content: Some(read_resp::Content::CaughtUp(msg)),
                        },
                    )
                    .await
                    {
                        return Ok(());
                    }
                }
                head = wait(store, tx, head).await?;
            }
            st = streams::state(store, stream).await.map_err(to_status)?;
        }
    }

    async fn subscribe_all(
        &self,
        store: &dyn Store,
        tx: &Tx,
        from: &read_req::options::all_options::AllOption,
    ) -> Result<(), Status> {
        use read_req::options::all_options::AllOption as A;
        if !confirm(tx).await {
            return Ok(());
        }
        let everything = Filter::default();
        let mut after = match from {
            A::Start(_) => 0,
            A::End(_) => store.head(&[]).await.map_err(to_status)?,
            A::Position(p) => {
                if !names_an_event(store, p).await? {
                    return Err(invalid_subscription_position());
                }
                p.commit_position
            }
        };
        let mut scanned = 0u64;
        let mut caught_up = false;
        let mut budget = PageBudget::new(PAGE);
        loop {
            let want = budget.events();
            let page = store
                .read_all(after, want, &everything)
                .await
                .map_err(to_status)?;
            budget.observe(&page);
            let _held = held(&page);
            for e in &page {
                after = e.position;
                let pass = self.filter.as_ref().is_none_or(|f| f.matches(e));
                if pass && !send(tx, self.event(e)).await {
                    return Ok(());
                }
                if let Some(f) = &self.filter {
                    scanned += 1;
                    if scanned >= f.checkpoint_interval {
                        scanned = 0;
                        if !send(tx, checkpoint(after)).await {
                            return Ok(());
                        }
                    }
                }
            }
            if page.len() < want {
                if !caught_up {
                    caught_up = true;
                    let msg = read_resp::CaughtUp {
                        timestamp: Some(now()),
                        stream_revision: None,
                        position: (after > 0).then_some(read_resp::Position {
                            commit_position: after,
                            prepare_position: after,
                        }),
                    };
                    if !send(
                        tx,
                        ReadResp {
                            content: Some(read_resp::Content::CaughtUp(msg)),
                        },
                    )
                    .await
                    {
                        return Ok(());
                    }
                }
                wait(store, tx, after).await?;
            }
        }
    }
}

/// Whether `p` is the start (0) or an event's position: annal's events have commit =
/// prepare = their position, and every position from 1 to the head is an event's.
async fn names_an_event(
    store: &dyn Store,
    p: &read_req::options::Position,
) -> Result<bool, Status> {
    if p.commit_position != p.prepare_position {
        return Ok(false);
    }
    if p.commit_position == 0 {
        return Ok(true);
    }
    Ok(p.commit_position <= store.head(&[]).await.map_err(to_status)?)
}

fn checkpoint(position: u64) -> ReadResp {
    ReadResp {
        content: Some(read_resp::Content::Checkpoint(read_resp::Checkpoint {
            commit_position: position,
            prepare_position: position,
            timestamp: Some(now()),
        })),
    }
}

/// Sends the subscription confirmation; false if the client is gone.
async fn confirm(tx: &Tx) -> bool {
    send(
        tx,
        ReadResp {
            content: Some(read_resp::Content::Confirmation(
                read_resp::SubscriptionConfirmation {
                    subscription_id: annal_core::Uuid::now_v7().to_string(),
                },
            )),
        },
    )
    .await
}

/// Waits for a commit after `head` (or a while); the new head.
async fn wait(store: &dyn Store, tx: &Tx, head: u64) -> Result<u64, Status> {
    tokio::select! {
        h = store.wait_for_head(head, IDLE_WAIT) => h.map_err(to_status),
        () = tx.sender.closed() => Ok(head),
    }
}

/// Sends one message; false when the client is gone or took nothing for the
/// [`Tx`]'s patience (the call then ends, and its page is let go).
async fn send(tx: &Tx, msg: ReadResp) -> bool {
    match tx.sender.send_timeout(Ok(msg), tx.patience).await {
        Ok(()) => true,
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
            tracing::info!(
                after = ?tx.patience,
                "a gRPC read's caller took nothing; ending the call"
            );
            false
        }
        Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_caller_that_takes_nothing_ends_the_read() {
        let (sender, mut rx) = mpsc::channel(1);
        let tx = Tx {
            sender,
            patience: Duration::from_millis(50),
        };
        assert!(send(&tx, ReadResp::default()).await);
        // The one slot is taken and nobody reads: the next send gives up.
        let t = std::time::Instant::now();
        assert!(!send(&tx, ReadResp::default()).await);
        assert!(t.elapsed() >= Duration::from_millis(50));
        // A caller that reads again is sent to.
        assert!(rx.recv().await.is_some());
        assert!(send(&tx, ReadResp::default()).await);
        drop(rx);
        assert!(!send(&tx, ReadResp::default()).await);
    }
}
