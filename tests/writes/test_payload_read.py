"""The payload's entity of a mutation: the row as stored, whether it was read or built from the write.

The mutation kit (schema/mutation_kit.py `_write_and_load`) builds the payload's entity from the row
the unit of work wrote (its statement returns every column as stored) when the caller reads every row
of the table, and reads it through the request's loaders otherwise (a project-scoped caller, whose
read scope has a condition). Either way the payload is what a read right after the commit returns,
field for field (numeric scale, jsonb, timestamps); only the statement differs.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
from starlette.applications import Starlette

from tests.support.roundtrips import RoundTrip, count_round_trips
from tests.writes.conftest import Caller, Rows, SignIn, mutate

FIELDS = (
    "id rowId projectName internalReferenceNumber externalOpportunityId externalOpportunityUrl solicitationNumber"
    " agencyName contractingOffice title description winProbabilityScore strategicValueScore pursuitHealthScore"
    " assignedTeamMembers lastSyncedAt syncErrorMessage versionHash createdAt updatedAt archivedAt projectStatus"
    " pipelineStage priorityLevel syncStatus"
)
UPDATE = f"""mutation ($input: OpportunityProjectUpdateInput!) {{
  opportunityProjectUpdate(input: $input) {{ opportunityProject {{ {FIELDS} }} errors {{ field code message }} }}
}}"""
CREATE = f"""mutation ($input: OpportunityProjectCreateInput!) {{
  opportunityProjectCreate(input: $input) {{ opportunityProject {{ {FIELDS} }} errors {{ field code message }} }}
}}"""
READ = f"""query ($id: ID!) {{ node(id: $id) {{ ... on OpportunityProject {{ {FIELDS} }} }} }}"""


async def _read(client: httpx.AsyncClient, caller: Caller, global_id: str) -> dict[str, Any]:
    data = await mutate(client, caller, READ, {"id": global_id})
    node: dict[str, Any] = data["node"]
    return node


def _reads_after(trips: list[RoundTrip], write: str) -> list[RoundTrip]:
    """The statements reading opportunity_projects after the one that wrote it."""
    at = next(i for i, trip in enumerate(trips) if write in trip.sql)
    return [trip for trip in trips[at + 1 :] if "FROM opportunity_projects" in trip.sql]


async def _update(
    client: httpx.AsyncClient, app: Starlette, caller: Caller, rows: Rows, values: dict[str, Any]
) -> tuple[dict[str, Any], list[RoundTrip]]:
    project = await rows.project()
    seen = (await rows.one("SELECT updated_at FROM opportunity_projects WHERE id = :p", p=project.id)).updated_at
    variables = {"input": {"rowId": str(project.id), "updatedAt": seen.isoformat(), **values}}
    with count_round_trips(app.state.engine) as counted:
        data = await mutate(client, caller, UPDATE, variables)
    payload = data["opportunityProjectUpdate"]
    assert payload["errors"] == [], payload
    return payload["opportunityProject"], list(counted)


async def test_a_tenant_wide_readers_update_payload_is_the_stored_row_without_a_read(
    client: httpx.AsyncClient, write_app: Starlette, sign_in_as: SignIn, rows: Rows
) -> None:
    admin = await sign_in_as("Tenant Admin")
    member = admin.id
    node, trips = await _update(
        client, write_app, admin, rows,
        {"title": "Stored", "winProbabilityScore": "42.5", "assignedTeamMembers": [str(member)],
         "priorityLevel": "HIGH", "description": None},
    )
    # The stored forms, not the values sent: the column's scale, the jsonb list of text ids.
    assert node["winProbabilityScore"] == "42.50" or Decimal(node["winProbabilityScore"]) == Decimal("42.50")
    assert node["assignedTeamMembers"] == [str(member)]
    assert node == await _read(client, admin, node["id"])
    assert _reads_after(trips, "UPDATE opportunity_projects") == [], trips


async def test_a_tenant_wide_readers_create_payload_is_the_stored_row_without_a_read(
    client: httpx.AsyncClient, write_app: Starlette, sign_in_as: SignIn
) -> None:
    admin = await sign_in_as("Tenant Admin")
    variables = {"input": {"projectName": f"Stored {uuid.uuid4().hex[:6]}", "pursuitHealthScore": "7"}}
    with count_round_trips(write_app.state.engine) as counted:
        data = await mutate(client, admin, CREATE, variables)
    payload = data["opportunityProjectCreate"]
    assert payload["errors"] == [], payload
    node = payload["opportunityProject"]
    # Server defaults and the manual entry's values, as stored.
    assert node["syncStatus"] == "MANUAL" and node["externalOpportunityId"].startswith("MANUAL-")
    assert node["createdAt"] is not None and node["updatedAt"] is not None
    assert node == await _read(client, admin, node["id"])
    assert _reads_after(list(counted), "INSERT INTO opportunity_projects") == [], list(counted)


async def test_a_project_scoped_callers_payload_is_read_through_the_loaders(
    client: httpx.AsyncClient, write_app: Starlette, sign_in_as: SignIn, rows: Rows
) -> None:
    project = await rows.project()
    manager = await sign_in_as("Capture Manager", on_project=project.id)
    seen = (await rows.one("SELECT updated_at FROM opportunity_projects WHERE id = :p", p=project.id)).updated_at
    variables = {"input": {"rowId": str(project.id), "updatedAt": seen.isoformat(), "title": "Scoped"}}
    with count_round_trips(write_app.state.engine) as counted:
        data = await mutate(client, manager, UPDATE, variables)
    payload = data["opportunityProjectUpdate"]
    assert payload["errors"] == [], payload
    node = payload["opportunityProject"]
    assert node["title"] == "Scoped"
    assert node == await _read(client, manager, node["id"])
    # The caller's read scope has a condition on the table: the payload is read, in the write's transaction.
    trips = list(counted)
    assert _reads_after(trips, "UPDATE opportunity_projects"), trips
    assert trips[-1].sql.strip().upper().startswith("COMMIT"), trips
