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

/// The `/metrics` text.
async fn metrics_text(c: &Client, b: &str) -> String {
    c.get(format!("{b}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

async fn check_metrics(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    let metrics = metrics_text(&c, b).await;
    assert!(metrics.contains("annal_http_requests_total"), "{metrics}");
    assert!(metrics.contains("annal_events_appended_total"), "{metrics}");
}

on_both_stores!(
    the_metrics_count_http_requests_and_appended_events,
    the_metrics_count_http_requests_and_appended_events_on_postgres,
    check_metrics
);

/// The embedded store's index file is filled behind the writer: `/metrics` says how far
/// it has come (`annal_index_position`) and how far behind the head it is
/// (`annal_index_lag_events`), and it reaches the head once appends stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_show_the_index_file_reaching_the_head() {
    let s = common::start(annal_server::Config::default()).await;
    let c = Client::new();
    seed_family(&c, &s.base).await;
    let gauge = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = metrics_text(&c, &s.base).await;
        let head = gauge(&text, "annal_head_position").expect("the head");
        let indexed = gauge(&text, "annal_index_position").expect("the index position");
        let lag = gauge(&text, "annal_index_lag_events").expect("the index lag");
        assert_eq!(lag, head - indexed, "{text}");
        if head > 0.0 && lag == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the index never reached the head: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
