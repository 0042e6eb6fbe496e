"""Appends: every expected state, through both RPCs the client uses.

`append` mode goes through `Streams.Append` (client-streaming: options, then messages);
`batch` mode through `Streams.BatchAppend` (what `append_to_stream` uses for a list).
"""

from __future__ import annotations

import datetime
import json
import uuid

import pytest
from kurrentdbclient import NewEvent, StreamState
from kurrentdbclient.exceptions import WrongCurrentVersionError

from testkit import events, json_event, new_stream

MODES = ["append", "batch"]


def append(client, mode, stream, evs, current_version):
    """Append through the RPC `mode` names; returns the commit position of the last event."""
    evs = list(evs)
    if mode == "batch":
        return client.append_to_stream(stream, events=evs, current_version=current_version)
    if len(evs) == 1:
        return client.append_event(stream, event=evs[0], current_version=current_version)
    return client.streams.append(
        stream_name=stream, current_version=current_version, events=evs, timeout=10
    )


@pytest.mark.parametrize("mode", MODES)
def test_append_expecting_no_stream_creates_stream_at_revision_zero(client, mode):
    stream = new_stream()
    position = append(client, mode, stream, events(1), StreamState.NO_STREAM)
    assert position > 0
    recorded = client.get_stream(stream)
    assert [e.stream_position for e in recorded] == [0]
    assert client.get_current_version(stream) == 0


@pytest.mark.parametrize("mode", MODES)
def test_append_of_several_events_returns_position_of_last_event(client, mode):
    stream = new_stream()
    position = append(client, mode, stream, events(3), StreamState.NO_STREAM)
    recorded = client.get_stream(stream)
    assert [e.stream_position for e in recorded] == [0, 1, 2]
    assert recorded[-1].commit_position == position
    positions = [e.commit_position for e in recorded]
    assert positions == sorted(set(positions)), "each event has its own increasing position"
    assert all(p > 0 for p in positions)


@pytest.mark.parametrize("mode", MODES)
def test_positions_increase_across_appends(client, mode):
    stream_a, stream_b = new_stream(), new_stream()
    p1 = append(client, mode, stream_a, events(1), StreamState.NO_STREAM)
    p2 = append(client, mode, stream_b, events(2), StreamState.NO_STREAM)
    p3 = append(client, mode, stream_a, events(1), 0)
    assert 0 < p1 < p2 < p3


@pytest.mark.parametrize("mode", MODES)
def test_append_expecting_no_stream_to_existing_stream_raises_wrong_current_version(client, mode):
    stream = new_stream()
    append(client, mode, stream, events(2), StreamState.NO_STREAM)
    with pytest.raises(WrongCurrentVersionError) as e:
        append(client, mode, stream, events(1), StreamState.NO_STREAM)
    assert e.value.actual_version == 1
    assert len(client.get_stream(stream)) == 2, "a failed append writes nothing"


@pytest.mark.parametrize("mode", MODES)
def test_append_expecting_exists_to_missing_stream_raises_wrong_current_version(client, mode):
    stream = new_stream()
    with pytest.raises(WrongCurrentVersionError) as e:
        append(client, mode, stream, events(1), StreamState.EXISTS)
    assert e.value.actual_version == StreamState.NO_STREAM
    assert client.get_current_version(stream) == StreamState.NO_STREAM


@pytest.mark.parametrize("mode", MODES)
def test_append_expecting_exists_to_existing_stream_succeeds(client, mode):
    stream = new_stream()
    append(client, mode, stream, events(1), StreamState.NO_STREAM)
    append(client, mode, stream, events(2), StreamState.EXISTS)
    assert [e.stream_position for e in client.get_stream(stream)] == [0, 1, 2]


@pytest.mark.parametrize("mode", MODES)
def test_append_expecting_any_succeeds_on_missing_and_existing_stream(client, mode):
    stream = new_stream()
    append(client, mode, stream, events(1), StreamState.ANY)
    append(client, mode, stream, events(1), StreamState.ANY)
    assert [e.stream_position for e in client.get_stream(stream)] == [0, 1]


@pytest.mark.parametrize("mode", MODES)
def test_append_expecting_current_revision_succeeds(client, mode):
    stream = new_stream()
    append(client, mode, stream, events(2), StreamState.NO_STREAM)
    append(client, mode, stream, events(1), 1)
    append(client, mode, stream, events(1), 2)
    assert client.get_current_version(stream) == 3


@pytest.mark.parametrize("mode", MODES)
def test_append_expecting_stale_revision_raises_wrong_current_version(client, mode):
    stream = new_stream()
    append(client, mode, stream, events(3), StreamState.NO_STREAM)
    with pytest.raises(WrongCurrentVersionError) as e:
        append(client, mode, stream, events(1), 0)
    assert e.value.actual_version == 2
    assert e.value.expected_version == 0


@pytest.mark.parametrize("mode", MODES)
def test_append_expecting_future_revision_raises_wrong_current_version(client, mode):
    stream = new_stream()
    append(client, mode, stream, events(1), StreamState.NO_STREAM)
    with pytest.raises(WrongCurrentVersionError) as e:
        append(client, mode, stream, events(1), 5)
    assert e.value.actual_version == 0


@pytest.mark.parametrize("mode", MODES)
def test_append_expecting_revision_to_missing_stream_raises_wrong_current_version(client, mode):
    stream = new_stream()
    with pytest.raises(WrongCurrentVersionError) as e:
        append(client, mode, stream, events(1), 0)
    assert e.value.actual_version == StreamState.NO_STREAM


@pytest.mark.parametrize("mode", MODES)
def test_reappending_same_event_ids_at_same_expected_state_returns_original_position(
    client, mode
):
    stream = new_stream()
    evs = events(2)
    first = append(client, mode, stream, evs, StreamState.NO_STREAM)
    again = append(client, mode, stream, evs, StreamState.NO_STREAM)
    assert again == first
    assert [e.id for e in client.get_stream(stream)] == [e.id for e in evs]


@pytest.mark.parametrize("mode", MODES)
def test_the_same_event_ids_appended_to_two_streams_are_new_events_in_each(client, mode):
    first, second = new_stream(), new_stream()
    evs = events(3)
    p1 = append(client, mode, first, evs, StreamState.NO_STREAM)
    p2 = append(client, mode, second, evs, StreamState.NO_STREAM)
    assert p2 > p1, "written, not taken for a retry"
    for stream in (first, second):
        recorded = client.get_stream(stream)
        assert [e.id for e in recorded] == [e.id for e in evs]
        assert {e.stream_name for e in recorded} == {stream}
    start = client.get_stream(first)[0].commit_position
    in_all = [
        (e.stream_name, e.id)
        for e in client.read_all(commit_position=start)
        if e.stream_name in (first, second)
    ]
    assert in_all == [(s, e.id) for s in (first, second) for e in evs]


@pytest.mark.parametrize("mode", MODES)
def test_retrying_ids_another_stream_also_holds_writes_nothing_to_the_same_stream(client, mode):
    first, second = new_stream(), new_stream()
    evs = events(3)
    originals = [append(client, mode, s, evs, StreamState.NO_STREAM) for s in (first, second)]
    for stream, original in zip((first, second), originals):
        assert append(client, mode, stream, evs, StreamState.NO_STREAM) == original
        assert [e.id for e in client.get_stream(stream)] == [e.id for e in evs]


@pytest.mark.parametrize("mode", MODES)
def test_reappending_same_event_ids_at_same_revision_returns_original_position(client, mode):
    stream = new_stream()
    append(client, mode, stream, events(1), StreamState.NO_STREAM)
    evs = events(2)
    first = append(client, mode, stream, evs, 0)
    again = append(client, mode, stream, evs, 0)
    assert again == first
    assert client.get_current_version(stream) == 2


@pytest.mark.parametrize("mode", MODES)
def test_reappending_with_any_is_idempotent(client, mode):
    stream = new_stream()
    evs = events(2)
    first = append(client, mode, stream, evs, StreamState.ANY)
    again = append(client, mode, stream, evs, StreamState.ANY)
    assert again == first
    assert client.get_current_version(stream) == 1


@pytest.mark.parametrize("mode", MODES)
def test_partially_overlapping_reappend_raises_wrong_current_version(client, mode):
    stream = new_stream()
    evs = events(2)
    append(client, mode, stream, evs, StreamState.NO_STREAM)
    overlap = [evs[0], *events(1)]
    with pytest.raises(WrongCurrentVersionError):
        append(client, mode, stream, overlap, StreamState.NO_STREAM)
    assert client.get_current_version(stream) == 1


@pytest.mark.parametrize("mode", MODES)
def test_recorded_event_carries_what_was_appended(client, mode):
    stream = new_stream()
    event = NewEvent(
        type="OrderPlaced",
        data=json.dumps({"total": 12.5, "items": ["a", "b"]}).encode(),
        metadata=json.dumps({"source": "pytest"}).encode(),
        id=uuid.uuid4(),
    )
    before = datetime.datetime.now(datetime.timezone.utc)
    position = append(client, mode, stream, [event], StreamState.NO_STREAM)
    (recorded,) = client.get_stream(stream)
    assert recorded.id == event.id
    assert recorded.type == "OrderPlaced"
    assert json.loads(recorded.data) == {"total": 12.5, "items": ["a", "b"]}
    assert json.loads(recorded.metadata)["source"] == "pytest"
    assert recorded.content_type == "application/json"
    assert recorded.stream_name == stream
    assert recorded.stream_position == 0
    assert recorded.commit_position == position
    assert recorded.recorded_at is not None
    slack = datetime.timedelta(seconds=5)
    assert before - slack <= recorded.recorded_at <= datetime.datetime.now(
        datetime.timezone.utc
    ) + slack


@pytest.mark.parametrize("mode", MODES)
def test_binary_data_round_trips_byte_for_byte(client, mode):
    stream = new_stream()
    payload = bytes(range(256)) + b"\x00\xff\x00 not json {"
    event = NewEvent(type="Blob", data=payload, content_type="application/octet-stream")
    append(client, mode, stream, [event], StreamState.NO_STREAM)
    (recorded,) = client.get_stream(stream)
    assert recorded.data == payload
    assert recorded.content_type == "application/octet-stream"
    assert recorded.type == "Blob"


@pytest.mark.parametrize("mode", MODES)
def test_event_with_empty_data_and_no_metadata_round_trips(client, mode):
    stream = new_stream()
    event = NewEvent(type="Empty", data=b"", content_type="application/octet-stream")
    append(client, mode, stream, [event], StreamState.NO_STREAM)
    (recorded,) = client.get_stream(stream)
    assert recorded.data == b""
    assert recorded.metadata == b""


@pytest.mark.parametrize("mode", MODES)
def test_append_with_deadline_that_is_met_succeeds(client, mode):
    stream = new_stream()
    evs = events(2)
    if mode == "batch":
        position = client.append_to_stream(
            stream, events=evs, current_version=StreamState.NO_STREAM, timeout=10
        )
    else:
        position = client.streams.append(
            stream_name=stream, current_version=StreamState.NO_STREAM, events=evs, timeout=10
        )
    assert position > 0
    assert client.get_current_version(stream) == 1


def test_many_events_in_one_batch_append_are_atomic_and_ordered(client):
    stream = new_stream()
    evs = [json_event("Counted", {"i": i}) for i in range(500)]
    position = client.append_to_stream(stream, events=evs, current_version=StreamState.NO_STREAM)
    recorded = client.get_stream(stream)
    assert [json.loads(e.data)["i"] for e in recorded] == list(range(500))
    assert recorded[-1].commit_position == position
