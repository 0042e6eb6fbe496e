//! Typed projections: a [`TypedHandler`] gets each event of one aggregate type beside
//! its stored form, upcast and decoded into the aggregate's event enum, the same way the
//! [`Repository`](crate::Repository) decodes events to load state.
//!
//! Invariants: a typed projection reads only its aggregate type's events (its filter's
//! `aggregate_types` is set to `[A::TYPE]`); an event that cannot be upcast or decoded
//! is a failure of the handler, retried and then faulted or skipped as the projection's
//! [`FailurePolicy`](super::FailurePolicy) says, never silently dropped.

use super::{Handler, HandlerError, ProjectionHandle, ProjectionOptions, spawn_mapped};
use crate::aggregate::Aggregate;
use crate::append::AppendRequest;
use crate::event::RecordedEvent;
use crate::repository::decode;
use crate::store::Store;
use crate::upcast::Upcasters;
use async_trait::async_trait;
use std::marker::PhantomData;
use std::sync::Arc;

/// Reacts to the events of aggregate type `A`, typed. Returned appends are committed
/// together with the checkpoint, as for a [`Handler`].
#[async_trait]
pub trait TypedHandler<A: Aggregate>: Send + 'static {
    /// Handles one event: `event` as stored, `typed` upcast and decoded.
    async fn handle(
        &mut self,
        event: &RecordedEvent,
        typed: A::Event,
    ) -> Result<Vec<AppendRequest>, HandlerError>;

    /// Forgets everything before a rebuild replays the log (default: nothing to forget).
    async fn reset(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// A [`TypedHandler`] as a [`Handler`]: decodes each event with its upcasters first.
/// What [`spawn_typed`] runs; also the way to hand a typed handler to
/// `annal::testing::project`.
pub struct Typed<A, H> {
    handler: H,
    upcasters: Upcasters,
    aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate, H: TypedHandler<A>> Typed<A, H> {
    /// `handler`, fed events decoded after `upcasters`.
    pub fn new(handler: H, upcasters: Upcasters) -> Self {
        Self {
            handler,
            upcasters,
            aggregate: PhantomData,
        }
    }

    /// The typed handler.
    pub fn inner(&self) -> &H {
        &self.handler
    }

    /// The typed handler, handed back.
    pub fn into_inner(self) -> H {
        self.handler
    }
}

impl<A, H> std::fmt::Debug for Typed<A, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Typed")
            .field("aggregate", &std::any::type_name::<A>())
            .field("upcasters", &self.upcasters)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<A: Aggregate, H: TypedHandler<A>> Handler for Typed<A, H> {
    async fn handle(&mut self, event: &RecordedEvent) -> Result<Vec<AppendRequest>, HandlerError> {
        let typed = decode::<A>(&self.upcasters, event)?;
        self.handler.handle(event, typed).await
    }

    async fn reset(&mut self) -> Result<(), HandlerError> {
        self.handler.reset().await
    }
}

/// Starts a projection of aggregate type `A`'s events on `store`, each decoded after
/// `upcasters` for `handler` (see [`super::spawn`] for the runner's guarantees). The
/// options' filter is narrowed to `A::TYPE`; stopping hands back `handler`.
pub fn spawn_typed<A, S, H>(
    store: Arc<S>,
    upcasters: Upcasters,
    handler: H,
    mut options: ProjectionOptions,
) -> ProjectionHandle<H>
where
    A: Aggregate,
    S: Store + ?Sized + 'static,
    H: TypedHandler<A>,
{
    options.subscription.filter.aggregate_types = vec![A::TYPE.to_owned()];
    spawn_mapped(
        store,
        Typed::new(handler, upcasters),
        options,
        Typed::into_inner,
    )
}
