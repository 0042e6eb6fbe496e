"""Stream reads: forwards and backwards, from start, end and a revision, with limits."""

from __future__ import annotations

import json

import pytest
from kurrentdbclient import StreamState
from kurrentdbclient.exceptions import NotFoundError

from testkit import json_event, new_stream


@pytest.fixture
def stream_of_five(client):
    stream = new_stream()
    evs = [json_event("Step", {"n": i}) for i in range(5)]
    client.append_to_stream(stream, events=evs, current_version=StreamState.NO_STREAM)
    return stream, evs


def ns(recorded):
    return [json.loads(e.data)["n"] for e in recorded]


def test_read_forwards_from_start_returns_every_event_in_order(client, stream_of_five):
    stream, evs = stream_of_five
    recorded = client.get_stream(stream)
    assert [e.id for e in recorded] == [e.id for e in evs]
    assert [e.stream_position for e in recorded] == [0, 1, 2, 3, 4]
    assert ns(recorded) == [0, 1, 2, 3, 4]


def test_read_forwards_from_revision_includes_that_revision(client, stream_of_five):
    stream, _ = stream_of_five
    assert [e.stream_position for e in client.get_stream(stream, stream_position=2)] == [2, 3, 4]


def test_read_forwards_with_limit(client, stream_of_five):
    stream, _ = stream_of_five
    assert [e.stream_position for e in client.get_stream(stream, limit=2)] == [0, 1]
    assert [e.stream_position for e in client.get_stream(stream, stream_position=3, limit=1)] == [3]


def test_read_forwards_from_past_the_end_returns_nothing(client, stream_of_five):
    stream, _ = stream_of_five
    assert client.get_stream(stream, stream_position=5) == ()
    assert client.get_stream(stream, stream_position=1000) == ()


def test_read_backwards_from_end_returns_events_newest_first(client, stream_of_five):
    stream, _ = stream_of_five
    recorded = client.get_stream(stream, backwards=True)
    assert [e.stream_position for e in recorded] == [4, 3, 2, 1, 0]


def test_read_backwards_from_revision_includes_that_revision(client, stream_of_five):
    stream, _ = stream_of_five
    recorded = client.get_stream(stream, stream_position=2, backwards=True)
    assert [e.stream_position for e in recorded] == [2, 1, 0]


def test_read_backwards_with_limit(client, stream_of_five):
    stream, _ = stream_of_five
    assert [e.stream_position for e in client.get_stream(stream, backwards=True, limit=2)] == [4, 3]


def test_read_backwards_and_forwards_agree_on_positions(client, stream_of_five):
    stream, _ = stream_of_five
    forwards = client.get_stream(stream)
    backwards = client.get_stream(stream, backwards=True)
    assert [(e.id, e.commit_position) for e in forwards] == [
        (e.id, e.commit_position) for e in reversed(backwards)
    ]


def test_read_response_iterates_lazily(client, stream_of_five):
    stream, _ = stream_of_five
    with client.read_stream(stream) as response:
        first = next(response)
        assert first.stream_position == 0
        rest = list(response)
    assert [e.stream_position for e in rest] == [1, 2, 3, 4]


def test_read_of_missing_stream_raises_not_found(client):
    with pytest.raises(NotFoundError):
        client.get_stream(new_stream())
    with pytest.raises(NotFoundError):
        list(client.read_stream(new_stream(), backwards=True))


def test_current_version_of_missing_stream_is_no_stream(client):
    assert client.get_current_version(new_stream()) == StreamState.NO_STREAM


def test_current_version_is_revision_of_last_event(client, stream_of_five):
    stream, _ = stream_of_five
    assert client.get_current_version(stream) == 4


def test_stream_names_are_exact_not_prefixes(client):
    stream = new_stream()
    longer = stream + "-more"
    client.append_to_stream(stream, events=[json_event("A")], current_version=StreamState.NO_STREAM)
    client.append_to_stream(longer, events=[json_event("B")], current_version=StreamState.NO_STREAM)
    assert [e.type for e in client.get_stream(stream)] == ["A"]
    assert [e.type for e in client.get_stream(longer)] == ["B"]
