//! The bank's behaviours, with annal::testing: the account's rules as given/when/then,
//! the rest on a real test store.

use annal::testing::{AggregateTest, TestStore};
use annal::{AppendRequest, CommandContext, ExpectedVersion, NewEvent, RepositoryError, Store};
use annal_example_bank::AccountEvent::{Deposited, Opened, Withdrawn};
use annal_example_bank::balances::{self, BalancesByOwner};
use annal_example_bank::{AccountError::*, BankAccount, BankError, Command::*, accounts, transfer};
use std::time::Duration;

#[test]
fn an_account_refuses_overdrafts_and_use_before_it_is_opened_once() {
    let given = |deposit| {
        let opened = Opened {
            owner: "ada".into(),
        };
        AggregateTest::<BankAccount>::given([opened, Deposited { amount: deposit }])
    };
    let left = given(50)
        .when(Withdraw(50))
        .then([Withdrawn { amount: 50 }]);
    assert_eq!(left.balance, 0);
    let overdraft = Overdraft {
        balance: 50,
        amount: 80,
    };
    given(50).when(Withdraw(80)).then_error(overdraft);
    given(0).when(Open("bob".into())).then_error(AlreadyOpen);
    AggregateTest::<BankAccount>::given_nothing()
        .when(Deposit(1))
        .then_error(NotOpen);
}

/// Stores an `Opened` as version 1 of the bank did (the owner was `holder`).
async fn open_v1(store: &TestStore, id: &str, holder: &str) {
    let v1 = NewEvent::new("Opened", &serde_json::json!({ "holder": holder })).expect("event");
    let request = AppendRequest::new("BankAccount", id, ExpectedVersion::NoStream);
    store
        .append(request.event(v1.with_version(1)))
        .await
        .expect("append v1");
}

#[tokio::test]
async fn a_transfer_moves_money_or_nothing_and_the_past_stays_readable() {
    let store = TestStore::new().expect("store");
    let (bank, ctx) = (accounts(store.shared()), CommandContext::by("teller"));
    open_v1(&store, "a", "ada").await;
    bank.execute("b", Open("bob".into()), &ctx)
        .await
        .expect("open");
    bank.execute("a", Deposit(100), &ctx)
        .await
        .expect("deposit");
    transfer(&bank, "a", "b", 70, &ctx).await.expect("transfer");
    let refused = transfer(&bank, "a", "b", 50, &ctx).await;
    assert!(matches!(
        refused,
        Err(BankError::Account(RepositoryError::Rejected(_)))
    ));
    let (a, b) = (
        bank.load("a").await.expect("a"),
        bank.load("b").await.expect("b"),
    );
    assert_eq!(
        (a.state.owner.as_deref(), a.state.balance, b.state.balance),
        (Some("ada"), 30, 70)
    );
    let past = bank.load_at_version("a", 2).await.expect("time travel");
    assert_eq!((past.version, past.state.balance), (2, 100));
}

/// The read model's consumer is cut off at random moments (as kill -9 would) while 300
/// commands land, its successor started at once (the two may overlap), then runs to the
/// head: each owner's balance is the sum of their accounts, nothing counted twice or
/// missed, a version 1 account included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_by_owner_count_each_event_once_across_crashes() {
    let store = TestStore::new().expect("store");
    let (bank, ctx) = (accounts(store.shared()), CommandContext::by("teller"));
    open_v1(&store, "ada-1", "ada").await;
    bank.execute("ada-2", Open("ada".into()), &ctx)
        .await
        .expect("open");
    bank.execute("bob-1", Open("bob".into()), &ctx)
        .await
        .expect("open");
    let (path, ids) = (store.dir().join("balances.db"), ["ada-1", "ada-2", "bob-1"]);
    let mut consumer = tokio::spawn(balances::run(store.shared(), path.clone()));
    for i in 0..300 {
        let command = if i % 4 == 3 { Withdraw(7) } else { Deposit(5) };
        let _ = bank.execute(ids[i % 3], command, &ctx).await;
        if fastrand::u8(..20) == 0 {
            consumer.abort();
            consumer = tokio::spawn(balances::run(store.shared(), path.clone()));
        }
    }
    let model = BalancesByOwner::open(&path).expect("read model");
    let head = store.head(&[]).await.expect("head");
    for _ in 0..500 {
        if model.position().expect("position") == head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(model.position().expect("position"), head, "caught up");
    consumer.abort();
    let balance = async |id: &str| bank.load(id).await.expect("load").state.balance;
    let ada = balance("ada-1").await + balance("ada-2").await;
    assert_eq!(
        (
            model.balance("ada").expect("ada"),
            model.balance("bob").expect("bob")
        ),
        (ada, balance("bob-1").await)
    );
}
