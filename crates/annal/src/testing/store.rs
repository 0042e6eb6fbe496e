//! [`TestStore`]: the embedded SQLite store in a private temporary folder.
//!
//! Invariants: it is a plain [`SqliteStore`] (the same writer, checks and reads as in
//! production), so it keeps every rule of the conformance suite; its folder is created
//! private (0700) under `/dev/shm` when that is a folder (a RAM disk on Linux, where an
//! fsync costs nothing) and the system's temporary folder otherwise, and it is deleted
//! with everything in it when the `TestStore` drops.

use crate::aggregate::{Aggregate, CodecError, encode};
use crate::sqlite::{OpenError, SqliteStore};
use crate::{AppendRequest, Error, ExpectedVersion, NewEvent, RecordedEvent, Store};
use std::path::Path;
use std::sync::Arc;

/// A real store for tests, deleted when dropped. Derefs to its [`SqliteStore`].
///
/// Keep it alive while the store is used: clones of the store (and [`TestStore::shared`])
/// do not keep the folder from being deleted.
pub struct TestStore {
    store: SqliteStore,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestStore")
            .field("path", &self.store.path())
            .finish()
    }
}

/// Why a test store could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestStoreError {
    /// The temporary folder could not be created.
    #[error("cannot create a temporary folder for a test store: {0}")]
    Dir(#[source] std::io::Error),
    /// The store could not be opened in it.
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// Why [`TestStore::record`] could not store events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// An event does not serialise as an aggregate's event should.
    #[error("cannot encode an event: {0}")]
    Encode(#[from] CodecError),
    /// The store refused the append.
    #[error(transparent)]
    Store(#[from] Error),
}

impl TestStore {
    /// A new, empty store.
    pub fn new() -> Result<Self, TestStoreError> {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("annal-test-")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("annal-test-").tempdir()
        }
        .map_err(TestStoreError::Dir)?;
        let store = SqliteStore::open(dir.path().join("annal.db"))?;
        Ok(Self { store, dir })
    }

    /// The store as the `Arc<dyn Store>` repositories and projections take.
    pub fn shared(&self) -> Arc<dyn Store> {
        Arc::new(self.store.clone())
    }

    /// The folder holding the store file (the place for a test's other files too, such
    /// as a read model's own database).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Closes the store and opens it again on the same file, as a restart would. Earlier
    /// clones keep working on the old handle.
    pub fn reopen(&mut self) -> Result<(), OpenError> {
        self.store = SqliteStore::open(self.store.path())?;
        Ok(())
    }

    /// Appends `events` to the aggregate `id` of type `A` (after whatever it holds), as
    /// the repository would encode them, and answers them as recorded: input for
    /// [`super::project`], or history for a repository to load.
    pub async fn record<A: Aggregate>(
        &self,
        id: &str,
        events: impl IntoIterator<Item = A::Event>,
    ) -> Result<Vec<RecordedEvent>, RecordError> {
        let mut request = AppendRequest::new(A::TYPE, id, ExpectedVersion::Any);
        let upcasters = A::upcasters();
        for event in events {
            let (event_type, version, data) = encode(&event)?;
            let version = version.max(upcasters.current_version(&event_type));
            request = request.event(NewEvent::raw(event_type, data).with_version(version));
        }
        Ok(self.store.append(request).await?.events)
    }

    /// Appends one event to the aggregate `id` of type `A` exactly as given (its type,
    /// schema version and data, not encoded from `A::Event`), as an earlier version of
    /// the application stored it: history for testing upcasters.
    pub async fn record_raw<A: Aggregate>(
        &self,
        id: &str,
        event_type: &str,
        schema_version: u32,
        data: &impl serde::Serialize,
    ) -> Result<Vec<RecordedEvent>, RecordError> {
        let event = NewEvent::new(event_type, data)?.with_version(schema_version);
        let request = AppendRequest::new(A::TYPE, id, ExpectedVersion::Any).event(event);
        Ok(self.store.append(request).await?.events)
    }
}

impl std::ops::Deref for TestStore {
    type Target = SqliteStore;

    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}
