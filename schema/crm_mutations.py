"""Mutations of organizations, contacts and project-contact links.

Organizations and contacts are archived and restored, never deleted; links are deleted
(docs/decisions.md W14, docs/api.md). Organizations need organization:write, contacts
contact:write (tenant-wide: they are tenant-level data); a link needs contact:write on its project
(tenant-wide, or granted on that project). Updates, archives, restores and deletes carry the
`updatedAt` the caller read: a stale one answers CONFLICT with the row's current updatedAt.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import strawberry
from sqlalchemy import Table
from strawberry import relay
from strawberry.types.unset import UNSET

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models import OpportunityProject as ProjectModel
from models import OpportunityProjectContact as LinkModel
from models.unit_of_work import UnitOfWork
from resolvers.crm import mutations
from schema.crm import Contact, Organization
from schema.mutation_kit import (
    IDEMPOTENCY_KEY,
    UPDATED_AT,
    Args,
    Deleted,
    Entity,
    creates,
    mutation,
    ref_id,
    ref_project,
    ref_row_id,
    target_project,
)
from schema.opportunities import OpportunityProjectContact
from schema.writes import describe_like

__all__ = [
    "ContactArchiveInput",
    "ContactCreateInput",
    "ContactRestoreInput",
    "ContactUpdateInput",
    "CrmMutation",
    "OpportunityProjectContactCreateInput",
    "OpportunityProjectContactDeleteInput",
    "OpportunityProjectContactUpdateInput",
    "OrganizationArchiveInput",
    "OrganizationCreateInput",
    "OrganizationRestoreInput",
    "OrganizationUpdateInput",
]

_PROJECTS: Table = ProjectModel.__table__
_LINKS: Table = LinkModel.__table__
_REASON = "Recorded in the audit log (255 characters)."
_PARENT = (
    "The parent organization's global id (`Organization.id`); or give its rowId instead. It must be active and, "
    "on an update, neither this organization nor one under it (VALIDATION: no cycles); null detaches it."
)
_PARENT_ROW = "The parent organization's rowId (`Organization.rowId`), instead of its global id."
_ORGANIZATION = (
    "The organization's global id (`Organization.id`); or give its rowId instead. It must be active; null clears it."
)
_ORGANIZATION_ROW = "The organization's rowId (`Organization.rowId`), instead of its global id."
_CERTIFICATIONS = "Its small-business certifications, e.g. [\"8(a)\", \"WOSB\"]."
_TAGS = "Labels, e.g. [\"decision_maker\"]."
_RATING = "1 (least) to 5 (most)."


# -- organizations ------------------------------------------------------------------------------


@strawberry.input(description="A new organization, top-level or under an active parent.")
class OrganizationCreateInput:
    name: str = strawberry.field(description="1 to 255 characters.")
    parent_organization_id: relay.GlobalID | None = ref_id("Organization", required=False, description=_PARENT)
    parent_organization_row_id: uuid.UUID | None = ref_row_id("Organization", description=_PARENT_ROW)
    duns_number: str | None = None
    sam_unique_id: str | None = None
    cage_code: str | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    state_province: str | None = None
    postal_code: str | None = None
    country: str | None = strawberry.field(default=None, description="Country of the address; default United States.")
    phone: str | None = None
    email: str | None = None
    website: str | None = None
    organization_type: str | None = None
    business_size: str | None = None
    socioeconomic_certifications: list[str] | None = strawberry.field(default=None, description=_CERTIFICATIONS)
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to an active organization: only the fields given change; null clears a field.")
class OrganizationUpdateInput:
    id: relay.GlobalID | None = ref_id("Organization")
    row_id: uuid.UUID | None = ref_row_id("Organization")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    name: str | None = UNSET
    parent_organization_id: relay.GlobalID | None = ref_id("Organization", required=False, description=_PARENT)
    parent_organization_row_id: uuid.UUID | None = ref_row_id("Organization", description=_PARENT_ROW)
    duns_number: str | None = UNSET
    sam_unique_id: str | None = UNSET
    cage_code: str | None = UNSET
    address_line1: str | None = UNSET
    address_line2: str | None = UNSET
    city: str | None = UNSET
    state_province: str | None = UNSET
    postal_code: str | None = UNSET
    country: str | None = UNSET
    phone: str | None = UNSET
    email: str | None = UNSET
    website: str | None = UNSET
    organization_type: str | None = UNSET
    business_size: str | None = UNSET
    socioeconomic_certifications: list[str] | None = strawberry.field(default=UNSET, description=_CERTIFICATIONS)


describe_like(OrganizationCreateInput, Organization)
describe_like(OrganizationUpdateInput, Organization)


@strawberry.input(description="Archive an organization: it is kept (its children and contacts keep naming it).")
class OrganizationArchiveInput:
    id: relay.GlobalID | None = ref_id("Organization")
    row_id: uuid.UUID | None = ref_row_id("Organization")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description=_REASON)


@strawberry.input(description="Restore an archived organization: it can be changed and referenced again.")
class OrganizationRestoreInput:
    id: relay.GlobalID | None = ref_id("Organization")
    row_id: uuid.UUID | None = ref_row_id("Organization")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description=_REASON)


# -- contacts -----------------------------------------------------------------------------------


@strawberry.input(description="A new contact, optionally of an active organization.")
class ContactCreateInput:
    first_name: str = strawberry.field(description="1 to 100 characters.")
    last_name: str = strawberry.field(description="1 to 100 characters.")
    organization_id: relay.GlobalID | None = ref_id("Organization", required=False, description=_ORGANIZATION)
    organization_row_id: uuid.UUID | None = ref_row_id("Organization", description=_ORGANIZATION_ROW)
    title: str | None = None
    email: str | None = None
    phone: str | None = None
    linkedin_url: str | None = None
    contact_type: str | None = None
    decision_maker_level: int | None = strawberry.field(default=None, description=_RATING)
    security_clearance: str | None = None
    last_contact_date: datetime.date | None = None
    interaction_frequency: str | None = None
    relationship_strength: int | None = strawberry.field(default=None, description=_RATING)
    notes: str | None = None
    tags: list[str] | None = strawberry.field(default=None, description=_TAGS)
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to an active contact: only the fields given change; null clears a field.")
class ContactUpdateInput:
    id: relay.GlobalID | None = ref_id("Contact")
    row_id: uuid.UUID | None = ref_row_id("Contact")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    first_name: str | None = UNSET
    last_name: str | None = UNSET
    organization_id: relay.GlobalID | None = ref_id("Organization", required=False, description=_ORGANIZATION)
    organization_row_id: uuid.UUID | None = ref_row_id("Organization", description=_ORGANIZATION_ROW)
    title: str | None = UNSET
    email: str | None = UNSET
    phone: str | None = UNSET
    linkedin_url: str | None = UNSET
    contact_type: str | None = UNSET
    decision_maker_level: int | None = strawberry.field(default=UNSET, description=_RATING)
    security_clearance: str | None = UNSET
    last_contact_date: datetime.date | None = UNSET
    interaction_frequency: str | None = UNSET
    relationship_strength: int | None = strawberry.field(default=UNSET, description=_RATING)
    notes: str | None = UNSET
    tags: list[str] | None = strawberry.field(default=UNSET, description=_TAGS)


describe_like(ContactCreateInput, Contact)
describe_like(ContactUpdateInput, Contact)


@strawberry.input(description="Archive a contact: it is kept with its project links, and cannot be newly linked.")
class ContactArchiveInput:
    id: relay.GlobalID | None = ref_id("Contact")
    row_id: uuid.UUID | None = ref_row_id("Contact")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description=_REASON)


@strawberry.input(description="Restore an archived contact: it can be changed and linked again.")
class ContactRestoreInput:
    id: relay.GlobalID | None = ref_id("Contact")
    row_id: uuid.UUID | None = ref_row_id("Contact")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description=_REASON)


# -- project-contact links ----------------------------------------------------------------------


@strawberry.input(
    description="Link an active contact to an open project (not archived, not won, lost, no-bid, cancelled or "
    "withdrawn)."
)
class OpportunityProjectContactCreateInput:
    opportunity_project_id: relay.GlobalID | None = ref_id("OpportunityProject")
    opportunity_project_row_id: uuid.UUID | None = ref_row_id("OpportunityProject")
    contact_id: relay.GlobalID | None = ref_id("Contact")
    contact_row_id: uuid.UUID | None = ref_row_id("Contact")
    relationship_type: str | None = strawberry.field(
        default=None, description="The contact's role on this pursuit (free text, 50 characters), e.g. contracting "
        "officer. A contact is linked to a project once per relationship type (CONFLICT otherwise)."
    )
    influence_level: int | None = strawberry.field(default=None, description=_RATING)
    notes: str | None = None
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to a project-contact link: only the fields given change; null clears a field.")
class OpportunityProjectContactUpdateInput:
    id: relay.GlobalID | None = ref_id("OpportunityProjectContact")
    row_id: uuid.UUID | None = ref_row_id("OpportunityProjectContact")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    relationship_type: str | None = UNSET
    influence_level: int | None = strawberry.field(default=UNSET, description=_RATING)
    notes: str | None = UNSET


describe_like(OpportunityProjectContactCreateInput, OpportunityProjectContact)
describe_like(OpportunityProjectContactUpdateInput, OpportunityProjectContact)


@strawberry.input(description="Delete a project-contact link (the contact and the project stay).")
class OpportunityProjectContactDeleteInput:
    id: relay.GlobalID | None = ref_id("OpportunityProjectContact")
    row_id: uuid.UUID | None = ref_row_id("OpportunityProjectContact")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description=_REASON)


# -- what each runs -----------------------------------------------------------------------------


def _target(args: Args[Any]) -> uuid.UUID:
    assert args.id is not None  # the target pair is required: the kit refuses an input without one
    return args.id


async def _organization_update(uow: UnitOfWork, args: Args[OrganizationUpdateInput]) -> uuid.UUID:
    return await mutations.update_organization(uow, _target(args), args.updated_at, args.values)


async def _organization_archive(uow: UnitOfWork, args: Args[OrganizationArchiveInput]) -> uuid.UUID:
    return await mutations.archive_organization(uow, _target(args), args.updated_at)


async def _organization_restore(uow: UnitOfWork, args: Args[OrganizationRestoreInput]) -> uuid.UUID:
    return await mutations.restore_organization(uow, _target(args), args.updated_at)


async def _contact_update(uow: UnitOfWork, args: Args[ContactUpdateInput]) -> uuid.UUID:
    return await mutations.update_contact(uow, _target(args), args.updated_at, args.values)


async def _contact_archive(uow: UnitOfWork, args: Args[ContactArchiveInput]) -> uuid.UUID:
    return await mutations.archive_contact(uow, _target(args), args.updated_at)


async def _contact_restore(uow: UnitOfWork, args: Args[ContactRestoreInput]) -> uuid.UUID:
    return await mutations.restore_contact(uow, _target(args), args.updated_at)


async def _link_update(uow: UnitOfWork, args: Args[OpportunityProjectContactUpdateInput]) -> uuid.UUID:
    return await mutations.update_link(uow, _target(args), args.updated_at, args.values)


async def _link_delete(uow: UnitOfWork, args: Args[OpportunityProjectContactDeleteInput]) -> uuid.UUID:
    return await mutations.delete_link(uow, _target(args), args.updated_at)


_ORG = Permission.ORGANIZATION_WRITE
_CONTACT = Permission.CONTACT_WRITE


@strawberry.type
class CrmMutation:
    organization_create = mutation(
        "organizationCreate",
        input=OrganizationCreateInput,
        permission=_ORG,
        run=creates(mutations.create_organization),
        idempotent=True,
        returns=Entity(Organization, "organization created"),
        description="Create an organization (an agency, office, prime, partner or competitor).",
    )
    organization_update = mutation(
        "organizationUpdate",
        input=OrganizationUpdateInput,
        permission=_ORG,
        run=_organization_update,
        returns=Entity(Organization, "organization as changed"),
        description="Change fields of an active organization read at updatedAt, including its parent (no cycles).",
    )
    organization_archive = mutation(
        "organizationArchive",
        input=OrganizationArchiveInput,
        permission=_ORG,
        run=_organization_archive,
        returns=Entity(Organization, "organization, now archived"),
        description="Archive an organization read at updatedAt (organizations are never deleted).",
    )
    organization_restore = mutation(
        "organizationRestore",
        input=OrganizationRestoreInput,
        permission=_ORG,
        run=_organization_restore,
        returns=Entity(Organization, "organization, now active again"),
        description="Restore an archived organization read at updatedAt.",
    )
    contact_create = mutation(
        "contactCreate",
        input=ContactCreateInput,
        permission=_CONTACT,
        run=creates(mutations.create_contact),
        idempotent=True,
        returns=Entity(Contact, "contact created"),
        description="Create a contact.",
    )
    contact_update = mutation(
        "contactUpdate",
        input=ContactUpdateInput,
        permission=_CONTACT,
        run=_contact_update,
        returns=Entity(Contact, "contact as changed"),
        description="Change fields of an active contact read at updatedAt.",
    )
    contact_archive = mutation(
        "contactArchive",
        input=ContactArchiveInput,
        permission=_CONTACT,
        run=_contact_archive,
        returns=Entity(Contact, "contact, now archived"),
        description="Archive a contact read at updatedAt (contacts are never deleted).",
    )
    contact_restore = mutation(
        "contactRestore",
        input=ContactRestoreInput,
        permission=_CONTACT,
        run=_contact_restore,
        returns=Entity(Contact, "contact, now active again"),
        description="Restore an archived contact read at updatedAt.",
    )
    opportunity_project_contact_create = mutation(
        "opportunityProjectContactCreate",
        input=OpportunityProjectContactCreateInput,
        permission=_CONTACT,
        project=ref_project("opportunity_project", _PROJECTS),
        run=creates(mutations.create_link),
        idempotent=True,
        returns=Entity(OpportunityProjectContact, "project-contact link created"),
        description="Link a contact to an opportunity project, with its relationship and influence level.",
    )
    opportunity_project_contact_update = mutation(
        "opportunityProjectContactUpdate",
        input=OpportunityProjectContactUpdateInput,
        permission=_CONTACT,
        project=target_project(_LINKS),
        run=_link_update,
        returns=Entity(OpportunityProjectContact, "project-contact link as changed"),
        description="Change a project-contact link read at updatedAt (its project not archived).",
    )
    opportunity_project_contact_delete = mutation(
        "opportunityProjectContactDelete",
        input=OpportunityProjectContactDeleteInput,
        permission=_CONTACT,
        project=target_project(_LINKS),
        run=_link_delete,
        returns=Deleted(OpportunityProjectContact, "project-contact link"),
        description="Delete a project-contact link read at updatedAt (its project not archived).",
    )
