"""Who may call the write mutations: tenant-wide and project-scoped grants, score fields, denials audited."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support.graphql import gql
from tests.writes.conftest import Rows, SignIn, codes, mutate, refused
from tests.writes.test_projects import ARCHIVE, CREATE, UPDATE, _wire

OVERRIDE_CREATE = """
mutation($input: OpportunityProjectOverrideCreateInput!) {
  opportunityProjectOverrideCreate(input: $input) { opportunityProjectOverride { rowId } errors { code field } }
}
"""
PLAN_CREATE = """
mutation($input: CapturePlanCreateInput!) {
  capturePlanCreate(input: $input) { capturePlan { rowId } errors { code field } }
}
"""


def _update(row: Any, **values: Any) -> dict[str, Any]:
    return {"input": {"rowId": str(row.id), "updatedAt": _wire(row.updated_at), **values}}


async def _unchanged(rows: Rows, row: Any) -> None:
    stored = await rows.one("SELECT updated_at, archived_at FROM opportunity_projects WHERE id = :p", p=row.id)
    assert (stored.updated_at, stored.archived_at) == (row.updated_at, None)
    assert await rows.audit(row.id) == []


async def test_a_viewer_may_not_write_and_each_refusal_is_audited(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    viewer = await sign_in_as("Viewer")
    row = await rows.project()
    attempts: list[tuple[str, dict[str, Any], str]] = [
        (CREATE, {"input": {"projectName": "Nope"}}, "opportunity:write"),
        (UPDATE, _update(row, title="Nope"), "opportunity:write"),
        (ARCHIVE, _update(row), "opportunity:archive"),
        (OVERRIDE_CREATE, {"input": {"opportunityProjectRowId": str(row.id), "fieldName": "title",
                                     "overrideValue": "x"}}, "opportunity:write"),
        (PLAN_CREATE, {"input": {"opportunityProjectRowId": str(row.id), "planName": "x"}}, "capture_plan:write"),
    ]
    for document, variables, permission in attempts:
        errors = await refused(client, viewer, document, variables)
        assert codes(errors) == ["FORBIDDEN"]
        assert errors[0]["extensions"]["permission"] == permission
    await _unchanged(rows, row)
    denials = await rows.denials()
    assert [d.permission_used for d in denials] == [p for _, _, p in attempts]
    assert all(d.access_granted is False and d.user_id == viewer.id for d in denials)
    assert (await rows.one("SELECT count(*) AS n FROM opportunity_projects WHERE tenant_id = :t")).n == 1
    assert await rows.history() == []


async def test_score_fields_need_the_score_permission(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    analyst = await sign_in_as("BD Analyst")  # opportunity:write without opportunity.score:write
    row = await rows.project(title="Kept")
    errors = await refused(client, analyst, UPDATE, _update(row, title="Changed", winProbabilityScore="55"))
    assert codes(errors) == ["FORBIDDEN"] and errors[0]["extensions"]["permission"] == "opportunity.score:write"
    errors = await refused(client, analyst, UPDATE, _update(row, strategicValueScore=None))  # clearing is setting
    assert codes(errors) == ["FORBIDDEN"]
    await _unchanged(rows, row)
    errors = await refused(client, analyst, CREATE, {"input": {"projectName": "Scored", "pursuitHealthScore": "10"}})
    assert codes(errors) == ["FORBIDDEN"]
    assert (await rows.one("SELECT count(*) AS n FROM opportunity_projects WHERE tenant_id = :t")).n == 1
    assert [d.permission_used for d in await rows.denials()] == ["opportunity.score:write"] * 3

    # Without score fields (or with null ones on a create) the same caller may write.
    data = await mutate(client, analyst, UPDATE, _update(row, title="Changed"))
    assert data["opportunityProjectUpdate"]["opportunityProject"]["title"] == "Changed"
    data = await mutate(client, analyst, CREATE, {"input": {"projectName": "Unscored", "winProbabilityScore": None}})
    assert data["opportunityProjectCreate"]["errors"] == []
    (log,) = await rows.audit(row.id)
    assert log.permission_used == "opportunity:write"


async def test_project_scoped_grants_reach_their_project_only(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    mine, other = await rows.project(title="Mine"), await rows.project(title="Other")
    manager = await sign_in_as("Capture Manager", on_project=mine.id)
    data = await mutate(client, manager, UPDATE, _update(mine, title="Mine, edited", winProbabilityScore="60"))
    assert data["opportunityProjectUpdate"]["opportunityProject"]["title"] == "Mine, edited"
    (log,) = await rows.audit(mine.id)
    assert log.permission_used == "opportunity:write,opportunity.score:write"

    assert codes(await refused(client, manager, UPDATE, _update(other, title="x"))) == ["FORBIDDEN"]
    assert codes(await refused(client, manager, ARCHIVE, _update(other))) == ["FORBIDDEN"]
    # An id that does not exist is refused exactly like one the caller may not touch: nothing leaks.
    missing = {"input": {"rowId": str(uuid.uuid4()), "updatedAt": _wire(mine.updated_at), "title": "x"}}
    assert codes(await refused(client, manager, UPDATE, missing)) == ["FORBIDDEN"]
    # Creating a project is tenant-wide: there is no project to hold the grant yet.
    assert codes(await refused(client, manager, CREATE, {"input": {"projectName": "x"}})) == ["FORBIDDEN"]
    await _unchanged(rows, other)

    analyst = await sign_in_as("BD Analyst", on_project=other.id)
    errors = await refused(client, analyst, UPDATE, _update(other, winProbabilityScore="1"))
    assert errors[0]["extensions"]["permission"] == "opportunity.score:write"
    await _unchanged(rows, other)


async def test_a_refused_mutation_leaves_the_documents_earlier_ones_committed(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    analyst = await sign_in_as("BD Analyst")
    row = await rows.project()
    document = f"""
    mutation Mixed {{
      created: opportunityProjectCreate(input: {{projectName: "Kept"}}) {{ opportunityProject {{ rowId }} }}
      archived: opportunityProjectArchive(input: {{rowId: "{row.id}", updatedAt: "{_wire(row.updated_at)}"}}) {{
        opportunityProject {{ rowId }}
      }}
    }}
    """
    body = await gql(client, document, token=analyst.token, errors=True)
    assert codes(body["errors"]) == ["FORBIDDEN"] and body["errors"][0]["path"] == ["archived"]
    assert body["data"]["archived"] is None
    created = uuid.UUID(body["data"]["created"]["opportunityProject"]["rowId"])
    assert [log.action_type for log in await rows.audit(created)] == ["CREATE"]
    await _unchanged(rows, row)
