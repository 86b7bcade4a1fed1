"""Writes of organizations, contacts and project-contact links.

As in resolvers/capture/mutations.py: each function runs inside a unit of work and changes rows
only through it (the flush hook audits them); permissions are declared on the GraphQL fields.
Values arrive by column name and are checked by the validation registry
(resolvers/common/validation.py) before anything is written. `created_by` and `updated_by` are
the acting user, set here, never taken from the input.

What each entity does instead of a delete (docs/decisions.md W14, docs/api.md):

- Organizations and contacts are **archived** (`is_active = false`, the seed's column) and
  **restored**, never deleted: projects' contact links, activities, documents and the audit trail
  name them, and a delete would silently detach children and contacts (ON DELETE SET NULL, which
  the hook does not see). An archived organization or contact can no longer be changed (restore
  it first) and cannot be newly referenced (as a parent, as a contact's organization, in a new
  project link); what already references it stays as it is.
- Project-contact links are **deleted** (with their `updatedAt` checked): a link is a fact about a
  pursuit, not evidence of its own; the DELETE audit row keeps every column as it was.

The organization hierarchy has no cycles (the registry's rule
`organizations.parent_organization_id.cycle`). A re-parenting takes the tenant's hierarchy lock (a
transaction-scoped advisory lock) before it reads anything, and only then runs the rules, whose
walk up the new parent's ancestors is a fresh statement (READ COMMITTED): two concurrent
re-parentings that would together close a cycle take turns, and the second sees the first's
committed parent and is refused. Without the lock both could check before either committed, both
pass, and together form a loop. Creating an organization cannot close a cycle (it has no
children), so it takes no lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from models import Contact, OpportunityProject, OpportunityProjectContact, Organization
from models.errors import Invalid
from models.unit_of_work import UnitOfWork
from resolvers.common.validation import declare, hierarchy_lock_key, range_rule, validate
from resolvers.opportunities.closed import ensure_open

__all__ = [
    "archive_contact",
    "archive_organization",
    "create_contact",
    "create_link",
    "create_organization",
    "delete_link",
    "hierarchy_lock",
    "restore_contact",
    "restore_organization",
    "update_contact",
    "update_link",
    "update_organization",
]

# Ratings, 1 (least) to 5 (most), as the seed data and the field descriptions use them.
declare(
    range_rule("contacts", "decision_maker_level", low=1, high=5),
    range_rule("contacts", "relationship_strength", low=1, high=5),
    range_rule("opportunity_project_contacts", "influence_level", low=1, high=5),
)

_ARCHIVE = "ARCHIVE"
_RESTORE = "RESTORE"


# -- organizations ------------------------------------------------------------------------------


async def create_organization(uow: UnitOfWork, values: Mapping[str, Any]) -> uuid.UUID:
    """A new organization, under `parent_organization_id` when given (an active organization)."""
    values = {k: v for k, v in values.items() if v is not None}
    await validate(uow, "organizations", values)
    if values.get("parent_organization_id") is not None:
        await _check_parent(uow, values["parent_organization_id"])
    organization = Organization(tenant_id=uow.tenant_id, created_by=uow.actor_id)
    uow.assign(organization, values)
    uow.add(organization)
    await uow.flush()
    return organization.id


async def update_organization(
    uow: UnitOfWork, organization_id: uuid.UUID, seen: Any, changes: Mapping[str, Any]
) -> uuid.UUID:
    """Change the given fields of an active organization read at `seen` (its updatedAt); a new
    `parent_organization_id` must not be the organization itself nor one of its descendants, and
    re-parentings of one tenant take turns (the hierarchy lock, taken before anything is read)."""
    values = _lists(changes, "socioeconomic_certifications")
    reparent = values.get("parent_organization_id") is not None
    if reparent:
        await hierarchy_lock(uow)  # before any row lock: re-parentings of the tenant take turns
    organization = await uow.lock(Organization, organization_id, updated_at=seen, what="organization")
    if not organization.is_active:
        raise Invalid("The organization is archived: restore it before changing it.", field="id")
    await validate(uow, "organizations", values, row=organization)
    parent_id = values.get("parent_organization_id")
    if parent_id is not None and parent_id != organization.parent_organization_id:
        await _check_parent(uow, parent_id)
    if uow.assign(organization, values):
        uow.assign(organization, {"updated_by": uow.actor_id})
        await uow.flush()
    return organization.id


async def archive_organization(uow: UnitOfWork, organization_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Archive an organization read at `seen`: kept, hidden from lists of active ones; its children
    and contacts keep naming it."""
    organization = await uow.lock(Organization, organization_id, updated_at=seen, what="organization")
    if not organization.is_active:
        raise Invalid("The organization is already archived.", field="id")
    _set_active(uow, organization, False)
    await uow.flush()
    return organization.id


async def restore_organization(uow: UnitOfWork, organization_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Bring an archived organization read at `seen` back into use."""
    organization = await uow.lock(Organization, organization_id, updated_at=seen, what="organization")
    if organization.is_active:
        raise Invalid("The organization is not archived.", field="id")
    _set_active(uow, organization, True)
    await uow.flush()
    return organization.id


async def hierarchy_lock(uow: UnitOfWork) -> None:
    """Take the tenant's organization-hierarchy lock until the end of the transaction: the one the
    registry's cycle rule takes too (re-entrant), taken here before any row lock so that a
    re-parenting never holds a row while it waits for another's re-parenting to finish."""
    key = hierarchy_lock_key("organizations", uow.tenant_id)
    await uow.connection.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))


async def _check_parent(uow: UnitOfWork, parent_id: uuid.UUID) -> None:
    parent = await uow.find(Organization, parent_id, what="organization", field="parent_organization_id")
    if not parent.is_active:
        raise Invalid(
            "The parent organization is archived: it cannot take new children.", field="parent_organization_id"
        )


# -- contacts -----------------------------------------------------------------------------------


async def create_contact(uow: UnitOfWork, values: Mapping[str, Any]) -> uuid.UUID:
    """A new contact, of `organization_id` when given (an active organization)."""
    values = {k: v for k, v in values.items() if v is not None}
    await validate(uow, "contacts", values)
    if values.get("organization_id") is not None:
        await _check_organization(uow, values["organization_id"])
    contact = Contact(tenant_id=uow.tenant_id, created_by=uow.actor_id)
    uow.assign(contact, values)
    uow.add(contact)
    await uow.flush()
    return contact.id


async def update_contact(uow: UnitOfWork, contact_id: uuid.UUID, seen: Any, changes: Mapping[str, Any]) -> uuid.UUID:
    """Change the given fields of an active contact read at `seen` (its updatedAt)."""
    contact = await uow.lock(Contact, contact_id, updated_at=seen, what="contact")
    if not contact.is_active:
        raise Invalid("The contact is archived: restore it before changing it.", field="id")
    values = _lists(changes, "tags")
    await validate(uow, "contacts", values, row=contact)
    organization_id = values.get("organization_id")
    if organization_id is not None and organization_id != contact.organization_id:
        await _check_organization(uow, organization_id)
    if uow.assign(contact, values):
        uow.assign(contact, {"updated_by": uow.actor_id})
        await uow.flush()
    return contact.id


async def archive_contact(uow: UnitOfWork, contact_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Archive a contact read at `seen`: kept, with its project links; it cannot be newly linked."""
    contact = await uow.lock(Contact, contact_id, updated_at=seen, what="contact")
    if not contact.is_active:
        raise Invalid("The contact is already archived.", field="id")
    _set_active(uow, contact, False)
    await uow.flush()
    return contact.id


async def restore_contact(uow: UnitOfWork, contact_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Bring an archived contact read at `seen` back into use."""
    contact = await uow.lock(Contact, contact_id, updated_at=seen, what="contact")
    if contact.is_active:
        raise Invalid("The contact is not archived.", field="id")
    _set_active(uow, contact, True)
    await uow.flush()
    return contact.id


async def _check_organization(uow: UnitOfWork, organization_id: uuid.UUID) -> None:
    organization = await uow.find(Organization, organization_id, what="organization", field="organization_id")
    if not organization.is_active:
        raise Invalid("The organization is archived: it cannot take new contacts.", field="organization_id")


def _lists(changes: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The changes, with a null for the JSON list `name` (NOT NULL) meaning the empty list."""
    values = dict(changes)
    if name in values and values[name] is None:
        values[name] = []
    return values


def _set_active(uow: UnitOfWork, row: Organization | Contact, active: bool) -> None:
    uow.assign(row, {"is_active": active, "updated_by": uow.actor_id})
    what = "organization" if isinstance(row, Organization) else "contact"
    uow.label(row, _RESTORE if active else _ARCHIVE, f"{what} {'restored' if active else 'archived'}")


# -- project-contact links ----------------------------------------------------------------------


async def create_link(uow: UnitOfWork, values: Mapping[str, Any]) -> uuid.UUID:
    """Link an active contact to an open project (not archived, not in an outcome status)."""
    values = {k: v for k, v in values.items() if v is not None}
    await validate(uow, "opportunity_project_contacts", values)
    project_id = values.pop("opportunity_project_id")
    contact_id = values.pop("contact_id")
    # FOR SHARE: a closing or an archiving of the project waits for this link, or this link sees it.
    await ensure_open(uow, project_id, field="opportunity_project_id", what="contact links")
    contact = await uow.find(Contact, contact_id, what="contact", field="contact_id")
    if not contact.is_active:
        raise Invalid("The contact is archived: it cannot be linked to a project.", field="contact_id")
    link = OpportunityProjectContact(
        tenant_id=uow.tenant_id, opportunity_project_id=project_id, contact_id=contact_id, created_by=uow.actor_id
    )
    uow.assign(link, values)
    uow.add(link)
    await uow.flush()
    return link.id


async def update_link(uow: UnitOfWork, link_id: uuid.UUID, seen: Any, changes: Mapping[str, Any]) -> uuid.UUID:
    """Change a link read at `seen`: its relationship type, influence level, notes."""
    link = await uow.lock(OpportunityProjectContact, link_id, updated_at=seen, what="project contact link")
    project = await uow.find(OpportunityProject, link.opportunity_project_id, what="opportunity project")
    _check_project_open(project, field="id")
    values = dict(changes)
    await validate(uow, "opportunity_project_contacts", values, row=link)
    if uow.assign(link, values):
        await uow.flush()
    return link.id


async def delete_link(uow: UnitOfWork, link_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Delete a link read at `seen` (the contact and the project stay)."""
    link = await uow.lock(OpportunityProjectContact, link_id, updated_at=seen, what="project contact link")
    project = await uow.find(OpportunityProject, link.opportunity_project_id, what="opportunity project")
    _check_project_open(project, field="id")
    await uow.delete(link)
    await uow.flush()
    return link_id


def _check_project_open(project: OpportunityProject, *, field: str) -> None:
    if project.archived_at is not None:
        raise Invalid("The opportunity project is archived: its contact links can no longer be changed.", field=field)
