"""`gwm tenant export`, `gwm tenant import` and `gwm tenant purge`: moving a tenant between databases.

    gwm tenant export --tenant T FILE      every row of the tenant as JSON lines (file mode 0600)
    gwm tenant import FILE                 into this database, all or nothing
    gwm tenant purge --tenant T --export-sha256 H --yes
                                           delete the tenant, once it is exported (H: the export's sha256)

The file: a header line, then one line per row, tables in foreign-key order (parents first):

    {"format": "gwm-tenant-export", "version": 1, "tenant_id": ..., "subdomain": ...,
     "schema_revision": ..., "exported_at": ..., "tables": [...], "row_counts": {...},
     "audit_key_ids": [...], "secret_key_ids": [...], "chain_heads": {...}}
    {"table": "tenants", "row": {...}}
    ...

A row is PostgreSQL's own `to_jsonb` of it (generated columns left out), read as the schema owner
with the tenant set (row-level security is FORCEd on the owner too) in one REPEATABLE READ, read
only transaction, so the file is one consistent picture. Import gives each table's rows back to
PostgreSQL in one `INSERT ... SELECT ... jsonb_populate_record` statement, so every value goes
through its column type's own input function (numbers, timestamps, bytea, arrays round-trip
exactly) and nothing is reinterpreted in Python.

The file holds password hashes, encrypted secrets and the signed audit trail: it is created with
mode 0600 (never widened afterwards) and refused if it exists; docs/deploy.md says how to handle it.

Keys. Audit rows are HMAC-signed under GWM_AUDIT_KEYS (models/audit_chain.py) and secrets are
sealed under GWM_SECRET_KEYS (auth/crypto.py); neither key is in the file. The header lists the key
ids the rows use; import refuses when the configured keys lack one, and verifies every imported
chain under the configured keys before committing (same id, other key: refused too). Secrets are
carried as they are: re-encrypting them under other keys is a separate, later step, and never
means re-signing audit rows.

Decisions (docs/decisions.md T1-T3): the tenant row's bootstrap trigger (D9) creates the system
user and the "Manual entry" source; import deletes those two fresh rows right after inserting the
tenant (nothing references them yet) and inserts the exported ones, ids and timestamps included.
A chain whose early rows were purged (W4) starts at seq > 1: for that table the chain-link trigger
is disabled inside the import transaction (owner only; re-enabled before commit) and the chain is
verified from its signed purge anchor instead. Each export is recorded as an audit_logs row
(`tenant.export`, with the file's sha256 and the chains' heads); purge needs that sha256 and
refuses when the tenant's trail moved on after that export.
"""

from __future__ import annotations

import asyncio
import datetime
import graphlib
import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.audit_chain import AUDIT_TABLE_NAMES, AuditChain, TenantDeletion, audit_table, delete_tenant
from models.db import set_tenant

__all__ = [
    "EXPORT_ACTION",
    "FORMAT",
    "FORMAT_VERSION",
    "IMPORT_ACTION",
    "ExportResult",
    "ImportResult",
    "TransferError",
    "export_tenant",
    "import_tenant",
    "purge_tenant",
    "secret_key_ids",
]

_log = logging.getLogger(__name__)

FORMAT = "gwm-tenant-export"
FORMAT_VERSION = 1
#: audit_logs.action_type of an export (recorded in the source database) and of an import.
EXPORT_ACTION = "tenant.export"
IMPORT_ACTION = "tenant.import"

# A SecretBox token (auth/crypto.py): v1.<key id>.<base64url(nonce || ciphertext || tag)>.
_SECRET_TOKEN = re.compile(r"v1\.([A-Za-z0-9_-]{1,32})\.[A-Za-z0-9_-]{38,}")


class TransferError(Exception):
    """A refusal the operator can act on; the message is printed as is."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    tenant_id: uuid.UUID
    subdomain: str
    path: Path
    sha256: str
    row_counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class ImportResult:
    tenant_id: uuid.UUID
    subdomain: str
    sha256: str
    row_counts: dict[str, int]
    notes: list[str] = field(default_factory=list)


# -- the tables ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: tuple[str, ...]  # insertable columns (generated ones left out)
    generated: tuple[str, ...]


async def _tables(conn: AsyncConnection) -> list[_Table]:
    """tenants and every table with a tenant_id column, parents before children (foreign keys)."""
    rows = (
        await conn.execute(
            text(
                "SELECT c.relname AS name, a.attname AS column, a.attgenerated <> '' AS generated"
                " FROM pg_catalog.pg_class AS c"
                " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace AND n.nspname = 'public'"
                " JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
                " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
                "   AND (c.relname = 'tenants' OR EXISTS (SELECT FROM pg_catalog.pg_attribute AS t"
                "        WHERE t.attrelid = c.oid AND t.attname = 'tenant_id' AND NOT t.attisdropped))"
                " ORDER BY c.relname, a.attnum"
            )
        )
    ).all()
    columns: dict[str, list[str]] = {}
    generated: dict[str, list[str]] = {}
    for row in rows:
        columns.setdefault(row.name, [])
        generated.setdefault(row.name, [])
        (generated if row.generated else columns)[row.name].append(row.column)
    edges = (
        await conn.execute(
            text(
                "SELECT c.conrelid::regclass::text AS child, c.confrelid::regclass::text AS parent"
                " FROM pg_catalog.pg_constraint AS c WHERE c.contype = 'f'"
            )
        )
    ).all()
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter({name: set() for name in columns})
    for edge in edges:
        child, parent = edge.child.removeprefix("public."), edge.parent.removeprefix("public.")
        if child in columns and parent in columns and child != parent:
            sorter.add(child, parent)
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:  # pragma: no cover - the schema has none; say so if one appears
        raise TransferError(f"the tables' foreign keys form a cycle: {exc.args[1]}") from None
    # Deterministic: static_order is stable for the same graph, but keep tenants first regardless.
    order.remove("tenants")
    return [_Table(name, tuple(columns[name]), tuple(generated[name])) for name in ["tenants", *order]]


async def _schema_revision(conn: AsyncConnection) -> str:
    revisions = (await conn.execute(text("SELECT version_num FROM alembic_version ORDER BY 1"))).scalars().all()
    return ",".join(str(r) for r in revisions)


async def _resolve(engine: AsyncEngine, wanted: str) -> tuple[uuid.UUID, str]:
    """(id, subdomain) of the tenant `wanted` names (subdomain or id); TransferError if none."""
    async with engine.connect() as conn:
        found = await _find(conn, wanted)
    if found is None:
        raise TransferError(f"no tenant {wanted!r} (give its subdomain or id)")
    return found


async def _find(conn: AsyncConnection, wanted: str) -> tuple[uuid.UUID, str] | None:
    """`_resolve` on a connection outside a transaction of its own (each read is rolled back)."""
    ids = list((await conn.execute(text("SELECT tenant_id FROM gwm_tenant_ids()"))).scalars())
    await conn.rollback()
    for tenant_id in ids:  # row-level security: each tenant's row is read with its tenant set
        await set_tenant(conn, tenant_id)
        subdomain = await conn.scalar(text("SELECT subdomain FROM tenants WHERE id = :t"), {"t": tenant_id})
        await conn.rollback()
        if wanted.strip().lower() in {str(tenant_id), str(subdomain).lower()}:
            return uuid.UUID(str(tenant_id)), str(subdomain)
    return None


def secret_key_ids(setting: str) -> tuple[str, ...]:
    """The key ids of a GWM_SECRET_KEYS value (checked by auth.crypto.SecretBox first)."""
    from auth.crypto import SecretBox

    SecretBox.from_setting(setting)  # ConfigurationError on a malformed setting
    return tuple(entry.partition(":")[0].strip() for entry in setting.split(","))


def _secret_ids(value: Any, found: set[str]) -> None:
    if isinstance(value, str):
        match = _SECRET_TOKEN.fullmatch(value)
        if match:
            found.add(match.group(1))
    elif isinstance(value, dict):
        for item in value.values():
            _secret_ids(item, found)
    elif isinstance(value, list):
        for item in value:
            _secret_ids(item, found)


# -- export --------------------------------------------------------------------------------------


async def export_tenant(engine: AsyncEngine, chain: AuditChain, tenant: str, path: Path) -> ExportResult:
    """Write every row of `tenant` to `path` (created with mode 0600; refused if it exists) and record it.

    `engine` is the schema owner's. The rows are read in one REPEATABLE READ, read-only
    transaction; the export is then recorded in the tenant's audit_logs (`tenant.export`, with the
    file's sha256 and each chain's head in that snapshot), which `purge_tenant` checks.
    """
    if await asyncio.to_thread(path.exists):
        raise TransferError(f"{path} exists: give a new file name (an export never writes over a file)")
    tenant_id, subdomain = await _resolve(engine, tenant)
    row_counts: dict[str, int] = {}
    audit_keys: set[str] = set()
    secret_keys: set[str] = set()
    heads: dict[str, dict[str, Any]] = {}
    # The rows stream into a temporary file next to the target (mkstemp: mode 0600, O_EXCL), since
    # the header, which comes first, needs their counts; then header + rows go into the file itself.
    try:
        spool_fd, spool_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".rows", dir=path.parent)
    except OSError as exc:
        raise TransferError(f"cannot write in {path.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(spool_fd, "w+", encoding="utf-8", newline="\n") as spool:
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
                async with conn.begin():
                    await set_tenant(conn, tenant_id)
                    tables = await _tables(conn)
                    revision = await _schema_revision(conn)
                    for table in tables:
                        row_counts[table.name] = await _spool_table(
                            conn, table, tenant_id, spool, audit_keys, secret_keys, heads
                        )
            header: dict[str, Any] = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "tenant_id": str(tenant_id),
                "subdomain": subdomain,
                "schema_revision": revision,
                "exported_at": datetime.datetime.now(datetime.UTC).isoformat(),
                "tables": [t.name for t in tables],
                "row_counts": row_counts,
                "audit_key_ids": sorted(audit_keys),
                "secret_key_ids": sorted(secret_keys),
                "chain_heads": heads,
            }
            digest = hashlib.sha256()
            # O_EXCL: never write over another file; 0o600 from creation, never readable by others.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:
                raise TransferError(f"cannot create {path}: {exc.strerror}") from None
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                first = json.dumps(header, sort_keys=True) + "\n"
                digest.update(first.encode("utf-8"))
                fh.write(first)
                spool.seek(0)
                for line in spool:
                    digest.update(line.encode("utf-8"))
                    fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
    finally:
        os.unlink(spool_name)
    sha256 = digest.hexdigest()
    async with engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        system_user = await conn.scalar(
            text("SELECT id FROM users WHERE tenant_id = :t AND is_system"), {"t": tenant_id}
        )
        await chain.append(
            conn,
            audit_table("audit_logs"),
            [
                _event(
                    EXPORT_ACTION,
                    system_user,
                    f"tenant exported ({sum(row_counts.values())} rows), sha256 {sha256}",
                    {
                        "sha256": sha256,
                        "file": path.name,
                        "row_counts": row_counts,
                        "chain_heads": {name: head["seq"] for name, head in heads.items()},
                        "audit_key_ids": header["audit_key_ids"],
                        "secret_key_ids": header["secret_key_ids"],
                    },
                )
            ],
        )
    return ExportResult(tenant_id, subdomain, path, sha256, row_counts)


async def _spool_table(
    conn: AsyncConnection,
    table: _Table,
    tenant_id: uuid.UUID,
    spool: IO[str],
    audit_keys: set[str],
    secret_keys: set[str],
    heads: dict[str, dict[str, Any]],
) -> int:
    """Write one table's rows of the tenant as lines to `spool`; collect key ids and chain heads."""
    key = "id" if table.name == "tenants" else "tenant_id"
    order = "t.seq" if table.name in AUDIT_TABLE_NAMES else ("t.id" if "id" in table.columns else "1")
    result = await conn.stream(
        text(
            # Identifiers from the catalog (_tables), never from input.
            f'SELECT (to_jsonb(t) - CAST(:generated AS text[]))::text AS doc FROM public."{table.name}"'  # noqa: S608
            f" AS t WHERE t.{key} = :tenant ORDER BY {order}"
        ),
        {"generated": list(table.generated), "tenant": tenant_id},
    )
    prefix = '{"table":' + json.dumps(table.name) + ',"row":'
    count = 0
    last: dict[str, Any] | None = None
    async for (doc,) in result:
        row = json.loads(doc)
        _secret_ids(row, secret_keys)
        if table.name in AUDIT_TABLE_NAMES:
            if row.get("hash_key_id"):
                audit_keys.add(str(row["hash_key_id"]))
            last = row
        spool.write(prefix + doc + "}\n")
        count += 1
    if table.name in AUDIT_TABLE_NAMES:
        heads[table.name] = {
            "seq": None if last is None else last["seq"],
            "row_hash": None if last is None else last.get("row_hash"),
        }
    return count


def _event(action: str, user_id: Any, description: str, details: dict[str, Any]) -> dict[str, Any]:
    """An audit_logs event row of the tenant's system user, as `gwm` (the operator) did it."""
    return {
        "user_id": user_id,
        "action_type": action,
        "entity_type": "tenant",
        "operation_description": description,
        "after_values": details,
        "access_granted": True,
        "risk_level": "high",
        "request_id": f"cli-{uuid.uuid4()}",
        "api_endpoint": f"gwm {action.replace('.', ' ')}",
        "http_method": "CLI",
    }


# -- import --------------------------------------------------------------------------------------


def _read_header(fh: IO[str]) -> dict[str, Any]:
    first = fh.readline()
    try:
        header = json.loads(first)
    except ValueError:
        raise TransferError("line 1 is not a gwm tenant export header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TransferError("line 1 is not a gwm tenant export header")
    if header.get("version") != FORMAT_VERSION:
        raise TransferError(f"export format version {header.get('version')!r}; this gwm reads {FORMAT_VERSION}")
    for name in ("tenant_id", "subdomain", "tables", "row_counts", "audit_key_ids", "secret_key_ids"):
        if name not in header:
            raise TransferError(f"the header has no {name!r}")
    return header


def check_keys(header: dict[str, Any], chain: AuditChain, secret_ids: Sequence[str]) -> list[str]:
    """Refuse (TransferError) when a key id the file's rows use is not configured; else what was checked."""
    missing_audit = sorted(set(header["audit_key_ids"]) - set(chain.key_ids))
    missing_secret = sorted(set(header["secret_key_ids"]) - set(secret_ids))
    problems = []
    if missing_audit:
        problems.append(
            f"audit rows are signed with key id(s) {', '.join(missing_audit)} not in GWM_AUDIT_KEYS "
            f"(configured: {', '.join(chain.key_ids)}): they would not verify; configure the source's audit keys"
        )
    if missing_secret:
        problems.append(
            f"secrets are sealed with key id(s) {', '.join(missing_secret)} not in GWM_SECRET_KEYS "
            f"(configured: {', '.join(secret_ids) or 'none'}): they would not decrypt; configure the source's "
            "secret keys (add them after the current one to re-encrypt later; audit rows are never re-signed)"
        )
    if problems:
        raise TransferError("; ".join(problems))
    return [
        f"audit key ids {', '.join(header['audit_key_ids']) or '(none used)'}: configured",
        f"secret key ids {', '.join(header['secret_key_ids']) or '(none used)'}: configured",
    ]


async def import_tenant(
    engine: AsyncEngine, chain: AuditChain, path: Path, *, secret_ids: Sequence[str]
) -> ImportResult:
    """Insert the tenant exported to `path`, in one transaction (all or nothing).

    `engine` is the schema owner's. Refused: a file that is not an export, a schema at another
    revision, a tenant id already present, a key id not configured, a row count that does not
    match the header, a chain that does not verify under `chain`'s keys.
    """
    if not await asyncio.to_thread(path.is_file):
        raise TransferError(f"no file {path}")
    digest = hashlib.sha256()
    with path.open("rb") as raw:
        for block in iter(lambda: raw.read(1 << 20), b""):
            digest.update(block)
    sha256 = digest.hexdigest()
    with path.open("r", encoding="utf-8", newline="\n") as fh:
        header = _read_header(fh)
        notes = check_keys(header, chain, secret_ids)
        tenant_id = uuid.UUID(str(header["tenant_id"]))
        async with engine.connect() as conn:
            revision = await _schema_revision(conn)
            if revision != header.get("schema_revision"):
                raise TransferError(
                    f"the export is of schema revision {header.get('schema_revision')}, this database is at "
                    f"{revision}: migrate both to the same revision first"
                )
            present = await conn.scalar(
                text("SELECT count(*) FROM gwm_tenant_ids() AS t WHERE t.tenant_id = :t"), {"t": tenant_id}
            )
            await conn.rollback()
            if present:
                raise TransferError(f"tenant {tenant_id} ({header['subdomain']}) already exists in this database")
            holder = await _find(conn, str(header["subdomain"]))
            if holder is not None:
                raise TransferError(
                    f"subdomain {header['subdomain']!r} belongs to another tenant here ({holder[0]}): "
                    "rename one of them first"
                )
            try:
                async with conn.begin():
                    counts = await _import_rows(conn, chain, fh, header, tenant_id)
                    notes.append(await _verify(conn, chain))
                    system_user = await conn.scalar(
                        text("SELECT id FROM users WHERE tenant_id = :t AND is_system"), {"t": tenant_id}
                    )
                    await chain.append(
                        conn,
                        audit_table("audit_logs"),
                        [
                            _event(
                                IMPORT_ACTION,
                                system_user,
                                f"tenant imported ({sum(counts.values())} rows), export sha256 {sha256}",
                                {"sha256": sha256, "file": path.name, "row_counts": counts,
                                 "exported_at": header.get("exported_at")},
                            )
                        ],
                    )
            except IntegrityError as exc:
                raise TransferError(f"the database refused the rows: {_first_line(exc)}") from None
            except DBAPIError as exc:
                raise TransferError(f"the database refused the rows: {_first_line(exc)}") from None
    return ImportResult(tenant_id, str(header["subdomain"]), sha256, counts, notes)


def _first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    return str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__


async def _import_rows(
    conn: AsyncConnection, chain: AuditChain, fh: IO[str], header: dict[str, Any], tenant_id: uuid.UUID
) -> dict[str, int]:
    await set_tenant(conn, tenant_id)
    tables = {t.name: t for t in await _tables(conn)}
    unknown = [name for name in header["tables"] if name not in tables]
    if unknown:
        raise TransferError(f"this database has no table(s) {', '.join(unknown)}")
    counts: dict[str, int] = {}
    seen: list[str] = []
    pending: list[str] = []
    current: str | None = None
    for number, line in enumerate(fh, start=2):
        try:
            parsed = json.loads(line)
            name = parsed["table"]
            row = parsed["row"]
        except (ValueError, KeyError, TypeError):
            raise TransferError(f"line {number} is not a row of the export") from None
        if not isinstance(row, dict) or name not in tables:
            raise TransferError(f"line {number} is not a row of the export")
        key = "id" if name == "tenants" else "tenant_id"
        if str(row.get(key)) != str(tenant_id):
            raise TransferError(f"line {number}: a {name} row of another tenant")
        if name != current:
            if current is not None:
                counts[current] = await _insert(conn, tables[current], pending, tenant_id)
            if name in seen:
                raise TransferError(f"line {number}: {name} rows are not together (the file is out of order)")
            seen.append(name)
            current, pending = name, []
        pending.append(line)
    if current is not None:
        counts[current] = await _insert(conn, tables[current], pending, tenant_id)
    expected = {str(k): int(v) for k, v in header["row_counts"].items() if int(v)}
    if {k: v for k, v in counts.items() if v} != expected:
        raise TransferError(f"the file's rows {counts} do not match the header's counts {expected} (truncated?)")
    return counts


async def _insert(conn: AsyncConnection, table: _Table, lines: list[str], tenant_id: uuid.UUID) -> int:
    """All of one table's rows in one statement, in file order (an audit chain's seq order)."""
    columns = ", ".join(f'"{c}"' for c in table.columns)
    selected = ", ".join(f'r."{c}"' for c in table.columns)
    statement = text(
        f'INSERT INTO public."{table.name}" ({columns}) SELECT {selected}'  # noqa: S608 (catalog identifiers)
        " FROM unnest(CAST(:lines AS text[])) WITH ORDINALITY AS l(line, n)"
        f' CROSS JOIN LATERAL jsonb_populate_record(NULL::public."{table.name}", (l.line::jsonb) -> \'row\') AS r'
        " ORDER BY l.n"
    )
    if table.name == "tenants":
        await conn.execute(statement, {"lines": lines})
        # D9: the bootstrap trigger has just made the system user and the "Manual entry" source;
        # nothing references them yet, so they make way for the exported ones (ids and all).
        await conn.execute(text("DELETE FROM external_opportunity_sources WHERE tenant_id = :t"), {"t": tenant_id})
        await conn.execute(text("DELETE FROM users WHERE tenant_id = :t"), {"t": tenant_id})
        return len(lines)
    disable = False
    if table.name in AUDIT_TABLE_NAMES and lines:
        first = json.loads(lines[0])["row"]
        # A chain whose early rows were purged (W4) starts at seq > 1 with its anchor as prev_hash:
        # the chain-link trigger, which wants seq 1 on an empty chain, is off for this transaction,
        # and _verify checks the chain from the signed purge record instead.
        disable = int(first.get("seq") or 0) > 1
    trigger = f"trg_{table.name}_chain_link"
    if disable:
        await conn.execute(text(f'ALTER TABLE public."{table.name}" DISABLE TRIGGER {trigger}'))
    await conn.execute(statement, {"lines": lines})
    if disable:
        await conn.execute(text(f'ALTER TABLE public."{table.name}" ENABLE TRIGGER {trigger}'))
    return len(lines)


async def _verify(conn: AsyncConnection, chain: AuditChain) -> str:
    """Every imported chain, verified under the configured audit keys before anything commits."""
    summary = []
    for name in AUDIT_TABLE_NAMES:
        report = await chain.verify(conn, audit_table(name))
        if not report.ok:
            raise TransferError(
                f"the imported audit chain does not verify under GWM_AUDIT_KEYS: {report.fault} "
                "(the same key ids must hold the source's keys)"
            )
        summary.append(f"{name} {report.rows}")
    return "audit chains verify under the configured keys (" + ", ".join(summary) + " rows)"


# -- purge ---------------------------------------------------------------------------------------


async def purge_tenant(engine: AsyncEngine, chain: AuditChain, tenant: str, export_sha256: str) -> TenantDeletion:
    """Delete `tenant`, audit trail included (owner-only gwm_delete_tenant), once it is exported.

    Refused unless `export_sha256` is the sha256 of an export recorded in the tenant's audit_logs
    (its record verifying under `chain`'s keys) and the tenant's audit trail has not moved on since
    that export's snapshot (other exports aside). The deletion returns each chain's head, which is
    logged (logger models.audit_chain and this module's) and returned for printing.
    """
    wanted = export_sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", wanted):
        raise TransferError("--export-sha256 must be the 64 hex digits `gwm tenant export` printed")
    tenant_id, subdomain = await _resolve(engine, tenant)
    logs = audit_table("audit_logs")
    async with engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        record = (
            (
                await conn.execute(
                    logs.select()
                    .where(
                        logs.c.tenant_id == tenant_id,
                        logs.c.action_type == EXPORT_ACTION,
                        logs.c.after_values["sha256"].astext == wanted,
                    )
                    .order_by(logs.c.seq.desc())
                    .limit(1)
                )
            )
            .mappings()
            .first()
        )
        if record is None:
            raise TransferError(f"no export of {subdomain} with sha256 {wanted} is recorded: export it first")
        expected = chain.row_hash(logs, dict(record))
        if expected is None or record["row_hash"] is None or not hmac.compare_digest(expected, record["row_hash"]):
            raise TransferError(f"the export record of {subdomain} (seq {record['seq']}) does not verify: not trusted")
        heads = (record["after_values"] or {}).get("chain_heads") or {}
        for name in AUDIT_TABLE_NAMES:
            table = audit_table(name)
            since = int(heads.get(name) or 0)
            query = select(table.c.seq).where(table.c.tenant_id == tenant_id, table.c.seq > since)
            if name == "audit_logs":
                query = query.where(table.c.action_type != EXPORT_ACTION)
            moved = (await conn.execute(query.limit(1))).first()
            if moved is not None:
                raise TransferError(
                    f"{subdomain} changed after that export ({name} seq {moved.seq} is newer): export it again"
                )
        deletion = await delete_tenant(conn, tenant_id)
    _log.warning(
        "tenant %s (%s) purged after export %s; chain heads: %s",
        tenant_id,
        subdomain,
        wanted,
        "; ".join(f"{name} seq {seq} hash {head or '-'}" for name, (seq, head) in deletion.heads.items()),
    )
    return deletion
