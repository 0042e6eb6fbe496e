//! Transactions and checkpoints end to end over real HTTP: a transaction appends to
//! several streams and moves a checkpoint at once; checkpoints read back with their
//! status and move under an expected position, a stale one being a conflict that names
//! both positions.

mod common;

use common::{get, seed_family, seed_transaction};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

async fn check_a_transaction_answers_every_append_and_the_checkpoint(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    let r = seed_transaction(&c, b).await;
    assert_eq!(r["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(r["checkpoint"]["position"].as_u64(), Some(3));
}

on_both_stores!(
    a_transaction_answers_each_append_and_the_checkpoint_it_moved,
    a_transaction_answers_each_append_and_the_checkpoint_it_moved_on_postgres,
    check_a_transaction_answers_every_append_and_the_checkpoint
);

async fn check_a_new_checkpoint_is_running(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    seed_transaction(&c, b).await;
    let (st, r) = get(&c, &format!("{b}/v1/checkpoints/payments-projection")).await;
    assert_eq!(
        (st, r["status"].as_str(), r["error_count"].as_u64()),
        (StatusCode::OK, Some("running"), Some(0))
    );
}

on_both_stores!(
    a_checkpoint_written_by_a_transaction_reads_back_running_without_errors,
    a_checkpoint_written_by_a_transaction_reads_back_running_without_errors_on_postgres,
    check_a_new_checkpoint_is_running
);

/// Moves `payments-projection` from 3 to 4 (status `stopped`), expecting 3.
async fn move_the_checkpoint(c: &Client, b: &str) {
    let r = c
        .put(format!("{b}/v1/checkpoints/payments-projection"))
        .json(&json!({"position": 4, "expected_position": 3, "status": "stopped"}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::OK);
}

async fn check_a_checkpoint_moves_at_its_expected_position(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    seed_transaction(&c, b).await;
    move_the_checkpoint(&c, b).await;
}

on_both_stores!(
    a_checkpoint_moves_when_its_expected_position_is_current,
    a_checkpoint_moves_when_its_expected_position_is_current_on_postgres,
    check_a_checkpoint_moves_at_its_expected_position
);

async fn check_a_stale_checkpoint_is_a_conflict(b: &str) {
    let c = Client::new();
    seed_family(&c, b).await;
    seed_transaction(&c, b).await;
    move_the_checkpoint(&c, b).await;
    let r = c
        .put(format!("{b}/v1/checkpoints/payments-projection"))
        .json(&json!({"position": 4, "expected_position": 3}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let p: Value = r.json().await.expect("problem");
    assert_eq!(
        (
            p["type"].as_str(),
            p["expected_position"].as_u64(),
            p["actual_position"].as_u64()
        ),
        (Some("checkpoint_conflict"), Some(3), Some(4))
    );
}

on_both_stores!(
    a_stale_expected_position_is_a_checkpoint_conflict_naming_both_positions,
    a_stale_expected_position_is_a_checkpoint_conflict_naming_both_positions_on_postgres,
    check_a_stale_checkpoint_is_a_conflict
);

async fn check_a_missing_checkpoint_is_not_found(b: &str) {
    let c = Client::new();
    assert_eq!(
        get(&c, &format!("{b}/v1/checkpoints/nobody")).await.0,
        StatusCode::NOT_FOUND
    );
}

on_both_stores!(
    a_missing_checkpoint_is_not_found,
    a_missing_checkpoint_is_not_found_on_postgres,
    check_a_missing_checkpoint_is_not_found
);
