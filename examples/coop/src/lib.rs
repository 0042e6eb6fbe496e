//! The seed's homeschool co-op, event-sourced: the `Family` aggregate, its events and
//! commands, and the upcaster that reads old `PaymentReceived` v1 events as v2.
//!
//! This is the code to copy when starting with annal: a state struct, an event enum
//! (adjacently tagged so variant names are the stored event types), commands that decide
//! events from the state, and `apply`, which folds an event into the state.
//!
//! The families' personal data (the parents' and children's names, the children's ages
//! and grades, how a family paid) is declared in [`FamilyEvent`]'s `personal_fields`:
//! annal seals it with the family's own key, so `coop forget` can erase it for good
//! while the log and its hash chain stay whole (docs/privacy.md). Those fields are
//! `Option`s: once a family is forgotten they read as absent, and its state shows `null`.

pub mod demo;
pub mod forget;
pub mod serve;
pub mod story;
pub mod triggers;

use annal::{Aggregate, DomainEvent, Upcast, Upcasters};
use serde::{Deserialize, Serialize};

/// A family's state, as the seed's `createEmptyState('Family')` and `applyEvent` shape it
/// (plus payment and portal status, which the later events drive).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Family {
    /// The family's id.
    pub family_id: Option<String>,
    /// Its name.
    pub family_name: Option<String>,
    /// `unknown`, `enrolled` or `withdrawn`.
    pub status: Status,
    /// When it enrolled.
    pub enrollment_date: Option<String>,
    /// Its children.
    pub children: Vec<Child>,
    /// Payments received.
    pub payments: Vec<Payment>,
    /// The latest engagement score.
    pub engagement_score: i64,
    /// `none`, `due`, `overdue` or `paid`.
    pub payment_status: PaymentStatus,
    /// Whether the family can use the portal.
    pub portal_access: PortalAccess,
    /// When it withdrew, while withdrawn.
    pub withdrawal_date: Option<String>,
    /// What is owed.
    pub amount_due: u64,
    /// When it is owed by.
    pub due_date: Option<String>,
}

/// Enrolment status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not enrolled yet.
    #[default]
    Unknown,
    /// Enrolled.
    Enrolled,
    /// Withdrawn.
    Withdrawn,
}

/// Payment status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Nothing due.
    #[default]
    None,
    /// A payment is due.
    Due,
    /// A payment is late.
    Overdue,
    /// The last amount due was paid.
    Paid,
}

/// Portal access.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortalAccess {
    /// Usable.
    #[default]
    Active,
    /// Locked.
    Locked,
}

/// A child, as ChildAdded records it. Its fields are personal: `None` once the family
/// was forgotten (the child is still counted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Child {
    /// Name.
    pub child_name: Option<String>,
    /// Age in years.
    pub age: Option<u32>,
    /// School grade.
    pub grade: Option<u32>,
}

/// A payment, as the state keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    /// Amount.
    pub amount: u64,
    /// Date paid.
    pub date: String,
    /// How it was paid (`unknown` for payments recorded before methods were; `None`
    /// once the family was forgotten: it is personal).
    pub method: Option<String>,
}

/// What happens to a family. Variant names are the stored event types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "data")]
#[allow(missing_docs)]
pub enum FamilyEvent {
    FamilyEnrolled {
        family_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        family_name: Option<String>,
        enrollment_date: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent_name: Option<String>,
        children_count: u32,
    },
    ChildAdded {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        child_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        age: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grade: Option<u32>,
    },
    PaymentDue {
        amount: u64,
        due_date: String,
    },
    PaymentOverdue {
        amount: u64,
        due_date: String,
    },
    /// Version 2: `method` was added; v1 events are upcast with `"unknown"`.
    PaymentReceived {
        amount: u64,
        date: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
    },
    PortalAccessLocked {
        reason: String,
    },
    PortalAccessRestored {
        reason: String,
    },
    EngagementScoreUpdated {
        new_score: i64,
    },
    FamilyWithdrawn {
        withdrawal_date: String,
    },
    /// Compensates a FamilyWithdrawn appended by mistake.
    FamilyWithdrawalReversed {
        reason: String,
        original_event_id: String,
    },
}

impl DomainEvent for FamilyEvent {
    fn schema_version(event_type: &str) -> u32 {
        match event_type {
            "PaymentReceived" => 2,
            _ => 1,
        }
    }

    /// Personal data, sealed with the family's key (the subject is the family's id, the
    /// default). Amounts and dates stay in the clear: the co-op keeps its accounts.
    fn personal_fields(event_type: &str) -> &'static [&'static str] {
        match event_type {
            "FamilyEnrolled" => &["family_name", "parent_name"],
            "ChildAdded" => &["child_name", "age", "grade"],
            "PaymentReceived" => &["method"],
            _ => &[],
        }
    }
}

/// What a family can be asked to do.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum FamilyCommand {
    Enroll {
        family_id: String,
        family_name: String,
        enrollment_date: String,
        parent_name: String,
        children_count: u32,
    },
    AddChild {
        child_name: String,
        age: u32,
        grade: u32,
    },
    MarkPaymentDue {
        amount: u64,
        due_date: String,
    },
    MarkPaymentOverdue,
    RecordPayment {
        amount: u64,
        date: String,
        method: String,
    },
    LockPortal {
        reason: String,
    },
    RestorePortal {
        reason: String,
    },
    UpdateEngagement {
        score: i64,
    },
    Withdraw {
        withdrawal_date: String,
    },
}

/// Why a family refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FamilyError {
    /// Enrol first.
    #[error("the family is not enrolled")]
    NotEnrolled,
    /// Enrolment happens once.
    #[error("the family is already enrolled")]
    AlreadyEnrolled,
    /// A withdrawn family accepts no changes but a reversal.
    #[error("the family has withdrawn")]
    Withdrawn,
    /// Amounts are positive.
    #[error("an amount must be more than 0")]
    ZeroAmount,
    /// Only a due payment can become overdue.
    #[error("no payment is due")]
    NothingDue,
}

impl Aggregate for Family {
    const TYPE: &'static str = "Family";
    const SNAPSHOT_TAG: &'static str = "family-v1";
    type Event = FamilyEvent;
    type Command = FamilyCommand;
    type Error = FamilyError;

    fn apply(&mut self, event: &FamilyEvent) {
        use FamilyEvent::*;
        match event {
            FamilyEnrolled {
                family_id,
                family_name,
                enrollment_date,
                ..
            } => {
                self.family_id = Some(family_id.clone());
                // None once the family was forgotten.
                self.family_name.clone_from(family_name);
                self.enrollment_date = Some(enrollment_date.clone());
                self.status = Status::Enrolled;
            }
            ChildAdded {
                child_name,
                age,
                grade,
            } => self.children.push(Child {
                child_name: child_name.clone(),
                age: *age,
                grade: *grade,
            }),
            PaymentDue { amount, due_date } => {
                self.payment_status = PaymentStatus::Due;
                self.amount_due += amount;
                self.due_date = Some(due_date.clone());
            }
            PaymentOverdue { .. } => self.payment_status = PaymentStatus::Overdue,
            PaymentReceived {
                amount,
                date,
                method,
            } => {
                self.payments.push(Payment {
                    amount: *amount,
                    date: date.clone(),
                    method: method.clone(),
                });
                self.amount_due = self.amount_due.saturating_sub(*amount);
                if self.amount_due == 0 {
                    self.payment_status = PaymentStatus::Paid;
                    self.due_date = None;
                }
            }
            PortalAccessLocked { .. } => self.portal_access = PortalAccess::Locked,
            PortalAccessRestored { .. } => self.portal_access = PortalAccess::Active,
            EngagementScoreUpdated { new_score } => self.engagement_score = *new_score,
            FamilyWithdrawn { withdrawal_date } => {
                self.status = Status::Withdrawn;
                self.withdrawal_date = Some(withdrawal_date.clone());
            }
            FamilyWithdrawalReversed { .. } => {
                self.status = Status::Enrolled;
                self.withdrawal_date = None;
            }
        }
    }

    fn handle(&self, command: FamilyCommand) -> Result<Vec<FamilyEvent>, FamilyError> {
        use FamilyCommand::*;
        match (&self.status, command) {
            (
                Status::Unknown,
                Enroll {
                    family_id,
                    family_name,
                    enrollment_date,
                    parent_name,
                    children_count,
                },
            ) => Ok(vec![FamilyEvent::FamilyEnrolled {
                family_id,
                family_name: Some(family_name),
                enrollment_date,
                parent_name: Some(parent_name),
                children_count,
            }]),
            (_, Enroll { .. }) => Err(FamilyError::AlreadyEnrolled),
            (Status::Unknown, _) => Err(FamilyError::NotEnrolled),
            (Status::Withdrawn, _) => Err(FamilyError::Withdrawn),
            (Status::Enrolled, command) => self.decide(command),
        }
    }
}

impl Family {
    fn decide(&self, command: FamilyCommand) -> Result<Vec<FamilyEvent>, FamilyError> {
        use FamilyCommand::*;
        Ok(match command {
            Enroll { .. } => return Err(FamilyError::AlreadyEnrolled),
            AddChild {
                child_name,
                age,
                grade,
            } => vec![FamilyEvent::ChildAdded {
                child_name: Some(child_name),
                age: Some(age),
                grade: Some(grade),
            }],
            MarkPaymentDue { amount: 0, .. } | RecordPayment { amount: 0, .. } => {
                return Err(FamilyError::ZeroAmount);
            }
            MarkPaymentDue { amount, due_date } => {
                vec![FamilyEvent::PaymentDue { amount, due_date }]
            }
            MarkPaymentOverdue => match self.payment_status {
                PaymentStatus::Due => vec![FamilyEvent::PaymentOverdue {
                    amount: self.amount_due,
                    due_date: self.due_date.clone().unwrap_or_default(),
                }],
                _ => return Err(FamilyError::NothingDue),
            },
            RecordPayment {
                amount,
                date,
                method,
            } => vec![FamilyEvent::PaymentReceived {
                amount,
                date,
                method: Some(method),
            }],
            LockPortal { reason } if self.portal_access == PortalAccess::Active => {
                vec![FamilyEvent::PortalAccessLocked { reason }]
            }
            RestorePortal { reason } if self.portal_access == PortalAccess::Locked => {
                vec![FamilyEvent::PortalAccessRestored { reason }]
            }
            LockPortal { .. } | RestorePortal { .. } => Vec::new(),
            UpdateEngagement { score } => {
                vec![FamilyEvent::EngagementScoreUpdated { new_score: score }]
            }
            Withdraw { withdrawal_date } => vec![FamilyEvent::FamilyWithdrawn { withdrawal_date }],
        })
    }
}

/// Reads `PaymentReceived` v1 (`{amount, date}`, before payment methods were recorded) as
/// v2 with `method: "unknown"` (the seed's upcaster). Stored events are never rewritten.
pub fn upcasters() -> Upcasters {
    Upcasters::new().register("PaymentReceived", 1, |mut data| {
        match data.as_object_mut() {
            Some(fields) => {
                fields.entry("method").or_insert_with(|| "unknown".into());
                Ok(Upcast::data(data))
            }
            None => Err("PaymentReceived v1 data is not an object".into()),
        }
    })
}
