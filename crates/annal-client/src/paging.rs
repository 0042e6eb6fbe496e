//! The page size of paged reads, which adapts to the server's page limit.
//!
//! Invariant: the page size only shrinks, and only when the server refused a page's
//! `limit` (`invalid_request` on `limit`: over its `--max-page`); it is then at most
//! half the refused limit, so a read asks again at most about log2(page size) times in
//! the life of the store before its pages fit.

use crate::HttpStore;
use annal_core::Error;
use std::sync::atomic::Ordering;

impl HttpStore {
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
