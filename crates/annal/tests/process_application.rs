//! A process application over two stores (docs/subscriptions.md, "Checkpoints that track
//! another log"): it reads an upstream store's log and commits its own events together
//! with the upstream position they came from, so that a crash or a second copy of the
//! process never handles an upstream event twice.

use annal::checkpoint::CheckpointWrite;
use annal::sqlite::SqliteStore;
use annal::{AppendRequest, ErrorKind, ExpectedVersion, Filter, NewEvent, Store, Transaction};

const NAME: &str = "billing-from-orders";

/// One step: the upstream events after the checkpoint, turned into invoices, committed
/// with the checkpoint in one transaction. Returns how many upstream events it handled.
async fn step(upstream: &dyn Store, own: &dyn Store) -> annal::Result<usize> {
    let at = own.checkpoint(NAME).await?.map(|c| c.position);
    let page = upstream
        .read_all(at.unwrap_or(0), 100, &Filter::default())
        .await?;
    let Some(last) = page.last() else {
        return Ok(0);
    };
    let mut appends = Vec::new();
    for e in &page {
        let invoice = serde_json::json!({"order": e.aggregate_id, "upstream_position": e.position});
        appends.push(
            AppendRequest::new(
                "Invoice",
                format!("invoice-{}", e.aggregate_id),
                ExpectedVersion::NoStream,
            )
            .event(NewEvent::new("InvoiceRaised", &invoice)?),
        );
    }
    let checkpoint = CheckpointWrite::new(NAME, last.position)
        .in_source("orders")
        .expecting(at);
    own.transact(Transaction {
        appends,
        checkpoint: Some(checkpoint),
    })
    .await?;
    Ok(page.len())
}

async fn place_orders(orders: &dyn Store, from: u32, to: u32) {
    for n in from..to {
        orders
            .append(
                AppendRequest::new("Order", format!("order-{n}"), ExpectedVersion::NoStream).event(
                    NewEvent::new("OrderPlaced", &serde_json::json!({"n": n})).expect("event"),
                ),
            )
            .await
            .expect("order");
    }
}

#[tokio::test]
async fn a_process_application_handles_each_upstream_event_exactly_once() {
    let dir = tempfile::tempdir().expect("dir");
    let orders = SqliteStore::open(dir.path().join("orders.db")).expect("orders store");
    let billing = SqliteStore::open(dir.path().join("billing.db")).expect("billing store");
    place_orders(&orders, 0, 5).await;

    assert_eq!(step(&orders, &billing).await.expect("step"), 5);
    let cp = billing
        .checkpoint(NAME)
        .await
        .expect("read")
        .expect("written");
    assert_eq!((cp.position, cp.source.as_deref()), (5, Some("orders")));

    // Two copies of the process take the same next page; one commits, the other's
    // whole transaction is refused, so no invoice is raised twice.
    place_orders(&orders, 5, 8).await;
    let (a, b) = tokio::join!(step(&orders, &billing), step(&orders, &billing));
    let refused = [&a, &b].iter().filter(|r| r.is_err()).count();
    assert!(refused <= 1, "{a:?} {b:?}");
    if let Some(Err(e)) = [a, b].into_iter().find(|r| r.is_err()) {
        assert!(
            matches!(
                e.kind(),
                ErrorKind::CheckpointConflict | ErrorKind::WrongExpectedVersion
            ),
            "{e}"
        );
    }
    assert_eq!(step(&orders, &billing).await.expect("caught up"), 0);
    assert_eq!(
        billing.head(&[]).await.expect("head"),
        8,
        "one invoice per order"
    );
    let cp = billing
        .checkpoint(NAME)
        .await
        .expect("read")
        .expect("written");
    assert_eq!(cp.position, 8);
}
