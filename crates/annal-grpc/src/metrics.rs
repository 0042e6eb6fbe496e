//! gRPC calls on the process's metrics: `annal_grpc_requests_total{method,code}` and
//! `annal_grpc_request_seconds{method}`.
//!
//! Invariants: `method` is `Service/Method` from the fixed list [`METHODS`] (anything
//! else is `other`), so labels cannot grow with what clients send; `code` is the gRPC
//! status of answers that are a status only (refusals, errors before any message), or
//! `streamed` for answers that began a body, whose status travels in trailers. Calls
//! are timed to their first response headers (for unary calls, their duration).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

/// The methods annal serves, as metric labels.
const METHODS: [&str; 16] = [
    "Streams/Read",
    "Streams/Append",
    "Streams/BatchAppend",
    "Streams/Delete",
    "Streams/Tombstone",
    "ServerFeatures/GetSupportedMethods",
    "Gossip/Read",
    "PersistentSubscriptions/Create",
    "PersistentSubscriptions/Update",
    "PersistentSubscriptions/Delete",
    "PersistentSubscriptions/Read",
    "PersistentSubscriptions/GetInfo",
    "PersistentSubscriptions/ReplayParked",
    "PersistentSubscriptions/List",
    "PersistentSubscriptions/RestartSubsystem",
    "other",
];

/// The metric label of a request path (`/package.Service/Method`).
fn method_label(path: &str) -> &'static str {
    path.rsplit_once('.')
        .map(|(_, tail)| tail)
        .and_then(|tail| METHODS.iter().find(|m| **m == tail))
        .copied()
        .unwrap_or("other")
}

/// The middleware: counts and times every call.
pub(crate) async fn count(req: Request, next: Next) -> Response {
    let method = method_label(req.uri().path());
    let start = Instant::now();
    let res = next.run(req).await;
    let code = res
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "streamed".to_owned(), str::to_owned);
    metrics::counter!("annal_grpc_requests_total", "method" => method, "code" => code).increment(1);
    metrics::histogram!("annal_grpc_request_seconds", "method" => method)
        .record(start.elapsed().as_secs_f64());
    res
}

#[cfg(test)]
mod tests {
    use super::method_label;

    #[test]
    fn known_methods_are_labelled_by_service_and_method() {
        assert_eq!(
            method_label("/event_store.client.streams.Streams/Append"),
            "Streams/Append"
        );
        assert_eq!(
            method_label(
                "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Read"
            ),
            "PersistentSubscriptions/Read"
        );
    }

    #[test]
    fn unknown_paths_are_labelled_other() {
        assert_eq!(
            method_label("/event_store.client.streams.Streams/Nope"),
            "other"
        );
        assert_eq!(method_label("/no-dots"), "other");
    }
}
