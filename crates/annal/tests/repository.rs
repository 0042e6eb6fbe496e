//! The Repository on the embedded store: commands, retries, snapshots, time travel,
//! compensation and decoding errors, with a small Counter aggregate.

use annal::checkpoint::{Checkpoint, CheckpointWrite};
use annal::{
    Aggregate, AggregateInfo, AppendRequest, CommandContext, Direction, DomainEvent,
    ExpectedVersion, Filter, Limits, NewEvent, ProposedTransaction, RawJson, RecordedEvent,
    Repository, RepositoryError, Snapshot, SnapshotPolicy, Store, Timestamp, TransactionResult,
    Uuid,
};
use annal::{CodecError, sqlite::SqliteStore};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "data")]
enum CounterEvent {
    Incremented { by: i64 },
    Decremented { by: i64 },
    Corrected { by: i64 },
}

impl DomainEvent for CounterEvent {}

#[derive(Debug, Clone)]
enum Cmd {
    Inc(i64),
    Dec(i64),
}

#[derive(Debug, thiserror::Error)]
enum CounterError {
    #[error("the counter would go below zero")]
    BelowZero,
}

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    const SNAPSHOT_TAG: &'static str = "counter-v1";
    type Event = CounterEvent;
    type Command = Cmd;
    type Error = CounterError;

    fn apply(&mut self, event: &CounterEvent) {
        match event {
            CounterEvent::Incremented { by } | CounterEvent::Corrected { by } => self.value += by,
            CounterEvent::Decremented { by } => self.value -= by,
        }
    }

    fn handle(&self, cmd: Cmd) -> Result<Vec<CounterEvent>, CounterError> {
        match cmd {
            Cmd::Inc(by) => Ok(vec![CounterEvent::Incremented { by }]),
            Cmd::Dec(by) if self.value >= by => Ok(vec![CounterEvent::Decremented { by }]),
            Cmd::Dec(_) => Err(CounterError::BelowZero),
        }
    }
}

fn fresh() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("r.db")).expect("open");
    (dir, Arc::new(store))
}

fn ctx() -> CommandContext {
    CommandContext::by("tester")
}

#[tokio::test]
async fn commands_append_their_events_at_the_version_they_were_decided_on() {
    let (_d, store) = fresh();
    let repo = Repository::<Counter>::new(store.clone());
    for _ in 0..3 {
        repo.execute("c-1", Cmd::Inc(2), &ctx())
            .await
            .expect("increment");
    }
    let done = repo
        .execute("c-1", Cmd::Dec(1), &ctx().correlated("corr-9"))
        .await
        .expect("decrement");
    assert_eq!((done.version, done.state.value, done.attempts), (4, 5, 1));
    let stored = &done.events[0];
    assert_eq!(
        (stored.event_type.as_str(), stored.data.get()),
        ("Decremented", r#"{"by":1}"#)
    );
    assert_eq!(
        (stored.user_id.as_str(), stored.correlation_id.as_deref()),
        ("tester", Some("corr-9"))
    );
    assert_eq!(
        repo.load("c-1").await.expect("load").state,
        Counter { value: 5 }
    );
}

#[tokio::test]
async fn a_rejected_command_writes_nothing() {
    let (_d, store) = fresh();
    let repo = Repository::<Counter>::new(store.clone());
    repo.execute("c-1", Cmd::Inc(1), &ctx())
        .await
        .expect("increment");
    let err = repo
        .execute("c-1", Cmd::Dec(5), &ctx())
        .await
        .expect_err("below zero");
    assert!(
        matches!(err, RepositoryError::Rejected(CounterError::BelowZero)),
        "{err}"
    );
    assert_eq!(store.head(&[]).await.expect("head"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_aggregate_retry_and_all_land() {
    let (_d, store) = fresh();
    let repo = Repository::<Counter>::new(store.clone()).with_max_attempts(50);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.execute("shared", Cmd::Inc(1), &ctx()).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("every command lands");
    }
    let loaded = repo.load("shared").await.expect("load");
    assert_eq!((loaded.version, loaded.state.value), (8, 8));
}

/// A store that lets another writer append to the aggregate just before each of ours.
struct Meddler(SqliteStore);

#[async_trait]
impl Store for Meddler {
    fn limits(&self) -> &Limits {
        self.0.limits()
    }
    async fn commit(&self, p: ProposedTransaction) -> annal::Result<TransactionResult> {
        for a in &p.appends {
            let other = NewEvent::new("Incremented", &serde_json::json!({"by": 100}))?;
            self.0
                .append(
                    AppendRequest::new("Counter", a.aggregate_id.clone(), ExpectedVersion::Any)
                        .event(other),
                )
                .await?;
        }
        self.0.commit(p).await
    }
    async fn read_aggregate(
        &self,
        id: &str,
        d: Direction,
        from: Option<u64>,
        limit: usize,
    ) -> annal::Result<Vec<RecordedEvent>> {
        self.0.read_aggregate(id, d, from, limit).await
    }
    async fn read_all(
        &self,
        after: u64,
        limit: usize,
        f: &Filter,
    ) -> annal::Result<Vec<RecordedEvent>> {
        self.0.read_all(after, limit, f).await
    }
    async fn event(&self, id: Uuid) -> annal::Result<Option<RecordedEvent>> {
        self.0.event(id).await
    }
    async fn aggregate(&self, id: &str) -> annal::Result<Option<AggregateInfo>> {
        self.0.aggregate(id).await
    }
    async fn head(&self, types: &[String]) -> annal::Result<u64> {
        self.0.head(types).await
    }
    async fn save_snapshot(
        &self,
        id: &str,
        v: u64,
        tag: &str,
        state: RawJson,
    ) -> annal::Result<Snapshot> {
        self.0.save_snapshot(id, v, tag, state).await
    }
    async fn load_snapshot(
        &self,
        id: &str,
        tag: &str,
        at: Option<u64>,
    ) -> annal::Result<Option<Snapshot>> {
        self.0.load_snapshot(id, tag, at).await
    }
    async fn checkpoint(&self, name: &str) -> annal::Result<Option<Checkpoint>> {
        self.0.checkpoint(name).await
    }
    async fn put_checkpoint(&self, w: CheckpointWrite) -> annal::Result<Checkpoint> {
        self.0.put_checkpoint(w).await
    }
    async fn wait_for_head(&self, after: u64, timeout: Duration) -> annal::Result<u64> {
        self.0.wait_for_head(after, timeout).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_commands_on_one_aggregate_all_land_with_the_default_retry() {
    let (_d, store) = fresh();
    let repo = Repository::<Counter>::new(store.clone());
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move {
                let t = std::time::Instant::now();
                let done = repo.execute("account", Cmd::Inc(1), &ctx()).await;
                (done, t.elapsed())
            })
        })
        .collect();
    let mut attempts = Vec::new();
    for t in tasks {
        let (done, took) = t.await.expect("task");
        let done = done.expect("every command lands with the default retry");
        attempts.push((done.attempts, took));
    }
    let total: u32 = attempts.iter().map(|(a, _)| a).sum();
    let slowest = attempts.iter().map(|(_, t)| *t).max().unwrap_or_default();
    eprintln!(
        "10 writers on one aggregate: {total} decisions in all, slowest {slowest:?}, all in {:?}",
        started.elapsed()
    );
    let loaded = repo.load("account").await.expect("load");
    assert_eq!((loaded.version, loaded.state.value), (10, 10));
}

#[test]
fn conflict_pauses_are_jittered_up_to_a_doubling_bound() {
    let retry = annal::ConflictRetry::default();
    for conflicts in 1..=12u32 {
        let bound = retry
            .first_backoff
            .saturating_mul(1 << (conflicts - 1))
            .min(retry.max_backoff);
        let pauses: Vec<_> = (0..200).map(|_| retry.pause(conflicts)).collect();
        assert!(pauses.iter().all(|p| *p <= bound), "within the bound");
        assert!(
            pauses.iter().any(|p| *p != pauses[0]),
            "drawn at random, not one fixed pause"
        );
    }
}

#[tokio::test]
async fn a_conflict_that_outlives_its_retries_is_reported() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(Meddler(
        SqliteStore::open(dir.path().join("m.db")).expect("open"),
    ));
    let repo = Repository::<Counter>::new(store.clone()).with_max_attempts(3);
    let err = repo
        .execute("busy", Cmd::Inc(1), &ctx())
        .await
        .expect_err("always raced");
    assert!(
        matches!(err, RepositoryError::Conflict { ref aggregate_id, attempts: 3 } if aggregate_id == "busy"),
        "{err}"
    );
    assert!(err.to_string().contains("3 attempts"), "{err}");
    let loaded = repo.load("busy").await.expect("load");
    assert_eq!(
        loaded.state.value, 300,
        "only the other writer's events landed"
    );
}

#[tokio::test]
async fn an_event_type_the_aggregate_does_not_know_is_an_error_naming_it() {
    let (_d, store) = fresh();
    let repo = Repository::<Counter>::new(store.clone());
    repo.execute("c-1", Cmd::Inc(1), &ctx())
        .await
        .expect("increment");
    store
        .append(
            AppendRequest::new("Counter", "c-1", ExpectedVersion::Exact(1))
                .event(NewEvent::new("Exploded", &serde_json::json!({})).expect("event")),
        )
        .await
        .expect("raw append");
    let err = repo.load("c-1").await.expect_err("unknown type");
    match &err {
        RepositoryError::Event {
            position,
            source: CodecError::UnknownEventType { event_type },
            ..
        } => {
            assert_eq!((*position, event_type.as_str()), (2, "Exploded"));
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("Exploded"));
}

#[tokio::test]
async fn loading_an_aggregate_of_another_type_is_refused() {
    let (_d, store) = fresh();
    store
        .append(
            AppendRequest::new("Invoice", "x", ExpectedVersion::Any)
                .event(NewEvent::new("Incremented", &serde_json::json!({"by": 1})).expect("event")),
        )
        .await
        .expect("append");
    let err = Repository::<Counter>::new(store)
        .load("x")
        .await
        .expect_err("wrong type");
    assert!(
        matches!(err, RepositoryError::WrongType { ref found, .. } if found == "Invoice"),
        "{err}"
    );
}

async fn snapshot_at(store: &Arc<dyn Store>, id: &str, version: u64) -> Snapshot {
    for _ in 0..200 {
        if let Some(s) = store
            .load_snapshot(id, Counter::SNAPSHOT_TAG, None)
            .await
            .expect("load")
        {
            if s.aggregate_version == version {
                return s;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no snapshot of {id} at version {version} appeared");
}

#[tokio::test]
async fn snapshots_every_n_events_are_used_by_later_loads() {
    let (_d, store) = fresh();
    let repo = Repository::<Counter>::new(store.clone()).with_snapshots(SnapshotPolicy::Every(10));
    for i in 0..25 {
        repo.execute("c-1", Cmd::Inc(i), &ctx())
            .await
            .expect("increment");
    }
    snapshot_at(&store, "c-1", 20).await;
    let loaded = repo.load("c-1").await.expect("load");
    assert_eq!((loaded.snapshot_version, loaded.replayed), (Some(20), 5));
    let full = Repository::<Counter>::new(store.clone())
        .load("c-1")
        .await
        .expect("full replay");
    assert_eq!(full.snapshot_version, None);
    assert_eq!(loaded.state, full.state, "snapshot + events = full replay");
    assert_eq!(loaded.state.value, (0..25).sum::<i64>());
}

#[tokio::test]
async fn an_adaptive_policy_snapshots_after_a_long_replay() {
    let (_d, store) = fresh();
    let repo =
        Repository::<Counter>::new(store.clone()).with_snapshots(SnapshotPolicy::Adaptive(5));
    let plain = Repository::<Counter>::new(store.clone());
    for _ in 0..12 {
        plain
            .execute("c-1", Cmd::Inc(1), &ctx())
            .await
            .expect("increment");
    }
    assert_eq!(repo.load("c-1").await.expect("load").replayed, 12);
    snapshot_at(&store, "c-1", 12).await;
    let again = repo.load("c-1").await.expect("load");
    assert_eq!(
        (again.snapshot_version, again.replayed, again.state.value),
        (Some(12), 0, 12)
    );
}

#[tokio::test]
async fn snapshots_of_another_shape_or_unreadable_ones_are_ignored() {
    let (_d, store) = fresh();
    let repo = Repository::<Counter>::new(store.clone()).with_snapshots(SnapshotPolicy::ReadOnly);
    for _ in 0..4 {
        repo.execute("c-1", Cmd::Inc(1), &ctx())
            .await
            .expect("increment");
    }
    store
        .save_snapshot(
            "c-1",
            3,
            "counter-v0",
            RawJson::parse(r#"{"value": 1000}"#).expect("json"),
        )
        .await
        .expect("save");
    let loaded = repo.load("c-1").await.expect("load");
    assert_eq!(
        (loaded.snapshot_version, loaded.state.value),
        (None, 4),
        "another tag is never read"
    );
    store
        .save_snapshot(
            "c-1",
            3,
            Counter::SNAPSHOT_TAG,
            RawJson::parse(r#"{"value": "many"}"#).expect("json"),
        )
        .await
        .expect("save");
    let loaded = repo.load("c-1").await.expect("load");
    assert_eq!(
        (loaded.snapshot_version, loaded.state.value),
        (None, 4),
        "an unreadable snapshot is ignored"
    );
}

#[tokio::test]
async fn time_travel_by_version_record_time_and_domain_time() {
    let (_d, store) = fresh();
    let repo = Repository::<Counter>::new(store.clone());
    let day = |d: &str| Timestamp::parse(d).expect("date");
    repo.execute("c-1", Cmd::Inc(1), &ctx().occurred(day("2024-09-01")))
        .await
        .expect("1");
    repo.execute("c-1", Cmd::Inc(10), &ctx().occurred(day("2024-09-15")))
        .await
        .expect("2");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let between = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    repo.execute("c-1", Cmd::Inc(100), &ctx().occurred(day("2024-10-01")))
        .await
        .expect("3");
    assert_eq!(
        repo.load_at_version("c-1", 2)
            .await
            .expect("v2")
            .state
            .value,
        11
    );
    assert_eq!(
        repo.load_at_version("c-1", 99)
            .await
            .expect("past the end")
            .version,
        3
    );
    let as_of = repo.load_as_of("c-1", between).await.expect("as of");
    assert_eq!((as_of.version, as_of.state.value), (2, 11));
    let before = repo
        .load_as_of("c-1", Timestamp::from_micros(0))
        .await
        .expect("before");
    assert_eq!((before.version, before.state.value), (0, 0));
    let on = repo
        .load_as_occurred("c-1", day("2024-09-20"))
        .await
        .expect("domain time");
    assert_eq!(on.state.value, 11);
    assert_eq!(
        repo.load_as_occurred("c-1", day("2024-09-15"))
            .await
            .expect("inclusive")
            .state
            .value,
        11
    );
    assert_eq!(
        repo.load_as_occurred("c-1", day("2024-08-01"))
            .await
            .expect("before")
            .state
            .value,
        0
    );
}

#[tokio::test]
async fn a_compensating_event_points_at_what_it_corrects() {
    let (_d, store) = fresh();
    let repo = Repository::<Counter>::new(store.clone());
    let wrong = repo
        .execute("c-1", Cmd::Inc(50), &ctx())
        .await
        .expect("mistake");
    let original = wrong.events[0].event_id;
    let fixed = repo
        .compensate(
            "c-1",
            original,
            CounterEvent::Corrected { by: -50 },
            "typed 50 instead of 5",
            &ctx(),
        )
        .await
        .expect("compensate");
    assert_eq!(fixed.state.value, 0);
    let e = &fixed.events[0];
    assert_eq!(e.causation_id, Some(original.to_string()));
    let meta: serde_json::Value = e.metadata.to_value().expect("json");
    assert_eq!(meta["compensates"], original.to_string());
    assert_eq!(meta["reason"], "typed 50 instead of 5");
    let other = repo
        .execute("c-2", Cmd::Inc(1), &ctx())
        .await
        .expect("other");
    let err = repo
        .compensate(
            "c-1",
            other.events[0].event_id,
            CounterEvent::Corrected { by: -1 },
            "no",
            &ctx(),
        )
        .await
        .expect_err("not this aggregate's event");
    assert!(matches!(err, RepositoryError::NotFound(_)), "{err}");
    let err = repo
        .compensate(
            "c-1",
            Uuid::now_v7(),
            CounterEvent::Corrected { by: -1 },
            "no",
            &ctx(),
        )
        .await
        .expect_err("no such event");
    assert!(matches!(err, RepositoryError::NotFound(_)), "{err}");
}
