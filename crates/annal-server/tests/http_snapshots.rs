//! Snapshots end to end over real HTTP: one saved at a version is the latest for its
//! tag; another tag has none; a version past the stream's end, or a missing stream, is
//! refused.

mod common;

use common::{get, seed_family};
use reqwest::{Client, StatusCode};
use serde_json::json;

async fn save_a_snapshot_at_version_2(c: &Client, b: &str) {
    let r = c
        .put(format!("{b}/v1/streams/family_123/snapshots/2"))
        .json(&json!({"tag": "family-v2", "state": {"n": 2}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
}

async fn check_a_snapshot_is_the_latest_for_its_tag(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    save_a_snapshot_at_version_2(&c, b).await;
    let (st, r) = get(
        &c,
        &format!("{b}/v1/streams/family_123/snapshots/latest?tag=family-v2"),
    )
    .await;
    assert_eq!(
        (st, r["aggregate_version"].as_u64()),
        (StatusCode::OK, Some(2))
    );
}

on_both_stores!(
    a_saved_snapshot_is_the_latest_for_its_tag,
    a_saved_snapshot_is_the_latest_for_its_tag_on_postgres,
    check_a_snapshot_is_the_latest_for_its_tag
);

async fn check_another_tag_has_none(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    save_a_snapshot_at_version_2(&c, b).await;
    assert_eq!(
        get(
            &c,
            &format!("{b}/v1/streams/family_123/snapshots/latest?tag=other")
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

on_both_stores!(
    the_latest_snapshot_of_a_tag_never_saved_is_not_found,
    the_latest_snapshot_of_a_tag_never_saved_is_not_found_on_postgres,
    check_another_tag_has_none
);

async fn check_a_snapshot_past_the_end_is_refused(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    let r = c
        .put(format!("{b}/v1/streams/family_123/snapshots/99"))
        .json(&json!({"tag": "t", "state": {}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

on_both_stores!(
    a_snapshot_past_the_stream_version_is_a_bad_request,
    a_snapshot_past_the_stream_version_is_a_bad_request_on_postgres,
    check_a_snapshot_past_the_end_is_refused
);

async fn check_a_snapshot_of_a_missing_stream_is_not_found(b: &str) {
    let c = Client::new();
    let r = c
        .put(format!("{b}/v1/streams/nobody/snapshots/1"))
        .json(&json!({"tag": "t", "state": {}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

on_both_stores!(
    a_snapshot_of_a_missing_stream_is_not_found,
    a_snapshot_of_a_missing_stream_is_not_found_on_postgres,
    check_a_snapshot_of_a_missing_stream_is_not_found
);
