//! The bank's read models under kill -9, in SQLite (examples/bank's) and in PostgreSQL
//! (this crate's): a `bank-balances` process keeps the balances by owner while commands
//! land, and is killed with SIGKILL at random moments, again and again; once a last one
//! has caught up, each owner's balance is the sum of their accounts. PostgreSQL is the
//! server named by `ANNAL_TEST_POSTGRES_URL` (that test is skipped, with a notice, when
//! it is not set, and fails when it is set and cannot be reached); its read model lives
//! in a schema of the test's own, dropped at the end.

use annal::read_model::postgres::tokio_postgres::{self, Client, NoTls};
use annal::read_model::sqlite::rusqlite::Connection;
use annal::{CommandContext, Store, sqlite::SqliteStore};
use annal_example_bank::{Accounts, Command::*, accounts, balances, transfer};
use annal_example_bank_postgres::balance;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Outcome = Result<(), Box<dyn std::error::Error>>;

/// How many times the read model's process is killed (`BANK_KILL_ROUNDS`, default 15).
fn rounds() -> u32 {
    let rounds = std::env::var("BANK_KILL_ROUNDS").ok();
    rounds.and_then(|r| r.parse().ok()).unwrap_or(15)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_in_sqlite_count_each_event_once_across_kill_9() -> Outcome {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("balances.db");
    kill_rounds(&format!("sqlite:{}", path.display()), &Reader::Sqlite(path)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_in_postgres_count_each_event_once_across_kill_9() -> Outcome {
    let Ok(server) = std::env::var("ANNAL_TEST_POSTGRES_URL") else {
        eprintln!("notice: ANNAL_TEST_POSTGRES_URL is not set: skipping the PostgreSQL test");
        return Ok(());
    };
    let schema = Schema::create(&server).await?;
    let read_model = format!(
        "{server}{}options=-c%20search_path%3D{}",
        if server.contains('?') { '&' } else { '?' },
        schema.name
    );
    kill_rounds(&read_model, &Reader::Postgres(&schema.client)).await
}

/// Rounds of: a `bank-balances` process on the read model at `read_model`, killed with
/// SIGKILL after 50–400 ms of commands; then a last one catches up, and each owner's
/// balance in the read model must be the sum of their accounts.
async fn kill_rounds(read_model: &str, reader: &Reader<'_>) -> Outcome {
    let dir = tempfile::tempdir()?;
    let store_path = dir.path().join("log.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&store_path)?);
    let store_url = format!("sqlite:{}", store_path.display());
    let (bank, ctx) = (accounts(store.clone()), CommandContext::by("teller"));
    let ids = ["ada", "ada-2", "bob"];
    for (id, owner) in [("ada", "ada"), ("ada-2", "ada"), ("bob", "bob")] {
        bank.execute(id, Open(owner.into()), &ctx).await?;
        bank.execute(id, Deposit(1_000), &ctx).await?;
    }
    let mut advanced = 0;
    for _ in 0..rounds() {
        let mut child = start(&store_url, read_model)?;
        let before = reader.position().await?;
        let deadline = Instant::now() + Duration::from_millis(fastrand::u64(50..400));
        while Instant::now() < deadline {
            command(&bank, &ctx, ids).await?;
        }
        child.kill()?; // SIGKILL
        child.wait()?;
        advanced += u32::from(reader.position().await? > before);
    }
    let mut child = start(&store_url, read_model)?;
    let head = store.head(&[]).await?;
    let caught_up = Instant::now() + Duration::from_secs(30);
    while reader.position().await? < head && Instant::now() < caught_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill()?;
    child.wait()?;
    eprintln!(
        "{} kills; the read model advanced in {advanced} of them",
        rounds()
    );
    assert_eq!(reader.position().await?, head, "caught up");
    let mut sums = Vec::new();
    for id in ids {
        sums.push(bank.load(id).await?.state.balance);
    }
    let (ada, bob) = (reader.balance("ada").await?, reader.balance("bob").await?);
    assert_eq!(
        (ada, bob),
        (sums[0] + sums[1], sums[2]),
        "no event missed or counted twice"
    );
    assert!(
        advanced > 0,
        "the read model did some work before being killed"
    );
    Ok(())
}

/// Reads a read model from outside its process.
enum Reader<'a> {
    /// The SQLite file at this path.
    Sqlite(PathBuf),
    /// The PostgreSQL schema this client uses.
    Postgres(&'a Client),
}

impl Reader<'_> {
    /// The position the read model has applied.
    async fn position(&self) -> Result<u64, Box<dyn std::error::Error>> {
        let sql = "SELECT position FROM annal_read_models WHERE name = 'balances-by-owner'";
        Ok(match self {
            Reader::Sqlite(path) => Connection::open(path)?.query_row(sql, [], |r| r.get(0))?,
            Reader::Postgres(client) => {
                u64::try_from(client.query_one(sql, &[]).await?.get::<_, i64>(0))?
            }
        })
    }

    /// The total balance of `owner`'s accounts.
    async fn balance(&self, owner: &str) -> Result<i64, Box<dyn std::error::Error>> {
        Ok(match self {
            Reader::Sqlite(path) => balances::balance(&Connection::open(path)?, owner)?,
            Reader::Postgres(client) => balance(client, owner).await?,
        })
    }
}

/// A deposit, a withdrawal or a transfer on random accounts (a refused overdraft too).
async fn command(bank: &Accounts, ctx: &CommandContext, ids: [&str; 3]) -> Outcome {
    let (from, to, amount) = (
        ids[fastrand::usize(..3)],
        ids[fastrand::usize(..3)],
        fastrand::u32(1..200),
    );
    let done = match fastrand::u8(..3) {
        0 => bank.execute(from, Deposit(amount), ctx).await.map(drop),
        1 => bank.execute(from, Withdraw(amount), ctx).await.map(drop),
        _ => transfer(bank, from, to, amount, ctx).await,
    };
    match done {
        Ok(()) | Err(annal::RepositoryError::Rejected(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A `bank-balances` process, once it has started its read model.
fn start(store: &str, read_model: &str) -> std::io::Result<Child> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bank-balances"))
        .args([store, read_model])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "running" {
        return Err(std::io::Error::other("the read model did not start"));
    }
    Ok(child)
}

/// A schema of the test's own on the server, and a connection using it; dropped with
/// the value.
struct Schema {
    server: String,
    name: String,
    client: Client,
}

impl Schema {
    async fn create(server: &str) -> Result<Self, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(server, NoTls).await?;
        tokio::spawn(connection);
        let name = format!("bank_test_{:016x}", fastrand::u64(..));
        let sql = format!("CREATE SCHEMA {name}; SET search_path TO {name}");
        client.batch_execute(&sql).await?;
        let server = server.to_owned();
        Ok(Self {
            server,
            name,
            client,
        })
    }
}

impl Drop for Schema {
    /// Drops the schema on a thread and runtime of its own (the test's may be the caller).
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&server, NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA {name} CASCADE"))
                    .await
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
        if let Ok(Err(e)) = dropped.join() {
            eprintln!("could not drop the test schema {}: {e}", self.name);
        }
    }
}
