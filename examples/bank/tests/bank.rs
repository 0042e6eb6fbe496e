//! The bank's behaviours, with annal::testing: the account's rules as given/when/then,
//! the rest on a real test store.

use annal::CommandContext;
use annal::RepositoryError::{Conflict, Rejected};
use annal::testing::{AggregateTest, TestStore};
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
    let owner = || "ada".to_owned();
    let ada = || {
        AggregateTest::<BankAccount>::given([Opened { owner: owner() }, Deposited { amount: 50 }])
    };
    let emptied = ada().when(Withdraw(50)).then([Withdrawn { amount: 50 }]);
    assert_eq!(emptied.balance, 0);
    ada().when(Withdraw(80)).then_error(Overdraft(80));
    ada().when(Open("bob".into())).then_error(AlreadyOpen);
    let new = AggregateTest::<BankAccount>::given_nothing();
    new.when(Deposit(1)).then_error(NotOpen);
}

/// A test store and its bank with `ada` (opened by version 1 of the bank, when the
/// owner was `holder`), `ada-2` and `bob`, 100 in each.
async fn bank() -> Result<(TestStore, Accounts, CommandContext), Box<dyn std::error::Error>> {
    let store = TestStore::new()?;
    let v1 = serde_json::json!({ "holder": "ada" });
    store
        .record_raw::<BankAccount>("ada", "Opened", 1, &v1)
        .await?;
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
    assert!(matches!(refused, Err(Rejected(Overdraft(50)))));
    let (ada, bob) = (bank.load("ada").await?.state, bank.load("bob").await?.state);
    assert_eq!(ada.owner.as_deref(), Some("ada"));
    assert_eq!((ada.balance, bob.balance), (30, 170));
    let past = bank.load_at_version("ada", 2).await?;
    assert_eq!((past.version, past.state.balance), (2, 100));
    Ok(())
}

/// 8 tellers make 20 random transfers each at once while the read model is killed at
/// random moments (no last checkpoint) and restarted: transfers land whole or not at all
/// (the total stays 300, no balance is negative), and the read model counts each event
/// once (each owner's balance is the sum of their accounts, a version 1 one included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_keep_the_total_and_the_read_model_counts_each_once() -> Outcome {
    let (store, bank, ctx) = bank().await?;
    let path = store.dir().join("balances.db");
    let teller = async |bank: Accounts, ctx| {
        for _ in 0..20 {
            let (from, to) = (IDS[fastrand::usize(..3)], IDS[fastrand::usize(..3)]);
            match transfer(&bank, from, to, fastrand::u32(1..80), &ctx).await {
                Ok(()) | Err(Rejected(_) | Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    let tellers = [(); 8].map(|()| tokio::spawn(teller(bank.clone(), ctx.clone())));
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
    assert!(balances.iter().all(|b| *b >= 0), "{balances:?}");
    assert_eq!(balances.iter().sum::<i64>(), 300);
    let caught_up = model.wait_caught_up(Duration::from_secs(10)).await?;
    assert!(caught_up, "the read model caught up");
    let db = model.stop().await?;
    let by_owner = (balance(db.db(), "ada")?, balance(db.db(), "bob")?);
    assert_eq!(by_owner, (balances[0] + balances[1], balances[2]));
    Ok(())
}
