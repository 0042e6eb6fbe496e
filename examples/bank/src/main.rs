//! `bank [FOLDER]` (default `./bank-data`): two accounts, a deposit, a transfer, a refused
//! overdraft, a balance in the past, and the balances by owner from the read model.

use annal::{CommandContext, sqlite::SqliteStore};
use annal_example_bank::balances::{self, balance};
use annal_example_bank::{Command::*, accounts, transfer};
use std::{path::PathBuf, sync::Arc, time::Duration};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or("bank-data".into()));
    let store = Arc::new(SqliteStore::open(dir.join("log.db"))?);
    let (bank, ctx) = (accounts(store.clone()), CommandContext::by("teller"));
    let [ada, bob] = ["ada", "bob"].map(|owner| format!("{owner}-{}", std::process::id()));
    bank.execute(&ada, Open("ada".into()), &ctx).await?;
    bank.execute(&bob, Open("bob".into()), &ctx).await?;
    bank.execute(&ada, Deposit(10_000), &ctx).await?;
    transfer(&bank, &ada, &bob, 2_500, &ctx).await?;
    if let Err(refused) = transfer(&bank, &bob, &ada, 9_000, &ctx).await {
        println!("refused: {refused}");
    }
    let (now, then) = (bank.load(&ada).await?, bank.load_at_version(&ada, 2).await?);
    let (now, then) = (now.state.balance, then.state.balance);
    println!("{ada}: {now} now, {then} at version 2");
    let model = balances::spawn(store, &dir.join("balances.db"))?;
    model.wait_caught_up(Duration::from_secs(10)).await?;
    let db = model.stop().await?;
    let (ada, bob) = (balance(db.db(), "ada")?, balance(db.db(), "bob")?);
    println!("balances by owner: ada {ada}, bob {bob}");
    Ok(())
}
