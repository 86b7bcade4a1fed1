"""`gwm audit archive`, `verify --archive`, `purge --archive` and `tail` (server/audit_commands.py).

An archive verifies on its own (the audit keys, no database), any edit of it fails, a purge deletes
only rows a verified archive holds (else nothing is deleted), and tail streams what was written in
chain order.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.audit_chain import PURGE_ACTION, delete_tenant
from models.db import set_tenant
from tests.audit.conftest import append, rows_for, tampering
from tests.support.db import TEST_AUDIT_KEYS, TenantRef, create_tenant

UTC = datetime.UTC
OLD = datetime.datetime(2020, 1, 1, tzinfo=UTC)
CUTOFF = "2024-01-01"


async def _aged(owner_engine: AsyncEngine, tenant: TenantRef) -> dict[str, list[dict[str, Any]]]:
    """Per table, 3 rows recorded in 2020 and 2 recorded now; change_history's last old row is a parent."""
    written: dict[str, list[dict[str, Any]]] = {}
    for table, column in (("audit_logs", "timestamp_utc"), ("change_history", "created_at"),
                          ("permission_audit", "timestamp_utc")):
        written[table] = await append(owner_engine, tenant, table, rows_for(table, tenant, 3, **{column: OLD}))
    for table in ("audit_logs", "permission_audit"):
        written[table] += await append(owner_engine, tenant, table, rows_for(table, tenant, 2))
    written["change_history"] += await append(
        owner_engine, tenant, "change_history",
        rows_for("change_history", tenant, 2, parent_change_id=written["change_history"][2]["id"]),
    )
    return written


async def _seqs(engine: AsyncEngine, tenant: TenantRef, table: str) -> list[int]:
    async with engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        return list((await conn.execute(text(f"SELECT seq FROM {table} ORDER BY seq"))).scalars())


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(v, ensure_ascii=False, separators=(",", ":")) + "\n" for v in lines),
                    encoding="utf-8")


async def _archive(gwm: Any, tenant: TenantRef, path: Path, before: str = CUTOFF) -> Any:
    return await gwm("audit", "archive", "--tenant", tenant.subdomain, "--before", before, "--output", str(path))


async def test_an_archive_holds_the_old_rows_and_verifies_without_a_database(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = await _aged(owner_engine, doomed)
    path = tmp_path / "trail.jsonl"
    run = await _archive(gwm, doomed, path)
    assert run.code == 0, run.err
    assert run.out.splitlines()[0] == (
        f"{doomed.subdomain}: archived rows recorded before 2024-01-01T00:00:00.000000Z to {path}"
    )
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not list(tmp_path.glob("*.partial"))

    header, *rows, trailer = _lines(path)
    assert header["format"] == "gwm-audit-archive" and header["tenant_id"] == str(doomed.id)
    assert header["key_ids"] == ["test1"]
    for table, kept in written.items():
        summary = header["tables"][table]
        assert (summary["rows"], summary["first_seq"], summary["last_seq"]) == (3, 1, 3)
        assert summary["anchor"] is None  # seq 1: nothing before it
        assert summary["head"] == kept[2]["row_hash"].hex()
        assert summary["database_head"] == {"seq": 5, "hash": kept[4]["row_hash"].hex()}
    assert [(r["table"], r["seq"]) for r in rows] == [
        (t, s) for t in ("audit_logs", "change_history", "permission_audit") for s in (1, 2, 3)
    ]
    assert json.loads(rows[0]["canonical"])["columns"]["action_type"] == "test.0"  # readable as it is
    assert trailer["trailer"]["lines"] == 10 and trailer["trailer"]["key_id"] == "test1"

    # No database at all: an unreachable one would fail any command that used it.
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://gwm:x@127.0.0.1:9/nowhere")
    monkeypatch.setenv("GWM_APP_DATABASE_URL", "postgresql+asyncpg://gwm:x@127.0.0.1:9/nowhere")
    checked = await gwm("audit", "verify", "--archive", str(path))
    assert checked.code == 0, checked.out + checked.err
    assert f"archive {path}: tenant {doomed.subdomain} ({doomed.id}), rows recorded before 2024-01-01" in checked.out
    assert "  audit_logs: 3 rows (seq 1..3, anchor -, head " in checked.out
    assert checked.out.splitlines()[-1].startswith(f"archive {path}: ok (sha256 ")


async def test_an_archive_after_a_purge_starts_at_the_recorded_anchor(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef, tmp_path: Path
) -> None:
    written = await _aged(owner_engine, doomed)
    first = tmp_path / "2023.jsonl"
    assert (await _archive(gwm, doomed, first)).code == 0
    purged = await gwm("audit", "purge", "--tenant", doomed.subdomain, "--before", CUTOFF, "--yes",
                       "--archive", str(first))
    assert purged.code == 0, purged.err
    second = tmp_path / "2100.jsonl"
    assert (await _archive(gwm, doomed, second, before="2100-01-01")).code == 0
    header = _lines(second)[0]
    # permission_audit kept seq 4.. ; its first archived row links to the last row of the first archive.
    assert header["tables"]["permission_audit"]["first_seq"] == 4
    assert header["tables"]["permission_audit"]["anchor"] == written["permission_audit"][2]["row_hash"].hex()
    assert _lines(first)[0]["tables"]["permission_audit"]["head"] == header["tables"]["permission_audit"]["anchor"]
    assert (await gwm("audit", "verify", "--archive", str(second))).code == 0


def _edit_canonical(lines: list[dict[str, Any]]) -> None:
    body = json.loads(lines[2]["canonical"])
    body["columns"]["action_type"] = "test.edited"
    lines[2]["canonical"] = json.dumps(body, separators=(",", ":"))


def _drop_middle_row(lines: list[dict[str, Any]]) -> None:
    del lines[2]


def _drop_last_row(lines: list[dict[str, Any]]) -> None:
    del lines[-2]


def _edit_header(lines: list[dict[str, Any]]) -> None:
    lines[0]["before"] = "2030-01-01T00:00:00.000000Z"


def _swap_rows(lines: list[dict[str, Any]]) -> None:
    lines[1], lines[2] = lines[2], lines[1]


def _forge_row_hash(lines: list[dict[str, Any]]) -> None:
    lines[3]["row_hash"] = "00" * 32


def _drop_trailer(lines: list[dict[str, Any]]) -> None:
    del lines[-1]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_edit_canonical, "line 3 (audit_logs seq 2): hash mismatch: the row differs from what was signed"),
        (_drop_middle_row, "line 3 (audit_logs seq 3): gap: seq 2 missing"),
        (_drop_last_row, "the trailer's line count or SHA-256 does not match the archive"),
        (_edit_header, "the trailer's line count or SHA-256 does not match the archive"),
        (_swap_rows, "line 2 (audit_logs seq 2): broken link"),
        (_forge_row_hash, "line 4 (audit_logs seq 3): hash mismatch"),
        (_drop_trailer, "the archive has no trailer (cut short?)"),
    ],
)
async def test_a_tampered_archive_fails(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef, tmp_path: Path,
    tamper: Callable[[list[dict[str, Any]]], None], reason: str,
) -> None:
    await _aged(owner_engine, doomed)
    path = tmp_path / "trail.jsonl"
    assert (await _archive(gwm, doomed, path)).code == 0
    lines = _lines(path)
    tamper(lines)
    _write(path, lines)
    run = await gwm("audit", "verify", "--archive", str(path))
    assert run.code == 1
    assert run.out.startswith(f"archive {path}: FAILED: ") and reason in run.out, run.out
    # ... and a purge relying on it deletes nothing.
    refused = await gwm("audit", "purge", "--tenant", doomed.subdomain, "--before", CUTOFF, "--yes",
                        "--archive", str(path))
    assert refused.code == 1 and "purge refused, nothing deleted" in refused.err and reason in refused.err
    assert await _seqs(owner_engine, doomed, "audit_logs") == [1, 2, 3, 4, 5]


async def test_an_archive_needs_the_keys_that_signed_it(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef, tmp_path: Path
) -> None:
    await _aged(owner_engine, doomed)
    path = tmp_path / "trail.jsonl"
    assert (await _archive(gwm, doomed, path)).code == 0
    other = "test2:" + base64.b64encode(secrets.token_bytes(32)).decode()
    run = await gwm("audit", "verify", "--archive", str(path), keys=other)
    assert run.code == 1 and "unknown key id: signed with key 'test1', which is not configured" in run.out
    # The same id with another key: every row fails its HMAC.
    forged = "test1:" + base64.b64encode(secrets.token_bytes(32)).decode()
    run = await gwm("audit", "verify", "--archive", str(path), keys=forged)
    assert run.code == 1 and "line 2 (audit_logs seq 1): hash mismatch" in run.out
    # Rotation: the new key first, the old one still listed, verifies.
    run = await gwm("audit", "verify", "--archive", str(path), keys=f"{other},{TEST_AUDIT_KEYS}")
    assert run.code == 0, run.out


async def test_verify_of_a_missing_or_foreign_file_fails(gwm: Any, tmp_path: Path) -> None:
    run = await gwm("audit", "verify", "--archive", str(tmp_path / "none.jsonl"))
    assert run.code == 1 and "cannot read" in run.out
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"hello": 1}\n', encoding="utf-8")
    run = await gwm("audit", "verify", "--archive", str(junk))
    assert run.code == 1 and "line 1 is not a gwm audit archive header" in run.out
    junk.write_text("not json\n", encoding="utf-8")
    assert "line 1 is not JSON" in (await gwm("audit", "verify", "--archive", str(junk))).out
    junk.write_text("", encoding="utf-8")
    assert "the archive is empty" in (await gwm("audit", "verify", "--archive", str(junk))).out


async def test_purge_only_after_a_verified_archive_that_covers_it(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef, tmp_path: Path
) -> None:
    await _aged(owner_engine, doomed)
    before = {t: await _seqs(owner_engine, doomed, t) for t in ("audit_logs", "change_history", "permission_audit")}

    no_archive = await gwm("audit", "purge", "--tenant", doomed.subdomain, "--before", CUTOFF, "--yes")
    assert no_archive.code == 2 and "deletes only rows held by a verified archive" in no_archive.err

    # An archive of an earlier cutoff holds none of the rows this purge would delete.
    early = tmp_path / "early.jsonl"
    assert (await _archive(gwm, doomed, early, before="2019-01-01")).code == 0
    run = await gwm("audit", "purge", "--tenant", doomed.subdomain, "--before", CUTOFF, "--yes",
                    "--archive", str(early))
    assert run.code == 1
    assert ("the archive does not cover the purge: audit_logs seq 1..3 would be deleted, "
            "the archive holds no rows") in run.err

    # Another tenant's archive.
    other = await create_tenant(owner_engine)
    await append(owner_engine, other, "audit_logs", rows_for("audit_logs", other, 2, timestamp_utc=OLD))
    foreign = tmp_path / "foreign.jsonl"
    assert (await _archive(gwm, other, foreign)).code == 0
    run = await gwm("audit", "purge", "--tenant", doomed.subdomain, "--before", CUTOFF, "--yes",
                    "--archive", str(foreign))
    assert run.code == 1 and f"the archive is of tenant {other.id}, not {doomed.id}" in run.err
    async with owner_engine.begin() as conn:
        await delete_tenant(conn, other.id)

    # Nothing was deleted by any refused purge (each rolled back whole, its record included).
    for table, seqs in before.items():
        assert await _seqs(owner_engine, doomed, table) == seqs

    # The covering archive: the purge runs, and its record names the archive.
    good = tmp_path / "good.jsonl"
    assert (await _archive(gwm, doomed, good)).code == 0
    sha = (await gwm("audit", "verify", "--archive", str(good))).out.split("sha256 ")[-1].rstrip(")\n")
    run = await gwm("audit", "purge", "--tenant", doomed.subdomain, "--before", CUTOFF, "--yes", "--archive", str(good))
    assert run.code == 0, run.err
    assert run.out == (f"{doomed.subdomain}: purged rows recorded before 2024-01-01T00:00:00+00:00: "
                       "audit_logs 3, change_history 2, permission_audit 3\n")
    assert await _seqs(owner_engine, doomed, "change_history") == [3, 4, 5]  # a kept change's parent stays
    async with owner_engine.begin() as conn:
        await set_tenant(conn, doomed.id)
        requested_by = await conn.scalar(
            text("SELECT after_values->>'requested_by' FROM audit_logs WHERE action_type = :a"), {"a": PURGE_ACTION}
        )
    assert requested_by == f"gwm audit purge (archive sha256 {sha})"
    assert (await gwm("audit", "verify", "--tenant", doomed.subdomain)).code == 0

    # A purge reaching further than the archive is refused.
    run = await gwm("audit", "purge", "--tenant", doomed.subdomain, "--before", "2100-01-01", "--yes",
                    "--archive", str(good))
    assert run.code == 1
    assert "does not cover the purge: audit_logs seq 4..5 would be deleted, the archive holds seq 1..3" in run.err


async def test_archive_refuses_an_existing_file_a_bad_time_and_a_broken_chain(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef, tmp_path: Path
) -> None:
    written = await _aged(owner_engine, doomed)
    existing = tmp_path / "there.jsonl"
    existing.write_text("keep me\n", encoding="utf-8")
    run = await _archive(gwm, doomed, existing)
    assert run.code == 2 and "exists; archives are never overwritten" in run.err
    assert existing.read_text(encoding="utf-8") == "keep me\n"
    run = await _archive(gwm, doomed, tmp_path / "x.jsonl", before="yesterday")
    assert run.code == 2 and "--before 'yesterday' is not an ISO date or time" in run.err
    missing = await gwm("audit", "archive", "--tenant", "no-such-tenant", "--before", CUTOFF,
                        "--output", str(tmp_path / "y.jsonl"))
    assert missing.code == 2 and "no tenant 'no-such-tenant'" in missing.err

    # Rows altered in the database: the archive would not verify, so none is left behind.
    async with tampering(owner_engine, "audit_logs", doomed) as conn:
        await conn.execute(text("UPDATE audit_logs SET action_type = 'test.x' WHERE id = :id"),
                           {"id": written["audit_logs"][1]["id"]})
    path = tmp_path / "broken.jsonl"
    run = await _archive(gwm, doomed, path)
    assert run.code == 1 and "archive not written" in run.err and "audit_logs seq 2): hash mismatch" in run.err
    assert not path.exists() and not list(tmp_path.glob("*.partial"))


async def test_tail_streams_what_was_written_in_chain_order(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef
) -> None:
    await _aged(owner_engine, doomed)
    since = datetime.datetime.now(UTC)
    logs = await append(owner_engine, doomed, "audit_logs", rows_for("audit_logs", doomed, 3))
    perms = await append(owner_engine, doomed, "permission_audit", rows_for("permission_audit", doomed, 2))
    run = await gwm("audit", "tail", "--tenant", doomed.subdomain, "--since", since.isoformat())
    assert run.code == 0, run.err
    lines = [json.loads(line) for line in run.out.splitlines()]
    assert [(x["table"], x["seq"]) for x in lines] == [("audit_logs", 6), ("audit_logs", 7), ("audit_logs", 8),
                                                       ("permission_audit", 6), ("permission_audit", 7)]
    first = lines[0]
    assert first["tenant_id"] == str(doomed.id) and first["row_hash"] == logs[0]["row_hash"].hex()
    assert first["prev_hash"] == logs[0]["prev_hash"].hex() and first["hash_key_id"] == "test1"
    assert first["columns"]["action_type"] == "test.0" and first["columns"]["id"] == str(logs[0]["id"])
    assert lines[-1]["row_hash"] == perms[-1]["row_hash"].hex()
    # From the start: every row, each table in seq order.
    run = await gwm("audit", "tail", "--tenant", doomed.subdomain, "--since", "2000-01-01")
    everything = [json.loads(line) for line in run.out.splitlines()]
    assert len(everything) == 5 + 5 + 5 + 3 + 2
    for table in ("audit_logs", "change_history", "permission_audit"):
        seqs = [x["seq"] for x in everything if x["table"] == table]
        assert seqs == sorted(seqs) == list(range(1, len(seqs) + 1))
    times = [x["recorded_at"] for x in everything]
    assert times == sorted(times)
    bad = await gwm("audit", "tail", "--tenant", doomed.subdomain, "--since", "soon")
    assert bad.code == 2 and "--since 'soon' is not an ISO date or time" in bad.err


async def test_tail_follow_streams_rows_appended_after_it_started(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef
) -> None:
    await append(owner_engine, doomed, "audit_logs", rows_for("audit_logs", doomed, 2, timestamp_utc=OLD))
    since = datetime.datetime.now(UTC).isoformat()
    following = asyncio.create_task(gwm("audit", "tail", "--tenant", doomed.subdomain, "--since", since,
                                        "--follow", "--interval", "0.05", "--limit", "4"))
    await asyncio.sleep(0.5)
    assert not following.done()
    for n in range(4):
        await append(owner_engine, doomed, "audit_logs", rows_for("audit_logs", doomed, 1, action_type=f"later.{n}"))
        await asyncio.sleep(0.05)
    run = await asyncio.wait_for(following, timeout=60)
    assert run.code == 0, run.err
    lines = [json.loads(line) for line in run.out.splitlines()]
    assert [(x["seq"], x["columns"]["action_type"]) for x in lines] == [(3 + n, f"later.{n}") for n in range(4)]


async def test_archive_and_tail_read_in_batches(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import server.audit_commands as commands

    monkeypatch.setattr(commands, "_BATCH", 2)  # every table spans several batches
    await _aged(owner_engine, doomed)
    path = tmp_path / "trail.jsonl"
    assert (await _archive(gwm, doomed, path, before="2100-01-01")).code == 0
    header, *rows, _ = _lines(path)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5] * 3
    assert all(header["tables"][t]["rows"] == 5 for t in header["tables"])
    assert (await gwm("audit", "verify", "--archive", str(path))).code == 0
    run = await gwm("audit", "tail", "--tenant", doomed.subdomain, "--since", "2000-01-01")
    assert len(run.out.splitlines()) == 15


async def test_every_column_type_survives_archive_and_tail(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef, tmp_path: Path
) -> None:
    (row,) = await append(owner_engine, doomed, "audit_logs", [{
        "action_type": "test.types", "entity_type": "organization", "ip_address": "2001:db8::7",
        "user_agent": "agent ünïcode", "after_values": {"n": 1.5, "big": 10**20, "list": [True, None, "é"]},
        "request_id": "req-types", "timestamp_utc": OLD,
    }])
    path = tmp_path / "types.jsonl"
    assert (await _archive(gwm, doomed, path)).code == 0
    assert (await gwm("audit", "verify", "--archive", str(path))).code == 0
    run = await gwm("audit", "tail", "--tenant", doomed.subdomain, "--since", "2000-01-01")
    (line,) = [json.loads(x) for x in run.out.splitlines()]
    assert line["row_hash"] == row["row_hash"].hex()
    columns = line["columns"]
    assert columns["ip_address"] in {"2001:db8::7", "2001:db8::7/128"}
    assert columns["user_agent"] == "agent ünïcode" and columns["request_id"] == "req-types"
    assert columns["after_values"] == {"n": 1.5, "big": 10**20, "list": [True, None, "é"]}
    assert columns["timestamp_utc"] == "2020-01-01T00:00:00.000000Z" == line["recorded_at"]
