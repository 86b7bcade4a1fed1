"""The audit chain: the one way rows enter audit_logs, change_history and permission_audit.

Every row of those tables carries `seq` (1, 2, 3... per tenant and table), `prev_hash` (the
previous row's `row_hash`; NULL for seq 1) and `row_hash`, an HMAC-SHA256 over the row's
canonical encoding (below) under a key the database never sees (`GWM_AUDIT_KEYS`), named by the
row's `hash_key_id`. Anyone with database access but without the key, the schema owner included,
cannot edit, delete or insert a row without `verify` naming the first row that no longer fits.
The tables are also append-only in the database (migration 0005): the server's role may not
UPDATE, DELETE or TRUNCATE them, and a trigger refuses the owner too unless it goes through the
owner-only purge functions (`purge_before`, `delete_tenant` here).

Appending, per (tenant, table): take a transaction-level advisory lock, read the last row's
(seq, row_hash), insert with seq + 1. The lock is held until the transaction ends, so append as
late as possible in a transaction, and within one transaction append to the tables in the order
audit_logs, change_history, permission_audit (two transactions taking two tables' locks in
opposite orders would deadlock; PostgreSQL detects it and aborts one). The writing transaction
must be READ COMMITTED: under REPEATABLE READ a row appended by another transaction after this
one's snapshot would be invisible, and the append is refused up front instead of failing later
on the unique (tenant_id, seq).

Canonical encoding (version 1): the bytes `gwm-audit-v1\\n` followed by UTF-8 JSON with sorted
keys and no whitespace, `{"columns": {...}, "table": "<table name>"}`. "columns" holds every
column of the table except row_hash whose value is not NULL (a NULL column is absent, so a
nullable column added later leaves older rows verifiable), each encoded by its column type:

    uuid         "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (lower case)
    timestamptz  "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, always six fraction digits)
    inet         "<packed address in lower-case hex>/<prefix length>" (a host address: /32 or /128)
    bytea        lower-case hex string
    boolean      true / false
    integer      JSON number, decimal digits
    text         JSON string
    jsonb        the value itself, canonical: object keys sorted, no whitespace, strings as JSON
                 strings (non-ASCII kept), numbers as `<digits>e<exponent>` with trailing zeros
                 moved into the exponent (so 100, 100.0 and 1e2 are all `1e2`, and 0 is `0`),
                 because PostgreSQL's jsonb keeps numbers as numeric and may print them
                 differently from how Python wrote them.

`id` and the row's timestamps are part of the hash, so they are set here (in Python) before the
insert rather than by column defaults; so is every other column that has a server default.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TextClause,
    bindparam,
    text,
)
from sqlalchemy.dialects.postgresql import INET, JSONB, TIMESTAMP, UUID
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from models.driver_sql import fetch
from models.tracing import TRACE_ID

__all__ = [
    "AUDIT_TABLE_NAMES",
    "PURGE_ACTION",
    "AuditChain",
    "AuditChainError",
    "ChainFault",
    "PurgeReport",
    "TableReport",
    "TenantDeletion",
    "audit_table",
    "canonical_message",
    "delete_tenant",
]

_log = logging.getLogger(__name__)

#: The chained tables, in the order one transaction appends to them (see the module docstring).
AUDIT_TABLE_NAMES: tuple[str, ...] = ("audit_logs", "change_history", "permission_audit")

#: audit_logs.action_type of the row a retention purge leaves behind.
PURGE_ACTION = "audit.purge"

_CHAIN_COLUMNS = ("seq", "prev_hash", "row_hash", "hash_key_id")
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_KEY_BYTES = 32
_PREFIX = b"gwm-audit-v1\n"
# First argument of pg_advisory_xact_lock(int4, int4) per table ("GWA" + 1..3); the second is
# hashtext(tenant_id::text). gwm_audit_purge() and gwm_delete_tenant() (migration 0005) take the same.
# The lock classes gwm_audit_chain_heads (migration 0017), gwm_audit_purge and gwm_delete_tenant take.
_LOCK_CLASS = {name: 0x47574100 + i for i, name in enumerate(AUDIT_TABLE_NAMES, start=1)}
_VERIFY_BATCH = 2000


class AuditChainError(RuntimeError):
    """An append or purge cannot be done as asked (no tenant set, wrong isolation, bad row, bad key)."""


@dataclass(frozen=True, slots=True)
class ChainFault:
    """The first row of a table whose place in the chain does not hold.

    `reason` is one of: "hash mismatch" (the row differs from what was signed), "broken link"
    (prev_hash is not the previous row's row_hash), "gap" (rows are missing before it),
    "unknown key id" (signed with a key not configured), "unanchored start" (the oldest row is not
    seq 1 and no purge record accounts for the rows before it), "unchained row" (a row without a
    hash after chained rows).
    """

    table: str
    tenant_id: uuid.UUID
    seq: int
    row_id: uuid.UUID | None
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.table} tenant {self.tenant_id} seq {self.seq} id {self.row_id}: {self.reason}{detail}"


@dataclass(slots=True)
class TableReport:
    """What `verify` found in one table of one tenant."""

    table: str
    tenant_id: uuid.UUID
    rows: int = 0
    # Rows written before migration 0005 (seq set, no hash): listed, not verifiable.
    unchained: int = 0
    first_seq: int | None = None
    head_seq: int | None = None
    head_hash: bytes | None = None
    fault: ChainFault | None = None

    @property
    def ok(self) -> bool:
        return self.fault is None

    def __str__(self) -> str:
        tail = f", {self.unchained} unchained before migration 0005" if self.unchained else ""
        if self.head_seq is None:
            where = "empty"
        else:
            head = self.head_hash.hex() if self.head_hash is not None else "unchained"
            where = f"seq {self.first_seq}..{self.head_seq}, head {head}"
        status = "ok" if self.fault is None else f"FAILED at {self.fault}"
        rows = f"{self.rows} row" + ("" if self.rows == 1 else "s")
        return f"{self.table} tenant {self.tenant_id}: {rows} ({where}{tail}): {status}"


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What `purge_before` removed, and the audit_logs row that records it."""

    tenant_id: uuid.UUID
    before: datetime.datetime
    deleted: dict[str, int]
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TenantDeletion:
    """What `delete_tenant` removed: the tenant's audit rows per table and each chain's head."""

    tenant_id: uuid.UUID
    subdomain: str
    audit_rows: dict[str, int] = field(default_factory=dict)
    heads: dict[str, tuple[int, str | None]] = field(default_factory=dict)


class AuditChain:
    """Appends to and verifies the audit tables' hash chains with a set of HMAC keys.

    The first key signs; the others only verify (rotation: put the new key first, keep the old
    ones listed while rows they signed are kept).
    """

    def __init__(self, keys: Mapping[str, bytes], current_key_id: str | None = None) -> None:
        if not keys:
            raise AuditChainError("the audit chain needs at least one key")
        checked: dict[str, bytes] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                raise AuditChainError(f"audit key id {key_id!r} must be 1-32 letters, digits, '-' or '_'")
            if not isinstance(key, bytes | bytearray) or len(key) != _KEY_BYTES:
                raise AuditChainError(f"audit key {key_id!r} must be exactly {_KEY_BYTES} bytes")
            checked[key_id] = bytes(key)
        current = next(iter(checked)) if current_key_id is None else current_key_id
        if current not in checked:
            raise AuditChainError(f"current audit key id {current!r} is not among the configured keys")
        self._keys = checked
        self._current = current

    @classmethod
    def from_setting(cls, value: str) -> AuditChain:
        """Build from GWM_AUDIT_KEYS, "kid:base64-32-bytes[,kid:...]"; the first key signs.

        Standard or URL-safe base64, padded or not. Errors name key ids, never keys.
        """
        keys: dict[str, bytes] = {}
        for position, entry in enumerate(value.split(","), start=1):
            key_id, separator, encoded = (part.strip() for part in entry.partition(":"))
            if not separator or not key_id or not encoded:
                raise AuditChainError(f"entry {position} of GWM_AUDIT_KEYS is not 'key_id:base64key'")
            if key_id in keys:
                raise AuditChainError(f"audit key id {key_id!r} appears twice in GWM_AUDIT_KEYS")
            normal = encoded.replace("-", "+").replace("_", "/").rstrip("=")
            try:
                keys[key_id] = base64.b64decode(normal + "=" * (-len(normal) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise AuditChainError(f"audit key {key_id!r} in GWM_AUDIT_KEYS is not valid base64") from None
        return cls(keys)

    def __repr__(self) -> str:
        return f"AuditChain(key_ids={list(self._keys)!r}, current_key_id={self._current!r})"

    @property
    def current_key_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    # -- appending -------------------------------------------------------------------------

    def append_sync(
        self, connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Append `rows` to `table`'s chain for the connection's tenant (app.tenant_id); return them as inserted.

        Runs inside the connection's current transaction (a flush hook's, for instance): it takes
        the (tenant, table) advisory lock, which is held until that transaction ends. Each row is
        a mapping of column name to value; `tenant_id` may be omitted (it must equal app.tenant_id
        if given); `id` and the row's timestamps are filled in when absent, as is every column with
        a server default; `seq`, `prev_hash`, `row_hash` and `hash_key_id` are the chain's and may
        not be given. The returned dicts hold every column, chain columns included.
        """
        (prepared,) = self.append_many_sync(connection, [(table, rows)])
        return prepared

    def append_many_sync(
        self,
        connection: Connection,
        batches: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]],
        *,
        notify: tuple[str, str] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """`append_sync` for several tables at once, in two round trips: one statement takes the
        (tenant, table) locks and reads the heads (gwm_audit_chain_heads, migration 0017), one
        inserts every table's rows. `batches` name each table at most once, in the order
        AUDIT_TABLE_NAMES (the order every transaction takes their locks in). Returns the rows as
        inserted, per batch. `notify` (channel, payload): `pg_notify` in the inserting statement (the
        notification is delivered at COMMIT, like any other); only when there are rows to insert.
        """
        tables, wanted = _wanted(batches, notify)
        if not wanted:
            return [[] for _ in batches]
        heads = connection.execute(_HEADS, {"tables": [table.name for table, _ in wanted]}).all()
        written = self._chained(heads, wanted)
        _insert(connection, [(table, written[table.name]) for table, _ in wanted], notify)
        return [written.get(table.name, []) if rows else [] for table, (_, rows) in zip(tables, batches, strict=True)]

    async def append_many(
        self,
        conn: AsyncConnection,
        batches: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]],
        *,
        notify: tuple[str, str] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """`append_many_sync` for an async connection: the same two statements and rows, run on the driver's
        connection (models/driver_sql.py) when they can be, else through SQLAlchemy."""
        tables, wanted = _wanted(batches, notify)
        if not wanted:
            return [[] for _ in batches]
        heads = await fetch(conn, _HEADS, {"tables": [table.name for table, _ in wanted]})
        if heads is None:
            return await conn.run_sync(self.append_many_sync, batches, notify=notify)
        written = self._chained(heads, wanted)
        appended = [(table, written[table.name]) for table, _ in wanted]
        single = _single_statement(appended, notify)
        if single is None or await fetch(conn, *single) is None:
            await conn.run_sync(_insert, appended, notify)
        return [written.get(table.name, []) if rows else [] for table, (_, rows) in zip(tables, batches, strict=True)]

    def _chained(
        self, heads: Sequence[Any], wanted: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]]
    ) -> dict[str, list[dict[str, Any]]]:
        """The rows of `wanted` completed and chained after `heads` (gwm_audit_chain_heads' rows: table
        name, isolation, tenant, seq, row_hash)."""
        by_table = {head[0]: head for head in heads}
        _, isolation, tenant_id, _, _ = by_table[wanted[0][0].name]
        if tenant_id is None:
            raise AuditChainError("no tenant is set on this transaction (app.tenant_id): audit rows belong to one")
        if isolation != "read committed":
            raise AuditChainError(
                f"audit rows are appended in READ COMMITTED transactions, not {isolation.upper()}: "
                "a row another transaction appended after this snapshot would be invisible"
            )
        now = datetime.datetime.now(datetime.UTC)
        key = self._keys[self._current]
        written: dict[str, list[dict[str, Any]]] = {}
        for table, rows in wanted:
            head_seq, head_hash = by_table[table.name][3:5]
            seq, prev = (0, None) if head_seq is None else (int(head_seq), head_hash)
            prepared: list[dict[str, Any]] = []
            for source in rows:
                row = _complete(table, source, tenant_id, now)
                seq += 1
                row.update(seq=seq, prev_hash=prev, hash_key_id=self._current)
                row["row_hash"] = prev = _mac(key, canonical_message(table, row))
                prepared.append(row)
            written[table.name] = prepared
        return written

    async def append(
        self, conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """`append_sync` for an async connection (same transaction, same rules)."""
        return await conn.run_sync(self.append_sync, table, rows)

    # -- verifying -------------------------------------------------------------------------

    def row_hash(self, table: Table, row: Mapping[str, Any]) -> bytes | None:
        """The HMAC `row` should carry under its hash_key_id; None if that key is not configured."""
        key = self._keys.get(row.get("hash_key_id") or "")
        return None if key is None else _mac(key, canonical_message(_table(table), row))

    def verify_sync(self, connection: Connection, table: Table) -> TableReport:
        """Check `table`'s chain for the connection's tenant (app.tenant_id) from its oldest row to its head.

        Reads in batches by seq; run it in one REPEATABLE READ transaction for a consistent
        picture. The oldest remaining row must be seq 1, or be the first row the latest retention
        purge kept (recorded in audit_logs, itself checked against its hash), its prev_hash the
        anchor that purge recorded. Stops at the first fault.
        """
        table = _table(table)
        tenant = connection.execute(text("SELECT NULLIF(current_setting('app.tenant_id', true), '')")).scalar()
        if tenant is None:
            raise AuditChainError("no tenant is set on this transaction (app.tenant_id)")
        report = TableReport(table=table.name, tenant_id=uuid.UUID(tenant))
        anchor = self._purge_anchor(connection, table.name, report)
        if report.fault is not None:
            return report
        previous: dict[str, Any] | None = None
        for row in _rows_by_seq(connection, table, report.tenant_id):
            report.fault = self._check(table, row, previous, anchor, report)
            if report.fault is not None:
                return report
            report.rows += 1
            if row["row_hash"] is None:
                report.unchained += 1
            if report.first_seq is None:
                report.first_seq = row["seq"]
            report.head_seq, report.head_hash = row["seq"], row["row_hash"]
            previous = row
        return report

    async def verify(self, conn: AsyncConnection, table: Table) -> TableReport:
        """`verify_sync` for an async connection."""
        return await conn.run_sync(self.verify_sync, table)

    def _check(
        self,
        table: Table,
        row: dict[str, Any],
        previous: dict[str, Any] | None,
        anchor: tuple[int, bytes | None] | None,
        report: TableReport,
    ) -> ChainFault | None:
        def fault(reason: str, detail: str = "") -> ChainFault:
            return ChainFault(table.name, report.tenant_id, row["seq"], row.get("id"), reason, detail)

        seq = row["seq"]
        if previous is None:
            expected_seq, expected_prev = anchor if anchor is not None else (1, None)
            if seq != expected_seq:
                if anchor is None and seq > 1:
                    return fault("unanchored start", f"the oldest row is seq {seq} and no purge record explains it")
                return fault("gap", f"the oldest row should be seq {expected_seq}")
        else:
            if seq != previous["seq"] + 1:
                missing = f"seq {previous['seq'] + 1}" + (f"..{seq - 1}" if seq - 1 > previous["seq"] + 1 else "")
                return fault("gap", f"{missing} missing")
            expected_prev = previous["row_hash"]
        if row["row_hash"] is None:
            if previous is not None and previous["row_hash"] is not None:
                return fault("unchained row", "a row without a hash after chained rows")
            return None
        if row["prev_hash"] != expected_prev:
            return fault("broken link", "prev_hash is not the previous row's row_hash")
        key_id = row.get("hash_key_id")
        if key_id not in self._keys:
            return fault("unknown key id", f"signed with key {key_id!r}, which is not configured")
        if not hmac.compare_digest(self.row_hash(table, row) or b"", row["row_hash"]):
            return fault("hash mismatch", "the row differs from what was signed")
        return None

    def _purge_anchor(
        self, connection: Connection, table_name: str, report: TableReport
    ) -> tuple[int, bytes | None] | None:
        """(first seq, its prev_hash) recorded by the latest retention purge, or None if never purged."""
        logs = audit_table("audit_logs")
        found = (
            connection.execute(
                logs.select()
                .where(logs.c.tenant_id == report.tenant_id, logs.c.action_type == PURGE_ACTION)
                .order_by(logs.c.seq.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        if found is None:
            return None
        record: dict[str, Any] = dict(found)

        def fault(reason: str, detail: str) -> ChainFault:
            return ChainFault("audit_logs", report.tenant_id, record["seq"], record["id"], reason, detail)

        if record.get("hash_key_id") not in self._keys:
            report.fault = fault("unknown key id", "the latest purge record is signed with a key not configured")
            return None
        expected = self.row_hash(logs, record)
        if expected is None or record["row_hash"] is None or not hmac.compare_digest(expected, record["row_hash"]):
            report.fault = fault("hash mismatch", "the latest purge record differs from what was signed")
            return None
        kept = ((record.get("after_values") or {}).get("tables") or {}).get(table_name)
        if not kept or kept.get("first_seq") is None:
            return None
        anchor = kept.get("anchor")
        return int(kept["first_seq"]), None if anchor is None else bytes.fromhex(anchor)

    # -- retention -------------------------------------------------------------------------

    async def purge_before(
        self,
        conn: AsyncConnection,
        tenant_id: uuid.UUID,
        before: datetime.datetime,
        *,
        requested_by: str,
    ) -> PurgeReport:
        """Delete `tenant_id`'s audit rows recorded before `before`, and record that in audit_logs.

        `conn` is the schema owner's, in a READ COMMITTED transaction the caller commits: the
        owner-only function gwm_audit_purge() deletes, per table, the oldest rows up to the first
        one recorded at or after `before` (never the newest row, which carries the chain on), and
        returns each table's first remaining seq and its prev_hash. An audit_logs row
        (action_type "audit.purge") records those anchors, signed like any other, so `verify`
        starts each table there and a row deleted from the start outside a purge still shows.
        """
        if before.tzinfo is None:
            raise AuditChainError("the purge cutoff must be timezone-aware")
        result = await conn.execute(
            text("SELECT table_name, deleted, first_seq, anchor FROM gwm_audit_purge(:tenant_id, :before)"),
            {"tenant_id": tenant_id, "before": before},
        )
        tables: dict[str, dict[str, Any]] = {}
        deleted: dict[str, int] = {}
        for row in result:
            deleted[row.table_name] = int(row.deleted)
            tables[row.table_name] = {
                "deleted": int(row.deleted),
                "first_seq": None if row.first_seq is None else int(row.first_seq),
                "anchor": None if row.anchor is None else bytes(row.anchor).hex(),
            }
        total = sum(deleted.values())
        record = {
            "action_type": PURGE_ACTION,
            "entity_type": "audit_trail",
            "operation_description": f"retention purge: {total} audit rows recorded before {_timestamp(before)}",
            "after_values": {"before": _timestamp(before), "requested_by": requested_by, "tables": tables},
            "risk_level": "high",
        }
        logs = audit_table("audit_logs")
        (written,) = await self.append(conn, logs, [record])
        return PurgeReport(tenant_id=tenant_id, before=before, deleted=deleted, record=written)


async def delete_tenant(conn: AsyncConnection, tenant_id: uuid.UUID) -> TenantDeletion:
    """Delete a whole tenant, its audit rows included, through the owner-only gwm_delete_tenant().

    `conn` is the schema owner's; the caller commits. The tenant's own audit trail goes with it,
    so what was deleted (row counts and each chain's head, to compare with an externally kept
    head) is returned and logged here (logger "models.audit_chain", WARNING); the database
    function writes the same to the PostgreSQL server log.
    """
    rows = (
        await conn.execute(
            text("SELECT subdomain, table_name, row_count, head_seq, head_hash FROM gwm_delete_tenant(:t)"),
            {"t": tenant_id},
        )
    ).all()
    if not rows:
        raise AuditChainError(f"no tenant {tenant_id}")
    deletion = TenantDeletion(tenant_id=tenant_id, subdomain=rows[0].subdomain)
    for row in rows:
        deletion.audit_rows[row.table_name] = int(row.row_count)
        head = None if row.head_hash is None else bytes(row.head_hash).hex()
        deletion.heads[row.table_name] = (int(row.head_seq or 0), head)
    _log.warning(
        "tenant %s (%s) deleted with its audit trail: %s",
        tenant_id,
        deletion.subdomain,
        "; ".join(
            f"{name} {deletion.audit_rows[name]} rows, head seq {seq} hash {head or '-'}"
            for name, (seq, head) in deletion.heads.items()
        ),
    )
    return deletion


# -- canonical encoding ----------------------------------------------------------------------


def canonical_message(table: Table, row: Mapping[str, Any]) -> bytes:
    """The bytes a row's HMAC is computed over (see the module docstring)."""
    plan = _PLANS.get(table)
    if plan is None:
        plan = _PLANS[table] = _plan(table)
    columns, tail = plan
    get = row.get
    body = ",".join([key + encode(value, name) for name, key, encode in columns if (value := get(name)) is not None])
    return _PREFIX + ('{"columns":{' + body + tail).encode()


# Table -> its canonical encoding's plan, built once: per column but row_hash, in sorted name order, (name,
# its JSON key and colon, the encoder of its type), and the message's end (`},"table":"<name>"}`). The
# same encoding as `_encode_column` column by column, without finding each column's encoding on every row.
_PLANS: dict[Table, tuple[tuple[tuple[str, str, Any], ...], str]] = {}


def _plan(table: Table) -> tuple[tuple[tuple[str, str, Any], ...], str]:
    columns = sorted((column.name, column.type) for column in table.columns if column.name != "row_hash")
    return (
        tuple((name, json.dumps(name) + ":", _encoder(kind)) for name, kind in columns),
        '},"table":' + json.dumps(table.name) + "}",
    )


def _encoder(kind: Any) -> Any:
    """`_encode_column` for values of the column type `kind`: (value, column name) -> encoded value."""
    if isinstance(kind, UUID):
        return _encode_uuid
    if isinstance(kind, TIMESTAMP):
        return _encode_timestamp
    # The other types in `_encode_column`'s order (its first match is the type's encoding).
    if isinstance(kind, INET):
        return functools.partial(_encode_typed, kind)
    if isinstance(kind, JSONB):
        return _encode_jsonb
    if isinstance(kind, LargeBinary):
        return _encode_bytes
    if isinstance(kind, Boolean):
        return _encode_boolean
    if isinstance(kind, Integer):
        return _encode_integer
    if isinstance(kind, String | Text):
        return _encode_text
    return functools.partial(_encode_typed, kind)


# json.dumps(value, ensure_ascii=False) of a string, without building an encoder per call.
_TEXT = json.JSONEncoder(ensure_ascii=False).encode


def _encode_jsonb(value: Any, name: str) -> str:
    return _json(value)


def _encode_bytes(value: Any, name: str) -> str:
    # Hex digits: the JSON string needs no escaping.
    return '"' + bytes(value).hex() + '"'


def _encode_boolean(value: Any, name: str) -> str:
    if not isinstance(value, bool):
        raise AuditChainError(f"column {name} is boolean, got {type(value).__name__}")
    return "true" if value else "false"


def _encode_integer(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AuditChainError(f"column {name} is an integer, got {type(value).__name__}")
    return str(value)


def _encode_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise AuditChainError(f"column {name} is text, got {type(value).__name__}")
    return _TEXT(value)


def _encode_typed(kind: Any, value: Any, name: str) -> str:
    return _encode_column(kind, value, name)


def _encode_uuid(value: Any, name: str) -> str:
    # A UUID's text is hex digits and dashes: its JSON string needs no escaping.
    return '"' + str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))) + '"'


def _encode_timestamp(value: Any, name: str) -> str:
    return '"' + _timestamp(value, name) + '"'


def _encode_column(kind: Any, value: Any, name: str) -> str:
    if isinstance(kind, UUID):
        return json.dumps(str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))))
    if isinstance(kind, TIMESTAMP):
        return json.dumps(_timestamp(value, name))
    if isinstance(kind, INET):
        return json.dumps(_inet(value))
    if isinstance(kind, JSONB):
        return _json(value)
    if isinstance(kind, LargeBinary):
        return json.dumps(bytes(value).hex())
    if isinstance(kind, Boolean):
        if not isinstance(value, bool):
            raise AuditChainError(f"column {name} is boolean, got {type(value).__name__}")
        return "true" if value else "false"
    if isinstance(kind, Integer):
        if isinstance(value, bool) or not isinstance(value, int):
            raise AuditChainError(f"column {name} is an integer, got {type(value).__name__}")
        return str(value)
    if isinstance(kind, String | Text):
        if not isinstance(value, str):
            raise AuditChainError(f"column {name} is text, got {type(value).__name__}")
        return json.dumps(value, ensure_ascii=False)
    raise AuditChainError(f"column {name}: no canonical encoding for type {kind!r}")


def _timestamp(value: Any, name: str = "timestamp") -> str:
    if not isinstance(value, datetime.datetime) or value.tzinfo is None:
        raise AuditChainError(f"column {name} needs a timezone-aware datetime, got {value!r}")
    utc = value.astimezone(datetime.UTC)
    if utc.year < 1000:  # strftime writes such a year without leading zeros; isoformat would pad it
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as strftime("%Y-%m-%dT%H:%M:%S.%fZ"), a few times faster: "...+00:00" -> "...Z".
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _inet(value: Any) -> str:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return f"{value.packed.hex()}/{value.max_prefixlen}"
    interface = ipaddress.ip_interface(str(value))
    return f"{interface.ip.packed.hex()}/{interface.network.prefixlen}"


def _json(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return _TEXT(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join([_json(v) for v in value]) + "]"
    if isinstance(value, Mapping):
        items = sorted([(_json_key(k), v) for k, v in value.items()])
        return "{" + ",".join([_TEXT(k) + ":" + _json(v) for k, v in items]) + "}"
    raise AuditChainError(f"no JSON encoding for {type(value).__name__}")


def _json_key(key: Any) -> str:
    # As json.dumps converts keys, which is what the database then stores.
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key)
    raise AuditChainError(f"JSON object keys must be strings, got {type(key).__name__}")


def _number(value: int | float) -> str:
    if isinstance(value, float) and not (value == value and abs(value) != float("inf")):
        raise AuditChainError("NaN and infinity are not JSON numbers")
    sign, digits, exponent = Decimal(repr(value) if isinstance(value, float) else value).as_tuple()
    assert isinstance(exponent, int)
    text_digits = "".join(map(str, digits)).lstrip("0")
    if not text_digits:
        return "0"
    stripped = text_digits.rstrip("0")
    exponent += len(text_digits) - len(stripped)
    return f"{'-' if sign else ''}{stripped}e{exponent}"


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


# -- rows ------------------------------------------------------------------------------------


# Locks and heads of the tables named, in one round trip (migration 0017 explains why a function).
_HEADS = text(
    "SELECT h.table_name, h.isolation, h.tenant, h.seq, h.row_hash FROM public.gwm_audit_chain_heads(:tables) AS h"
).bindparams(bindparam("tables", type_=ARRAY(Text())))
# Bind parameters one statement may carry (PostgreSQL's protocol allows 32767).
_MAX_PARAMETERS = 30000
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


def _insert(
    connection: Connection,
    batches: Sequence[tuple[Table, list[dict[str, Any]]]],
    notify: tuple[str, str] | None = None,
) -> None:
    """Insert each table's rows: one statement for all of them (multi-row VALUES, a data-modifying
    WITH per table) unless that would exceed the bind-parameter limit, then one executemany each.
    `notify` (channel, payload) is sent by the same statement (its SELECT list), or by one of its own
    after the executemanys."""
    size = sum(len(rows) * len(table.columns) for table, rows in batches)
    if size > _MAX_PARAMETERS:
        for table, rows in batches:
            connection.execute(table.insert(), rows)
        if notify is not None:
            connection.execute(_NOTIFY, {"channel": notify[0], "payload": notify[1]})
        return
    single = _single_statement(batches, notify)
    if single is None:  # one table without a notification: one statement text whatever the number of rows
        table, rows = batches[0]
        connection.execute(table.insert(), rows)
        return
    connection.execute(*single)


def _single_statement(
    batches: Sequence[tuple[Table, list[dict[str, Any]]]], notify: tuple[str, str] | None
) -> tuple[TextClause, dict[str, Any]] | None:
    """`_insert`'s one statement for `batches` and its parameters; None when `_insert` does otherwise (more
    parameters than a statement may carry, or one table's rows without a notification)."""
    if sum(len(rows) * len(table.columns) for table, rows in batches) > _MAX_PARAMETERS:
        return None
    if len(batches) == 1 and notify is None:
        return None
    shape = tuple((table.name, len(rows)) for table, rows in batches)
    params: dict[str, Any] = {}
    for table, rows in batches:
        get_names = _parameter_names(table, len(rows))
        for names, row in zip(get_names, rows, strict=True):
            get = row.get
            for parameter, column in names:
                params[parameter] = get(column)
    if notify is not None:
        params["gwm_notify_channel"], params["gwm_notify_payload"] = notify
    return _appending(shape, notify is not None), params


@functools.lru_cache(maxsize=64)
def _parameter_names(table: Table, count: int) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Per row of `count` rows of `table`: (parameter name, column name) of each column (`_appending`)."""
    columns = [column.name for column in table.columns]
    return tuple(tuple((f"{table.name}_{i}_{name}", name) for name in columns) for i in range(count))


def _wanted(
    batches: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]], notify: tuple[str, str] | None
) -> tuple[list[Table], list[tuple[Table, Sequence[Mapping[str, Any]]]]]:
    """The batches' tables (checked: chained tables, each once, in AUDIT_TABLE_NAMES order), and the
    batches with rows."""
    tables = [_table(table) for table, _ in batches]
    order = [AUDIT_TABLE_NAMES.index(table.name) for table in tables]
    if order != sorted(set(order)):
        raise AuditChainError(f"audit tables are appended once each, in the order {', '.join(AUDIT_TABLE_NAMES)}")
    wanted = [(table, rows) for table, (_, rows) in zip(tables, batches, strict=True) if rows]
    if not wanted and notify is not None:
        raise AuditChainError("a notification goes with audit rows: there are none to append")
    return tables, wanted


@functools.lru_cache(maxsize=128)
def _appending(shape: tuple[tuple[str, int], ...], notify: bool) -> TextClause:
    """The statement appending `shape` ((table name, row count), ...): a data-modifying WITH per table
    (multi-row VALUES of every column, each value a parameter named `<table>_<row>_<column>` of the
    column's type), its SELECT list sending the notification when `notify`. One statement object per
    shape, so SQLAlchemy compiles it once and reuses it (a multi-row VALUES built with
    `insert().values([...])` is never cached: it was compiled again on every append)."""
    parts: list[str] = []
    parameters: list[Any] = []
    for name, count in shape:
        table = audit_table(name)
        columns = list(table.columns)
        rows: list[str] = []
        for i in range(count):
            names = [f"{name}_{i}_{column.name}" for column in columns]
            rows.append("(" + ", ".join(f":{n}" for n in names) + ")")
            parameters.extend(bindparam(n, type_=column.type) for n, column in zip(names, columns, strict=True))
        listed = ", ".join(column.name for column in columns)
        # Table and column names from the models, parameters by name: no value is ever in the text.
        parts.append(f"appended_{name} AS (INSERT INTO {name} ({listed}) VALUES {', '.join(rows)})")  # noqa: S608
    tail = "SELECT pg_notify(:gwm_notify_channel, :gwm_notify_payload)" if notify else "SELECT 1"
    if notify:
        parameters += [bindparam("gwm_notify_channel", type_=Text), bindparam("gwm_notify_payload", type_=Text)]
    return text(f"WITH {', '.join(parts)} {tail}").bindparams(*parameters)


def _full(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """Every column of `table` (multi-row VALUES need the same keys in every row)."""
    return {column.name: row.get(column.name) for column in table.columns}


def _table(table: Any) -> Table:
    table = getattr(table, "__table__", table)
    if not isinstance(table, Table) or table.name not in AUDIT_TABLE_NAMES:
        raise AuditChainError(f"{getattr(table, 'name', table)!r} is not a chained audit table")
    return table


def audit_table(name: str) -> Table:
    """The Table of one of AUDIT_TABLE_NAMES."""
    from models.audit_log import AuditLog, ChangeHistory, PermissionAudit

    tables = {m.__tablename__: m.__table__ for m in (AuditLog, ChangeHistory, PermissionAudit)}
    return tables[name]


def _complete(
    table: Table, source: Mapping[str, Any], tenant_id: uuid.UUID, now: datetime.datetime
) -> dict[str, Any]:
    """Every column of the row as it will be stored: defaults filled in here, not by the database."""
    plan = _COMPLETIONS.get(table)
    if plan is None:
        plan = _COMPLETIONS[table] = _completion(table)
    known, columns, limited = plan
    unknown = source.keys() - known
    if unknown:
        raise AuditChainError(f"{table.name} has no column(s) {', '.join(sorted(unknown))}")
    reserved = source.keys() & _CHAIN_SET
    if reserved:
        raise AuditChainError(f"{', '.join(sorted(reserved))} belong to the audit chain and may not be given")
    row = dict(source)
    given_tenant = row.get("tenant_id")
    if given_tenant is not None and uuid.UUID(str(given_tenant)) != tenant_id:
        raise AuditChainError(f"a {table.name} row for tenant {given_tenant} in a transaction of tenant {tenant_id}")
    row["tenant_id"] = tenant_id
    if "trace_id" not in row and "trace_id" in table.c:
        row["trace_id"] = TRACE_ID.get()  # the writing request's trace id, beside its request id (W25)
    for column, name, nullable in columns:
        if row.get(name) is not None:
            continue
        if nullable and name in row:
            continue  # an explicit None on a nullable column stays NULL
        if name == "id":
            row[name] = uuid.uuid4()
        elif column.server_default is not None:
            row[name] = _server_default(column, now)
        elif nullable:
            row[name] = None
        else:
            raise AuditChainError(f"{table.name}.{name} is required")
        if row[name] is None and not nullable:
            raise AuditChainError(f"{table.name}.{name} is required")
    for name, length in limited:
        value = row.get(name)
        # varchar(n) silently drops trailing spaces beyond n; store what is hashed.
        if isinstance(value, str) and len(value) > length and not value[length:].strip(" "):
            row[name] = value[:length]
    return row


_CHAIN_SET = frozenset(_CHAIN_COLUMNS)
# Table -> what `_complete` needs of it, found once: its column names; (column, name, nullable) of each
# column the chain does not set, in table order; (name, length) of each string column with a length.
_COMPLETIONS: dict[Table, tuple[frozenset[str], tuple[tuple[Any, str, bool], ...], tuple[tuple[str, int], ...]]] = {}


def _completion(
    table: Table,
) -> tuple[frozenset[str], tuple[tuple[Any, str, bool], ...], tuple[tuple[str, int], ...]]:
    return (
        frozenset(table.c.keys()),
        tuple((c, c.name, bool(c.nullable)) for c in table.columns if c.name not in _CHAIN_SET),
        tuple(
            (c.name, c.type.length) for c in table.columns if isinstance(c.type, String) and c.type.length
        ),
    )


def _server_default(column: Any, now: datetime.datetime) -> Any:
    """The Python value of a column's server default (the few forms the audit tables use)."""
    value = _default_of(column)
    return now if value is _NOW else value


_NOW = object()


@functools.lru_cache(maxsize=256)
def _default_of(column: Any) -> Any:
    """`_server_default` without the clock, once per column (rendering the default's SQL is not free)."""
    arg = getattr(column.server_default, "arg", None)
    if isinstance(arg, str):  # server_default="low": a string literal
        return arg
    sql = str(arg).strip()
    if sql == "now()":
        return _NOW
    if sql == "true":
        return True
    if sql == "false":
        return False
    if re.fullmatch(r"-?\d+", sql):
        return int(sql)
    quoted = re.fullmatch(r"'((?:[^']|'')*)'(?:::[a-z ]+)?", sql)
    if quoted and isinstance(column.type, String | Text):
        return quoted.group(1).replace("''", "'")
    raise AuditChainError(f"{column.table.name}.{column.name}: cannot evaluate its default {sql!r}; give a value")


def _rows_by_seq(connection: Connection, table: Table, tenant_id: uuid.UUID) -> Iterable[dict[str, Any]]:
    last = 0
    while True:
        batch = (
            connection.execute(
                table.select()
                .where(table.c.tenant_id == tenant_id, table.c.seq > last)
                .order_by(table.c.seq)
                .limit(_VERIFY_BATCH)
            )
            .mappings()
            .all()
        )
        for row in batch:
            yield dict(row)
        if len(batch) < _VERIFY_BATCH:
            return
        last = batch[-1]["seq"]
