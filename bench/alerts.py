#!/usr/bin/env python3
"""Live alerts benchmark: commit-to-delivery latency of `externalDataChanged` for many subscribers.

    .venv/bin/python bench/alerts.py [--subscribers 500] [--rounds 30] [--interval 0.3] [--scale 20]

Seeds `--scale` projects in each of three synthetic tenants (skipped when present), then gives each
tenant users of ten permission sets: five tenant-wide roles (Viewer, Capture Manager, BD Analyst,
Auditor, Proposal Manager) and a Viewer scoped to each of five projects, several users each, each
with a session made directly in the database. One `gwm serve` worker runs on a free loopback port;
`--subscribers` WebSocket connections (graphql-transport-ws) are spread round-robin over those
users, each subscribing to `externalDataChanged { change { rowId impactLevel } }`. Each round
commits one detected change (through the system unit of work, as the sync worker does) on one of
the scoped projects of one tenant, in turn; the latency of a delivery is from the commit's return
to the message's arrival at the subscriber, both seen from this process's monotonic clock. Prints
deliveries received against those expected (tenant and permission set decide), and p50/p95/p99/max.

Uses the embedded PostgreSQL under GWM_DATA_DIR (default .gwm-bench-alerts/, apart from the other
benchmarks' data since it adds users), or DATABASE_URL. Traffic goes
to 127.0.0.1 only and stops by itself. The clients run in this process, so their own CPU is part of
what is measured (a pessimistic figure on a machine with few cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, Bench

TENANT_ROLES = ("Viewer", "Capture Manager", "BD Analyst", "Auditor", "Proposal Manager")
SCOPED_PROJECTS = 5
USERS_PER_SET = 5
QUERY = "subscription { externalDataChanged { change { rowId impactLevel } } }"


@dataclass
class Subscriber:
    tenant: uuid.UUID
    token: str
    project: uuid.UUID | None  # None: a tenant-wide role
    received: dict[str, float] = field(default_factory=dict)


@dataclass
class Tenant:
    id: uuid.UUID
    projects: list[uuid.UUID]
    users: list[tuple[str, uuid.UUID | None]]  # (session token, scoped project or None)


async def _prepare_tenant(owner_url: str, tenant_id: uuid.UUID) -> Tenant:
    """Users of ten permission sets with a session each (made in the database: no sign-in cost)."""
    from sqlalchemy import text

    from auth.tokens import digest
    from models.db import create_engine, set_tenant

    engine = create_engine(owner_url, pool_size=1, max_overflow=0)
    users: list[tuple[str, uuid.UUID | None]] = []
    try:
        async with engine.begin() as conn:
            await set_tenant(conn, tenant_id)
            projects = list((await conn.execute(text(
                "SELECT id FROM opportunity_projects ORDER BY created_at, id LIMIT :n"), {"n": SCOPED_PROJECTS}
            )).scalars())
            sets: list[tuple[str, uuid.UUID | None]] = [(role, None) for role in TENANT_ROLES]
            sets += [("Viewer", project) for project in projects]
            for role, project in sets:
                for _ in range(USERS_PER_SET):
                    email = f"alerts-{uuid.uuid4().hex[:12]}@bench.example.test"
                    user_id = await conn.scalar(text(
                        "INSERT INTO users (tenant_id, email, first_name, last_name) VALUES (:t, :e, 'Alert', 'Reader')"
                        " RETURNING id"), {"t": tenant_id, "e": email})
                    await conn.execute(text(
                        "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by, opportunity_project_id)"
                        " SELECT :t, :u, id, :u, :p FROM roles WHERE tenant_id = :t AND name = :r"),
                        {"t": tenant_id, "u": user_id, "p": project, "r": role})
                    token = secrets.token_urlsafe(32)
                    await conn.execute(text(
                        "INSERT INTO user_sessions (tenant_id, user_id, session_token_hash, mfa_verified)"
                        " VALUES (:t, :u, :h, true)"), {"t": tenant_id, "u": user_id, "h": digest(token)})
                    users.append((token, project))
    finally:
        await engine.dispose()
    return Tenant(tenant_id, projects, users)


async def _subscribe(ws_url: str, sub: Subscriber, ready: asyncio.Event, stop: asyncio.Event) -> None:
    from websockets.asyncio.client import connect

    async with connect(ws_url, subprotocols=["graphql-transport-ws"], open_timeout=120,  # type: ignore[list-item]
                       ping_interval=None, max_queue=None) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {sub.token}"}}))
        ack = json.loads(await ws.recv())
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"not acknowledged: {ack}")
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": QUERY}}))
        ready.set()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            arrived = time.monotonic()
            message = json.loads(raw)
            if message.get("type") == "next":
                change = (message["payload"].get("data") or {}).get("externalDataChanged", {}).get("change")
                if change:
                    sub.received[change["rowId"]] = arrived
            elif message.get("type") == "ping":
                await ws.send(json.dumps({"type": "pong"}))


async def _commit_change(engine: Any, chain: Any, tenant: uuid.UUID, project: uuid.UUID, source: uuid.UUID) -> str:
    from auth.audited import system_unit
    from models import ExternalDataChange

    async with system_unit(engine, chain, tenant, process="bench.alerts") as uow:
        change = ExternalDataChange(
            tenant_id=tenant, opportunity_project_id=project, external_source_id=source,
            changed_fields=["response_deadline"], change_type="amended", impact_level="high",
        )
        uow.add(change)
        await uow.flush()
        change_id = str(change.id)
    return change_id


async def _run(bench: Bench, base: str, tenants: list[Tenant], args: argparse.Namespace) -> None:
    from sqlalchemy import text

    from models.audit_chain import AuditChain
    from models.db import create_engine, set_tenant

    ws_url = base.replace("http://", "ws://") + "/graphql"
    users = [(t.id, token, project) for t in tenants for token, project in t.users]
    subscribers = [Subscriber(*users[i % len(users)]) for i in range(args.subscribers)]
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in subscribers]
    tasks = []
    started = time.monotonic()
    for i, (sub, ready) in enumerate(zip(subscribers, readies, strict=True)):
        tasks.append(asyncio.create_task(_subscribe(ws_url, sub, ready, stop)))
        if i % 25 == 24:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 300)
    print(f"{len(subscribers)} subscribers connected in {time.monotonic() - started:.1f} s", file=sys.stderr)
    await asyncio.sleep(3)  # the last subscriptions reach the bus

    engine = create_engine(bench.app_url, pool_size=2, max_overflow=0)
    chain = AuditChain.from_setting(bench.env["GWM_AUDIT_KEYS"])
    sources: dict[uuid.UUID, uuid.UUID] = {}
    owner = create_engine(bench.owner_url, pool_size=1, max_overflow=0)
    for t in tenants:
        async with owner.connect() as conn:
            await set_tenant(conn, t.id)
            sources[t.id] = (await conn.execute(text(
                "SELECT id FROM external_opportunity_sources ORDER BY created_at, id LIMIT 1"))).scalar_one()
    await owner.dispose()
    committed: dict[str, tuple[float, uuid.UUID, uuid.UUID]] = {}
    try:
        for r in range(args.rounds):
            t = tenants[r % len(tenants)]
            project = t.projects[(r // len(tenants)) % len(t.projects)]
            change_id = await _commit_change(engine, chain, t.id, project, sources[t.id])
            committed[change_id] = (time.monotonic(), t.id, project)
            await asyncio.sleep(args.interval)
        await asyncio.sleep(5)  # the last deliveries
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await engine.dispose()

    latencies: list[float] = []
    expected = missing = unexpected = 0
    for sub in subscribers:
        for change_id, (at, tenant, project) in committed.items():
            should = sub.tenant == tenant and (sub.project is None or sub.project == project)
            got = sub.received.get(change_id)
            if should:
                expected += 1
                if got is None:
                    missing += 1
                else:
                    latencies.append((got - at) * 1000)
            elif got is not None:
                unexpected += 1
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    groups = len(tenants) * (len(TENANT_ROLES) + SCOPED_PROJECTS)
    print(f"alerts: {len(subscribers)} subscribers, {len(tenants)} tenants, {groups} permission sets, "
          f"{args.rounds} commits every {args.interval} s")
    print(f"deliveries: {len(latencies)} of {expected} expected, {missing} missing, {unexpected} unexpected")
    if latencies:
        print(f"commit-to-delivery ms: p50 {pct(0.50):.1f}  p95 {pct(0.95):.1f}  p99 {pct(0.99):.1f}  "
              f"max {latencies[-1]:.1f}  mean {statistics.fmean(latencies):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--scale", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("GWM_WS_MAX_CONNECTIONS_PER_USER", "100")  # several connections per bench user
    # A data directory of its own: the users it adds must not change the other benchmarks' tenants.
    os.environ.setdefault("GWM_DATA_DIR", str(ROOT / ".gwm-bench-alerts"))
    bench = Bench.prepare(scale=args.scale, tenants=3)
    bench.env["GWM_WS_MAX_CONNECTIONS_PER_USER"] = os.environ["GWM_WS_MAX_CONNECTIONS_PER_USER"]
    tenant_ids = [bench.tenant_id(f"scale-42-{i}") for i in range(3)]
    tenants = [asyncio.run(_prepare_tenant(bench.owner_url, t)) for t in tenant_ids]
    with bench.serve() as base:
        asyncio.run(_run(bench, base, tenants, args))


if __name__ == "__main__":
    main()
