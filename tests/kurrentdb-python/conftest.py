"""Runs one real `annal serve` for the whole session and hands tests a KurrentDB client
(gRPC, h2c) and the HTTP base URL of that same server.

The binary is $ANNAL_BIN, or target/release/annal from the repository root. The server
gets a fresh data folder and a free port on 127.0.0.1, and is stopped by its PID at the end.
Every test still uses its own stream names (uuid), so tests never see each other's streams.
A test that needs a server started otherwise (`--listen localhost:…`, `--advertise`) starts
its own with the `start_annal` fixture.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kurrentdbclient import KurrentDBClient

from testkit import Http

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Annal:
    port: int
    log_path: Path
    log: str = ""

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_uri(self) -> str:
        return f"kurrentdb://127.0.0.1:{self.port}?tls=false"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: get SIGTERM if this test process dies without stopping it (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _annal_bin() -> str:
    path = os.environ.get("ANNAL_BIN") or str(REPO_ROOT / "target" / "release" / "annal")
    if not os.path.isabs(path):
        path = str(REPO_ROOT / path)
    if not os.access(path, os.X_OK):
        pytest.exit(f"annal binary not found or not executable: {path} (set ANNAL_BIN)", 2)
    return path


@contextlib.contextmanager
def serve(host: str = "127.0.0.1", extra: tuple[str, ...] = ()) -> Iterator[Annal]:
    """`annal serve --listen HOST:<free port> EXTRA…` on a fresh data folder, ready; stopped
    by its PID on exit (its log is then in `Annal.log`)."""
    data = tempfile.mkdtemp(prefix="annal-kurrentdb-")
    log_path = Path(data) / "serve.log"
    port = _free_port()
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [_annal_bin(), "serve", "--data", data, "--listen", f"{host}:{port}", *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
    )
    server = Annal(port=port, log_path=log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"annal serve exited with {proc.returncode}:\n{log_path.read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{server.http_url}/health/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"annal serve not ready after 30s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        # Stop exactly the child we started, by its PID.
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()
        server.log = log_path.read_text(errors="replace")
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def annal(request: pytest.FixtureRequest):
    server = None
    try:
        with serve() as server:
            yield server
    finally:
        # Keep the log for the failure summary.
        if server is not None:
            request.config._annal_log = server.log


@pytest.fixture
def start_annal():
    """`start_annal(host, extra)`: a server of its own, `with` it (see `serve`)."""
    return serve


@pytest.fixture
def client(annal: Annal):
    c = KurrentDBClient(uri=annal.grpc_uri)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def http(annal: Annal) -> Http:
    return Http(annal.http_url)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    log = getattr(config, "_annal_log", None)
    if exitstatus != 0 and log:
        lines = log.splitlines()
        terminalreporter.section("annal serve log (last 60 lines)")
        for line in lines[-60:]:
            terminalreporter.write_line(line)
