"""Soft delete (`Delete`) and tombstone (`Tombstone`), with the errors the client raises:
wrong current version, stream is deleted, not found."""

from __future__ import annotations

import pytest
from kurrentdbclient import StreamState
from kurrentdbclient.exceptions import (
    KurrentDBClientError,
    NotFoundError,
    StreamIsDeletedError,
    WrongCurrentVersionError,
)

from testkit import TRUNCATE_ALL, events, new_stream


def make(client, n=2):
    stream = new_stream()
    client.append_to_stream(stream, events=events(n), current_version=StreamState.NO_STREAM)
    return stream


def assert_is_deleted(excinfo):
    """A single-event append goes through `Append`, whose error the client does not map
    to StreamIsDeletedError: it raises the FAILED_PRECONDITION error with the server's
    "Event stream '<s>' is deleted." text."""
    assert isinstance(excinfo.value, StreamIsDeletedError) or "is deleted" in str(excinfo.value)


# --- soft delete ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "current_version", [1, StreamState.ANY, StreamState.EXISTS], ids=["revision", "any", "exists"]
)
def test_deleted_stream_reads_as_not_found(client, current_version):
    stream = make(client)
    client.delete_stream(stream, current_version=current_version)
    with pytest.raises(NotFoundError):
        client.get_stream(stream)
    assert client.get_current_version(stream) == StreamState.NO_STREAM


def test_deleted_stream_metadata_truncates_everything(client):
    stream = make(client)
    client.delete_stream(stream, current_version=1)
    metadata, _ = client.get_stream_metadata(stream)
    assert metadata.get("$tb") == TRUNCATE_ALL


def test_delete_with_stale_revision_raises_wrong_current_version(client):
    stream = make(client, 3)
    with pytest.raises(WrongCurrentVersionError) as e:
        client.delete_stream(stream, current_version=0)
    assert e.value.actual_version == 2
    assert e.value.expected_version == 0
    assert len(client.get_stream(stream)) == 3, "nothing was deleted"


def test_delete_expecting_no_stream_of_existing_stream_raises_wrong_current_version(client):
    stream = make(client)
    with pytest.raises(WrongCurrentVersionError) as e:
        client.delete_stream(stream, current_version=StreamState.NO_STREAM)
    assert e.value.expected_version == StreamState.NO_STREAM
    assert e.value.actual_version == 1


def test_delete_of_missing_stream_expecting_revision_raises_not_found(client):
    with pytest.raises(NotFoundError):
        client.delete_stream(new_stream(), current_version=0)


@pytest.mark.parametrize(
    "current_version", [StreamState.ANY, StreamState.NO_STREAM], ids=["any", "no_stream"]
)
def test_delete_of_a_stream_that_never_existed_raises_not_found(client, current_version):
    stream = new_stream()
    with pytest.raises(NotFoundError):
        client.delete_stream(stream, current_version=current_version)
    assert client.get_current_version(stream) == StreamState.NO_STREAM, "nothing was written"


def test_delete_of_missing_stream_expecting_exists_raises_not_found(client):
    with pytest.raises(NotFoundError):
        client.delete_stream(new_stream(), current_version=StreamState.EXISTS)


def test_delete_of_deleted_stream_expecting_exists_raises_stream_is_deleted(client):
    stream = make(client)
    client.delete_stream(stream, current_version=1)
    with pytest.raises(StreamIsDeletedError):
        client.delete_stream(stream, current_version=StreamState.EXISTS)


@pytest.mark.parametrize(
    "current_version", [1, StreamState.NO_STREAM, StreamState.ANY], ids=["last", "no_stream", "any"]
)
def test_writing_to_deleted_stream_continues_revisions_and_shows_only_new_events(
    client, current_version
):
    stream = make(client, 2)
    client.delete_stream(stream, current_version=1)
    new = events(2)
    client.append_to_stream(stream, events=new, current_version=current_version)
    recorded = client.get_stream(stream)
    assert [e.id for e in recorded] == [e.id for e in new]
    assert [e.stream_position for e in recorded] == [2, 3]
    assert client.get_current_version(stream) == 3
    metadata, _ = client.get_stream_metadata(stream)
    assert metadata.get("$tb") == 2


def test_single_event_append_to_deleted_stream_continues_revisions(client):
    stream = make(client, 2)
    client.delete_stream(stream, current_version=1)
    client.append_event(stream, event=events(1)[0], current_version=StreamState.NO_STREAM)
    assert [e.stream_position for e in client.get_stream(stream)] == [2]


def test_batch_append_expecting_exists_to_deleted_stream_raises_stream_is_deleted(client):
    stream = make(client)
    client.delete_stream(stream, current_version=1)
    with pytest.raises(StreamIsDeletedError):
        client.append_to_stream(stream, events=events(1), current_version=StreamState.EXISTS)


def test_deleted_stream_can_be_deleted_again_after_new_events(client):
    stream = make(client, 2)
    client.delete_stream(stream, current_version=1)
    client.append_to_stream(stream, events=events(1), current_version=1)
    client.delete_stream(stream, current_version=2)
    with pytest.raises(NotFoundError):
        client.get_stream(stream)


def test_deleted_events_stay_in_all(client):
    stream = make(client, 2)
    ids = [e.id for e in client.get_stream(stream)]
    before = client.get_stream(stream)[0].commit_position
    client.delete_stream(stream, current_version=1)
    in_all = [e.id for e in client.read_all(commit_position=before, limit=2)]
    # KurrentDB scavenges later; annal keeps the log. Either way they are not gone at once.
    assert in_all == ids


# --- tombstone --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "current_version", [1, StreamState.ANY, StreamState.EXISTS], ids=["revision", "any", "exists"]
)
def test_tombstoned_stream_read_raises_stream_is_deleted(client, current_version):
    stream = make(client)
    client.tombstone_stream(stream, current_version=current_version)
    with pytest.raises(StreamIsDeletedError):
        client.get_stream(stream)


def test_batch_append_to_tombstoned_stream_raises_stream_is_deleted(client):
    stream = make(client)
    client.tombstone_stream(stream, current_version=1)
    for cv in (StreamState.ANY, StreamState.NO_STREAM, StreamState.EXISTS, 1):
        with pytest.raises(StreamIsDeletedError):
            client.append_to_stream(stream, events=events(1), current_version=cv)


def test_single_event_append_to_tombstoned_stream_fails_as_deleted(client):
    stream = make(client)
    client.tombstone_stream(stream, current_version=1)
    with pytest.raises(KurrentDBClientError) as e:
        client.append_event(stream, event=events(1)[0], current_version=StreamState.ANY)
    assert_is_deleted(e)


def test_delete_of_tombstoned_stream_raises_stream_is_deleted(client):
    stream = make(client)
    client.tombstone_stream(stream, current_version=1)
    with pytest.raises(StreamIsDeletedError):
        client.delete_stream(stream, current_version=StreamState.ANY)


def test_tombstone_of_tombstoned_stream_raises_stream_is_deleted(client):
    stream = make(client)
    client.tombstone_stream(stream, current_version=1)
    with pytest.raises(StreamIsDeletedError):
        client.tombstone_stream(stream, current_version=StreamState.ANY)


def test_tombstone_of_soft_deleted_stream_makes_it_deleted_for_good(client):
    stream = make(client)
    client.delete_stream(stream, current_version=1)
    client.tombstone_stream(stream, current_version=StreamState.ANY)
    with pytest.raises(StreamIsDeletedError):
        client.get_stream(stream)


def test_tombstone_with_stale_revision_raises_wrong_current_version(client):
    stream = make(client, 3)
    with pytest.raises(WrongCurrentVersionError) as e:
        client.tombstone_stream(stream, current_version=1)
    assert e.value.actual_version == 2
    assert len(client.get_stream(stream)) == 3


def test_tombstone_expecting_no_stream_of_existing_stream_raises_wrong_current_version(client):
    stream = make(client)
    with pytest.raises(WrongCurrentVersionError) as e:
        client.tombstone_stream(stream, current_version=StreamState.NO_STREAM)
    assert e.value.expected_version == StreamState.NO_STREAM


def test_tombstone_of_missing_stream_expecting_exists_raises_not_found(client):
    with pytest.raises(NotFoundError):
        client.tombstone_stream(new_stream(), current_version=StreamState.EXISTS)


def test_tombstone_of_missing_stream_expecting_revision_raises_not_found(client):
    with pytest.raises(NotFoundError):
        client.tombstone_stream(new_stream(), current_version=0)


@pytest.mark.parametrize(
    "current_version", [StreamState.ANY, StreamState.NO_STREAM], ids=["any", "no_stream"]
)
def test_tombstone_of_missing_stream_succeeds_and_blocks_the_name(client, current_version):
    stream = new_stream()
    client.tombstone_stream(stream, current_version=current_version)
    with pytest.raises(StreamIsDeletedError):
        client.append_to_stream(stream, events=events(1), current_version=StreamState.ANY)
    with pytest.raises(StreamIsDeletedError):
        client.get_stream(stream)


def test_tombstoned_stream_metadata_raises_stream_is_deleted(client):
    stream = make(client)
    client.tombstone_stream(stream, current_version=1)
    with pytest.raises(StreamIsDeletedError):
        client.get_stream_metadata(stream)


def test_metadata_can_be_set_on_a_tombstoned_stream_and_reading_it_still_raises(client, http):
    """As in KurrentDB: the metadata stream of a tombstoned stream takes the append,
    while reading the metadata (or the stream) raises stream is deleted. annal records
    the `$metadata` event, which the global log shows over HTTP."""
    stream = make(client)
    client.tombstone_stream(stream, current_version=1)
    _, head = http.get("/v1/head")
    client.set_stream_metadata(stream, metadata={"$maxCount": 5})
    client.set_stream_metadata(stream, metadata={"$maxCount": 6}, current_version=0)
    with pytest.raises(StreamIsDeletedError):
        client.get_stream_metadata(stream)
    with pytest.raises(StreamIsDeletedError):
        client.get_stream(stream)
    with pytest.raises(StreamIsDeletedError):
        client.append_to_stream(stream, events=events(1), current_version=StreamState.ANY)
    status, body = http.get(f"/v1/streams/{stream}")
    assert status == 410, body
    status, body = http.get(f"/v1/events?after_position={head['position']}&event_type=$metadata")
    assert status == 200, body
    mine = [e for e in body["events"] if e["aggregate_id"] == f"$${stream}"]
    assert [e["data"] for e in mine] == [{"$maxCount": 5}, {"$maxCount": 6}]
    assert [e["aggregate_version"] for e in mine] == [1, 2]
