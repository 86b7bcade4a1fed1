"""Mutations of external sources, polling configurations and external data changes.

Each field is one audited transaction (schema/mutation_kit.py); the domain functions are in
resolvers/external_data/mutations.py. Sources and polling need `source:admin` (tenant-wide);
acknowledging a detected change needs `external_data:acknowledge`, tenant-wide or on the change's
opportunity project.

Credentials are write-only: `credentials` (a JSON object of texts, e.g. {"api_key": "..."}) is
sealed with AES-256-GCM before it is stored, no field ever returns it, and the audit trail records
only that it changed ("[redacted]"). Sources are never deleted (`isActive: false` stops their
polling); polling configurations are deleted for good.
"""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

import strawberry
from sqlalchemy import Table
from strawberry import relay
from strawberry.types.unset import UNSET

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models import ExternalDataChange as ChangeModel
from models.enums import PollingPriority
from models.idempotency import idempotent
from models.unit_of_work import UnitOfWork
from resolvers.external_data import mutations
from schema.external_data import ExternalDataChange, ExternalOpportunitySource, PollingConfiguration
from schema.mutation_kit import (
    IDEMPOTENCY_KEY,
    UPDATED_AT,
    Args,
    Deleted,
    Entity,
    creates,
    mutation,
    node_id,
    removes,
    target_project,
    updates,
)
from schema.mutation_kit import row_id as ref_row_id
from schema.scalars import JSON
from schema.writes import describe_like

__all__ = [
    "ExternalDataChangeAcknowledgeInput",
    "ExternalDataMutation",
    "ExternalSourceCreateInput",
    "ExternalSourceUpdateInput",
    "PollingConfigurationCreateInput",
    "PollingConfigurationDeleteInput",
    "PollingConfigurationUpdateInput",
]

_CHANGES: Table = ChangeModel.__table__
_CREDENTIALS = (
    "Write-only: the credentials as a JSON object of texts (e.g. {\"api_key\": \"...\"}), at most 8192 bytes; "
    "stored encrypted, never returned, recorded in the audit trail only as changed. Required unless "
    "authenticationType is none."
)


@strawberry.input(description="A new external opportunity source (an https API), with its write-only credentials.")
class ExternalSourceCreateInput:
    source_name: str = strawberry.field(description="1 to 100 characters, unique in the tenant.")
    api_endpoint: str = strawberry.field(description="The API's https:// URL (no credentials in it).")
    api_version: str
    authentication_type: str = strawberry.field(description="One of none, api_key, oauth2, basic.")
    credentials: JSON | None = strawberry.field(default=None, description=_CREDENTIALS)
    rate_limit_per_hour: int | None = strawberry.field(default=None, description="1 to 1,000,000; default 1000.")
    timeout_seconds: Decimal | None = strawberry.field(
        default=None, description="0.1 to 300 seconds, fractions allowed; default 30."
    )
    retry_attempts: int | None = strawberry.field(default=None, description="0 to 10; default 3.")
    is_active: bool | None = strawberry.field(default=None, description="Default true.")
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to an external source (not the \"Manual entry\" source): only the fields "
                  "given change.")
class ExternalSourceUpdateInput:
    id: relay.GlobalID | None = node_id("ExternalOpportunitySource")
    row_id: uuid.UUID | None = ref_row_id("ExternalOpportunitySource")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    source_name: str | None = UNSET
    api_endpoint: str | None = strawberry.field(default=UNSET, description="The API's https:// URL.")
    api_version: str | None = UNSET
    authentication_type: str | None = strawberry.field(
        default=UNSET, description="One of none, api_key, oauth2, basic; a change needs new credentials (none clears "
        "them)."
    )
    credentials: JSON | None = strawberry.field(
        default=UNSET, description=_CREDENTIALS + " Given, it replaces the stored credentials; null removes them."
    )
    rate_limit_per_hour: int | None = UNSET
    timeout_seconds: Decimal | None = UNSET
    retry_attempts: int | None = UNSET
    is_active: bool | None = strawberry.field(default=UNSET, description="false stops polling the source.")


describe_like(ExternalSourceCreateInput, ExternalOpportunitySource)
describe_like(ExternalSourceUpdateInput, ExternalOpportunitySource)


@strawberry.input(description="A polling schedule for an opportunity project (not archived) on an active source.")
class PollingConfigurationCreateInput:
    opportunity_project_id: relay.GlobalID | None = node_id("OpportunityProject")
    opportunity_project_row_id: uuid.UUID | None = ref_row_id("OpportunityProject")
    external_source_id: relay.GlobalID | None = node_id("ExternalOpportunitySource")
    external_source_row_id: uuid.UUID | None = ref_row_id("ExternalOpportunitySource")
    polling_frequency_minutes: int | None = strawberry.field(default=None, description="5 to 10,080; default 60.")
    is_active: bool | None = strawberry.field(default=None, description="Default true: the first poll is due now.")
    priority_level: PollingPriority | None = strawberry.field(default=None, description="Default NORMAL.")
    max_retries: int | None = strawberry.field(default=None, description="0 to 10; default 3.")
    backoff_multiplier: Decimal | None = strawberry.field(default=None, description="1.00 to 9.99; default 2.0.")
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to a polling schedule: only the fields given change.")
class PollingConfigurationUpdateInput:
    id: relay.GlobalID | None = node_id("PollingConfiguration")
    row_id: uuid.UUID | None = ref_row_id("PollingConfiguration")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    polling_frequency_minutes: int | None = strawberry.field(default=UNSET, description="5 to 10,080.")
    is_active: bool | None = strawberry.field(
        default=UNSET, description="false unschedules the next poll; true schedules one now."
    )
    priority_level: PollingPriority | None = UNSET
    max_retries: int | None = strawberry.field(default=UNSET, description="0 to 10.")
    backoff_multiplier: Decimal | None = strawberry.field(default=UNSET, description="1.00 to 9.99.")


describe_like(PollingConfigurationCreateInput, PollingConfiguration)
describe_like(PollingConfigurationUpdateInput, PollingConfiguration)


@strawberry.input(description="Delete a polling schedule (the project is no longer refreshed from that source).")
class PollingConfigurationDeleteInput:
    id: relay.GlobalID | None = node_id("PollingConfiguration")
    row_id: uuid.UUID | None = ref_row_id("PollingConfiguration")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)


@strawberry.input(description="Acknowledge a detected external data change (once: CONFLICT when it already is).")
class ExternalDataChangeAcknowledgeInput:
    id: relay.GlobalID | None = node_id("ExternalDataChange")
    row_id: uuid.UUID | None = ref_row_id("ExternalDataChange")
    notes: str | None = strawberry.field(
        default=None, description="What the acknowledging user noted, e.g. the follow-up decided (optional)."
    )


async def _source_create(uow: UnitOfWork, args: Args[ExternalSourceCreateInput]) -> uuid.UUID:
    # Idempotent here rather than by the kit: the request hash is made without the credentials
    # (a stored hash of a weak secret could be guessed offline).
    values = {k: v for k, v in args.values.items() if k != "credentials"}
    return await idempotent(
        uow, args.input.idempotency_key, mutation="externalSourceCreate", values=values,
        create=lambda: mutations.create_source(uow, args.context.auth.secret_box, values, args.input.credentials),
    )


async def _source_update(uow: UnitOfWork, args: Args[ExternalSourceUpdateInput]) -> uuid.UUID:
    assert args.id is not None
    values = {k: v for k, v in args.values.items() if k != "credentials"}
    given = args.input.credentials
    return await mutations.update_source(
        uow, args.context.auth.secret_box, args.id, args.updated_at, values,
        None if given is UNSET else given, replace_credentials=given is not UNSET,
    )


async def _acknowledge(uow: UnitOfWork, args: Args[ExternalDataChangeAcknowledgeInput]) -> uuid.UUID:
    assert args.id is not None
    return await mutations.acknowledge_change(uow, args.id, args.input.notes)


@strawberry.type
class ExternalDataMutation:
    external_source_create = mutation(
        "externalSourceCreate",
        input=ExternalSourceCreateInput,
        input_description="The source's settings and its write-only credentials.",
        permission=Permission.SOURCE_ADMIN,
        run=_source_create,
        returns=Entity(ExternalOpportunitySource, "external source created"),
        description="Add an external opportunity source; its credentials are stored encrypted and never returned.",
    )
    external_source_update = mutation(
        "externalSourceUpdate",
        input=ExternalSourceUpdateInput,
        input_description="The source, the updatedAt read, and the settings to change.",
        permission=Permission.SOURCE_ADMIN,
        run=_source_update,
        returns=Entity(ExternalOpportunitySource, "external source as changed"),
        description="Change an external source read at updatedAt, replace its credentials, or deactivate it "
        "(sources are never deleted).",
    )
    polling_configuration_create = mutation(
        "pollingConfigurationCreate",
        input=PollingConfigurationCreateInput,
        input_description="The project, the source and the schedule.",
        permission=Permission.SOURCE_ADMIN,
        run=creates(mutations.create_polling),
        idempotent=True,
        returns=Entity(PollingConfiguration, "polling configuration created"),
        description="Schedule polling of an opportunity project from an external source.",
    )
    polling_configuration_update = mutation(
        "pollingConfigurationUpdate",
        input=PollingConfigurationUpdateInput,
        input_description="The schedule, the updatedAt read, and the settings to change.",
        permission=Permission.SOURCE_ADMIN,
        run=updates(mutations.update_polling),
        returns=Entity(PollingConfiguration, "polling configuration as changed"),
        description="Change a polling schedule read at updatedAt.",
    )
    polling_configuration_delete = mutation(
        "pollingConfigurationDelete",
        input=PollingConfigurationDeleteInput,
        input_description="The schedule and the updatedAt read.",
        permission=Permission.SOURCE_ADMIN,
        run=removes(mutations.delete_polling),
        returns=Deleted(PollingConfiguration, "polling configuration"),
        description="Delete a polling schedule read at updatedAt.",
    )
    external_data_change_acknowledge = mutation(
        "externalDataChangeAcknowledge",
        input=ExternalDataChangeAcknowledgeInput,
        input_description="The change and the notes.",
        permission=Permission.EXTERNAL_DATA_ACKNOWLEDGE,
        project=target_project(_CHANGES),
        run=_acknowledge,
        returns=Entity(ExternalDataChange, "external data change, now acknowledged"),
        description="Acknowledge a detected external data change, with notes; CONFLICT when it already is.",
    )
