//! The bank's behaviours, with annal::testing: the account's rules as given/when/then,
//! the rest on a real test store.

use annal::testing::{AggregateTest, TestStore};
use annal::{AppendRequest, CommandContext, ExpectedVersion, NewEvent, RepositoryError, Store};
use annal_example_bank::AccountEvent::{Deposited, Opened, Withdrawn};
use annal_example_bank::{AccountError::*, Accounts, BankAccount, Command::*};
use annal_example_bank::{accounts, balances, transfer};
use std::time::Duration;

type Outcome = Result<(), Box<dyn std::error::Error>>;

#[test]
fn an_account_refuses_overdrafts_and_use_before_it_is_opened_once() {
    let given = |amount| {
        let opened = Opened {
            owner: "ada".into(),
        };
        AggregateTest::<BankAccount>::given([opened, Deposited { amount }])
    };
    let emptied = given(50)
        .when(Withdraw(50))
        .then([Withdrawn { amount: 50 }]);
    assert_eq!(emptied.balance, 0);
    let overdraft = Overdraft {
        balance: 50,
        amount: 80,
    };
    given(50).when(Withdraw(80)).then_error(overdraft);
    given(0).when(Open("bob".into())).then_error(AlreadyOpen);
    let new = AggregateTest::<BankAccount>::given_nothing();
    new.when(Deposit(1)).then_error(NotOpen);
}

/// A test store and its bank with `ada` (opened by version 1 of the bank, when the
/// owner was `holder`), `ada-2` and `bob`.
async fn bank() -> Result<(TestStore, Accounts, CommandContext), Box<dyn std::error::Error>> {
    let store = TestStore::new()?;
    let v1 = NewEvent::new("Opened", &serde_json::json!({ "holder": "ada" }))?;
    let request = AppendRequest::new("BankAccount", "ada", ExpectedVersion::NoStream);
    store.append(request.event(v1.with_version(1))).await?;
    let (bank, ctx) = (accounts(store.shared()), CommandContext::by("teller"));
    for (id, owner) in [("ada-2", "ada"), ("bob", "bob")] {
        bank.execute(id, Open(owner.into()), &ctx).await?;
    }
    Ok((store, bank, ctx))
}

#[tokio::test]
async fn a_transfer_moves_money_or_nothing_and_the_past_stays_readable() -> Outcome {
    let (_store, bank, ctx) = bank().await?;
    bank.execute("ada", Deposit(100), &ctx).await?;
    transfer(&bank, "ada", "bob", 70, &ctx).await?;
    let refused = transfer(&bank, "ada", "bob", 50, &ctx).await;
    assert!(matches!(
        refused,
        Err(RepositoryError::Rejected(Overdraft { .. }))
    ));
    let (ada, bob) = (bank.load("ada").await?.state, bank.load("bob").await?.state);
    assert_eq!(
        (ada.owner.as_deref(), ada.balance, bob.balance),
        (Some("ada"), 30, 70)
    );
    let past = bank.load_at_version("ada", 2).await?;
    assert_eq!((past.version, past.state.balance), (2, 100));
    Ok(())
}

/// The read model is killed at random moments (as kill -9 would: no last checkpoint)
/// while 300 commands land, restarted each time, then caught up: each owner's balance
/// is the sum of their accounts, nothing counted twice or missed, a version 1 account
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_by_owner_count_each_event_once_across_crashes() -> Outcome {
    let (store, bank, ctx) = bank().await?;
    let (path, ids) = (store.dir().join("balances.db"), ["ada", "ada-2", "bob"]);
    let mut model = balances::spawn(store.shared(), &path)?;
    for i in 0..300 {
        let command = if i % 4 == 3 { Withdraw(7) } else { Deposit(5) };
        let _ = bank.execute(ids[i % 3], command, &ctx).await;
        if fastrand::u8(..20) == 0 {
            model.kill().await;
            model = balances::spawn(store.shared(), &path)?;
        }
    }
    assert!(
        model.wait_caught_up(Duration::from_secs(10)).await?,
        "caught up"
    );
    let model = model.stop().await?;
    let balance = async |id| Ok::<_, RepositoryError<_>>(bank.load(id).await?.state.balance);
    let ada = balance("ada").await? + balance("ada-2").await?;
    assert_eq!(model.balance("ada")?, ada);
    assert_eq!(model.balance("bob")?, balance("bob").await?);
    Ok(())
}
