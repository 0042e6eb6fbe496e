//! Property test: random sequences of appends and reads, checked against a small
//! in-memory model of the rules (positions, versions, expected-version checks, type
//! fixing, idempotent retries, filters, aggregate reads).

use super::Harness;
use super::fixtures::{ev, req};
use crate::append::ExpectedVersion;
use crate::error::Error;
use crate::read::{Direction, Filter};
use crate::store::Store;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::HashMap;
use std::future::Future;
use uuid::Uuid;

const AGGREGATES: [&str; 4] = ["a-0", "a-1", "a-2", "a-3"];
const TYPES: [&str; 3] = ["Opened", "Changed", "Closed"];

#[derive(Debug, Clone)]
enum Expect {
    Any,
    NoStream,
    Exists,
    Current,
    Stale,
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        agg: usize,
        foreign_type: bool,
        expect: Expect,
        types: Vec<usize>,
        with_ids: bool,
    },
    RetryLast,
    ReadAll {
        after: u64,
        limit: usize,
        event_type: Option<usize>,
    },
    ReadAggregate {
        agg: usize,
        backward: bool,
        from: Option<u64>,
        limit: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let expect = prop_oneof![
        Just(Expect::Any),
        Just(Expect::NoStream),
        Just(Expect::Exists),
        Just(Expect::Current),
        Just(Expect::Stale),
    ];
    prop_oneof![
        5 => (0..4usize, proptest::bool::weighted(0.1), expect, proptest::collection::vec(0..3usize, 1..4), any::<bool>())
            .prop_map(|(agg, foreign_type, expect, types, with_ids)| Op::Append { agg, foreign_type, expect, types, with_ids }),
        1 => Just(Op::RetryLast),
        2 => (0..30u64, 1..8usize, proptest::option::of(0..3usize))
            .prop_map(|(after, limit, event_type)| Op::ReadAll { after, limit, event_type }),
        2 => (0..4usize, any::<bool>(), proptest::option::of(0..8u64), 1..8usize)
            .prop_map(|(agg, backward, from, limit)| Op::ReadAggregate { agg, backward, from, limit }),
    ]
}

/// One modelled event: (event_id, aggregate index, type index, version).
type Modelled = (Uuid, usize, usize, u64);

#[derive(Default)]
struct Model {
    log: Vec<Modelled>,
    versions: HashMap<usize, u64>,
    kinds: HashMap<usize, &'static str>,
    last: Option<(crate::append::AppendRequest, Vec<u64>)>,
}

async fn run_ops<S: Store>(store: &S, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append {
                agg,
                foreign_type,
                expect,
                types,
                with_ids,
            } => {
                let current = m.versions.get(&agg).copied().unwrap_or(0);
                let expected = match expect {
                    Expect::Any => ExpectedVersion::Any,
                    Expect::NoStream => ExpectedVersion::NoStream,
                    Expect::Exists => ExpectedVersion::Exists,
                    Expect::Current => ExpectedVersion::Exact(current),
                    Expect::Stale => ExpectedVersion::Exact(current + 1),
                };
                let events = types
                    .iter()
                    .map(|&t| {
                        let e = ev(TYPES[t], &format!(r#"{{"t":{t}}}"#));
                        if with_ids {
                            e.with_id(Uuid::now_v7())
                        } else {
                            e
                        }
                    })
                    .collect();
                let agg_type = if foreign_type { "Other" } else { "Thing" };
                let request = req(agg_type, AGGREGATES[agg], expected, events);
                let type_ok = m.kinds.get(&agg).is_none_or(|k| *k == agg_type);
                let should_pass = type_ok && expected.check(AGGREGATES[agg], current).is_ok();
                let got = store.append(request.clone()).await;
                match (&got, should_pass) {
                    (Ok(r), true) => {
                        let first = m.log.len() as u64 + 1;
                        prop_assert_eq!(r.first_position, first);
                        prop_assert_eq!(r.aggregate_version, current + types.len() as u64);
                        for (i, e) in r.events.iter().enumerate() {
                            m.log
                                .push((e.event_id, agg, types[i], current + 1 + i as u64));
                        }
                        if with_ids {
                            m.last = Some((request, r.events.iter().map(|e| e.position).collect()));
                        }
                        m.kinds.insert(agg, agg_type);
                        m.versions.insert(agg, current + types.len() as u64);
                    }
                    (Err(Error::AggregateTypeMismatch { .. }), false) => prop_assert!(!type_ok),
                    (Err(Error::WrongExpectedVersion { actual, .. }), false) => {
                        prop_assert!(type_ok);
                        prop_assert_eq!(*actual, current);
                    }
                    (other, want) => {
                        return Err(TestCaseError::fail(format!(
                            "append {request:?} with model version {current}: got {other:?}, model says pass={want}"
                        )));
                    }
                }
            }
            Op::RetryLast => {
                if let Some((request, positions)) = &m.last {
                    let r = store.append(request.clone()).await;
                    let r = r.map_err(|e| TestCaseError::fail(format!("retry failed: {e}")))?;
                    let got: Vec<u64> = r.events.iter().map(|e| e.position).collect();
                    prop_assert_eq!(&got, positions, "a retry answers the original positions");
                }
            }
            Op::ReadAll {
                after,
                limit,
                event_type,
            } => {
                let filter = Filter {
                    event_types: event_type
                        .map(|t| vec![TYPES[t].to_owned()])
                        .unwrap_or_default(),
                    ..Default::default()
                };
                let got: Vec<Uuid> = store
                    .read_all(after, limit, &filter)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .iter()
                    .map(|e| e.event_id)
                    .collect();
                let want: Vec<Uuid> = m
                    .log
                    .iter()
                    .enumerate()
                    .filter(|(i, e)| *i as u64 >= after && event_type.is_none_or(|t| t == e.2))
                    .take(limit)
                    .map(|(_, e)| e.0)
                    .collect();
                prop_assert_eq!(got, want);
            }
            Op::ReadAggregate {
                agg,
                backward,
                from,
                limit,
            } => {
                let dir = if backward {
                    Direction::Backward
                } else {
                    Direction::Forward
                };
                let got: Vec<Uuid> = store
                    .read_aggregate(AGGREGATES[agg], dir, from, limit)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .iter()
                    .map(|e| e.event_id)
                    .collect();
                let mut mine: Vec<&Modelled> = m.log.iter().filter(|e| e.1 == agg).collect();
                if backward {
                    mine.reverse();
                }
                let want: Vec<Uuid> = mine
                    .into_iter()
                    .filter(|e| match (backward, from) {
                        (false, f) => e.3 >= f.unwrap_or(1),
                        (true, f) => e.3 <= f.unwrap_or(u64::MAX),
                    })
                    .take(limit)
                    .map(|e| e.0)
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }
    let report = store
        .verify(None, None)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(report.ok, "chain verifies: {:?}", report);
    prop_assert_eq!(report.checked, m.log.len() as u64);
    Ok(())
}

/// Runs 48 random operation sequences, each on a fresh store from `make`.
pub fn check<H, F, Fut>(make: F)
where
    H: Harness,
    F: Fn() -> Fut,
    Fut: Future<Output = H>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        rt.block_on(async {
            let h = make().await;
            run_ops(h.store(), ops).await
        })
    });
    if let Err(e) = result {
        panic!("the store disagrees with the model: {e}");
    }
}
