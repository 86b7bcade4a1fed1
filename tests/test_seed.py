"""`gwm db seed`: the demo tenant and the synthetic benchmark tenants.

Pure tests check the generators (consistency, determinism, proportions); database tests check that
seeding is reproducible row for row: the demo twice in one database, and synthetic tenants seeded,
deleted and seeded again.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Set
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.permissions import SYSTEM_ROLES as SYSTEM_ROLE_PERMISSIONS
from models.audit_chain import delete_tenant
from models.db import set_tenant
from server.seed import SeedError, seed_demo, seed_synthetic
from server.seed._db import INSERT_ORDER, check_rows, dump_tenant, metadata_tables
from server.seed.demo import SUBDOMAIN, TENANT_ID, build_demo, demo_tenant_row
from server.seed.synthetic import build_synthetic_tenant, rows_per_tenant, sizes, subdomain

Tables = dict[str, list[dict[str, Any]]]


def _assert_consistent(
    tenant: dict[str, Any],
    tables: Tables,
    known_users: Set[uuid.UUID] = frozenset(),
    known_sources: Set[uuid.UUID] = frozenset(),
) -> None:
    """Every row is insertable as is, and every foreign key finds its target among the seed's rows."""
    md = metadata_tables()
    ids: dict[str, set[uuid.UUID]] = collections.defaultdict(set)
    ids["users"] |= known_users
    ids["external_opportunity_sources"] |= known_sources
    all_ids: list[uuid.UUID] = [tenant["id"]]
    for name in INSERT_ORDER:
        for row in tables[name]:
            ids[name].add(row["id"])
            all_ids.append(row["id"])
    assert len(all_ids) == len(set(all_ids)), "duplicate ids"
    for name in INSERT_ORDER:
        rows = tables[name]
        if not rows:
            continue
        check_rows(md[name], rows)
        for row in rows:
            assert row["tenant_id"] == tenant["id"], name
        for fk in md[name].foreign_key_constraints:
            ref = fk.referred_table.name
            if ref == "tenants":
                continue
            target = {e.column.name: e.parent.name for e in fk.elements}["id"]
            missing = [r[target] for r in rows if r.get(target) is not None and r[target] not in ids[ref]]
            assert not missing, f"{name}.{target} -> {ref}: {missing[:3]}"


# --------------------------------------------------------------------------------------------------
# Pure generators
# --------------------------------------------------------------------------------------------------


def test_demo_rows_are_consistent_and_cover_the_pipeline() -> None:
    system_user, manual_source = uuid.uuid4(), uuid.uuid4()
    tables = build_demo(system_user, manual_source)
    assert tables == build_demo(system_user, manual_source)
    _assert_consistent(demo_tenant_row(), tables, {system_user}, {manual_source})

    projects = tables["opportunity_projects"]
    assert len(projects) == 25
    assert {p["pipeline_stage"] for p in projects} == {f"phase_{i}" for i in range(7)}
    assert {p["project_status"] for p in projects} == {
        "active",
        "on_hold",
        "won",
        "lost",
        "no_bid",
        "cancelled_by_government",
        "withdrawn",
    }
    assert {p["external_source_id"] for p in projects} >= {manual_source}

    versions: dict[uuid.UUID, list[dict[str, Any]]] = collections.defaultdict(list)
    for v in tables["external_opportunity_data"]:
        versions[v["opportunity_project_id"]].append(v)
    assert set(versions) == {p["id"] for p in projects}
    for rows in versions.values():
        assert 1 <= len(rows) <= 3
        assert sorted(v["version_number"] for v in rows) == list(range(1, len(rows) + 1))
        assert [v["is_current_version"] for v in sorted(rows, key=lambda v: v["version_number"])][-1] is True
        assert sum(v["is_current_version"] for v in rows) == 1
    assert {len(v) for v in versions.values()} == {1, 2, 3}
    sam = [v for v in tables["external_opportunity_data"] if "noticeId" in v["raw_json_data"]]
    assert len(sam) > 25
    assert all(len(v["raw_json_data"]["noticeId"]) == 32 for v in sam)

    orgs = {o["id"]: o for o in tables["organizations"]}
    depth = {oid: 0 for oid in orgs}
    for oid in orgs:
        o = orgs[oid]
        while o["parent_organization_id"] is not None:
            depth[oid] += 1
            o = orgs[o["parent_organization_id"]]
    assert max(depth.values()) == 2  # department -> sub-agency -> office
    assert {o["organization_type"] for o in orgs.values()} >= {"teaming_partner", "competitor"}

    assert {d["processing_status"] for d in tables["documents"]} == {"no_object"}
    assert {a["entity_type"] for a in tables["activities"]} == {"opportunity_project"}
    assert tables["opportunity_project_overrides"] and tables["opportunity_project_contacts"]
    assert tables["capture_plans"] and tables["proposals"]
    assert {r["name"]: r["permissions"] for r in tables["roles"]} == {
        role.value: sorted(perms) for role, perms in SYSTEM_ROLE_PERMISSIONS.items()
    }
    assert all(r["is_system_role"] for r in tables["roles"])


def test_synthetic_rows_are_deterministic_and_proportional() -> None:
    tenant, tables = build_synthetic_tenant(7, 0, 50)
    assert (tenant, tables) == build_synthetic_tenant(7, 0, 50)
    _assert_consistent(tenant, tables)
    assert tenant["subdomain"] == subdomain(7, 0) == "scale-7-0"
    assert sum(len(v) for v in tables.values()) + 1 == rows_per_tenant(50)

    other_tenant, other = build_synthetic_tenant(8, 0, 50)
    assert other_tenant["id"] != tenant["id"]
    assert [p["solicitation_number"] for p in other["opportunity_projects"]] != [
        p["solicitation_number"] for p in tables["opportunity_projects"]
    ]
    # Tenant i does not depend on how many tenants are made, nor on the other tenants.
    assert build_synthetic_tenant(7, 1, 50)[0]["id"] not in (tenant["id"], other_tenant["id"])

    n = len(tables["opportunity_projects"])
    assert n == 50
    assert len(tables["opportunity_project_contacts"]) == 5 * n
    assert len(tables["documents"]) == 6 * n
    assert len(tables["capture_plans"]) == n
    assert len(tables["external_opportunity_data"]) == n
    assert all(
        v["is_current_version"] and v["version_number"] == 1 for v in tables["external_opportunity_data"]
    )
    assert len({p["created_at"] for p in tables["opportunity_projects"]}) == n  # no ties in the default order
    assert sizes(1000) == {"users": 50, "organizations": 200, "contacts": 2000, "sources": 3}


# --------------------------------------------------------------------------------------------------
# Against the database
# --------------------------------------------------------------------------------------------------


async def _dump(engine: AsyncEngine, tenant_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
    async with engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        return await dump_tenant(conn)


async def test_seed_demo_twice_leaves_every_table_identical(owner_engine: AsyncEngine) -> None:
    first = await seed_demo(owner_engine)
    before = await _dump(owner_engine, TENANT_ID)
    second = await seed_demo(owner_engine)
    after = await _dump(owner_engine, TENANT_ID)

    assert before == after
    assert second.counts == first.counts
    assert second.created is False
    assert first.subdomain == SUBDOMAIN and first.tenant_id == TENANT_ID

    c = first.counts
    assert c["tenants"] == 1
    assert c["users"] == 8  # seven people and the system user
    assert c["roles"] == 6 and c["user_roles"] >= 7
    assert c["external_opportunity_sources"] == 3  # SAM.gov, the JSON feed, Manual entry
    assert c["opportunity_projects"] == 25
    assert 25 < c["external_opportunity_data"] <= 75
    for table in (
        "opportunity_project_overrides",
        "organizations",
        "contacts",
        "opportunity_project_contacts",
        "documents",
        "activities",
        "capture_plans",
        "proposals",
        "external_data_changes",
    ):
        assert c[table] > 0, table
    assert {email for email, _ in first.users} == {u["email"] for u in after["users"] if not u["is_system"]}

    async with owner_engine.begin() as conn:
        await set_tenant(conn, TENANT_ID)
        current = await conn.scalar(
            text(
                "SELECT count(*) FROM (SELECT opportunity_project_id FROM external_opportunity_data "
                "GROUP BY 1 HAVING count(*) FILTER (WHERE is_current_version) = 1 "
                "AND min(version_number) = 1 AND max(version_number) = count(*) "
                "AND count(DISTINCT version_number) = count(*)) AS ok"
            )
        )
        assert current == 25
        roles = (
            await conn.execute(
                text(
                    "SELECT r.name, u.email FROM user_roles ur JOIN roles r ON r.id = ur.role_id "
                    "JOIN users u ON u.id = ur.user_id WHERE ur.opportunity_project_id IS NULL"
                )
            )
        ).all()
        assert {name for name, _ in roles} == {
            "Tenant Admin",
            "Capture Manager",
            "Proposal Manager",
            "BD Analyst",
            "Viewer",
            "Auditor",
        }


def _without_trigger_rows(dump: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Drop the tenant's system user and "Manual entry" source: the trigger makes them with random ids."""
    out = dict(dump)
    out["users"] = [r for r in dump["users"] if not r["is_system"]]
    out["external_opportunity_sources"] = [
        r for r in dump["external_opportunity_sources"] if r["source_name"] != "Manual entry"
    ]
    return out


async def _delete_tenant(engine: AsyncEngine, tenant_id: uuid.UUID) -> None:
    # Through the owner-only function: a plain DELETE is refused once the tenant has audit rows.
    async with engine.begin() as conn:
        await delete_tenant(conn, tenant_id)


async def test_seed_synthetic_is_reproducible(owner_engine: AsyncEngine) -> None:
    seed = 4242
    first = await seed_synthetic(owner_engine, scale=20, tenants=2, seed=seed, progress=False)
    assert [t.subdomain for t in first.tenants] == [f"scale-{seed}-0", f"scale-{seed}-1"]
    assert all(t.created for t in first.tenants)
    dumps = [_without_trigger_rows(await _dump(owner_engine, t.tenant_id)) for t in first.tenants]
    for t, dump in zip(first.tenants, dumps, strict=True):
        assert len(dump["opportunity_projects"]) == 20
        assert len(dump["documents"]) == 120
        assert sum(len(rows) for rows in dump.values()) == t.rows

    again = await seed_synthetic(owner_engine, scale=20, tenants=2, seed=seed, progress=False)
    assert not any(t.created for t in again.tenants)  # existing tenants are left alone
    assert [_without_trigger_rows(await _dump(owner_engine, t.tenant_id)) for t in again.tenants] == dumps

    with pytest.raises(SeedError, match="scale"):
        await seed_synthetic(owner_engine, scale=21, tenants=1, seed=seed, progress=False)

    for t in first.tenants:
        await _delete_tenant(owner_engine, t.tenant_id)
        assert not any((await _dump(owner_engine, t.tenant_id)).values())  # the cascade took everything
    rerun = await seed_synthetic(owner_engine, scale=20, tenants=2, seed=seed, progress=False)
    assert all(t.created for t in rerun.tenants)
    assert [_without_trigger_rows(await _dump(owner_engine, t.tenant_id)) for t in rerun.tenants] == dumps

    other = await seed_synthetic(owner_engine, scale=20, tenants=1, seed=seed + 1, progress=False)
    other_dump = _without_trigger_rows(await _dump(owner_engine, other.tenants[0].tenant_id))
    assert other.tenants[0].tenant_id not in {t.tenant_id for t in first.tenants}

    def content(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Ids and the tenant differ by construction; the point is that the data differs too.
        return [{k: v for k, v in r.items() if k not in ("id", "tenant_id", "storage_key")} for r in rows]

    for table in ("opportunity_projects", "contacts", "documents"):
        assert content(other_dump[table]) != content(dumps[0][table]), table


async def test_seed_synthetic_progress_bar_goes_to_stderr(
    owner_engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed_synthetic(owner_engine, scale=3, tenants=1, seed=99, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "scale-99-0" in captured.err and "rows" in captured.err
