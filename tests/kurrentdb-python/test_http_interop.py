"""One store, two protocols: what gRPC writes, annal's HTTP API reads, and the other way
round (stream = aggregate_id, category = aggregate_type, revision = aggregate_version − 1,
`$correlationId`/`$causationId` = correlation_id/causation_id, and the event id: annal's
event_id is derived from the stream and the client's id, which the metadata names first
as `$eventId`)."""

from __future__ import annotations

import json
import uuid

from kurrentdbclient import NewEvent, StreamState

from testkit import json_event, new_stream, stored_event_id, unique


def test_event_appended_over_grpc_is_readable_over_http(client, http):
    stream = new_stream("order")
    correlation, causation = str(uuid.uuid4()), str(uuid.uuid4())
    first = json_event("OrderPlaced", {"total": 10, "lines": ["a"]})
    second = json_event(
        "OrderPaid",
        {"amount": 10},
        {"$correlationId": correlation, "$causationId": causation, "source": "pytest"},
    )
    client.append_to_stream(stream, events=[first, second], current_version=StreamState.NO_STREAM)

    status, body = http.get(f"/v1/streams/{stream}")
    assert status == 200, body
    got = body["events"]
    assert [e["event_id"] for e in got] == [
        stored_event_id(stream, first.id),
        stored_event_id(stream, second.id),
    ]
    assert [e["metadata"]["$eventId"] for e in got] == [str(first.id), str(second.id)]
    assert got[1]["metadata"] == {
        "$eventId": str(second.id),
        "$correlationId": correlation,
        "$causationId": causation,
        "source": "pytest",
    }
    assert [e["event_type"] for e in got] == ["OrderPlaced", "OrderPaid"]
    assert [e["aggregate_version"] for e in got] == [1, 2]
    assert {e["aggregate_id"] for e in got} == {stream}
    assert {e["aggregate_type"] for e in got} == {"order"}
    assert got[0]["data"] == {"total": 10, "lines": ["a"]}
    assert got[1]["data"] == {"amount": 10}
    assert got[1]["correlation_id"] == correlation
    assert got[1]["causation_id"] == causation


def test_grpc_positions_match_http_order(client, http):
    stream = new_stream("order")
    client.append_to_stream(
        stream, events=[json_event("A"), json_event("B"), json_event("C")],
        current_version=StreamState.NO_STREAM,
    )
    _, body = http.get(f"/v1/streams/{stream}")
    http_positions = [e["position"] for e in body["events"]]
    grpc_positions = [e.commit_position for e in client.get_stream(stream)]
    assert http_positions == sorted(http_positions)
    assert grpc_positions == sorted(grpc_positions)


def test_single_event_appended_over_grpc_is_readable_over_http(client, http):
    stream = new_stream("invoice")
    event = json_event("InvoiceIssued", {"n": 1})
    client.append_event(stream, event=event, current_version=StreamState.NO_STREAM)
    status, body = http.get(f"/v1/streams/{stream}")
    assert status == 200, body
    (got,) = body["events"]
    assert got["event_id"] == stored_event_id(stream, event.id)
    assert got["metadata"] == {"$eventId": str(event.id)}
    assert got["aggregate_type"] == "invoice"
    assert got["aggregate_version"] == 1


def test_stream_without_category_separator_uses_its_whole_name_as_type(client, http):
    stream = unique("plain")
    client.append_to_stream(stream, events=[json_event("X")], current_version=StreamState.NO_STREAM)
    _, body = http.get(f"/v1/streams/{stream}")
    assert body["events"][0]["aggregate_type"] == stream


def test_event_appended_over_http_is_readable_over_grpc(client, http):
    stream = new_stream("order")
    status, body = http.post(
        f"/v1/streams/{stream}",
        {
            "aggregate_type": "order",
            "expected_version": "no_stream",
            "correlation_id": "corr-1",
            "events": [
                {"event_type": "OrderPlaced", "data": {"total": 3}},
                {"event_type": "OrderShipped", "data": {"carrier": "x"}, "metadata": {"k": "v"}},
            ],
        },
    )
    assert status == 201, body
    http_events = body["events"]

    recorded = client.get_stream(stream)
    assert [e.stream_position for e in recorded] == [
        e["aggregate_version"] - 1 for e in http_events
    ]
    assert [str(e.id) for e in recorded] == [e["event_id"] for e in http_events]
    assert [e.type for e in recorded] == ["OrderPlaced", "OrderShipped"]
    assert json.loads(recorded[0].data) == {"total": 3}
    assert json.loads(recorded[1].data) == {"carrier": "x"}
    assert recorded[0].content_type == "application/json"
    assert recorded[0].recorded_at is not None


def test_grpc_append_continues_a_stream_started_over_http(client, http):
    stream = new_stream("order")
    status, _ = http.post(
        f"/v1/streams/{stream}",
        {"aggregate_type": "order", "expected_version": "any",
         "events": [{"event_type": "A", "data": {}}, {"event_type": "B", "data": {}}]},
    )
    assert status == 201
    client.append_to_stream(stream, events=[json_event("C")], current_version=1)
    status, body = http.get(f"/v1/streams/{stream}")
    assert [e["aggregate_version"] for e in body["events"]] == [1, 2, 3]
    assert [e["event_type"] for e in body["events"]] == ["A", "B", "C"]


def test_http_append_after_grpc_append_checks_the_same_version(client, http):
    stream = new_stream("order")
    client.append_to_stream(
        stream, events=[json_event("A"), json_event("B")], current_version=StreamState.NO_STREAM
    )
    status, body = http.post(
        f"/v1/streams/{stream}",
        {"aggregate_type": "order", "expected_version": 1,
         "events": [{"event_type": "C", "data": {}}]},
    )
    assert status == 409, body
    status, body = http.post(
        f"/v1/streams/{stream}",
        {"aggregate_type": "order", "expected_version": 2,
         "events": [{"event_type": "C", "data": {}}]},
    )
    assert status == 201, body
    assert client.get_current_version(stream) == 2


def test_event_appended_over_http_is_delivered_to_a_grpc_subscription(client, http):
    stream = new_stream("order")
    type_ = unique("Live")
    with client.subscribe_to_all(from_end=True, filter_include=(type_,), timeout=15) as sub:
        status, _ = http.post(
            f"/v1/streams/{stream}",
            {"aggregate_type": "order", "expected_version": "any",
             "events": [{"event_type": type_, "data": {"ok": True}}]},
        )
        assert status == 201
        got = next(iter(sub))
    assert got.stream_name == stream and got.type == type_
    assert json.loads(got.data) == {"ok": True}


def test_binary_event_over_grpc_is_listed_over_http(client, http):
    stream = new_stream("blob")
    event = NewEvent(type="Blob", data=b"\x00\x01\xfe\xff", content_type="application/octet-stream")
    client.append_to_stream(stream, events=[event], current_version=StreamState.NO_STREAM)
    status, body = http.get(f"/v1/streams/{stream}")
    assert status == 200, body
    (got,) = body["events"]
    assert got["event_id"] == stored_event_id(stream, event.id)
    assert got["metadata"]["$eventId"] == str(event.id)
    assert got["event_type"] == "Blob"
    # And over gRPC it is still the exact bytes.
    assert client.get_stream(stream)[0].data == b"\x00\x01\xfe\xff"


def test_the_same_ids_in_two_streams_are_two_events_over_http_each_naming_the_clients_id(
    client, http
):
    first, second = new_stream("order"), new_stream("order")
    event = json_event("OrderPlaced", {"n": 1})
    for stream in (first, second):
        client.append_to_stream(stream, events=[event], current_version=StreamState.NO_STREAM)
    stored = []
    for stream in (first, second):
        status, body = http.get(f"/v1/streams/{stream}")
        assert status == 200, body
        (got,) = body["events"]
        assert got["event_id"] == stored_event_id(stream, event.id)
        assert got["metadata"] == {"$eventId": str(event.id)}
        stored.append(got["event_id"])
        # And over gRPC, the client's own id.
        assert [e.id for e in client.get_stream(stream)] == [event.id]
    assert stored[0] != stored[1], "two events in annal's log"
