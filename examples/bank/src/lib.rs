//! A bank on annal's library, the example of docs/aggregates.md and docs/subscriptions.md:
//! accounts that refuse overdrafts (a balance is never negative), an upcaster from the
//! first version of `Opened`, transfers that change two accounts or neither
//! ([`transfer`]), and balances by owner kept exactly once in their own SQLite file
//! ([`balances`]).

pub mod balances;

use Command::*;
use annal::{Aggregate, CommandContext, DomainEvent, Repository, RepositoryError, Store};
use annal::{SnapshotPolicy, Upcast, Upcasters};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An account: its owner once opened, its balance in cents.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BankAccount {
    /// `None` until opened.
    pub owner: Option<String>,
    /// Never negative.
    pub balance: i64,
}

/// What happens to an account. `Opened` is at version 2 (see `BankAccount::upcasters`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "data")]
#[allow(missing_docs)]
pub enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: u32 },
    Withdrawn { amount: u32 },
}

impl DomainEvent for AccountEvent {}

/// What an account can be asked to do (amounts in cents).
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum Command {
    Open(String),
    Deposit(u32),
    Withdraw(u32),
}

/// Why an account refuses a command.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[allow(missing_docs)]
pub enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("the balance cannot cover {0}")]
    Overdraft(u32),
}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "BankAccount";
    const SNAPSHOT_TAG: &'static str = "bank-account-v1";
    type Event = AccountEvent;
    type Command = Command;
    type Error = AccountError;

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { amount } => self.balance += i64::from(*amount),
            AccountEvent::Withdrawn { amount } => self.balance -= i64::from(*amount),
        }
    }

    fn handle(&self, command: Command) -> Result<Vec<AccountEvent>, AccountError> {
        Ok(vec![match (command, &self.owner) {
            (Open(owner), None) => AccountEvent::Opened { owner },
            (Open(_), Some(_)) => return Err(AccountError::AlreadyOpen),
            (_, None) => return Err(AccountError::NotOpen),
            (Deposit(amount), _) => AccountEvent::Deposited { amount },
            (Withdraw(amount), _) if i64::from(amount) > self.balance => {
                return Err(AccountError::Overdraft(amount));
            }
            (Withdraw(amount), _) => AccountEvent::Withdrawn { amount },
        }])
    }

    /// Version 1 of `Opened` named the owner `holder`; version 2 calls it `owner`.
    fn upcasters() -> Upcasters {
        Upcasters::new().register("Opened", 1, |mut data| {
            let owner = data.get_mut("holder").map(serde_json::Value::take);
            let owner = owner.ok_or("a version 1 Opened without a holder")?;
            Ok(Upcast::data(serde_json::json!({ "owner": owner })))
        })
    }
}

/// The accounts of a store.
pub type Accounts = Repository<BankAccount>;

/// The accounts in `store`: upcast on every read, a snapshot every 100 events.
pub fn accounts(store: Arc<dyn Store>) -> Accounts {
    Repository::new(store).with_snapshots(SnapshotPolicy::Every(100))
}

/// Moves `amount` from one account to another in one transaction: both change or
/// neither (an overdraft of `from` refuses it).
pub async fn transfer(
    bank: &Accounts,
    from: &str,
    to: &str,
    amount: u32,
    ctx: &CommandContext,
) -> Result<(), RepositoryError<AccountError>> {
    let commands = [(from, Withdraw(amount)), (to, Deposit(amount))];
    bank.execute_many(&commands, ctx).await.map(drop)
}
