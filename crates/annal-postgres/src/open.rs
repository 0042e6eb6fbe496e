//! Opening a store: the settings beyond the URL ([`Options`]), why an open fails
//! ([`OpenError`]), and the steps of a connect: the pool, the schema migration, the head,
//! then the listener and the writer task.
//!
//! Invariant: the writer and the listener start only after the schema is current and the
//! head is read and checked, so a store that opens has a sound head to count from.

use crate::config::{ConfigError, PgConfig};
use crate::{Inner, PgStore, StorageFailure, notify, pool_failure, schema, timed, writer};
use annal_core::privacy::{KekError, Keyring};
use annal_core::{Error, Limits, stored};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Settings of a PostgreSQL store beyond its URL.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Size limits on appends.
    pub limits: Limits,
    /// The key-encryption key personal data is sealed with (docs/privacy.md); when
    /// `None`, the one `ANNAL_KEK_FILE` or `ANNAL_KEK` names, if any. A schema whose
    /// keys another KEK wraps, or that holds keys while none is given, is refused
    /// ([`OpenError::Kek`]).
    pub keyring: Option<Keyring>,
    /// Open a store that holds personal data even though no key-encryption key is given
    /// (neither here nor in the environment), for work that needs none, such as
    /// verifying the hash chain (which covers the sealed parts): personal parts then
    /// cannot be read (`unavailable`) and personal data cannot be appended (forgetting
    /// a subject still works: it needs no KEK). A KEK that is given is still checked.
    /// Default `false`: such a store is refused at open.
    pub without_kek: bool,
    /// A hot standby of the store's server that serves its reads of the log and of
    /// streams ([`crate::replica`]); `None`: the primary serves every read.
    pub read_store: Option<crate::replica::ReadStoreOptions>,
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL or its parameters are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The pool could not be built.
    #[error("cannot set up the connection pool: {0}")]
    Pool(String),
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        /// host:port/dbname.
        target: String,
        /// Why.
        source: StorageFailure,
    },
    /// The schema could not be created or migrated.
    #[error("cannot prepare schema '{schema}': {source}")]
    Schema {
        /// The schema.
        schema: String,
        /// Why.
        source: schema::MigrateError,
    },
    /// The key-encryption key is missing, malformed or not the one the schema's keys
    /// are wrapped by.
    #[error("cannot open schema '{schema}': {source}")]
    Kek {
        /// The schema.
        schema: String,
        /// What is wrong.
        source: KekError,
    },
    /// The read store (`Options::read_store`) is not a copy of the store, or its URL
    /// names another schema.
    #[error("read store: {0}")]
    ReadStore(String),
    /// The schema holds a value no writer of annal stores (an [`Error::Corrupt`]).
    #[error("cannot open schema '{schema}': {source}")]
    Corrupt {
        /// The schema.
        schema: String,
        /// What is wrong.
        source: stored::OutOfRange,
    },
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Corrupt { source, .. } => source.into(),
            e @ OpenError::Kek { .. } => Error::invalid("kek", e.to_string()),
            other => Error::storage(other),
        }
    }
}

pub(crate) fn target(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", pg.get_dbname().unwrap_or(""))
}

/// The connection pool of a server: at most `pool_size` connections, each waited for
/// at most the operation timeout (60 s without one), each made within the connect
/// timeout plus 5 s.
pub(crate) fn build_pool(
    config: &PgConfig,
    tls: Option<&tokio_postgres_rustls::MakeRustlsConnect>,
) -> std::result::Result<Pool, OpenError> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        None => Manager::from_config(config.pg.clone(), tokio_postgres::NoTls, manager_config),
        Some(tls) => Manager::from_config(config.pg.clone(), tls.clone(), manager_config),
    };
    let wait = config
        .operation_timeout()
        .unwrap_or(Duration::from_secs(60));
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(
            config
                .pg
                .get_connect_timeout()
                .copied()
                .unwrap_or(Duration::from_secs(10))
                + Duration::from_secs(5),
        ))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| OpenError::Pool(e.to_string()))
}

impl PgStore {
    /// Whether the schema `config` names holds a store (its `schema_version` table),
    /// without creating anything: for commands that only read an existing store, so that
    /// a misspelt schema is said to hold nothing rather than made empty.
    pub async fn exists(config: &PgConfig) -> std::result::Result<bool, OpenError> {
        let tls = config.tls_connector()?;
        let pool = build_pool(config, tls.as_ref())?;
        let client = pool.get().await.map_err(|e| OpenError::Connect {
            target: target(&config.pg),
            source: pool_failure("connecting", e),
        })?;
        let table = format!("{}.schema_version", schema::quoted(&config.schema));
        let found = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .map_err(|e| OpenError::Connect {
                target: target(&config.pg),
                source: crate::StorageFailure::new("looking for the schema", e),
            })?;
        found.try_get(0).map_err(|e| OpenError::Connect {
            target: target(&config.pg),
            source: crate::StorageFailure::new("looking for the schema", e),
        })
    }

    /// Connects to the store a URL names (`postgres://…`; see [`crate::config`] for the
    /// parameters), creating or migrating its schema.
    pub async fn connect(url: &str) -> std::result::Result<Self, OpenError> {
        Self::connect_with(PgConfig::from_url(url)?, Options::default()).await
    }

    /// Connects with parsed settings and options.
    pub async fn connect_with(
        config: PgConfig,
        options: Options,
    ) -> std::result::Result<Self, OpenError> {
        let tls = config.tls_connector()?;
        let pool = build_pool(&config, tls.as_ref())?;
        let timeout = config.operation_timeout();
        let connect_failed = |source| OpenError::Connect {
            target: target(&config.pg),
            source,
        };
        let mut client = pool
            .get()
            .await
            .map_err(|e| connect_failed(pool_failure("connecting", e)))?;
        schema::migrate(&mut client, &config.schema, timeout)
            .await
            .map_err(|source| OpenError::Schema {
                schema: config.schema.clone(),
                source,
            })?;
        let quoted = schema::quoted(&config.schema);
        // The head readers may see ([`schema::read_cap`]), also what the listener
        // re-reads after a reconnection.
        let head_sql = format!("SELECT {}", schema::read_cap(&quoted));
        // Rows of writers gone, which the durable head has passed: the cap stays.
        timed(
            timeout,
            "tidying the durable table",
            client.execute(
                &format!(
                    "DELETE FROM {quoted}.durable
                     WHERE position <= (SELECT durable_position FROM {quoted}.head)"
                ),
                &[],
            ),
        )
        .await
        .map_err(connect_failed)?;
        let head: i64 = timed(
            timeout,
            "reading the head",
            client.query_one(&head_sql, &[]),
        )
        .await
        .map_err(connect_failed)?
        .try_get(0)
        .map_err(|e| connect_failed(StorageFailure::new("reading the head", e)))?;
        let stored_keks = timed(
            timeout,
            "reading the key table",
            crate::privacy::kek_ids(&client, &quoted),
        )
        .await
        .map_err(connect_failed)?;
        drop(client);
        let kek_err = |source| OpenError::Kek {
            schema: config.schema.clone(),
            source,
        };
        let keyring = match options.keyring {
            Some(k) => Some(k),
            None => Keyring::from_env().map_err(kek_err)?,
        };
        Keyring::check_store(keyring.as_ref(), &stored_keks, options.without_kek)
            .map_err(kek_err)?;

        let head = stored::number(format_args!("{quoted}.head"), head).map_err(|source| {
            OpenError::Corrupt {
                schema: config.schema.clone(),
                source,
            }
        })?;
        let replica = match options.read_store {
            Some(read_store) => Some(
                crate::replica::Replica::open(read_store, &config.schema, pool.clone(), timeout)
                    .await?,
            ),
            None => None,
        };
        let (head_tx, head_rx) = watch::channel(head);
        let head_tx = Arc::new(head_tx);
        let sql = Arc::new(writer::Sql::new(&config.schema));
        let listener = Arc::new(notify::Listener::default());
        tokio::spawn(notify::run(notify::Setup {
            pg: config.pg.clone(),
            tls,
            channel: sql.channel.clone(),
            head_sql,
            head: head_tx.clone(),
            state: listener.clone(),
        }));
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let health = annal_core::failures::WriteHealth::default();
        tokio::spawn(writer::run(
            writer::Writer {
                pool: pool.clone(),
                sql,
                timeout,
                head: head_tx.clone(),
                health: health.clone(),
                id: annal_core::Uuid::now_v7(),
                path: std::sync::Mutex::default(),
            },
            jobs_rx,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                schema: config.schema,
                quoted,
                limits: options.limits,
                pool,
                timeout,
                jobs,
                head: head_rx,
                head_tx,
                replica,
                listener,
                health,
                keys: keyring.map(|k| Arc::new(annal_core::privacy::Keys::new(k))),
            }),
        })
    }
}
