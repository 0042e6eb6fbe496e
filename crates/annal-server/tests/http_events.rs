//! The log's routes end to end over real HTTP: `/v1/events` pages after a position and
//! filters by type, correlation and time; `/v1/events/{id}` finds one event; `/v1/head`
//! is the last position, overall or per aggregate type; large pages stream whole.

mod common;

use annal_server::Config;
use common::{family, get, post, seed_family, start};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

async fn check_a_log_page_names_the_next_position(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    let (_, r) = get(&c, &format!("{b}/v1/events?after_position=0&limit=1")).await;
    assert_eq!(
        (
            r["events"].as_array().map(Vec::len),
            r["next_after_position"].as_u64()
        ),
        (Some(1), Some(1))
    );
}

on_both_stores!(
    a_log_page_names_the_position_the_next_starts_after,
    a_log_page_names_the_position_the_next_starts_after_on_postgres,
    check_a_log_page_names_the_next_position
);

async fn check_a_page_at_the_head_has_no_next(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    let (_, r) = get(&c, &format!("{b}/v1/events?after_position=1")).await;
    assert!(
        r["next_after_position"].is_null(),
        "the page reached the head"
    );
}

on_both_stores!(
    a_log_page_that_reaches_the_head_names_no_next,
    a_log_page_that_reaches_the_head_names_no_next_on_postgres,
    check_a_page_at_the_head_has_no_next
);

async fn check_type_and_correlation_filters(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    let (_, r) = get(
        &c,
        &format!("{b}/v1/events?event_type=ChildAdded,Nothing&correlation_id=enrollment_abc123"),
    )
    .await;
    assert_eq!(r["events"][0]["position"].as_u64(), Some(2));
}

on_both_stores!(
    log_reads_filter_by_any_of_several_event_types_and_a_correlation_id,
    log_reads_filter_by_any_of_several_event_types_and_a_correlation_id_on_postgres,
    check_type_and_correlation_filters
);

async fn check_a_time_range_filter(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    let (_, r) = get(
        &c,
        &format!("{b}/v1/events?since=2000-01-01&until=2000-01-02"),
    )
    .await;
    assert_eq!(r["events"].as_array().map(Vec::len), Some(0));
}

on_both_stores!(
    log_reads_filter_by_recorded_time,
    log_reads_filter_by_recorded_time_on_postgres,
    check_a_time_range_filter
);

async fn check_an_event_by_id(b: &str) {
    let c = Client::new();
    let appended = seed_family(&c, b).await;
    let first_id = appended["events"][0]["event_id"].as_str().expect("id");
    let (st, r) = get(&c, &format!("{b}/v1/events/{first_id}")).await;
    assert_eq!((st, r["position"].as_u64()), (StatusCode::OK, Some(1)));
}

on_both_stores!(
    an_event_is_found_by_its_id,
    an_event_is_found_by_its_id_on_postgres,
    check_an_event_by_id
);

async fn check_an_unknown_id_is_not_found(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    let (st, _) = get(
        &c,
        &format!("{b}/v1/events/01932c07-8e5c-7a3e-9b6f-3f1d2c4b5a69"),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

on_both_stores!(
    an_unknown_event_id_is_not_found,
    an_unknown_event_id_is_not_found_on_postgres,
    check_an_unknown_id_is_not_found
);

async fn check_a_malformed_id_is_invalid(b: &str) {
    let c = Client::new();
    let (st, r) = get(&c, &format!("{b}/v1/events/not-a-uuid")).await;
    assert_eq!(
        (st, r["type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
}

on_both_stores!(
    an_event_id_that_is_not_a_uuid_is_an_invalid_request_problem,
    an_event_id_that_is_not_a_uuid_is_an_invalid_request_problem_on_postgres,
    check_a_malformed_id_is_invalid
);

async fn check_the_head(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    assert_eq!(
        get(&c, &format!("{b}/v1/head")).await.1,
        json!({"position": 2})
    );
    assert_eq!(
        get(&c, &format!("{b}/v1/head?aggregate_type=Invoice"))
            .await
            .1,
        json!({"position": 0})
    );
}

on_both_stores!(
    the_head_is_the_last_position_overall_or_zero_for_a_type_without_events,
    the_head_is_the_last_position_overall_or_zero_for_a_type_without_events_on_postgres,
    check_the_head
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pages_stream_and_say_where_the_next_starts() {
    let s = start(Config::default()).await;
    let c = Client::new();
    let b = &s.base;
    for k in 0..5 {
        let events: Vec<Value> = (0..1000)
            .map(|i| json!({"event_type": "E", "data": {"k": k, "i": i}}))
            .collect();
        assert_eq!(
            post(
                &c,
                &format!("{b}/v1/streams/big"),
                &family(json!("any"), json!(events))
            )
            .await
            .0,
            StatusCode::CREATED
        );
    }
    let (_, r) = get(&c, &format!("{b}/v1/events?limit=2500")).await;
    let events = r["events"].as_array().expect("events");
    assert_eq!(events.len(), 2500);
    assert_eq!(events[2499]["position"].as_u64(), Some(2500));
    assert_eq!(r["next_after_position"].as_u64(), Some(2500));
    let (_, r) = get(
        &c,
        &format!("{b}/v1/events?after_position=2500&limit=10000"),
    )
    .await;
    assert_eq!(r["events"].as_array().map(Vec::len), Some(2500));
    assert!(r["next_after_position"].is_null());
}

/// Two appends of 1,000 events each to their own aggregate, sent at once: a page of the
/// log after the head before them holds both, each whole and contiguous, in order.
async fn check_two_concurrent_appends_are_each_contiguous(b: &str) {
    let c = Client::new();
    let (_, head) = get(&c, &format!("{b}/v1/head")).await;
    let before = head["position"].as_u64().expect("head position");
    let append = |name: &'static str| {
        let (c, b) = (c.clone(), b.to_owned());
        tokio::spawn(async move {
            let events: Vec<Value> = (0..1000)
                .map(|n| json!({"event_type": "Ticked", "data": {"n": n}}))
                .collect();
            let (st, r) = post(
                &c,
                &format!("{b}/v1/streams/{name}"),
                &family(json!("no_stream"), json!(events)),
            )
            .await;
            assert_eq!(st, StatusCode::CREATED, "{r}");
        })
    };
    let (one, two) = tokio::join!(append("ticker-1"), append("ticker-2"));
    one.expect("first append");
    two.expect("second append");
    let (_, page) = get(
        &c,
        &format!("{b}/v1/events?after_position={before}&limit=2000"),
    )
    .await;
    let events = page["events"].as_array().expect("events");
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["aggregate_id"].as_str().expect("aggregate_id"))
        .collect();
    assert_eq!(ids.len(), 2000);
    let (first, second) = ids.split_at(1000);
    assert!(
        first.iter().all(|i| *i == first[0]) && second.iter().all(|i| *i == second[0]),
        "each append is contiguous"
    );
    assert_ne!(first[0], second[0], "both appends are in the page");
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().expect("position"))
        .collect();
    assert!(
        positions
            .iter()
            .zip(before + 1..)
            .all(|(p, want)| *p == want)
    );
}

on_both_stores!(
    two_concurrent_appends_of_1000_events_are_each_contiguous_in_the_log,
    two_concurrent_appends_of_1000_events_are_each_contiguous_in_the_log_on_postgres,
    check_two_concurrent_appends_are_each_contiguous
);
