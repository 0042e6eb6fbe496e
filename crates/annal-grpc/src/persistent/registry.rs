//! The registry of groups: definitions folded from the log.
//!
//! Invariants: definitions live in the log. Every create, update and delete is an event
//! in the system stream [`CONFIG_STREAM`] (who and when, like every annal event), appended
//! expecting that stream's exact version, so two servers on one store cannot both create
//! a group; the registry folds that stream and re-reads it before each change. A group's
//! *generation* is the version of the event that created it: a group deleted and created
//! again starts afresh (new checkpoint name).

use super::settings::{Settings, StartFrom};
use super::{ALL, PAGE};
use crate::status::{group_not_found, to_status};
use annal_core::{
    Actor, AppendRequest, Direction, Error, ExpectedVersion, NewEvent, RawJson, Store,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::Status;

/// The system stream holding every definition change.
pub(super) const CONFIG_STREAM: &str = "$persistentSubscriptionConfig";
/// The event type of a group's creation in [`CONFIG_STREAM`].
pub(super) const CREATED: &str = "$PersistentSubscriptionCreated";
/// The event type of a group's new settings in [`CONFIG_STREAM`].
pub(super) const UPDATED: &str = "$PersistentSubscriptionUpdated";
/// The event type of a group's deletion in [`CONFIG_STREAM`].
pub(super) const DELETED: &str = "$PersistentSubscriptionDeleted";
/// Attempts at appending a definition change when others race with it.
const CONFIG_RETRIES: usize = 8;

/// A group's key: its source (a stream, or `$all`) and its name.
pub(super) type Key = (String, String);

/// A definition change, the data of a [`CONFIG_STREAM`] event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Change {
    pub(super) source: String,
    pub(super) group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) settings: Option<Settings>,
}

/// A defined group.
#[derive(Debug, Clone)]
pub(super) struct Definition {
    pub(super) source: String,
    pub(super) group: String,
    pub(super) settings: Settings,
    pub(super) generation: u64,
}

impl Definition {
    /// The store checkpoint holding the group's progress.
    pub(super) fn checkpoint_name(&self) -> String {
        format!(
            "$persistent:{}:{}::{}",
            self.generation, self.source, self.group
        )
    }

    /// The stream recording the group's parked events.
    pub(super) fn parked_stream(&self) -> String {
        format!(
            "$persistentsubscription-{}::{}-parked",
            self.source, self.group
        )
    }

    /// The store checkpoint holding how far parked events were replayed and settled.
    pub(super) fn replay_checkpoint_name(&self) -> String {
        format!(
            "$persistent-parked:{}:{}::{}",
            self.generation, self.source, self.group
        )
    }

    /// Whether the group reads every stream.
    pub(super) fn is_all(&self) -> bool {
        self.source == ALL
    }

    /// A cursor value (stream version, or log position) as KurrentDB shows it.
    pub(super) fn show(&self, cursor: u64) -> String {
        if self.is_all() {
            format!("C:{cursor}/P:{cursor}")
        } else if cursor == 0 {
            String::new()
        } else {
            (cursor - 1).to_string()
        }
    }

    /// Where the group starts, as KurrentDB shows it.
    pub(super) fn start_from(&self) -> String {
        match (self.settings.start, self.is_all()) {
            (StartFrom::Start, false) => "0".into(),
            (StartFrom::Start, true) => "C:0/P:0".into(),
            (StartFrom::End, false) => "-1".into(),
            (StartFrom::End, true) => "C:-1/P:-1".into(),
            (StartFrom::Revision(r), _) => r.to_string(),
            (StartFrom::Position(p), _) => format!("C:{p}/P:{p}"),
        }
    }
}

/// The definitions folded from [`CONFIG_STREAM`] up to `version`.
#[derive(Default)]
pub(super) struct Defs {
    version: u64,
    pub(super) map: BTreeMap<Key, Definition>,
}

impl Defs {
    /// The definition of `source`'s `group`, or KurrentDB's "does not exist".
    pub(super) fn lookup(&self, source: &str, group: &str) -> Result<Definition, Status> {
        self.map
            .get(&(source.to_owned(), group.to_owned()))
            .cloned()
            .ok_or_else(|| group_not_found(source, group))
    }
}

/// The definitions of a store's groups.
pub(super) struct Registry {
    store: Arc<dyn Store>,
    defs: tokio::sync::Mutex<Defs>,
}

impl Registry {
    /// The registry of `store` (read on first use).
    pub(super) fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            defs: tokio::sync::Mutex::new(Defs::default()),
        }
    }

    /// Reads definition changes newer than `defs.version`.
    async fn refresh(&self, defs: &mut Defs) -> Result<(), Status> {
        loop {
            let page = self
                .store
                .read_aggregate(
                    CONFIG_STREAM,
                    Direction::Forward,
                    Some(defs.version + 1),
                    PAGE,
                )
                .await
                .map_err(to_status)?;
            for e in &page {
                defs.version = e.aggregate_version;
                let Ok(change) = e.data.to_value::<Change>() else {
                    tracing::warn!(
                        position = e.position,
                        "unreadable persistent subscription definition skipped"
                    );
                    continue;
                };
                let key = (change.source.clone(), change.group.clone());
                match (e.event_type.as_str(), change.settings) {
                    (CREATED, Some(settings)) => {
                        defs.map.insert(
                            key,
                            Definition {
                                source: change.source,
                                group: change.group,
                                settings,
                                generation: e.aggregate_version,
                            },
                        );
                    }
                    (UPDATED, Some(settings)) => {
                        if let Some(d) = defs.map.get_mut(&key) {
                            d.settings = settings;
                        }
                    }
                    (DELETED, _) => {
                        defs.map.remove(&key);
                    }
                    _ => {}
                }
            }
            if page.len() < PAGE {
                return Ok(());
            }
        }
    }

    /// The definition of `source`'s `group`, brought up to date.
    pub(super) async fn definition(&self, source: &str, group: &str) -> Result<Definition, Status> {
        self.current().await?.lookup(source, group)
    }

    /// The definitions, brought up to date, locked.
    pub(super) async fn current(&self) -> Result<tokio::sync::MutexGuard<'_, Defs>, Status> {
        let mut defs = self.defs.lock().await;
        self.refresh(&mut defs).await?;
        Ok(defs)
    }

    /// Appends a definition change after checking it against the current definitions
    /// (`check` answers the error to give, if any), retrying when another writer raced.
    pub(super) async fn change(
        &self,
        by: &Actor,
        event_type: &str,
        change: Change,
        check: impl Fn(Option<&Definition>) -> Result<(), Status>,
    ) -> Result<Option<Definition>, Status> {
        let key = (change.source.clone(), change.group.clone());
        let mut defs = self.defs.lock().await;
        for _ in 0..CONFIG_RETRIES {
            self.refresh(&mut defs).await?;
            check(defs.map.get(&key))?;
            let data = RawJson::from_value(&change)
                .map_err(|e| Status::internal(format!("definition: {e}")))?;
            let mut append = AppendRequest::new(
                CONFIG_STREAM,
                CONFIG_STREAM,
                ExpectedVersion::Exact(defs.version),
            )
            .event(NewEvent::raw(event_type, data));
            by.stamp(&mut append);
            match self.store.append(append).await {
                Ok(_) => {
                    self.refresh(&mut defs).await?;
                    return Ok(defs.map.get(&key).cloned());
                }
                Err(Error::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(to_status(e)),
            }
        }
        Err(Status::aborted(
            "persistent subscription definitions kept changing; try again",
        ))
    }
}
