//! Reading: directions, filters over the global log, and streams that page through a
//! store so that reading ten million events never holds them all in memory.
//!
//! Filter semantics (API.md): values within one field are OR-ed, fields are AND-ed, an
//! empty field does not filter; `since` is inclusive and `until` exclusive on recorded_at.

use crate::error::Result;
use crate::event::{RecordedEvent, Timestamp};
use crate::store::Store;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Which way to read an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Ascending versions.
    #[default]
    Forward,
    /// Descending versions.
    Backward,
}

/// Which events of the global log to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Any of these event types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// Any of these aggregate types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregate_types: Vec<String>,
    /// Any of these correlation ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub correlation_ids: Vec<String>,
    /// Any of these causation ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causation_ids: Vec<String>,
    /// Any of these actors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_ids: Vec<String>,
    /// Recorded at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// Recorded before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

impl Filter {
    /// Whether the filter lets every event through.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether `event` passes the filter (the reference semantics backends translate).
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        fn any(values: &[String], v: &str) -> bool {
            values.is_empty() || values.iter().any(|x| x == v)
        }
        fn any_opt(values: &[String], v: Option<&str>) -> bool {
            values.is_empty() || v.is_some_and(|v| values.iter().any(|x| x == v))
        }
        any(&self.event_types, &event.event_type)
            && any(&self.aggregate_types, &event.aggregate_type)
            && any_opt(&self.correlation_ids, event.correlation_id.as_deref())
            && any_opt(&self.causation_ids, event.causation_id.as_deref())
            && any(&self.user_ids, &event.user_id)
            && self.since.is_none_or(|s| event.recorded_at >= s)
            && self.until.is_none_or(|u| event.recorded_at < u)
    }
}

/// Streams every event after `after_position` that passes `filter`, in global order, up
/// to the head as it is when each page is read, fetching `page_size` events at a time.
pub fn stream_all<'a, S: Store + ?Sized>(
    store: &'a S,
    after_position: u64,
    filter: &'a Filter,
    page_size: usize,
) -> impl Stream<Item = Result<RecordedEvent>> + Send + 'a {
    struct State {
        after: u64,
        buf: VecDeque<RecordedEvent>,
        done: bool,
    }
    let page_size = page_size.max(1);
    futures_util::stream::try_unfold(
        State {
            after: after_position,
            buf: VecDeque::new(),
            done: false,
        },
        move |mut st| async move {
            if st.buf.is_empty() && !st.done {
                let page = store.read_all(st.after, page_size, filter).await?;
                st.done = page.len() < page_size;
                if let Some(last) = page.last() {
                    st.after = last.position;
                }
                st.buf = page.into();
            }
            Ok(st.buf.pop_front().map(|e| (e, st)))
        },
    )
}
