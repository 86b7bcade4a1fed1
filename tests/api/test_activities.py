"""Activities through the read API: polymorphic targets of every allowed type, participants (users
and contacts), the root list (default order, filters, orderBy, pagination), statement counts that
do not grow with the list, node(id) and other tenants' ids."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from models.enums import ACTIVITY_ENTITY_TYPES
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql
from tests.support.sqlcount import count_statements

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TYPE_OF = {
    "opportunity_project": "OpportunityProject",
    "organization": "Organization",
    "contact": "Contact",
    "capture_plan": "CapturePlan",
    "proposal": "Proposal",
    "document": "Document",
}


def _gid(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def _ids(connection: dict[str, Any]) -> list[str]:
    return [n["rowId"] for n in connection["nodes"]]


def _operation(statements: list[str]) -> list[str]:
    """The statements of the GraphQL operation itself (after its set_config), counts excluded."""
    start = max((i for i, s in enumerate(statements) if "set_config" in s), default=-1)
    return [s for s in statements[start + 1 :] if "count(" not in s]


async def _node(client: httpx.AsyncClient, token: str, type_name: str, row_id: Any, selection: str) -> Any:
    query = f"query ($id: ID!) {{ node(id: $id) {{ ... on {type_name} {{ {selection} }} }} }}"
    body = await gql(client, query, {"id": _gid(type_name, row_id)}, token=token)
    return body["data"]["node"]


@dataclass
class Agenda:
    """One activity about a record of every allowed type, with participants and references."""

    assignee: Row[Any]
    editor: Row[Any]
    project: Row[Any]
    targets: dict[str, Row[Any]] = field(default_factory=dict)  # entity_type -> record
    activities: dict[str, Row[Any]] = field(default_factory=dict)  # entity_type -> its activity
    change: Row[Any] | None = None
    participants: list[Row[Any]] = field(default_factory=list)  # of the project's activity, by added_at
    contact: Row[Any] | None = None


async def _agenda(owner_engine: AsyncEngine, tenant: TenantRef) -> Agenda:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        assignee = await make(conn, "users", tenant)
        editor = await make(conn, "users", tenant)
        project = await make(conn, "opportunity_projects", tenant)
        refs = {"opportunity_projects": project.id}
        agenda = Agenda(assignee, editor, project)
        organization = await make(conn, "organizations", tenant)
        agenda.contact = await make(conn, "contacts", tenant, organization_id=organization.id)
        agenda.targets = {
            "opportunity_project": project,
            "organization": organization,
            "contact": agenda.contact,
            "capture_plan": await make(conn, "capture_plans", tenant, refs),
            "proposal": await make(conn, "proposals", tenant, refs),
            "document": await make(conn, "documents", tenant, refs),
        }
        assert set(agenda.targets) == {t.value for t in ACTIVITY_ENTITY_TYPES}
        agenda.change = await make(conn, "external_data_changes", tenant, refs)
        for i, (kind, target) in enumerate(agenda.targets.items()):
            agenda.activities[kind] = await make(
                conn,
                "activities",
                tenant,
                refs,
                entity_type=kind,
                entity_id=target.id,
                subject=f"About {kind}",
                activity_date=T0 + timedelta(days=i),
                due_date=T0 + timedelta(days=10 - i),
                assigned_to=assignee.id if i % 2 == 0 else None,
                updated_by=editor.id,
                status="completed" if kind == "contact" else "pending",
                priority="high" if kind == "proposal" else "medium",
                external_change_reference=agenda.change.id if kind == "opportunity_project" else None,
                triggered_by_external_change=kind == "opportunity_project",
            )
        about_project = agenda.activities["opportunity_project"]
        for i, (kind, who) in enumerate((("contact", agenda.contact.id), ("user", assignee.id))):
            agenda.participants.append(
                await make(
                    conn,
                    "activity_participants",
                    tenant,
                    {"activities": about_project.id},
                    participant_type=kind,
                    participant_id=who,
                    added_by=editor.id,
                    role=f"role {i}",
                    added_at=T0 + timedelta(minutes=i),
                )
            )
    return agenda


# --- relations, both ways -------------------------------------------------------------------------


async def test_targets_of_every_allowed_type(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    agenda = await _agenda(owner_engine, fresh_tenant)
    for kind, activity in agenda.activities.items():
        node = await _node(
            client, admin_token, "Activity", activity.id, "entityType entityId target { __typename id }"
        )
        type_name = TYPE_OF[kind]
        target = agenda.targets[kind]
        assert node == {
            "entityType": kind.upper(),
            "entityId": str(target.id),
            "target": {"__typename": type_name, "id": _gid(type_name, target.id)},
        }
    # The reverse side this domain owns: a document's activities.
    document = await _node(
        client,
        admin_token,
        "Document",
        agenda.targets["document"].id,
        "activities(first: 5) { nodes { rowId target { id } } }",
    )
    assert _ids(document["activities"]) == [str(agenda.activities["document"].id)]


async def test_activity_fields_and_relations(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    agenda = await _agenda(owner_engine, fresh_tenant)
    activity = agenda.activities["opportunity_project"]
    node = await _node(
        client,
        admin_token,
        "Activity",
        activity.id,
        """
        rowId subject status priority completionPercentage triggeredByExternalChange activityDate
        assignee { rowId } createdBy { rowId } updatedBy { rowId }
        externalChangeReference { rowId }
        participants(first: 10) {
          totalCount
          nodes {
            rowId participantType participantId role
            participant { __typename ... on User { rowId } ... on Contact { rowId } }
            activity { rowId } addedBy { rowId }
          }
        }
        history(first: 5) { totalCount }
    """,
    )
    assert node["rowId"] == str(activity.id) and node["subject"] == "About opportunity_project"
    assert (node["status"], node["priority"], node["completionPercentage"]) == ("PENDING", "MEDIUM", 0)
    assert node["triggeredByExternalChange"] is True and node["activityDate"] == "2026-03-01T12:00:00.000000Z"
    assert node["assignee"] == {"rowId": str(agenda.assignee.id)}
    assert node["createdBy"] == {"rowId": str(fresh_tenant.system_user_id)}
    assert node["updatedBy"] == {"rowId": str(agenda.editor.id)}
    assert agenda.change is not None and node["externalChangeReference"] == {"rowId": str(agenda.change.id)}
    assert node["history"] == {"totalCount": 0}
    participants = node["participants"]
    assert participants["totalCount"] == 2
    assert _ids(participants) == [str(p.id) for p in agenda.participants]
    contact, user = participants["nodes"]
    assert agenda.contact is not None
    assert (contact["participantType"], contact["role"]) == ("CONTACT", "role 0")
    assert contact["participant"] == {"__typename": "Contact", "rowId": str(agenda.contact.id)}
    assert user["participant"] == {"__typename": "User", "rowId": str(agenda.assignee.id)}
    assert user["participantId"] == str(agenda.assignee.id)
    for p in (contact, user):
        assert p["activity"] == {"rowId": str(activity.id)} and p["addedBy"] == {
            "rowId": str(agenda.editor.id)
        }
    # Without an assignee or a triggering change, those fields are null.
    other = await _node(
        client,
        admin_token,
        "Activity",
        agenda.activities["organization"].id,
        "assignee { rowId } externalChangeReference { rowId }",
    )
    assert other == {"assignee": None, "externalChangeReference": None}


# --- the root list --------------------------------------------------------------------------------

LIST = """
query ($filter: ActivityFilter, $orderBy: [ActivityOrder!], $first: Int, $after: String, $last: Int,
       $before: String) {
  activities(filter: $filter, orderBy: $orderBy, first: $first, after: $after, last: $last, before: $before) {
    totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } nodes { rowId subject }
  }
}
"""


async def _list(client: httpx.AsyncClient, token: str, **variables: Any) -> dict[str, Any]:
    body = await gql(client, LIST, variables, token=token)
    page: dict[str, Any] = body["data"]["activities"]
    return page


async def test_root_list_order_filters_and_pages(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    agenda = await _agenda(owner_engine, fresh_tenant)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        undated = await make(
            conn, "activities", fresh_tenant, {"opportunity_projects": agenda.project.id}, subject="Undated"
        )
    by_date = list(agenda.activities.values())[::-1]  # activity_date ascending as inserted
    # Default: activity_date DESC (PostgreSQL puts NULL first descending), then id.
    page = await _list(client, admin_token)
    assert _ids(page) == [str(undated.id)] + [str(a.id) for a in by_date] and page["totalCount"] == 7

    async def ids(filter_: dict[str, Any], **more: Any) -> list[str]:
        return _ids(await _list(client, admin_token, filter=filter_, **more))

    acts = agenda.activities
    assert await ids({"status": {"eq": "COMPLETED"}}) == [str(acts["contact"].id)]
    assert await ids({"priority": {"in": ["HIGH", "CRITICAL"]}}) == [str(acts["proposal"].id)]
    assigned = [str(acts[k].id) for k in ("proposal", "contact", "opportunity_project")]  # i = 4, 2, 0
    assert await ids({"assignedTo": {"eq": str(agenda.assignee.id)}}) == assigned
    target = agenda.targets["capture_plan"]
    assert await ids({"entityType": {"eq": "CAPTURE_PLAN"}, "entityId": {"eq": str(target.id)}}) == [
        str(acts["capture_plan"].id)
    ]
    assert await ids({"entityType": {"eq": "DOCUMENT"}, "entityId": {"eq": str(target.id)}}) == []
    # due_date = T0 + (10 - i) days: days 7..9 are i = 3, 2, 1.
    window = {"gte": (T0 + timedelta(days=7)).isoformat(), "lte": (T0 + timedelta(days=9)).isoformat()}
    assert await ids({"dueDate": window}) == [
        str(acts[k].id) for k in ("capture_plan", "contact", "organization")
    ]
    assert await ids({"subject": {"contains": "about PROP"}}) == [str(acts["proposal"].id)]
    # orderBy an indexed column: due date ascending (NULL last), the id breaking ties.
    by_due = await ids({}, orderBy=[{"field": "DUE_DATE", "direction": "ASC"}])
    assert by_due == [
        str(acts[k].id)
        for k in ("document", "proposal", "capture_plan", "contact", "organization", "opportunity_project")
    ] + [str(undated.id)]
    # Keyset pages forwards across an insert, then backwards.
    first = await _list(client, admin_token, first=3)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await make(
            conn,
            "activities",
            fresh_tenant,
            {"opportunity_projects": agenda.project.id},
            activity_date=T0 + timedelta(days=100),
        )
    second = await _list(client, admin_token, first=3, after=first["pageInfo"]["endCursor"])
    assert _ids(second) == [str(a.id) for a in by_date[2:5]]
    back = await _list(client, admin_token, last=2, before=second["pageInfo"]["startCursor"])
    assert _ids(back) == [str(a.id) for a in by_date[0:2]] and back["pageInfo"]["hasPreviousPage"]
    refused = await gql(
        client, "{ activities(last: 101) { nodes { rowId } } }", token=admin_token, errors=True
    )
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


# --- statement counts -----------------------------------------------------------------------------

NESTED = """
query ($first: Int) {
  activities(first: $first) {
    nodes {
      rowId
      target { id ... on Contact { organization { rowId } } }
      assignee { rowId } createdBy { rowId } updatedBy { rowId }
      externalChangeReference { rowId }
      participants(first: 3) { nodes { participant { id } addedBy { rowId } } }
      history(first: 2) { nodes { rowId } }
    }
  }
}
"""


async def test_nested_activities_cost_the_same_statements_for_5_and_50(
    client: httpx.AsyncClient,
    read_app: Starlette,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    admin_token: str,
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        project = await make(conn, "opportunity_projects", fresh_tenant)
        refs = {"opportunity_projects": project.id}
        organization = await make(conn, "organizations", fresh_tenant)
        contact = await make(conn, "contacts", fresh_tenant, organization_id=organization.id)
        document = await make(conn, "documents", fresh_tenant, refs)
        change = await make(conn, "external_data_changes", fresh_tenant, refs)
        users = [await make(conn, "users", fresh_tenant) for _ in range(3)]
        targets = [("opportunity_project", project.id), ("contact", contact.id), ("document", document.id)]
        for i in range(50):
            kind, target_id = targets[i % 3]  # every page of 5 or 50 holds all three kinds
            activity = await make(
                conn,
                "activities",
                fresh_tenant,
                refs,
                entity_type=kind,
                entity_id=target_id,
                activity_date=T0 - timedelta(hours=i),
                assigned_to=users[0].id,
                updated_by=users[1].id,
                external_change_reference=change.id,
            )
            await make(
                conn,
                "activity_participants",
                fresh_tenant,
                {"activities": activity.id},
                participant_type="contact",
                participant_id=contact.id,
                added_by=users[2].id,
            )
            await make(
                conn,
                "activity_participants",
                fresh_tenant,
                {"activities": activity.id},
                participant_type="user",
                participant_id=users[0].id,
                added_by=users[2].id,
            )
    engine = read_app.state.engine
    counts = []
    for first in (5, 50):
        with count_statements(engine) as statements:
            body = await gql(client, NESTED, {"first": first}, token=admin_token)
        nodes = body["data"]["activities"]["nodes"]
        assert len(nodes) == first
        counts.append(len(_operation(statements)))
    # activities; targets (projects, contacts, documents), users (assignee, creator and editor in
    # one batch), changes, participant pages, history; then the participants' adders (users) and
    # the contact targets' organizations (the participants' contacts are already loaded: the
    # loaders cache by id)
    assert counts[0] == counts[1] == 10, counts
    assert {n["target"]["id"] for n in nodes} == {
        _gid("OpportunityProject", project.id),
        _gid("Contact", contact.id),
        _gid("Document", document.id),
    }
    assert all(len(n["participants"]["nodes"]) == 2 for n in nodes)


# --- node and other tenants -----------------------------------------------------------------------


async def test_node_and_other_tenants(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    tenant_b: TenantRef,
    admin_token: str,
) -> None:
    mine = await _agenda(owner_engine, fresh_tenant)
    other = await _agenda(owner_engine, tenant_b)
    query = "query ($id: ID!) { node(id: $id) { id } }"
    for type_name, row, foreign in (
        ("Activity", mine.activities["proposal"], other.activities["proposal"]),
        ("ActivityParticipant", mine.participants[0], other.participants[0]),
    ):
        body = await gql(client, query, {"id": _gid(type_name, row.id)}, token=admin_token)
        assert body["data"]["node"] == {"id": _gid(type_name, row.id)}
        for gid in (_gid(type_name, foreign.id), _gid(type_name, uuid.uuid4())):
            assert (await gql(client, query, {"id": gid}, token=admin_token))["data"]["node"] is None
    # Filters naming the other tenant's ids find nothing.
    assert (
        _ids(await _list(client, admin_token, filter={"rowId": {"eq": str(other.activities["proposal"].id)}}))
        == []
    )
    assert _ids(await _list(client, admin_token, filter={"entityId": {"eq": str(other.project.id)}})) == []
    # Polymorphic references (no foreign key) to the other tenant's rows resolve to null, exactly
    # like ids that exist nowhere: a target of every allowed type, and both kinds of participant.
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        refs = {"opportunity_projects": mine.project.id}
        dangling = {
            kind: await make(conn, "activities", fresh_tenant, refs, entity_type=kind, entity_id=target.id)
            for kind, target in other.targets.items()
        }
        missing = await make(
            conn, "activities", fresh_tenant, refs, entity_type="contact", entity_id=uuid.uuid4()
        )
        assert other.contact is not None
        people = [
            await make(
                conn,
                "activity_participants",
                fresh_tenant,
                {"activities": missing.id},
                participant_type=kind,
                participant_id=who,
                added_at=T0 + timedelta(minutes=i),
            )
            for i, (kind, who) in enumerate(
                (("contact", other.contact.id), ("user", other.assignee.id), ("user", uuid.uuid4()))
            )
        ]
    for kind, activity in [*dangling.items(), ("missing", missing)]:
        node = await _node(client, admin_token, "Activity", activity.id, "entityId target { id }")
        assert node == {"entityId": str(activity.entity_id), "target": None}, kind
    node = await _node(
        client,
        admin_token,
        "Activity",
        missing.id,
        "participants(first: 5) { nodes { rowId participant { id } } }",
    )
    assert node["participants"]["nodes"] == [{"rowId": str(p.id), "participant": None} for p in people]
