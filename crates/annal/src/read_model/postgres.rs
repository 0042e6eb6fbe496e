//! A read model in a PostgreSQL database of its own: implement [`PostgresReadModel`],
//! run it with [`spawn`] on a [`tokio_postgres::Client`] you connected (TLS, search_path
//! and all are yours to choose). Invariants: see [`super`].
//!
//! The client is not reconnected: once its connection is lost, every event fails, and
//! the projection faults after its retries (its handle's `join` says so); start it
//! again on a new client, and it resumes where the read model's position says.

use super::POSITIONS_TABLE;
use crate::projection::{HandlerError, ProjectionHandle, ProjectionOptions, TypedHandler};
use crate::{Aggregate, AppendRequest, RecordedEvent, Store, async_trait};
use std::marker::PhantomData;
use std::sync::Arc;
use tokio_postgres::{Client, Transaction};

/// The PostgreSQL client annal uses, for writing read models without a dependency of
/// your own.
pub use tokio_postgres;

/// What a read model in PostgreSQL does with each event of aggregate type `A`.
#[async_trait]
pub trait PostgresReadModel<A: Aggregate>: Send + 'static {
    /// Its tables: SQL run at every start, so `CREATE TABLE IF NOT EXISTS …`.
    const SCHEMA: &'static str;

    /// Writes what one event changes, in `tx` (do not commit it: its position is written
    /// in the same transaction, then it commits). `typed` is the event upcast and
    /// decoded; an error rolls everything back and fails the event.
    async fn apply(
        &mut self,
        tx: &Transaction<'_>,
        event: &RecordedEvent,
        typed: A::Event,
    ) -> Result<(), HandlerError>;
}

/// A [`PostgresReadModel`] with its connection: the projection handler that [`spawn`]
/// runs, handed back by [`ProjectionHandle::stop`].
pub struct PostgresModel<A, M> {
    client: Client,
    name: String,
    model: M,
    aggregate: PhantomData<fn() -> A>,
}

impl<A, M> std::fmt::Debug for PostgresModel<A, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresModel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate, M: PostgresReadModel<A>> PostgresModel<A, M> {
    /// Prepares the read model `name` on `client`: its schema, and its row in
    /// `annal_read_models`.
    pub async fn open(client: Client, name: &str, model: M) -> Result<Self, tokio_postgres::Error> {
        client.batch_execute(M::SCHEMA).await?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {POSITIONS_TABLE}
                 (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
            ))
            .await?;
        client
            .execute(
                &format!("INSERT INTO {POSITIONS_TABLE} VALUES ($1, 0) ON CONFLICT DO NOTHING"),
                &[&name],
            )
            .await?;
        Ok(Self {
            client,
            name: name.to_owned(),
            model,
            aggregate: PhantomData,
        })
    }
}

impl<A, M> PostgresModel<A, M> {
    /// The position of the last event applied (0: none).
    pub async fn position(&self) -> Result<u64, HandlerError> {
        let sql = format!("SELECT position FROM {POSITIONS_TABLE} WHERE name = $1");
        let row = self.client.query_opt(&sql, &[&self.name]).await?;
        Ok(u64::try_from(row.map_or(0, |r| r.get::<_, i64>(0)))?)
    }

    /// The connection, for queries.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The read model.
    pub fn model(&self) -> &M {
        &self.model
    }
}

#[async_trait]
impl<A: Aggregate, M: PostgresReadModel<A>> TypedHandler<A> for PostgresModel<A, M> {
    async fn handle(
        &mut self,
        event: &RecordedEvent,
        typed: A::Event,
    ) -> Result<Vec<AppendRequest>, HandlerError> {
        let tx = self.client.transaction().await?;
        let lock = format!("SELECT position FROM {POSITIONS_TABLE} WHERE name = $1 FOR UPDATE");
        let applied: i64 = tx.query_one(&lock, &[&self.name]).await?.get(0);
        if u64::try_from(applied)? >= event.position {
            return Ok(Vec::new());
        }
        self.model.apply(&tx, event, typed).await?;
        let update = format!("UPDATE {POSITIONS_TABLE} SET position = $2 WHERE name = $1");
        let position = i64::try_from(event.position)?;
        tx.execute(&update, &[&self.name, &position]).await?;
        tx.commit().await?;
        Ok(Vec::new())
    }
}

/// Prepares the read model on `client` and runs `model` as the typed projection
/// `options.name` over `store`, events decoded after the aggregate's upcasters
/// ([`Aggregate::upcasters`]).
pub async fn spawn<A, M>(
    store: Arc<dyn Store>,
    client: Client,
    model: M,
    options: ProjectionOptions,
) -> Result<ProjectionHandle<PostgresModel<A, M>>, tokio_postgres::Error>
where
    A: Aggregate,
    M: PostgresReadModel<A>,
{
    let model = PostgresModel::open(client, &options.name, model).await?;
    Ok(crate::projection::spawn_typed::<A, _, _>(
        store,
        A::upcasters(),
        model,
        options,
    ))
}
