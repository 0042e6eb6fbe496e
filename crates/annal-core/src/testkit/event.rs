//! Conformance cases of the event as stored ([`crate::event`]): the store-assigned
//! `recorded_at` follows the order of positions.
//!
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use super::fixtures::{all, payment, req};
use crate::append::ExpectedVersion::Any;
use crate::store::Store;

/// Time and order agree: recorded_at never decreases as positions grow.
pub async fn recorded_at_never_decreases_with_position<H: Harness>(h: H) {
    let s = h.store().clone();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                s.append(req("Family", &format!("f{w}"), Any, vec![payment(i)]))
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let log = all(&s).await;
    assert_eq!(log.len(), 100);
    assert!(log.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at));
}
