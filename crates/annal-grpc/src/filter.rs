//! `$all` filters: event-type or stream-name prefixes or a regular expression, matched
//! unanchored with look-around support (clients send `^(?!\$)`-style expressions, which
//! the `regex` crate cannot run; `fancy-regex` can).

use crate::pb::event_store::client::streams::read_req::options::{FilterOptions, filter_options};
use annal_core::RecordedEvent;
use tonic::Status;

/// A compiled filter.
pub struct EventFilter {
    on_stream: bool,
    prefixes: Vec<String>,
    regex: Option<fancy_regex::Regex>,
    /// Send a checkpoint after this many events scanned.
    pub checkpoint_interval: u64,
}

impl EventFilter {
    /// Compiles a request's filter; `None` for no filter.
    pub fn new(options: Option<&FilterOptions>) -> Result<Option<Self>, Status> {
        let Some(options) = options else {
            return Ok(None);
        };
        let (on_stream, expr) = match &options.filter {
            Some(filter_options::Filter::StreamIdentifier(e)) => (true, e),
            Some(filter_options::Filter::EventType(e)) => (false, e),
            None => return Ok(None),
        };
        let max = match options.window {
            Some(filter_options::Window::Max(m)) if m > 0 => u64::from(m),
            Some(filter_options::Window::Count(_)) => 1,
            _ => 32,
        };
        let multiplier = u64::from(options.checkpoint_interval_multiplier.max(1));
        Self::compile(
            on_stream,
            &expr.regex,
            &expr.prefix,
            max.saturating_mul(multiplier),
        )
        .map(Some)
    }

    /// A filter on stream names (`on_stream`) or event types: any of `prefixes`, or else
    /// `regex` (empty: everything).
    pub fn compile(
        on_stream: bool,
        regex: &str,
        prefixes: &[String],
        checkpoint_interval: u64,
    ) -> Result<Self, Status> {
        let regex = if prefixes.is_empty() && !regex.is_empty() {
            Some(fancy_regex::Regex::new(regex).map_err(|e| {
                Status::invalid_argument(format!("invalid filter regex '{regex}': {e}"))
            })?)
        } else {
            None
        };
        Ok(Self {
            on_stream,
            prefixes: prefixes.to_vec(),
            regex,
            checkpoint_interval: checkpoint_interval.max(1),
        })
    }

    /// Whether the event passes.
    pub fn matches(&self, e: &RecordedEvent) -> bool {
        let subject = if self.on_stream {
            e.aggregate_id.as_str()
        } else {
            e.event_type.as_str()
        };
        if !self.prefixes.is_empty() {
            return self
                .prefixes
                .iter()
                .any(|p| subject.starts_with(p.as_str()));
        }
        match &self.regex {
            // A regex that fails at run time (backtracking limit) lets nothing through.
            Some(r) => r.is_match(subject).unwrap_or(false),
            None => true,
        }
    }
}
