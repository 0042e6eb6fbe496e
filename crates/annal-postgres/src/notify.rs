//! The listening connection: LISTEN/NOTIFY wakes waiting readers within milliseconds of
//! a commit in any process.
//!
//! Every commit that raises the read cap (a synchronous group, or the confirmation of
//! unflushed ones: [`crate::writer`], "Durable before visible") sends `NOTIFY
//! "<schema>.head", '<new head position>'` inside its transaction, so PostgreSQL
//! delivers it only if, and once, that durable head is visible. One
//! dedicated connection per store (outside the pool) LISTENs on that channel and raises
//! the store's head watch; `PgStore::wait_for_head` waits on that watch.
//!
//! Invariants: the watch only moves forward and only to durable positions; while this
//! connection is down (the server restarted, the network failed) the store says so
//! ([`Listener::is_listening`] is false) and waiters poll every 50 ms instead; after every
//! (re)connection the head is read once, so commits made while it was down are seen. The
//! task ends when the store is dropped.

use futures_util::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, NoTls, Socket};

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The shared state of the listening connection.
#[derive(Default)]
pub struct Listener {
    listening: AtomicBool,
}

impl Listener {
    /// Whether the connection is up and LISTENing now.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }
}

/// What the listener task needs.
pub struct Setup {
    /// Connection settings.
    pub pg: tokio_postgres::Config,
    /// TLS, when the store uses it.
    pub tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The channel (`<schema>.head`).
    pub channel: String,
    /// The query of the read cap ([`crate::schema::read_cap`]).
    pub head_sql: String,
    /// The store's head watch.
    pub head: Arc<watch::Sender<u64>>,
    /// Shared state.
    pub state: Arc<Listener>,
}

/// Runs until the store is dropped (its head watch has no receiver left).
pub async fn run(setup: Setup) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = async {
            match &setup.tls {
                None => listen(&setup, NoTls).await,
                Some(tls) => listen(&setup, tls.clone()).await,
            }
        };
        tokio::select! {
            _ = setup.head.closed() => return,
            connected = attempt => {
                setup.state.listening.store(false, Ordering::Release);
                if connected {
                    backoff = Duration::from_millis(50);
                }
            }
        }
        tokio::select! {
            _ = setup.head.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn publish(head: &watch::Sender<u64>, position: u64) {
    head.send_if_modified(|h| {
        let moved = *h < position;
        if moved {
            *h = position;
        }
        moved
    });
}

/// One connection's life: connect, LISTEN, read the head, relay notifications until the
/// connection ends. Returns whether it got as far as listening.
async fn listen<T>(setup: &Setup, tls: T) -> bool
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let Ok((client, mut connection)) = setup.pg.connect(tls).await else {
        return false;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let driver = tokio::spawn(async move {
        while let Some(Ok(message)) = poll_fn(|cx| connection.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = message
                && let Ok(position) = n.payload().parse::<u64>()
                && tx.send(position).is_err()
            {
                return;
            }
        }
    });
    let quoted = setup.channel.replace('"', "\"\"");
    let ready = async {
        client
            .batch_execute(&format!("LISTEN \"{quoted}\""))
            .await?;
        client.query_one(&setup.head_sql, &[]).await
    };
    let ok = match tokio::time::timeout(Duration::from_secs(30), ready).await {
        Ok(Ok(row)) => {
            // A head that cannot be read is not published: readers that ask the store
            // for it get the error (a negative one is `Error::Corrupt`).
            if let Ok(position) = row.try_get::<_, i64>(0)
                && let Ok(position) = u64::try_from(position)
            {
                publish(&setup.head, position);
            }
            setup.state.listening.store(true, Ordering::Release);
            while let Some(position) = rx.recv().await {
                publish(&setup.head, position);
            }
            true
        }
        _ => false,
    };
    driver.abort();
    drop(client);
    ok
}
