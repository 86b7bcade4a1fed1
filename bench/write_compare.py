"""`bench/writes.py --compare`: our update and create mutations against PostGraphile 5 with the parity trigger.

In one run, on the bench database (bench/harness.py; the third synthetic tenant, so the read benchmarks'
tenant is left alone):
1. bench/writes/bench_audit.sql is applied as superuser (schema bench_audit: copies of audit_logs and
   change_history, the trigger functions); the trigger mode is set as bench/writes/bench_audit_mode.sh does:
   `off` while the gateway runs, `parity` while PostGraphile runs (audit + history rows, HMAC chain under a
   per-tenant advisory lock, the updatedAt check, one pg_notify), `off` again at the end.
2. One `gwm serve` worker and one PostGraphile process (bench/postgraphile/graphile.writes.config.mjs), pinned
   as bench/compare.py pins them.
3. Statements per mutation: log_statement=all during a serial pass of --count-requests mutations per case,
   the statements PostgreSQL logged counted (transaction control included: each is one round trip).
4. --reps repetitions of every case (update, create x gateway, PostGraphile), each closed-loop at
   --concurrency for --duration seconds after --warmup: worker w updates only its own --projects projects
   (two plain fields, projectName and priorityLevel, with the updatedAt it last saw: no conflicts), or
   creates projects. CPU per request: the server process, and the postmaster with its backends.
5. Afterwards: audit_logs / change_history rows of this run's marker equal the committed mutations (and
   their fields), and `gwm audit verify` and bench_audit.verify pass.
Prints medians over the repetitions and the ratio of server + DB CPU per request against PostGraphile
(the median of the per-repetition ratios), the goals of issue 18 with PASS/FAIL, and a markdown table.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from compare import (
    STATEMENT,
    DbCpu,
    Server,
    _cpu,
    _loop_factory,
    _pinned,
    _wait_ready,
    inspect_database,
    install_postgraphile,
    mint_jwt,
    node_binary,
    start_gateway,
    statement_log,
    stderr_log,
    stop,
)
from harness import Bench, free_port
from sqlalchemy import text
from strawberry.relay import to_base64

HERE = Path(__file__).resolve().parent
TENANT = "scale-42-2"
GATEWAY, PGL = "gateway", "PostGraphile+parity"
#: Issue 18: server + DB CPU per request at most this multiple of the parity trigger's; round trips at most 8.
MAX_RATIO = 2.0
MAX_ROUND_TRIPS = 8
PRIORITIES = ["low", "medium", "high", "critical"]

GW_UPDATE = """mutation Upd($input: OpportunityProjectUpdateInput!) {
  opportunityProjectUpdate(input: $input) { opportunityProject { rowId updatedAt } errors { code message } }
}"""
GW_CREATE = """mutation Cre($input: OpportunityProjectCreateInput!) {
  opportunityProjectCreate(input: $input) { opportunityProject { rowId updatedAt } errors { code message } }
}"""
PGL_UPDATE = """mutation Upd($input: UpdateOpportunityProjectInput!) {
  updateOpportunityProject(input: $input) { opportunityProject { rowId updatedAt } }
}"""
PGL_CREATE = """mutation Cre($input: CreateOpportunityProjectInput!) {
  createOpportunityProject(input: $input) { opportunityProject { rowId updatedAt } }
}"""


_SERIAL = itertools.count()


@dataclass
class Figures:
    requests: int
    errors: int
    seconds: float
    server_cpu_ms: float
    db_cpu_ms: float
    first_error: str = ""

    @property
    def cost_ms(self) -> float:
        return self.server_cpu_ms + self.db_cpu_ms


@dataclass
class Case:
    system: str
    kind: str  # update | create
    url: str
    token: str
    server: Server
    statements: float | None = None
    reps: list[Figures] = field(default_factory=list)
    committed: int = 0

    @property
    def label(self) -> str:
        return f"{self.system} {self.kind}"


@dataclass
class Setup:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    manual_source: uuid.UUID
    projects: list[list[uuid.UUID]]  # per worker
    seen: dict[uuid.UUID, tuple[str, str]]  # project -> (updatedAt as served, priority)
    marker: str


# --------------------------------------------------------------------------- database side


async def _superuser(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def trigger_mode(mode: str) -> str:
    """The statements of bench/writes/bench_audit_mode.sh for `mode` (off | parity)."""
    sql = """BEGIN;
DROP TRIGGER IF EXISTS bench_audit_after ON public.opportunity_projects;
DROP TRIGGER IF EXISTS bench_a_occ ON public.opportunity_projects;
DROP TRIGGER IF EXISTS bench_chain_link ON bench_audit.audit_logs;
DROP TRIGGER IF EXISTS bench_chain_link ON bench_audit.change_history;
"""
    if mode == "parity":
        sql += """CREATE TRIGGER bench_audit_after AFTER INSERT OR UPDATE ON public.opportunity_projects
  FOR EACH ROW EXECUTE FUNCTION bench_audit.record_update('parity');
CREATE TRIGGER bench_a_occ BEFORE UPDATE ON public.opportunity_projects
  FOR EACH ROW EXECUTE FUNCTION bench_audit.check_updated_at();
CREATE TRIGGER bench_chain_link BEFORE INSERT ON bench_audit.audit_logs
  FOR EACH ROW EXECUTE FUNCTION public.gwm_audit_chain_link();
CREATE TRIGGER bench_chain_link BEFORE INSERT ON bench_audit.change_history
  FOR EACH ROW EXECUTE FUNCTION public.gwm_audit_chain_link();
"""
    elif mode != "off":
        raise ValueError(mode)
    return sql + "COMMIT;"


async def _setup(bench: Bench, tenant_id: uuid.UUID, email: str, workers: int, per_worker: int) -> Setup:
    owner = await asyncpg.connect(bench.owner_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        async with owner.transaction():
            await owner.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            user_id = await owner.fetchval("SELECT id FROM users WHERE email = $1", email)
            manual = await owner.fetchval(
                "SELECT id FROM external_opportunity_sources WHERE source_name = 'Manual entry' LIMIT 1"
            )
            rows = await owner.fetch(
                "SELECT id, priority_level, to_char(updated_at AT TIME ZONE 'UTC',"
                " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"') AS seen FROM opportunity_projects"
                " WHERE archived_at IS NULL AND project_status IN ('active', 'on_hold') ORDER BY id LIMIT $1",
                workers * per_worker,
            )
    finally:
        await owner.close()
    if len(rows) < workers * per_worker:
        raise SystemExit(f"tenant {TENANT} has {len(rows)} projects, {workers * per_worker} are needed")
    ids = [r["id"] for r in rows]
    return Setup(
        tenant_id=tenant_id, user_id=user_id, manual_source=manual,
        projects=[ids[w * per_worker:(w + 1) * per_worker] for w in range(workers)],
        seen={r["id"]: (r["seen"], r["priority_level"] or "medium") for r in rows},
        marker=f"wb-{secrets.token_hex(4)}",
    )


async def _room_for_creates(bench: Bench, tenant_id: uuid.UUID, room: int) -> None:
    """Raise the tenant's project limit when fewer than `room` creates would fit (earlier runs' projects stay),
    as an audited change by the tenant's system user."""
    from auth.audited import system_unit
    from models.audit_chain import AuditChain
    from models.db import create_engine
    from models.tenancy import Tenant

    engine = create_engine(bench.app_url, pool_size=1, max_overflow=0)
    try:
        chain = AuditChain.from_setting(bench.env["GWM_AUDIT_KEYS"])
        async with system_unit(engine, chain, tenant_id, process="bench.writes") as uow:
            tenant = await uow.lock(Tenant, tenant_id)
            counted = await uow.connection.scalar(
                text("SELECT count(*) FROM opportunity_projects WHERE archived_at IS NULL"))
            if int(counted or 0) + room > tenant.max_opportunity_projects:
                uow.assign(tenant, {"max_opportunity_projects": int(counted or 0) + room})
    finally:
        await engine.dispose()


async def _audit_check(
    bench: Bench, superuser: str, setup: Setup, hmac_hex: tuple[str, str], committed: dict[str, int]
) -> list[str]:
    """Problems found in the audit trails of this run (empty: every count matches and every chain verifies)."""
    problems: list[str] = []
    conn = await asyncpg.connect(superuser)
    try:
        like = f"{setup.marker} %"
        for schema, system in (("public", GATEWAY), ("bench_audit", PGL)):
            audits = await conn.fetchval(
                f"SELECT count(*) FROM {schema}.audit_logs WHERE tenant_id = $1"  # noqa: S608 - a fixed schema name
                " AND entity_type = 'opportunity_project'"
                " AND after_values->>'project_name' LIKE $2", setup.tenant_id, like)
            history = await conn.fetchval(
                f"SELECT count(*) FROM {schema}.change_history WHERE tenant_id = $1"  # noqa: S608 - a fixed schema name
                " AND field_name = 'project_name'"
                " AND new_value #>> '{}' LIKE $2", setup.tenant_id, like)
            marked = await conn.fetchval(
                "SELECT count(*) FROM opportunity_projects WHERE tenant_id = $1 AND project_name LIKE $2",
                setup.tenant_id, f"{setup.marker} {system[:3]}%")
            print(f"audit check {system}: audit_logs rows {audits}, project_name history rows {history},"
                  f" projects carrying the run's names {marked}")
            if not audits == history == committed[system]:
                problems.append(f"{system}: {committed[system]} mutations committed, {audits} audit rows,"
                                f" {history} history rows of project_name")
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('bench.audit_ikey', $1, true), set_config('bench.audit_okey', $2, true),"
                " set_config('app.tenant_id', $3, true)", *hmac_hex, str(setup.tenant_id))
            for table in ("audit_logs", "change_history"):
                found = await conn.fetchrow("SELECT * FROM bench_audit.verify($1)", table)
                assert found is not None
                rows, links, hashes, gaps = found
                print(f"bench_audit.{table}: {rows} rows, bad links {links}, bad hashes {hashes}, gaps {gaps}")
                if links or hashes or gaps:
                    problems.append(f"bench_audit.{table} chain does not verify")
    finally:
        await conn.close()
    verify = bench.gwm("audit", "verify", "--tenant", TENANT, check=False)
    print(f"gwm audit verify --tenant {TENANT}: exit {verify.returncode}")
    if verify.returncode != 0:
        problems.append(f"gwm audit verify: {verify.stdout[-500:]}{verify.stderr[-500:]}")
    return problems


# --------------------------------------------------------------------------- requests


def _body(case: Case, setup: Setup, worker: int, number: int, project: uuid.UUID | None) -> dict[str, Any]:
    # Unique over the whole run (the loop's numbering starts again with every pass): every update changes the name.
    name = f"{setup.marker} {case.system[:3]} {case.kind} w{worker} n{number} #{next(_SERIAL)}"
    if case.kind == "create":
        if case.system == GATEWAY:
            return {"query": GW_CREATE, "variables": {"input": {"projectName": name}}}
        return {"query": PGL_CREATE, "variables": {"input": {"opportunityProject": {
            "tenantId": str(setup.tenant_id), "projectName": name, "externalSourceId": str(setup.manual_source),
            "externalOpportunityId": f"MANUAL-{uuid.uuid4()}", "syncStatus": "manual",
            "createdBy": str(setup.user_id)}}}}
    assert project is not None
    seen, priority = setup.seen[project]
    following = PRIORITIES[(PRIORITIES.index(priority) + 1) % len(PRIORITIES)] if priority in PRIORITIES else "low"
    if case.system == GATEWAY:
        return {"query": GW_UPDATE, "variables": {"input": {
            "id": to_base64("OpportunityProject", project), "updatedAt": seen, "projectName": name,
            "priorityLevel": following.upper()}}}
    return {"query": PGL_UPDATE, "variables": {"input": {"rowId": str(project), "patch": {
        "projectName": name, "priorityLevel": following, "updatedAt": seen}}}}


def _outcome(case: Case, body: dict[str, Any]) -> tuple[str | None, str | None]:
    """(updatedAt of the written row, error) of one response."""
    if body.get("errors"):
        return None, json.dumps(body["errors"])[:300]
    data = body.get("data") or {}
    payload = next(iter(data.values()), None) or {}
    if payload.get("errors"):
        return None, json.dumps(payload["errors"])[:300]
    node = payload.get("opportunityProject") or {}
    if not node.get("updatedAt"):
        return None, f"no updatedAt in {json.dumps(body)[:300]}"
    return str(node["updatedAt"]), None


async def _loop(
    case: Case, setup: Setup, workers: int, until: Callable[[], bool], measuring: Callable[[], bool],
    counts: dict[str, int], failures: list[str], limit: int | None = None,
) -> None:
    headers = {"authorization": f"Bearer {case.token}", "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def worker(w: int) -> None:
            number = 0
            projects = setup.projects[w]
            while not until() and (limit is None or counts["sent"] < limit) and not failures:
                counts["sent"] += 1
                project = projects[number % len(projects)] if case.kind == "update" else None
                body = _body(case, setup, w, number, project)
                number += 1
                async with session.post(case.url, json=body, headers=headers) as response:
                    status = response.status
                    parsed = await response.json(content_type=None)
                updated_at, error = (None, f"HTTP {status}") if status != 200 else _outcome(case, parsed)
                if error is not None:
                    failures.append(f"{case.label}: {error}")
                    return
                case.committed += 1
                if measuring():
                    counts["answered"] += 1
                if project is not None and updated_at is not None:
                    priority = body["variables"]["input"].get("priorityLevel") or \
                        body["variables"]["input"]["patch"]["priorityLevel"]
                    setup.seen[project] = (updated_at, str(priority).lower())

        await asyncio.gather(*(worker(w) for w in range(workers if limit is None else 1)))


async def measure(
    case: Case, setup: Setup, *, workers: int, warmup: float, duration: float, db: DbCpu | None
) -> Figures:
    phase = {"measuring": False, "stop": False}
    counts = {"sent": 0, "answered": 0}
    failures: list[str] = []
    server = case.server.ps
    task = asyncio.create_task(_loop(case, setup, workers, lambda: phase["stop"], lambda: phase["measuring"],
                                     counts, failures))
    await asyncio.sleep(warmup)
    db_before = db.sample() if db else 0.0
    server_before = _cpu(server)
    phase["measuring"] = True
    started = time.perf_counter()
    while time.perf_counter() - started < duration and not task.done():
        await asyncio.sleep(0.05)
        if db is not None:
            db.sample()
    phase["measuring"] = False
    seconds = time.perf_counter() - started
    server_cpu = _cpu(server) - server_before
    db_cpu = db.sample() - db_before if db is not None else 0.0
    phase["stop"] = True
    await task
    n = max(counts["answered"], 1)
    return Figures(counts["answered"], len(failures), seconds, server_cpu * 1000 / n, db_cpu * 1000 / n,
                   failures[0] if failures else "")


async def count_pass(case: Case, setup: Setup, log_file: Path, requests: int) -> float:
    """Statements PostgreSQL logged per mutation over `requests` serial mutations (after one unlogged)."""
    failures: list[str] = []
    counts = {"sent": 0, "answered": 0}
    await _loop(case, setup, 1, lambda: False, lambda: True, counts, failures, limit=1)
    await asyncio.sleep(0.3)
    start = log_file.stat().st_size  # noqa: ASYNC240 - one stat between two passes
    counts = {"sent": 0, "answered": 0}
    await _loop(case, setup, 1, lambda: False, lambda: True, counts, failures, limit=requests)
    await asyncio.sleep(0.5)
    if failures:
        raise SystemExit(failures[0])
    with log_file.open("rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    words = [m.group(1).lower().rstrip(";") for m in STATEMENT.finditer(text)]
    return len(words) / requests if words else float("nan")


# --------------------------------------------------------------------------- the run


def start_postgraphile_writes(
    pgl_dir: Path, node: Path, app_url: str, token: str, cpu: int | None, logs: Path, extra: dict[str, str]
) -> Server:
    shutil.copyfile(HERE / "postgraphile" / "graphile.writes.config.mjs", pgl_dir / "graphile.writes.config.mjs")
    port = free_port()
    log = logs / "postgraphile-writes.log"
    env = {**os.environ, "NODE_ENV": "production", "GRAPHILE_ENV": "production", "PORT": str(port),
           "GWM_PGL_DATABASE_URL": app_url.replace("postgresql+asyncpg://", "postgresql://", 1), **extra}
    process = subprocess.Popen(  # noqa: S603
        _pinned([str(node), "node_modules/postgraphile/dist/cli-run.js", "-C", "graphile.writes.config.mjs"], cpu),
        cwd=pgl_dir, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    server = Server(PGL, process, f"http://127.0.0.1:{port}/graphql", log)
    _wait_ready(server, "{__typename}", {"authorization": f"Bearer {token}"})
    return server


def _hmac_halves() -> tuple[str, str]:
    key = secrets.token_bytes(32).ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key).hex(), bytes(b ^ 0x5C for b in key).hex()


def run(args: Any) -> int:
    work = Path(os.environ.get("GWM_BENCH_DIR", "/tmp/gwm-bench"))  # noqa: S108 - scratch space, never the repo
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    node = node_binary()
    pgl_dir = install_postgraphile(work, node)
    bench = Bench.prepare(scale=args.scale, tenants=args.tenants)
    email, _ = bench.admin(TENANT)
    runner = asyncio.Runner(loop_factory=_loop_factory())
    db = runner.run(inspect_database(bench))
    if db.superuser_dsn is None:
        raise SystemExit("the compare mode needs the cluster's superuser (the parity trigger is created as it)")
    if db.log_file is None and db.postmaster is not None:
        db.log_file = stderr_log(db.postmaster)
    database = urlsplit(bench.owner_url).path  # the superuser in the project's database, not in `postgres`
    superuser = urlunsplit(urlsplit(db.superuser_dsn)._replace(path=database))
    runner.run(_superuser(superuser, (HERE / "writes" / "bench_audit.sql").read_text()))
    setup = runner.run(_setup(bench, bench.tenant_id(TENANT), email, args.concurrency, args.projects))
    if "create" in args.kinds:
        runner.run(_room_for_creates(bench, setup.tenant_id, 100_000))
    ikey, okey = _hmac_halves()
    jwt = mint_jwt(pgl_dir, node, setup.tenant_id)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[1] if len(cpus) >= 2 else None
    gateway = postgraphile = None
    mode = "off"

    def set_mode(wanted: str) -> None:
        nonlocal mode
        if wanted != mode:
            runner.run(_superuser(superuser, trigger_mode(wanted)))
            mode = wanted

    try:
        set_mode("off")
        gateway = start_gateway(bench, server_cpu, logs)
        postgraphile = start_postgraphile_writes(pgl_dir, node, bench.app_url, jwt, server_cpu, logs, {
            "BENCH_USER_ID": str(setup.user_id), "BENCH_AUDIT_IKEY": ikey, "BENCH_AUDIT_OKEY": okey})
        token = Bench.sign_in(gateway.url.removesuffix("/graphql"), email, TENANT)
        cases = [Case(GATEWAY, kind, gateway.url, token, gateway) for kind in args.kinds] + \
                [Case(PGL, kind, postgraphile.url, jwt, postgraphile) for kind in args.kinds]
        counted = db.log_file is not None
        if counted:
            assert db.log_file is not None
            with statement_log(db, runner) as on:
                counted = on
                for case in cases:
                    set_mode("parity" if case.system == PGL else "off")
                    case.statements = runner.run(count_pass(case, setup, db.log_file, args.count_requests))
                    print(f"{case.label}: {case.statements:.1f} statements per mutation", flush=True)
        meter = DbCpu(db.postmaster) if db.postmaster is not None else None
        for rep in range(args.reps):
            for kind in args.kinds:
                ordered = [c for c in cases if c.kind == kind]
                for case in ordered if rep % 2 == 0 else ordered[::-1]:
                    set_mode("parity" if case.system == PGL else "off")
                    figures = runner.run(measure(case, setup, workers=args.concurrency, warmup=args.warmup,
                                                 duration=args.duration, db=meter))
                    case.reps.append(figures)
                    print(f"rep {rep + 1}/{args.reps} {case.label}: {figures.requests / figures.seconds:.1f}/s,"
                          f" server {figures.server_cpu_ms:.2f} + DB {figures.db_cpu_ms:.2f} ms CPU/req,"
                          f" errors {figures.errors} {figures.first_error}", flush=True)
                    if figures.errors:
                        raise SystemExit(figures.first_error)
        set_mode("off")
        committed = {system: sum(c.committed for c in cases if c.system == system) for system in (GATEWAY, PGL)}
        problems = runner.run(_audit_check(bench, superuser, setup, (ikey, okey), committed))
        met = report(cases, args.reps)
        if args.json:
            args.json.write_text(json.dumps({"cases": [
                {"system": c.system, "kind": c.kind, "statements": c.statements, "committed": c.committed,
                 "reps": [vars(f) for f in c.reps]} for c in cases]}, indent=2))
        if problems:
            print("AUDIT PROBLEMS:\n  " + "\n  ".join(problems))
            return 1
        return 0 if met else 2
    finally:
        try:
            set_mode("off")
        finally:
            for server in (gateway, postgraphile):
                if server is not None:
                    stop(server)
            runner.close()


def report(cases: list[Case], reps: int) -> bool:
    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    lines = ["| mutation | system | req/s | server CPU ms/req | DB CPU ms/req | statements/req | ours / parity,"
             " server+DB (median of per-rep ratios) |", "|---|---|---|---|---|---|---|"]
    goals: list[str] = []
    met = True
    for kind in dict.fromkeys(c.kind for c in cases):
        ours = next(c for c in cases if c.kind == kind and c.system == GATEWAY)
        theirs = next(c for c in cases if c.kind == kind and c.system == PGL)
        ratio = med([a.cost_ms / b.cost_ms for a, b in zip(ours.reps, theirs.reps, strict=True)])
        for case in (ours, theirs):
            statements = "-" if case.statements is None else f"{case.statements:.1f}"
            lines.append(
                f"| {kind} | {case.system} | {med([f.requests / f.seconds for f in case.reps]):.1f} |"
                f" {med([f.server_cpu_ms for f in case.reps]):.2f} | {med([f.db_cpu_ms for f in case.reps]):.2f} |"
                f" {statements} | {f'{ratio:.2f}x' if case is ours else '-'} |")
        ok = ratio <= MAX_RATIO
        met &= ok
        goals.append(f"goal 1 ({kind}): {ratio:.2f}x <= {MAX_RATIO}x: {'PASS' if ok else 'FAIL'}")
        if ours.statements is not None:
            trips = ours.statements <= MAX_ROUND_TRIPS
            met &= trips
            goals.append(f"goal 2 ({kind}): {ours.statements:.1f} statements (round trips) per mutation"
                         f" <= {MAX_ROUND_TRIPS}: {'PASS' if trips else 'FAIL'}")
    print(f"\n{reps} repetitions\n\n" + "\n".join(lines) + "\n\n" + "\n".join(goals))
    return met


__all__ = ["run"]
