//! What the client adds beyond the Store API: failures to reach the server, timeouts,
//! the bearer token, paging under the server's page limit, SSE subscriptions, URL
//! encoding of ids, and safe resends of prepared commits. Real HTTP on 127.0.0.1.

use annal_client::HttpStore;
use annal_core::{
    AppendRequest, Direction, Error, ExpectedVersion, Filter, NewEvent, RawJson, Store, Transaction,
};
use annal_server::Config;
use annal_sqlite::SqliteStore;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

struct Server {
    base: String,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// A server on a fresh SQLite store; `wrap` may add layers to the router.
async fn start_with(config: Config, wrap: impl FnOnce(axum::Router) -> axum::Router) -> Server {
    start_on(annal_sqlite::Options::default(), config, wrap).await
}

/// [`start_with`] on a store opened with `options`.
async fn start_on(
    options: annal_sqlite::Options,
    config: Config,
    wrap: impl FnOnce(axum::Router) -> axum::Router,
) -> Server {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(SqliteStore::open_with(dir.path().join("s.db"), options).expect("open"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let (_, shutdown) = watch::channel(false);
    let app = wrap(annal_server::router(store, config, shutdown));
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    Server {
        base,
        _stop: tx,
        _dir: dir,
    }
}

async fn start() -> Server {
    start_with(Config::default(), |r| r).await
}

fn ev(data: &str) -> NewEvent {
    NewEvent::raw("Tick", RawJson::parse(data).expect("json"))
}

fn append(id: &str, events: Vec<NewEvent>) -> AppendRequest {
    let mut r = AppendRequest::new("Clock", id, ExpectedVersion::Any);
    r.events = events;
    r
}

fn is_storage_naming(e: &Error, base: &str) -> bool {
    matches!(e, Error::Storage(_)) && e.to_string().contains(base)
}

#[tokio::test]
async fn an_unreachable_server_is_a_storage_error_naming_its_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let store = HttpStore::connect(&base).expect("client");
    let start = Instant::now();
    let err = store.head(&[]).await.expect_err("nobody listens");
    assert!(is_storage_naming(&err, &base), "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    let err = store
        .append(append("c", vec![ev("1")]))
        .await
        .expect_err("nobody listens");
    assert!(is_storage_naming(&err, &base), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_instead_of_hanging() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    // Accepts connections and keeps them open without a word.
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let store = HttpStore::builder(&base)
        .timeout(Duration::from_millis(300))
        .idle_timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let start = Instant::now();
    let err = store.head(&[]).await.expect_err("no answer");
    assert!(is_storage_naming(&err, &base), "{err}");
    assert!(err.to_string().contains("no answer in time"), "{err}");
    let err = store
        .append(append("c", vec![ev("1")]))
        .await
        .expect_err("no answer");
    assert!(is_storage_naming(&err, &base), "{err}");
    let mut sub = std::pin::pin!(store.subscribe(0, &Filter::default()));
    let first = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the subscription gives up in time");
    assert!(matches!(first, Some(Err(Error::Storage(_)))), "{first:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "each request waited about its timeout, once: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn the_bearer_token_goes_with_every_request() {
    async fn require_token(
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let ok = req
            .headers()
            .get("authorization")
            .is_some_and(|v| v == "Bearer s3cret");
        if ok {
            next.run(req).await
        } else {
            axum::response::Response::builder()
                .status(401)
                .header("content-type", "application/problem+json")
                .body(axum::body::Body::from(
                    r#"{"type":"unauthorized","status":401,"detail":"a token is required"}"#,
                ))
                .expect("response")
        }
    }
    let s = start_with(Config::default(), |r| {
        r.layer(axum::middleware::from_fn(require_token))
    })
    .await;
    let with = HttpStore::builder(&s.base)
        .token("s3cret")
        .build()
        .expect("client");
    with.append(append("c", vec![ev("1")]))
        .await
        .expect("append with the token");
    assert_eq!(with.head(&[]).await.expect("head with the token"), 1);
    let without = HttpStore::connect(&s.base).expect("client");
    let err = without.head(&[]).await.expect_err("no token");
    assert!(
        matches!(&err, Error::Unauthorized { reason } if reason == "a token is required"),
        "{err:?}"
    );
    assert!(
        !format!("{with:?}").contains("s3cret"),
        "the token is not printed"
    );
}

#[tokio::test]
async fn reads_larger_than_the_server_page_limit_are_fetched_in_pages() {
    let s = start_with(
        Config {
            max_page: 7,
            ..Config::default()
        },
        |r| r,
    )
    .await;
    let store = HttpStore::builder(&s.base)
        .page_size(7)
        .build()
        .expect("client");
    let events = (0..20).map(|i| ev(&format!("{{\"i\": {i}}}"))).collect();
    store.append(append("c", events)).await.expect("append");
    let all = store
        .read_all(0, 100, &Filter::default())
        .await
        .expect("read all");
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    assert_eq!(
        store
            .read_all(3, 9, &Filter::default())
            .await
            .expect("read")
            .len(),
        9
    );
    let back = store
        .read_aggregate("c", Direction::Backward, None, 100)
        .await
        .expect("read aggregate");
    assert_eq!(
        back.iter().map(|e| e.aggregate_version).collect::<Vec<_>>(),
        (1..=20).rev().collect::<Vec<_>>()
    );
    // A client asking for more than the server's page limit pages under it: the
    // server refuses the first page's `limit`, and the client asks for smaller pages.
    let default = HttpStore::connect(&s.base).expect("client");
    let all = default
        .read_all(0, 100, &Filter::default())
        .await
        .expect("read all");
    assert_eq!(all.len(), 20);
    let back = default
        .read_aggregate("c", Direction::Backward, None, 100)
        .await
        .expect("read aggregate");
    assert_eq!(back.len(), 20);
}

#[tokio::test]
async fn subjects_and_their_events_are_listed_under_the_server_page_limit() {
    let options = annal_sqlite::Options {
        keyring: Some(annal_core::privacy::Keyring::from_bytes([5; 32])),
        ..annal_sqlite::Options::default()
    };
    let config = Config {
        max_page: 7,
        ..Config::default()
    };
    let s = start_on(options, config, |r| r).await;
    let store = HttpStore::connect(&s.base).expect("client");
    let events = (0..20)
        .map(|i| {
            let mut e = ev("{}");
            e.personal = Some(RawJson::parse(format!("{{\"i\": {i}}}")).expect("json"));
            e.subjects = vec![format!("s{:02}", i % 10), "all".to_owned()];
            e
        })
        .collect();
    store.append(append("c", events)).await.expect("append");
    let listed = store.subjects("", 1000).await.expect("subjects");
    assert_eq!(listed.len(), 11, "{listed:?}");
    let theirs = store.subject_events("all", 0, 1000).await.expect("events");
    assert_eq!(theirs.len(), 20);
}

#[tokio::test]
async fn a_subscription_sees_history_then_live_events_once_in_order_byte_for_byte() {
    let s = start().await;
    let store = HttpStore::connect(&s.base).expect("client");
    let odd = r#"{ "z" : 1.50,
  "a": [1e3, -0.0] }"#;
    store
        .append(append("c", vec![ev(odd), ev("2"), ev("3")]))
        .await
        .expect("history");
    let mut sub = std::pin::pin!(store.subscribe(0, &Filter::default()));
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                store
                    .append(append(&format!("w{}", i % 3), vec![ev(&i.to_string())]))
                    .await
                    .expect("live append");
            }
        })
    };
    let mut seen = Vec::new();
    while seen.len() < 23 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("events keep coming")
            .expect("the subscription goes on")
            .expect("an event");
        seen.push(e);
    }
    writer.await.expect("writer");
    assert_eq!(
        seen.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=23).collect::<Vec<_>>()
    );
    assert_eq!(
        seen[0].data.get(),
        odd,
        "data split over SSE lines comes back whole"
    );
    let filtered = store.subscribe(
        20,
        &Filter {
            aggregate_types: vec!["Clock".into()],
            ..Filter::default()
        },
    );
    let tail: Vec<_> = filtered.take(3).collect().await;
    assert_eq!(
        tail.into_iter()
            .map(|e| e.expect("event").position)
            .collect::<Vec<_>>(),
        vec![21, 22, 23]
    );
}

#[tokio::test]
async fn ids_with_slashes_spaces_and_escapes_reach_their_own_aggregate() {
    let s = start().await;
    let store = HttpStore::connect(&s.base).expect("client");
    for id in ["family/123", "a b?c#d", "é%20", "..x", "%2e%2e"] {
        store
            .append(append(id, vec![ev("1")]))
            .await
            .unwrap_or_else(|e| panic!("append to {id:?}: {e}"));
        let info = store
            .aggregate(id)
            .await
            .expect("aggregate")
            .unwrap_or_else(|| panic!("{id:?} exists"));
        assert_eq!(info.version, 1, "{id:?}");
        let read = store
            .read_aggregate(id, Direction::Forward, None, 10)
            .await
            .expect("read");
        assert_eq!(read.len(), 1, "{id:?}");
        assert_eq!(read[0].aggregate_id, id);
    }
    assert_eq!(store.head(&[]).await.expect("head"), 5);
    // URL rules drop `.` and `..` path segments: refused, not sent to another route.
    for id in [".", ".."] {
        let err = store
            .append(append(id, vec![ev("1")]))
            .await
            .expect_err("not addressable");
        assert!(
            matches!(&err, Error::InvalidRequest { field, .. } if field == "aggregate_id"),
            "{err:?}"
        );
        let err = store.aggregate(id).await.expect_err("not addressable");
        assert_eq!(err.kind(), "invalid_request");
    }
    assert_eq!(store.head(&[]).await.expect("head"), 5);
}

#[tokio::test]
async fn a_prepared_commit_sent_twice_is_written_once() {
    let s = start().await;
    let store = HttpStore::connect(&s.base).expect("client");
    let proposed = Transaction {
        appends: vec![AppendRequest {
            expected_version: ExpectedVersion::NoStream,
            ..append("c", vec![ev("1"), ev("2")])
        }],
        checkpoint: None,
    }
    .prepare(store.limits())
    .expect("prepare");
    let first = store.commit(proposed.clone()).await.expect("first");
    let again = store
        .commit(proposed)
        .await
        .expect("resent after a lost answer");
    assert_eq!(again, first);
    assert_eq!(store.head(&[]).await.expect("head"), 2);
}

#[tokio::test]
async fn filter_values_a_comma_list_would_change_are_refused() {
    // Refused before anything is sent: no server is needed.
    let store = HttpStore::connect("http://127.0.0.1:9").expect("client");
    for bad in ["A,B", "", " padded"] {
        let f = Filter {
            event_types: vec![bad.into()],
            ..Filter::default()
        };
        let err = store.read_all(0, 10, &f).await.expect_err("refused");
        assert!(
            matches!(&err, Error::InvalidRequest { field, .. } if field == "event_type"),
            "{bad:?}: {err:?}"
        );
    }
}

#[test]
fn only_http_and_https_base_urls_are_accepted() {
    for bad in [
        "not a url",
        "ftp://127.0.0.1:2113",
        "http://h/?q=1",
        "mailto:x@y",
    ] {
        let err = HttpStore::connect(bad).expect_err(bad);
        assert!(
            matches!(&err, Error::InvalidRequest { field, .. } if field == "server_url"),
            "{bad}: {err:?}"
        );
    }
    let store = HttpStore::connect("http://127.0.0.1:2113/").expect("a plain base");
    assert_eq!(store.base_url(), "http://127.0.0.1:2113");
    let tls = HttpStore::connect("https://127.0.0.1:2113").expect("https");
    assert_eq!(tls.base_url(), "https://127.0.0.1:2113");
}
