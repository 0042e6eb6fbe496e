//! Refusals end to end over real HTTP: every refused request answers a problem document
//! (`application/problem+json`, with `type`, `status` and a `detail`) and writes
//! nothing. Each test starts from one stream `f` holding one event at position 1, on a
//! server whose body limit is 4 KiB.

mod common;

use annal_server::Config;
use common::{Server, family, get, post, start};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// A server (body limit 4096 bytes) whose stream `f` holds one `FamilyEnrolled`.
async fn one_event() -> (Server, Client) {
    let s = start(Config {
        max_body_bytes: 4096,
        ..Config::default()
    })
    .await;
    let c = Client::new();
    assert_eq!(
        post(&c, &format!("{}/v1/streams/f", s.base), &first_append())
            .await
            .0,
        StatusCode::CREATED
    );
    (s, c)
}

fn first_append() -> Value {
    family(
        json!("no_stream"),
        json!([{"event_type": "FamilyEnrolled", "data": {}}]),
    )
}

async fn assert_nothing_written(c: &Client, b: &str) {
    assert_eq!(
        get(c, &format!("{b}/v1/head")).await.1,
        json!({"position": 1}),
        "nothing was written"
    );
}

/// Appends `body` to `f`: it must be refused with `status` and a problem of type `kind`,
/// and write nothing.
async fn assert_refused(body: Value, status: StatusCode, kind: &str) {
    let (s, c) = one_event().await;
    let b = &s.base;
    let r = c
        .post(format!("{b}/v1/streams/f"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), status, "{body}");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.expect("problem");
    assert_eq!(p["type"].as_str(), Some(kind), "{p}");
    assert_eq!(p["status"].as_u64(), Some(u64::from(status.as_u16())));
    assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()));
    assert_nothing_written(&c, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_at_a_wrong_expected_version_is_a_conflict_problem() {
    assert_refused(
        first_append(),
        StatusCode::CONFLICT,
        "wrong_expected_version",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_expected_version_word_is_an_invalid_request() {
    assert_refused(
        family(json!("sometimes"), json!([{"event_type": "E", "data": {}}])),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_without_events_is_an_invalid_request() {
    assert_refused(
        family(json!("any"), json!([])),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_an_empty_type_is_an_invalid_request() {
    assert_refused(
        family(json!("any"), json!([{"event_type": "", "data": {}}])),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_that_is_not_an_object_is_an_invalid_request() {
    assert_refused(
        family(
            json!("any"),
            json!([{"event_type": "E", "data": {}, "metadata": [1]}]),
        ),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_without_data_is_an_invalid_request() {
    assert_refused(
        family(json!("any"), json!([{"event_type": "E"}])),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appending_another_aggregate_type_to_a_stream_is_an_aggregate_type_mismatch() {
    assert_refused(
        json!({"aggregate_type": "Invoice", "events": [{"event_type": "E", "data": {}}]}),
        StatusCode::CONFLICT,
        "aggregate_type_mismatch",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_naming_another_aggregate_id_than_the_path_is_an_invalid_request() {
    assert_refused(
        json!({"aggregate_type": "Family", "aggregate_id": "g", "events": [{"event_type": "E", "data": {}}]}),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_size_limit_is_a_too_large_problem() {
    assert_refused(
        family(
            json!("any"),
            json!([{"event_type": "E", "data": "x".repeat(5000)}]),
        ),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_is_a_bad_request() {
    let (s, c) = one_event().await;
    let b = &s.base;
    let r = c
        .post(format!("{b}/v1/streams/f"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_nothing_written(&c, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_a_json_content_type_is_an_unsupported_media_type() {
    let (s, c) = one_event().await;
    let b = &s.base;
    let r = c
        .post(format!("{b}/v1/streams/f"))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_nothing_written(&c, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_log_query_parameters_are_invalid_request_problems() {
    let (s, c) = one_event().await;
    let b = &s.base;
    // Each names the parameter it is about, an unknown one too.
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=x", "limit"),
        ("since=yesterday", "since"),
        ("after_position=-1", "after_position"),
        ("typo=1", "typo"),
    ] {
        let (st, p) = get(&c, &format!("{b}/v1/events?{q}")).await;
        assert_eq!(
            (st, p["type"].as_str(), p["field"].as_str()),
            (
                StatusCode::BAD_REQUEST,
                Some("invalid_request"),
                Some(field)
            ),
            "{q}: {p}"
        );
    }
    assert_nothing_written(&c, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_read_direction_is_a_bad_request() {
    let (s, c) = one_event().await;
    let b = &s.base;
    let (st, _) = get(&c, &format!("{b}/v1/streams/f?direction=sideways")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_names_and_filters_are_invalid_requests() {
    let (s, c) = one_event().await;
    let b = &s.base;
    for url in [
        "/v1/streams/a%00b",
        "/v1/events?user_id=%00",
        "/v1/checkpoints/%01",
        "/v1/head?aggregate_type=%01",
    ] {
        let (st, p) = get(&c, &format!("{b}{url}")).await;
        assert_eq!(
            (st, p["type"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{url}"
        );
    }
    assert_nothing_written(&c, b).await;
}

#[tokio::test]
async fn a_method_a_route_does_not_answer_is_a_405_problem_naming_the_allowed_ones() {
    let (s, c) = one_event().await;
    let res = c
        .delete(format!("{}/v1/streams/f", s.base))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = res
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow}"
    );
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = res.json().await.expect("a problem document");
    assert_eq!(body["status"], 405);
    assert_eq!(body["type"], "invalid_request");
    assert_eq!(body["field"], "method");
    assert_nothing_written(&c, &s.base).await;
}

/// Sends raw bytes on a fresh connection; the whole answer.
async fn raw(base: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tcp.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn requests_the_http_layer_cannot_parse_get_problem_documents_too() {
    let (s, c) = one_event().await;
    let huge = format!(
        "GET /v1/head HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(600_000)
    );
    for (request, status) in [
        (huge.into_bytes(), 431),
        (
            b"POST /v1/streams/f HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
                .to_vec(),
            400,
        ),
        (b"GET /v1/head HTTP/1.1\r\nHost: x\r\nX-Bad: a\0b\r\n\r\n".to_vec(), 400),
        (b"GET /v1/head HTTP/1.1\r\nHost x\r\n\r\n".to_vec(), 400),
    ] {
        let answer = raw(&s.base, &request).await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("an answer");
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{head}"
        );
        let problem: Value = serde_json::from_str(body).expect("a problem document");
        assert_eq!(problem["type"], "invalid_request", "{problem}");
        assert_eq!(problem["status"], status);
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // Nothing was written.
    let (_, head) = get(&c, &format!("{}/v1/head", s.base)).await;
    assert_eq!(head["position"], 1);
}
