"""Organizations and contacts: the agencies, primes, partners and competitors, and their people."""

from __future__ import annotations

import datetime
import uuid
from enum import Enum

import strawberry
from strawberry import relay

from models import Contact as ContactModel
from models import OpportunityProjectContact as ProjectContactModel
from models import Organization as OrganizationModel
from models import User as UserModel
from models.enums import EntityType, ParticipantType
from schema.activities import activities_of, participations_of
from schema.documents import document_associations_of
from schema.entities import history
from schema.filters import BooleanFilter, DateTimeFilter, StringFilter, UUIDFilter
from schema.node import EntityNode, TenantOwned
from schema.pagination import OrderDirection
from schema.relations import root_list, to_many, to_one
from schema.scalars import JSON

__all__ = [
    "Contact",
    "ContactFilter",
    "ContactOrder",
    "ContactOrderField",
    "CrmQuery",
    "Organization",
    "OrganizationFilter",
    "OrganizationOrder",
    "OrganizationOrderField",
]

_ORGS = OrganizationModel.__table__
_CONTACTS = ContactModel.__table__
_USERS = UserModel.__table__
_PROJECT_CONTACTS = ProjectContactModel.__table__
USER = ("User", "schema.identity")


@strawberry.type(description="A government agency, office, prime, partner or competitor.")
class Organization(EntityNode, TenantOwned, relay.Node):
    _table = _ORGS
    _descriptions = {
        "name": "The organization's name, e.g. Naval Sea Systems Command.",
        "duns_number": "Its DUNS number (the retired Dun & Bradstreet identifier), where known.",
        "sam_unique_id": "Its Unique Entity ID (UEI) in SAM.gov, the identifier that replaced DUNS.",
        "cage_code": "Its CAGE code (Commercial and Government Entity), five characters.",
        "address_line1": "Street address.",
        "address_line2": "Suite, floor or building.",
        "city": "City of the address.",
        "state_province": "State or province (e.g. VA).",
        "postal_code": "ZIP or postal code.",
        "country": "Country of the address (e.g. USA).",
        "phone": "Main phone number.",
        "email": "Main contact email.",
        "website": "Website URL.",
        "organization_type": "What kind of organization (free text), e.g. federal_department, federal_agency, "
        "prime, partner, competitor.",
        "business_size": "Size standard status (free text), e.g. small, large.",
        "socioeconomic_certifications": "Its small-business certifications as a JSON array, e.g. [\"8(a)\", "
        "\"WOSB\", \"SDVOSB\", \"HUBZone\"].",
        "is_active": "Whether the organization is still in use; inactive ones stay for history.",
    }

    row_id: uuid.UUID
    name: str
    duns_number: str | None
    sam_unique_id: str | None
    cage_code: str | None
    address_line1: str | None
    address_line2: str | None
    city: str | None
    state_province: str | None
    postal_code: str | None
    country: str
    phone: str | None
    email: str | None
    website: str | None
    organization_type: str | None
    business_size: str | None
    socioeconomic_certifications: JSON
    is_active: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime

    parent_organization: Organization | None = to_one(
        ("Organization", "schema.crm"), _ORGS, "parent_organization_id", description="The parent in the hierarchy."
    )
    child_organizations = to_many(
        ("Organization", "schema.crm"), _ORGS, "parent_organization_id", order=(("name", False),),
        description="Direct children in the hierarchy, by name.",
    )
    contacts = to_many(
        ("Contact", "schema.crm"), _CONTACTS, "organization_id", order=(("last_name", False), ("first_name", False)),
        description="People of this organization, by last and first name.",
    )
    created_by = to_one(USER, _USERS, "created_by")
    updated_by = to_one(USER, _USERS, "updated_by")
    activities = activities_of(EntityType.ORGANIZATION)
    document_associations = document_associations_of(EntityType.ORGANIZATION)
    history = history(EntityType.ORGANIZATION)


@strawberry.type(description="A person the capture team knows.")
class Contact(EntityNode, TenantOwned, relay.Node):
    _table = _CONTACTS
    _descriptions = {
        "first_name": "Given name.",
        "last_name": "Family name; contact lists sort by it.",
        "title": "Job title, e.g. Contracting Officer.",
        "email": "Email address.",
        "phone": "Phone number.",
        "linkedin_url": "LinkedIn profile URL.",
        "contact_type": "What kind of contact (free text), e.g. government, industry, partner.",
        "decision_maker_level": "How much say the person has in buying decisions: the team's rating, e.g. 1 (low) "
        "to 5 (decides).",
        "security_clearance": "The person's clearance, e.g. Secret, Top Secret (free text).",
        "last_contact_date": "When the team last spoke with the person.",
        "interaction_frequency": "How often the team is in touch (free text), e.g. weekly, monthly, quarterly.",
        "relationship_strength": "How strong the team's relationship is: its rating, e.g. 1 (cold) to 5 (trusted).",
        "notes": "What the team knows about the person.",
        "tags": "Labels as a JSON array of strings, e.g. [\"decision_maker\"].",
        "is_active": "Whether the contact is still in use; inactive ones stay for history.",
        "organization": "The organization the person works for.",
    }

    row_id: uuid.UUID
    first_name: str
    last_name: str
    title: str | None
    email: str | None
    phone: str | None
    linkedin_url: str | None
    contact_type: str | None
    decision_maker_level: int | None
    security_clearance: str | None
    last_contact_date: datetime.date | None
    interaction_frequency: str | None
    relationship_strength: int | None
    notes: str | None
    tags: JSON
    is_active: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime

    organization = to_one(("Organization", "schema.crm"), _ORGS, "organization_id")
    activities = activities_of(EntityType.CONTACT)
    document_associations = document_associations_of(EntityType.CONTACT)
    activity_participations = participations_of(ParticipantType.CONTACT)
    history = history(EntityType.CONTACT)
    opportunity_project_contacts = to_many(
        ("OpportunityProjectContact", "schema.opportunities"), _PROJECT_CONTACTS, "contact_id",
        order=(("created_at", False),),
        description="Links to the projects this contact is on, in the order made.",
    )
    created_by = to_one(USER, _USERS, "created_by")
    updated_by = to_one(USER, _USERS, "updated_by")


@strawberry.input
class OrganizationFilter:
    row_id: UUIDFilter | None = None
    name: StringFilter | None = None
    is_active: BooleanFilter | None = None
    parent_organization_id: UUIDFilter | None = None
    created_at: DateTimeFilter | None = None


@strawberry.enum
class OrganizationOrderField(Enum):
    NAME = "name"
    CREATED_AT = "created_at"


@strawberry.input
class OrganizationOrder:
    field: OrganizationOrderField
    direction: OrderDirection = OrderDirection.ASC


@strawberry.input
class ContactFilter:
    row_id: UUIDFilter | None = None
    last_name: StringFilter | None = None
    email: StringFilter | None = None
    organization_id: UUIDFilter | None = None
    is_active: BooleanFilter | None = None
    created_at: DateTimeFilter | None = None


@strawberry.enum
class ContactOrderField(Enum):
    LAST_NAME = "last_name"
    EMAIL = "email"
    CREATED_AT = "created_at"


@strawberry.input
class ContactOrder:
    field: ContactOrderField
    direction: OrderDirection = OrderDirection.ASC


@strawberry.type
class CrmQuery:
    organizations = root_list(
        ("Organization", "schema.crm"), _ORGS, OrganizationFilter, OrganizationOrder,
        default_order=(("name", False),), description="Organizations, by name unless ordered otherwise.",
    )
    contacts = root_list(
        ("Contact", "schema.crm"), _CONTACTS, ContactFilter, ContactOrder,
        default_order=(("last_name", False),), description="Contacts, by last name unless ordered otherwise.",
    )
