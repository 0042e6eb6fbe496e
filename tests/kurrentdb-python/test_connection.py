"""Connecting: the URI schemes the client accepts for one insecure node, the calls it
makes beside the streams service, and the node Gossip reports: the host the client used,
or `--advertise`; `--listen localhost:…` listens on both loopback addresses."""

from __future__ import annotations

import socket
import urllib.request

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


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_gossip_reports_the_host_the_client_connected_with(annal, host):
    with KurrentDBClient(uri=f"kurrentdb://{host}:{annal.port}?tls=false") as c:
        members = c.read_gossip()
    assert [(m.address, m.port) for m in members] == [(host, annal.port)]


def test_gossip_reports_the_advertised_host_whatever_the_client_used(start_annal):
    with (
        start_annal(extra=("--advertise", "127.0.0.1")) as server,
        KurrentDBClient(uri=f"kurrentdb://localhost:{server.port}?tls=false") as c,
    ):
        members = c.read_gossip()
    assert [(m.address, m.port) for m in members] == [("127.0.0.1", server.port)]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_a_server_listening_on_localhost_serves_clients_on_ipv6_loopback(start_annal):
    with start_annal(host="localhost") as server:
        with urllib.request.urlopen(f"http://[::1]:{server.port}/health/ready", timeout=5) as r:
            assert r.status == 200
        with KurrentDBClient(uri=f"kurrentdb+discover://localhost:{server.port}?tls=false") as c:
            stream = new_stream()
            c.append_to_stream(stream, events=events(1), current_version=StreamState.NO_STREAM)
            assert [(m.address, m.port) for m in c.read_gossip()] == [("localhost", server.port)]
        with KurrentDBClient(uri=f"kurrentdb://[::1]:{server.port}?tls=false") as c:
            assert c.get_current_version(stream) == 0
