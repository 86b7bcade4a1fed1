"""Matrix factories of the CRM mutations: organizations, contacts, project-contact links.

Organizations and contacts are archived through the seed's `is_active` (docs/decisions.md W14),
not `archived_at`: their archive and restore are registered as updates (updated_at moves, the
stale-updatedAt test runs) whose `verify` checks `is_active`, and whose audit row is ARCHIVE or
RESTORE.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.mutation_matrix import Case, MatrixContext, matrix


def _name(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def _active(expected: bool) -> Any:
    async def verify(stored: Any, payload: dict[str, Any]) -> None:
        assert stored.is_active is expected, payload

    return verify


# -- organizations -------------------------------------------------------------------------------


@matrix("organizationCreate", kind="create", table="organizations", entity_type="organization", action="CREATE",
        permission="organization:write", denied_role="Viewer", history={"name", "parent_organization_id"},
        actor_roles=("Capture Manager",))
async def organization_create(ctx: MatrixContext) -> Case:
    parent = await ctx.make("organizations")
    parent_ref = ctx.ref("parentOrganization", parent.id, node="Organization")
    return Case({"input": {"name": _name("Matrix agency"), **parent_ref}}, tables=("organizations",))


@matrix("organizationUpdate", kind="update", table="organizations", entity_type="organization", action="UPDATE",
        permission="organization:write", denied_role="Viewer", history={"name", "parent_organization_id"},
        actor_roles=("Capture Manager",))
async def organization_update(ctx: MatrixContext) -> Case:
    parent = await ctx.make("organizations")
    row = await ctx.make("organizations")
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "name": _name("Renamed"),
                           **ctx.ref("parentOrganization", parent.id, node="Organization")}}, entity_id=row.id)


@matrix("organizationArchive", kind="update", table="organizations", entity_type="organization", action="ARCHIVE",
        permission="organization:write", denied_role="Viewer", history={"is_active"},
        actor_roles=("Capture Manager",))
async def organization_archive(ctx: MatrixContext) -> Case:
    row = await ctx.make("organizations")
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "reason": "Matrix"}}, entity_id=row.id,
                verify=_active(False))


@matrix("organizationRestore", kind="update", table="organizations", entity_type="organization", action="RESTORE",
        permission="organization:write", denied_role="Viewer", history={"is_active"},
        actor_roles=("Capture Manager",))
async def organization_restore(ctx: MatrixContext) -> Case:
    row = await ctx.make("organizations", is_active=False)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id, verify=_active(True))


# -- contacts ------------------------------------------------------------------------------------


@matrix("contactCreate", kind="create", table="contacts", entity_type="contact", action="CREATE",
        permission="contact:write", denied_role="Viewer", history={"first_name", "last_name", "organization_id"},
        actor_roles=("BD Analyst",))
async def contact_create(ctx: MatrixContext) -> Case:
    org = await ctx.make("organizations")
    return Case({"input": {**ctx.ref("organization", org.id), "firstName": "Ada", "lastName": _name("Lovelace"),
                           "relationshipStrength": 3}}, tables=("organizations",))


@matrix("contactUpdate", kind="update", table="contacts", entity_type="contact", action="UPDATE",
        permission="contact:write", denied_role="Viewer", history={"last_name", "organization_id"},
        actor_roles=("BD Analyst",))
async def contact_update(ctx: MatrixContext) -> Case:
    org = await ctx.make("organizations")
    row = await ctx.make("contacts")
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "lastName": _name("Changed"),
                           **ctx.ref("organization", org.id)}}, entity_id=row.id, tables=("organizations",))


@matrix("contactArchive", kind="update", table="contacts", entity_type="contact", action="ARCHIVE",
        permission="contact:write", denied_role="Viewer", history={"is_active"}, actor_roles=("BD Analyst",))
async def contact_archive(ctx: MatrixContext) -> Case:
    row = await ctx.make("contacts")
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id, verify=_active(False))


@matrix("contactRestore", kind="update", table="contacts", entity_type="contact", action="RESTORE",
        permission="contact:write", denied_role="Viewer", history={"is_active"}, actor_roles=("BD Analyst",))
async def contact_restore(ctx: MatrixContext) -> Case:
    row = await ctx.make("contacts", is_active=False)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id, verify=_active(True))


# -- project-contact links -------------------------------------------------------------------------


@matrix("opportunityProjectContactCreate", kind="create", table="opportunity_project_contacts",
        entity_type="opportunity_project_contact", action="CREATE", permission="contact:write",
        denied_role="Viewer", history={"contact_id", "opportunity_project_id", "influence_level"},
        actor_roles=("Capture Manager",))
async def link_create(ctx: MatrixContext) -> Case:
    project = await ctx.make("opportunity_projects")
    contact = await ctx.make("contacts")
    return Case({"input": {**ctx.ref("opportunityProject", project.id), **ctx.ref("contact", contact.id),
                           "relationshipType": "contracting officer", "influenceLevel": 4}},
                tables=("opportunity_projects", "contacts"))


async def _link(ctx: MatrixContext) -> Any:
    project = await ctx.make("opportunity_projects")
    contact = await ctx.make("contacts")
    return await ctx.make("opportunity_project_contacts", {"opportunity_projects": project.id, "contacts": contact.id})


@matrix("opportunityProjectContactUpdate", kind="update", table="opportunity_project_contacts",
        entity_type="opportunity_project_contact", action="UPDATE", permission="contact:write",
        denied_role="Viewer", history={"influence_level", "notes"}, actor_roles=("Capture Manager",))
async def link_update(ctx: MatrixContext) -> Case:
    row = await _link(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "influenceLevel": 2, "notes": "Matrix"}},
                entity_id=row.id)


@matrix("opportunityProjectContactDelete", kind="delete", table="opportunity_project_contacts",
        entity_type="opportunity_project_contact", action="DELETE", permission="contact:write",
        denied_role="Viewer", history={"contact_id", "relationship_type"}, actor_roles=("Capture Manager",))
async def link_delete(ctx: MatrixContext) -> Case:
    row = await _link(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id,
                tables=("contacts", "opportunity_projects"))
