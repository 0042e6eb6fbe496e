//! The `Streams` service: reads, catch-up subscriptions, appends, batch appends,
//! deletions, over [`annal_core::streams`]. Each call's transport lives in its own
//! module (`read`, `append`, `batch_append`, `delete`); errors become statuses in
//! [`crate::status`].
//!
//! Invariants: a read or subscription runs as one task feeding a bounded channel; it
//! reads the store a page at a time only when the client has taken what came before, and
//! ends when the client goes away (the channel closes), the deadline passes, or the
//! server shuts down. Boundaries follow KurrentDB: `$all` forwards from P includes P,
//! backwards from P excludes P; subscriptions exclude their start; stream reads from
//! revision R include R.

use crate::pb::event_store::client::streams::streams_server;
use crate::pb::event_store::client::streams::{
    AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp, ReadReq,
    ReadResp, TombstoneReq, TombstoneResp,
};
use annal_core::{ExpectedVersion, Store};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Messages buffered per read or subscription before the reader waits for the client.
const CHANNEL: usize = 64;

type RespStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The `Streams` service on a store.
#[derive(Clone)]
pub struct Streams {
    store: Arc<dyn Store>,
    shutdown: watch::Receiver<bool>,
    stalled_call: std::time::Duration,
}

impl Streams {
    /// Serves `store`; `shutdown` turning true ends reads and subscriptions, and a read
    /// whose caller takes no message for `stalled_call` ends.
    pub fn new(
        store: Arc<dyn Store>,
        shutdown: watch::Receiver<bool>,
        stalled_call: std::time::Duration,
    ) -> Self {
        Self {
            store,
            shutdown,
            stalled_call,
        }
    }
}

/// A client's expected revision as an expected annal version.
pub(super) fn expected_from_revision(revision: u64) -> Result<ExpectedVersion, Status> {
    revision
        .checked_add(1)
        .map(ExpectedVersion::Exact)
        .ok_or_else(|| Status::invalid_argument("expected revision is out of range"))
}

/// A request's `expected_stream_revision` oneof (the same shape in Append, Delete and
/// Tombstone options, generated as three types) as an expected annal version.
macro_rules! expected_of {
    ($oneof:expr, $ty:path) => {{
        use $ty as E;
        match $oneof {
            Some(E::Revision(r)) => expected_from_revision(r)?,
            Some(E::NoStream(_)) => ExpectedVersion::NoStream,
            Some(E::StreamExists(_)) => ExpectedVersion::Exists,
            Some(E::Any(_)) | None => ExpectedVersion::Any,
        }
    }};
}

// After `expected_of!`, which they use.
mod append;
mod batch_append;
mod delete;
mod read;

#[tonic::async_trait]
impl streams_server::Streams for Streams {
    async fn read(
        &self,
        request: Request<ReadReq>,
    ) -> Result<Response<RespStream<ReadResp>>, Status> {
        read::read(self, request).await
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        append::append(self, request).await
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        delete::delete(self, request).await
    }

    async fn tombstone(
        &self,
        request: Request<TombstoneReq>,
    ) -> Result<Response<TombstoneResp>, Status> {
        delete::tombstone(self, request).await
    }

    async fn batch_append(
        &self,
        request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<RespStream<BatchAppendResp>>, Status> {
        batch_append::batch_append(self, request).await
    }
}
