//! The page size of paged reads, which adapts to the server's page limit.
//!
//! Invariant: the page size only shrinks, and only when the server refused a page's
//! `limit` (`invalid_request` on `limit`: over its `--max-page`); it is then at most
//! half the refused limit, so a read asks again at most about log2(page size) times in
//! the life of the store before its pages fit.

use crate::HttpStore;
use annal_core::{Error, Result};
use reqwest::Url;
use serde::de::DeserializeOwned;
use std::sync::atomic::Ordering;

impl HttpStore {
    /// Up to `limit` items of a paged route, a page at a time from `cursor`: `url` is
    /// the request for a page of at most `want` items after a cursor, and `split` takes
    /// an answer apart into its items and the next page's cursor (`None`: the last).
    /// A page refused as over the server's limit is asked for again, smaller.
    pub(crate) async fn pages<P: DeserializeOwned, T, C>(
        &self,
        limit: usize,
        mut cursor: C,
        url: impl Fn(usize, &C) -> Result<Url>,
        split: impl Fn(P) -> (Vec<T>, Option<C>),
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        while out.len() < limit {
            let want = self.page_for(limit - out.len());
            let page: P = match self.get(url(want, &cursor)?, self.inner.timeout).await {
                Err(e) if self.smaller_page(&e, want) => continue,
                answer => answer?,
            };
            let (items, next) = split(page);
            let got = items.len();
            out.extend(items);
            match next {
                Some(next) if got > 0 => cursor = next,
                _ => break,
            }
        }
        Ok(out)
    }

    /// How many of `left` events to ask for in the next page: at most the page size.
    pub(crate) fn page_for(&self, left: usize) -> usize {
        left.min(self.inner.page_size.load(Ordering::Relaxed))
    }

    /// Whether a page asked for with `limit` `asked` should be asked for again, smaller:
    /// the server refused that `limit` (over its page limit) and a smaller one is left
    /// to try. The page size is then at most half of `asked`, for every later read too.
    pub(crate) fn smaller_page(&self, e: &Error, asked: usize) -> bool {
        let refused = matches!(e, Error::InvalidRequest { field, .. } if field == "limit");
        if !refused || asked <= 1 {
            return false;
        }
        self.inner.page_size.fetch_min(asked / 2, Ordering::Relaxed);
        true
    }
}
