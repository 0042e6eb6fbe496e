//! The operational routes end to end over real HTTP: verify walks the whole log, the
//! health probes answer, and the Prometheus metrics count requests and appends.

mod common;

use common::{get, seed_family, seed_transaction};
use reqwest::{Client, StatusCode};
use serde_json::json;

async fn check_verify_checks_every_event(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    seed_transaction(&c, b).await;
    assert_eq!(
        get(&c, &format!("{b}/v1/verify")).await.1,
        json!({"ok": true, "checked": 4})
    );
}

on_both_stores!(
    verify_checks_every_event_of_the_log,
    verify_checks_every_event_of_the_log_on_postgres,
    check_verify_checks_every_event
);

async fn check_health(b: &str) {
    let c = Client::new();
    assert_eq!(get(&c, &format!("{b}/health/live")).await.0, StatusCode::OK);
    assert_eq!(
        get(&c, &format!("{b}/health/ready")).await.0,
        StatusCode::OK
    );
}

on_both_stores!(
    the_liveness_and_readiness_probes_answer_ok,
    the_liveness_and_readiness_probes_answer_ok_on_postgres,
    check_health
);

async fn check_metrics(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    let metrics = c
        .get(format!("{b}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("annal_http_requests_total"), "{metrics}");
    assert!(metrics.contains("annal_events_appended_total"), "{metrics}");
}

on_both_stores!(
    the_metrics_count_http_requests_and_appended_events,
    the_metrics_count_http_requests_and_appended_events_on_postgres,
    check_metrics
);
