"""The README's explore steps, followed literally while `gwm serve` runs on the same data dir.

`gwm db upgrade` and `gwm db seed` share the embedded cluster the running server started (it stops
when the last process using it exits), and the server answers with the demo data at once. The test
owns its cluster (its own GWM_DATA_DIR, no keys, no URLs): what is checked is a fresh checkout's
embedded mode, which the session's shared cluster (reached through DATABASE_URL) is not.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
GWM = [sys.executable, "-m", "server.cli"]
# What the README tells a new user to run (`python3 dev.py gwm ARGS` is `gwm ARGS` in .venv).
EXPLORE = "python3 dev.py gwm db upgrade && python3 dev.py gwm db seed"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_readme_still_gives_these_steps() -> None:
    readme = (ROOT / "README.md").read_text()
    assert EXPLORE in readme and "python3 dev.py serve" in readme


@pytest.mark.server
@pytest.mark.timeout(600)
def test_explore_steps_while_the_server_runs(tmp_path: Path) -> None:
    dropped = {"DATABASE_URL", "GWM_APP_DATABASE_URL", "GWM_SECRET_KEYS", "GWM_AUDIT_KEYS", "XDG_RUNTIME_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(GWM_DATA_DIR=str(tmp_path / "gwm"), GWM_LOG_LEVEL="warning")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*GWM, "serve", "--port", str(port)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gwm serve did not answer /healthz"
            time.sleep(0.3)

        for step in EXPLORE.split(" && "):
            args = step.removeprefix("python3 dev.py gwm ").split()
            done = subprocess.run([*GWM, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"
        printed = done.stdout
        assert "demo tenant 'demo'" in printed
        admin = re.search(r"^\s+(\S+@\S+)\s+Tenant Admin\s+(.+)$", printed, re.MULTILINE)
        assert admin is not None, printed
        email, password = admin.groups()

        # The running server serves the seeded data: sign in as the README says, then read.
        assert server.poll() is None
        login = httpx.post(
            f"{base}/auth/login", json={"tenant": "demo", "email": email, "password": password.strip()}, timeout=30
        )
        assert login.status_code == 200, login.text
        token = login.json()["token"]
        read = httpx.post(
            f"{base}/graphql",
            json={"query": "{ opportunityProjects(first: 1) { totalCount } }"},
            headers={"authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert read.json()["data"] == {"opportunityProjects": {"totalCount": 25}}
        assert httpx.get(f"{base}/graphiql", timeout=10).status_code == 200
    finally:
        pgdata = tmp_path / "gwm" / "pgdata"
        pid_file = pgdata / "postmaster.pid"
        # initdb's bootstrap backend writes its pid negated: no postmaster to wait for then.
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else 0
        postmaster = psutil.Process(pid) if pid > 0 else None
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        if server.stdout:
            server.stdout.close()
    # The server was the last process using the cluster: stopping it stopped the cluster.
    if postmaster is not None:
        postmaster.wait(timeout=30)
    assert not pid_file.exists()
