"""Connecting: the URI schemes the client accepts for one insecure node, and the calls it
makes beside the streams service."""

from __future__ import annotations

import pytest
from kurrentdbclient import KurrentDBClient, StreamState

from testkit import events, new_stream


@pytest.mark.parametrize(
    "uri",
    [
        "kurrentdb://127.0.0.1:{port}?tls=false",
        "kdb://127.0.0.1:{port}?Tls=false",
        "esdb://127.0.0.1:{port}?Tls=false",
    ],
)
def test_client_connects_over_h2c_with_each_uri_scheme(annal, uri):
    with KurrentDBClient(uri=uri.format(port=annal.port)) as c:
        stream = new_stream()
        c.append_to_stream(stream, events=events(1), current_version=StreamState.NO_STREAM)
        assert c.get_current_version(stream) == 0


def test_two_clients_see_each_others_writes(annal, client):
    stream = new_stream()
    client.append_to_stream(stream, events=events(2), current_version=StreamState.NO_STREAM)
    with KurrentDBClient(uri=annal.grpc_uri) as other:
        assert other.get_current_version(stream) == 1
