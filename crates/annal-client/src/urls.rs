//! URLs of the API's routes: path segments percent-encoded one by one, filters as
//! comma-separated lists, and the values a URL cannot carry refused up front.

use crate::HttpStore;
use annal_core::{Error, Filter, Result};
use reqwest::Url;

impl HttpStore {
    /// The base URL with `segments` appended, each percent-encoded as one segment.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `/v1/{route}` with `after_position`, an optional `limit` and the filter's fields.
    pub(crate) fn filtered_url(
        &self,
        route: &[&str],
        after_position: u64,
        limit: Option<usize>,
        filter: &Filter,
    ) -> Result<Url> {
        let mut url = self.url(&[&["v1"], route].concat());
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("after_position", &after_position.to_string());
            if let Some(limit) = limit {
                q.append_pair("limit", &limit.to_string());
            }
            for (key, values) in [
                ("event_type", &filter.event_types),
                ("aggregate_type", &filter.aggregate_types),
                ("correlation_id", &filter.correlation_ids),
                ("causation_id", &filter.causation_ids),
                ("user_id", &filter.user_ids),
                ("principal", &filter.principals),
            ] {
                if !values.is_empty() {
                    q.append_pair(key, &list(key, values)?);
                }
            }
            if let Some(prefix) = filter.prefix() {
                q.append_pair("aggregate_id_prefix", prefix);
            }
            if let Some(t) = filter.since {
                q.append_pair("since", &t.to_string());
            }
            if let Some(t) = filter.until {
                q.append_pair("until", &t.to_string());
            }
        }
        Ok(url)
    }
}

/// Refuses an id that a URL path cannot carry: `.` and `..` are removed from paths by
/// URL rules, so the request would reach another route.
pub(crate) fn addressable(field: &str, value: &str) -> Result<()> {
    if value == "." || value == ".." {
        return Err(Error::invalid(
            field,
            format!(
                "{value:?} cannot be addressed over HTTP: URL paths drop '.' and '..' segments"
            ),
        ));
    }
    Ok(())
}

/// A filter's values as one comma-separated parameter, refusing values the list form
/// would change.
pub(crate) fn list(key: &str, values: &[String]) -> Result<String> {
    for v in values {
        if v.is_empty() || v.contains(',') || v.trim() != v {
            return Err(Error::invalid(
                key,
                format!(
                    "{v:?} cannot be sent as a filter over HTTP (values are comma-separated and trimmed)"
                ),
            ));
        }
    }
    Ok(values.join(","))
}
