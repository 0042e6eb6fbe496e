//! Persistent subscriptions: KurrentDB's server-side consumer groups (competing
//! consumers with acknowledgements), on annal's log and checkpoints.
//!
//! Where things are: [`registry`] folds the definitions from the log, [`settings`] and
//! [`strategy`] say what a definition holds; each group runs as one [`task`] that owns
//! its [`dispatcher`] (the delivery state and every choice, free of I/O and of the
//! protocol) and parks through [`parking`]; [`service`] and [`read`] are the transport of
//! the calls, [`info`] what GetInfo and List show, and [`dashboard`] what the console's
//! overview shows (over HTTP).
//!
//! Invariants:
//! - Definitions live in the log (`$persistentSubscriptionConfig`), appended expecting
//!   that stream's exact version; a group's *generation* is the version of the event that
//!   created it, so a group deleted and created again starts afresh.
//! - A group's progress is the store checkpoint `$persistent:<generation>:<source>::<group>`:
//!   the highest stream version (`$all`: log position) at or below which every event the
//!   group read is settled (acknowledged, skipped or parked). Delivery is at least once:
//!   a group resumes after its checkpoint, so what was delivered but not settled when the
//!   server stopped is delivered again.
//! - One task per group owns the group's state. It reads from the store only while some
//!   consumer has a free slot (`buffer_size` unacknowledged events per consumer) and
//!   fewer than a page of events wait, so a slow or stuck consumer costs bounded memory,
//!   never an unbounded buffer.
//! - An event is in flight with one consumer at a time. It is offered again, its retry
//!   count raised by one, when nacked with `retry`, when its message timeout passes, or
//!   when its consumer leaves; past `max_retry_count` retries, or when nacked with `park`,
//!   it is parked: a `$parked` event naming it is appended to
//!   `$persistentsubscription-<source>::<group>-parked`, and replaying parked messages
//!   offers those events again.
//! - Deleting or updating a group, or restarting the subsystem, stops its task and ends
//!   its consumers' calls (KurrentDB's "persistent subscription dropped"); the checkpoint
//!   is written first.
//!
//! One `annal serve` process dispatches a group; two servers on one store would each
//! dispatch it (docs/kurrentdb.md).

use crate::convert::stream_name;
use crate::pb::event_store::client::StreamIdentifier;
use tonic::Status;

/// The source name of a subscription to every stream.
const ALL: &str = "$all";
/// Most events read from the store at a time.
const PAGE: usize = 500;

/// A request's stream-or-`$all` option as a group's source. The request types differ
/// per call; each call site imports its own `StreamOption`. `$what` names the call.
macro_rules! source_of {
    ($option:expr, $what:literal) => {
        match $option {
            Some(StreamOption::StreamIdentifier(s)) => $crate::persistent::stream_source(Some(s))?,
            Some(StreamOption::All(_)) => $crate::persistent::ALL.to_owned(),
            None => {
                return Err(Status::invalid_argument(concat!(
                    $what,
                    " needs a stream or $all"
                )));
            }
        }
    };
}

// After `source_of!`, which they use.
mod dashboard;
mod dispatcher;
mod fence;
mod info;
mod parking;
mod read;
mod registry;
mod service;
mod settings;
mod strategy;
mod task;

pub use service::Persistent;

/// A group name from a request: 1-255 bytes without control characters.
fn group_name(name: &str) -> Result<String, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("a group name must not be empty"));
    }
    if name.len() > 255 || name.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "a group name must be 1-255 bytes without control characters",
        ));
    }
    Ok(name.to_owned())
}

/// A stream a group reads (not `$all`, which has its own option).
fn stream_source(id: Option<&StreamIdentifier>) -> Result<String, Status> {
    let name = stream_name(id)?;
    if name == ALL {
        return Err(Status::invalid_argument(
            "'$all' is not a stream: use the $all option",
        ));
    }
    Ok(name)
}
