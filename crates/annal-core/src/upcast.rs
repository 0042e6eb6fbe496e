//! Upcasting: turning stored events of an old schema version into the current one on
//! every read that feeds state, without ever rewriting what is stored.
//!
//! An upcaster is registered for one (event_type, event_version) and returns the event's
//! next version (version + 1), possibly under a new type; upcasters chain (v1 → v2 → v3)
//! until no upcaster matches. Events with no matching upcaster pass through untouched,
//! without being parsed.

use crate::event::RawJson;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The result of one upcast step.
#[derive(Debug, Clone, PartialEq)]
pub struct Upcast {
    /// The event's type after the step (`None`: unchanged).
    pub event_type: Option<String>,
    /// The event's data after the step.
    pub data: Value,
}

impl Upcast {
    /// The same type, new data.
    pub fn data(data: Value) -> Self {
        Self {
            event_type: None,
            data,
        }
    }

    /// A new type and data.
    pub fn renamed(event_type: impl Into<String>, data: Value) -> Self {
        Self {
            event_type: Some(event_type.into()),
            data,
        }
    }
}

/// Why one upcast step refused an event's data: any error the step's author chooses
/// (a `&str` or `String` converts with `.into()`).
pub type StepError = Box<dyn std::error::Error + Send + Sync + 'static>;

type Step = Arc<dyn Fn(Value) -> Result<Upcast, StepError> + Send + Sync>;

/// A set of upcasters, keyed by the (event_type, event_version) each one upgrades.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), Step>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.steps.keys().collect();
        keys.sort();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}

/// An event after upcasting.
#[derive(Debug, Clone, PartialEq)]
pub struct Upcasted {
    /// Its (possibly new) type.
    pub event_type: String,
    /// Its (possibly raised) version.
    pub event_version: u32,
    /// Its data.
    pub data: RawJson,
}

/// Why an upcast failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upcasting {event_type} v{event_version}: {reason}")]
pub struct UpcastError {
    /// The type being upcast.
    pub event_type: String,
    /// The version being upcast.
    pub event_version: u32,
    /// What went wrong.
    pub reason: String,
}

/// Most steps one event may take: a guard against an upcaster that renames in a cycle.
const MAX_STEPS: u32 = 64;

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `step` to turn `event_type` at `from_version` into version
    /// `from_version + 1` (replacing any earlier registration for the same key).
    pub fn register(
        mut self,
        event_type: impl Into<String>,
        from_version: u32,
        step: impl Fn(Value) -> Result<Upcast, StepError> + Send + Sync + 'static,
    ) -> Self {
        self.steps
            .insert((event_type.into(), from_version), Arc::new(step));
        self
    }

    /// The version new events of `event_type` are written at: one past the highest
    /// version an upcaster is registered from (1 when there is none), so that an event
    /// written now is never upcast again on read.
    pub fn current_version(&self, event_type: &str) -> u32 {
        let from = self.steps.keys().filter(|(t, _)| t == event_type);
        from.map(|(_, v)| v.saturating_add(1)).max().unwrap_or(1)
    }

    /// Whether no upcaster is registered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Upcasts an event as far as the registered steps go. `None` when no step applies
    /// (the stored event is current).
    pub fn upcast(
        &self,
        event_type: &str,
        event_version: u32,
        data: &RawJson,
    ) -> Result<Option<Upcasted>, UpcastError> {
        if self.steps.is_empty()
            || !self
                .steps
                .contains_key(&(event_type.to_owned(), event_version))
        {
            return Ok(None);
        }
        let fail = |t: &str, v: u32, reason: String| UpcastError {
            event_type: t.to_owned(),
            event_version: v,
            reason,
        };
        let mut t = event_type.to_owned();
        let mut v = event_version;
        let mut value: Value = data
            .to_value()
            .map_err(|e| fail(&t, v, format!("stored data is not JSON: {e}")))?;
        let mut steps = 0;
        while let Some(step) = self.steps.get(&(t.clone(), v)) {
            steps += 1;
            if steps > MAX_STEPS {
                return Err(fail(
                    &t,
                    v,
                    format!("more than {MAX_STEPS} steps: is there a cycle?"),
                ));
            }
            let out = step(value).map_err(|reason| fail(&t, v, reason.to_string()))?;
            if let Some(new_type) = out.event_type {
                t = new_type;
            }
            v += 1;
            value = out.data;
        }
        let data = RawJson::from_value(&value).map_err(|e| fail(&t, v, e.to_string()))?;
        Ok(Some(Upcasted {
            event_type: t,
            event_version: v,
            data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(v: Value) -> RawJson {
        RawJson::from_value(&v).expect("json")
    }

    #[test]
    fn upcasters_chain_and_may_rename() {
        let u = Upcasters::new()
            .register("PaymentReceived", 1, |mut d| {
                d["method"] = json!("unknown");
                Ok(Upcast::data(d))
            })
            .register("PaymentReceived", 2, |d| {
                Ok(Upcast::renamed("PaymentRecorded", d))
            });
        let out = u
            .upcast(
                "PaymentReceived",
                1,
                &raw(json!({"amount": 450, "date": "2024-09-15"})),
            )
            .expect("upcast")
            .expect("changed");
        assert_eq!(out.event_type, "PaymentRecorded");
        assert_eq!(out.event_version, 3);
        let data: Value = out.data.to_value().expect("json");
        assert_eq!(
            data,
            json!({"amount": 450, "date": "2024-09-15", "method": "unknown"})
        );
    }

    #[test]
    fn current_events_pass_through_untouched() {
        let u = Upcasters::new().register("A", 1, |d| Ok(Upcast::data(d)));
        assert_eq!(u.upcast("A", 2, &raw(json!({}))).expect("ok"), None);
        assert_eq!(u.upcast("B", 1, &raw(json!({}))).expect("ok"), None);
    }

    #[test]
    fn a_failing_upcaster_is_an_error_naming_the_event() {
        let u = Upcasters::new().register("A", 1, |_| Err("no amount".into()));
        let e = u.upcast("A", 1, &raw(json!({}))).expect_err("fails");
        assert_eq!((e.event_type.as_str(), e.event_version), ("A", 1));
        assert!(e.to_string().contains("no amount"));
    }
}
