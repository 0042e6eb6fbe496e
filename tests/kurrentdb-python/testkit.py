"""Helpers shared by the test modules (HTTP on the standard library, unique names,
bounded iteration of subscriptions)."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

from kurrentdbclient import NewEvent

# A soft-deleted stream's `$tb` (truncate before): every event existing at deletion.
TRUNCATE_ALL = 9223372036854775807


class Http:
    """Minimal JSON-over-HTTP client for annal's HTTP API."""

    def __init__(self, base: str) -> None:
        self.base = base

    def request(self, method: str, path: str, body: object | None = None) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw) if raw else None
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def get(self, path: str) -> tuple[int, object]:
        return self.request("GET", path)

    def post(self, path: str, body: object) -> tuple[int, object]:
        return self.request("POST", path, body)


# The namespace of the UUIDv5 event ids annal stores for events appended over gRPC
# (docs/kurrentdb.md).
EVENT_ID_NAMESPACE = uuid.UUID("bac8c9b5-d741-492f-8481-f8c804a03bb2")


def stored_event_id(stream: str, client_id: uuid.UUID) -> str:
    """The annal event_id of the event a gRPC client appends to `stream` with `client_id`:
    UUIDv5 of the stream name's UTF-8 bytes followed by the id's 16 bytes."""
    name = stream.encode() + client_id.bytes
    # uuid.uuid5 (3.11) takes only a str name; this is its computation on bytes.
    digest = hashlib.sha1(EVENT_ID_NAMESPACE.bytes + name).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def new_stream(category: str = "test") -> str:
    """A stream name no other test uses: `<category>-<uuid hex>`."""
    return f"{category}-{uuid.uuid4().hex}"


def unique(prefix: str) -> str:
    """An event type (or other name) no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def json_event(type_: str, data: dict | None = None, metadata: dict | None = None) -> NewEvent:
    return NewEvent(
        type=type_,
        data=json.dumps(data if data is not None else {}).encode(),
        metadata=json.dumps(metadata).encode() if metadata is not None else b"",
    )


def events(n: int, type_: str = "Happened") -> list[NewEvent]:
    return [json_event(type_, {"n": i}) for i in range(n)]


def take(it: Iterator, n: int) -> list:
    """The next n items of a subscription (which never ends by itself)."""
    out = []
    if n <= 0:
        return out
    for item in it:
        out.append(item)
        if len(out) == n:
            break
    return out


def take_until(it: Iterator, pred) -> list:
    """Items of a subscription up to and including the first one matching pred."""
    out = []
    for item in it:
        out.append(item)
        if pred(item):
            break
    return out
