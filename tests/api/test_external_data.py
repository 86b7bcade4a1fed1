"""External data through the read API: sources, versions, changes, polling schedules, API logs.

Relations both ways with exact ids and orders, credentials never shown (no field for the stored
credentials, API logs and error texts redacted), the two root lists (filters, orders, pagination
across inserts), statement counts that do not grow with the list, node(id) and other tenants.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from graphql import GraphQLObjectType, build_schema
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from resolvers.external_data.redaction import MASK, redact_headers, redact_json, redact_text
from schema.schema import sdl
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql
from tests.support.sqlcount import count_statements

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MY_TYPES = (
    "ExternalOpportunitySource",
    "ExternalOpportunityData",
    "ExternalDataChange",
    "PollingConfiguration",
    "ApiIntegrationLog",
)


def _gid(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def _ids(connection: dict[str, Any]) -> list[str]:
    return [n["rowId"] for n in connection["nodes"]]


async def _set_json(conn: AsyncConnection, table: str, row_id: uuid.UUID, **values: Any) -> None:
    """jsonb columns the factories do not cast (headers, payloads, values of a change)."""
    sets = ", ".join(f"{k} = CAST(:{k} AS jsonb)" for k in values)
    params = {k: json.dumps(v) for k, v in values.items()}
    await conn.execute(text(f"UPDATE {table} SET {sets} WHERE id = :id"), {**params, "id": row_id})


def _operation(statements: list[str]) -> list[str]:
    """The statements of the GraphQL operation itself (after its set_config), counts excluded."""
    start = max((i for i, s in enumerate(statements) if "set_config" in s), default=-1)
    return [s for s in statements[start + 1 :] if "count(" not in s]


# --- relations, both ways -------------------------------------------------------------------------


@dataclass
class Pursuit:
    """One source with two of everything that hangs off it, plus rows that must not show up."""

    source: Row[Any]
    other_source: Row[Any]
    creator: Row[Any]
    acknowledger: Row[Any]
    projects: list[Row[Any]] = field(default_factory=list)  # oldest first
    versions: list[Row[Any]] = field(default_factory=list)  # of projects[0]
    changes: list[Row[Any]] = field(default_factory=list)  # oldest first
    polls: list[Row[Any]] = field(default_factory=list)  # in their documented order
    logs: list[Row[Any]] = field(default_factory=list)  # oldest first
    history: list[Row[Any]] = field(default_factory=list)  # of the source, oldest first


async def _pursuit(owner_engine: AsyncEngine, tenant: TenantRef) -> Pursuit:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        creator = await make(conn, "users", tenant)
        acknowledger = await make(conn, "users", tenant)
        source = await make(
            conn, "external_opportunity_sources", tenant, created_by=creator.id, source_name="SAM.gov"
        )
        other = await make(conn, "external_opportunity_sources", tenant, source_name="GovWin")
        p = Pursuit(source=source, other_source=other, creator=creator, acknowledger=acknowledger)
        refs = {"external_opportunity_sources": source.id}
        for i in range(2):
            p.projects.append(
                await make(conn, "opportunity_projects", tenant, refs, created_at=T0 + timedelta(days=i))
            )
        # A project of the other source: never among the source's lists.
        stray = await make(conn, "opportunity_projects", tenant, {"external_opportunity_sources": other.id})
        first, second = p.projects
        for version in (1, 2):
            p.versions.append(
                await make(
                    conn,
                    "external_opportunity_data",
                    tenant,
                    {"opportunity_projects": first.id},
                    version_number=version,
                    is_current_version=version == 2,
                    data_snapshot_timestamp=T0 + timedelta(hours=version),
                )
            )
        p.changes.append(
            await make(
                conn,
                "external_data_changes",
                tenant,
                {"opportunity_projects": first.id, **refs},
                change_timestamp=T0,
                change_type="amended",
                impact_level="high",
                acknowledged_by=acknowledger.id,
                acknowledged_at=T0 + timedelta(hours=1),
            )
        )
        p.changes.append(
            await make(
                conn,
                "external_data_changes",
                tenant,
                {"opportunity_projects": second.id, **refs},
                change_timestamp=T0 + timedelta(minutes=5),
                change_type="type_changed",
                impact_level="critical",
            )
        )
        await make(
            conn,
            "external_data_changes",
            tenant,
            {"opportunity_projects": stray.id, "external_opportunity_sources": other.id},
        )
        # Next poll first, unscheduled last.
        for project, next_poll in ((second, T0), (first, T0 + timedelta(hours=1)), (first, None)):
            p.polls.append(
                await make(
                    conn,
                    "polling_configurations",
                    tenant,
                    {"opportunity_projects": project.id, **refs},
                    next_poll_timestamp=next_poll,
                    priority_level="high",
                    created_by=creator.id,
                )
            )
        await make(
            conn,
            "polling_configurations",
            tenant,
            {"opportunity_projects": stray.id, "external_opportunity_sources": other.id},
        )
        for i, project_id in enumerate((first.id, None)):
            p.logs.append(
                await make(
                    conn,
                    "api_integration_logs",
                    tenant,
                    refs,
                    opportunity_project_id=project_id,
                    api_call_timestamp=T0 + timedelta(seconds=i),
                )
            )
        await make(conn, "api_integration_logs", tenant, {"external_opportunity_sources": other.id})
        for i in range(2):
            p.history.append(
                await make(
                    conn,
                    "change_history",
                    tenant,
                    {"opportunity_projects": first.id},  # the factory's default target, overridden
                    entity_type="external_opportunity_source",
                    entity_id=source.id,
                    field_name="connection_status",
                    change_timestamp=T0 + timedelta(minutes=i),
                )
            )
    return p


SOURCE_QUERY = """
query ($id: ID!) {
  node(id: $id) {
    ... on ExternalOpportunitySource {
      rowId sourceName connectionStatus createdBy { rowId }
      opportunityProjects(first: 10) { totalCount nodes { rowId } }
      pollingConfigurations(first: 10) {
        nodes {
          rowId priorityLevel opportunityProject { rowId } externalSource { rowId } createdBy { rowId }
        }
      }
      apiIntegrationLogs(first: 10) { nodes { rowId externalSource { rowId } opportunityProject { rowId } } }
      externalDataChanges(first: 10) {
        totalCount
        nodes {
          rowId changeType impactLevel acknowledgedAt
          opportunityProject { rowId } externalSource { rowId } acknowledgedBy { rowId }
        }
      }
      history(first: 10) { nodes { rowId } }
    }
  }
}
"""


async def test_a_source_and_everything_on_it_both_ways(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    p = await _pursuit(owner_engine, fresh_tenant)
    body = await gql(
        client, SOURCE_QUERY, {"id": _gid("ExternalOpportunitySource", p.source.id)}, token=admin_token
    )
    node = body["data"]["node"]
    source_id = str(p.source.id)
    assert node["rowId"] == source_id and node["sourceName"] == "SAM.gov"
    assert node["connectionStatus"] == "UNKNOWN"
    assert node["createdBy"] == {"rowId": str(p.creator.id)}
    # Newest project first.
    assert _ids(node["opportunityProjects"]) == [str(r.id) for r in reversed(p.projects)]
    assert node["opportunityProjects"]["totalCount"] == 2

    polls = node["pollingConfigurations"]["nodes"]
    assert [n["rowId"] for n in polls] == [str(r.id) for r in p.polls]
    assert [n["opportunityProject"]["rowId"] for n in polls] == [
        str(r.opportunity_project_id) for r in p.polls
    ]
    assert {n["externalSource"]["rowId"] for n in polls} == {source_id}
    assert {n["createdBy"]["rowId"] for n in polls} == {str(p.creator.id)}
    assert {n["priorityLevel"] for n in polls} == {"HIGH"}

    logs = node["apiIntegrationLogs"]["nodes"]
    assert [n["rowId"] for n in logs] == [str(r.id) for r in reversed(p.logs)]  # newest call first
    assert [n["opportunityProject"] for n in logs] == [None, {"rowId": str(p.projects[0].id)}]
    assert {n["externalSource"]["rowId"] for n in logs} == {source_id}

    changes = node["externalDataChanges"]
    assert changes["totalCount"] == 2
    newest, oldest = changes["nodes"]
    assert [newest["rowId"], oldest["rowId"]] == [str(r.id) for r in reversed(p.changes)]
    assert (newest["changeType"], newest["impactLevel"], newest["acknowledgedBy"]) == (
        "TYPE_CHANGED",
        "CRITICAL",
        None,
    )
    assert (oldest["changeType"], oldest["impactLevel"]) == ("AMENDED", "HIGH")
    assert oldest["acknowledgedBy"] == {"rowId": str(p.acknowledger.id)}
    assert oldest["acknowledgedAt"] == "2026-03-01T13:00:00.000000Z"
    assert [n["opportunityProject"]["rowId"] for n in changes["nodes"]] == [
        str(p.projects[1].id),
        str(p.projects[0].id),
    ]
    assert {n["externalSource"]["rowId"] for n in changes["nodes"]} == {source_id}

    assert _ids(node["history"]) == [str(r.id) for r in reversed(p.history)]  # newest first


async def test_versions_changes_polls_and_logs_point_back(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    p = await _pursuit(owner_engine, fresh_tenant)
    query = """
    query ($ids: [ID!]!) {
      nodes(ids: $ids) {
        __typename
        ... on ExternalOpportunityData {
          rowId versionNumber isCurrentVersion rawJsonData opportunityProject { rowId } history { totalCount }
        }
        ... on ExternalDataChange { rowId externalSource { rowId sourceName } opportunityProject { rowId } }
        ... on PollingConfiguration { rowId externalSource { rowId } opportunityProject { rowId } }
        ... on ApiIntegrationLog { rowId externalSource { rowId } opportunityProject { rowId } }
      }
    }
    """
    ids = [
        _gid("ExternalOpportunityData", p.versions[1].id),
        _gid("ExternalDataChange", p.changes[1].id),
        _gid("PollingConfiguration", p.polls[0].id),
        _gid("ApiIntegrationLog", p.logs[0].id),
    ]
    nodes = (await gql(client, query, {"ids": ids}, token=admin_token))["data"]["nodes"]
    version, change, poll, log = nodes
    assert version["__typename"] == "ExternalOpportunityData" and version["rowId"] == str(p.versions[1].id)
    assert (version["versionNumber"], version["isCurrentVersion"]) == (2, True)
    assert version["rawJsonData"] == p.versions[1].raw_json_data
    assert version["opportunityProject"] == {"rowId": str(p.projects[0].id)}
    assert version["history"] == {"totalCount": 0}
    assert change["externalSource"] == {"rowId": str(p.source.id), "sourceName": "SAM.gov"}
    assert change["opportunityProject"] == {"rowId": str(p.projects[1].id)}
    assert poll["externalSource"] == {"rowId": str(p.source.id)}
    assert poll["opportunityProject"] == {"rowId": str(p.projects[1].id)}
    assert log["externalSource"] == {"rowId": str(p.source.id)} and log["opportunityProject"] == {
        "rowId": str(p.projects[0].id)
    }


# --- secrets --------------------------------------------------------------------------------------


def test_the_sdl_has_no_credential_field_on_external_data_types() -> None:
    parsed = build_schema(sdl())
    assert "apiCredentials" not in sdl() and "credentialsEncrypted" not in sdl()
    for name in MY_TYPES:
        named = parsed.type_map[name]
        assert isinstance(named, GraphQLObjectType)
        assert not [f for f in named.fields if "credential" in f.lower() or "secret" in f.lower()], name
    source = parsed.type_map["ExternalOpportunitySource"]
    assert isinstance(source, GraphQLObjectType)
    # Every column of the source but the credentials; a new field here must be reviewed for secrets.
    assert set(source.fields) == {
        "id",
        "rowId",
        "tenant",
        "sourceName",
        "apiEndpoint",
        "apiVersion",
        "authenticationType",
        "rateLimitPerHour",
        "timeoutSeconds",
        "retryAttempts",
        "isActive",
        "connectionStatus",
        "lastSuccessfulCall",
        "lastErrorMessage",
        "consecutiveErrors",
        "createdAt",
        "updatedAt",
        "createdBy",
        "opportunityProjects",
        "pollingConfigurations",
        "apiIntegrationLogs",
        "externalDataChanges",
        "history",
        # reviewed: the health's last error is masked as lastErrorMessage is; saved searches hold no secret
        "health",
        "savedSearches",
    }


def test_redaction_drops_credential_headers_and_keys_and_masks_parameters() -> None:
    headers = {
        "Authorization": "Bearer abc",
        "X-Api-Key": "k1",
        "api_key": "k2",
        "Proxy-Authorization": "Basic x",
        "Cookie": "sid=1",
        "X-Amz-Security-Token": "t",
        "Ocp-Apim-Subscription-Key": "k3",
        "Accept": "application/json",
        "Location": "https://api.sam.gov/x?noticeid=N1&api_key=k4",
    }
    assert redact_headers(headers) == {
        "Accept": "application/json",
        "Location": f"https://api.sam.gov/x?noticeid=N1&api_key={MASK}",
    }
    assert redact_headers([["Set-Cookie", "a=b"], ["X-RateLimit-Remaining", "999"]]) == [
        ["X-RateLimit-Remaining", "999"]
    ]
    assert redact_headers("Authorization: Bearer abc") is None  # not checkable: withheld
    assert redact_headers(None) is None
    assert redact_json({"q": "x", "client_secret": "s", "nested": [{"access_token": "t", "n": 1}]}) == {
        "q": "x",
        "nested": [{"n": 1}],
    }
    assert redact_text("GET https://api.sam.gov/opportunities/v2/search?api_key=k5&limit=1") == (
        f"GET https://api.sam.gov/opportunities/v2/search?api_key={MASK}&limit=1"
    )
    assert redact_text('401: {"api_key": "k6"} / X-Api-Key: k7 / Authorization: Bearer k8') == (
        f'401: {{"api_key": "{MASK}"}} / X-Api-Key: {MASK} / Authorization: Bearer {MASK}'
    )
    assert redact_text("Date range must be 1 year(s) apart") == "Date range must be 1 year(s) apart"
    assert redact_text(None) is None


async def test_api_logs_and_sources_show_no_credential(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        source = await make(
            conn,
            "external_opportunity_sources",
            fresh_tenant,
            api_endpoint="https://api.sam.gov/opportunities/v2/search?api_key=SEKRET-1",
            api_credentials_encrypted=json.dumps({"ciphertext": "SEKRET-2"}),
            last_error_message="An invalid api_key was supplied (X-Api-Key: SEKRET-3)",
        )
        log = await make(
            conn,
            "api_integration_logs",
            fresh_tenant,
            {"external_opportunity_sources": source.id},
            endpoint_called="https://api.sam.gov/opportunities/v2/search?postedFrom=01/01/2026&api_key=SEKRET-4",
            error_message="Client error '429 Too Many Requests' for url 'https://api.sam.gov/x?api_key=SEKRET-5'",
            success=False,
            http_status=429,
        )
        await _set_json(
            conn,
            "api_integration_logs",
            log.id,
            request_headers={
                "Authorization": "Bearer SEKRET-6",
                "X-Api-Key": "SEKRET-7",
                "api_key": "SEKRET-8",
                "Accept": "application/json",
            },
            response_headers=[["Set-Cookie", "SEKRET-9"], ["Retry-After", "3600"]],
            request_payload={"client_id": "gwm", "client_secret": "SEKRET-10"},
            response_payload={
                "error": {"code": "OVER_RATE_LIMIT"},
                "access_token": "SEKRET-11",
                "links": [{"rel": "self", "href": "https://api.sam.gov/x?api_key=SEKRET-12"}],
            },
        )
        odd = await make(
            conn, "api_integration_logs", fresh_tenant, {"external_opportunity_sources": source.id}
        )
        await _set_json(
            conn, "api_integration_logs", odd.id, request_headers="Authorization: Bearer SEKRET-13"
        )
    query = """
    query ($source: ID!, $log: ID!, $odd: ID!) {
      source: node(id: $source) { ... on ExternalOpportunitySource { apiEndpoint lastErrorMessage } }
      log: node(id: $log) {
        ... on ApiIntegrationLog {
          endpointCalled errorMessage httpStatus success
          requestHeaders responseHeaders requestPayload responsePayload
        }
      }
      odd: node(id: $odd) { ... on ApiIntegrationLog { requestHeaders } }
    }
    """
    variables = {
        "source": _gid("ExternalOpportunitySource", source.id),
        "log": _gid("ApiIntegrationLog", log.id),
        "odd": _gid("ApiIntegrationLog", odd.id),
    }
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"authorization": f"Bearer {admin_token}"},
    )
    assert response.status_code == 200 and "SEKRET" not in response.text, response.text
    data = response.json()["data"]
    assert data["source"] == {
        "apiEndpoint": f"https://api.sam.gov/opportunities/v2/search?api_key={MASK}",
        "lastErrorMessage": f"An invalid api_key was supplied (X-Api-Key: {MASK})",
    }
    assert data["log"] == {
        "endpointCalled": f"https://api.sam.gov/opportunities/v2/search?postedFrom=01/01/2026&api_key={MASK}",
        "errorMessage": f"Client error '429 Too Many Requests' for url 'https://api.sam.gov/x?api_key={MASK}'",
        "httpStatus": 429,
        "success": False,
        "requestHeaders": {"Accept": "application/json"},
        "responseHeaders": [["Retry-After", "3600"]],
        "requestPayload": {"client_id": "gwm"},
        "responsePayload": {
            "error": {"code": "OVER_RATE_LIMIT"},
            "links": [{"rel": "self", "href": f"https://api.sam.gov/x?api_key={MASK}"}],
        },
    }
    assert data["odd"] == {"requestHeaders": None}


# --- root lists -----------------------------------------------------------------------------------


CHANGES = """
query ($first: Int, $after: String, $last: Int, $before: String, $filter: ExternalDataChangeFilter,
       $orderBy: [ExternalDataChangeOrder!]) {
  externalDataChanges(first: $first, after: $after, last: $last, before: $before, filter: $filter,
                      orderBy: $orderBy) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    nodes { rowId }
  }
}
"""
LEVELS = ["informational", "low", "medium", "high", "critical"]
TYPES = ["created", "amended", "updated", "type_changed"]


@dataclass
class Changes:
    rows: list[Row[Any]]  # change i at T0 + i minutes
    projects: list[Row[Any]]
    source: Row[Any]


async def _changes(
    owner_engine: AsyncEngine, tenant: TenantRef, count: int, *, acknowledger: uuid.UUID
) -> Changes:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        source = await make(conn, "external_opportunity_sources", tenant)
        refs = {"external_opportunity_sources": source.id}
        projects = [await make(conn, "opportunity_projects", tenant, refs) for _ in range(2)]
        rows = []
        for i in range(count):
            acked = i % 3 == 0
            rows.append(
                await make(
                    conn,
                    "external_data_changes",
                    tenant,
                    {"opportunity_projects": projects[i % 2].id, **refs},
                    change_timestamp=T0 + timedelta(minutes=i),
                    impact_level=LEVELS[i % 5],
                    change_type=TYPES[i % 4],
                    acknowledged_by=acknowledger if acked else None,
                    acknowledged_at=T0 + timedelta(days=1, minutes=-i) if acked else None,
                )
            )
    return Changes(rows=rows, projects=projects, source=source)


async def _list(client: httpx.AsyncClient, token: str, **variables: Any) -> dict[str, Any]:
    body = await gql(client, CHANGES, variables, token=token)
    page: dict[str, Any] = body["data"]["externalDataChanges"]
    return page


async def test_changes_root_list_filters_and_orders(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    admin_token: str,
    tenant_b: TenantRef,
) -> None:
    c = await _changes(owner_engine, fresh_tenant, 12, acknowledger=fresh_tenant.system_user_id)
    rows = c.rows
    newest_first = [str(r.id) for r in reversed(rows)]

    def where(predicate: Any) -> list[str]:
        return [str(r.id) for r in reversed(rows) if predicate(r)]

    everything = await _list(client, admin_token, first=50)
    assert _ids(everything) == newest_first and everything["totalCount"] == 12
    high = await _list(client, admin_token, first=50, filter={"impactLevel": {"eq": "HIGH"}})
    assert _ids(high) == where(lambda r: r.impact_level == "high")
    urgent = await _list(client, admin_token, first=50, filter={"impactLevel": {"in": ["HIGH", "CRITICAL"]}})
    assert _ids(urgent) == where(lambda r: r.impact_level in {"high", "critical"}) and len(_ids(urgent)) == 4
    amended = await _list(client, admin_token, first=50, filter={"changeType": {"eq": "AMENDED"}})
    assert _ids(amended) == where(lambda r: r.change_type == "amended")
    project = await _list(
        client, admin_token, first=50, filter={"opportunityProjectId": {"eq": str(c.projects[1].id)}}
    )
    assert (
        _ids(project) == where(lambda r: r.opportunity_project_id == c.projects[1].id)
        and len(_ids(project)) == 6
    )
    acked = await _list(client, admin_token, first=50, filter={"acknowledged": True})
    assert _ids(acked) == where(lambda r: r.acknowledged_at is not None) and len(_ids(acked)) == 4
    open_ = await _list(
        client, admin_token, first=50, filter={"acknowledged": False, "impactLevel": {"eq": "LOW"}}
    )
    assert _ids(open_) == where(lambda r: r.acknowledged_at is None and r.impact_level == "low")
    window = {"gte": (T0 + timedelta(minutes=3)).isoformat(), "lt": (T0 + timedelta(minutes=7)).isoformat()}
    ranged = await _list(client, admin_token, first=50, filter={"changeTimestamp": window})
    assert _ids(ranged) == [str(rows[i].id) for i in (6, 5, 4, 3)]
    oldest_first = await _list(client, admin_token, first=3, orderBy=[{"field": "CHANGE_TIMESTAMP"}])
    assert _ids(oldest_first) == [str(r.id) for r in rows[:3]]
    # Acknowledged first (change 9 was acknowledged earliest), the unacknowledged after, each by id.
    by_ack = await _list(client, admin_token, first=50, orderBy=[{"field": "ACKNOWLEDGED_AT"}])
    assert _ids(by_ack)[:4] == [str(rows[i].id) for i in (9, 6, 3, 0)]
    assert _ids(by_ack)[4:] == sorted(str(r.id) for r in rows if r.acknowledged_at is None)

    # Another tenant's project or source, as a filter: exactly what an unknown id gives.
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant_b.id)
        foreign = await make(conn, "opportunity_projects", tenant_b)
        await make(conn, "external_data_changes", tenant_b, {"opportunity_projects": foreign.id})
    for value in (str(foreign.id), str(uuid.uuid4())):
        none = await _list(client, admin_token, first=50, filter={"opportunityProjectId": {"eq": value}})
        assert none["nodes"] == [] and none["totalCount"] == 0
    assert _ids(await _list(client, admin_token, first=50)) == newest_first


async def test_changes_root_list_pages_both_ways_across_inserts(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    c = await _changes(owner_engine, fresh_tenant, 12, acknowledger=fresh_tenant.system_user_id)
    expected = [str(r.id) for r in reversed(c.rows)]
    seen: list[str] = []
    inserted = 0
    page = await _list(client, admin_token, first=5)
    assert page["pageInfo"]["hasPreviousPage"] is False
    while True:
        seen += _ids(page)
        if not seen[-1:] or not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
        # A newer change arrives between pages: it sorts before the cursor, so later pages do not shift.
        async with owner_engine.begin() as conn:
            await set_tenant(conn, fresh_tenant.id)
            await make(
                conn,
                "external_data_changes",
                fresh_tenant,
                {"opportunity_projects": c.projects[0].id, "external_opportunity_sources": c.source.id},
                change_timestamp=T0 + timedelta(hours=1, minutes=len(seen)),
            )
        inserted += 1
        page = await _list(client, admin_token, first=5, after=after)
        assert page["pageInfo"]["hasPreviousPage"] is True
    assert seen == expected
    # Backwards from the oldest: the same order, page by page.
    back: list[str] = []
    oldest = await _list(client, admin_token, last=5)
    assert _ids(oldest) == expected[-5:] and oldest["pageInfo"]["hasPreviousPage"] is True
    page = oldest
    while True:
        back = _ids(page) + back
        if not page["pageInfo"]["hasPreviousPage"]:
            break
        before = page["pageInfo"]["startCursor"]
        page = await _list(client, admin_token, last=5, before=before)
    assert inserted == 2 and len(back) == 12 + inserted and back[inserted:] == expected
    refused = await gql(
        client, "{ externalDataChanges(first: 101) { nodes { rowId } } }", token=admin_token, errors=True
    )
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "100" in refused["errors"][0]["message"]


async def test_sources_root_list(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        made = {
            name: await make(
                conn,
                "external_opportunity_sources",
                fresh_tenant,
                source_name=name,
                connection_status=status,
                is_active=active,
            )
            for name, status, active in (
                ("SAM.gov", "healthy", True),
                ("GovWin IQ", "degraded", True),
                ("SAM.gov (alpha)", "failing", False),
                ("HigherGov", "disabled", False),
            )
        }
    query = """
    query ($first: Int, $after: String, $filter: ExternalOpportunitySourceFilter,
           $orderBy: [ExternalOpportunitySourceOrder!]) {
      externalOpportunitySources(first: $first, after: $after, filter: $filter, orderBy: $orderBy) {
        totalCount pageInfo { hasNextPage endCursor } nodes { rowId sourceName connectionStatus }
      }
    }
    """

    async def names(**variables: Any) -> list[str]:
        body = await gql(client, query, variables, token=admin_token)
        return [n["sourceName"] for n in body["data"]["externalOpportunitySources"]["nodes"]]

    everything = ["GovWin IQ", "HigherGov", "Manual entry", "SAM.gov", "SAM.gov (alpha)"]
    assert await names() == everything  # every tenant is born with its "Manual entry" source
    assert await names(orderBy=[{"field": "SOURCE_NAME", "direction": "DESC"}]) == everything[::-1]
    first = await gql(client, query, {"first": 2}, token=admin_token)
    page = first["data"]["externalOpportunitySources"]
    assert page["totalCount"] == 5 and page["pageInfo"]["hasNextPage"] is True
    assert await names(first=2, after=page["pageInfo"]["endCursor"]) == ["Manual entry", "SAM.gov"]
    assert await names(filter={"sourceName": {"contains": "sam.GOV"}}) == ["SAM.gov", "SAM.gov (alpha)"]
    assert await names(filter={"connectionStatus": {"in": ["FAILING", "DISABLED"]}}) == [
        "HigherGov",
        "SAM.gov (alpha)",
    ]
    assert await names(filter={"isActive": {"eq": False}}) == ["HigherGov", "SAM.gov (alpha)"]
    assert await names(filter={"rowId": {"eq": str(made["GovWin IQ"].id)}}) == ["GovWin IQ"]
    statuses = await gql(
        client, query, {"filter": {"connectionStatus": {"eq": "HEALTHY"}}}, token=admin_token
    )
    assert statuses["data"]["externalOpportunitySources"]["nodes"] == [
        {"rowId": str(made["SAM.gov"].id), "sourceName": "SAM.gov", "connectionStatus": "HEALTHY"}
    ]


# --- statement counts -----------------------------------------------------------------------------


NESTED_SOURCES = """
query ($first: Int) {
  externalOpportunitySources(first: $first, filter: {sourceName: {contains: "feed"}}) {
    nodes {
      rowId connectionStatus createdBy { rowId }
      opportunityProjects(first: 3) { nodes { rowId } }
      pollingConfigurations(first: 3) { nodes { rowId priorityLevel opportunityProject { rowId } } }
      apiIntegrationLogs(first: 3) { nodes { rowId requestHeaders } }
      externalDataChanges(first: 3) { nodes { rowId impactLevel acknowledgedBy { rowId } } }
      history(first: 3) { nodes { rowId } }
    }
  }
}
"""
NESTED_CHANGES = """
query ($first: Int) {
  externalDataChanges(first: $first) {
    nodes {
      rowId changeType
      opportunityProject { rowId }
      externalSource { rowId createdBy { rowId } }
      acknowledgedBy { rowId }
      history(first: 2) { nodes { rowId } }
    }
  }
}
"""


async def _feeds(owner_engine: AsyncEngine, tenant: TenantRef, count: int) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        user = await make(conn, "users", tenant)
        acknowledger = await make(conn, "users", tenant)  # loaded only by the level below the creators
        for i in range(count):
            source = await make(
                conn,
                "external_opportunity_sources",
                tenant,
                source_name=f"feed {i:02}",
                created_by=user.id if i % 2 else tenant.system_user_id,
            )
            refs = {"external_opportunity_sources": source.id}
            project = await make(conn, "opportunity_projects", tenant, refs)
            refs["opportunity_projects"] = project.id
            await make(conn, "polling_configurations", tenant, refs)
            await make(conn, "api_integration_logs", tenant, refs)
            for j in range(2):
                await make(
                    conn,
                    "external_data_changes",
                    tenant,
                    refs,
                    acknowledged_by=acknowledger.id,
                    acknowledged_at=T0,
                    change_timestamp=T0 + timedelta(minutes=2 * i + j),
                )
            await make(
                conn,
                "change_history",
                tenant,
                refs,
                entity_type="external_opportunity_source",
                entity_id=source.id,
                field_name="is_active",
            )


@pytest.mark.parametrize(
    ("query", "root", "per_level"),
    [
        # sources; their creators, project, poll, log, change and history pages; the polls' projects and
        # the changes' acknowledgers
        (NESTED_SOURCES, "externalOpportunitySources", 9),
        # changes; their projects, sources, acknowledgers and history pages; the sources' creators
        (NESTED_CHANGES, "externalDataChanges", 6),
    ],
)
async def test_nested_lists_cost_the_same_statements_for_5_and_50(
    client: httpx.AsyncClient,
    read_app: Starlette,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    admin_token: str,
    query: str,
    root: str,
    per_level: int,
) -> None:
    await _feeds(owner_engine, fresh_tenant, 50)
    counts = []
    for first in (5, 50):
        with count_statements(read_app.state.engine) as statements:
            body = await gql(client, query, {"first": first}, token=admin_token)
        assert len(body["data"][root]["nodes"]) == first
        counts.append(len(_operation(statements)))
    assert counts == [per_level, per_level], counts
    if root == "externalOpportunitySources":
        feed = body["data"][root]["nodes"][7]
        assert (
            len(feed["opportunityProjects"]["nodes"]) == 1 and len(feed["externalDataChanges"]["nodes"]) == 2
        )
        assert len(feed["history"]["nodes"]) == 1


# --- node and other tenants -----------------------------------------------------------------------


async def test_node_finds_each_type_and_not_another_tenants_rows(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    admin_token: str,
    tenant_b: TenantRef,
) -> None:
    mine = await _pursuit(owner_engine, fresh_tenant)
    theirs = await _pursuit(owner_engine, tenant_b)

    def rows(p: Pursuit) -> list[tuple[str, uuid.UUID]]:
        return [
            ("ExternalOpportunitySource", p.source.id),
            ("ExternalOpportunityData", p.versions[0].id),
            ("ExternalDataChange", p.changes[0].id),
            ("PollingConfiguration", p.polls[0].id),
            ("ApiIntegrationLog", p.logs[0].id),
        ]

    query = "query ($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }"
    found = await gql(client, query, {"ids": [_gid(t, i) for t, i in rows(mine)]}, token=admin_token)
    assert [(n["__typename"], n["id"]) for n in found["data"]["nodes"]] == [
        (t, _gid(t, i)) for t, i in rows(mine)
    ]
    missing = [(t, uuid.uuid4()) for t, _ in rows(mine)]
    for ids in (rows(theirs), missing):
        result = await gql(client, query, {"ids": [_gid(t, i) for t, i in ids]}, token=admin_token)
        assert result["data"]["nodes"] == [None] * 5
        for t, i in ids:
            one = await gql(
                client, "query ($id: ID!) { node(id: $id) { id } }", {"id": _gid(t, i)}, token=admin_token
            )
            assert one["data"]["node"] is None
    # Root lists show only the caller's rows.
    listed = await gql(client, "{ externalDataChanges(first: 50) { nodes { rowId } } }", token=admin_token)
    assert sorted(_ids(listed["data"]["externalDataChanges"])) == sorted(
        [str(r.id) for r in mine.changes] + [str(await _stray_change(owner_engine, fresh_tenant, mine))]
    )
    sources = await gql(client, "{ externalOpportunitySources { nodes { rowId } } }", token=admin_token)
    assert sorted(_ids(sources["data"]["externalOpportunitySources"])) == sorted(
        str(i) for i in (mine.source.id, mine.other_source.id, fresh_tenant.manual_source_id)
    )


async def _stray_change(owner_engine: AsyncEngine, tenant: TenantRef, p: Pursuit) -> uuid.UUID:
    """The change _pursuit made on the other source."""
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        found = await conn.scalar(
            text("SELECT id FROM external_data_changes WHERE external_source_id = :s"),
            {"s": p.other_source.id},
        )
        await conn.rollback()
    assert isinstance(found, uuid.UUID)
    return found
