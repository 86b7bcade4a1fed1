#!/usr/bin/env python3
"""Write benchmark: concurrent audited updates of shared projects through HTTP, then the audit check.

    .venv/bin/python bench/writes.py [--clients 8] [--updates 500] [--projects 4] [--scale 1000]

`--clients` closed-loop clients each make `--updates` successful `opportunityProjectUpdate`s, spread
over the same `--projects` projects of the first synthetic tenant, against one `gwm serve` worker on
127.0.0.1. Each update sends the `updatedAt` the client last saw; a CONFLICT (someone else updated
the project meanwhile) is expected under contention: the client reads the project again and
retries. Any other error fails the run. Afterwards the audit trail must match exactly: one
audit_logs row and one change_history row per committed update (found by this run's marker in the
new description), and `gwm audit verify` must pass for the tenant. Prints mutations/s, latency
percentiles, conflicts and retries. Uses the embedded PostgreSQL under GWM_DATA_DIR (default
.gwm-bench/), or DATABASE_URL. Traffic goes to 127.0.0.1 only and stops by itself.

    .venv/bin/python bench/writes.py --compare [--reps 8 --duration 20 --warmup 3 --concurrency 8]

Compare mode (issue 18): our `opportunityProjectUpdate` and `opportunityProjectCreate` against PostGraphile 5
with the parity trigger (bench/writes/, copied from ../shared/bench/writes/ and extended to INSERT) in one run:
server and database CPU per request, statements (round trips) per mutation and the ratios; every run's audit
rows counted and chains verified. bench/write_compare.py says how.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from strawberry.relay import to_base64

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SUBDOMAIN, Bench

READ = """query ($id: ID!) { node(id: $id) { ... on OpportunityProject { rowId updatedAt } } }"""
UPDATE = """mutation ($input: OpportunityProjectUpdateInput!) {
  opportunityProjectUpdate(input: $input) { opportunityProject { rowId updatedAt } errors { field code message } }
}"""


async def _projects(bench: Bench, tenant_id: uuid.UUID, count: int) -> list[str]:
    from sqlalchemy import text

    from models.db import create_engine, set_tenant

    engine = create_engine(bench.owner_url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await set_tenant(conn, tenant_id)
            rows = await conn.execute(
                text(
                    "SELECT id FROM opportunity_projects WHERE archived_at IS NULL"
                    " ORDER BY created_at DESC, id LIMIT :n"
                ),
                {"n": count},
            )
            return [str(r.id) for r in rows]
    finally:
        await engine.dispose()


async def _clients(
    url: str, token: str, projects: list[str], clients: int, updates: int, marker: str
) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    latencies: list[float] = []
    conflicts = 0
    failures: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:

        async def post(query: str, variables: dict[str, Any]) -> dict[str, Any]:
            response = await http.post(url, json={"query": query, "variables": variables}, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
            body: dict[str, Any] = response.json()
            if body.get("errors"):
                raise RuntimeError(json.dumps(body["errors"])[:500])
            data: dict[str, Any] = body["data"]
            return data

        async def read(project: str) -> str:
            data = await post(READ, {"id": to_base64("OpportunityProject", project)})
            seen: str = data["node"]["updatedAt"]
            return seen

        async def client(number: int) -> None:
            nonlocal conflicts
            seen: dict[str, str] = {}
            for i in range(updates):
                project = projects[(number + i) % len(projects)]
                if project not in seen:
                    seen[project] = await read(project)
                while True:
                    started = time.perf_counter()
                    data = await post(
                        UPDATE,
                        {"input": {"id": project, "updatedAt": seen[project],
                                   "description": f"{marker} client {number} update {i}"}},
                    )
                    latencies.append(time.perf_counter() - started)
                    payload = data["opportunityProjectUpdate"]
                    if not payload["errors"]:
                        seen[project] = payload["opportunityProject"]["updatedAt"]
                        break
                    codes = [e["code"] for e in payload["errors"]]
                    if codes != ["CONFLICT"]:
                        failures.append(json.dumps(payload["errors"]))
                        return
                    conflicts += 1
                    seen[project] = await read(project)

        started = time.monotonic()
        await asyncio.gather(*(client(n) for n in range(clients)))
        wall = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    committed = clients * updates if not failures else None
    return {
        "committed": committed,
        "attempts": len(latencies),
        "conflicts": conflicts,
        "failures": failures,
        "wall_s": wall,
        "mutations_per_s": (clients * updates) / wall,
        "attempts_per_s": len(latencies) / wall,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
    }


async def _audit_counts(owner_url: str, tenant_id: uuid.UUID, marker: str) -> tuple[int, int, int]:
    """(projects whose description carries the marker, audit_logs rows, change_history rows) of this run."""
    from sqlalchemy import text

    from models.db import create_engine, set_tenant

    engine = create_engine(owner_url, pool_size=1, max_overflow=0)
    like = f"{marker} %"
    try:
        async with engine.connect() as conn:
            await set_tenant(conn, tenant_id)
            audits = await conn.scalar(
                text(
                    "SELECT count(*) FROM audit_logs WHERE entity_type = 'opportunity_project'"
                    " AND after_values->>'description' LIKE :m"
                ),
                {"m": like},
            )
            history = await conn.scalar(
                text(
                    "SELECT count(*) FROM change_history WHERE entity_type = 'opportunity_project'"
                    " AND field_name = 'description' AND new_value #>> '{}' LIKE :m"
                ),
                {"m": like},
            )
            current = await conn.scalar(
                text("SELECT count(*) FROM opportunity_projects WHERE description LIKE :m"), {"m": like}
            )
    finally:
        await engine.dispose()
    return int(current or 0), int(audits or 0), int(history or 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--updates", type=int, default=500, help="successful updates per client")
    parser.add_argument("--projects", type=int, default=4, help="shared projects the clients update")
    parser.add_argument("--scale", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--compare", action="store_true", help="against PostGraphile + the parity trigger")
    parser.add_argument("--reps", type=int, default=8, help="compare: repetitions")
    parser.add_argument("--duration", type=float, default=20.0, help="compare: measured seconds per case")
    parser.add_argument("--warmup", type=float, default=3.0, help="compare: unmeasured seconds before each")
    parser.add_argument("--concurrency", type=int, default=8, help="compare: closed-loop clients")
    parser.add_argument("--count-requests", type=int, default=20, help="compare: mutations of the counting pass")
    parser.add_argument("--kinds", nargs="+", default=["update", "create"], choices=["update", "create"])
    args = parser.parse_args()
    if args.compare:
        if args.duration > 300:
            parser.error("--duration is capped at 300 s")
        args.projects = max(args.projects, 10)  # each compare client owns this many projects
        from write_compare import run

        return run(args)

    bench = Bench.prepare(scale=args.scale, tenants=args.tenants)
    email, _ = bench.admin()
    tenant_id = bench.tenant_id()
    projects = asyncio.run(_projects(bench, tenant_id, args.projects))
    marker = f"bench-{uuid.uuid4().hex[:12]}"
    with bench.serve() as base:
        token = bench.sign_in(base, email)
        figures = asyncio.run(_clients(f"{base}/graphql", token, projects, args.clients, args.updates, marker))

    current, audits, history = asyncio.run(_audit_counts(bench.owner_url, tenant_id, marker))
    verify = bench.gwm("audit", "verify", "--tenant", SUBDOMAIN, check=False)
    committed = figures["committed"]
    figures.update(audit_rows=audits, history_rows=history, verify_exit=verify.returncode,
                   clients=args.clients, updates=args.updates, projects=args.projects)
    print(
        f"\n{args.clients} clients x {args.updates} updates on {args.projects} shared projects:"
        f" {figures['mutations_per_s']:.1f} mutations/s ({figures['attempts_per_s']:.1f} attempts/s),"
        f" p50 {figures['p50_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms"
    )
    print(f"committed {committed}, CONFLICTs retried {figures['conflicts']}, other failures {len(figures['failures'])}")
    print(f"audit_logs rows {audits}, change_history rows {history}, projects left with this run's text {current}")
    print(f"gwm audit verify: exit {verify.returncode}: {verify.stdout.strip().splitlines()[-1:] or verify.stderr}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    ok = (
        not figures["failures"]
        and committed == audits == history
        and current == min(args.projects, len(projects))
        and verify.returncode == 0
    )
    if not ok:
        print("FAILED: " + "; ".join(figures["failures"][:3]), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
