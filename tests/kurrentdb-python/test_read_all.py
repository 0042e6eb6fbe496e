"""$all reads: directions, positions, and server-side filters on event type and stream
name (include, exclude, prefix, regex with look-ahead)."""

from __future__ import annotations

import pytest
from kurrentdbclient import StreamState

from testkit import json_event, new_stream, unique


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
