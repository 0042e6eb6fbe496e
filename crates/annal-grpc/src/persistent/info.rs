//! What GetInfo and List show about a group: its settings and its dispatcher's state,
//! as KurrentDB's `SubscriptionInfo`.
//!
//! Invariants: a running group reports its dispatcher's live state; a group with no
//! running dispatcher reports its stored checkpoint and nothing in flight. Positions are
//! shown as KurrentDB shows them (stream revisions, or `C:<commit>/P:<prepare>`).

use super::dispatcher::{ConnectionStats, Stats};
use super::registry::Definition;
use super::service::Persistent;
use super::task::Cmd;
use crate::pb::event_store::client::persistent_subscriptions::{
    SubscriptionInfo, subscription_info,
};
use crate::status::to_status;
use tokio::sync::oneshot;
use tonic::Status;

impl Persistent {
    /// The state of `def`'s group.
    pub(super) async fn info(&self, def: &Definition) -> Result<SubscriptionInfo, Status> {
        let running = self.running_task(def);
        let stats = match running {
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
        let stats = match stats {
            Some(s) => s,
            None => {
                let checkpoint = self
                    .store
                    .checkpoint(&def.checkpoint_name())
                    .await
                    .map_err(to_status)?
                    .map(|c| c.position);
                Stats {
                    checkpoint,
                    ..Stats::default()
                }
            }
        };
        Ok(subscription_info(def, stats))
    }
}

fn count<T: TryFrom<N> + Bounded, N>(n: N) -> T {
    T::try_from(n).unwrap_or(T::MAX)
}

/// Integers that saturate at their maximum when a count does not fit.
trait Bounded {
    const MAX: Self;
}

impl Bounded for i32 {
    const MAX: Self = i32::MAX;
}

impl Bounded for i64 {
    const MAX: Self = i64::MAX;
}

fn connection_info(c: ConnectionStats) -> subscription_info::ConnectionInfo {
    subscription_info::ConnectionInfo {
        from: c.from.clone(),
        username: c.user,
        average_items_per_second: 0,
        total_items: count(c.total_items),
        count_since_last_measurement: 0,
        observed_measurements: Vec::new(),
        available_slots: count(c.available_slots),
        in_flight_messages: count(c.in_flight),
        connection_name: c.from,
    }
}

fn subscription_info(def: &Definition, st: Stats) -> SubscriptionInfo {
    let s = &def.settings;
    SubscriptionInfo {
        event_source: def.source.clone(),
        group_name: def.group.clone(),
        status: "Live".into(),
        connections: st.connections.into_iter().map(connection_info).collect(),
        average_per_second: 0,
        total_items: count(st.total_items),
        count_since_last_measurement: 0,
        last_checkpointed_event_position: st.checkpoint.map(|c| def.show(c)).unwrap_or_default(),
        last_known_event_position: st.last_known.map(|c| def.show(c)).unwrap_or_default(),
        resolve_link_tos: s.resolve_links,
        start_from: def.start_from(),
        message_timeout_milliseconds: count(s.message_timeout_ms),
        extra_statistics: s.extra_statistics,
        max_retry_count: s.max_retry_count,
        live_buffer_size: s.live_buffer_size,
        buffer_size: s.history_buffer_size,
        read_batch_size: s.read_batch_size,
        check_point_after_milliseconds: count(s.checkpoint_after_ms),
        min_check_point_count: s.min_checkpoint_count,
        max_check_point_count: s.max_checkpoint_count,
        read_buffer_count: count(st.queued),
        live_buffer_count: 0,
        retry_buffer_count: count(st.retries_queued),
        total_in_flight_messages: count(st.in_flight),
        outstanding_messages_count: count(st.in_flight),
        named_consumer_strategy: s.consumer_strategy.name().to_owned(),
        max_subscriber_count: s.max_subscriber_count,
        parked_message_count: count(st.parked),
    }
}
