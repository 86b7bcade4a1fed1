"""`gwm audit archive | verify --archive | purge --archive | tail`: the audit trail leaving the database.

Retention of the audit trail (NIST 800-53 AU-11) in three steps, each its own command:

1. `gwm audit archive --tenant T --before DATE --output FILE` writes the tenant's chained rows
   (audit_logs, change_history, permission_audit) recorded before DATE to a self-contained archive;
2. `gwm audit verify --archive FILE` checks it with the audit keys alone, without a database;
3. `gwm audit purge --tenant T --before DATE --archive FILE --yes` verifies the archive again and
   deletes, in one transaction, only rows the archive holds: every row the purge removes must be in
   the archive, and the archive's last row of each table must be the row the kept chain links to
   (its hash is the first kept row's prev_hash). Otherwise the transaction rolls back and nothing is
   deleted. The purge's own audit row names the archive's SHA-256. No table records "verified
   archives": the check is made where it matters, at the purge, against the file being relied on.

Archive format (version 1): UTF-8 JSON lines, file mode 0600.

    line 1     {"format": "gwm-audit-archive", "version": 1, "tenant_id", "subdomain", "before",
                "created_at", "key_ids": [...], "tables": {name: {"rows", "first_seq", "last_seq",
                "anchor" (prev_hash of the first archived row: the head before the archive, hex or
                null), "head" (row_hash of the last archived row: the head after it), "database_head":
                {"seq", "hash"} (the table's head when the archive was written)}}}
    rows       {"table", "seq", "row_hash" (hex, null for a row written before migration 0005),
                "canonical"}: "canonical" is the text the row's HMAC covers (models/audit_chain.py,
                without its "gwm-audit-v1" prefix line): every column of the row, readable JSON.
                Ordered by table (audit_logs, change_history, permission_audit), then seq.
    last line  {"trailer": {"lines", "sha256", "key_id", "mac"}}: the number and SHA-256 of the
                lines before it, and an HMAC-SHA256 of that digest under an audit key, so the header
                and the row order cannot be edited and rows cannot be cut from the end unseen.

`verify` checks each row's HMAC over its canonical text with the key its hash_key_id names, that
the canonical columns say the same table, tenant and seq as the line, that each prev_hash is the
previous row's row_hash (the first row's the header's anchor), that seqs have no gap, that the
header's counts and heads match the rows, and the trailer. `tail` streams rows as JSON lines for a
SIEM, each table in chain (seq) order, merged by time.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import heapq
import hmac
import ipaddress
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.audit_chain import AUDIT_TABLE_NAMES, AuditChain, PurgeReport, audit_table, canonical_message
from models.db import set_tenant

__all__ = [
    "ARCHIVE_FORMAT",
    "TIME_COLUMNS",
    "ArchiveError",
    "ArchiveSummary",
    "audit_keys",
    "purge_with_archive",
    "tail",
    "verify_archive",
    "write_archive",
]

ARCHIVE_FORMAT = "gwm-audit-archive"
_VERSION = 1
_ROW_PREFIX = b"gwm-audit-v1\n"
_TRAILER_PREFIX = b"gwm-audit-archive-v1\n"
#: The column that says when a row was recorded, per chained table (as the purge compares it).
TIME_COLUMNS: Mapping[str, str] = {
    "audit_logs": "timestamp_utc",
    "change_history": "created_at",
    "permission_audit": "timestamp_utc",
}
_BATCH = 2000


class ArchiveError(Exception):
    """An archive that does not verify, does not cover a purge, or cannot be written."""


def audit_keys(setting: str) -> dict[str, bytes]:
    """The keys of GWM_AUDIT_KEYS by id, first the signing one ("kid:base64[,kid:base64...]").

    Checked by AuditChain.from_setting first, so errors are its errors (they name key ids, never keys).
    """
    AuditChain.from_setting(setting)
    keys: dict[str, bytes] = {}
    for entry in setting.split(","):
        key_id, _, encoded = (part.strip() for part in entry.partition(":"))
        normal = encoded.replace("-", "+").replace("_", "/").rstrip("=")
        keys[key_id] = base64.b64decode(normal + "=" * (-len(normal) % 4))
    return keys


def _mac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _ts(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime.datetime:
    """An ISO date or time; UTC unless it says otherwise. ValueError if it is neither."""
    parsed = datetime.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)


# -- reading the chains ---------------------------------------------------------------------------


async def _rows_after(
    conn: AsyncConnection, table: Table, tenant_id: uuid.UUID, after: int, below: int | None, limit: int
) -> list[dict[str, Any]]:
    query = select(table).where(table.c.tenant_id == tenant_id, table.c.seq > after)
    if below is not None:
        query = query.where(table.c.seq < below)
    rows = (await conn.execute(query.order_by(table.c.seq).limit(limit))).mappings().all()
    return [dict(row) for row in rows]


async def _first_seq_at(conn: AsyncConnection, table: Table, tenant_id: uuid.UUID, at: datetime.datetime) -> int | None:
    """The seq of the first row recorded at or after `at` (None: none is)."""
    when = table.c[TIME_COLUMNS[table.name]]
    found = await conn.scalar(select(func.min(table.c.seq)).where(table.c.tenant_id == tenant_id, when >= at))
    return None if found is None else int(found)


async def _head(conn: AsyncConnection, table: Table, tenant_id: uuid.UUID) -> tuple[int, bytes | None] | None:
    row = (
        await conn.execute(
            select(table.c.seq, table.c.row_hash)
            .where(table.c.tenant_id == tenant_id)
            .order_by(table.c.seq.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else (int(row.seq), row.row_hash)


def _canonical(table: Table, row: Mapping[str, Any]) -> str:
    message = canonical_message(table, row)
    return message[len(_ROW_PREFIX) :].decode()


# -- archive ------------------------------------------------------------------------------------------


@dataclass
class _TableSummary:
    rows: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    anchor: str | None = None
    head: str | None = None
    database_head: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "anchor": self.anchor,
            "head": self.head,
            "database_head": self.database_head,
        }


@dataclass(frozen=True, slots=True)
class ArchiveSummary:
    """What an archive holds (from its header, once verified) and its file's SHA-256."""

    tenant_id: uuid.UUID
    subdomain: str
    before: str
    sha256: str
    tables: dict[str, dict[str, Any]]
    unchained: int = 0
    # row_hash (hex, None when unchained) by seq, per table: what a purge checks its anchor against.
    hashes: dict[str, dict[int, str | None]] = field(default_factory=dict, repr=False)

    def lines(self) -> list[str]:
        out = []
        for name, table in self.tables.items():
            if table["rows"]:
                where = (
                    f"seq {table['first_seq']}..{table['last_seq']}, anchor {table['anchor'] or '-'}, "
                    f"head {table['head'] or '-'}"
                )
            else:
                where = "no rows"
            out.append(f"{name}: {table['rows']} rows ({where})")
        return out


async def write_archive(
    engine: AsyncEngine,
    keys: Mapping[str, bytes],
    tenant_id: uuid.UUID,
    subdomain: str,
    before: datetime.datetime,
    output: Path,
) -> ArchiveSummary:
    """Write the archive of `tenant_id`'s rows recorded before `before` to `output` (refused if it exists).

    One REPEATABLE READ snapshot, read-only, as the schema owner with the tenant set. Per table, the
    rows before the first one recorded at or after `before` (the rows a purge with that cutoff may
    delete). Written to `output`.partial, verified (verify_archive), then renamed; an archive that
    does not verify (the database's rows no longer match their hashes) is removed and ArchiveError
    raised.
    """
    if await asyncio.to_thread(output.exists):
        raise ArchiveError(f"{output} exists; archives are never overwritten")
    partial = output.with_name(output.name + ".partial")
    key_id = next(iter(keys))
    digest = hashlib.sha256()
    count = 0
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:

            def emit(value: Mapping[str, Any]) -> None:
                nonlocal count
                line = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
                digest.update(line)
                out.write(line)
                count += 1

            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
                async with conn.begin():  # one snapshot: the header's summary and the rows agree
                    await set_tenant(conn, tenant_id)
                    summaries, key_ids, belows = await _summaries(conn, tenant_id, before)
                    emit({
                        "format": ARCHIVE_FORMAT,
                        "version": _VERSION,
                        "tenant_id": str(tenant_id),
                        "subdomain": subdomain,
                        "before": _ts(before),
                        "created_at": _ts(datetime.datetime.now(datetime.UTC)),
                        "key_ids": sorted(key_ids),
                        "tables": {name: summary.as_json() for name, summary in summaries.items()},
                    })
                    for name in AUDIT_TABLE_NAMES:  # streamed in batches: memory does not grow with the trail
                        table, last = audit_table(name), 0
                        while True:
                            batch = await _rows_after(conn, table, tenant_id, last, belows[name], _BATCH)
                            for row in batch:
                                row_hash = None if row["row_hash"] is None else bytes(row["row_hash"]).hex()
                                emit({"table": name, "seq": row["seq"], "row_hash": row_hash,
                                      "canonical": _canonical(table, row)})
                            if len(batch) < _BATCH:
                                break
                            last = batch[-1]["seq"]
            mac = _mac(keys[key_id], _TRAILER_PREFIX + digest.digest())
            trailer = {"trailer": {"lines": count, "sha256": digest.hexdigest(), "key_id": key_id, "mac": mac}}
            out.write(json.dumps(trailer, separators=(",", ":")).encode() + b"\n")
        summary = await asyncio.to_thread(verify_archive, partial, keys)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, output)
    return summary


async def _summaries(
    conn: AsyncConnection, tenant_id: uuid.UUID, before: datetime.datetime
) -> tuple[dict[str, _TableSummary], set[str], dict[str, int | None]]:
    """Per table: what the archive will hold (counts, first and last seq, anchor, head, the database's
    head), the key ids its rows use, and the seq the archived rows stop below (None: every row)."""
    summaries: dict[str, _TableSummary] = {}
    key_ids: set[str] = set()
    belows: dict[str, int | None] = {}
    for name in AUDIT_TABLE_NAMES:
        table = audit_table(name)
        summary = summaries[name] = _TableSummary()
        head = await _head(conn, table, tenant_id)
        summary.database_head = {
            "seq": None if head is None else head[0],
            "hash": None if head is None or head[1] is None else bytes(head[1]).hex(),
        }
        below = belows[name] = await _first_seq_at(conn, table, tenant_id, before)
        scope = [table.c.tenant_id == tenant_id] + ([table.c.seq < below] if below is not None else [])
        span = select(func.count(), func.min(table.c.seq), func.max(table.c.seq)).where(*scope)
        stats = (await conn.execute(span)).one()
        summary.rows = int(stats[0])
        if not summary.rows:
            continue
        summary.first_seq, summary.last_seq = int(stats[1]), int(stats[2])
        ends = {
            int(row.seq): row
            for row in await conn.execute(
                select(table.c.seq, table.c.prev_hash, table.c.row_hash).where(
                    table.c.tenant_id == tenant_id, table.c.seq.in_([summary.first_seq, summary.last_seq])
                )
            )
        }
        first, last = ends[summary.first_seq], ends[summary.last_seq]
        summary.anchor = None if first.prev_hash is None else bytes(first.prev_hash).hex()
        summary.head = None if last.row_hash is None else bytes(last.row_hash).hex()
        used = await conn.execute(
            select(table.c.hash_key_id).where(*scope, table.c.hash_key_id.is_not(None)).distinct()
        )
        key_ids.update(str(key) for key in used.scalars())
    return summaries, key_ids, belows


# -- verify -------------------------------------------------------------------------------------------


def verify_archive(path: Path, keys: Mapping[str, bytes], *, keep_hashes: bool = False) -> ArchiveSummary:
    """Check an archive on its own (see the module docstring); ArchiveError naming the first fault.

    `keep_hashes`: the summary's `hashes` hold every row's hash (a purge's check needs them)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        return _verify(handle, keys, keep_hashes)


def _load(line: bytes, number: int) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArchiveError(f"line {number} is not JSON") from None
    if not isinstance(value, dict):
        raise ArchiveError(f"line {number} is not a JSON object")
    return value


def _verify(handle: IO[bytes], keys: Mapping[str, bytes], keep_hashes: bool) -> ArchiveSummary:
    digest = hashlib.sha256()
    first = handle.readline()
    if not first:
        raise ArchiveError("the archive is empty")
    header = _load(first, 1)
    if header.get("format") != ARCHIVE_FORMAT or header.get("version") != _VERSION:
        raise ArchiveError("line 1 is not a gwm audit archive header (version 1)")
    digest.update(first)
    try:
        tenant_id = str(uuid.UUID(str(header["tenant_id"])))
        declared: dict[str, dict[str, Any]] = dict(header["tables"])
    except (KeyError, ValueError, TypeError):
        raise ArchiveError("the header lacks tenant_id or tables") from None
    if set(declared) != set(AUDIT_TABLE_NAMES):
        raise ArchiveError(f"the header's tables are not {', '.join(AUDIT_TABLE_NAMES)}")
    state: dict[str, _TableSummary] = {name: _TableSummary() for name in AUDIT_TABLE_NAMES}
    order = 0
    previous_hash: dict[str, str | None] = {}
    unchained = 0
    hashes: dict[str, dict[int, str | None]] = {name: {} for name in AUDIT_TABLE_NAMES}
    trailer: dict[str, Any] | None = None
    trailer_line = 0
    number = 1
    for line in handle:
        number += 1
        if trailer is not None:
            raise ArchiveError(f"line {number}: lines after the trailer")
        value = _load(line, number)
        if "trailer" in value:
            trailer = value["trailer"] if isinstance(value["trailer"], dict) else {}
            trailer_line = number
            continue
        digest.update(line)
        name = value.get("table")
        if name not in state:
            raise ArchiveError(f"line {number}: unknown table {name!r}")
        position = AUDIT_TABLE_NAMES.index(name)
        if position < order:
            raise ArchiveError(f"line {number}: {name} rows after rows of a later table")
        order = position
        seq, row_hash, canonical = value.get("seq"), value.get("row_hash"), value.get("canonical")
        hash_ok = row_hash is None or isinstance(row_hash, str)
        if not (isinstance(seq, int) and isinstance(canonical, str) and hash_ok):
            raise ArchiveError(f"line {number}: a row needs seq, row_hash and canonical")
        where = f"line {number} ({name} seq {seq})"
        try:
            body = json.loads(canonical)
            columns = body["columns"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ArchiveError(f"{where}: its canonical text is not a row") from None
        if body.get("table") != name or columns.get("seq") != seq or columns.get("tenant_id") != tenant_id:
            raise ArchiveError(f"{where}: its canonical text is of another table, seq or tenant")
        summary = state[name]
        if summary.last_seq is not None and seq != summary.last_seq + 1:
            raise ArchiveError(f"{where}: gap: seq {summary.last_seq + 1} missing")
        prev = columns.get("prev_hash")
        if summary.first_seq is None:
            summary.first_seq, summary.anchor = seq, prev
            expected_prev = declared[name].get("anchor")
        else:
            expected_prev = previous_hash[name]
        if row_hash is None:
            if summary.head is not None:
                raise ArchiveError(f"{where}: unchained row: a row without a hash after chained rows")
            unchained += 1
        else:
            if prev != expected_prev:
                raise ArchiveError(f"{where}: broken link: prev_hash is not the previous row's row_hash")
            key_id = columns.get("hash_key_id")
            key = keys.get(key_id) if isinstance(key_id, str) else None
            if key is None:
                raise ArchiveError(f"{where}: unknown key id: signed with key {key_id!r}, which is not configured")
            expected = _mac(key, _ROW_PREFIX + canonical.encode())
            if not hmac.compare_digest(expected, row_hash):
                raise ArchiveError(f"{where}: hash mismatch: the row differs from what was signed")
        summary.rows += 1
        summary.last_seq = seq
        summary.head = row_hash
        previous_hash[name] = row_hash
        if keep_hashes:
            hashes[name][seq] = row_hash
    if trailer is None:
        raise ArchiveError("the archive has no trailer (cut short?)")
    key_id = trailer.get("key_id")
    key = keys.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        raise ArchiveError(f"line {trailer_line}: the trailer is signed with key {key_id!r}, which is not configured")
    if trailer.get("lines") != number - 1 or trailer.get("sha256") != digest.hexdigest():
        raise ArchiveError(f"line {trailer_line}: the trailer's line count or SHA-256 does not match the archive")
    if not hmac.compare_digest(_mac(key, _TRAILER_PREFIX + digest.digest()), str(trailer.get("mac"))):
        raise ArchiveError(f"line {trailer_line}: the trailer's HMAC does not match")
    for name, summary in state.items():
        claimed = declared[name]
        found = {k: v for k, v in summary.as_json().items() if k != "database_head"}
        if any(claimed.get(k) != v for k, v in found.items()):
            raise ArchiveError(f"the header's summary of {name} does not match its rows")
    return ArchiveSummary(
        tenant_id=uuid.UUID(tenant_id),
        subdomain=str(header.get("subdomain")),
        before=str(header.get("before")),
        sha256=_file_sha256(handle),
        tables=declared,
        unchained=unchained,
        hashes=hashes,
    )


def _file_sha256(handle: IO[bytes]) -> str:
    handle.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 16), b""):
        digest.update(chunk)
    return digest.hexdigest()


# -- purge -----------------------------------------------------------------------------------------------


async def purge_with_archive(
    engine: AsyncEngine,
    chain: AuditChain,
    keys: Mapping[str, bytes],
    tenant_id: uuid.UUID,
    before: datetime.datetime,
    archive: Path,
) -> PurgeReport:
    """Verify `archive`, then purge `tenant_id`'s rows before `before` only if the archive holds each one.

    One transaction: the purge runs (models/audit_chain.py purge_before), then for each table it
    deleted rows from, the archive must start at or before the first deleted seq and end at the row
    the kept chain links to (its row_hash equal to the first kept row's prev_hash, as the purge
    record's anchor says). Otherwise ArchiveError, and the transaction rolls back.
    """
    summary = await asyncio.to_thread(verify_archive, archive, keys, keep_hashes=True)
    if summary.tenant_id != tenant_id:
        raise ArchiveError(f"the archive is of tenant {summary.tenant_id}, not {tenant_id}")
    async with engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        firsts: dict[str, int | None] = {}
        for name in AUDIT_TABLE_NAMES:
            table = audit_table(name)
            found = await conn.scalar(select(func.min(table.c.seq)).where(table.c.tenant_id == tenant_id))
            firsts[name] = None if found is None else int(found)
        report = await chain.purge_before(
            conn, tenant_id, before, requested_by=f"gwm audit purge (archive sha256 {summary.sha256})"
        )
        kept = report.record["after_values"]["tables"]
        for name, deleted in report.deleted.items():
            if not deleted:
                continue
            archived, first_deleted, first_kept = summary.tables[name], firsts[name], kept[name]["first_seq"]
            hashes = summary.hashes[name]
            covered = (
                first_deleted is not None
                and first_kept is not None
                and archived["rows"] > 0
                and archived["first_seq"] <= first_deleted
                and first_kept - 1 in hashes
                and hashes[first_kept - 1] == kept[name]["anchor"]
            )
            if not covered:
                held = f"seq {archived['first_seq']}..{archived['last_seq']}" if archived["rows"] else "no rows"
                raise ArchiveError(
                    f"the archive does not cover the purge: {name} seq {first_deleted}.."
                    f"{None if first_kept is None else first_kept - 1} would be deleted, the archive holds {held}"
                    " (run gwm audit archive with the same --before first)"
                )
    return report


# -- tail ---------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, datetime.datetime):
        return _ts(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Interface):
        return str(value)
    if isinstance(value, ipaddress.IPv6Interface):
        return str(value)
    return value


def _tail_line(name: str, row: Mapping[str, Any]) -> dict[str, Any]:
    columns = {key: _plain(value) for key, value in row.items() if value is not None}
    return {
        "table": name,
        "tenant_id": columns.get("tenant_id"),
        "seq": row["seq"],
        "recorded_at": columns.get(TIME_COLUMNS[name]),
        "prev_hash": columns.pop("prev_hash", None),
        "row_hash": columns.pop("row_hash", None),
        "hash_key_id": columns.get("hash_key_id"),
        "columns": columns,
    }


def _merged(batches: Mapping[str, list[dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of every table merged by time; each table's rows keep their chain (seq) order."""

    Keyed = tuple[datetime.datetime, int, str, dict[str, Any]]

    def keyed(name: str, rows: Iterable[dict[str, Any]]) -> Iterator[Keyed]:
        position = AUDIT_TABLE_NAMES.index(name)
        for row in rows:
            yield row[TIME_COLUMNS[name]], position, name, row

    for _, _, name, row in heapq.merge(*(keyed(name, rows) for name, rows in batches.items()), key=lambda k: k[:2]):
        yield name, row


async def tail(
    engine: AsyncEngine,
    tenant_id: uuid.UUID,
    since: datetime.datetime,
    *,
    follow: bool = False,
    interval: float = 2.0,
    limit: int | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Rows recorded since `since`, as JSON-ready dicts; with `follow`, then every row appended after.

    Each poll is a short READ COMMITTED transaction: appends to one table commit in seq order (the
    chain's advisory lock is held until commit), so a poll sees a prefix and the cursor per table
    (the last seq yielded) never skips a row.
    """
    cursors: dict[str, int] = {}
    async with engine.connect() as conn:
        async with conn.begin():
            await set_tenant(conn, tenant_id)
            for name in AUDIT_TABLE_NAMES:
                table = audit_table(name)
                first = await _first_seq_at(conn, table, tenant_id, since)
                if first is not None:
                    cursors[name] = first - 1
                else:
                    head = await _head(conn, table, tenant_id)
                    cursors[name] = 0 if head is None else head[0]
    sent = 0
    while True:
        full = False
        batches: dict[str, list[dict[str, Any]]] = {}
        async with engine.connect() as conn:
            async with conn.begin():
                await set_tenant(conn, tenant_id)
                for name in AUDIT_TABLE_NAMES:
                    batch = await _rows_after(conn, audit_table(name), tenant_id, cursors[name], None, _BATCH)
                    batches[name] = batch
                    full = full or len(batch) == _BATCH
        for name, row in _merged(batches):
            cursors[name] = row["seq"]
            yield _tail_line(name, row)
            sent += 1
            if limit is not None and sent >= limit:
                return
        if full:
            continue
        if not follow:
            return
        await asyncio.sleep(interval)


async def tenant_of(engine: AsyncEngine, wanted: str) -> tuple[uuid.UUID, str] | None:
    """(id, subdomain) of the tenant `wanted` names (its id or subdomain, any case), or None."""
    async with engine.connect() as conn:
        ids = list((await conn.execute(text("SELECT tenant_id FROM gwm_tenant_ids()"))).scalars())
        await conn.rollback()
        for tenant_id in ids:
            await set_tenant(conn, tenant_id)
            subdomain = await conn.scalar(text("SELECT subdomain FROM tenants WHERE id = :t"), {"t": tenant_id})
            await conn.rollback()
            if wanted.lower() in {str(tenant_id), str(subdomain).lower()}:
                return tenant_id, str(subdomain)
    return None


# -- the command line (server/cli.py parses and resolves settings, then calls these) ----------------


def check_arguments(args: Any) -> int | None:
    """Refuse bad arguments of archive, tail and purge before any database is touched (exit 2), else None."""
    import sys

    for name in ("before", "since"):
        value = getattr(args, name, None)
        if value is None:
            continue
        try:
            parse_time(value)
        except ValueError:
            print(f"gwm: --{name} {value!r} is not an ISO date or time", file=sys.stderr)
            return 2
    if args.audit_command == "purge" and getattr(args, "archive", None) is None:
        print(
            "gwm: gwm audit purge deletes only rows held by a verified archive: write one with "
            "`gwm audit archive --tenant T --before DATE --output FILE` and pass it as --archive FILE",
            file=sys.stderr,
        )
        return 2
    if args.audit_command == "archive" and Path(args.output).exists():
        print(f"gwm: {args.output} exists; archives are never overwritten", file=sys.stderr)
        return 2
    if args.audit_command == "tail" and args.limit is not None and args.limit < 1:
        print("gwm: --limit must be at least 1", file=sys.stderr)
        return 2
    return None


def cli_verify(keys_setting: str, path: str) -> int:
    """`gwm audit verify --archive FILE`: no database, the audit keys only."""
    import sys

    try:
        summary = verify_archive(Path(path), audit_keys(keys_setting))
    except ArchiveError as exc:
        print(f"archive {path}: FAILED: {exc}")
        return 1
    print(f"archive {path}: tenant {summary.subdomain} ({summary.tenant_id}), rows recorded before {summary.before}")
    for line in summary.lines():
        print(f"  {line}")
    unchained = f", {summary.unchained} unchained rows not verifiable" if summary.unchained else ""
    print(f"archive {path}: ok (sha256 {summary.sha256}{unchained})")
    sys.stdout.flush()
    return 0


async def cli_run(engine: AsyncEngine, keys_setting: str, args: Any, tenant: tuple[uuid.UUID, str]) -> int:
    """`gwm audit archive`, `purge` (with --archive) and `tail` for one tenant."""
    import sys

    tenant_id, subdomain = tenant
    keys = audit_keys(keys_setting)
    if args.audit_command == "archive":
        output = Path(args.output)
        try:
            summary = await write_archive(engine, keys, tenant_id, subdomain, parse_time(args.before), output)
        except (ArchiveError, FileExistsError) as exc:
            print(f"gwm: archive not written: {exc}", file=sys.stderr)
            return 1
        print(f"{subdomain}: archived rows recorded before {summary.before} to {output}")
        for line in summary.lines():
            print(f"  {line}")
        print(f"archive {output}: verified (sha256 {summary.sha256})")
        return 0
    if args.audit_command == "purge":
        cutoff = parse_time(args.before)
        try:
            report = await purge_with_archive(
                engine, AuditChain.from_setting(keys_setting), keys, tenant_id, cutoff, Path(args.archive)
            )
        except ArchiveError as exc:
            print(f"gwm: purge refused, nothing deleted: {exc}", file=sys.stderr)
            return 1
        counts = ", ".join(f"{table} {n}" for table, n in report.deleted.items())
        print(f"{subdomain}: purged rows recorded before {cutoff.isoformat()}: {counts}")
        return 0
    async for row in tail(
        engine, tenant_id, parse_time(args.since), follow=args.follow, interval=args.interval, limit=args.limit
    ):
        sys.stdout.write(json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=str) + "\n")
        sys.stdout.flush()
    return 0
