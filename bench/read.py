#!/usr/bin/env python3
"""Read benchmark: the nested pursuit query and one project by id, against `gwm serve` on 127.0.0.1.

    .venv/bin/python bench/read.py [--duration 20] [--concurrency 8] [--scale 1000] [--tenants 3]

Seeds `--scale` projects per tenant for `--tenants` tenants (skipped when present), starts one
`gwm serve` worker on a free loopback port, signs in a Tenant Admin of the first synthetic tenant,
warms up, then drives each query with a closed loop of `--concurrency` clients for `--duration`
seconds and prints req/s, p50/p95/p99 latency and SQL statements per request (counted by running
the query once in-process against the same database). Every response must be HTTP 200 without
`errors`. Uses the embedded PostgreSQL under GWM_DATA_DIR (default .gwm-bench/), or DATABASE_URL.
Traffic goes to 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from strawberry.relay import to_base64

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, Bench

QUERIES = ROOT / "bench" / "queries"


async def _statements(app_url: str, token: str, query: str, variables: dict[str, Any]) -> int:
    """SQL statements one request issues, counted in-process on the same database."""
    import base64
    import secrets

    from server.app import create_app
    from server.settings import Settings
    from tests.support.http import app_client
    from tests.support.sqlcount import count_statements

    settings = Settings(
        app_database_url=app_url,
        secret_keys="k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        audit_keys="a1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
    )
    app = create_app(settings)
    async with app_client(app) as client:
        with count_statements(app.state.engine) as statements:
            response = await client.post(
                "/graphql", json={"query": query, "variables": variables}, headers={"authorization": f"Bearer {token}"}
            )
        assert response.status_code == 200 and "errors" not in response.json(), response.text[:500]
    return len(statements)


async def _load(
    url: str, token: str, query: str, variables: dict[str, Any], concurrency: int, seconds: float
) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables}).encode()
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                elapsed = time.perf_counter() - started
                if response.status_code != 200 or b'"errors"' in response.content:
                    errors += 1
                latencies.append(elapsed)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "req_per_s": len(latencies) / wall,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else 0.0,
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--scale", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    bench = Bench.prepare(scale=args.scale, tenants=args.tenants)
    email, project_id = bench.admin()
    with bench.serve() as base:
        token = bench.sign_in(base, email)
        cases = [
            ("nested pursuit (50 projects)", (QUERIES / "nested_pursuit.graphql").read_text(), {}),
            (
                "one project by id",
                (QUERIES / "project_by_id.graphql").read_text(),
                {"id": to_base64("OpportunityProject", project_id)},
            ),
        ]
        results = []
        for name, query, variables in cases:
            statements = asyncio.run(_statements(bench.app_url, token, query, variables))
            asyncio.run(_load(f"{base}/graphql", token, query, variables, args.concurrency, args.warmup))
            figures = asyncio.run(_load(f"{base}/graphql", token, query, variables, args.concurrency, args.duration))
            figures.update(name=name, statements_per_request=statements, concurrency=args.concurrency)
            results.append(figures)

    print(f"\n{'query':32} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'SQL/req':>8} {'errors':>7}")
    for r in results:
        print(
            f"{r['name']:32} {r['req_per_s']:8.1f} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['p99_ms']:8.2f}"
            f" {r['statements_per_request']:8d} {r['errors']:7d}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
