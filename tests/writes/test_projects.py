"""opportunityProjectCreate / Update / Archive over HTTP: the entity, its audit trail, the errors."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.support.audit_trail import expect_audit
from tests.support.db import TenantRef
from tests.writes.conftest import Rows, SignIn, mutate

PROJECT_FIELDS = """
  rowId projectName title priorityLevel pipelineStage projectStatus winProbabilityScore
  assignedTeamMembers updatedAt archivedAt archivedBy { rowId } createdBy { rowId }
"""

CREATE = f"""
mutation Create($input: OpportunityProjectCreateInput!) {{
  opportunityProjectCreate(input: $input) {{
    opportunityProject {{ {PROJECT_FIELDS} }}
    errors {{ field code message }}
  }}
}}
"""

UPDATE = f"""
mutation Update($input: OpportunityProjectUpdateInput!) {{
  opportunityProjectUpdate(input: $input) {{
    opportunityProject {{ {PROJECT_FIELDS} }}
    errors {{ field code message }}
  }}
}}
"""

ARCHIVE = f"""
mutation Archive($input: OpportunityProjectArchiveInput!) {{
  opportunityProjectArchive(input: $input) {{
    opportunityProject {{ {PROJECT_FIELDS} }}
    errors {{ field code message }}
  }}
}}
"""


def _wire(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.audits("opportunityProjectCreate")
async def test_create_records_the_project_and_its_evidence(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, fresh_tenant: TenantRef
) -> None:
    manager = await sign_in_as("Capture Manager")
    data = await mutate(client, manager, CREATE, {"input": {
        "projectName": "Navy logistics modernization", "title": "NAVSUP IT", "priorityLevel": "HIGH",
        "winProbabilityScore": "42.5", "assignedTeamMembers": [str(manager.id)],
    }})
    payload = data["opportunityProjectCreate"]
    assert payload["errors"] == []
    project = payload["opportunityProject"]
    assert project["projectName"] == "Navy logistics modernization"
    assert project["priorityLevel"] == "HIGH"
    assert project["projectStatus"] == "ACTIVE" and project["pipelineStage"] == "PHASE_0"  # database defaults
    assert project["winProbabilityScore"] == "42.50"  # as stored (numeric(5,2))
    assert project["assignedTeamMembers"] == [str(manager.id)]
    assert project["createdBy"]["rowId"] == str(manager.id)
    project_id = uuid.UUID(project["rowId"])

    stored = await rows.one("SELECT * FROM opportunity_projects WHERE id = :p", p=project_id)
    assert stored.external_source_id is not None and stored.external_opportunity_id.startswith("MANUAL-")
    assert stored.sync_status == "manual"

    (log,) = await rows.audit(project_id)
    assert log.action_type == "CREATE" and log.entity_type == "opportunity_project"
    assert log.user_id == manager.id and log.access_granted is True
    assert log.permission_used == "opportunity:write,opportunity.score:write"
    assert log.request_id and log.api_endpoint == "/graphql" and log.http_method == "POST"
    assert log.session_id is not None and str(log.ip_address) == "127.0.0.1"
    assert "opportunityProjectCreate" in log.operation_description and "Create" in log.operation_description
    assert log.before_values is None
    # Server-side values as stored: defaults, the numeric scale, the trigger's timestamps.
    after = log.after_values
    assert after["project_status"] == "active" and after["win_probability_score"] == "42.50"
    assert after["updated_at"] == project["updatedAt"] and after["id"] == str(project_id)
    assert "project_name" in log.changed_fields and "updated_at" not in log.changed_fields

    history = await rows.history(project_id)
    fields = {h.field_name: h for h in history}
    assert fields["project_name"].old_value is None
    assert fields["project_name"].new_value == "Navy logistics modernization"
    assert fields["win_probability_score"].new_value == "42.50"
    assert "updated_at" not in fields and "id" not in fields
    assert {h.change_source for h in history} == {"user"}
    assert {h.changed_by_user_id for h in history} == {manager.id}
    batches = {h.change_batch_id for h in history}
    assert len(batches) == 1 and None not in batches
    await expect_audit(rows.engine, rows.tenant.id, "opportunityProjectCreate", action="CREATE", entity_id=project_id,
                       history={"project_name", "title", "win_probability_score"}, user_id=manager.id)


@pytest.mark.audits("opportunityProjectUpdate")
async def test_update_records_before_and_after_and_one_history_row_per_field(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    row = await rows.project(title="Old title", priority_level="low")
    data = await mutate(client, manager, UPDATE, {"input": {
        "rowId": str(row.id), "updatedAt": _wire(row.updated_at), "title": "New title", "priorityLevel": "CRITICAL",
        "winProbabilityScore": "70",
    }})
    payload = data["opportunityProjectUpdate"]
    assert payload["errors"] == []
    project = payload["opportunityProject"]
    assert project["title"] == "New title" and project["priorityLevel"] == "CRITICAL"
    assert project["winProbabilityScore"] == "70.00"
    assert project["updatedAt"] > _wire(row.updated_at)

    (log,) = await rows.audit(row.id)
    assert log.action_type == "UPDATE"
    assert sorted(log.changed_fields) == ["priority_level", "title", "updated_at", "win_probability_score"]
    assert log.before_values == {
        "title": "Old title", "priority_level": "low", "win_probability_score": None,
        "updated_at": _wire(row.updated_at),
    }
    assert log.after_values == {
        "title": "New title", "priority_level": "critical", "win_probability_score": "70.00",
        "updated_at": project["updatedAt"],
    }
    history = {(h.field_name, h.old_value, h.new_value) for h in await rows.history(row.id)}
    assert history == {
        ("title", "Old title", "New title"),
        ("priority_level", "low", "critical"),
        ("win_probability_score", None, "70.00"),
    }
    impact = {h.field_name: h.change_impact_level for h in await rows.history(row.id)}
    assert impact == {"title": "low", "priority_level": "medium", "win_probability_score": "medium"}
    assert len({h.change_batch_id for h in await rows.history(row.id)}) == 1
    await expect_audit(rows.engine, rows.tenant.id, "opportunityProjectUpdate", action="UPDATE", entity_id=row.id,
                       history={"title", "priority_level", "win_probability_score"}, user_id=manager.id)


async def test_an_update_that_changes_nothing_writes_nothing(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    row = await rows.project(title="Same", win_probability_score=70)
    data = await mutate(client, manager, UPDATE, {"input": {
        "rowId": str(row.id), "updatedAt": _wire(row.updated_at), "title": "Same", "winProbabilityScore": "70.0",
    }})
    assert data["opportunityProjectUpdate"]["opportunityProject"]["updatedAt"] == _wire(row.updated_at)
    assert await rows.audit(row.id) == []


@pytest.mark.audits("opportunityProjectArchive")
async def test_archive_sets_archived_at_and_by_and_records_the_reason(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    row = await rows.project()
    data = await mutate(client, manager, ARCHIVE, {"input": {
        "rowId": str(row.id), "updatedAt": _wire(row.updated_at), "reason": "No bid: incumbent re-compete",
    }})
    project = data["opportunityProjectArchive"]["opportunityProject"]
    assert project["archivedAt"] is not None and project["archivedBy"]["rowId"] == str(manager.id)
    # One instant for the whole transaction: archived_at is the updated_at the trigger set.
    assert project["archivedAt"] == project["updatedAt"]
    (log,) = await rows.audit(row.id)
    assert log.action_type == "ARCHIVE" and log.risk_level == "medium"
    assert log.change_reason == "No bid: incumbent re-compete"
    assert log.permission_used == "opportunity:archive"
    assert log.before_values["archived_at"] is None and log.after_values["archived_by"] == str(manager.id)
    assert {h.field_name for h in await rows.history(row.id)} == {"archived_at", "archived_by"}
    await expect_audit(rows.engine, rows.tenant.id, "opportunityProjectArchive", action="ARCHIVE", entity_id=row.id,
                       history={"archived_at", "archived_by"}, user_id=manager.id)
    assert (await rows.one("SELECT count(*) AS n FROM opportunity_projects WHERE id = :p", p=row.id)).n == 1

    again = await mutate(client, manager, ARCHIVE, {"input": {"rowId": str(row.id), "updatedAt": project["updatedAt"]}})
    assert again["opportunityProjectArchive"]["errors"] == [
        {"field": ["input", "rowId"], "code": "VALIDATION", "message": "The opportunity project is already archived."}
    ]
    update = await mutate(client, manager, UPDATE, {"input": {
        "rowId": str(row.id), "updatedAt": project["updatedAt"], "title": "x"}})
    assert codes_of(update["opportunityProjectUpdate"]) == [("VALIDATION", ["input", "rowId"])]
    assert len(await rows.audit(row.id)) == 1


async def test_a_second_mutation_in_the_same_document_sees_the_first(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    document = """
    mutation Both($create: OpportunityProjectCreateInput!) {
      first: opportunityProjectCreate(input: $create) { opportunityProject { rowId projectName } errors { code } }
      second: opportunityProjectCreate(input: {projectName: "Second"}) { opportunityProject { rowId } errors { code } }
    }
    """
    data = await mutate(client, manager, document, {"create": {"projectName": "First"}})
    first = uuid.UUID(data["first"]["opportunityProject"]["rowId"])
    second = uuid.UUID(data["second"]["opportunityProject"]["rowId"])
    # One transaction and one change batch per mutation field (docs/decisions.md W13).
    batches = {h.change_batch_id for h in await rows.history(first)}
    assert batches.isdisjoint({h.change_batch_id for h in await rows.history(second)})

    row = await rows.project(title="Before")
    chained = f"""
    mutation Chain {{
      a: opportunityProjectUpdate(input: {{rowId: "{row.id}", updatedAt: "{_wire(row.updated_at)}", title: "After"}}) {{
        opportunityProject {{ title updatedAt }} errors {{ code }}
      }}
      b: opportunityProjectUpdate(input: {{rowId: "{row.id}", updatedAt: "{_wire(row.updated_at)}", title: "Lost"}}) {{
        opportunityProject {{ title }} errors {{ code field }}
      }}
    }}
    """
    data = await mutate(client, manager, chained)
    assert data["a"]["opportunityProject"]["title"] == "After"
    # The second read the first's commit: the updatedAt it was given is stale now.
    assert data["b"]["errors"] == [{"code": "CONFLICT", "field": ["input", "updatedAt"]}]
    assert (await rows.one("SELECT title FROM opportunity_projects WHERE id = :p", p=row.id)).title == "After"
    assert len(await rows.audit(row.id)) == 1


def codes_of(payload: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


async def test_a_stale_updated_at_is_a_conflict_and_changes_nothing(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    row = await rows.project(title="Kept")
    stale = row.updated_at.replace(microsecond=(row.updated_at.microsecond + 1) % 1_000_000)
    for document, extra in ((UPDATE, {"title": "Lost"}), (ARCHIVE, {})):
        data = await mutate(client, manager, document, {"input": {
            "rowId": str(row.id), "updatedAt": _wire(stale), **extra}})
        (payload,) = data.values()
        assert payload["opportunityProject"] is None
        assert payload["errors"][0]["code"] == "CONFLICT" and payload["errors"][0]["field"] == ["input", "updatedAt"]
    stored = await rows.one("SELECT title, updated_at, archived_at FROM opportunity_projects WHERE id = :p", p=row.id)
    assert (stored.title, stored.updated_at, stored.archived_at) == ("Kept", row.updated_at, None)
    assert await rows.audit(row.id) == [] and await rows.history(row.id) == []


async def test_unknown_ids_are_not_found_for_a_tenant_wide_caller(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, tenant_b: TenantRef, owner_engine: Any
) -> None:
    manager = await sign_in_as("Capture Manager")
    other = await Rows(owner_engine, tenant_b).project()  # another tenant's project: not found either
    for target in (uuid.uuid4(), other.id):
        for document, extra in ((UPDATE, {"title": "x"}), (ARCHIVE, {})):
            data = await mutate(client, manager, document, {"input": {
                "rowId": str(target), "updatedAt": "2026-01-01T00:00:00.000000Z", **extra}})
            (payload,) = data.values()
            assert codes_of(payload) == [("NOT_FOUND", ["input", "rowId"])]
    assert await rows.audit() == []


async def test_invalid_values_are_validation_errors_naming_the_field(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, fresh_tenant: TenantRef
) -> None:
    manager = await sign_in_as("Capture Manager")
    cases: list[tuple[dict[str, Any], str, list[str]]] = [
        ({"projectName": "  "}, "VALIDATION", ["input", "projectName"]),
        ({"projectName": "x" * 256}, "VALIDATION", ["input", "projectName"]),
        ({"projectName": "p", "winProbabilityScore": "100.01"}, "VALIDATION", ["input", "winProbabilityScore"]),
        ({"projectName": "p", "strategicValueScore": "-1"}, "VALIDATION", ["input", "strategicValueScore"]),
        ({"projectName": "p", "pursuitHealthScore": "50.125"}, "VALIDATION", ["input", "pursuitHealthScore"]),
        ({"projectName": "p", "assignedCaptureManager": str(uuid.uuid4())}, "VALIDATION",
         ["input", "assignedCaptureManager"]),
        ({"projectName": "p", "assignedTeamMembers": [str(uuid.uuid4())]}, "VALIDATION",
         ["input", "assignedTeamMembers"]),
        ({"projectName": "p", "assignedTeamMembers": [str(manager.id), str(manager.id)]}, "VALIDATION",
         ["input", "assignedTeamMembers"]),
        ({"projectName": "p", "externalSourceRowId": str(fresh_tenant.manual_source_id)}, "VALIDATION",
         ["input", "externalOpportunityId"]),
        ({"projectName": "p", "externalSourceRowId": str(uuid.uuid4()), "externalOpportunityId": "N-1"}, "VALIDATION",
         ["input", "externalSourceRowId"]),
    ]
    for values, code, field in cases:
        data = await mutate(client, manager, CREATE, {"input": values})
        payload = data["opportunityProjectCreate"]
        assert payload["opportunityProject"] is None, values
        assert codes_of(payload) == [(code, field)], values
        assert payload["errors"][0]["message"]
    row = await rows.project()
    data = await mutate(client, manager, UPDATE, {"input": {
        "rowId": str(row.id), "updatedAt": _wire(row.updated_at), "projectName": None}})
    assert codes_of(data["opportunityProjectUpdate"]) == [("VALIDATION", ["input", "projectName"])]
    assert await rows.audit() == []
    assert (await rows.one("SELECT count(*) AS n FROM opportunity_projects WHERE tenant_id = :t")).n == 1


async def test_a_taken_external_id_is_a_conflict_on_that_field(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    source = await rows.make("external_opportunity_sources")
    existing = await rows.project(external_source_id=source.id)
    data = await mutate(client, manager, CREATE, {"input": {
        "projectName": "Duplicate", "externalSourceRowId": str(source.id),
        "externalOpportunityId": existing.external_opportunity_id}})
    payload = data["opportunityProjectCreate"]
    assert codes_of(payload) == [("CONFLICT", ["input", "externalOpportunityId"])]
    assert existing.external_opportunity_id not in payload["errors"][0]["message"]  # no stored values in messages
    assert await rows.audit() == []
