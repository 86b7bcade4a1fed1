#!/usr/bin/env python3
"""/healthz latency while abusive GraphQL documents are sent without pause, against `gwm serve`.

    .venv/bin/python bench/healthz_under_abuse.py [--duration 15] [--abusers 4] [--scale 50] [--tenants 1]

Starts one `gwm serve` worker on a free loopback port (the harness: bench/harness.py), signs in a
Tenant Admin, then measures `/healthz` (one request at a time) for `--duration` seconds twice:
alone, and while `--abusers` clients send the two abusive shapes of issue 10 in turn, each copy
with different whitespace so that no cache recognises it (600 copies of one selection in 15.6 KB;
a depth-14 walk over categories and documents). Every abusive response must be the refusal
(TOO_MANY_SELECTIONS, QUERY_TOO_COSTLY); prints p50/p99/max of /healthz in both phases and the
rate of refused documents. Traffic goes to 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Bench

REPEATED = "{" + "documents{nodes{id name}} " * 600 + "}"
DEEP_WALK = (
    "{ documentCategories { nodes { documents { nodes { category { documents { nodes { category {"
    " documents { nodes { category { documents { nodes { name } } } } } } } } } } } } } }"
)


def _variant(document: str, i: int) -> str:
    """The same document, spelled differently each time (a comment and trailing spaces)."""
    return f"# {i}\n{document}{' ' * (i % 7)}"


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


async def _probe(client: httpx.AsyncClient, base: str, until: float) -> list[float]:
    latencies = []
    while time.monotonic() < until:
        started = time.perf_counter()
        response = await client.get(f"{base}/healthz")
        latencies.append(time.perf_counter() - started)
        response.raise_for_status()
        await asyncio.sleep(0.01)
    return latencies


async def _abuse(
    client: httpx.AsyncClient, base: str, token: str, until: float, offset: int, codes: Counter[str]
) -> None:
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    i = offset
    while time.monotonic() < until:
        document = REPEATED if i % 2 == 0 else DEEP_WALK
        body = json.dumps({"query": _variant(document, i)})
        response = await client.post(f"{base}/graphql", content=body, headers=headers)
        payload: dict[str, Any] = response.json()
        assert payload.get("data") is None and payload.get("errors"), response.text[:300]
        codes[payload["errors"][0]["extensions"]["code"]] += 1
        i += 1000


async def _measure(base: str, token: str, seconds: float, abusers: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=abusers + 1)
    codes: Counter[str] = Counter()
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        until = time.monotonic() + seconds
        started = time.monotonic()
        probe = asyncio.create_task(_probe(client, base, until))
        await asyncio.gather(*(_abuse(client, base, token, until, k, codes) for k in range(abusers)))
        latencies = await probe
        elapsed = time.monotonic() - started
    refused = sum(codes.values())
    return {**_percentiles(latencies), "refused": dict(codes), "refused_per_s": refused / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--abusers", type=int, default=4)
    parser.add_argument("--scale", type=int, default=50)
    parser.add_argument("--tenants", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    bench = Bench.prepare(scale=args.scale, tenants=args.tenants)
    email, _project = bench.admin()
    with bench.serve() as base:
        token = bench.sign_in(base, email)
        quiet = asyncio.run(_measure(base, token, args.duration, 0))
        abused = asyncio.run(_measure(base, token, args.duration, args.abusers))
    figures = {"alone": quiet, f"with {args.abusers} abusive clients": abused}
    print(f"{'/healthz':<28} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  refused documents")
    for label, row in figures.items():
        refused = f"{row['refused_per_s']:.0f}/s {row['refused']}" if row["refused"] else "-"
        print(f"{label:<28} {row['n']:>6} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['max_ms']:>8.1f}  {refused}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
