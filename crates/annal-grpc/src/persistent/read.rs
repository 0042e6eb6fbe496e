//! The `Read` call of a persistent subscription: the transport between one consumer's
//! gRPC stream and its group's task.
//!
//! Invariants: the confirmation is the first message; then the consumer receives what
//! its group's dispatcher hands it ([`Delivery`]), turned into protocol messages here
//! and nowhere else. Acks and nacks read from the call become commands to the group's
//! task; when the call ends the consumer leaves (what it held is offered again), and when
//! the group lets the consumer go the call ends even if the client keeps its side open.
//! An event with a personal part is read again as it is delivered ([`as_now`]), so no
//! delivery that starts after a forgetting committed shows the forgotten subject's data.

use super::dispatcher::{Consumer, Delivery, NackAction};
use super::service::Persistent;
use super::task::Cmd;
use super::{PAGE, group_name};
use crate::call::caller;
use crate::convert::{self, stream_id, uuid_from_pb};
use crate::pb::event_store::client::persistent_subscriptions::{
    ReadReq, ReadResp, read_req, read_resp,
};
use crate::status::{maximum_subscribers_reached, subscription_dropped};
use annal_core::access::Operation;
use annal_core::{RecordedEvent, Uuid};
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The messages of a Read call.
pub(super) type RespStream = tonic::codegen::BoxStream<ReadResp>;

impl Persistent {
    /// Serves one Read call: joins the group as a consumer.
    pub(super) async fn subscribe(
        &self,
        request: Request<Streaming<ReadReq>>,
    ) -> Result<Response<RespStream>, Status> {
        use read_req::options::{StreamOption, uuid_option};
        let user = caller(&request, Operation::Read)?;
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await
            .map_err(crate::status::bad_message)?
            .ok_or_else(|| Status::invalid_argument("the call ended before its options"))?;
        let Some(read_req::Content::Options(o)) = first.content else {
            return Err(Status::invalid_argument(
                "the first message of a persistent subscription must be its options",
            ));
        };
        let source = source_of!(o.stream_option.as_ref(), "read");
        let group = group_name(&o.group_name)?;
        let (_, handle) = self.attach(&source, &group).await?;
        let structured = matches!(
            o.uuid_option.and_then(|u| u.content),
            Some(uuid_option::Content::Structured(_))
        );
        let slots = match usize::try_from(o.buffer_size) {
            Ok(0) | Err(_) => 10,
            Ok(n) => n.min(PAGE),
        };
        // Room for `slots` events and the message that ends the call.
        let (tx, rx) = mpsc::channel(slots + 1);
        let confirmation = ReadResp {
            content: Some(read_resp::Content::SubscriptionConfirmation(
                read_resp::SubscriptionConfirmation {
                    subscription_id: format!("{source}::{group}"),
                },
            )),
        };
        let id = self.next_consumer.fetch_add(1, Ordering::Relaxed);
        let from = format!("consumer-{id}");
        let (reply, joined) = oneshot::channel();
        let (gone_tx, mut gone) = oneshot::channel::<()>();
        let consumer = Consumer::new(
            id,
            tx,
            gone_tx,
            slots,
            from,
            user.actor.principal.clone().unwrap_or_default(),
        );
        let stopping = || Status::unavailable("the group is stopping; subscribe again");
        handle
            .cmds
            .send(Cmd::Join(consumer, reply))
            .map_err(|_| stopping())?;
        joined
            .await
            .map_err(|_| stopping())?
            .map_err(|full| maximum_subscribers_reached(&source, &group, full.max))?;
        let cmds = handle.cmds.clone();
        // A nack that parks appends a record: a caller whose role does not allow it
        // gets PERMISSION_DENIED in place of the rest of its subscription.
        let may_park = user.require(Operation::Park);
        let (deny_tx, deny_rx) = mpsc::channel::<Status>(1);
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    msg = incoming.message() => match msg {
                        Ok(Some(msg)) => msg,
                        _ => break,
                    },
                    // The dispatcher let the consumer go: stop reading its acks, so the
                    // call ends even if the client keeps its side open.
                    _ = &mut gone => return,
                };
                let cmd = match msg.content {
                    Some(read_req::Content::Ack(a)) => Cmd::Ack(id, ids(&a.ids)),
                    Some(read_req::Content::Nack(n)) => match (nack_action(n.action), &may_park) {
                        (NackAction::Park, Err(denied)) => {
                            let _ = deny_tx.try_send(denied.clone());
                            break;
                        }
                        (action, _) => Cmd::Nack(id, ids(&n.ids), action, n.reason),
                    },
                    _ => continue,
                };
                if cmds.send(cmd).is_err() {
                    return;
                }
            }
            let _ = cmds.send(Cmd::Leave(id));
        });
        let store = self.store.clone();
        let nacks = handle.cmds.clone();
        let deliveries = Box::pin(
            ReceiverStream::new(rx)
                .then(move |d| {
                    let (store, nacks) = (store.clone(), nacks.clone());
                    async move { as_now(&*store, d, id, &nacks).await }
                })
                .filter_map(move |d| d.map(|d| message(d, structured))),
        );
        let denied = ReceiverStream::new(deny_rx).map(Err);
        let stream = tokio_stream::once(Ok(confirmation)).chain(deliveries.merge(denied));
        Ok(Response::new(Box::pin(stream)))
    }
}

fn ids(ids: &[crate::pb::event_store::client::Uuid]) -> Vec<Uuid> {
    ids.iter()
        .filter_map(|i| uuid_from_pb(Some(i)).ok().flatten())
        .collect()
}

/// A nack's action; an unknown one retries.
fn nack_action(action: i32) -> NackAction {
    use read_req::nack::Action;
    match Action::try_from(action).unwrap_or(Action::Unknown) {
        Action::Park => NackAction::Park,
        Action::Skip => NackAction::Skip,
        Action::Stop => NackAction::Stop,
        Action::Retry | Action::Unknown => NackAction::Retry,
    }
}

/// The delivery with its event's personal part as it reads now: an event held by the
/// group (read ahead, or offered again after a nack, a timeout or a consumer leaving)
/// may have been read before its subject was forgotten, so one with a sealed part is
/// read again (erased if its subject was forgotten since). The old part is never
/// delivered: when this process cannot open personal parts (`unavailable`: it needs
/// the KEK the store now uses) the consumer is let go, as any read would fail; when the
/// event cannot be read again (corrupt, say), it is nacked for the consumer
/// (`consumer`, through `nacks`), so its retries count and it is parked in the end
/// instead of going round for ever; `None` then, and the consumer receives nothing.
async fn as_now(
    store: &dyn annal_core::Store,
    delivery: Delivery,
    consumer: u64,
    nacks: &tokio::sync::mpsc::UnboundedSender<Cmd>,
) -> Option<Delivery> {
    let Delivery::Event { event, retry } = delivery else {
        return Some(delivery);
    };
    if event.sealed.is_none() {
        return Some(Delivery::Event { event, retry });
    }
    let why = match store.event(event.event_id).await {
        Ok(Some(now)) => {
            return Some(Delivery::Event {
                event: std::sync::Arc::new(now),
                retry,
            });
        }
        Err(e @ annal_core::Error::Closed(_)) => {
            return Some(Delivery::Dropped(format!(
                "event {} has a personal part this process cannot open: {e}",
                event.event_id
            )));
        }
        Ok(None) => "it is no longer in the store".to_owned(),
        Err(e) => e.to_string(),
    };
    let reason = format!(
        "annal could not read event {} again for its personal part: {why}",
        event.event_id
    );
    tracing::warn!(%reason, "persistent subscription delivery");
    let ids = vec![crate::convert::client_event_id(&event)];
    let _ = nacks.send(Cmd::Nack(consumer, ids, NackAction::Retry, reason));
    None
}

/// What the consumer receives as the call's next message.
fn message(delivery: Delivery, structured: bool) -> Result<ReadResp, Status> {
    match delivery {
        Delivery::Event { event, retry } => Ok(event_message(&event, retry, structured)),
        Delivery::Dropped(why) => Err(subscription_dropped(&why)),
    }
}

/// An event as a persistent subscription message.
fn event_message(event: &RecordedEvent, retry: i32, structured: bool) -> ReadResp {
    use read_resp::read_event::{Count, Position, RecordedEvent as PbEvent};
    let e = convert::read_event(event, structured);
    let pb = e.event.map(|r| PbEvent {
        id: r.id,
        stream_identifier: r
            .stream_identifier
            .or_else(|| Some(stream_id(&event.aggregate_id))),
        stream_revision: r.stream_revision,
        prepare_position: r.prepare_position,
        commit_position: r.commit_position,
        metadata: r.metadata,
        custom_metadata: r.custom_metadata,
        data: r.data,
    });
    ReadResp {
        content: Some(read_resp::Content::Event(read_resp::ReadEvent {
            event: pb,
            link: None,
            position: Some(Position::CommitPosition(event.position)),
            count: Some(Count::RetryCount(retry)),
        })),
    }
}
