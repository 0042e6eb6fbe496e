//! `bank-postgres-balances STORE_URL POSTGRES_URL`: keeps the balances by owner of the
//! bank in the store at `STORE_URL` (`sqlite:PATH` or `postgres://…`) in the PostgreSQL
//! database at `POSTGRES_URL` (no TLS; its `search_path` holds the tables), until it is
//! killed or its projection fails.

use annal::read_model::postgres::tokio_postgres::{NoTls, connect};
use annal_example_bank_postgres::spawn;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(store), Some(read_model)) = (args.next(), args.next()) else {
        return Err("usage: bank-postgres-balances STORE_URL POSTGRES_URL".into());
    };
    let store = annal::connect(&store.parse()?).await?;
    let (client, connection) = connect(&read_model, NoTls).await?;
    tokio::spawn(connection);
    let running = spawn(store, client).await?;
    println!("running");
    running.join().await?;
    Ok(())
}
