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
use std::collections::{BTreeMap, VecDeque};
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
    /// Aggregates whose id starts with this (`None` or empty: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_id_prefix: Option<String>,
    /// Any of these principals (who authenticated the append); an event without one
    /// passes no principal filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
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
        Filter {
            aggregate_id_prefix: self.prefix().map(str::to_owned),
            ..self.clone()
        } == Filter::default()
    }

    /// The aggregate id prefix, if it narrows anything (an empty one does not).
    pub fn prefix(&self) -> Option<&str> {
        self.aggregate_id_prefix
            .as_deref()
            .filter(|p| !p.is_empty())
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
            && self
                .prefix()
                .is_none_or(|p| event.aggregate_id.starts_with(p))
            && any_opt(&self.principals, event.principal.as_deref())
            && self.since.is_none_or(|s| event.recorded_at >= s)
            && self.until.is_none_or(|u| event.recorded_at < u)
    }
}

/// How many events of each type pass a filter, up to a position: the body of
/// `GET /v1/events/counts` and the answer of [`Store::count_by_type`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    /// The last position counted (the head when the count began, unless given): the
    /// counts are exact up to it, whatever was appended since.
    pub up_to_position: u64,
    /// Every event counted.
    pub total: u64,
    /// The counts by event type (types with none are absent).
    pub counts: BTreeMap<String, u64>,
}

impl EventCounts {
    /// Counts of these `(event type, count)` pairs, up to `up_to_position`.
    pub fn new(up_to_position: u64, counts: impl IntoIterator<Item = (String, u64)>) -> Self {
        let mut out = EventCounts {
            up_to_position,
            ..EventCounts::default()
        };
        for (event_type, n) in counts {
            out.total = out.total.saturating_add(n);
            *out.counts.entry(event_type).or_default() += n;
        }
        out
    }
}

/// [`Store::count_by_type`] by reading: pages of `filter`'s events after
/// `after_position`, up to `up_to` (default: the head, read first). The reference
/// semantics backends answer with one query.
pub async fn count_by_reading<S: Store + ?Sized>(
    store: &S,
    after_position: u64,
    up_to: Option<u64>,
    filter: &Filter,
) -> Result<EventCounts> {
    let up_to = match up_to {
        Some(p) => p,
        None => store.head(&[]).await?,
    };
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut after = after_position;
    while after < up_to {
        let page = store.read_all(after, 1000, filter).await?;
        let Some(last) = page.last().map(|e| e.position) else {
            break;
        };
        for e in page.iter().filter(|e| e.position <= up_to) {
            *counts.entry(e.event_type.clone()).or_default() += 1;
        }
        after = last;
    }
    Ok(EventCounts::new(up_to, counts))
}

/// The least string above every string that starts with `prefix`, in code point order
/// (UTF-8 byte order, SQLite's BINARY collation): ids starting with `prefix` are
/// exactly those in `prefix..bound`, a range an index on the id can answer. `None` when
/// no string is above them all (`prefix` is only U+10FFFF characters): the range is
/// then open above.
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next scalar value, skipping the surrogate gap.
        let next = match last as u32 {
            0xD7FF => Some('\u{E000}'),
            c => char::from_u32(c + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn a_prefix_bound_is_above_every_id_with_the_prefix_and_below_every_other() {
        assert_eq!(prefix_upper_bound("family_"), Some("family`".to_owned()));
        assert_eq!(
            prefix_upper_bound("a\u{D7FF}"),
            Some("a\u{E000}".to_owned())
        );
        assert_eq!(prefix_upper_bound("a\u{10FFFF}"), Some("b".to_owned()));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        let bound = prefix_upper_bound("fam").expect("bound");
        for inside in ["fam", "family_123", "fam\u{10FFFF}\u{10FFFF}"] {
            assert!(("fam"..bound.as_str()).contains(&inside), "{inside}");
        }
        for outside in ["fa", "fan", "fb", "g", "Fam"] {
            assert!(!("fam"..bound.as_str()).contains(&outside), "{outside}");
        }
    }
}
