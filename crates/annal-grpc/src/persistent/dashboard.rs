//! What the audit console's overview shows about the persistent subscriptions: every
//! group with its status, consumers, checkpoint, lag, in-flight and parked counts, as a
//! plain [`PersistentGroup`] (no protobuf), read by the HTTP route
//! `GET /v1/persistent-subscriptions`.
//!
//! Invariants: it changes nothing and starts no group: a group this server dispatches
//! reports its dispatcher's live state; any other reports what the store holds (its
//! checkpoint, and its parked stream's records past its replay marker), with nothing in
//! flight and no consumers.

use super::registry::Definition;
use super::service::Persistent;
use super::task::Cmd;
use annal_core::wire::PersistentGroup;
use annal_core::{Error, Result, streams};
use tokio::sync::oneshot;

impl Persistent {
    /// Every group, by source then name.
    pub async fn dashboard(&self) -> Result<Vec<PersistentGroup>> {
        let defs: Vec<Definition> = {
            let defs = self
                .registry
                .current()
                .await
                .map_err(|s| Error::storage(s.message().to_owned()))?;
            defs.map.values().cloned().collect()
        };
        let head = self.store.head(&[]).await?;
        let mut out = Vec::with_capacity(defs.len());
        for def in &defs {
            out.push(self.group_status(def, head).await?);
        }
        Ok(out)
    }

    async fn group_status(&self, def: &Definition, head: u64) -> Result<PersistentGroup> {
        let live = match self.running_task(def) {
            Some(h) => {
                let (reply, rx) = oneshot::channel();
                if h.cmds.send(Cmd::Info(reply)).is_ok() {
                    rx.await.ok()
                } else {
                    None
                }
            }
            None => None,
        };
        let source_head = if def.is_all() {
            head
        } else {
            streams::state(self.store.as_ref(), &def.source)
                .await?
                .version
        };
        let (status, checkpoint, consumers, in_flight, parked) = match live {
            Some(st) => (
                "live",
                st.checkpoint,
                st.connections.len(),
                st.in_flight,
                st.parked,
            ),
            None => {
                let checkpoint = self
                    .store
                    .checkpoint(&def.checkpoint_name())
                    .await?
                    .map(|c| c.position);
                let replayed = self
                    .store
                    .checkpoint(&def.replay_checkpoint_name())
                    .await?
                    .map_or(0, |c| c.position);
                let recorded = self
                    .store
                    .aggregate(&def.parked_stream())
                    .await?
                    .map_or(0, |a| a.version);
                ("idle", checkpoint, 0, 0, recorded.saturating_sub(replayed))
            }
        };
        Ok(PersistentGroup {
            source: def.source.clone(),
            group: def.group.clone(),
            status: status.to_owned(),
            consumers: consumers as u64,
            checkpoint,
            source_head,
            lag: source_head.saturating_sub(checkpoint.unwrap_or(0)),
            in_flight: in_flight as u64,
            parked,
            strategy: def.settings.consumer_strategy.name().to_owned(),
        })
    }
}
