//! The `PersistentSubscriptions` service: the calls that define groups (Create, Update,
//! Delete), look at them (GetInfo, List), act on them (ReplayParked, RestartSubsystem),
//! and the running group tasks, one per group. The Read call is in [`super::read`].
//!
//! Invariants: a group's task is looked up and started under the definitions lock, so a
//! concurrent delete either comes first (NOT_FOUND) or stops the task started; deleting
//! or updating a group, or restarting the subsystem, stops its task and waits (a bounded
//! while) for its last checkpoint before answering.
//!
//! In a cluster (`annal_core::cluster`) groups run on the leader only: every call on
//! a follower answers KurrentDB's "not leader" with the leader's address (UNAVAILABLE
//! while no leader is known), and a node that stops leading stops its groups at once
//! (their checkpoints written), so the next leader resumes them from there.

use super::read::RespStream;
use super::registry::{CREATED, Change, DELETED, Definition, Key, Registry, UPDATED};
use super::settings::{FilterDef, StartFrom, create_settings, update_settings};
use super::task::{self, Cmd, Handle};
use super::{ALL, group_name, stream_source};
use crate::call::caller;
use crate::filter::EventFilter;
use crate::pb::event_store::client::Empty;
use crate::pb::event_store::client::persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptions;
use crate::pb::event_store::client::persistent_subscriptions::{
    CreateReq, CreateResp, DeleteReq, DeleteResp, GetInfoReq, GetInfoResp, ListReq, ListResp,
    ReadReq, ReplayParkedReq, ReplayParkedResp, UpdateReq, UpdateResp, create_req, delete_req,
    get_info_req, list_req, replay_parked_req, update_req,
};
use crate::status::{group_not_found as not_found, subscription_failed, to_status};
use annal_core::access::Operation;
use annal_core::cluster::ClusterView;
use annal_core::streams;
use annal_core::{CheckpointWrite, Store};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tonic::{Request, Response, Status, Streaming};

/// Longest stream name and group name together, so that the names derived from them
/// (checkpoints, the parked stream) stay within annal's 255 bytes.
const MAX_SOURCE_AND_GROUP: usize = 200;
/// How long deleting or updating a group waits for its task to end.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Where Create or Update says a group starts (call sites import their own
/// `RevisionOption` / `AllOption`).
macro_rules! start_from {
    (stream $option:expr) => {
        match $option {
            Some(RevisionOption::Revision(r)) => StartFrom::Revision(r),
            Some(RevisionOption::End(_)) => StartFrom::End,
            Some(RevisionOption::Start(_)) | None => StartFrom::Start,
        }
    };
    (all $option:expr) => {
        match $option {
            Some(AllOption::Position(p)) => {
                StartFrom::Position(event_position(p.commit_position, p.prepare_position))
            }
            Some(AllOption::End(_)) => StartFrom::End,
            Some(AllOption::Start(_)) | None => StartFrom::Start,
        }
    };
}

/// The annal position a `$all` start names: annal's events have commit = prepare =
/// their position, so any other pair names no event and counts as past the end.
fn event_position(commit: u64, prepare: u64) -> u64 {
    if commit == prepare { commit } else { u64::MAX }
}

/// Refuses, as KurrentDB does (`INTERNAL`), a `$all` group starting at a position past
/// the last event.
async fn check_start(
    store: &dyn Store,
    source: &str,
    group: &str,
    start: StartFrom,
) -> Result<(), Status> {
    if let StartFrom::Position(p) = start
        && source == ALL
    {
        let head = store.head(&[]).await.map_err(to_status)?;
        if p > head {
            return Err(subscription_failed(
                source,
                group,
                &format!("the start position is past the last event of $all (at {head})"),
            ));
        }
    }
    Ok(())
}

/// The running group tasks, by group.
type Running = Arc<Mutex<HashMap<Key, Handle>>>;

/// The `PersistentSubscriptions` service: definitions and one task per group.
pub struct Persistent {
    pub(super) store: Arc<dyn Store>,
    shutdown: watch::Receiver<bool>,
    pub(super) registry: Registry,
    running: Running,
    pub(super) next_consumer: AtomicU64,
    /// The cluster as this node sees it; `None`: alone, and leader.
    cluster: Option<watch::Receiver<ClusterView>>,
}

impl Persistent {
    /// On `store`; `shutdown` turning true stops every group (checkpoints written). In
    /// a `cluster`, groups run only while this node leads.
    pub fn new(
        store: Arc<dyn Store>,
        shutdown: watch::Receiver<bool>,
        cluster: Option<watch::Receiver<ClusterView>>,
    ) -> Self {
        let running = Running::default();
        if let (Some(view), Ok(rt)) = (&cluster, tokio::runtime::Handle::try_current()) {
            rt.spawn(stop_groups_when_not_leading(
                view.clone(),
                running.clone(),
                shutdown.clone(),
            ));
        }
        Self {
            registry: Registry::new(store.clone()),
            store,
            shutdown,
            running,
            next_consumer: AtomicU64::new(1),
            cluster,
        }
    }

    /// Refuses a call on a node that does not lead: KurrentDB's "not leader" naming the
    /// leader, or UNAVAILABLE while none is known.
    pub(super) fn leader_only(&self) -> Result<(), Status> {
        let Some(view) = &self.cluster else {
            return Ok(());
        };
        let view = view.borrow();
        if view.is_leader() {
            return Ok(());
        }
        match view.leader_node() {
            Some(leader) => {
                let (host, port) = leader.host_port();
                Err(crate::status::not_leader(&host, port))
            }
            None => Err(Status::unavailable(
                "the cluster has no leader right now (persistent subscriptions run on the leader); try again",
            )),
        }
    }

    /// The group's definition and its running task (started if needed), looked up
    /// and started under the definitions lock, so a concurrent delete either comes first
    /// (NOT_FOUND here) or stops the task started here.
    pub(super) async fn attach(
        &self,
        source: &str,
        group: &str,
    ) -> Result<(Definition, Handle), Status> {
        let defs = self.registry.current().await?;
        let def = defs.lookup(source, group)?;
        self.leader_only()?;
        let handle = self.task(&def);
        Ok((def, handle))
    }

    /// Stops the task of `key` if one runs, dropping its consumers with `why`,
    /// and waits (a bounded while) until it has written its last checkpoint, so that a
    /// consumer subscribing again resumes from there.
    async fn stop(&self, key: &Key, why: &str) {
        let handle = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
        if let Some(mut h) = handle {
            let _ = h.cmds.send(Cmd::Stop(why.to_owned()));
            let ended = async { while h.exited.changed().await.is_ok() {} };
            if tokio::time::timeout(STOP_WAIT, ended).await.is_err() {
                tracing::warn!(group = %key.1, source = %key.0, "a stopped persistent subscription took long to end");
            }
        }
    }

    /// The task of `def`'s group, started if it does not run.
    fn task(&self, def: &Definition) -> Handle {
        let key = (def.source.clone(), def.group.clone());
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = running.get(&key)
            && h.generation == def.generation
            && !h.cmds.is_closed()
        {
            return h.clone();
        }
        let handle = task::spawn(
            self.store.clone(),
            def.clone(),
            self.shutdown.clone(),
            self.cluster.clone(),
        );
        if let Some(old) = running.insert(key, handle.clone()) {
            let _ = old.cmds.send(Cmd::Stop("the group was redefined".into()));
        }
        handle
    }

    /// The running task of `def`'s group, if any.
    pub(super) fn running_task(&self, def: &Definition) -> Option<Handle> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(def.source.clone(), def.group.clone()))
            .filter(|h| h.generation == def.generation)
            .cloned()
    }
}

/// Stops every running group each time `view` says this node does not lead (their
/// consumers' calls end; each task writes its checkpoint first), until `shutdown`.
async fn stop_groups_when_not_leading(
    mut view: watch::Receiver<ClusterView>,
    running: Running,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = view.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        if view.borrow_and_update().is_leader() {
            continue;
        }
        let stopped: Vec<Handle> = running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .map(|(_, h)| h)
            .collect();
        if !stopped.is_empty() {
            tracing::warn!(
                groups = stopped.len(),
                "no longer the leader: persistent subscriptions stopped"
            );
        }
        for h in stopped {
            let _ = h
                .cmds
                .send(Cmd::Stop("this node is no longer the leader".into()));
        }
    }
}

/// Where a new group starts, resolved against the store (`end` becomes the head now,
/// so events appended after the group was created reach it).
async fn initial_checkpoint(store: &dyn Store, def: &Definition) -> Result<Option<u64>, Status> {
    Ok(match def.settings.start {
        StartFrom::End if def.is_all() => Some(store.head(&[]).await.map_err(to_status)?),
        StartFrom::End => Some(
            streams::state(store, &def.source)
                .await
                .map_err(to_status)?
                .version,
        ),
        _ => None,
    })
}

#[tonic::async_trait]
impl PersistentSubscriptions for Persistent {
    #[allow(deprecated)]
    async fn create(&self, request: Request<CreateReq>) -> Result<Response<CreateResp>, Status> {
        self.leader_only()?;
        use create_req::all_options::{AllOption, FilterOption, filter_options};
        use create_req::options::StreamOption;
        use create_req::stream_options::RevisionOption;
        let user = caller(&request, Operation::ManageSubscriptions)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("create needs options"))?;
        let group = group_name(&o.group_name)?;
        let wire = create_settings(o.settings.clone());
        let (source, start, filter) = match o.stream_option {
            Some(StreamOption::Stream(s)) => {
                let start = start_from!(stream s.revision_option);
                (stream_source(s.stream_identifier.as_ref())?, start, None)
            }
            Some(StreamOption::All(a)) => {
                let start = start_from!(all a.all_option);
                let filter = match a.filter_option {
                    Some(FilterOption::Filter(f)) => match f.filter {
                        Some(filter_options::Filter::StreamIdentifier(e)) => Some(FilterDef {
                            on_stream: true,
                            regex: e.regex,
                            prefixes: e.prefix,
                        }),
                        Some(filter_options::Filter::EventType(e)) => Some(FilterDef {
                            on_stream: false,
                            regex: e.regex,
                            prefixes: e.prefix,
                        }),
                        None => None,
                    },
                    _ => None,
                };
                if let Some(f) = &filter {
                    EventFilter::compile(f.on_stream, &f.regex, &f.prefixes, 1)?;
                }
                (ALL.to_owned(), start, filter)
            }
            // Clients older than 21.10 name the stream here and the revision in settings.
            None => {
                let revision = o.settings.as_ref().map_or(0, |s| s.revision);
                (
                    stream_source(o.stream_identifier.as_ref())?,
                    if revision == u64::MAX {
                        StartFrom::End
                    } else {
                        StartFrom::Revision(revision)
                    },
                    None,
                )
            }
        };
        let settings = wire
            .check(start, filter)
            .map_err(|e| subscription_failed(&source, &group, &e.to_string()))?;
        check_start(self.store.as_ref(), &source, &group, start).await?;
        // The group's checkpoint and parked-stream names hold both (at most 255 bytes).
        if source.len() + group.len() > MAX_SOURCE_AND_GROUP {
            return Err(Status::invalid_argument(format!(
                "a stream name and group name may have {MAX_SOURCE_AND_GROUP} bytes together; these have {}",
                source.len() + group.len()
            )));
        }
        let def = self
            .registry
            .change(
                &user.actor,
                CREATED,
                Change {
                    source: source.clone(),
                    group: group.clone(),
                    settings: Some(settings),
                },
                |existing| match existing {
                    Some(_) => Err(Status::already_exists(format!(
                        "Subscription group '{group}' on stream '{source}' already exists."
                    ))),
                    None => Ok(()),
                },
            )
            .await?
            .ok_or_else(|| Status::aborted("the group was deleted as it was created; try again"))?;
        if let Some(position) = initial_checkpoint(self.store.as_ref(), &def).await? {
            self.store
                .put_checkpoint(CheckpointWrite::new(def.checkpoint_name(), position))
                .await
                .map_err(to_status)?;
        }
        // Events parked by an earlier group of the same name are not this group's.
        let parked_before = self
            .store
            .aggregate(&def.parked_stream())
            .await
            .map_err(to_status)?
            .map_or(0, |a| a.version);
        if parked_before > 0 {
            self.store
                .put_checkpoint(CheckpointWrite::new(
                    def.replay_checkpoint_name(),
                    parked_before,
                ))
                .await
                .map_err(to_status)?;
        }
        Ok(Response::new(CreateResp {}))
    }

    #[allow(deprecated)]
    async fn update(&self, request: Request<UpdateReq>) -> Result<Response<UpdateResp>, Status> {
        self.leader_only()?;
        use update_req::all_options::AllOption;
        use update_req::options::StreamOption;
        use update_req::stream_options::RevisionOption;
        let user = caller(&request, Operation::ManageSubscriptions)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("update needs options"))?;
        let group = group_name(&o.group_name)?;
        let wire = update_settings(o.settings);
        let (source, start) = match o.stream_option {
            Some(StreamOption::Stream(s)) => (
                stream_source(s.stream_identifier.as_ref())?,
                start_from!(stream s.revision_option),
            ),
            Some(StreamOption::All(a)) => (ALL.to_owned(), start_from!(all a.all_option)),
            None => (
                stream_source(o.stream_identifier.as_ref())?,
                StartFrom::Start,
            ),
        };
        let current = self.registry.definition(&source, &group).await?;
        // The filter of a $all group is fixed at creation.
        let settings = wire
            .check(start, current.settings.filter.clone())
            .map_err(|e| subscription_failed(&source, &group, &e.to_string()))?;
        check_start(self.store.as_ref(), &source, &group, start).await?;
        let key = (source.clone(), group.clone());
        self.registry
            .change(
                &user.actor,
                UPDATED,
                Change {
                    source: source.clone(),
                    group: group.clone(),
                    settings: Some(settings),
                },
                |existing| match existing {
                    Some(_) => Ok(()),
                    None => Err(not_found(&source, &group)),
                },
            )
            .await?;
        self.stop(&key, "the group's settings were updated").await;
        Ok(Response::new(UpdateResp {}))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        self.leader_only()?;
        use delete_req::options::StreamOption;
        let user = caller(&request, Operation::ManageSubscriptions)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("delete needs options"))?;
        let group = group_name(&o.group_name)?;
        let source = source_of!(o.stream_option.as_ref(), "delete");
        let key = (source.clone(), group.clone());
        self.registry
            .change(
                &user.actor,
                DELETED,
                Change {
                    source: source.clone(),
                    group: group.clone(),
                    settings: None,
                },
                |existing| match existing {
                    Some(_) => Ok(()),
                    None => Err(not_found(&source, &group)),
                },
            )
            .await?;
        self.stop(&key, "the group was deleted").await;
        Ok(Response::new(DeleteResp {}))
    }

    async fn read(
        &self,
        request: Request<Streaming<ReadReq>>,
    ) -> Result<Response<RespStream>, Status> {
        self.leader_only()?;
        self.subscribe(request).await
    }

    async fn get_info(
        &self,
        request: Request<GetInfoReq>,
    ) -> Result<Response<GetInfoResp>, Status> {
        self.leader_only()?;
        use get_info_req::options::StreamOption;
        caller(&request, Operation::Read)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("get info needs options"))?;
        let group = group_name(&o.group_name)?;
        let source = source_of!(o.stream_option.as_ref(), "get info");
        let def = self.registry.definition(&source, &group).await?;
        Ok(Response::new(GetInfoResp {
            subscription_info: Some(self.info(&def).await?),
        }))
    }

    async fn replay_parked(
        &self,
        request: Request<ReplayParkedReq>,
    ) -> Result<Response<ReplayParkedResp>, Status> {
        self.leader_only()?;
        use replay_parked_req::options::{StopAtOption, StreamOption};
        caller(&request, Operation::ReplayParked)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("replay needs options"))?;
        let group = group_name(&o.group_name)?;
        let source = source_of!(o.stream_option.as_ref(), "replay");
        let stop_at = match o.stop_at_option {
            Some(StopAtOption::StopAt(n)) if n >= 0 => Some(n.unsigned_abs()),
            _ => None,
        };
        let (_, handle) = self.attach(&source, &group).await?;
        let (reply, done) = oneshot::channel();
        handle
            .cmds
            .send(Cmd::Replay(stop_at, reply))
            .map_err(|_| Status::unavailable("the group is stopping; try again"))?;
        done.await
            .map_err(|_| Status::unavailable("the group is stopping; try again"))?
            .map_err(to_status)?;
        Ok(Response::new(ReplayParkedResp {}))
    }

    async fn list(&self, request: Request<ListReq>) -> Result<Response<ListResp>, Status> {
        self.leader_only()?;
        use list_req::options::ListOption;
        use list_req::stream_option::StreamOption;
        caller(&request, Operation::Read)?;
        let option = request.into_inner().options.and_then(|o| o.list_option);
        let only = match option {
            Some(ListOption::ListForStream(s)) => match s.stream_option {
                Some(StreamOption::Stream(id)) => Some(stream_source(Some(&id))?),
                Some(StreamOption::All(_)) => Some(ALL.to_owned()),
                None => None,
            },
            _ => None,
        };
        let defs: Vec<Definition> = {
            let defs = self.registry.current().await?;
            defs.map
                .values()
                .filter(|d| only.as_ref().is_none_or(|s| *s == d.source))
                .cloned()
                .collect()
        };
        if let Some(s) = &only
            && defs.is_empty()
        {
            // KurrentDB answers "not found" for a stream with no groups.
            return Err(Status::not_found(format!(
                "no persistent subscriptions on '{s}'"
            )));
        }
        let mut subscriptions = Vec::with_capacity(defs.len());
        for d in &defs {
            subscriptions.push(self.info(d).await?);
        }
        Ok(Response::new(ListResp { subscriptions }))
    }

    async fn restart_subsystem(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.leader_only()?;
        caller(&request, Operation::ManageSubscriptions)?;
        let keys: Vec<Key> = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for key in &keys {
            self.stop(key, "the persistent subscription subsystem restarted")
                .await;
        }
        Ok(Response::new(Empty {}))
    }
}
