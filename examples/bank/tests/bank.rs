//! The bank's behaviours, with annal::testing: the account's rules as given/when/then,
//! the rest on a real test store.

use annal::testing::{AggregateTest, TestStore};
use annal::{AppendRequest, CommandContext, ExpectedVersion, NewEvent, RepositoryError, Store};
use annal_example_bank::AccountEvent::{Deposited, Opened, Withdrawn};
use annal_example_bank::balances::{self, balance};
use annal_example_bank::{AccountError::*, Accounts, BankAccount, Command::*};
use annal_example_bank::{accounts, transfer};
use std::time::Duration;

type Outcome = Result<(), Box<dyn std::error::Error>>;

/// The accounts of [`bank`]: `ada` and `ada-2` are ada's, `bob` is bob's.
const IDS: [&str; 3] = ["ada", "ada-2", "bob"];

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
/// owner was `holder`), `ada-2` and `bob`, 100 in each.
async fn bank() -> Result<(TestStore, Accounts, CommandContext), Box<dyn std::error::Error>> {
    let store = TestStore::new()?;
    let v1 = NewEvent::new("Opened", &serde_json::json!({ "holder": "ada" }))?;
    let request = AppendRequest::new("BankAccount", "ada", ExpectedVersion::NoStream);
    store.append(request.event(v1.with_version(1))).await?;
    let (bank, ctx) = (accounts(store.shared()), CommandContext::by("teller"));
    for (id, owner) in [("ada-2", "ada"), ("bob", "bob")] {
        bank.execute(id, Open(owner.into()), &ctx).await?;
    }
    for id in IDS {
        bank.execute(id, Deposit(100), &ctx).await?;
    }
    Ok((store, bank, ctx))
}

#[tokio::test]
async fn a_transfer_moves_money_or_nothing_and_the_past_stays_readable() -> Outcome {
    let (_store, bank, ctx) = bank().await?;
    transfer(&bank, "ada", "bob", 70, &ctx).await?;
    let refused = transfer(&bank, "ada", "bob", 50, &ctx).await;
    assert!(matches!(
        refused,
        Err(RepositoryError::Rejected(Overdraft { .. }))
    ));
    let (ada, bob) = (bank.load("ada").await?.state, bank.load("bob").await?.state);
    assert_eq!(
        (ada.owner.as_deref(), ada.balance, bob.balance),
        (Some("ada"), 30, 170)
    );
    let past = bank.load_at_version("ada", 2).await?;
    assert_eq!((past.version, past.state.balance), (2, 100));
    Ok(())
}

/// 8 tellers make 20 random transfers each between the three accounts at once, while
/// the read model is killed at random moments (no last checkpoint, as with kill -9) and
/// restarted: every transfer lands whole or not at all, so no balance is negative and
/// the total stays 300; and once caught up, each owner's balance in the read model is
/// the sum of their accounts, nothing counted twice or missed, a version 1 account
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_keep_the_total_and_the_read_model_counts_each_once() -> Outcome {
    let (store, bank, ctx) = bank().await?;
    let path = store.dir().join("balances.db");
    let teller = async |bank: Accounts, ctx| {
        for _ in 0..20 {
            let (from, to) = (IDS[fastrand::usize(..3)], IDS[fastrand::usize(..3)]);
            match transfer(&bank, from, to, fastrand::u32(1..80), &ctx).await {
                Ok(()) | Err(RepositoryError::Rejected(_) | RepositoryError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    let tellers: Vec<_> = (0..8)
        .map(|_| tokio::spawn(teller(bank.clone(), ctx.clone())))
        .collect();
    let mut model = balances::spawn(store.shared(), &path)?;
    while !tellers.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(1..30))).await;
        model.kill().await;
        model = balances::spawn(store.shared(), &path)?;
    }
    for teller in tellers {
        teller.await??;
    }
    let mut balances = Vec::new();
    for id in IDS {
        balances.push(bank.load(id).await?.state.balance);
    }
    assert!(
        balances.iter().all(|b| *b >= 0) && balances.iter().sum::<i64>() == 300,
        "{balances:?}"
    );
    assert!(
        model.wait_caught_up(Duration::from_secs(10)).await?,
        "caught up"
    );
    let db = model.stop().await?;
    let by_owner = (balance(db.db(), "ada")?, balance(db.db(), "bob")?);
    assert_eq!(by_owner, (balances[0] + balances[1], balances[2]));
    Ok(())
}
