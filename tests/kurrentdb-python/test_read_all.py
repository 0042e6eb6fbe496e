"""$all reads: directions, positions, and server-side filters on event type and stream
name (include, exclude, prefix, regex with look-ahead)."""

from __future__ import annotations

import threading

import pytest
from kurrentdbclient import StreamState
from kurrentdbclient.exceptions import InvalidCommitPositionError, UnknownError

from testkit import json_event, new_stream, take, unique


def append(client, stream, types):
    return client.append_to_stream(
        stream, events=[json_event(t) for t in types], current_version=StreamState.ANY
    )


@pytest.fixture
def mixed(client):
    """Three streams of one fresh category with three fresh event types, interleaved.
    Returns (category, [streams], [types], position before the first of them)."""
    category = unique("cat")
    streams = [new_stream(category) for _ in range(3)]
    types = [unique("Alpha"), unique("Beta"), unique("Gamma")]
    before = client.get_commit_position()
    for s in streams:
        append(client, s, types)
    return category, streams, types, before


def ours(recorded, streams):
    return [(e.stream_name, e.type) for e in recorded if e.stream_name in streams]


def test_default_filter_excludes_system_events(client, mixed):
    recorded = list(client.read_all())
    assert recorded, "user events are visible"
    assert not [e for e in recorded if e.type.startswith("$")]


def test_read_all_forwards_returns_events_in_commit_order(client, mixed):
    _, streams, types, before = mixed
    recorded = list(client.read_all(commit_position=before, filter_exclude=()))
    assert ours(recorded, streams) == [(s, t) for s in streams for t in types]
    positions = [e.commit_position for e in recorded]
    assert positions == sorted(set(positions))


def test_read_all_forwards_from_position_includes_that_position(client, mixed):
    _, streams, _, _ = mixed
    third = client.get_stream(streams[0])[2]
    recorded = list(client.read_all(commit_position=third.commit_position, limit=2))
    assert recorded[0].id == third.id
    assert recorded[1].commit_position > third.commit_position


def test_read_all_backwards_from_end_returns_newest_first(client, mixed):
    _, streams, types, _ = mixed
    recorded = list(client.read_all(backwards=True, limit=3))
    assert [(e.stream_name, e.type) for e in recorded] == [
        (streams[2], types[2]),
        (streams[2], types[1]),
        (streams[2], types[0]),
    ]


def test_read_all_backwards_from_position_excludes_that_position(client, mixed):
    _, streams, types, _ = mixed
    anchor = client.get_stream(streams[1])[0]
    recorded = list(client.read_all(commit_position=anchor.commit_position, backwards=True, limit=3))
    assert recorded[0].commit_position < anchor.commit_position
    assert (recorded[0].stream_name, recorded[0].type) == (streams[0], types[2])
    assert [e.commit_position for e in recorded] == sorted(
        (e.commit_position for e in recorded), reverse=True
    )


def test_commit_position_is_that_of_the_last_appended_event(client):
    stream = new_stream()
    position = append(client, stream, ["X", "Y"])
    assert client.get_commit_position() == position


def test_filter_include_event_types(client, mixed):
    _, streams, types, before = mixed
    recorded = list(client.read_all(commit_position=before, filter_include=(types[0], types[2])))
    assert [(e.stream_name, e.type) for e in recorded] == [
        (s, t) for s in streams for t in (types[0], types[2])
    ]


def test_filter_exclude_event_types(client, mixed):
    _, streams, types, before = mixed
    recorded = list(client.read_all(commit_position=before, filter_exclude=(types[1],)))
    assert ours(recorded, streams) == [(s, t) for s in streams for t in (types[0], types[2])]
    assert not [e for e in recorded if e.type == types[1]]


def test_filter_exclude_with_defaults_still_excludes_system_events(client, mixed):
    _, streams, types, before = mixed
    recorded = list(
        client.read_all(commit_position=before, filter_exclude=(r"\$.+", types[1]))
    )
    assert not [e for e in recorded if e.type.startswith("$") or e.type == types[1]]
    assert len(ours(recorded, streams)) == 6


def test_filter_include_regex_matches_whole_type(client, mixed):
    _, streams, types, before = mixed
    # `Alpha.*` must not match "Beta…" — the client anchors each alternative.
    stem = types[0][: len("Alpha") + 4]
    recorded = list(client.read_all(commit_position=before, filter_include=(stem + ".*",)))
    assert [(e.stream_name, e.type) for e in recorded] == [(s, types[0]) for s in streams]


def test_filter_include_regex_with_look_ahead(client, mixed):
    _, streams, types, before = mixed
    # Look-ahead: types ending with one of ours, but not the Beta one.
    ids = "|".join(t[-12:] for t in types)
    pattern = rf"(?!Beta).*({ids})"
    recorded = list(client.read_all(commit_position=before, filter_include=(pattern,)))
    assert [(e.stream_name, e.type) for e in recorded] == [
        (s, t) for s in streams for t in (types[0], types[2])
    ]


def test_filter_exclude_regex_with_negative_look_ahead(client, mixed):
    _, streams, types, before = mixed
    # Excludes every type except Gamma's (a look-ahead inside the exclusion).
    pattern = rf"(?!{types[2]}$).*"
    recorded = list(client.read_all(commit_position=before, filter_exclude=(pattern,)))
    assert [(e.stream_name, e.type) for e in recorded] == [(s, types[2]) for s in streams]


def test_filter_event_type_prefix(client, mixed):
    _, streams, types, before = mixed
    recorded = list(
        client.read_all(commit_position=before, filter_include=(types[1],), filter_by_prefix=True)
    )
    assert [(e.stream_name, e.type) for e in recorded] == [(s, types[1]) for s in streams]


def test_filter_include_stream_names(client, mixed):
    _, streams, types, before = mixed
    recorded = list(
        client.read_all(
            commit_position=before, filter_include=(streams[1],), filter_by_stream_name=True
        )
    )
    assert [(e.stream_name, e.type) for e in recorded] == [(streams[1], t) for t in types]


def test_filter_exclude_stream_names(client, mixed):
    category, streams, types, before = mixed
    recorded = list(
        client.read_all(
            commit_position=before,
            filter_exclude=(r"\$.+", streams[0]),
            filter_by_stream_name=True,
        )
    )
    assert ours(recorded, streams) == [(s, t) for s in streams[1:] for t in types]


def test_filter_stream_name_regex_by_category(client, mixed):
    category, streams, types, before = mixed
    recorded = list(
        client.read_all(
            commit_position=before, filter_include=(category + "-.*",), filter_by_stream_name=True
        )
    )
    assert [(e.stream_name, e.type) for e in recorded] == [(s, t) for s in streams for t in types]


def test_filter_stream_name_prefix(client, mixed):
    category, streams, types, before = mixed
    recorded = list(
        client.read_all(
            commit_position=before,
            filter_include=(category + "-",),
            filter_by_stream_name=True,
            filter_by_prefix=True,
        )
    )
    assert [(e.stream_name, e.type) for e in recorded] == [(s, t) for s in streams for t in types]


def test_filtered_read_applies_limit_after_filtering(client, mixed):
    _, streams, types, before = mixed
    recorded = list(client.read_all(commit_position=before, filter_include=(types[2],), limit=2))
    assert [(e.stream_name, e.type) for e in recorded] == [(streams[0], types[2]), (streams[1], types[2])]


def test_filtered_read_backwards(client, mixed):
    _, streams, types, _ = mixed
    recorded = list(client.read_all(backwards=True, filter_include=(types[0],), limit=3))
    assert [(e.stream_name, e.type) for e in recorded] == [(s, types[0]) for s in reversed(streams)]


# ---- positions where no event is (KurrentDB: InvalidPosition) ------------------------


def test_read_all_from_a_position_past_the_last_event_raises_invalid_commit_position(client):
    """As with KurrentDB, reading $all from a commit position at which no event is raises
    InvalidCommitPositionError (the client's default filter makes it a filtered read).
    annal's positions are the integers up to the last event's, so such a position is past
    it; the exact boundary (last + 1) is tested with the Rust client, on a server of its
    own. A library that checks its own bookkeeping (eventsourcing-kurrentdb) relies on it."""
    end = client.get_commit_position(filter_exclude=())
    with pytest.raises(InvalidCommitPositionError):
        list(client.read_all(commit_position=end + 1000))
    with pytest.raises(InvalidCommitPositionError):
        list(client.read_all(commit_position=end + 1000, limit=10))


def test_read_all_from_an_invalid_position_without_a_filter_raises_an_error(client):
    last = append(client, new_stream(), ["A"])
    with pytest.raises(UnknownError, match="InvalidPosition"):
        list(client.read_all(commit_position=last + 1000, filter_exclude=()))


def test_read_all_backwards_from_a_position_past_the_last_event_raises(client):
    last = append(client, new_stream(), ["A"])
    with pytest.raises(InvalidCommitPositionError):
        list(client.read_all(commit_position=last + 1000, backwards=True))


def test_read_all_from_event_positions_and_from_zero_still_works(client):
    stream = new_stream()
    last = append(client, stream, ["A", "B"])
    assert [e.type for e in client.read_all(commit_position=last) if e.stream_name == stream] == [
        "B"
    ]
    assert [e.commit_position for e in client.read_all(commit_position=last, limit=1)] == [last]
    assert list(client.read_all(commit_position=0, limit=1)), "0 is the start"
    back = list(client.read_all(commit_position=last, backwards=True, limit=1))
    assert back and back[0].commit_position == last - 1


def test_all_subscription_from_a_position_past_the_last_event_raises(client):
    last = append(client, new_stream(), ["A"])
    with pytest.raises(UnknownError, match="invalid position"):
        with client.subscribe_to_all(commit_position=last + 1000, timeout=10) as sub:
            take(sub, 1)


# ---- issue 16, item 4: two concurrent appends of 1,000 events each --------------------


def test_two_concurrent_appends_of_1000_events_read_back_whole_and_not_interleaved(client):
    """Two threads each append 1,000 events to their own stream in one call, at once;
    reading $all after the previous last position (exclusive, as eventsourcing's
    select_notifications does: from that position, dropping it) with a limit of 2,000
    finds both appends, each contiguous in the global order."""
    before = client.get_commit_position()
    streams = [new_stream("nonint"), new_stream("nonint")]
    barrier = threading.Barrier(2)
    errors = []

    def insert(stream):
        try:
            barrier.wait()
            client.append_to_stream(
                stream,
                events=[json_event("Ticked", {"n": i}) for i in range(1000)],
                current_version=StreamState.NO_STREAM,
            )
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=insert, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    recorded = [
        e for e in client.read_all(commit_position=before, limit=2001) if e.commit_position != before
    ][:2000]
    names = [e.stream_name for e in recorded]
    assert sorted(set(names)) == sorted(streams), "both appends are read"
    assert len(names) == 2000
    assert names[:1000] == [names[0]] * 1000 and names[1000:] == [names[1000]] * 1000, (
        "each append is contiguous"
    )
    positions = [e.commit_position for e in recorded]
    assert positions == sorted(positions)
