"""Opportunity projects through the read API: relations both ways, effective values, the pipeline
summary, the root list (filters, orders, keyset pages across inserts), statement counts, node and
cross-tenant reads. Data is committed under `fresh_tenant`; every assertion names exact ids."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql
from tests.support.sqlcount import count_statements

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _gid(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def _ids(connection: dict[str, Any]) -> list[str]:
    return [n["rowId"] for n in connection["nodes"]]


def _s(*rows: Any) -> list[str]:
    return [str(r.id) for r in rows]


async def _project(conn: Any, tenant: TenantRef, **columns: Any) -> Any:
    return await make(conn, "opportunity_projects", tenant, **columns)


async def _version(
    conn: Any, tenant: TenantRef, project: Any, *, current: bool = True, **columns: Any
) -> Any:
    columns.setdefault("data_snapshot_timestamp", T0)
    return await make(
        conn,
        "external_opportunity_data",
        tenant,
        {"opportunity_projects": project.id},
        is_current_version=current,
        **columns,
    )


async def _override(
    conn: Any, tenant: TenantRef, project: Any, field: str, value: Any, *, active: bool = True
) -> Any:
    return await make(
        conn,
        "opportunity_project_overrides",
        tenant,
        {"opportunity_projects": project.id},
        field_name=field,
        override_value=json.dumps(value),
        is_active=active,
    )


# -- relations ----------------------------------------------------------------------------------------

RELATIONS_QUERY = """
query ($id: ID!) {
  node(id: $id) {
    ... on OpportunityProject {
      rowId projectStatus pipelineStage priorityLevel syncStatus archivedAt
      externalSource { rowId }
      captureManager { rowId } proposalManager { rowId } createdBy { rowId } archivedBy { rowId }
      externalOpportunityData(first: 10) { nodes { rowId } }
      overrides(first: 10) { nodes { rowId fieldName } }
      contacts(first: 10) { totalCount nodes { rowId contact { rowId } opportunityProject { rowId } } }
      documents(first: 10) { nodes { rowId } }
      activities(first: 10) { totalCount nodes { rowId } }
      capturePlans(first: 10) { nodes { rowId } }
      proposals(first: 10) { nodes { rowId } }
      pollingConfigurations(first: 10) { nodes { rowId } }
      externalDataChanges(first: 10) { nodes { rowId } }
      apiIntegrationLogs(first: 10) { nodes { rowId } }
      userRoles(first: 10) { nodes { rowId } }
      history(first: 10) { nodes { rowId } }
      currentExternalData { rowId }
    }
  }
}
"""


async def test_relations_in_both_directions_return_exactly_the_related_rows(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    t = fresh_tenant
    async with owner_engine.begin() as conn:
        await set_tenant(conn, t.id)
        users = [await make(conn, "users", t) for _ in range(4)]
        source = await make(conn, "external_opportunity_sources", t)
        p = await _project(
            conn,
            t,
            external_source_id=source.id,
            assigned_capture_manager=users[0].id,
            assigned_proposal_manager=users[1].id,
            created_by=users[2].id,
            archived_by=users[3].id,
            archived_at=T0,
            pipeline_stage="phase_3",
            priority_level="critical",
            sync_status="synced",
        )
        other = await _project(conn, t)
        refs = {"opportunity_projects": p.id, "external_opportunity_sources": source.id}
        old = await _version(conn, t, p, current=False, version_number=1)
        new = await _version(conn, t, p, version_number=2, data_snapshot_timestamp=T0 + timedelta(days=1))
        ov_title = await _override(conn, t, p, "title", "Local title")
        ov_desc = await _override(conn, t, p, "description", "Local description", active=False)
        contacts = [await make(conn, "contacts", t) for _ in range(2)]
        links = [
            await make(
                conn,
                "opportunity_project_contacts",
                t,
                {**refs, "contacts": c.id},
                created_at=T0 + timedelta(i),
            )
            for i, c in enumerate(contacts)
        ]
        link_other = await make(
            conn,
            "opportunity_project_contacts",
            t,
            {"opportunity_projects": other.id, "contacts": contacts[0].id},
        )
        docs = [
            await make(conn, "documents", t, opportunity_project_id=p.id, created_at=T0 + timedelta(i))
            for i in range(2)
        ]
        acts = [await make(conn, "activities", t, refs, activity_date=T0 + timedelta(i)) for i in range(2)]
        # Same entity_id, another entity_type: not the project's.
        await make(conn, "activities", t, refs, entity_type="contact")
        plans = [await make(conn, "capture_plans", t, refs, created_at=T0 + timedelta(i)) for i in range(2)]
        proposals = [await make(conn, "proposals", t, refs, created_at=T0 + timedelta(i)) for i in range(2)]
        polls = [
            await make(conn, "polling_configurations", t, refs, created_at=T0 + timedelta(i))
            for i in range(2)
        ]
        changes = [
            await make(conn, "external_data_changes", t, refs, change_timestamp=T0 + timedelta(i))
            for i in range(2)
        ]
        logs = [
            await make(
                conn,
                "api_integration_logs",
                t,
                refs,
                opportunity_project_id=p.id,
                api_call_timestamp=T0 + timedelta(i),
            )
            for i in range(2)
        ]
        role = await make(conn, "roles", t)
        grants = [
            await make(
                conn,
                "user_roles",
                t,
                {"users": u.id, "roles": role.id},
                opportunity_project_id=p.id,
                assigned_at=T0 + timedelta(i),
            )
            for i, u in enumerate(users[:2])
        ]
        history = [
            await make(conn, "change_history", t, refs, change_timestamp=T0 + timedelta(i)) for i in range(2)
        ]

    body = await gql(client, RELATIONS_QUERY, {"id": _gid("OpportunityProject", p.id)}, token=admin_token)
    node = body["data"]["node"]
    assert node["rowId"] == str(p.id)
    assert (node["projectStatus"], node["pipelineStage"], node["priorityLevel"], node["syncStatus"]) == (
        "ACTIVE",
        "PHASE_3",
        "CRITICAL",
        "SYNCED",
    )
    assert node["archivedAt"] == "2026-03-01T12:00:00.000000Z"
    assert node["externalSource"]["rowId"] == str(source.id)
    assert [node[f]["rowId"] for f in ("captureManager", "proposalManager", "createdBy", "archivedBy")] == _s(
        *users
    )
    assert _ids(node["externalOpportunityData"]) == _s(new, old)  # newest first
    assert _ids(node["overrides"]) == _s(ov_desc, ov_title)  # by field name, inactive ones too
    assert _ids(node["contacts"]) == _s(*links) and node["contacts"]["totalCount"] == 2
    assert [n["contact"]["rowId"] for n in node["contacts"]["nodes"]] == _s(*contacts)
    assert {n["opportunityProject"]["rowId"] for n in node["contacts"]["nodes"]} == {str(p.id)}
    assert _ids(node["documents"]) == _s(docs[1], docs[0])
    assert _ids(node["activities"]) == _s(acts[1], acts[0]) and node["activities"]["totalCount"] == 2
    assert _ids(node["capturePlans"]) == _s(plans[1], plans[0])
    assert _ids(node["proposals"]) == _s(proposals[1], proposals[0])
    assert _ids(node["pollingConfigurations"]) == _s(*polls)
    assert _ids(node["externalDataChanges"]) == _s(changes[1], changes[0])
    assert _ids(node["apiIntegrationLogs"]) == _s(logs[1], logs[0])
    assert _ids(node["userRoles"]) == _s(*grants)
    assert _ids(node["history"]) == _s(history[1], history[0])
    assert node["currentExternalData"] == {"rowId": str(new.id)}

    reverse = await gql(
        client,
        """query ($o: ID!, $l: ID!, $c: ID!) {
          override: node(id: $o) { ... on OpportunityProjectOverride {
            fieldName overrideValue isActive opportunityProject { rowId } createdBy { rowId } } }
          link: node(id: $l) { ... on OpportunityProjectContact {
            opportunityProject { rowId } contact { rowId } createdBy { rowId } } }
          contact: node(id: $c) { ... on Contact { opportunityProjectContacts(first: 10) {
            nodes { rowId opportunityProject { rowId } } } } }
        }""",
        {
            "o": _gid("OpportunityProjectOverride", ov_title.id),
            "l": _gid("OpportunityProjectContact", links[1].id),
            "c": _gid("Contact", contacts[0].id),
        },
        token=admin_token,
    )
    data = reverse["data"]
    assert data["override"] == {
        "fieldName": "title",
        "overrideValue": "Local title",
        "isActive": True,
        "opportunityProject": {"rowId": str(p.id)},
        "createdBy": {"rowId": str(t.system_user_id)},
    }
    assert data["link"] == {
        "opportunityProject": {"rowId": str(p.id)},
        "contact": {"rowId": str(contacts[1].id)},
        "createdBy": {"rowId": str(t.system_user_id)},
    }
    assert [
        (n["rowId"], n["opportunityProject"]["rowId"])
        for n in data["contact"]["opportunityProjectContacts"]["nodes"]
    ] == [(str(links[0].id), str(p.id)), (str(link_other.id), str(other.id))]


# -- effective values ---------------------------------------------------------------------------------

EFFECTIVE_QUERY = """
query ($ids: [ID!]!) {
  nodes(ids: $ids) {
    ... on OpportunityProject {
      rowId
      currentExternalData { rowId }
      effective {
        title { value source } description { value source } solicitationStatus { value source }
        setAsideType { value source } naicsCodes { value source }
        estimatedValueMin { value source } estimatedValueMax { value source }
        postingDate { value source } responseDueDate { value source } placeOfPerformance { value source }
      }
    }
  }
}
"""


def _e(value: Any, source: str) -> dict[str, Any]:
    return {"value": value, "source": source}


async def test_effective_values_override_beats_external_beats_local(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    t = fresh_tenant
    async with owner_engine.begin() as conn:
        await set_tenant(conn, t.id)
        # a: every source present; active overrides beat the current version; inactive ones do not.
        a = await _project(conn, t, title="Local A", description="Local description A")
        await _version(
            conn,
            t,
            a,
            current=False,
            version_number=1,
            title="Old A",
            naics_codes="111111",
            place_of_performance="Old place",
        )
        cur_a = await _version(
            conn,
            t,
            a,
            version_number=2,
            title="External A",
            description="External description A",
            solicitation_status="active",
            set_aside_type="SBA",
            naics_codes="541512",
            estimated_value_min=Decimal("10.00"),
            estimated_value_max=Decimal("100.00"),
            posting_date=date(2026, 1, 5),
            response_due_date=datetime(2026, 4, 1, 21, tzinfo=UTC),
        )
        await _override(conn, t, a, "title", "Override A")
        await _override(conn, t, a, "description", "Stale override", active=False)
        await _override(conn, t, a, "estimated_value_max", 250000.5)  # a JSON number
        await _override(conn, t, a, "estimated_value_min", "TBD")  # unreadable as a decimal: wins with null
        await _override(conn, t, a, "posting_date", "2026-02-30")  # no such day: null
        await _override(conn, t, a, "response_due_date", "2026-05-01T17:00:00-04:00")
        await _override(conn, t, a, "set_aside_type", None)  # JSON null: the field has no value
        await _override(conn, t, a, "naics_codes", "541519")
        # b: no external data at all: the project's own columns, nothing else.
        b = await _project(conn, t, title="Local B")
        # c: a current version without a title: the project's own title shows through.
        c = await _project(conn, t, title="Local C", description=None)
        cur_c = await _version(conn, t, c, title=None, estimated_value_max=Decimal("7.50"))
        await _override(conn, t, c, "estimated_value_max", " 12")  # a string, but not a plain decimal
        await _override(conn, t, c, "posting_date", "2026-02-01")
        await _override(conn, t, c, "response_due_date", "2026-05-01T17:00:00")  # no offset: unreadable

    body = await gql(
        client,
        EFFECTIVE_QUERY,
        {"ids": [_gid("OpportunityProject", x.id) for x in (a, b, c)]},
        token=admin_token,
    )
    got_a, got_b, got_c = body["data"]["nodes"]
    assert got_a["currentExternalData"] == {"rowId": str(cur_a.id)}
    assert got_a["effective"] == {
        "title": _e("Override A", "OVERRIDE"),
        "description": _e("External description A", "EXTERNAL"),
        "solicitationStatus": _e("active", "EXTERNAL"),
        "setAsideType": _e(None, "OVERRIDE"),
        "naicsCodes": _e("541519", "OVERRIDE"),
        "estimatedValueMin": _e(None, "OVERRIDE"),
        "estimatedValueMax": _e("250000.5", "OVERRIDE"),
        "postingDate": _e(None, "OVERRIDE"),
        "responseDueDate": _e("2026-05-01T21:00:00.000000Z", "OVERRIDE"),
        "placeOfPerformance": None,  # only the old version had one
    }
    assert got_b["currentExternalData"] is None
    assert got_b["effective"] == {
        "title": _e("Local B", "LOCAL"),
        "description": None,
        "solicitationStatus": None,
        "setAsideType": None,
        "naicsCodes": None,
        "estimatedValueMin": None,
        "estimatedValueMax": None,
        "postingDate": None,
        "responseDueDate": None,
        "placeOfPerformance": None,
    }
    assert got_c["currentExternalData"] == {"rowId": str(cur_c.id)}
    effective_c = got_c["effective"]
    assert effective_c["title"] == _e("Local C", "LOCAL")
    assert effective_c["description"] is None
    assert effective_c["estimatedValueMax"] == _e(None, "OVERRIDE")
    assert effective_c["postingDate"] == _e("2026-02-01", "OVERRIDE")
    assert effective_c["responseDueDate"] == _e(None, "OVERRIDE")


# -- pipeline summary ---------------------------------------------------------------------------------

SUMMARY_QUERY = """
query ($filter: OpportunityProjectFilter) {
  pipelineSummary(filter: $filter) {
    stage projectCount totalEstimatedValueMax weightedEstimatedValueMax projectsWithoutValue
    projectsWithoutWinProbability
  }
}
"""
STAGES = [f"PHASE_{i}" for i in range(7)]


def _zero(stage: str) -> dict[str, Any]:
    return {
        "stage": stage,
        "projectCount": 0,
        "totalEstimatedValueMax": "0.00",
        "weightedEstimatedValueMax": "0.00",
        "projectsWithoutValue": 0,
        "projectsWithoutWinProbability": 0,
    }


async def test_pipeline_summary_on_crafted_data(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    admin_token: str,
    tenant_b: TenantRef,
) -> None:
    t = fresh_tenant
    async with owner_engine.begin() as conn:
        await set_tenant(conn, t.id)
        # phase_0: 100 at 50%, 200.50 (override beats 1000) at 10%, no value at 80%.
        p1 = await _project(conn, t, pipeline_stage="phase_0", win_probability_score=Decimal("50"))
        await _version(conn, t, p1, estimated_value_max=Decimal("100.00"))
        await _version(conn, t, p1, current=False, estimated_value_max=Decimal("5000.00"))
        p2 = await _project(conn, t, pipeline_stage="phase_0", win_probability_score=Decimal("10"))
        await _version(conn, t, p2, estimated_value_max=Decimal("1000.00"))
        await _override(conn, t, p2, "estimated_value_max", "200.50")
        await _project(conn, t, pipeline_stage="phase_0", win_probability_score=Decimal("80"))
        # phase_2: 300 without Pwin; archived (left out); inactive override (external 40 counts, 100%);
        # an unreadable override (no value though the source has 70); a lost project still counts.
        p4 = await _project(conn, t, pipeline_stage="phase_2")
        await _version(conn, t, p4, estimated_value_max=Decimal("300.00"))
        p5 = await _project(
            conn, t, pipeline_stage="phase_2", archived_at=T0, win_probability_score=Decimal("90")
        )
        await _version(conn, t, p5, estimated_value_max=Decimal("999.00"))
        p6 = await _project(
            conn, t, pipeline_stage="phase_2", win_probability_score=Decimal("100"), project_status="lost"
        )
        await _version(conn, t, p6, estimated_value_max=Decimal("40.00"))
        await _override(conn, t, p6, "estimated_value_max", "5", active=False)
        p7 = await _project(conn, t, pipeline_stage="phase_2", win_probability_score=Decimal("20"))
        await _version(conn, t, p7, estimated_value_max=Decimal("70.00"))
        await _override(conn, t, p7, "estimated_value_max", "TBD")
        # phase_3: a JSON number with three decimals at 33.33%: 1234.567 -> 1234.57, weighted 411.48.
        p8 = await _project(conn, t, pipeline_stage="phase_3", win_probability_score=Decimal("33.33"))
        await _override(conn, t, p8, "estimated_value_max", 1234.567)
    async with owner_engine.begin() as conn:  # another tenant's project never counts
        await set_tenant(conn, tenant_b.id)
        foreign = await _project(
            conn, tenant_b, pipeline_stage="phase_0", win_probability_score=Decimal("50")
        )
        await _version(conn, tenant_b, foreign, estimated_value_max=Decimal("1000000.00"))

    body = await gql(client, SUMMARY_QUERY, token=admin_token)
    rows = body["data"]["pipelineSummary"]
    assert [r["stage"] for r in rows] == STAGES
    expected = {s: _zero(s) for s in STAGES}
    expected["PHASE_0"] = {
        "stage": "PHASE_0",
        "projectCount": 3,
        "totalEstimatedValueMax": "300.50",
        "weightedEstimatedValueMax": "70.05",
        "projectsWithoutValue": 1,
        "projectsWithoutWinProbability": 0,
    }
    expected["PHASE_2"] = {
        "stage": "PHASE_2",
        "projectCount": 3,
        "totalEstimatedValueMax": "340.00",
        "weightedEstimatedValueMax": "40.00",
        "projectsWithoutValue": 1,
        "projectsWithoutWinProbability": 1,
    }
    expected["PHASE_3"] = {
        "stage": "PHASE_3",
        "projectCount": 1,
        "totalEstimatedValueMax": "1234.57",
        "weightedEstimatedValueMax": "411.48",
        "projectsWithoutValue": 0,
        "projectsWithoutWinProbability": 0,
    }
    assert rows == [expected[s] for s in STAGES]

    # The SQL and the per-project rule agree: the summary's totals are the sums of `effective`.
    listed = await gql(
        client,
        "{ opportunityProjects(first: 100) {"
        " nodes { pipelineStage effective { estimatedValueMax { value } } } } }",
        token=admin_token,
    )
    sums: dict[str, Decimal] = dict.fromkeys(STAGES, Decimal(0))
    for n in listed["data"]["opportunityProjects"]["nodes"]:
        value = (n["effective"]["estimatedValueMax"] or {}).get("value")
        sums[n["pipelineStage"]] += Decimal(value or 0)
    assert {s: str(round(v, 2)) for s, v in sums.items()} == {
        r["stage"]: r["totalEstimatedValueMax"] for r in rows
    }

    archived_too = await gql(client, SUMMARY_QUERY, {"filter": {"includeArchived": True}}, token=admin_token)
    phase_2 = archived_too["data"]["pipelineSummary"][2]
    assert (
        phase_2["projectCount"],
        phase_2["totalEstimatedValueMax"],
        phase_2["weightedEstimatedValueMax"],
    ) == (4, "1339.00", "939.10")
    active_only = await gql(
        client, SUMMARY_QUERY, {"filter": {"projectStatus": {"eq": "ACTIVE"}}}, token=admin_token
    )
    assert active_only["data"]["pipelineSummary"][2]["projectCount"] == 2


# -- the root list ------------------------------------------------------------------------------------

LIST_QUERY = """
query ($first: Int, $after: String, $last: Int, $before: String, $filter: OpportunityProjectFilter,
       $orderBy: [OpportunityProjectOrder!]) {
  opportunityProjects(first: $first, after: $after, last: $last, before: $before, filter: $filter,
                      orderBy: $orderBy) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    nodes { rowId }
  }
}
"""


async def _list(client: httpx.AsyncClient, token: str, **variables: Any) -> dict[str, Any]:
    body = await gql(client, LIST_QUERY, variables, token=token)
    page: dict[str, Any] = body["data"]["opportunityProjects"]
    return page


async def test_root_list_default_order_filters_and_orders(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    t = fresh_tenant
    async with owner_engine.begin() as conn:
        await set_tenant(conn, t.id)
        manager = await make(conn, "users", t)
        p = [
            await _project(
                conn,
                t,
                project_name="Cloud Migration",
                title="VA cloud",
                created_at=T0,
                pipeline_stage="phase_1",
                priority_level="high",
                win_probability_score=Decimal("35"),
                assigned_capture_manager=manager.id,
            ),
            await _project(
                conn,
                t,
                project_name="Shipboard IT",
                title="NAVSEA network",
                created_at=T0 + timedelta(1),
                pipeline_stage="phase_4",
                priority_level="low",
                win_probability_score=Decimal("60"),
                project_status="on_hold",
            ),
            await _project(
                conn,
                t,
                project_name="Cyber Resiliency",
                title="AFLCMC cyber",
                created_at=T0 + timedelta(2),
                pipeline_stage="phase_1",
                priority_level="critical",
                project_status="won",
            ),
            await _project(
                conn, t, project_name="Archived cloud", created_at=T0 + timedelta(3), archived_at=T0
            ),
        ]
        # Two projects with the same created_at: the id breaks the tie (ascending).
        twins = sorted(
            [
                await _project(conn, t, project_name=f"Twin {i}", created_at=T0 - timedelta(1))
                for i in range(2)
            ],
            key=lambda r: r.id,
        )

    listed = await _list(client, admin_token, first=10)
    assert _ids(listed) == _s(p[2], p[1], p[0], *twins) and listed["totalCount"] == 5  # archived hidden

    async def ids(filter_: dict[str, Any], **variables: Any) -> list[str]:
        return _ids(await _list(client, admin_token, first=10, filter=filter_, **variables))

    assert await ids({"projectName": {"contains": "CLOUD"}}) == _s(p[0])
    assert await ids({"projectName": {"contains": "cloud"}, "includeArchived": True}) == _s(p[3], p[0])
    assert await ids({"archivedAt": {"isNull": False}}) == _s(p[3])
    assert await ids({"title": {"contains": "navsea"}}) == _s(p[1])
    assert await ids({"projectStatus": {"in": ["ON_HOLD", "WON"]}}) == _s(p[2], p[1])
    assert await ids({"pipelineStage": {"eq": "PHASE_1"}}) == _s(p[2], p[0])
    assert await ids({"priorityLevel": {"in": ["HIGH", "LOW"]}}) == _s(p[1], p[0])
    assert await ids({"assignedCaptureManager": {"eq": str(manager.id)}}) == _s(p[0])
    assert await ids({"createdAt": {"gte": "2026-03-02T00:00:00Z", "lt": "2026-03-03T12:00:00Z"}}) == _s(p[1])
    assert await ids({"winProbabilityScore": {"gte": "35", "lte": "59.99"}}) == _s(p[0])
    assert await ids({"winProbabilityScore": {"isNull": True}, "projectName": {"contains": "twin"}}) == _s(
        *twins
    )
    assert await ids({"rowId": {"in": [str(p[0].id), str(p[3].id)]}}) == _s(p[0])

    # Stage descending, then oldest first; the twins (phase_0) tie on both and go by id.
    by_stage = await ids(
        {}, orderBy=[{"field": "PIPELINE_STAGE", "direction": "DESC"}, {"field": "CREATED_AT"}]
    )
    assert by_stage == _s(p[1], p[0], p[2], *twins)
    by_status = await ids(
        {}, orderBy=[{"field": "PROJECT_STATUS"}, {"field": "CREATED_AT", "direction": "DESC"}]
    )
    assert by_status == _s(p[0], *twins, p[1], p[2])  # active, on_hold, won

    refused = await gql(
        client, "{ opportunityProjects(first: 101) { nodes { rowId } } }", token=admin_token, errors=True
    )
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_keyset_pages_forwards_and_backwards_across_inserts(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    t = fresh_tenant

    async def add(hours: float) -> Any:
        async with owner_engine.begin() as conn:
            await set_tenant(conn, t.id)
            return await _project(conn, t, created_at=T0 + timedelta(hours=hours))

    p = [await add(i) for i in range(7)]  # newest first: p6 .. p0

    page1 = await _list(client, admin_token, first=3)
    assert _ids(page1) == _s(p[6], p[5], p[4])
    assert (page1["pageInfo"]["hasNextPage"], page1["pageInfo"]["hasPreviousPage"]) == (True, False)
    newest = await add(10)  # before the cursor: never shows up on later pages
    middle = await add(2.5)  # in the part not seen yet: shows up in its place
    page2 = await _list(client, admin_token, first=3, after=page1["pageInfo"]["endCursor"])
    assert _ids(page2) == _s(p[3], middle, p[2])
    assert (page2["pageInfo"]["hasNextPage"], page2["pageInfo"]["hasPreviousPage"]) == (True, True)
    page3 = await _list(client, admin_token, first=3, after=page2["pageInfo"]["endCursor"])
    assert _ids(page3) == _s(p[1], p[0]) and page3["pageInfo"]["hasNextPage"] is False

    tail = await _list(client, admin_token, last=3)
    assert _ids(tail) == _s(p[2], p[1], p[0])
    assert (tail["pageInfo"]["hasNextPage"], tail["pageInfo"]["hasPreviousPage"]) == (False, True)
    between = await add(3.5)  # between p4 and p3: in the part still ahead when paging backwards
    await add(-1)  # after p0: behind the cursor, never on the backward pages
    back1 = await _list(client, admin_token, last=3, before=tail["pageInfo"]["startCursor"])
    assert _ids(back1) == _s(between, p[3], middle)
    assert (back1["pageInfo"]["hasNextPage"], back1["pageInfo"]["hasPreviousPage"]) == (True, True)
    back2 = await _list(client, admin_token, last=3, before=back1["pageInfo"]["startCursor"])
    assert _ids(back2) == _s(p[6], p[5], p[4])
    back3 = await _list(client, admin_token, last=3, before=back2["pageInfo"]["startCursor"])
    assert _ids(back3) == _s(newest) and back3["pageInfo"]["hasPreviousPage"] is False
    assert back3["totalCount"] == 11


# -- statement counts ---------------------------------------------------------------------------------

NESTED_QUERY = """
query ($first: Int) {
  opportunityProjects(first: $first) {
    totalCount
    nodes {
      rowId
      captureManager { rowId }
      externalSource { rowId }
      contacts(first: 5) { nodes { contact { rowId organization { rowId } } } }
      documents(first: 10) { nodes { rowId } }
      capturePlans(first: 5) { nodes { rowId } }
      currentExternalData { rowId }
      effective { title { value source } estimatedValueMax { value source } }
      overrides(first: 5) { totalCount nodes { rowId } }
    }
  }
  pipelineSummary { stage projectCount }
}
"""


async def test_nested_list_costs_the_same_statements_for_5_and_50(
    executor_client: httpx.AsyncClient,
    executor_app: Starlette,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    admin_token: str,
) -> None:
    t = fresh_tenant
    async with owner_engine.begin() as conn:
        await set_tenant(conn, t.id)
        manager = await make(conn, "users", t)
        org = await make(conn, "organizations", t)
        contacts = [await make(conn, "contacts", t, organization_id=org.id) for _ in range(2)]
        for i in range(50):
            p = await _project(
                conn, t, assigned_capture_manager=manager.id, created_at=T0 + timedelta(minutes=i)
            )
            refs = {"opportunity_projects": p.id}
            for c in contacts:
                await make(conn, "opportunity_project_contacts", t, {**refs, "contacts": c.id})
            await make(conn, "documents", t, opportunity_project_id=p.id)
            await make(conn, "capture_plans", t, refs)
            await _version(conn, t, p, title=f"External {i}", estimated_value_max=Decimal(i))
            await _override(conn, t, p, "title", f"Override {i}")

    engine = executor_app.state.engine
    counts = []
    for first in (5, 50):
        with count_statements(engine) as statements:
            body = await gql(executor_client, NESTED_QUERY, {"first": first}, token=admin_token)
        nodes = body["data"]["opportunityProjects"]["nodes"]
        assert len(nodes) == first
        start = max((i for i, s in enumerate(statements) if "set_config" in s), default=-1)
        operation = statements[start + 1 :]
        totals = [s for s in operation if "count(*)" in s]  # the two totalCounts (the summary counts columns)
        counts.append((len(operation) - len(totals), len(totals)))
        newest = nodes[0]
        assert newest["captureManager"]["rowId"] == str(manager.id)
        assert sorted(c["contact"]["rowId"] for c in newest["contacts"]["nodes"]) == sorted(_s(*contacts))
        assert {c["contact"]["organization"]["rowId"] for c in newest["contacts"]["nodes"]} == {str(org.id)}
        assert newest["effective"] == {
            "title": _e("Override 49", "OVERRIDE"),
            "estimatedValueMax": _e("49.00", "EXTERNAL"),
        }
        assert newest["overrides"]["totalCount"] == 1 and len(newest["documents"]["nodes"]) == 1
    # projects; capture managers, sources, contact links, contacts, organizations, documents, capture
    # plans, current versions (shared by currentExternalData and effective), active overrides, override
    # pages; the pipeline summary. Counts: the list's totalCount and the override pages' totalCount.
    assert counts[0] == counts[1] == (12, 2), counts


# -- node and other tenants ---------------------------------------------------------------------------


async def test_node_and_cross_tenant_reads_give_what_a_missing_id_gives(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    admin_token: str,
    tenant_b: TenantRef,
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        mine = await _project(conn, fresh_tenant, project_name="Mine")
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant_b.id)
        theirs = await _project(conn, tenant_b, project_name="Theirs")
        their_override = await _override(conn, tenant_b, theirs, "title", "Theirs overridden")
        their_contact = await make(conn, "contacts", tenant_b)
        their_link = await make(
            conn,
            "opportunity_project_contacts",
            tenant_b,
            {"opportunity_projects": theirs.id, "contacts": their_contact.id},
        )
    missing = uuid.uuid4()

    found = await gql(
        client,
        "query ($id: ID!) { node(id: $id) { id ... on OpportunityProject { projectName } } }",
        {"id": _gid("OpportunityProject", mine.id)},
        token=admin_token,
    )
    assert found["data"]["node"] == {"id": _gid("OpportunityProject", mine.id), "projectName": "Mine"}
    for gid in (
        _gid("OpportunityProject", theirs.id),
        _gid("OpportunityProject", missing),
        _gid("OpportunityProjectOverride", their_override.id),
        _gid("OpportunityProjectOverride", missing),
        _gid("OpportunityProjectContact", their_link.id),
        _gid("OpportunityProjectContact", missing),
    ):
        result = await gql(
            client, "query ($id: ID!) { node(id: $id) { id } }", {"id": gid}, token=admin_token
        )
        assert result["data"]["node"] is None, gid
    many = await gql(
        client,
        "query ($ids: [ID!]!) { nodes(ids: $ids) { ... on OpportunityProject { rowId } } }",
        {"ids": [_gid("OpportunityProject", i) for i in (mine.id, theirs.id, missing)]},
        token=admin_token,
    )
    assert many["data"]["nodes"] == [{"rowId": str(mine.id)}, None, None]
    for ids in ([str(theirs.id)], [str(missing)]):
        listed = await _list(
            client, admin_token, first=10, filter={"rowId": {"in": ids}, "includeArchived": True}
        )
        assert listed["nodes"] == [] and listed["totalCount"] == 0
