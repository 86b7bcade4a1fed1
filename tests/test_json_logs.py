"""GWM_LOG_FORMAT=json: `gwm serve` writes one JSON object a line, each request's records carrying its
request id, trace id, tenant and user; nothing it writes holds a password, a token or a query's values."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from server.logging_setup import REQUEST_LOG, JsonFormatter, RequestLog, configure_logging, redact_message
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_KEYS, TenantRef
from tests.support.http import make_login_user
from tests.support.served import closed_port

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
TRACE = "0af7651916cd43dd8448eb211c80319c"


async def _serve(database: Database, stderr: Path) -> tuple[asyncio.subprocess.Process, str]:
    port = closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GWM_", "DATABASE_URL", "OTEL_"))}
    env.update(
        DATABASE_URL=database.owner_url, GWM_APP_DATABASE_URL=database.app_url, GWM_ENV="development",
        GWM_SECRET_KEYS="k1:" + "A" * 43 + "=", GWM_AUDIT_KEYS=TEST_AUDIT_KEYS, GWM_LOG_LEVEL="info",
        GWM_LOG_FORMAT="json", GWM_TRUSTED_PROXIES="127.0.0.1",
    )
    with stderr.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "serve", "--no-migrate", "--port", str(port),
            env=env, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=err,
        )
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(900):
            if proc.returncode is not None:
                pytest.fail(f"gwm serve exited with {proc.returncode}: {stderr.read_text()[-2000:]}")
            try:
                await client.get(f"{base}/healthz", timeout=1)
                return proc, base
            except httpx.TransportError:
                await asyncio.sleep(0.2)
    proc.kill()
    pytest.fail("gwm serve did not start")


async def test_gwm_serve_logs_json_with_the_request_ids_and_no_secret(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef, tmp_path: Path
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Capture Manager"])
    marker = f"variable-value-{uuid.uuid4().hex}"
    stderr = tmp_path / "stderr.log"
    proc, base = await _serve(database, stderr)
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            wrong = {**user.credentials(), "password": f"wrong {marker} password"}
            assert (await client.post("/auth/login", json=wrong)).status_code == 401
            login = await client.post("/auth/login", json=user.credentials())
            assert login.status_code == 200
            token = login.json()["token"]
            client.cookies.clear()
            traced = await client.post(
                "/graphql", json={"query": "{ viewer { user { id } } }"},
                headers={"authorization": f"Bearer {token}", "traceparent": f"00-{TRACE}-b7ad6b7169203331-01"},
            )
            assert traced.status_code == 200, traced.text
            # A GET's query string holds the document and its variables: never logged.
            got = await client.get(
                "/graphql", params={"query": "query($q: String) { viewer { user { id } } }",
                                    "variables": json.dumps({"q": marker})},
                headers={"authorization": f"Bearer {token}"},
            )
            assert got.status_code == 200, got.text
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)

    records: list[dict[str, Any]] = []
    for line in stderr.read_text().splitlines():
        if line.strip():
            records.append(json.loads(line))  # every line is one JSON object
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    requests = {r["request_id"]: r for r in records if r["message"] == "request" and r["logger"] == "gwm.access"}
    graphql = requests[traced.headers["x-request-id"]]
    assert graphql["trace_id"] == TRACE
    assert graphql["tenant_id"] == str(fresh_tenant.id) and graphql["user_id"] == str(user.id)
    assert (graphql["method"], graphql["route"], graphql["status"]) == ("POST", "/graphql", 200)
    assert graphql["duration_ms"] >= 0
    assert requests[got.headers["x-request-id"]]["user_id"] == str(user.id)
    assert "trace_id" not in requests[got.headers["x-request-id"]]  # none given, telemetry off
    sign_in = requests[login.headers["x-request-id"]]
    assert sign_in["route"] == "/auth/login" and "user_id" not in sign_in  # a public path: no caller yet
    text = stderr.read_text()
    for secret in (marker, user.password, token):
        assert secret not in text


def test_json_formatter_and_redaction(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    uvicorn_loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    uvicorn_saved = [(list(lg.handlers), lg.propagate, lg.disabled) for lg in uvicorn_loggers]
    try:
        configure_logging("info", "json", force=True)  # pytest has configured the root logger
        token = REQUEST_LOG.set(RequestLog("req-12345678", trace_id=TRACE))
        try:
            logging.getLogger("gwm.test").warning(
                "retrying with Authorization: Bearer abc.def.ghi and password=hunter22"
            )
        finally:
            REQUEST_LOG.reset(token)
        logging.getLogger("gwm.test").warning("outside any request")
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_gwm", False):
                root.removeHandler(handler)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for lg, (handlers, propagate, disabled) in zip(uvicorn_loggers, uvicorn_saved, strict=True):
            lg.handlers[:], lg.propagate, lg.disabled = handlers, propagate, disabled
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    inside, outside = lines[-2], lines[-1]
    assert inside["request_id"] == "req-12345678" and inside["trace_id"] == TRACE
    assert "abc.def.ghi" not in inside["message"] and "hunter22" not in inside["message"]
    assert "request_id" not in outside
    assert redact_message("token=s3cr3t, fine") == "token=[redacted], fine"
    assert redact_message("nothing here") == "nothing here"
    formatted = JsonFormatter().format(logging.makeLogRecord({"msg": "x %s", "args": ("y",), "levelname": "INFO"}))
    assert json.loads(formatted)["message"] == "x y"
