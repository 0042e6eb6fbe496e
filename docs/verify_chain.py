#!/usr/bin/env python3
"""Re-verify an annal hash chain without annal, from NDJSON events on stdin.

    annal read --store sqlite:annal.db | python3 docs/verify_chain.py

The recipe is in docs/chain.md. Only the Python standard library is used. When the
export does not start at position 1, pass the stored hash of the event before it:
`--prev HEX`. To check a digest (`annal digest`) too, pass `--expect POSITION:HASH`:
the export must then reach that position, and the event there must have that hash.
Exits 0 and prints "ok: N events" when every event links to its predecessor (and the
digest holds), else prints the first problem and exits 1. No events at all is a problem
too (an export that failed prints none), unless the digest checked is an empty log's
(`--expect 0:` and the zero hash).
"""

import hashlib
import json
import sys

DECODER = json.JSONDecoder()
WS = " \t\r\n"


def raw_fields(line):
    """Maps each top-level key of a JSON object to the exact text of its value."""
    i = 0
    n = len(line)

    def skip(i):
        while i < n and line[i] in WS:
            i += 1
        return i

    i = skip(i)
    if line[i] != "{":
        raise ValueError("not a JSON object")
    i += 1
    out = {}
    while True:
        i = skip(i)
        if line[i] == "}":
            return out
        key, i = DECODER.raw_decode(line, i)
        i = skip(i)
        if line[i] != ":":
            raise ValueError("expected ':'")
        i = skip(i + 1)
        _, end = DECODER.raw_decode(line, i)
        out[key] = line[i:end]
        i = skip(end)
        if line[i] == ",":
            i += 1


def field(value):
    """0x00 for null, else 0x01, the UTF-8 length as u64 big-endian, the UTF-8 bytes."""
    if value is None:
        return b"\x00"
    b = value.encode("utf-8")
    return b"\x01" + len(b).to_bytes(8, "big") + b


def event_hash(prev, raw):
    def text(key):
        return json.loads(raw[key])

    principal = text("principal") if "principal" in raw else None
    sealed = raw.get("sealed")
    h = hashlib.sha256()
    if sealed is not None:
        h.update(b"annal-event-v3")
    else:
        h.update(b"annal-event-v1" if principal is None else b"annal-event-v2")
    h.update(prev)
    h.update(field(str(text("position"))))
    h.update(field(text("event_id")))
    h.update(field(text("event_type")))
    h.update(field(str(text("event_version"))))
    h.update(field(text("aggregate_type")))
    h.update(field(text("aggregate_id")))
    h.update(field(str(text("aggregate_version"))))
    h.update(field(text("recorded_at")))
    h.update(field(text("user_id")))
    h.update(field(text("correlation_id")))
    h.update(field(text("causation_id")))
    h.update(field(raw["data"]))
    h.update(field(raw["metadata"]))
    if sealed is not None:
        # Personal data: the stored ciphertext is hashed, never the decrypted `personal`.
        h.update(field(principal))
        h.update(field(sealed))
    elif principal is not None:
        h.update(field(principal))
    return h.digest()


def main():
    prev = bytes(32)
    given_prev = False
    expect = None
    args = sys.argv[1:]
    while args:
        if len(args) >= 2 and args[0] == "--prev":
            prev = bytes.fromhex(args[1])
            given_prev = True
        elif len(args) >= 2 and args[0] == "--expect":
            position, _, digest = args[1].partition(":")
            expect = (int(position), bytes.fromhex(digest))
        else:
            print(f"usage: {sys.argv[0]} [--prev HEX] [--expect POSITION:HASH] < events.ndjson")
            return 2
        args = args[2:]
    seen = {0: bytes(32)}
    checked = 0
    expected_position = None
    for line in sys.stdin:
        if not line.strip():
            continue
        raw = raw_fields(line)
        position = json.loads(raw["position"])
        if expected_position is not None and position != expected_position:
            print(f"bad: position {expected_position} is missing (next is {position})")
            return 1
        got = event_hash(prev, raw)
        stored = bytes.fromhex(json.loads(raw["hash"]))
        if got != stored:
            hint = ""
            if checked == 0 and position > 1 and not given_prev:
                hint = (f" (the export starts at position {position}: pass --prev with the "
                        f"stored hash of position {position - 1})")
            print(f"bad: position {position}: computed {got.hex()}, stored {stored.hex()}{hint}")
            return 1
        prev = stored
        checked += 1
        expected_position = position + 1
        if expect is not None and position == expect[0]:
            seen[position] = stored
    if checked == 0 and (expect is None or expect[0] != 0):
        # An export that failed (no KEK, a wrong store) prints nothing: that is no "ok".
        print("bad: no events on stdin: nothing was verified (did the export fail?)")
        return 1
    if expect is not None:
        position, digest = expect
        last = (expected_position or 1) - 1
        if position not in seen:
            print(f"bad: the log ends at position {last}, before the digest's position "
                  f"{position}: its tail was cut off")
            return 1
        if seen[position] != digest:
            print(f"bad: position {position} has hash {seen[position].hex()}, the digest "
                  f"says {digest.hex()}: the history up to it was rewritten")
            return 1
    print(f"ok: {checked} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
