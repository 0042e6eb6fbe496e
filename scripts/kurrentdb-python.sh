#!/usr/bin/env bash
# annal's KurrentDB-compatible gRPC endpoint, driven by the official Python client
# (kurrentdbclient, from PyPI) through tests/kurrentdb-python. The suite starts its own
# `annal serve` on a fresh store and a free port on 127.0.0.1, and stops it by PID.
# Usage: scripts/kurrentdb-python.sh [pytest args…]
#   ANNAL_BIN=path/to/annal to test a given binary (default: build target/release/annal).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${ANNAL_BIN:-}" ]; then
  cargo build --quiet --release -p annal-cli
  export ANNAL_BIN="$PWD/target/release/annal"
fi
venv="$PWD/target/kurrentdb-venv"
req="tests/kurrentdb-python/requirements.txt"
# Reinstall when the requirements change (their hash is kept in the venv).
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/pytest" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$venv/.requirements.sha256"
fi
cd tests/kurrentdb-python
exec "$venv/bin/pytest" -v "$@"
