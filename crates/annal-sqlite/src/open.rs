//! Opening a store file: the settings ([`Options`]), why an open fails ([`OpenError`]),
//! the schema migration at open (retried while another process creates the same file),
//! and the pragmas every connection gets (WAL, `synchronous=FULL`, a busy timeout; the
//! writer's own connection then syncs through [`crate::durable`] instead).
//!
//! Invariants: the writer thread starts only after the schema is current and the head is
//! read and checked, so a store that opens has a sound head to count from; its index file
//! ([`crate::index`]) matches the log and has caught up with it before the store is
//! returned; a store this creates is private to its owner (folder 0700, files 0600, and
//! so their WALs too).

use crate::durable::{self, Durability};
use crate::{Inner, SqliteStore, index, schema, writer};
use annal_core::privacy::{KekError, Keyring};
use annal_core::{Error, Limits, Timestamp, stored};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// How long a connection waits for another process's write lock before giving up.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of an embedded store.
#[derive(Debug, Clone)]
pub struct Options {
    /// Size limits on appends.
    pub limits: Limits,
    /// Most read connections open at once (at least 1); reads beyond wait for one.
    pub readers: usize,
    /// Open even if SQLite would drop acknowledged commits from a damaged WAL
    /// ([`crate::wal_check`]); default: `ANNAL_ACCEPT_TRUNCATED_WAL=1` in the
    /// environment, else refuse ([`OpenError::DamagedWal`]).
    pub accept_truncated_wal: bool,
    /// The key-encryption key personal data is sealed with (docs/privacy.md); when
    /// `None`, the one `ANNAL_KEK_FILE` or `ANNAL_KEK` names, if any. A store whose
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
}

impl Default for Options {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            readers: default_readers(),
            accept_truncated_wal: std::env::var("ANNAL_ACCEPT_TRUNCATED_WAL")
                .is_ok_and(|v| v.trim() == "1"),
            keyring: None,
            without_kek: false,
        }
    }
}

/// The reader pool's default size: `ANNAL_SQLITE_READERS` if set to a number, else
/// twice the machine's cores, from 4 to 32 (a read is mostly CPU on cached pages; a few
/// spare connections cover reads waiting on the disk).
pub fn default_readers() -> usize {
    if let Some(n) = std::env::var("ANNAL_SQLITE_READERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    std::thread::available_parallelism()
        .map_or(4, |n| n.get() * 2)
        .clamp(4, 32)
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file or its folder could not be created or opened.
    #[error("cannot open store file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite refused the file.
    #[error("cannot open store file {path}: {source}")]
    Db {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The schema could not be created or migrated.
    #[error("cannot prepare store file {path}: {source}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// Why.
        source: schema::MigrateError,
    },
    /// The file holds a value no writer of annal stores (an [`Error::Corrupt`]).
    #[error("cannot open store file {path}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: annal_core::stored::OutOfRange,
    },
    /// The WAL is damaged before commits that were acknowledged: SQLite would drop them
    /// silently, so the store is not opened.
    #[error(
        "store file {path}: its write-ahead log is damaged before {lost} committed \
         transaction(s), which SQLite would silently drop (it keeps {kept} frames). Copy \
         {path}-wal aside as evidence, restore from a backup, or set \
         ANNAL_ACCEPT_TRUNCATED_WAL=1 to open it without those commits"
    )]
    DamagedWal {
        /// The file.
        path: PathBuf,
        /// Commits that would be dropped.
        lost: u64,
        /// Frames SQLite would keep.
        kept: u64,
    },
    /// The key-encryption key is missing, malformed or not the one the store's keys
    /// are wrapped by.
    #[error("cannot open store file {path}: {source}")]
    Kek {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: KekError,
    },
    /// The writer thread could not be started.
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Corrupt { source, .. } => source.into(),
            e @ OpenError::DamagedWal { .. } => Error::Corrupt(e.to_string()),
            e @ OpenError::Kek { .. } => Error::invalid("kek", e.to_string()),
            other => Error::storage(other),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed, with its folder) the store file at `path`.
    pub fn open(path: impl AsRef<Path>) -> std::result::Result<Self, OpenError> {
        Self::open_with(path, Options::default())
    }

    /// Opens the store file at `path` with `options`.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: Options,
    ) -> std::result::Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        create_private(&path).map_err(|source| OpenError::Io {
            path: path.clone(),
            source,
        })?;
        let dberr = |source| OpenError::Db {
            path: path.clone(),
            source,
        };
        // Before SQLite reads the WAL (and drops what follows damage in it).
        let damage = crate::wal_check::check(&path).map_err(|source| OpenError::Io {
            path: path.clone(),
            source,
        })?;
        if let Some(d) = damage {
            if !options.accept_truncated_wal {
                return Err(OpenError::DamagedWal {
                    path,
                    lost: d.lost_commits,
                    kept: d.kept_frames,
                });
            }
            tracing::error!(
                store = %path.display(),
                lost_commits = d.lost_commits,
                "opening with a damaged write-ahead log (ANNAL_ACCEPT_TRUNCATED_WAL=1): \
                 SQLite drops the commits after the damage"
            );
        }
        // Several processes opening a new file at once race to switch it to WAL and to
        // create the schema; SQLite may answer "busy" there without waiting, so retry.
        let mut attempt = 0;
        let conn = loop {
            attempt += 1;
            let opened = open_connection(&path, false)
                .map_err(schema::MigrateError::Db)
                .and_then(|mut c| {
                    schema::migrate(&mut c, &Timestamp::now().to_string()).map(|()| c)
                });
            match opened {
                Ok(c) => break c,
                Err(schema::MigrateError::Db(e)) if is_busy(&e) && attempt < OPEN_ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
                }
                Err(schema::MigrateError::Db(source)) => return Err(dberr(source)),
                Err(source) => {
                    return Err(OpenError::Schema {
                        path: path.clone(),
                        source,
                    });
                }
            }
        };
        let head: i64 = conn
            .query_row("SELECT coalesce(max(position), 0) FROM events", [], |r| {
                r.get(0)
            })
            .map_err(dberr)?;
        let head =
            stored::number("events.position", head).map_err(|source| OpenError::Corrupt {
                path: path.clone(),
                source,
            })?;
        let kek_err = |source| OpenError::Kek {
            path: path.clone(),
            source,
        };
        let keyring = match options.keyring {
            Some(k) => Some(k),
            None => Keyring::from_env().map_err(kek_err)?,
        };
        let stored = crate::privacy::kek_ids(&conn).map_err(dberr)?;
        Keyring::check_store(keyring.as_ref(), &stored, options.without_kek).map_err(kek_err)?;
        durable::sync_at_open(&path).map_err(|source| OpenError::Io {
            path: path.clone(),
            source: std::io::Error::new(
                source.kind(),
                format!("syncing its write-ahead log failed: {source}"),
            ),
        })?;
        let idx = open_index(&path, &conn)?;
        let (head_tx, head_rx) = watch::channel(head);
        let (jobs, jobs_rx) = mpsc::channel();
        let health = annal_core::failures::WriteHealth::default();
        let durability = Durability::new(&path, head_tx, health.clone());
        let writer = std::thread::Builder::new()
            .name("annal-sqlite-writer".into())
            .spawn({
                let health = health.clone();
                let durability = durability.clone();
                let path = path.clone();
                move || writer::run(&path, conn, jobs_rx, &durability, health)
            })
            .map_err(OpenError::Thread)?;
        let indexer =
            index::Indexer::start(&path, idx, durability.clone()).map_err(OpenError::Thread)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                limits: options.limits,
                jobs,
                readers: Mutex::new(Vec::new()),
                reader_permits: Arc::new(Semaphore::new(options.readers.max(1))),
                head: head_rx,
                durability,
                leases: Mutex::new(None),
                writer: Some(writer),
                indexer: Some(indexer),
                health,
                keys: keyring.map(|k| Arc::new(annal_core::privacy::Keys::new(k))),
            }),
        })
    }
}

/// Opens the store's index file ([`index`]), emptied if it does not match the log in
/// `main` (the store's writer connection, before its thread starts), and brings it up to
/// the log's end: a store opens with its index whole.
fn open_index(path: &Path, main: &Connection) -> std::result::Result<Connection, OpenError> {
    let file = index::path_of(path);
    create_like(path, &file).map_err(|source| OpenError::Io {
        path: file.clone(),
        source,
    })?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let prepared = index::open_writer(path).and_then(|mut idx| {
            let started = std::time::Instant::now();
            let rebuilt = index::prepare(&mut idx, main)?;
            let reached = index::catch_up(&mut idx, main, || None, |_| ())?;
            let took = started.elapsed();
            if rebuilt || took > Duration::from_secs(1) {
                tracing::info!(
                    index = %file.display(),
                    up_to = reached,
                    seconds = took.as_secs_f64(),
                    "the index file caught up with the log"
                );
            }
            Ok(idx)
        });
        match prepared {
            Ok(idx) => return Ok(idx),
            Err(e) if is_busy(&e) && attempt < OPEN_ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
            }
            Err(source) => return Err(OpenError::Db { path: file, source }),
        }
    }
}

/// A connection of the reader pool: read-only, with the index file attached.
pub(crate) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open_connection(path, true)?;
    index::attach(&conn, path)?;
    Ok(conn)
}

/// Creates `file` empty, with the mode of `like` (the store file), when it does not
/// exist: whoever may read the store may read its index.
fn create_like(like: &Path, file: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(std::fs::metadata(like)?.permissions().mode() & 0o777);
    }
    match options.open(file) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Tries at opening a new file that another process is creating at the same time.
const OPEN_ATTEMPTS: u32 = 50;

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Creates the store's folder (0700) and an empty store file (0600) when they do not
/// exist yet, so that only the owner can read the log. SQLite gives the `-wal` and
/// `-shm` files the database file's mode. Existing folders and files keep theirs.
fn create_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        builder.mode(0o700);
        builder.create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    file.mode(0o600);
    match file.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) fn open_connection(path: &Path, reader: bool) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // 16 MiB of page cache per connection (the readers and the writer).
    conn.pragma_update(None, "cache_size", -16384)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "wal_autocheckpoint", 8192)?;
    // A forgotten subject's wrapped key is overwritten with zeros in the file, not
    // just unlinked from the B-tree (docs/privacy.md).
    conn.pragma_update(None, "secure_delete", true)?;
    if reader {
        conn.pragma_update(None, "query_only", true)?;
        conn.pragma_update(None, "mmap_size", 256i64 << 20)?;
    }
    Ok(conn)
}
