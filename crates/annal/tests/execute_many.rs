//! `Repository::execute_many`: commands on several aggregates committed in one
//! transaction, all or nothing, retried as one on conflicts. Money moved between
//! accounts by concurrent transfers is neither created nor lost.

use annal::testing::TestStore;
use annal::{Aggregate, CommandContext, DomainEvent, Repository, RepositoryError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "data")]
enum Moved {
    Credited { amount: i64 },
    Debited { amount: i64 },
}

impl DomainEvent for Moved {}

#[derive(Debug, Clone)]
enum Cmd {
    Credit(i64),
    Debit(i64),
}

#[derive(Debug, thiserror::Error)]
#[error("balance {balance} is too low to debit {amount}")]
struct Overdraft {
    balance: i64,
    amount: i64,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    const SNAPSHOT_TAG: &'static str = "account-v1";
    type Event = Moved;
    type Command = Cmd;
    type Error = Overdraft;

    fn apply(&mut self, e: &Moved) {
        match e {
            Moved::Credited { amount } => self.balance += amount,
            Moved::Debited { amount } => self.balance -= amount,
        }
    }

    fn handle(&self, c: Cmd) -> Result<Vec<Moved>, Overdraft> {
        match c {
            Cmd::Credit(amount) => Ok(vec![Moved::Credited { amount }]),
            Cmd::Debit(amount) if amount > self.balance => Err(Overdraft {
                balance: self.balance,
                amount,
            }),
            Cmd::Debit(amount) => Ok(vec![Moved::Debited { amount }]),
        }
    }
}

fn ctx() -> CommandContext {
    CommandContext::by("teller")
}

async fn balance(repo: &Repository<Account>, id: &str) -> i64 {
    repo.load(id).await.expect("load").state.balance
}

#[tokio::test]
async fn a_transfer_commits_both_accounts_in_one_transaction() {
    let store = TestStore::new().expect("store");
    let repo = Repository::<Account>::new(store.shared());
    repo.execute("a", Cmd::Credit(100), &ctx())
        .await
        .expect("fund");
    let done = repo
        .execute_many(&[("a", Cmd::Debit(30)), ("b", Cmd::Credit(30))], &ctx())
        .await
        .expect("transfer");
    assert_eq!(
        done.iter()
            .map(|e| (e.version, e.state.balance, e.attempts))
            .collect::<Vec<_>>(),
        [(2, 70, 1), (1, 30, 1)]
    );
    let positions: Vec<u64> = done.iter().map(|e| e.events[0].position).collect();
    assert_eq!(
        positions,
        [2, 3],
        "one commit, in the order of the commands"
    );
    assert!(done.iter().all(|e| e.events[0].user_id == "teller"));
}

#[tokio::test]
async fn a_refused_command_writes_nothing_for_any_aggregate() {
    let store = TestStore::new().expect("store");
    let repo = Repository::<Account>::new(store.shared());
    repo.execute("a", Cmd::Credit(10), &ctx())
        .await
        .expect("fund");
    let refused = repo
        .execute_many(&[("b", Cmd::Credit(50)), ("a", Cmd::Debit(50))], &ctx())
        .await;
    assert!(
        matches!(
            refused,
            Err(RepositoryError::Rejected(Overdraft {
                balance: 10,
                amount: 50
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(
        (balance(&repo, "a").await, balance(&repo, "b").await),
        (10, 0)
    );
    assert_eq!(annal::Store::head(&*store, &[]).await.expect("head"), 1);
}

#[tokio::test]
async fn commands_to_the_same_aggregate_see_each_others_events_and_append_once() {
    let store = TestStore::new().expect("store");
    let repo = Repository::<Account>::new(store.shared());
    let done = repo
        .execute_many(&[("a", Cmd::Credit(5)), ("a", Cmd::Debit(5))], &ctx())
        .await
        .expect("both");
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].version, done[0].state.balance), (2, 0));
    let refused = repo
        .execute_many(&[("a", Cmd::Credit(5)), ("a", Cmd::Debit(6))], &ctx())
        .await;
    assert!(matches!(refused, Err(RepositoryError::Rejected(_))));
}

/// 8 tasks × 25 transfers of random amounts between 4 accounts: every transfer that was
/// not refused for overdraft lands, the conflicts between them are retried, and the
/// total stays what was deposited; each account ends with exactly the net of the
/// transfers that landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_neither_create_nor_lose_money() {
    const ACCOUNTS: [&str; 4] = ["acct-0", "acct-1", "acct-2", "acct-3"];
    let store = TestStore::new().expect("store");
    let repo = Arc::new(Repository::<Account>::new(store.shared()).with_max_attempts(40));
    for id in ACCOUNTS {
        repo.execute(id, Cmd::Credit(500), &ctx())
            .await
            .expect("fund");
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            let (mut net, mut landed, mut attempts) = ([0i64; 4], 0u32, 0u32);
            for _ in 0..25 {
                let from = fastrand::usize(..4);
                let to = (from + fastrand::usize(1..4)) % 4;
                let amount = fastrand::i64(1..=120);
                let commands = [
                    (ACCOUNTS[from], Cmd::Debit(amount)),
                    (ACCOUNTS[to], Cmd::Credit(amount)),
                ];
                match repo.execute_many(&commands, &ctx()).await {
                    Ok(done) => {
                        net[from] -= amount;
                        net[to] += amount;
                        landed += 1;
                        attempts += done[0].attempts;
                    }
                    Err(RepositoryError::Rejected(_)) => {}
                    Err(e) => panic!("transfer failed: {e}"),
                }
            }
            (net, landed, attempts)
        }));
    }
    let (mut net, mut landed, mut attempts) = ([0i64; 4], 0, 0);
    for task in tasks {
        let (n, l, a) = task.await.expect("task");
        (0..4).for_each(|i| net[i] += n[i]);
        landed += l;
        attempts += a;
    }
    let mut total = 0;
    for (i, id) in ACCOUNTS.iter().enumerate() {
        let b = balance(&repo, id).await;
        assert!(b >= 0, "{id} overdrawn: {b}");
        assert_eq!(
            b,
            500 + net[i],
            "{id} holds the net of the transfers that landed"
        );
        total += b;
    }
    assert_eq!(total, 2000, "no money created or lost");
    assert!(landed > 100, "most transfers land ({landed} of 200)");
    assert!(
        attempts > landed,
        "conflicts were retried ({attempts} decisions for {landed})"
    );
    let head = annal::Store::head(&*store, &[]).await.expect("head");
    assert_eq!(
        head,
        4 + 2 * u64::from(landed),
        "two events per transfer, nothing else"
    );
    eprintln!("{landed} of 200 transfers landed in {attempts} decisions");
}
