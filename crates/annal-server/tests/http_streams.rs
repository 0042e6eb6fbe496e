//! Stream routes end to end over real HTTP: an append answers the stream's version and
//! the log positions it took; stream reads page forward and backward; a missing stream
//! is a `not_found` problem; data comes back byte for byte on every read route.

mod common;

use annal_server::Config;
use common::{get, seed_family, start};
use reqwest::{Client, StatusCode};
use serde_json::Value;

async fn check_an_append_answers_its_version_and_positions(b: &str) {
    let r = seed_family(&Client::new(), b).await;
    assert_eq!(
        (
            r["aggregate_version"].as_u64(),
            r["first_position"].as_u64(),
            r["last_position"].as_u64()
        ),
        (Some(2), Some(1), Some(2))
    );
}

on_both_stores!(
    an_append_answers_the_stream_version_and_the_positions_it_took,
    an_append_answers_the_stream_version_and_the_positions_it_took_on_postgres,
    check_an_append_answers_its_version_and_positions
);

async fn check_a_forward_page_names_the_next_version(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    let (st, r) = get(
        &c,
        &format!("{b}/v1/streams/family_123?from_version=1&limit=1"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (
            r["events"].as_array().map(Vec::len),
            r["next_from_version"].as_u64()
        ),
        (Some(1), Some(2))
    );
}

on_both_stores!(
    a_stream_page_read_forward_names_the_version_the_next_starts_at,
    a_stream_page_read_forward_names_the_version_the_next_starts_at_on_postgres,
    check_a_forward_page_names_the_next_version
);

async fn check_a_backward_read_is_newest_first(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    let (_, r) = get(&c, &format!("{b}/v1/streams/family_123?direction=backward")).await;
    let versions: Vec<_> = r["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["aggregate_version"].as_u64())
        .collect();
    assert_eq!(versions, [Some(2), Some(1)]);
    assert!(r["next_from_version"].is_null());
}

on_both_stores!(
    a_stream_read_backward_is_newest_first_and_ends_without_a_next_page,
    a_stream_read_backward_is_newest_first_and_ends_without_a_next_page_on_postgres,
    check_a_backward_read_is_newest_first
);

async fn check_a_missing_stream_is_not_found(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    let (st, r) = get(&c, &format!("{b}/v1/streams/nobody")).await;
    assert_eq!(
        (st, r["type"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

on_both_stores!(
    reading_a_missing_stream_is_a_not_found_problem,
    reading_a_missing_stream_is_a_not_found_problem_on_postgres,
    check_a_missing_stream_is_not_found
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_comes_back_byte_for_byte_on_every_route() {
    let s = start(Config::default()).await;
    let c = Client::new();
    let b = &s.base;
    let data = r#"{"z": 1.50, "a" :[1e3, {"é":"\u00e9"}]}"#;
    let body = format!(
        r#"{{"aggregate_type":"T","events":[{{"event_type":"E","metadata":{{ "k" :1}},"data":{data}}}]}}"#
    );
    let r = c
        .post(format!("{b}/v1/streams/t-1"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = r.text().await.expect("text");
    let id = serde_json::from_str::<Value>(&created).expect("json")["events"][0]["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    for url in [
        format!("{b}/v1/streams/t-1"),
        format!("{b}/v1/events"),
        format!("{b}/v1/events/{id}"),
    ] {
        let text = c
            .get(&url)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        assert!(text.contains(&format!(r#""data":{data}"#)), "{url}: {text}");
        assert!(text.contains(r#""metadata":{ "k" :1}"#), "{url}: {text}");
    }
    assert!(created.contains(&format!(r#""data":{data}"#)), "{created}");
}
