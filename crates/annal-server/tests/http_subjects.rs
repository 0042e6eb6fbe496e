//! Personal data end to end over real HTTP, on both stores: an append with a `personal`
//! part and `subjects` reads back byte for byte beside `data`; forgetting the subject
//! (`POST /v1/subjects/{subject}/forget`) makes every read show `{"$erased":true}`,
//! records `$subjectForgotten`, keeps the chain whole; subjects are listed and exported;
//! bad input is a 4xx problem that writes nothing.

mod common;

use common::{family, get, post};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const SOFIA: &str = r#"{"child_name" : "Sofía", "grade": 7.50}"#;

/// Appends `ChildAdded` with a personal part about `family_123` (raw text, so its
/// bytes are the test's): the append's answer.
async fn append_child(c: &Client, b: &str) -> Value {
    let body = format!(
        r#"{{"aggregate_type":"Family","expected_version":"any","user_id":"sarah","events":[
            {{"event_type":"ChildAdded","data":{{"age_band":"7-9"}},"subjects":["family_123"],
              "personal":{SOFIA}}}]}}"#
    );
    let r = c
        .post(format!("{b}/v1/streams/family_123"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("append");
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.expect("json")
}

/// The raw text of the first event's `personal` member in a JSON answer.
async fn raw_personal(c: &Client, url: &str) -> String {
    let text = c
        .get(url)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    let at = text.find("\"personal\":").expect("a personal member") + "\"personal\":".len();
    let rest = &text[at..];
    let end = rest.find('}').expect("object end") + 1;
    rest[..end].to_owned()
}

async fn check_personal_data_round_trips_and_is_forgotten(b: &str) {
    let c = Client::new();
    let appended = append_child(&c, b).await;
    let id = appended["events"][0]["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        raw_personal(&c, &format!("{b}/v1/events/{id}")).await,
        SOFIA,
        "byte for byte"
    );
    assert_eq!(
        raw_personal(&c, &format!("{b}/v1/streams/family_123")).await,
        SOFIA
    );
    let (_, one) = get(&c, &format!("{b}/v1/events/{id}")).await;
    assert_eq!(one["subjects"], json!(["family_123"]));
    assert!(one["sealed"].is_object(), "{one}");
    assert!(!one["sealed"].to_string().contains("Sof"));

    let (st, list) = get(&c, &format!("{b}/v1/subjects")).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list["subjects"][0]["status"], "active");
    let (st, export) = get(&c, &format!("{b}/v1/subjects/family_123/events")).await;
    assert_eq!(st, StatusCode::OK, "{export}");
    assert_eq!(export["events"][0]["personal"]["child_name"], "Sofía");

    let (st, forgotten) = post(
        &c,
        &format!("{b}/v1/subjects/family_123/forget"),
        &json!({"reason": "erasure request, ticket 881"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{forgotten}");
    assert_eq!(forgotten["already"], false);
    let (_, after) = get(&c, &format!("{b}/v1/events/{id}")).await;
    assert_eq!(after["personal"], json!({"$erased": true}));
    assert_eq!(after["data"], json!({"age_band": "7-9"}));
    let (_, log) = get(&c, &format!("{b}/v1/events")).await;
    let last = &log["events"][1];
    assert_eq!(last["event_type"], "$subjectForgotten");
    assert_eq!(last["data"]["reason"], "erasure request, ticket 881");
    let (_, verify) = get(&c, &format!("{b}/v1/verify")).await;
    assert_eq!(verify["ok"], true, "{verify}");
    let (_, info) = get(&c, &format!("{b}/v1/subjects/family_123")).await;
    assert_eq!(info["status"], "forgotten");

    let (st, refused) = post(
        &c,
        &format!("{b}/v1/streams/family_123"),
        &family(
            json!("any"),
            json!([{"event_type": "ChildAdded", "data": {}, "subjects": ["family_123"],
                    "personal": {"child_name": "Mateo"}}]),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::GONE, "{refused}");
    assert_eq!(refused["type"], "subject_forgotten");
    assert_eq!(refused["subject"], "family_123");
    // A listing cursor that could not be a subject id is a bad request, on every store.
    let (st, p) = get(&c, &format!("{b}/v1/subjects?after=%00")).await;
    assert_eq!(
        (st, p["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("after")),
        "{p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_round_trips_and_is_forgotten() {
    let s = common::start_with_kek(annal_server::Config::default()).await;
    check_personal_data_round_trips_and_is_forgotten(&s.base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_round_trips_and_is_forgotten_on_postgres() {
    if let Some(s) = common::start_with_kek_on_postgres(annal_server::Config::default()).await {
        check_personal_data_round_trips_and_is_forgotten(&s.base).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_personal_input_and_bad_forget_requests_are_4xx_and_write_nothing() {
    let s = common::start_with_kek(annal_server::Config::default()).await;
    let (c, b) = (Client::new(), s.base.as_str());
    for (events, field) in [
        (
            json!([{"event_type": "E", "data": {"a": 1}, "subjects": ["s"], "personal": {"a": 2}}]),
            "events[0].personal",
        ),
        (
            json!([{"event_type": "E", "data": {}, "subjects": ["s"], "personal": [1]}]),
            "events[0].personal",
        ),
        (
            json!([{"event_type": "E", "data": {}, "subjects": ["s"]}]),
            "events[0].subjects",
        ),
        (
            json!([{"event_type": "E", "data": {}, "personal": {"a": 1}}]),
            "events[0].subjects",
        ),
    ] {
        let (st, p) = post(
            &c,
            &format!("{b}/v1/streams/f"),
            &family(json!("any"), events),
        )
        .await;
        assert_eq!(
            (st, p["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{p}"
        );
    }
    let (st, p) = post(
        &c,
        &format!("{b}/v1/subjects/nobody/forget"),
        &json!({"reason": "x"}),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{p}");
    let (st, p) = post(
        &c,
        &format!("{b}/v1/subjects/nobody/forget"),
        &json!({"reason": " "}),
    )
    .await;
    assert_eq!(
        (st, p["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("reason")),
        "{p}"
    );
    let (st, p) = post(&c, &format!("{b}/v1/subjects/nobody/forget"), &json!({})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{p}");
    let (st, p) = get(&c, &format!("{b}/v1/subjects?limit=0")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{p}");
    let (_, head) = get(&c, &format!("{b}/v1/head")).await;
    assert_eq!(head["position"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_kek_refuses_personal_data_as_invalid() {
    let s = common::start(annal_server::Config::default()).await;
    let c = Client::new();
    let (st, p) = post(
        &c,
        &format!("{}/v1/streams/f", s.base),
        &family(
            json!("any"),
            json!([{"event_type": "E", "data": {}, "subjects": ["s"], "personal": {"a": 1}}]),
        ),
    )
    .await;
    assert_eq!(
        (st, p["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("events[0].personal")),
        "{p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_kek_another_process_rotated_is_not_ready() {
    use annal_core::Store;
    use annal_core::testkit::privacy::{kek, other_kek};
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("s.db");
    let with = |k| annal_sqlite::Options {
        keyring: Some(k),
        ..annal_sqlite::Options::default()
    };
    let store = std::sync::Arc::new(
        annal_sqlite::SqliteStore::open_with(&file, with(kek())).expect("open"),
    );
    let s = common::serve(store, annal_server::Config::default()).await;
    let c = Client::new();
    append_child(&c, &s.base).await;
    let ready = format!("{}/health/ready", s.base);
    assert_eq!(get(&c, &ready).await.0, StatusCode::OK);

    let other = annal_sqlite::SqliteStore::open_with(&file, with(kek())).expect("open");
    other.rotate_kek(other_kek()).await.expect("rotate");
    drop(other);
    let (st, p) = get(&c, &ready).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    let said = p["detail"].as_str().unwrap_or_default();
    assert!(
        said.contains(other_kek().id()) && said.contains("restart"),
        "{p}"
    );
    assert!(!said.contains("closed"), "{p}");
}
