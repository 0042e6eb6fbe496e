//! State functions a server can show: an aggregate type's fold, offered by its
//! [`Repository`], so that a server that knows it (the co-op example's own server) can
//! answer "what was this aggregate's state at version N" (`GET
//! /v1/streams/{id}/state`, which the console's time travel reads).
//!
//! Invariant: the state shown is exactly what [`Repository::load_at_version`] loads
//! (snapshots and upcasters included), serialised as the aggregate's JSON.

use super::{Repository, RepositoryError};
use crate::aggregate::Aggregate;
use crate::error::Error;
use async_trait::async_trait;
use serde_json::Value;

/// Why a state could not be shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateViewError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] Error),
    /// The state function could not fold the events (an event it cannot decode, or
    /// an aggregate of another type): this server cannot show that aggregate's state.
    #[error("{0}")]
    Fold(String),
}

/// An aggregate type's state function, as a server shows it.
#[async_trait]
pub trait StateView: Send + Sync {
    /// The aggregate type whose state it folds.
    fn aggregate_type(&self) -> &str;

    /// The aggregate's state after its event at `version` (or its current state, if
    /// that is lower), and the version it reached.
    async fn state_at(
        &self,
        aggregate_id: &str,
        version: u64,
    ) -> Result<(u64, Value), StateViewError>;
}

#[async_trait]
impl<A: Aggregate> StateView for Repository<A> {
    fn aggregate_type(&self) -> &str {
        A::TYPE
    }

    async fn state_at(
        &self,
        aggregate_id: &str,
        version: u64,
    ) -> Result<(u64, Value), StateViewError> {
        let loaded = self
            .load_at_version(aggregate_id, version)
            .await
            .map_err(|e| match e {
                RepositoryError::Store(e) => StateViewError::Store(e),
                other => StateViewError::Fold(other.to_string()),
            })?;
        let state = serde_json::to_value(&loaded.state)
            .map_err(|e| StateViewError::Fold(format!("the state is not JSON: {e}")))?;
        Ok((loaded.version, state))
    }
}
