"""Stream metadata (`$$<stream>`): get and set, versions, and the settings reads obey."""

from __future__ import annotations

import json

import pytest
from kurrentdbclient import StreamState
from kurrentdbclient.exceptions import WrongCurrentVersionError

from testkit import events, new_stream


def test_metadata_of_stream_without_any_is_empty_with_no_stream_version(client):
    assert client.get_stream_metadata(new_stream()) == ({}, StreamState.NO_STREAM)


def test_metadata_set_then_get_round_trips(client):
    stream = new_stream()
    client.append_to_stream(stream, events=events(1), current_version=StreamState.NO_STREAM)
    meta = {"owner": "pytest", "nested": {"a": [1, 2, 3]}, "$acl": {"$r": "$all"}}
    client.set_stream_metadata(stream, metadata=meta, current_version=StreamState.NO_STREAM)
    assert client.get_stream_metadata(stream) == (meta, 0)


def test_metadata_can_be_set_before_the_stream_exists(client):
    stream = new_stream()
    client.set_stream_metadata(stream, metadata={"x": 1})
    assert client.get_stream_metadata(stream) == ({"x": 1}, 0)
    client.append_to_stream(stream, events=events(1), current_version=StreamState.NO_STREAM)
    assert len(client.get_stream(stream)) == 1


def test_metadata_versions_advance_with_each_set(client):
    stream = new_stream()
    client.set_stream_metadata(stream, metadata={"v": 1}, current_version=StreamState.NO_STREAM)
    client.set_stream_metadata(stream, metadata={"v": 2}, current_version=0)
    client.set_stream_metadata(stream, metadata={"v": 3}, current_version=1)
    assert client.get_stream_metadata(stream) == ({"v": 3}, 2)


def test_metadata_set_with_stale_version_raises_wrong_current_version(client):
    stream = new_stream()
    client.set_stream_metadata(stream, metadata={"v": 1}, current_version=StreamState.NO_STREAM)
    client.set_stream_metadata(stream, metadata={"v": 2}, current_version=0)
    with pytest.raises(WrongCurrentVersionError) as e:
        client.set_stream_metadata(stream, metadata={"v": 3}, current_version=0)
    assert e.value.actual_version == 1
    assert client.get_stream_metadata(stream) == ({"v": 2}, 1)


def test_metadata_set_expecting_no_stream_when_set_raises_wrong_current_version(client):
    stream = new_stream()
    client.set_stream_metadata(stream, metadata={"v": 1})
    with pytest.raises(WrongCurrentVersionError):
        client.set_stream_metadata(stream, metadata={"v": 2}, current_version=StreamState.NO_STREAM)


def test_metadata_does_not_add_events_to_the_stream(client):
    stream = new_stream()
    client.append_to_stream(stream, events=events(2), current_version=StreamState.NO_STREAM)
    client.set_stream_metadata(stream, metadata={"x": 1})
    assert client.get_current_version(stream) == 1
    assert [e.stream_position for e in client.get_stream(stream)] == [0, 1]


def test_metadata_is_read_from_the_metadata_stream(client):
    """Only the last metadata event is visible ($$ streams have $maxCount 1, as in
    KurrentDB: the Rust client's get_stream_metadata reads $$s forwards and takes the
    first event); its revisions count every one."""
    stream = new_stream()
    client.set_stream_metadata(stream, metadata={"x": 1})
    client.set_stream_metadata(stream, metadata={"x": 2})
    recorded = client.get_stream("$$" + stream)
    assert [e.type for e in recorded] == ["$metadata"]
    assert [e.stream_position for e in recorded] == [1]
    assert json.loads(recorded[0].data) == {"x": 2}


def test_truncate_before_hides_earlier_revisions(client):
    stream = new_stream()
    client.append_to_stream(stream, events=events(5), current_version=StreamState.NO_STREAM)
    client.set_stream_metadata(stream, metadata={"$tb": 3})
    assert [e.stream_position for e in client.get_stream(stream)] == [3, 4]
    assert [e.stream_position for e in client.get_stream(stream, backwards=True)] == [4, 3]
    assert client.get_current_version(stream) == 4


def test_max_count_keeps_only_the_latest_events_visible(client):
    stream = new_stream()
    client.append_to_stream(stream, events=events(5), current_version=StreamState.NO_STREAM)
    client.set_stream_metadata(stream, metadata={"$maxCount": 2})
    assert [e.stream_position for e in client.get_stream(stream)] == [3, 4]
    client.append_to_stream(stream, events=events(1), current_version=4)
    assert [e.stream_position for e in client.get_stream(stream)] == [4, 5]
