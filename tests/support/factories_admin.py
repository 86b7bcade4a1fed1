"""Matrix factories of the administration mutations: document metadata and categories, external
sources and polling configurations, acknowledging external data changes, tenant configuration
entries and security settings (tests/support/mutation_matrix.py).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from tests.support.mutation_matrix import Case, MatrixContext, matrix
from tests.support.secrets import remember

SECRET = "SEKRET-matrix-7d1c"
remember(SECRET)  # tests/test_zz_secrets.py looks for it in every audit row and log line


def _name(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


# -- document categories and documents --------------------------------------------------------------


@matrix("documentCategoryCreate", kind="create", table="document_categories", entity_type="document_category",
        action="CREATE", permission="document:write", denied_role="BD Analyst", history={"name"},
        actor_roles=("Capture Manager",), cross_tenant="own_tenant")
async def category_create(ctx: MatrixContext) -> Case:
    return Case({"input": {"name": _name("Category"), "description": "Matrix"}})


@matrix("documentCategoryUpdate", kind="update", table="document_categories", entity_type="document_category",
        action="UPDATE", permission="document:write", denied_role="BD Analyst", history={"parent_category_id"},
        actor_roles=("Capture Manager",))
async def category_update(ctx: MatrixContext) -> Case:
    parent = await ctx.make("document_categories")
    row = await ctx.make("document_categories")
    parent_ref = ctx.ref("parentCategory", parent.id, node="DocumentCategory")
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), **parent_ref}}, entity_id=row.id)


@matrix("documentCategoryDelete", kind="delete", table="document_categories", entity_type="document_category",
        action="DELETE", permission="document:write", denied_role="BD Analyst", history={"name"},
        actor_roles=("Capture Manager",))
async def category_delete(ctx: MatrixContext) -> Case:
    row = await ctx.make("document_categories")
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id)


@matrix("documentUpdate", kind="update", table="documents", entity_type="document", action="UPDATE",
        permission="document:write", denied_role="BD Analyst", history={"name", "tags"},
        actor_roles=("Proposal Manager",))
async def document_update(ctx: MatrixContext) -> Case:
    row = await _document(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "name": "Renamed", "tags": ["matrix"]}},
                entity_id=row.id, tables=("opportunity_projects",))


@matrix("documentDelete", kind="update", table="documents", entity_type="document", action="document.deleted",
        permission="document:write", denied_role="BD Analyst", history={"is_deleted", "deleted_at", "deleted_by"},
        actor_roles=("Proposal Manager",))
async def document_delete(ctx: MatrixContext) -> Case:
    row = await _document(ctx)

    async def verify(stored: Any, payload: dict[str, Any]) -> None:
        assert stored.is_deleted and stored.deleted_at == stored.updated_at

    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id, verify=verify)


@matrix("documentRestore", kind="update", table="documents", entity_type="document", action="document.restored",
        permission="document:write", denied_role="BD Analyst", history={"is_deleted", "deleted_at", "deleted_by"},
        actor_roles=("Proposal Manager",))
async def document_restore(ctx: MatrixContext) -> Case:
    user = await ctx.user()
    row = await _document(ctx, is_deleted=True, deleted_at=datetime(2026, 1, 1, tzinfo=UTC), deleted_by=user.id)

    async def verify(stored: Any, payload: dict[str, Any]) -> None:
        assert not stored.is_deleted and stored.deleted_at is None

    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id, verify=verify)


async def _document(ctx: MatrixContext, **values: Any) -> Any:
    project = await ctx.make("opportunity_projects")
    return await ctx.make("documents", {"opportunity_projects": project.id}, opportunity_project_id=project.id,
                          **values)


# -- external sources and polling ---------------------------------------------------------------------


@matrix("externalSourceCreate", kind="create", table="external_opportunity_sources",
        entity_type="external_opportunity_source", action="CREATE", permission="source:admin",
        denied_role="Capture Manager", history={"source_name", "api_endpoint"}, secrets={"api_credentials_encrypted"},
        cross_tenant="own_tenant")
async def source_create(ctx: MatrixContext) -> Case:
    async def verify(stored: Any, payload: dict[str, Any]) -> None:
        assert SECRET not in str(stored.api_credentials_encrypted) and SECRET not in str(payload)

    return Case({"input": {
        "sourceName": _name("Source"), "apiEndpoint": "https://api.example.test/v2", "apiVersion": "v2",
        "authenticationType": "api_key", "credentials": {"api_key": SECRET},
    }}, verify=verify)


@matrix("externalSourceUpdate", kind="update", table="external_opportunity_sources",
        entity_type="external_opportunity_source", action="UPDATE", permission="source:admin",
        denied_role="Capture Manager", history={"api_version"}, secrets={"api_credentials_encrypted"})
async def source_update(ctx: MatrixContext) -> Case:
    row = await ctx.make("external_opportunity_sources")
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "apiVersion": "v3",
                           "credentials": {"api_key": SECRET}}}, entity_id=row.id)


@matrix("pollingConfigurationCreate", kind="create", table="polling_configurations",
        entity_type="polling_configuration", action="CREATE", permission="source:admin",
        denied_role="Capture Manager", history={"polling_frequency_minutes"})
async def polling_create(ctx: MatrixContext) -> Case:
    project = await ctx.make("opportunity_projects")
    source = await ctx.make("external_opportunity_sources")
    source_ref = ctx.ref("externalSource", source.id, node="ExternalOpportunitySource")
    return Case({"input": {**ctx.ref("opportunityProject", project.id), **source_ref,
                           "pollingFrequencyMinutes": 15}},
                tables=("opportunity_projects", "external_opportunity_sources"))


@matrix("pollingConfigurationUpdate", kind="update", table="polling_configurations",
        entity_type="polling_configuration", action="UPDATE", permission="source:admin",
        denied_role="Capture Manager", history={"polling_frequency_minutes"})
async def polling_update(ctx: MatrixContext) -> Case:
    row = await _polling(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "pollingFrequencyMinutes": 240}},
                entity_id=row.id)


@matrix("pollingConfigurationDelete", kind="delete", table="polling_configurations",
        entity_type="polling_configuration", action="DELETE", permission="source:admin",
        denied_role="Capture Manager", history={"polling_frequency_minutes"})
async def polling_delete(ctx: MatrixContext) -> Case:
    row = await _polling(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id)


async def _polling(ctx: MatrixContext) -> Any:
    project = await ctx.make("opportunity_projects")
    source = await ctx.make("external_opportunity_sources")
    return await ctx.make("polling_configurations",
                          {"opportunity_projects": project.id, "external_opportunity_sources": source.id})


@matrix("externalDataChangeAcknowledge", kind="action", table="external_data_changes",
        entity_type="external_data_change", action="external_data_change.acknowledged",
        permission="external_data:acknowledge", denied_role="Viewer",
        history={"acknowledged_at", "acknowledged_by", "acknowledgment_notes"}, actor_roles=("BD Analyst",))
async def change_acknowledge(ctx: MatrixContext) -> Case:
    project = await ctx.make("opportunity_projects")
    change = await ctx.make("external_data_changes", {"opportunity_projects": project.id})
    return Case({"input": {**ctx.target(change.id), "notes": "Reviewed in the matrix."}}, entity_id=change.id,
                tables=("opportunity_projects",))


# -- tenant configuration and security settings -------------------------------------------------------


@matrix("tenantConfigurationCreate", kind="create", table="tenant_configurations",
        entity_type="tenant_configuration", action="CREATE", permission="tenant:admin",
        denied_role="Capture Manager", history={"config_key", "config_value"}, cross_tenant="own_tenant")
async def configuration_create(ctx: MatrixContext) -> Case:
    return Case({"input": {"configKey": f"matrix.key_{uuid.uuid4().hex[:8]}", "configType": "string",
                           "configValue": "on"}})


@matrix("tenantConfigurationUpdate", kind="update", table="tenant_configurations",
        entity_type="tenant_configuration", action="UPDATE", permission="tenant:admin",
        denied_role="Capture Manager", history={"config_value"})
async def configuration_update(ctx: MatrixContext) -> Case:
    row = await ctx.make("tenant_configurations")
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "configValue": {"n": 0}}}, entity_id=row.id)


@matrix("tenantConfigurationDelete", kind="delete", table="tenant_configurations",
        entity_type="tenant_configuration", action="DELETE", permission="tenant:admin",
        denied_role="Capture Manager", history={"config_key", "config_value"})
async def configuration_delete(ctx: MatrixContext) -> Case:
    row = await ctx.make("tenant_configurations")
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id)


_SECURITY_ROWS = "SELECT * FROM tenant_configurations WHERE tenant_id = :t AND config_key LIKE 'security.%' ORDER BY id"


async def _settings_elsewhere(ctx: MatrixContext) -> None:
    """The settings are the caller's tenant's only (the input names no row): a version read
    elsewhere (another tenant's) is no version of them, CONFLICT, and nothing changes."""
    actor = await ctx.caller("Tenant Admin")
    before = await ctx.all(_SECURITY_ROWS)
    body = await ctx.call(actor, {"input": {"updatedAt": "2026-01-01T00:00:00.000000Z", "lockoutThreshold": 2}})
    payload = body["data"]["tenantSecuritySettingsUpdate"]
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("CONFLICT", ["input", "updatedAt"])]
    assert payload["securitySettings"] is None
    assert await ctx.all(_SECURITY_ROWS) == before


@matrix("tenantSecuritySettingsUpdate", kind="update", table="tenant_configurations",
        entity_type="tenant_configuration", action="tenant.security_settings.changed", permission="tenant:admin",
        denied_role="Capture Manager", history={"config_value"}, foreign=_settings_elsewhere)
async def settings_update(ctx: MatrixContext) -> Case:
    rows = await ctx.all(_SECURITY_ROWS)
    if not rows:  # the first time in this tenant: a stored setting to change
        await ctx.make("tenant_configurations", config_key="security.lockout_threshold", config_value="3",
                       config_type="integer")
        rows = await ctx.all(_SECURITY_ROWS)
    version = max(rows, key=lambda r: r.updated_at)
    row = next(r for r in rows if r.config_key == "security.lockout_threshold")
    return Case({"input": {**ctx.updated_at(version), "lockoutThreshold": 5 - row.config_value}}, entity_id=row.id,
                stale={"input": {"updatedAt": "2020-01-01T00:00:00.000000Z", "lockoutThreshold": 2}})
