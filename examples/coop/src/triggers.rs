//! The co-op's triggers (the seed's pattern 23): an overdue payment locks the family's
//! portal; a payment that settles what is owed restores it. Each reaction is caused by
//! the event that triggered it, keeps its correlation, and is recorded by the trigger
//! (`user_id` = [`PORTAL_ACCESS`]), so the audit trail answers "why was the Chen family
//! locked out?" on its own. Run it with [`annal::projection::spawn`]: the reaction and
//! the trigger's checkpoint commit together, so each happens once.
//!
//! The trigger decides on the family's current state, not the state at the triggering
//! event: a payment that arrived before the trigger saw the overdue notice means no lock.

use crate::{Family, FamilyCommand, PaymentStatus, PortalAccess, upcasters};
use annal::aggregate::encode;
use annal::projection::{Handler, HandlerError};
use annal::trigger::reaction;
use annal::{
    Aggregate, AppendRequest, ExpectedVersion, NewEvent, RecordedEvent, Repository, Store,
};
use std::sync::Arc;

/// The trigger's name: its checkpoint and the user_id of what it appends.
pub const PORTAL_ACCESS: &str = "portal-access";

/// Locks the portal on PaymentOverdue, restores it on a PaymentReceived that pays up.
pub struct PortalAccessTrigger {
    families: Repository<Family>,
}

impl PortalAccessTrigger {
    /// The trigger over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            families: Repository::new(store).with_upcasters(upcasters()),
        }
    }
}

#[async_trait::async_trait]
impl Handler for PortalAccessTrigger {
    async fn handle(&mut self, event: &RecordedEvent) -> Result<Vec<AppendRequest>, HandlerError> {
        if event.aggregate_type != Family::TYPE {
            return Ok(Vec::new());
        }
        let family = self.families.load(&event.aggregate_id).await?;
        let state = &family.state;
        let command = match event.event_type.as_str() {
            "PaymentOverdue" if state.payment_status == PaymentStatus::Overdue => {
                FamilyCommand::LockPortal {
                    reason: format!("payment overdue (event {})", event.event_id),
                }
            }
            "PaymentReceived"
                if state.portal_access == PortalAccess::Locked
                    && state.payment_status == PaymentStatus::Paid =>
            {
                FamilyCommand::RestorePortal {
                    reason: format!("payment received (event {})", event.event_id),
                }
            }
            _ => return Ok(Vec::new()),
        };
        let decided = state.handle(command)?;
        if decided.is_empty() {
            return Ok(Vec::new());
        }
        let mut events = Vec::with_capacity(decided.len());
        for e in &decided {
            let (event_type, version, data) = encode(e)?;
            events.push(NewEvent::raw(event_type, data).with_version(version));
        }
        Ok(vec![reaction(
            PORTAL_ACCESS,
            event,
            Family::TYPE,
            &event.aggregate_id,
            ExpectedVersion::Exact(family.version),
            events,
        )])
    }
}
