//! `bank-balances STORE_URL READ_MODEL`: keeps the balances by owner of the bank in the
//! store at `STORE_URL` (`sqlite:PATH` or `postgres://…`), until it is killed or its
//! projection fails, in `READ_MODEL`: a PostgreSQL database (`postgres://…`, no TLS; its
//! `search_path` holds the tables) or a SQLite file (`sqlite:PATH`, examples/bank's).

use annal::read_model::postgres::tokio_postgres::{NoTls, connect};
use annal_example_bank::balances;
use std::path::Path;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(store), Some(read_model)) = (args.next(), args.next()) else {
        return Err("usage: bank-balances STORE_URL READ_MODEL".into());
    };
    let store = annal::connect(&store.parse()?).await?;
    if let Some(path) = read_model.strip_prefix("sqlite:") {
        let running = balances::spawn(store, Path::new(path))?;
        println!("running");
        running.join().await?;
    } else {
        let (client, connection) = connect(&read_model, NoTls).await?;
        tokio::spawn(connection);
        let running = annal_example_bank_postgres::spawn(store, client).await?;
        println!("running");
        running.join().await?;
    }
    Ok(())
}
