"""Persistent subscriptions (server-side consumer groups): create, read with acks and
nacks, info, list, replay of parked events, $all groups with filters, delete."""

from __future__ import annotations

import time
import uuid

import pytest
from kurrentdbclient import StreamState
from kurrentdbclient.exceptions import AlreadyExistsError, InternalError, NotFoundError

from testkit import events, json_event, new_stream, take, unique


def group() -> str:
    return f"group-{uuid.uuid4().hex}"


def wait_for(check, what: str, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_stream_group_delivers_events_in_order_and_acks_move_its_checkpoint(client):
    stream, g = new_stream("order"), group()
    client.append_to_stream(stream, events=events(4), current_version=StreamState.NO_STREAM)
    client.create_subscription_to_stream(
        g, stream, checkpoint_after=0.1, min_checkpoint_count=1
    )
    sub = client.read_subscription_to_stream(g, stream)
    try:
        got = take(sub, 4)
        assert [e.stream_position for e in got] == [0, 1, 2, 3]
        for e in got:
            sub.ack(e)

        def checkpointed():
            info = client.get_subscription_info(g, stream)
            return info.last_checkpointed_event_position == "3"

        wait_for(checkpointed, "the checkpoint at revision 3")
    finally:
        sub.stop()


def test_creating_a_group_twice_is_already_exists_and_it_is_listed_once(client):
    stream, g = new_stream("order"), group()
    client.create_subscription_to_stream(g, stream)
    with pytest.raises(AlreadyExistsError):
        client.create_subscription_to_stream(g, stream)
    mine = [s for s in client.list_subscriptions() if s.group_name == g]
    assert len(mine) == 1
    assert mine[0].event_source == stream
    assert [s.group_name for s in client.list_subscriptions_to_stream(stream)] == [g]


def test_a_parked_event_is_delivered_again_after_replay(client):
    stream, g = new_stream("order"), group()
    client.append_to_stream(stream, events=events(2), current_version=StreamState.NO_STREAM)
    client.create_subscription_to_stream(g, stream)
    sub = client.read_subscription_to_stream(g, stream)
    try:
        first, second = take(sub, 2)
        sub.nack(first.id, "park")
        sub.ack(second)
        wait_for(
            lambda: client.get_subscription_info(g, stream).parked_message_count == 1,
            "one parked event",
        )
        client.replay_parked_events(g, stream)
        (again,) = take(sub, 1)
        assert again.id == first.id
        sub.ack(again)
    finally:
        sub.stop()


def test_events_sharing_ids_with_another_stream_are_acked_and_parked_by_the_ids_received(client):
    other, stream, g = new_stream("order"), new_stream("order"), group()
    evs = events(3)
    for s in (other, stream):
        client.append_to_stream(s, events=evs, current_version=StreamState.NO_STREAM)
    client.create_subscription_to_stream(g, stream, checkpoint_after=0.1, min_checkpoint_count=1)
    sub = client.read_subscription_to_stream(g, stream)
    try:
        got = take(sub, 3)
        assert [e.id for e in got] == [e.id for e in evs]
        assert {e.stream_name for e in got} == {stream}
        sub.nack(got[0].id, "park")
        sub.ack(got[1])
        sub.ack(got[2])

        def settled():
            info = client.get_subscription_info(g, stream)
            return (
                info.last_checkpointed_event_position == "2"
                and info.parked_message_count == 1
                and info.total_in_flight_messages == 0
            )

        wait_for(settled, "the parked event and two acks settled")
        client.replay_parked_events(g, stream)
        (again,) = take(sub, 1)
        assert (again.id, again.stream_name) == (got[0].id, stream)
        sub.ack(again)
        wait_for(
            lambda: client.get_subscription_info(g, stream).total_in_flight_messages == 0,
            "the replayed event acked",
        )
    finally:
        sub.stop()


def test_an_all_group_with_an_event_type_filter_gets_only_those_events(client):
    g, wanted = group(), unique("Wanted")
    stream = new_stream("mixed")
    client.append_to_stream(
        stream,
        events=[json_event(wanted), json_event("Other"), json_event(wanted)],
        current_version=StreamState.NO_STREAM,
    )
    client.create_subscription_to_all(g, filter_include=[wanted], from_end=False)
    sub = client.read_subscription_to_all(g)
    try:
        got = take(sub, 2)
        assert [e.type for e in got] == [wanted, wanted]
        assert [e.stream_position for e in got] == [0, 2]
        for e in got:
            sub.ack(e)
    finally:
        sub.stop()


def test_deleting_a_group_twice_is_not_found_and_a_deleted_group_is_not_listed(client):
    stream, g = new_stream("order"), group()
    client.create_subscription_to_stream(g, stream)
    client.delete_subscription(g, stream)
    with pytest.raises(NotFoundError):
        client.delete_subscription(g, stream)
    with pytest.raises(NotFoundError):
        client.get_subscription_info(g, stream)
    assert all(s.group_name != g for s in client.list_subscriptions())


# ---- settings and starts KurrentDB refuses: INTERNAL, the client's InternalError ------


def test_a_history_buffer_size_not_above_the_read_batch_size_raises_internal_error(client):
    """KurrentDB refuses a read batch (here the client's default, 200) not smaller than
    the history buffer, on Create and on Update; nothing is created or changed."""
    g = group()
    with pytest.raises(InternalError):
        client.create_subscription_to_all(g, history_buffer_size=100)
    assert not [s for s in client.list_subscriptions() if s.group_name == g]
    client.create_subscription_to_all(g)
    with pytest.raises(InternalError):
        client.update_subscription_to_all(g, history_buffer_size=100)
    assert client.get_subscription_info(g).history_buffer_size == 500


def test_an_unknown_consumer_strategy_raises_internal_error(client):
    stream, g = new_stream("order"), group()
    with pytest.raises(InternalError):
        client.create_subscription_to_all(g, consumer_strategy="InvalidStrategy")
    with pytest.raises(InternalError):
        client.create_subscription_to_stream(g, stream, consumer_strategy="InvalidStrategy")
    assert not [s for s in client.list_subscriptions() if s.group_name == g]


def test_an_all_group_starting_past_the_last_event_raises_internal_error(client):
    last = client.append_to_stream(
        new_stream(), events=events(1), current_version=StreamState.NO_STREAM
    )
    g = group()
    with pytest.raises(InternalError):
        client.create_subscription_to_all(g, commit_position=last + 1)
    client.create_subscription_to_all(g, commit_position=last)
    # Creating the group recorded its definition: the last event is now that one.
    end = client.get_commit_position(filter_exclude=())
    with pytest.raises(InternalError):
        client.update_subscription_to_all(g, commit_position=end + 1)
    assert client.get_subscription_info(g).start_from == f"C:{last}/P:{last}"
