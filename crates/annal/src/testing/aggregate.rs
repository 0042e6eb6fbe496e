//! Given/when/then for aggregates: [`AggregateTest`].
//!
//! Invariants: the given events are folded with the aggregate's own `apply`, in order,
//! from the default state; the command is decided with its own `handle`; every given and
//! decided event must come back equal from its stored form ([`crate::aggregate::encode`]
//! then [`crate::aggregate::decode`]), or the test fails naming it, since the repository
//! would store and reload it that way.

use crate::Aggregate;
use crate::aggregate::{decode, encode};
use std::fmt::Debug;

/// An aggregate in a known state: `AggregateTest::<Account>::given([...])`.
#[derive(Debug, Clone)]
pub struct AggregateTest<A> {
    state: A,
}

impl<A: Aggregate> AggregateTest<A>
where
    A::Event: PartialEq + Debug,
{
    /// The state after `events`, applied in order to the default state.
    #[track_caller]
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut state = A::default();
        for event in events {
            round_trip(&event);
            state.apply(&event);
        }
        Self { state }
    }

    /// A new aggregate (no events).
    #[track_caller]
    pub fn given_nothing() -> Self {
        Self::given([])
    }

    /// Decides `command` on the given state.
    pub fn when(self, command: A::Command) -> Decided<A> {
        let outcome = self.state.handle(command);
        Decided {
            state: self.state,
            outcome,
        }
    }
}

/// What the aggregate decided: check it with [`Decided::then`] or [`Decided::then_error`].
#[derive(Debug)]
pub struct Decided<A: Aggregate> {
    state: A,
    outcome: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Decided<A>
where
    A::Event: PartialEq + Debug,
{
    /// Fails the test unless the command decided exactly `expected` (in order); answers
    /// the state after them, for further checks.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        let events = match self.outcome {
            Ok(events) => events,
            Err(e) => panic!("expected the events {expected:?}, but the command was refused: {e}"),
        };
        assert_eq!(events, expected, "the command decided other events");
        let mut state = self.state;
        for event in &events {
            round_trip(event);
            state.apply(event);
        }
        state
    }

    /// Fails the test unless the command was refused with `expected`.
    #[track_caller]
    pub fn then_error(self, expected: A::Error)
    where
        A::Error: PartialEq,
    {
        match self.outcome {
            Ok(events) => panic!("expected the refusal '{expected}', but it decided {events:?}"),
            Err(e) => assert_eq!(e, expected, "the command was refused for another reason"),
        }
    }

    /// The decision itself, for checks the two above do not cover.
    pub fn outcome(self) -> Result<Vec<A::Event>, A::Error> {
        self.outcome
    }
}

/// Fails the test unless `event` comes back equal from its stored form.
#[track_caller]
fn round_trip<E: crate::DomainEvent + PartialEq + Debug>(event: &E) {
    let back = encode(event).and_then(|(event_type, _, data)| decode::<E>(&event_type, &data));
    match back {
        Ok(back) => assert_eq!(&back, event, "the event changes through its stored form"),
        Err(e) => panic!("the event {event:?} cannot be stored and read back: {e}"),
    }
}
