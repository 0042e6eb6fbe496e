//! Reading: directions, filters over the global log, and streams that page through a
//! store so that reading ten million events never holds them all in memory.
//!
//! Filter semantics (docs/api.md): values within one field are OR-ed, fields are AND-ed, an
//! empty field does not filter; `since` is inclusive and `until` exclusive on recorded_at.

use crate::error::Result;
use crate::event::{RecordedEvent, Timestamp};
use crate::store::Store;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Which way to read an aggregate.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
/// The next page is fetched while the current one is consumed.
pub fn stream_all<'a, S: Store + ?Sized>(
    store: &'a S,
    after_position: u64,
    filter: &'a Filter,
    page_size: usize,
) -> impl Stream<Item = Result<RecordedEvent>> + Send + 'a {
    let page_size = page_size.max(1);
    let fetch = move |after: u64| -> PageFuture<'a> {
        Box::pin(async move { store.read_all(after, page_size, filter).await })
    };
    Paged {
        buf: VecDeque::new(),
        next: Some(fetch(after_position)),
        resume: None,
        fetch: Box::new(fetch),
        page_size,
        failed: false,
    }
}

type PageFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<RecordedEvent>>> + Send + 'a>>;

/// The stream behind [`stream_all`]: at most two pages buffered and one fetch in flight.
struct Paged<'a> {
    buf: VecDeque<RecordedEvent>,
    next: Option<PageFuture<'a>>,
    /// Where the next fetch starts, once the buffer has room for it.
    resume: Option<u64>,
    fetch: Box<dyn Fn(u64) -> PageFuture<'a> + Send + 'a>,
    page_size: usize,
    failed: bool,
}

impl Stream for Paged<'_> {
    type Item = Result<RecordedEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        loop {
            if let Some(e) = this.buf.pop_front() {
                if this.next.is_none() && this.buf.len() <= this.page_size {
                    if let Some(after) = this.resume.take() {
                        this.next = Some((this.fetch)(after));
                    }
                }
                // Keep the next page's fetch moving while the caller works on this one.
                if let Some(next) = this.next.as_mut()
                    && let Poll::Ready(page) = next.as_mut().poll(cx)
                {
                    this.next = None;
                    match page {
                        Ok(page) => this.stash(page),
                        Err(err) => {
                            this.buf.clear();
                            this.failed = true;
                            return Poll::Ready(Some(Err(err)));
                        }
                    }
                }
                return Poll::Ready(Some(Ok(e)));
            }
            if this.next.is_none()
                && let Some(after) = this.resume.take()
            {
                this.next = Some((this.fetch)(after));
            }
            let Some(next) = this.next.as_mut() else {
                return Poll::Ready(None);
            };
            match next.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(Ok(page)) => {
                    this.next = None;
                    this.stash(page);
                }
            }
        }
    }
}

impl Paged<'_> {
    /// Buffers a fetched page and notes where the next one starts, unless it was short
    /// (the head was reached). The next fetch starts once at most one page is buffered.
    fn stash(&mut self, page: Vec<RecordedEvent>) {
        if page.len() == self.page_size
            && let Some(last) = page.last()
        {
            self.resume = Some(last.position);
        }
        self.buf.extend(page);
    }
}
