"""Administration writes: document metadata and categories, external sources (write-only credentials),
polling configurations, acknowledging external data changes, tenant configuration and security settings.

Each success shows its audit and history rows; credentials and sealed values never come back and
never reach the audit trail in the clear; FedRAMP floors are refused (VALIDATION) and the refusal is
audited; security settings are audited as high risk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.audit_trail import AuditContext
from models.db import set_tenant
from models.unit_of_work import UnitOfWork
from resolvers.common.validation import validate
from resolvers.external_data.mutations import open_credentials
from resolvers.identity.tenant_settings import SETTINGS_ENTITY, FloorRefused, config_aad, update_security_settings
from schema.writes import REDACTION
from tests.support.audit_trail import expect_audit
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef, create_tenant
from tests.support.secrets import remember
from tests.support.validation import expect_refusal
from tests.writes.conftest import Caller, Rows, SignIn, codes, mutate, refused
from tests.writes.test_projects import _wire

ERRORS = "errors { field code message }"
SECRET = "SEKRET-f81d4fae-7dec"
# The last test of the suite (tests/test_zz_secrets.py) looks for these in every audit row and log line.
remember(SECRET)
remember(SECRET + "-2")
STALE = "2020-01-01T00:00:00.000000Z"


def _errors(payload: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


def _doc(field: str, input_type: str, selection: str) -> str:
    return f"mutation($input: {input_type}!) {{ {field}(input: $input) {{ {selection} {ERRORS} }} }}"


CATEGORY = "rowId name updatedAt parentCategory { rowId }"
CATEGORY_CREATE = _doc("documentCategoryCreate", "DocumentCategoryCreateInput", f"documentCategory {{ {CATEGORY} }}")
CATEGORY_UPDATE = _doc("documentCategoryUpdate", "DocumentCategoryUpdateInput", f"documentCategory {{ {CATEGORY} }}")
CATEGORY_DELETE = _doc("documentCategoryDelete", "DocumentCategoryDeleteInput", "deletedId deletedRowId")
DOCUMENT = "rowId name tags accessLevel isDeleted updatedAt category { rowId }"
DOCUMENT_UPDATE = _doc("documentUpdate", "DocumentUpdateInput", f"document {{ {DOCUMENT} }}")
DOCUMENT_DELETE = _doc("documentDelete", "DocumentDeleteInput", f"document {{ {DOCUMENT} }}")
DOCUMENT_RESTORE = _doc("documentRestore", "DocumentRestoreInput", f"document {{ {DOCUMENT} }}")
SOURCE = "rowId sourceName apiEndpoint authenticationType isActive updatedAt"
SOURCE_CREATE = _doc("externalSourceCreate", "ExternalSourceCreateInput", f"externalOpportunitySource {{ {SOURCE} }}")
SOURCE_UPDATE = _doc("externalSourceUpdate", "ExternalSourceUpdateInput", f"externalOpportunitySource {{ {SOURCE} }}")
POLLING = "rowId pollingFrequencyMinutes priorityLevel isActive nextPollTimestamp updatedAt"
POLLING_CREATE = _doc(
    "pollingConfigurationCreate", "PollingConfigurationCreateInput", f"pollingConfiguration {{ {POLLING} }}"
)
POLLING_UPDATE = _doc(
    "pollingConfigurationUpdate", "PollingConfigurationUpdateInput", f"pollingConfiguration {{ {POLLING} }}"
)
POLLING_DELETE = _doc("pollingConfigurationDelete", "PollingConfigurationDeleteInput", "deletedId deletedRowId")
ACKNOWLEDGE = _doc(
    "externalDataChangeAcknowledge",
    "ExternalDataChangeAcknowledgeInput",
    "externalDataChange { rowId acknowledgedAt acknowledgmentNotes acknowledgedBy { rowId } }",
)
CONFIG = "rowId configKey configType configValue isEncrypted updatedAt"
CONFIG_ENTRY = f"tenantConfiguration {{ {CONFIG} }}"
CONFIG_CREATE = _doc("tenantConfigurationCreate", "TenantConfigurationCreateInput", CONFIG_ENTRY)
CONFIG_UPDATE = _doc("tenantConfigurationUpdate", "TenantConfigurationUpdateInput", CONFIG_ENTRY)
CONFIG_DELETE = _doc("tenantConfigurationDelete", "TenantConfigurationDeleteInput", "deletedId deletedRowId")
SETTINGS = "fedrampCompliant updatedAt lockoutThreshold idleTimeoutMinutes adminIdleTimeoutMinutes mfaRequired"
SETTINGS_UPDATE = _doc(
    "tenantSecuritySettingsUpdate",
    "TenantSecuritySettingsUpdateInput",
    f"securitySettings {{ {SETTINGS} }}",
)
SETTINGS_QUERY = f"{{ tenantSecuritySettings {{ {SETTINGS} }} }}"


async def _trail_text(rows: Rows) -> str:
    """Every audit and history row of the tenant, and its idempotency keys, as one text."""
    found = []
    for table in ("audit_logs", "change_history", "idempotency_keys"):
        found += [str(dict(r._mapping)) for r in await rows.all(f"SELECT * FROM {table} WHERE tenant_id = :t")]
    return "\n".join(found)


# -- document categories and document metadata ----------------------------------------------------


@pytest.mark.audits("documentCategoryCreate", "documentCategoryUpdate", "documentCategoryDelete")
async def test_categories_nest_without_cycles_and_their_deletion_keeps_what_they_held(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    data = await mutate(client, manager, CATEGORY_CREATE, {"input": {"name": "Contracts"}})
    top = data["documentCategoryCreate"]["documentCategory"]
    top_id = uuid.UUID(top["rowId"])
    await expect_audit(rows.engine, rows.tenant.id, "documentCategoryCreate", action="CREATE", entity_id=top_id,
                       history={"name"}, user_id=manager.id)
    data = await mutate(client, manager, CATEGORY_CREATE, {"input": {
        "name": "Amendments", "parentCategoryRowId": str(top_id)}})
    child = data["documentCategoryCreate"]["documentCategory"]
    child_id = uuid.UUID(child["rowId"])
    assert child["parentCategory"] == {"rowId": str(top_id)}
    grandchild = await rows.make("document_categories", name="Signed", parent_category_id=child_id)
    document = await rows.make("documents", category_id=child_id)

    # A move under its own sub-category is refused, nothing written.
    data = await mutate(client, manager, CATEGORY_UPDATE, {"input": {
        "rowId": str(top_id), "updatedAt": top["updatedAt"], "parentCategoryRowId": str(grandchild.id)}})
    assert _errors(data["documentCategoryUpdate"]) == [("VALIDATION", ["input", "parentCategoryRowId"])]
    data = await mutate(client, manager, CATEGORY_UPDATE, {"input": {
        "rowId": str(top_id), "updatedAt": top["updatedAt"], "parentCategoryRowId": str(top_id)}})
    assert _errors(data["documentCategoryUpdate"]) == [("VALIDATION", ["input", "parentCategoryRowId"])]

    data = await mutate(client, manager, CATEGORY_UPDATE, {"input": {
        "rowId": str(child_id), "updatedAt": child["updatedAt"], "name": "Contract amendments"}})
    child = data["documentCategoryUpdate"]["documentCategory"]
    assert child["name"] == "Contract amendments"
    await expect_audit(rows.engine, rows.tenant.id, "documentCategoryUpdate", action="UPDATE", entity_id=child_id,
                       history={"name"}, user_id=manager.id)
    data = await mutate(client, manager, CATEGORY_UPDATE, {"input": {
        "rowId": str(child_id), "updatedAt": STALE, "name": "x"}})
    assert _errors(data["documentCategoryUpdate"]) == [("CONFLICT", ["input", "updatedAt"])]

    data = await mutate(client, manager, CATEGORY_DELETE, {"input": {
        "rowId": str(child_id), "updatedAt": child["updatedAt"]}})
    payload = data["documentCategoryDelete"]
    assert payload["errors"] == [] and payload["deletedRowId"] == str(child_id) and payload["deletedId"]
    await expect_audit(rows.engine, rows.tenant.id, "documentCategoryDelete", action="DELETE", entity_id=child_id,
                       history={"name", "parent_category_id"}, user_id=manager.id)
    # Its sub-category moved up, its document became uncategorized: each change audited.
    moved = await rows.one("SELECT parent_category_id FROM document_categories WHERE id = :c", c=grandchild.id)
    assert moved.parent_category_id == top_id
    assert (await rows.one("SELECT category_id FROM documents WHERE id = :d", d=document.id)).category_id is None
    (doc_log,) = await rows.audit(document.id)
    assert doc_log.action_type == "UPDATE" and set(doc_log.changed_fields) == {"category_id", "updated_at"}
    (cat_log,) = await rows.audit(grandchild.id)
    assert set(cat_log.changed_fields) == {"parent_category_id", "updated_at"}


async def test_two_concurrent_moves_cannot_close_a_loop(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    """A under B and B under A at once: each alone is fine; the hierarchy lock makes the second
    wait for the first and see it, so exactly one succeeds and no loop is stored."""
    first, second = await sign_in_as("Capture Manager"), await sign_in_as("Capture Manager")
    a = await rows.make("document_categories")
    b = await rows.make("document_categories")
    answers = await asyncio.gather(
        mutate(client, first, CATEGORY_UPDATE, {"input": {
            "rowId": str(a.id), "updatedAt": _wire(a.updated_at), "parentCategoryRowId": str(b.id)}}),
        mutate(client, second, CATEGORY_UPDATE, {"input": {
            "rowId": str(b.id), "updatedAt": _wire(b.updated_at), "parentCategoryRowId": str(a.id)}}),
    )
    outcomes = sorted(codes_of(answer["documentCategoryUpdate"]) for answer in answers)
    assert outcomes == [[], ["VALIDATION"]], answers
    stored = await rows.all("SELECT id, parent_category_id FROM document_categories")
    parents = {r.id: r.parent_category_id for r in stored}
    assert (parents[a.id] == b.id) != (parents[b.id] == a.id)


async def test_system_categories_and_duplicate_names_are_refused(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    system = await rows.make("document_categories", name="RFP", is_system_category=True)
    for document, extra in ((CATEGORY_UPDATE, {"name": "x"}), (CATEGORY_DELETE, {})):
        data = await mutate(client, manager, document, {"input": {
            "rowId": str(system.id), "updatedAt": _wire(system.updated_at), **extra}})
        (payload,) = data.values()
        assert _errors(payload) == [("VALIDATION", ["input", "rowId"])]
    data = await mutate(client, manager, CATEGORY_CREATE, {"input": {"name": "RFP"}})
    assert _errors(data["documentCategoryCreate"]) == [("CONFLICT", ["input", "name"])]
    data = await mutate(client, manager, CATEGORY_CREATE, {"input": {
        "name": "Child", "parentCategoryRowId": str(uuid.uuid4())}})
    assert codes_of(data["documentCategoryCreate"]) == ["VALIDATION"]
    data = await mutate(client, manager, CATEGORY_DELETE, {"input": {"rowId": str(uuid.uuid4()), "updatedAt": STALE}})
    assert _errors(data["documentCategoryDelete"]) == [("NOT_FOUND", ["input", "rowId"])]
    assert data["documentCategoryDelete"]["deletedId"] is None
    assert await rows.audit() == []


def codes_of(payload: dict[str, Any]) -> list[str]:
    return [e["code"] for e in payload["errors"]]


@pytest.mark.audits("documentUpdate", "documentDelete", "documentRestore")
async def test_document_metadata_is_edited_deleted_and_restored(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    project = await rows.project()
    category = await rows.make("document_categories")
    # The uploader: a restricted document stays readable to its uploader (and its named readers).
    document = await rows.make("documents", opportunity_project_id=project.id, uploaded_by=manager.id)
    data = await mutate(client, manager, DOCUMENT_UPDATE, {"input": {
        "rowId": str(document.id), "updatedAt": _wire(document.updated_at), "name": "Statement of work",
        "tags": ["sow", " sow ", "final"], "accessLevel": "RESTRICTED", "categoryRowId": str(category.id)}})
    updated = data["documentUpdate"]["document"]
    assert (updated["name"], updated["tags"], updated["accessLevel"]) == ("Statement of work", ["sow", "final"],
                                                                         "RESTRICTED")
    assert updated["category"] == {"rowId": str(category.id)}
    await expect_audit(rows.engine, rows.tenant.id, "documentUpdate", action="UPDATE", entity_id=document.id,
                       history={"name", "tags", "access_level", "category_id"}, user_id=manager.id)
    for values, expected in (
        ({"name": ""}, ("VALIDATION", ["input", "name"])),
        ({"name": "n" * 256}, ("VALIDATION", ["input", "name"])),
        ({"tags": ["t" * 101]}, ("VALIDATION", ["input", "tags"])),
        ({"customMetadata": [1, 2]}, ("VALIDATION", ["input", "customMetadata"])),
        ({"accessLevel": None}, ("VALIDATION", ["input", "accessLevel"])),
    ):
        data = await mutate(client, manager, DOCUMENT_UPDATE, {"input": {
            "rowId": str(document.id), "updatedAt": updated["updatedAt"], **values}})
        assert _errors(data["documentUpdate"]) == [expected], values
    data = await mutate(client, manager, DOCUMENT_UPDATE, {"input": {
        "rowId": str(document.id), "updatedAt": STALE, "name": "x"}})
    assert _errors(data["documentUpdate"]) == [("CONFLICT", ["input", "updatedAt"])]

    data = await mutate(client, manager, DOCUMENT_DELETE, {"input": {
        "rowId": str(document.id), "updatedAt": updated["updatedAt"], "reason": "superseded"}})
    deleted = data["documentDelete"]["document"]
    assert deleted["isDeleted"] is True
    log, _ = await expect_audit(rows.engine, rows.tenant.id, "documentDelete", action="document.deleted",
                                entity_id=document.id, history={"is_deleted", "deleted_at", "deleted_by"},
                                user_id=manager.id)
    assert log.change_reason == "superseded"
    stored = await rows.one("SELECT deleted_at, updated_at, deleted_by FROM documents WHERE id = :d", d=document.id)
    assert stored.deleted_at == stored.updated_at and stored.deleted_by == manager.id
    for document_text, extra in ((DOCUMENT_UPDATE, {"name": "x"}), (DOCUMENT_DELETE, {})):
        data = await mutate(client, manager, document_text, {"input": {
            "rowId": str(document.id), "updatedAt": deleted["updatedAt"], **extra}})
        (payload,) = data.values()
        assert _errors(payload) == [("VALIDATION", ["input", "rowId"])]

    data = await mutate(client, manager, DOCUMENT_RESTORE, {"input": {
        "rowId": str(document.id), "updatedAt": deleted["updatedAt"]}})
    assert data["documentRestore"]["document"]["isDeleted"] is False
    await expect_audit(rows.engine, rows.tenant.id, "documentRestore", action="document.restored",
                       entity_id=document.id, history={"is_deleted", "deleted_at", "deleted_by"}, user_id=manager.id)
    data = await mutate(client, manager, DOCUMENT_RESTORE, {"input": {
        "rowId": str(document.id), "updatedAt": data["documentRestore"]["document"]["updatedAt"]}})
    assert _errors(data["documentRestore"]) == [("VALIDATION", ["input", "rowId"])]


async def test_document_writes_need_document_write_on_the_project(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    mine, other = await rows.project(), await rows.project()
    theirs = await rows.make("documents", opportunity_project_id=other.id)
    ours = await rows.make("documents", opportunity_project_id=mine.id)
    member = await sign_in_as("Proposal Manager", on_project=mine.id)
    errors = await refused(client, member, DOCUMENT_UPDATE, {"input": {
        "rowId": str(theirs.id), "updatedAt": _wire(theirs.updated_at), "name": "x"}})
    assert codes(errors) == ["FORBIDDEN"]
    data = await mutate(client, member, DOCUMENT_UPDATE, {"input": {
        "rowId": str(ours.id), "updatedAt": _wire(ours.updated_at), "name": "Ours"}})
    assert data["documentUpdate"]["errors"] == []
    viewer = await sign_in_as("Viewer")
    errors = await refused(client, viewer, CATEGORY_CREATE, {"input": {"name": "x"}})
    assert codes(errors) == ["FORBIDDEN"]
    assert (await rows.one("SELECT name FROM documents WHERE id = :d", d=theirs.id)).name == theirs.name
    assert len(await rows.denials()) == 2


# -- external sources: write-only credentials -----------------------------------------------------


@pytest.mark.audits("externalSourceCreate", "externalSourceUpdate")
async def test_source_credentials_are_sealed_never_returned_and_never_audited_in_the_clear(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, write_app: Starlette, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = await sign_in_as("Tenant Admin")
    data = await mutate(client, admin, SOURCE_CREATE, {"input": {
        "sourceName": "SAM.gov", "apiEndpoint": "https://api.sam.gov/opportunities/v2", "apiVersion": "v2",
        "authenticationType": "api_key", "credentials": {"api_key": SECRET}, "timeoutSeconds": 20,
        "idempotencyKey": "create-sam"}})
    source = data["externalSourceCreate"]["externalOpportunitySource"]
    source_id = uuid.UUID(source["rowId"])
    assert SECRET not in json.dumps(data)
    log, _ = await expect_audit(rows.engine, rows.tenant.id, "externalSourceCreate", action="CREATE",
                                entity_id=source_id, history={"source_name", "api_endpoint"},
                                secrets={"api_credentials_encrypted"}, user_id=admin.id)
    assert log.risk_level == "high"
    stored = await rows.one("SELECT * FROM external_opportunity_sources WHERE id = :s", s=source_id)
    assert SECRET not in json.dumps(stored.api_credentials_encrypted)
    box = write_app.state.auth.secret_box
    assert open_credentials(box, stored) == {"api_key": SECRET}
    # A retry with the same idempotency key returns the source created, writing nothing.
    again = await mutate(client, admin, SOURCE_CREATE, {"input": {
        "sourceName": "SAM.gov", "apiEndpoint": "https://api.sam.gov/opportunities/v2", "apiVersion": "v2",
        "authenticationType": "api_key", "credentials": {"api_key": SECRET}, "timeoutSeconds": 20,
        "idempotencyKey": "create-sam"}})
    assert again["externalSourceCreate"]["externalOpportunitySource"]["rowId"] == str(source_id)
    assert len(await rows.audit(source_id)) == 1

    # Nothing in the schema reads them back.
    body = await mutate(client, admin, '{ __type(name: "ExternalOpportunitySource") { fields { name } } }')
    assert not [f for f in body["__type"]["fields"] if "credential" in f["name"].lower()]

    data = await mutate(client, admin, SOURCE_UPDATE, {"input": {
        "rowId": str(source_id), "updatedAt": source["updatedAt"], "credentials": {"api_key": SECRET + "-2"},
        "rateLimitPerHour": 500}})
    source = data["externalSourceUpdate"]["externalOpportunitySource"]
    assert data["externalSourceUpdate"]["errors"] == []
    await expect_audit(rows.engine, rows.tenant.id, "externalSourceUpdate", action="UPDATE", entity_id=source_id,
                       history={"rate_limit_per_hour"}, secrets={"api_credentials_encrypted"}, user_id=admin.id)
    stored = await rows.one("SELECT * FROM external_opportunity_sources WHERE id = :s", s=source_id)
    assert open_credentials(box, stored) == {"api_key": SECRET + "-2"}
    assert SECRET not in await _trail_text(rows)

    assert SECRET not in caplog.text  # nor in any log line of the requests
    # Deactivated, not deleted.
    data = await mutate(client, admin, SOURCE_UPDATE, {"input": {
        "rowId": str(source_id), "updatedAt": source["updatedAt"], "isActive": False}})
    assert data["externalSourceUpdate"]["externalOpportunitySource"]["isActive"] is False


async def test_source_refusals(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    admin = await sign_in_as("Tenant Admin")
    base = {"sourceName": "GovWin", "apiEndpoint": "https://api.govwin.test/v1", "apiVersion": "v1",
            "authenticationType": "api_key", "credentials": {"api_key": SECRET}}
    for values, expected in (
        ({"credentials": None}, ("VALIDATION", ["input", "credentials"])),
        ({"credentials": {"api_key": 5}}, ("VALIDATION", ["input", "credentials"])),
        ({"credentials": {"k": "v" * 9000}}, ("VALIDATION", ["input", "credentials"])),
        ({"authenticationType": "kerberos"}, ("VALIDATION", ["input", "authenticationType"])),
        ({"apiEndpoint": "http://api.govwin.test/v1"}, ("VALIDATION", ["input", "apiEndpoint"])),
        ({"apiEndpoint": f"https://user:{SECRET}@api.govwin.test"}, ("VALIDATION", ["input", "apiEndpoint"])),
        ({"apiEndpoint": f"https://api.govwin.test/v1?api_key={SECRET}"}, ("VALIDATION", ["input", "apiEndpoint"])),
        ({"timeoutSeconds": 0}, ("VALIDATION", ["input", "timeoutSeconds"])),
        ({"sourceName": "s" * 101}, ("VALIDATION", ["input", "sourceName"])),
        ({"authenticationType": "none"}, ("VALIDATION", ["input", "credentials"])),
    ):
        data = await mutate(client, admin, SOURCE_CREATE, {"input": {**base, **values}})
        assert _errors(data["externalSourceCreate"]) == [expected], values
    manual = await rows.one("SELECT id, updated_at FROM external_opportunity_sources WHERE api_endpoint = 'manual://'")
    data = await mutate(client, admin, SOURCE_UPDATE, {"input": {
        "rowId": str(manual.id), "updatedAt": _wire(manual.updated_at), "isActive": False}})
    assert _errors(data["externalSourceUpdate"]) == [("VALIDATION", ["input", "rowId"])]
    source = await rows.make("external_opportunity_sources")
    data = await mutate(client, admin, SOURCE_UPDATE, {"input": {
        "rowId": str(source.id), "updatedAt": STALE, "apiVersion": "v3"}})
    assert _errors(data["externalSourceUpdate"]) == [("CONFLICT", ["input", "updatedAt"])]
    data = await mutate(client, admin, SOURCE_UPDATE, {"input": {
        "rowId": str(source.id), "updatedAt": _wire(source.updated_at), "authenticationType": "oauth2"}})
    assert _errors(data["externalSourceUpdate"]) == [("VALIDATION", ["input", "credentials"])]
    assert await rows.audit() == []
    manager = await sign_in_as("Capture Manager")
    errors = await refused(client, manager, SOURCE_CREATE, {"input": base})
    assert codes(errors) == ["FORBIDDEN"]
    assert len(await rows.denials()) == 1
    assert SECRET not in await _trail_text(rows)


# -- polling configurations -----------------------------------------------------------------------


@pytest.mark.audits("pollingConfigurationCreate", "pollingConfigurationUpdate", "pollingConfigurationDelete")
async def test_polling_schedules(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    admin = await sign_in_as("Tenant Admin")
    project = await rows.project()
    source = await rows.make("external_opportunity_sources")
    data = await mutate(client, admin, POLLING_CREATE, {"input": {
        "opportunityProjectRowId": str(project.id), "externalSourceRowId": str(source.id),
        "pollingFrequencyMinutes": 30, "priorityLevel": "HIGH"}})
    polling = data["pollingConfigurationCreate"]["pollingConfiguration"]
    polling_id = uuid.UUID(polling["rowId"])
    assert polling["nextPollTimestamp"] is not None and polling["priorityLevel"] == "HIGH"
    await expect_audit(rows.engine, rows.tenant.id, "pollingConfigurationCreate", action="CREATE",
                       entity_id=polling_id, history={"polling_frequency_minutes", "priority_level"},
                       user_id=admin.id)
    data = await mutate(client, admin, POLLING_UPDATE, {"input": {
        "rowId": str(polling_id), "updatedAt": polling["updatedAt"], "isActive": False, "backoffMultiplier": "3.5"}})
    polling = data["pollingConfigurationUpdate"]["pollingConfiguration"]
    assert polling["isActive"] is False and polling["nextPollTimestamp"] is None
    await expect_audit(rows.engine, rows.tenant.id, "pollingConfigurationUpdate", action="UPDATE",
                       entity_id=polling_id, history={"is_active", "backoff_multiplier"}, user_id=admin.id)
    for values, field in (
        ({"pollingFrequencyMinutes": 1}, "pollingFrequencyMinutes"),
        ({"maxRetries": 11}, "maxRetries"),
        ({"backoffMultiplier": "0.5"}, "backoffMultiplier"),
        ({"isActive": None}, "isActive"),
    ):
        data = await mutate(client, admin, POLLING_UPDATE, {"input": {
            "rowId": str(polling_id), "updatedAt": polling["updatedAt"], **values}})
        assert _errors(data["pollingConfigurationUpdate"]) == [("VALIDATION", ["input", field])], values
    data = await mutate(client, admin, POLLING_DELETE, {"input": {"rowId": str(polling_id), "updatedAt": STALE}})
    assert _errors(data["pollingConfigurationDelete"]) == [("CONFLICT", ["input", "updatedAt"])]
    data = await mutate(client, admin, POLLING_DELETE, {"input": {
        "rowId": str(polling_id), "updatedAt": polling["updatedAt"]}})
    assert data["pollingConfigurationDelete"]["deletedRowId"] == str(polling_id)
    await expect_audit(rows.engine, rows.tenant.id, "pollingConfigurationDelete", action="DELETE",
                       entity_id=polling_id, history={"polling_frequency_minutes"}, user_id=admin.id)
    manual = await rows.one("SELECT id FROM external_opportunity_sources WHERE api_endpoint = 'manual://'")
    archived = await rows.project(archived_at=datetime(2026, 1, 1, tzinfo=UTC))
    for values, field in (
        ({"externalSourceRowId": str(manual.id)}, "externalSourceRowId"),
        ({"opportunityProjectRowId": str(archived.id)}, "opportunityProjectRowId"),
        ({"opportunityProjectRowId": str(uuid.uuid4())}, "opportunityProjectRowId"),
    ):
        data = await mutate(client, admin, POLLING_CREATE, {"input": {
            "opportunityProjectRowId": str(project.id), "externalSourceRowId": str(source.id), **values}})
        assert [e["field"] for e in data["pollingConfigurationCreate"]["errors"]] == [["input", field]], values


# -- acknowledging an external data change --------------------------------------------------------


@pytest.mark.audits("externalDataChangeAcknowledge")
async def test_a_change_is_acknowledged_once(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    analyst = await sign_in_as("BD Analyst")
    project = await rows.project()
    change = await rows.make("external_data_changes", {"opportunity_projects": project.id})
    data = await mutate(client, analyst, ACKNOWLEDGE, {"input": {
        "rowId": str(change.id), "notes": "Amendment 2 moves the due date: schedule a review."}})
    acknowledged = data["externalDataChangeAcknowledge"]["externalDataChange"]
    assert acknowledged["acknowledgedAt"] is not None
    assert acknowledged["acknowledgedBy"] == {"rowId": str(analyst.id)}
    assert acknowledged["acknowledgmentNotes"].startswith("Amendment 2")
    await expect_audit(rows.engine, rows.tenant.id, "externalDataChangeAcknowledge",
                       action="external_data_change.acknowledged", entity_id=change.id,
                       history={"acknowledged_at", "acknowledged_by", "acknowledgment_notes"}, user_id=analyst.id)
    data = await mutate(client, analyst, ACKNOWLEDGE, {"input": {"rowId": str(change.id), "notes": "again"}})
    assert _errors(data["externalDataChangeAcknowledge"]) == [("CONFLICT", ["input", "rowId"])]
    stored = await rows.one("SELECT acknowledgment_notes FROM external_data_changes WHERE id = :c", c=change.id)
    assert stored.acknowledgment_notes.startswith("Amendment 2")
    data = await mutate(client, analyst, ACKNOWLEDGE, {"input": {"rowId": str(uuid.uuid4())}})
    assert _errors(data["externalDataChangeAcknowledge"]) == [("NOT_FOUND", ["input", "rowId"])]
    viewer = await sign_in_as("Viewer")
    other = await rows.make("external_data_changes", {"opportunity_projects": project.id})
    errors = await refused(client, viewer, ACKNOWLEDGE, {"input": {"rowId": str(other.id)}})
    assert codes(errors) == ["FORBIDDEN"]
    assert len(await rows.audit(change.id)) == 1 and await rows.audit(other.id) == []


async def test_two_acknowledgements_at_once_one_wins(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    first, second = await sign_in_as("Capture Manager"), await sign_in_as("BD Analyst")
    project = await rows.project()
    change = await rows.make("external_data_changes", {"opportunity_projects": project.id})
    answers = await asyncio.gather(*(
        mutate(client, caller, ACKNOWLEDGE, {"input": {"rowId": str(change.id), "notes": f"by {caller.id}"}})
        for caller in (first, second)
    ))
    payloads = [answer["externalDataChangeAcknowledge"] for answer in answers]
    assert sorted(codes_of(p) for p in payloads) == [[], ["CONFLICT"]]
    winner = (first, second)[[codes_of(p) for p in payloads].index([])]
    stored = await rows.one("SELECT acknowledged_by, acknowledgment_notes FROM external_data_changes WHERE id = :c",
                            c=change.id)
    assert stored.acknowledged_by == winner.id and stored.acknowledgment_notes == f"by {winner.id}"
    assert len(await rows.audit(change.id)) == 1


# -- tenant configuration and security settings ----------------------------------------------------


@pytest.mark.audits("tenantConfigurationCreate", "tenantConfigurationUpdate", "tenantConfigurationDelete")
async def test_configuration_entries_and_sealed_values(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, write_app: Starlette
) -> None:
    admin = await sign_in_as("Tenant Admin")
    data = await mutate(client, admin, CONFIG_CREATE, {"input": {
        "configKey": "integrations.crm_webhook_secret", "configType": "string", "configValue": SECRET,
        "isEncrypted": True, "idempotencyKey": "webhook"}})
    entry = data["tenantConfigurationCreate"]["tenantConfiguration"]
    entry_id = uuid.UUID(entry["rowId"])
    assert entry["configValue"] is None and entry["isEncrypted"] is True
    log, _ = await expect_audit(rows.engine, rows.tenant.id, "tenantConfigurationCreate", action="CREATE",
                                      entity_id=entry_id, history={"config_key", "config_value"}, user_id=admin.id)
    assert log.risk_level == "high"
    stored = await rows.one("SELECT * FROM tenant_configurations WHERE id = :c", c=entry_id)
    box = write_app.state.auth.secret_box
    token = stored.config_value["sealed_secret"]
    assert json.loads(box.decrypt(token, config_aad(rows.tenant.id, stored.config_key))) == SECRET
    assert SECRET not in await _trail_text(rows) and token not in await _trail_text(rows)

    data = await mutate(client, admin, CONFIG_UPDATE, {"input": {
        "rowId": str(entry_id), "updatedAt": entry["updatedAt"], "configValue": SECRET + "-2"}})
    entry = data["tenantConfigurationUpdate"]["tenantConfiguration"]
    await expect_audit(rows.engine, rows.tenant.id, "tenantConfigurationUpdate", action="UPDATE", entity_id=entry_id,
                       history={"config_value"}, user_id=admin.id)
    data = await mutate(client, admin, CONFIG_UPDATE, {"input": {
        "rowId": str(entry_id), "updatedAt": entry["updatedAt"], "isEncrypted": False}})
    assert _errors(data["tenantConfigurationUpdate"]) == [("VALIDATION", ["input", "configValue"])]
    data = await mutate(client, admin, CONFIG_UPDATE, {"input": {
        "rowId": str(entry_id), "updatedAt": STALE, "configValue": "x"}})
    assert _errors(data["tenantConfigurationUpdate"]) == [("CONFLICT", ["input", "updatedAt"])]
    assert SECRET not in await _trail_text(rows)

    data = await mutate(client, admin, CONFIG_DELETE, {"input": {
        "rowId": str(entry_id), "updatedAt": entry["updatedAt"]}})
    assert data["tenantConfigurationDelete"]["deletedRowId"] == str(entry_id)
    await expect_audit(rows.engine, rows.tenant.id, "tenantConfigurationDelete", action="DELETE", entity_id=entry_id,
                       history={"config_value"}, user_id=admin.id)
    assert SECRET not in await _trail_text(rows)

    for values, field in (
        ({"configKey": "security.lockout_threshold", "configType": "integer", "configValue": 9}, "configKey"),
        ({"configKey": "Bad Key", "configType": "string", "configValue": "x"}, "configKey"),
        ({"configKey": "ui.theme", "configType": "integer", "configValue": "dark"}, "configValue"),
        ({"configKey": "ui.theme", "configType": "colour", "configValue": "dark"}, "configType"),
    ):
        data = await mutate(client, admin, CONFIG_CREATE, {"input": values})
        assert _errors(data["tenantConfigurationCreate"]) == [("VALIDATION", ["input", field])], values
    security = await rows.make("tenant_configurations", config_key="security.lockout_minutes",
                               config_value="60", config_type="integer")
    data = await mutate(client, admin, CONFIG_DELETE, {"input": {
        "rowId": str(security.id), "updatedAt": _wire(security.updated_at)}})
    assert _errors(data["tenantConfigurationDelete"]) == [("VALIDATION", ["input", "rowId"])]
    manager = await sign_in_as("Capture Manager")
    errors = await refused(client, manager, CONFIG_CREATE, {"input": {
        "configKey": "ui.theme", "configType": "string", "configValue": "dark"}})
    assert codes(errors) == ["FORBIDDEN"]


async def _enroll_mfa(client: httpx.AsyncClient, caller: Caller) -> None:
    auth = {"authorization": f"Bearer {caller.token}"}
    secret = (await client.post("/auth/mfa/enroll", headers=auth)).json()["secret"]
    confirmed = await client.post("/auth/mfa/confirm", headers=auth, json={"code": pyotp.TOTP(secret).now()})
    assert confirmed.status_code == 200, confirmed.text


async def _make_fedramp(rows: Rows) -> None:
    async with rows.engine.begin() as conn:
        await set_tenant(conn, rows.tenant.id)
        await conn.execute(text("UPDATE tenants SET fedramp_compliant = true WHERE id = :t"), {"t": rows.tenant.id})


@pytest.mark.audits("tenantSecuritySettingsUpdate")
async def test_security_settings_are_audited_as_high_risk(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    admin = await sign_in_as("Tenant Admin")
    settings = (await mutate(client, admin, SETTINGS_QUERY))["tenantSecuritySettings"]
    assert settings == {"fedrampCompliant": False, "updatedAt": None, "lockoutThreshold": 3, "idleTimeoutMinutes": 15,
                        "adminIdleTimeoutMinutes": 10, "mfaRequired": False}
    data = await mutate(client, admin, SETTINGS_UPDATE, {"input": {
        "updatedAt": None, "lockoutThreshold": 5, "idleTimeoutMinutes": 30, "adminIdleTimeoutMinutes": 20}})
    payload = data["tenantSecuritySettingsUpdate"]
    assert payload["errors"] == []
    changed = payload["securitySettings"]
    assert (changed["lockoutThreshold"], changed["idleTimeoutMinutes"], changed["adminIdleTimeoutMinutes"]) == (
        5, 30, 20)
    assert (await mutate(client, admin, SETTINGS_QUERY))["tenantSecuritySettings"] == changed
    entries = await rows.all("SELECT id, config_key FROM tenant_configurations WHERE config_key LIKE 'security.%'")
    assert {e.config_key for e in entries} == {"security.lockout_threshold", "security.idle_timeout_minutes",
                                               "security.admin_idle_timeout_minutes"}
    for entry in entries:
        log, _ = await expect_audit(rows.engine, rows.tenant.id, "tenantSecuritySettingsUpdate",
                                    action="tenant.security_settings.changed", entity_id=entry.id,
                                    history={"config_key", "config_value"}, user_id=admin.id)
        assert log.risk_level == "high" and log.permission_used == "tenant:admin"
    data = await mutate(client, admin, SETTINGS_UPDATE, {"input": {"updatedAt": None, "lockoutThreshold": 4}})
    assert _errors(data["tenantSecuritySettingsUpdate"]) == [("CONFLICT", ["input", "updatedAt"])]
    for values, field in (
        ({"lockoutThreshold": 0}, "lockoutThreshold"),
        ({"idleTimeoutMinutes": None}, "idleTimeoutMinutes"),
        ({"ssoJitRole": " "}, "ssoJitRole"),
    ):
        data = await mutate(client, admin, SETTINGS_UPDATE, {"input": {"updatedAt": changed["updatedAt"], **values}})
        assert _errors(data["tenantSecuritySettingsUpdate"]) == [("VALIDATION", ["input", field])], values
    manager = await sign_in_as("Capture Manager")
    errors = await refused(client, manager, SETTINGS_UPDATE, {"input": {"updatedAt": None, "lockoutThreshold": 9}})
    assert codes(errors) == ["FORBIDDEN"]
    assert codes(await refused(client, manager, SETTINGS_QUERY)) == ["FORBIDDEN"]


async def test_fedramp_floors_are_refused_and_the_refusal_audited(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    admin = await sign_in_as("Tenant Admin")
    await _enroll_mfa(client, admin)  # a FedRAMP tenant's password users need it
    await _make_fedramp(rows)
    before = await rows.all("SELECT * FROM tenant_configurations ORDER BY id")
    for values, field in (
        ({"lockoutThreshold": 4}, "lockoutThreshold"),
        ({"idleTimeoutMinutes": 16}, "idleTimeoutMinutes"),
        ({"adminIdleTimeoutMinutes": 30}, "adminIdleTimeoutMinutes"),
        ({"mfaRequired": False}, "mfaRequired"),
        ({"lockoutMinutes": 60, "lockoutThreshold": 10}, "lockoutThreshold"),
    ):
        data = await mutate(client, admin, SETTINGS_UPDATE, {"input": {"updatedAt": None, **values}})
        assert _errors(data["tenantSecuritySettingsUpdate"]) == [("VALIDATION", ["input", field])], values
        assert data["tenantSecuritySettingsUpdate"]["securitySettings"] is None
    assert await rows.all("SELECT * FROM tenant_configurations ORDER BY id") == before
    assert [h for h in await rows.history() if h.entity_type == "tenant_configuration"] == []
    refusals = await rows.all("SELECT * FROM audit_logs WHERE tenant_id = :t"
                              " AND action_type = 'tenant.security_settings.refused' ORDER BY seq")
    assert len(refusals) == 5
    first = refusals[0]
    assert (first.access_granted, first.risk_level, first.user_id, first.entity_id) == (
        False, "high", admin.id, rows.tenant.id)
    assert first.after_values["setting"] == "lockout_threshold" and first.after_values["value"] == 4
    assert first.operation_description.startswith("tenantSecuritySettingsUpdate:")
    # Within the floors, a FedRAMP tenant's settings change.
    data = await mutate(client, admin, SETTINGS_UPDATE, {"input": {
        "updatedAt": None, "lockoutThreshold": 2, "idleTimeoutMinutes": 15, "mfaRequired": True}})
    assert data["tenantSecuritySettingsUpdate"]["securitySettings"]["fedrampCompliant"] is True
    assert data["tenantSecuritySettingsUpdate"]["securitySettings"]["lockoutThreshold"] == 2



def _unit(engine: AsyncEngine, tenant: TenantRef) -> UnitOfWork:
    context = AuditContext(tenant_id=tenant.id, user_id=tenant.system_user_id, system_process="test",
                           request_id="fedramp-floors")
    return UnitOfWork(engine, chain=TEST_AUDIT_CHAIN, context=context, redaction=REDACTION)


@pytest.mark.validates(
    "tenant_security_settings.lockout_threshold.fedramp_floor",
    "tenant_security_settings.idle_timeout_minutes.fedramp_floor",
    "tenant_security_settings.admin_idle_timeout_minutes.fedramp_floor",
    "tenant_security_settings.mfa_required.fedramp_floor",
)
async def test_the_fedramp_floors_are_rules_of_the_registry(app_engine: AsyncEngine, owner_engine: AsyncEngine) -> None:
    fedramp = await create_tenant(owner_engine, "FedRAMP floors", fedramp_compliant=True)
    ordinary = await create_tenant(owner_engine, "No floors")
    for name, weaker, floor in (
        ("lockout_threshold", 4, 3),
        ("idle_timeout_minutes", 16, 15),
        ("admin_idle_timeout_minutes", 60, 15),
        ("mfa_required", False, True),
    ):
        async with _unit(app_engine, fedramp) as uow:
            with pytest.raises(FloorRefused) as refused:
                await update_security_settings(uow, None, {name: weaker})
            expect_refusal(refused, f"{SETTINGS_ENTITY}.{name}.fedramp_floor", field=name, code="VALIDATION")
            assert refused.value.value == weaker and "FedRAMP" in refused.value.message
            await validate(uow, SETTINGS_ENTITY, {name: floor})  # the floor itself holds
        async with _unit(app_engine, ordinary) as uow:
            await validate(uow, SETTINGS_ENTITY, {name: weaker})  # no floor on an ordinary tenant
