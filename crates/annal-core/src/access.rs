//! Who may do what: the one table of roles and operations that every protocol applies
//! (the HTTP API and the KurrentDB gRPC endpoint alike).
//!
//! Invariants: roles are ordered (`read` < `write` < `admin`), and a role may do what any
//! lower role may; every operation a protocol offers maps to exactly one [`Operation`],
//! and [`Operation::needs`] is the only place that says which role it takes.

use serde::{Deserialize, Serialize};

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads, subscriptions, acknowledging one's own persistent-subscription messages.
    Read,
    /// Also appends, transactions without checkpoints, snapshots, and parking or
    /// replaying persistent-subscription messages.
    Write,
    /// Everything: deletions, tombstones, stream metadata and other system events,
    /// checkpoints, consumer groups, persistent-subscription management, deep verify.
    Admin,
}

/// Something a caller asks of the store, whatever the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Reading events, streams, the head, snapshots, checkpoints, leases; subscribing;
    /// the chain's quick verify and its digest; persistent-subscription reads, acks and
    /// their information.
    Read,
    /// Appending events of ordinary types (a transaction's appends included).
    Append,
    /// Saving a snapshot.
    Snapshot,
    /// Nacking a persistent-subscription message with "park", which appends a record.
    Park,
    /// Replaying a persistent subscription's parked messages.
    ReplayParked,
    /// Appending system events: types starting with `$`, or to a system stream (any
    /// name starting with `$`: stream metadata `$$<stream>`, persistent-subscription
    /// configuration and parked messages), as KurrentDB's default system-stream ACL.
    AppendSystem,
    /// Soft-deleting a stream.
    Delete,
    /// Tombstoning a stream.
    Tombstone,
    /// Writing a checkpoint (alone or in a transaction).
    Checkpoint,
    /// Consumer-group leases and heartbeats.
    Group,
    /// Creating, updating, deleting or restarting persistent subscriptions.
    ManageSubscriptions,
    /// The deep verify (the backend's own storage checks).
    VerifyDeep,
    /// Personal data's subjects: listing them, exporting one's events decrypted,
    /// forgetting one (docs/privacy.md).
    Subjects,
    /// Anything a protocol offers that this table does not name: admin only, so that
    /// a new route or call is never open to lower roles by mistake.
    Unlisted,
}

impl Operation {
    /// The least role that may do it.
    pub fn needs(self) -> Role {
        match self {
            Operation::Read => Role::Read,
            Operation::Append | Operation::Snapshot | Operation::Park | Operation::ReplayParked => {
                Role::Write
            }
            Operation::AppendSystem
            | Operation::Delete
            | Operation::Tombstone
            | Operation::Checkpoint
            | Operation::Group
            | Operation::ManageSubscriptions
            | Operation::VerifyDeep
            | Operation::Subjects
            | Operation::Unlisted => Role::Admin,
        }
    }

    /// The operation of appending `event_types` to `stream`: [`Operation::AppendSystem`]
    /// for a system stream (`$…`, metadata streams included) or any `$` type, else
    /// [`Operation::Append`].
    pub fn append<'a>(stream: &str, mut event_types: impl Iterator<Item = &'a str>) -> Self {
        if stream.starts_with('$') || event_types.any(|t| t.starts_with('$')) {
            Operation::AppendSystem
        } else {
            Operation::Append
        }
    }
}

/// Why a role may not do an operation, in words for the caller.
pub fn refusal(who: &str, role: Role, op: Operation) -> Option<String> {
    let needs = op.needs();
    (role < needs).then(|| {
        format!(
            "{who} has the {} role; {} needs {}",
            role.name(),
            op.describe(),
            needs.name()
        )
    })
}

impl Role {
    /// The role's name as written in a tokens file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl Operation {
    fn describe(self) -> &'static str {
        match self {
            Operation::Read => "reading",
            Operation::Append => "appending",
            Operation::Snapshot => "saving a snapshot",
            Operation::Park => "parking a message",
            Operation::ReplayParked => "replaying parked messages",
            Operation::AppendSystem => "appending system events ($ types, stream metadata)",
            Operation::Delete => "deleting a stream",
            Operation::Tombstone => "tombstoning a stream",
            Operation::Checkpoint => "writing a checkpoint",
            Operation::Group => "consumer-group leases",
            Operation::ManageSubscriptions => "managing persistent subscriptions",
            Operation::VerifyDeep => "the deep verify",
            Operation::Subjects => "listing, exporting or forgetting data subjects",
            Operation::Unlisted => "this",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_may_do_what_the_roles_below_it_may() {
        let all = [
            Operation::Read,
            Operation::Append,
            Operation::Snapshot,
            Operation::Park,
            Operation::ReplayParked,
            Operation::AppendSystem,
            Operation::Delete,
            Operation::Tombstone,
            Operation::Checkpoint,
            Operation::Group,
            Operation::ManageSubscriptions,
            Operation::VerifyDeep,
            Operation::Subjects,
            Operation::Unlisted,
        ];
        for op in all {
            let allowed: Vec<Role> = [Role::Read, Role::Write, Role::Admin]
                .into_iter()
                .filter(|r| refusal("t", *r, op).is_none())
                .collect();
            assert!(allowed.contains(&Role::Admin), "{op:?}");
            assert_eq!(allowed.first(), Some(&op.needs()), "{op:?}");
        }
    }

    #[test]
    fn system_events_and_system_streams_are_admin_appends() {
        assert_eq!(
            Operation::append("order-1", ["Placed"].into_iter()),
            Operation::Append
        );
        assert_eq!(
            Operation::append("order-1", ["Placed", "$streamDeleted"].into_iter()),
            Operation::AppendSystem
        );
        assert_eq!(
            Operation::append("$$order-1", ["Anything"].into_iter()),
            Operation::AppendSystem
        );
        for system in [
            "$persistentSubscriptionConfig",
            "$persistentsubscription-orders::g1-parked",
        ] {
            assert_eq!(
                Operation::append(system, ["Fake"].into_iter()),
                Operation::AppendSystem,
                "{system}"
            );
        }
        let why = refusal("token 'billing'", Role::Write, Operation::Delete).expect("refused");
        assert!(
            why.contains("write role") && why.contains("needs admin"),
            "{why}"
        );
    }
}
