"""Catch-up subscriptions (the `Read` RPC with `subscription {}`): to a stream and to $all,
from start, end, a revision or a position; caught-up and checkpoint messages; stopping;
deadlines."""

from __future__ import annotations

import json
import time

import pytest
from kurrentdbclient import StreamState
from kurrentdbclient.events import CaughtUp, Checkpoint
from kurrentdbclient.exceptions import DeadlineExceededError, StreamIsDeletedError

from testkit import json_event, new_stream, take, take_until, unique

# Every subscription in this module has a gRPC deadline, so a server that stops sending
# fails the test (DEADLINE_EXCEEDED) instead of hanging it.
DEADLINE = 15


def ns(recorded):
    return [json.loads(e.data)["n"] for e in recorded]


def append_n(client, stream, start, count, type_="Tick"):
    return client.append_to_stream(
        stream,
        events=[json_event(type_, {"n": i}) for i in range(start, start + count)],
        current_version=StreamState.ANY,
    )


# --- stream subscriptions ---------------------------------------------------------------


def test_stream_subscription_from_start_receives_history_then_live_events(client):
    stream = new_stream()
    append_n(client, stream, 0, 3)
    with client.subscribe_to_stream(stream, timeout=DEADLINE) as sub:
        assert ns(take(sub, 3)) == [0, 1, 2]
        append_n(client, stream, 3, 2)
        live = take(sub, 2)
    assert ns(live) == [3, 4]
    assert [e.stream_position for e in live] == [3, 4]


def test_stream_subscription_from_revision_excludes_that_revision(client):
    stream = new_stream()
    append_n(client, stream, 0, 5)
    with client.subscribe_to_stream(stream, stream_position=2, timeout=DEADLINE) as sub:
        got = take(sub, 2)
    assert [e.stream_position for e in got] == [3, 4]


def test_stream_subscription_from_end_receives_only_new_events(client):
    stream = new_stream()
    append_n(client, stream, 0, 3)
    with client.subscribe_to_stream(stream, from_end=True, timeout=DEADLINE) as sub:
        append_n(client, stream, 3, 1)
        (got,) = take(sub, 1)
    assert got.stream_position == 3


def test_stream_subscription_reports_caught_up_between_history_and_live(client):
    stream = new_stream()
    append_n(client, stream, 0, 2)
    with client.subscribe_to_stream(stream, include_caught_up=True, timeout=DEADLINE) as sub:
        history = take_until(sub, lambda e: isinstance(e, CaughtUp))
        append_n(client, stream, 2, 1)
        (live,) = take(sub, 1)
    assert ns(history[:-1]) == [0, 1]
    assert isinstance(history[-1], CaughtUp)
    assert live.stream_position == 2 and not isinstance(live, CaughtUp)


def test_stream_subscription_to_missing_stream_waits_for_its_first_event(client):
    stream = new_stream()
    with client.subscribe_to_stream(stream, timeout=DEADLINE) as sub:
        append_n(client, stream, 0, 1)
        (got,) = take(sub, 1)
    assert got.stream_name == stream and got.stream_position == 0


def test_stream_subscription_only_sees_its_own_stream(client):
    stream, other = new_stream(), new_stream()
    with client.subscribe_to_stream(stream, timeout=DEADLINE) as sub:
        append_n(client, other, 0, 3)
        append_n(client, stream, 0, 1)
        (got,) = take(sub, 1)
    assert got.stream_name == stream


def test_stream_subscription_to_tombstoned_stream_raises_stream_is_deleted(client):
    stream = new_stream()
    append_n(client, stream, 0, 1)
    client.tombstone_stream(stream, current_version=0)
    with pytest.raises(StreamIsDeletedError):
        sub = client.subscribe_to_stream(stream, timeout=DEADLINE)
        take(sub, 1)


# --- $all subscriptions -----------------------------------------------------------------


def test_all_subscription_from_start_receives_history_then_live_events(client):
    type_ = unique("Sub")
    stream = new_stream()
    append_n(client, stream, 0, 2, type_)
    with client.subscribe_to_all(filter_include=(type_,), timeout=DEADLINE) as sub:
        history = take(sub, 2)
        append_n(client, stream, 2, 1, type_)
        live = take(sub, 1)
    assert ns(history) == [0, 1]
    assert ns(live) == [2]


def test_all_subscription_from_position_excludes_that_position(client):
    type_ = unique("Sub")
    stream = new_stream()
    append_n(client, stream, 0, 3, type_)
    first = client.get_stream(stream)[0]
    with client.subscribe_to_all(
        commit_position=first.commit_position, filter_include=(type_,), timeout=DEADLINE
    ) as sub:
        got = take(sub, 2)
    assert ns(got) == [1, 2]


def test_all_subscription_from_end_receives_only_new_events(client):
    type_ = unique("Sub")
    stream = new_stream()
    append_n(client, stream, 0, 2, type_)
    with client.subscribe_to_all(from_end=True, filter_include=(type_,), timeout=DEADLINE) as sub:
        append_n(client, stream, 2, 1, type_)
        (got,) = take(sub, 1)
    assert ns([got]) == [2]


def test_all_subscription_excludes_system_events_by_default(client):
    stream = new_stream()
    before = client.get_commit_position()
    append_n(client, stream, 0, 1)
    client.delete_stream(stream, current_version=0)  # writes system events
    marker = new_stream()
    append_n(client, marker, 0, 1)
    with client.subscribe_to_all(commit_position=before, timeout=DEADLINE) as sub:
        got = take_until(sub, lambda e: e.stream_name == marker)
    assert not [e for e in got if e.type.startswith("$")]


def test_all_subscription_that_excludes_nothing_meets_system_events_at_once(client):
    # As on KurrentDB, the node's leadership term starts with a `$epoch` in `$epochs`,
    # so a fresh server already holds a `$`-event before any client writes.
    with client.subscribe_to_all(filter_exclude=(), timeout=DEADLINE) as sub:
        (first,) = take(sub, 1)
    assert (first.type, first.stream_name) == ("$epoch", "$epochs")
    epoch = json.loads(first.data)
    assert epoch["epochNumber"] == 0
    assert epoch["prevEpochPosition"] == -1
    assert epoch["epochId"] == str(first.id)
    for field in ("epochPosition", "leaderInstanceId", "timeStamp"):
        assert field in epoch, epoch


def test_all_subscription_events_have_increasing_positions(client):
    type_ = unique("Sub")
    for _ in range(3):
        append_n(client, new_stream(), 0, 2, type_)
    with client.subscribe_to_all(filter_include=(type_,), timeout=DEADLINE) as sub:
        got = take(sub, 6)
    positions = [e.commit_position for e in got]
    assert positions == sorted(set(positions))


def test_all_subscription_reports_caught_up_between_history_and_live(client):
    type_ = unique("Sub")
    stream = new_stream()
    append_n(client, stream, 0, 2, type_)
    with client.subscribe_to_all(
        filter_include=(type_,), include_caught_up=True, timeout=DEADLINE
    ) as sub:
        history = take_until(sub, lambda e: isinstance(e, CaughtUp))
        append_n(client, stream, 2, 1, type_)
        live = take_until(sub, lambda e: not isinstance(e, (CaughtUp, Checkpoint)))
    assert ns(history[:-1]) == [0, 1]
    assert ns(live[-1:]) == [2]


def test_filtered_all_subscription_sends_checkpoints_while_catching_up(client):
    target = unique("Target")
    stream = new_stream()
    before = client.get_commit_position()
    append_n(client, stream, 0, 30, unique("Filler"))
    append_n(client, stream, 30, 1, target)
    with client.subscribe_to_all(
        commit_position=before,
        filter_include=(target,),
        include_checkpoints=True,
        window_size=2,
        checkpoint_interval_multiplier=1,
        timeout=DEADLINE,
    ) as sub:
        got = take_until(sub, lambda e: e.type == target)
    checkpoints = [e for e in got if isinstance(e, Checkpoint)]
    assert checkpoints, "30 filtered-out events with window 2 × multiplier 1 send checkpoints"
    hit = got[-1]
    for c in checkpoints:
        assert before <= c.commit_position <= hit.commit_position
    cps = [c.commit_position for c in checkpoints]
    assert cps == sorted(cps)


def test_filtered_all_subscription_sends_checkpoints_for_live_events_filtered_out(client):
    filler = unique("Filler")
    stream = new_stream()
    with client.subscribe_to_all(
        from_end=True,
        filter_include=(unique("Never"),),
        include_checkpoints=True,
        window_size=2,
        checkpoint_interval_multiplier=1,
        timeout=DEADLINE,
    ) as sub:
        start = client.get_commit_position()
        last = append_n(client, stream, 0, 20, filler)
        (checkpoint,) = take(sub, 1)
    assert isinstance(checkpoint, Checkpoint)
    assert start <= checkpoint.commit_position <= last


def test_checkpoint_position_resumes_subscription_without_gaps_or_duplicates(client):
    type_ = unique("Resume")
    stream = new_stream()
    before = client.get_commit_position()
    for i in range(10):
        append_n(client, stream, i, 1, type_ if i % 3 == 0 else unique("Other"))
    with client.subscribe_to_all(
        commit_position=before,
        filter_include=(type_,),
        include_checkpoints=True,
        window_size=1,
        checkpoint_interval_multiplier=1,
        timeout=DEADLINE,
    ) as sub:
        got = take_until(sub, lambda e: isinstance(e, Checkpoint) and e.commit_position > 0)
    checkpoint = got[-1]
    seen = [e for e in got if not isinstance(e, Checkpoint)]
    with client.subscribe_to_all(
        commit_position=checkpoint.commit_position, filter_include=(type_,), timeout=DEADLINE
    ) as sub:
        rest = take(sub, 4 - len(seen))
    assert ns(seen + rest) == [0, 3, 6, 9]


# --- stopping and deadlines -------------------------------------------------------------


def test_stopped_subscription_ends_iteration(client):
    stream = new_stream()
    append_n(client, stream, 0, 3)
    sub = client.subscribe_to_stream(stream, timeout=DEADLINE)
    assert ns(take(sub, 1)) == [0]
    sub.stop()
    assert sub.is_stopped
    assert list(sub) == []


def test_server_keeps_serving_after_many_stopped_subscriptions(client):
    stream = new_stream()
    append_n(client, stream, 0, 1)
    for _ in range(25):
        sub = client.subscribe_to_all(from_end=True, timeout=DEADLINE)
        sub.stop()
        sub = client.subscribe_to_stream(stream, timeout=DEADLINE)
        take(sub, 1)
        sub.stop()
    append_n(client, stream, 1, 1)
    assert client.get_current_version(stream) == 1


def test_subscription_stopped_from_another_thread_unblocks_iteration(client):
    import threading

    stream = new_stream()
    append_n(client, stream, 0, 1)
    sub = client.subscribe_to_stream(stream, timeout=DEADLINE)
    take(sub, 1)
    timer = threading.Timer(0.5, sub.stop)
    timer.start()
    started = time.monotonic()
    rest = list(sub)  # blocks until stopped
    timer.join()
    assert rest == []
    assert time.monotonic() - started < DEADLINE - 1


def test_subscription_with_deadline_raises_deadline_exceeded_when_idle(client):
    stream = new_stream()
    append_n(client, stream, 0, 2)
    sub = client.subscribe_to_stream(stream, timeout=1.0)
    started = time.monotonic()
    got = []
    with pytest.raises(DeadlineExceededError):
        for e in sub:
            got.append(e)
    assert ns(got) == [0, 1]
    assert time.monotonic() - started < 10


def test_all_subscription_with_deadline_raises_deadline_exceeded(client):
    sub = client.subscribe_to_all(from_end=True, timeout=1.0)
    with pytest.raises(DeadlineExceededError):
        list(sub)


def test_read_with_deadline_that_is_met_succeeds(client):
    stream = new_stream()
    append_n(client, stream, 0, 3)
    assert len(client.get_stream(stream, timeout=10)) == 3
    assert len(list(client.read_all(backwards=True, limit=3, timeout=10))) == 3
