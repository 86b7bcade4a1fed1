"""opportunityProjectOverrideCreate / Update / Delete: values checked by field type, deletes audited."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from strawberry.relay import to_base64

from tests.support.audit_trail import expect_audit
from tests.writes.conftest import Rows, SignIn, codes, mutate, refused
from tests.writes.test_projects import _wire

FIELDS = "rowId fieldName overrideValue originalExternalValue overrideReason isActive updatedAt"
CREATE = f"""
mutation($input: OpportunityProjectOverrideCreateInput!) {{
  opportunityProjectOverrideCreate(input: $input) {{
    opportunityProjectOverride {{
      {FIELDS} opportunityProject {{ effective {{ estimatedValueMax {{ value source }} }} }}
    }}
    errors {{ field code message }}
  }}
}}
"""
UPDATE = f"""
mutation($input: OpportunityProjectOverrideUpdateInput!) {{
  opportunityProjectOverrideUpdate(input: $input) {{
    opportunityProjectOverride {{ {FIELDS} }}
    errors {{ field code message }}
  }}
}}
"""
DELETE = """
mutation($input: OpportunityProjectOverrideDeleteInput!) {
  opportunityProjectOverrideDelete(input: $input) { deletedId deletedRowId errors { field code message } }
}
"""

ARCHIVED_AT = datetime(2026, 1, 1, tzinfo=UTC)


def _errors(payload: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


@pytest.mark.audits(
    "opportunityProjectOverrideCreate", "opportunityProjectOverrideUpdate", "opportunityProjectOverrideDelete"
)
async def test_create_update_delete_an_override_with_its_audit_trail(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    analyst = await sign_in_as("BD Analyst")
    project = await rows.project()
    await rows.make("external_opportunity_data", {"opportunity_projects": project.id},
                    estimated_value_max="2500000.00", is_current_version=True)
    data = await mutate(client, analyst, CREATE, {"input": {
        "opportunityProjectRowId": str(project.id), "fieldName": "estimated_value_max",
        "overrideValue": "3100000.00", "overrideReason": "Customer's updated IGCE"}})
    payload = data["opportunityProjectOverrideCreate"]
    assert payload["errors"] == []
    override = payload["opportunityProjectOverride"]
    assert override["overrideValue"] == "3100000.00" and override["isActive"] is True
    assert override["originalExternalValue"] == "2500000.00"  # the source's value, kept as evidence
    assert override["opportunityProject"]["effective"]["estimatedValueMax"] == {
        "value": "3100000.00", "source": "OVERRIDE"}
    override_id = uuid.UUID(override["rowId"])
    (created,) = await rows.audit(override_id)
    assert created.action_type == "CREATE" and created.entity_type == "opportunity_project_override"
    assert created.after_values["override_value"] == "3100000.00"
    await expect_audit(rows.engine, rows.tenant.id, "opportunityProjectOverrideCreate", action="CREATE",
                       entity_id=override_id, history={"override_value", "field_name"}, user_id=analyst.id)

    data = await mutate(client, analyst, UPDATE, {"input": {
        "rowId": str(override_id), "updatedAt": override["updatedAt"], "isActive": False, "overrideValue": None}})
    updated = data["opportunityProjectOverrideUpdate"]["opportunityProjectOverride"]
    assert updated["isActive"] is False and updated["overrideValue"] is None
    _, changed = await rows.audit(override_id)
    assert sorted(changed.changed_fields) == ["is_active", "override_value", "updated_at"]
    assert changed.before_values["override_value"] == "3100000.00" and changed.after_values["override_value"] is None
    await expect_audit(rows.engine, rows.tenant.id, "opportunityProjectOverrideUpdate", action="UPDATE",
                       entity_id=override_id, history={"override_value", "is_active"}, user_id=analyst.id)

    gid = to_base64("OpportunityProjectOverride", override_id)  # the global id, as on the node
    data = await mutate(client, analyst, DELETE, {"input": {"id": gid, "updatedAt": updated["updatedAt"]}})
    assert data["opportunityProjectOverrideDelete"] == {
        "deletedId": gid, "deletedRowId": str(override_id), "errors": []
    }
    *_, deleted = await rows.audit(override_id)
    assert deleted.action_type == "DELETE" and deleted.after_values is None and deleted.risk_level == "medium"
    assert deleted.before_values["field_name"] == "estimated_value_max"
    assert deleted.before_values["override_reason"] == "Customer's updated IGCE"
    removed = [h for h in await rows.history(override_id) if h.change_category == "delete"]
    assert {h.field_name for h in removed} >= {"field_name", "is_active", "override_reason", "original_external_value"}
    assert all(h.new_value is None for h in removed)
    await expect_audit(rows.engine, rows.tenant.id, "opportunityProjectOverrideDelete", action="DELETE",
                       entity_id=override_id, history={"field_name", "is_active"}, user_id=analyst.id)
    assert await rows.all("SELECT id FROM opportunity_project_overrides WHERE id = :o", o=override_id) == []
    batches = [{h.change_batch_id for h in await rows.history(override_id) if h.change_category == c}
               for c in ("create", "update", "delete")]
    assert all(len(b) == 1 for b in batches) and len(set().union(*batches)) == 3


async def test_override_errors(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    analyst = await sign_in_as("BD Analyst")
    project = await rows.project()
    archived = await rows.project(archived_at=ARCHIVED_AT)
    base = {"opportunityProjectRowId": str(project.id), "fieldName": "title", "overrideValue": "Local title"}
    bad_value = ("VALIDATION", ["input", "overrideValue"])
    cases: list[tuple[dict[str, Any], tuple[str, list[str]]]] = [
        ({**base, "fieldName": "project_name"}, ("VALIDATION", ["input", "fieldName"])),
        ({**base, "fieldName": "estimated_value_min", "overrideValue": "TBD"}, bad_value),
        ({**base, "fieldName": "posting_date", "overrideValue": "next week"}, bad_value),
        ({**base, "fieldName": "response_due_date", "overrideValue": "2026-03-01T12:00:00"},
         ("VALIDATION", ["input", "overrideValue"])),  # an instant needs its offset
        ({**base, "overrideValue": {"text": "x"}}, ("VALIDATION", ["input", "overrideValue"])),
        ({**base, "overrideReason": None, "opportunityProjectRowId": str(uuid.uuid4())},
         ("NOT_FOUND", ["input", "opportunityProjectRowId"])),
        ({**base, "opportunityProjectRowId": str(archived.id)}, ("VALIDATION", ["input", "opportunityProjectRowId"])),
    ]
    for values, expected in cases:
        data = await mutate(client, analyst, CREATE, {"input": values})
        assert _errors(data["opportunityProjectOverrideCreate"]) == [expected], values
    first = await mutate(client, analyst, CREATE, {"input": base})
    override = first["opportunityProjectOverrideCreate"]["opportunityProjectOverride"]
    duplicate = await mutate(client, analyst, CREATE, {"input": {**base, "overrideValue": "Another"}})
    assert _errors(duplicate["opportunityProjectOverrideCreate"]) == [("CONFLICT", ["input", "fieldName"])]

    stale = "2020-01-01T00:00:00.000000Z"
    for document, extra in ((UPDATE, {"overrideReason": "x"}), (DELETE, {})):
        target = {"rowId": override["rowId"], "updatedAt": stale, **extra}
        data = await mutate(client, analyst, document, {"input": target})
        (payload,) = data.values()
        assert _errors(payload) == [("CONFLICT", ["input", "updatedAt"])]
        data = await mutate(client, analyst, document, {"input": {**target, "rowId": str(uuid.uuid4())}})
        (payload,) = data.values()
        assert _errors(payload) == [("NOT_FOUND", ["input", "rowId"])]
        if document is DELETE:  # a delete with errors names nothing deleted
            assert (payload["deletedId"], payload["deletedRowId"]) == (None, None)
    current = {"rowId": override["rowId"], "updatedAt": override["updatedAt"]}
    data = await mutate(client, analyst, UPDATE, {"input": {**current, "isActive": None}})
    assert _errors(data["opportunityProjectOverrideUpdate"]) == [("VALIDATION", ["input", "isActive"])]
    data = await mutate(client, analyst, UPDATE, {"input": {**current, "overrideValue": ["x"]}})
    assert _errors(data["opportunityProjectOverrideUpdate"]) == [("VALIDATION", ["input", "overrideValue"])]
    # Only the one successful create left a trace.
    assert [log.action_type for log in await rows.audit()] == ["CREATE"]

    # Overrides of an archived project are frozen with it.
    legacy = await rows.make("opportunity_project_overrides", {"opportunity_projects": archived.id})
    for document, extra in ((UPDATE, {"overrideReason": "x"}), (DELETE, {})):
        data = await mutate(client, analyst, document, {"input": {
            "rowId": str(legacy.id), "updatedAt": _wire(legacy.updated_at), **extra}})
        (payload,) = data.values()
        assert _errors(payload) == [("VALIDATION", ["input", "rowId"])]


async def test_override_permission_follows_the_project(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    mine, other = await rows.project(), await rows.project()
    theirs = await rows.make("opportunity_project_overrides", {"opportunity_projects": other.id})
    analyst = await sign_in_as("BD Analyst", on_project=mine.id)
    data = await mutate(client, analyst, CREATE, {"input": {
        "opportunityProjectRowId": str(mine.id), "fieldName": "naics_codes", "overrideValue": "541512"}})
    assert data["opportunityProjectOverrideCreate"]["errors"] == []
    errors = await refused(client, analyst, CREATE, {"input": {
        "opportunityProjectRowId": str(other.id), "fieldName": "naics_codes", "overrideValue": "541512"}})
    assert codes(errors) == ["FORBIDDEN"]
    for document, extra in ((UPDATE, {"overrideReason": "x"}), (DELETE, {})):
        errors = await refused(client, analyst, document, {"input": {
            "rowId": str(theirs.id), "updatedAt": _wire(theirs.updated_at), **extra}})
        assert codes(errors) == ["FORBIDDEN"]
    assert await rows.audit(theirs.id) == []
