"""Writes of external sources, polling configurations and acknowledgements of external data changes.

As in resolvers/capture/mutations.py: each function runs inside a unit of work and changes rows
only through it (the flush hook audits them); permissions are declared on the GraphQL fields.

Credentials are write-only. A source's credentials (a JSON object, e.g. {"api_key": "..."}) are
sealed with the server's `SecretBox` (auth/crypto.py, AES-256-GCM, the envelope of every stored
secret) bound to the tenant and the source id, and stored as {"v": 1, "sealed": token} in
`api_credentials_encrypted`. That column is a stored secret (models.audit_trail.STORED_SECRETS,
resolvers.common.loaders.SECRET_COLUMNS): no GraphQL field reads it and its audit and history
values read "[redacted]". `open_credentials` is for the poller only. The credentials also stay
out of an idempotency key's request hash (a hash of a weak secret could be guessed offline).

What is deleted and what is kept (docs/decisions.md W14): sources are never deleted (projects,
changes and call logs reference them): `is_active = false` stops their polling. The tenant's
"Manual entry" source cannot be changed. Polling configurations are schedules: deleted for good,
the DELETE audit row keeping every column. External data changes are never deleted; acknowledging
one is a one-time change (CONFLICT when already acknowledged).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func

from auth.crypto import SecretBox
from models import ExternalDataChange, ExternalOpportunitySource, OpportunityProject, PollingConfiguration
from models.enums import PollingPriority
from models.errors import Conflict, Invalid
from models.unit_of_work import UnitOfWork
from resolvers.common.validation import declare, range_rule, validate
from resolvers.external_data.redaction import redact_text
from resolvers.opportunities.mutations import manual_source_id

__all__ = [
    "AUTHENTICATION_TYPES",
    "CREDENTIALS_MAX_BYTES",
    "acknowledge_change",
    "create_polling",
    "create_source",
    "credentials_aad",
    "delete_polling",
    "open_credentials",
    "seal_credentials",
    "update_polling",
    "update_source",
]

#: How a source authenticates; `none` needs no credentials, every other type does.
AUTHENTICATION_TYPES = frozenset({"none", "api_key", "oauth2", "basic"})
#: Largest credentials object accepted, as compact JSON.
CREDENTIALS_MAX_BYTES = 8192
_SOURCE_FIELDS = frozenset(
    {
        "source_name",
        "api_endpoint",
        "api_version",
        "authentication_type",
        "rate_limit_per_hour",
        "timeout_seconds",
        "retry_attempts",
        "is_active",
    }
)
_POLLING_FIELDS = frozenset(
    {"polling_frequency_minutes", "is_active", "priority_level", "max_retries", "backoff_multiplier"}
)
# Inclusive ranges of the numeric settings (validation rules: docs/validation.md).
declare(
    range_rule("external_opportunity_sources", "rate_limit_per_hour", low=1, high=1_000_000),
    range_rule("external_opportunity_sources", "timeout_seconds", low=Decimal("0.1"), high=300),
    range_rule("external_opportunity_sources", "retry_attempts", low=0, high=10),
    range_rule("polling_configurations", "polling_frequency_minutes", low=5, high=10_080),
    range_rule("polling_configurations", "max_retries", low=0, high=10),
    range_rule("polling_configurations", "backoff_multiplier", low=Decimal("1.00"), high=Decimal("9.99")),
)
_ENVELOPE_VERSION = 1


# -- credentials ----------------------------------------------------------------------------------


def credentials_aad(tenant_id: uuid.UUID, source_id: uuid.UUID) -> bytes:
    """The associated data of a source's sealed credentials: they open for that source only."""
    return f"source-credentials:{tenant_id}:{source_id}".encode()


def seal_credentials(box: SecretBox, tenant_id: uuid.UUID, source_id: uuid.UUID, credentials: Any) -> dict[str, Any]:
    """The stored form of `credentials` (a JSON object of texts); Invalid on `credentials`."""
    if not isinstance(credentials, dict) or not credentials:
        raise Invalid("credentials must be a non-empty JSON object.", field="credentials")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in credentials.items()):
        raise Invalid("credentials must map names to texts.", field="credentials")
    plain = json.dumps(credentials, separators=(",", ":"), sort_keys=True).encode()
    if len(plain) > CREDENTIALS_MAX_BYTES:
        raise Invalid(f"credentials take at most {CREDENTIALS_MAX_BYTES} bytes.", field="credentials")
    return {"v": _ENVELOPE_VERSION, "sealed": box.encrypt(plain, credentials_aad(tenant_id, source_id))}


def open_credentials(box: SecretBox, source: ExternalOpportunitySource) -> dict[str, str]:
    """The credentials of `source` in the clear (for the poller; {} for a source without)."""
    stored = source.api_credentials_encrypted or {}
    token = stored.get("sealed") if isinstance(stored, dict) else None
    if not token:
        return {}
    plain = box.decrypt(token, credentials_aad(source.tenant_id, source.id))
    opened: dict[str, str] = json.loads(plain)
    return opened


# -- sources --------------------------------------------------------------------------------------


async def create_source(
    uow: UnitOfWork, box: SecretBox, values: Mapping[str, Any], credentials: Any = None
) -> uuid.UUID:
    """A new external source; `credentials` are required unless it authenticates with `none`."""
    values = {k: v for k, v in values.items() if v is not None and k in _SOURCE_FIELDS}
    for required in ("source_name", "api_endpoint", "api_version", "authentication_type"):
        if not str(values.get(required) or "").strip():
            raise Invalid(f"{required.replace('_', ' ')} must not be empty.", field=required)
    await validate(uow, "external_opportunity_sources", values)
    _check_source(values)
    source = ExternalOpportunitySource(id=uuid.uuid4(), tenant_id=uow.tenant_id, created_by=uow.actor_id)
    source.api_credentials_encrypted = _credentials_for(
        box, uow.tenant_id, source.id, values["authentication_type"], credentials
    )
    uow.assign(source, values)
    uow.add(source)
    await uow.flush()
    return source.id


async def update_source(
    uow: UnitOfWork,
    box: SecretBox,
    source_id: uuid.UUID,
    seen: Any,
    changes: Mapping[str, Any],
    credentials: Any = None,
    *,
    replace_credentials: bool = False,
) -> uuid.UUID:
    """Change a source read at `seen`; with `replace_credentials`, its credentials become
    `credentials` (null: none, allowed only for authentication type `none`)."""
    source = await uow.lock(ExternalOpportunitySource, source_id, updated_at=seen, what="external source")
    if source_id == manual_source_id(uow.tenant_id):
        raise Invalid('The "Manual entry" source cannot be changed.', field="id")
    values = {k: v for k, v in changes.items() if k in _SOURCE_FIELDS}
    await validate(uow, "external_opportunity_sources", values, row=source)
    _check_source(values)
    kind = values.get("authentication_type", source.authentication_type)
    if replace_credentials:
        source.api_credentials_encrypted = _credentials_for(box, uow.tenant_id, source.id, kind, credentials)
    elif kind != source.authentication_type:
        if kind != "none":
            raise Invalid("A change of authentication type needs new credentials.", field="credentials")
        source.api_credentials_encrypted = {}
    uow.assign(source, values)
    await uow.flush()
    return source.id


def _credentials_for(
    box: SecretBox, tenant_id: uuid.UUID, source_id: uuid.UUID, kind: str, credentials: Any
) -> dict[str, Any]:
    if kind == "none":
        if credentials:
            raise Invalid("A source authenticating with none takes no credentials.", field="credentials")
        return {}
    if credentials is None:
        raise Invalid(f"A source authenticating with {kind} needs credentials.", field="credentials")
    return seal_credentials(box, tenant_id, source_id, credentials)


def _check_source(values: Mapping[str, Any]) -> None:
    for name in ("source_name", "api_endpoint", "api_version"):
        if name in values and not str(values[name]).strip():
            raise Invalid(f"{name.replace('_', ' ')} must not be empty.", field=name)
    kind = values.get("authentication_type")
    if kind is not None and kind not in AUTHENTICATION_TYPES:
        raise Invalid(
            f"authentication type must be one of {', '.join(sorted(AUTHENTICATION_TYPES))}.",
            field="authentication_type",
        )
    endpoint = values.get("api_endpoint")
    if endpoint is not None:
        try:
            parts = urlsplit(endpoint)
        except ValueError:
            parts = None
        if parts is None or parts.scheme != "https" or not parts.hostname:
            raise Invalid("api endpoint must be an https:// URL.", field="api_endpoint")
        if parts.username or parts.password or redact_text(endpoint) != endpoint:
            # In the URL they would be stored and audited in the clear: they go in `credentials`.
            raise Invalid("api endpoint must not hold credentials: give them as credentials.", field="api_endpoint")


# -- polling configurations -----------------------------------------------------------------------


async def create_polling(uow: UnitOfWork, values: Mapping[str, Any]) -> uuid.UUID:
    """A polling schedule for an open project on an active source (first poll due now if active)."""
    values = {k: v for k, v in values.items() if v is not None}
    project_id = values.pop("opportunity_project_id")
    source_id = values.pop("external_source_id")
    project = await uow.find(OpportunityProject, project_id, what="opportunity project", field="opportunity_project_id")
    if project.archived_at is not None:
        raise Invalid("The opportunity project is archived: it is not polled.", field="opportunity_project_id")
    source = await uow.find(ExternalOpportunitySource, source_id, what="external source", field="external_source_id")
    if source_id == manual_source_id(uow.tenant_id) or not source.is_active:
        raise Invalid("Only an active external source can be polled.", field="external_source_id")
    values = {k: v for k, v in values.items() if k in _POLLING_FIELDS}
    await validate(uow, "polling_configurations", values)
    _check_polling(values)
    polling = PollingConfiguration(
        tenant_id=uow.tenant_id, opportunity_project_id=project_id, external_source_id=source_id,
        created_by=uow.actor_id,
    )
    uow.assign(polling, values)
    if values.get("is_active", True):
        polling.next_poll_timestamp = func.now()
    uow.add(polling)
    await uow.flush()
    return polling.id


async def update_polling(uow: UnitOfWork, polling_id: uuid.UUID, seen: Any, changes: Mapping[str, Any]) -> uuid.UUID:
    """Change a polling schedule read at `seen`; deactivating it unschedules its next poll."""
    polling = await uow.lock(PollingConfiguration, polling_id, updated_at=seen, what="polling configuration")
    values = {k: v for k, v in changes.items() if k in _POLLING_FIELDS}
    await validate(uow, "polling_configurations", values, row=polling)
    _check_polling(values)
    if uow.assign(polling, values) and "is_active" in values:
        polling.next_poll_timestamp = func.now() if values["is_active"] else None
    await uow.flush()
    return polling.id


async def delete_polling(uow: UnitOfWork, polling_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Delete a polling schedule read at `seen` (its DELETE audit row keeps every column)."""
    polling = await uow.lock(PollingConfiguration, polling_id, updated_at=seen, what="polling configuration")
    await uow.delete(polling)
    await uow.flush()
    return polling_id


def _check_polling(values: dict[str, Any]) -> None:
    if values.get("priority_level") is not None:
        values["priority_level"] = PollingPriority(values["priority_level"]).value


# -- external data changes ------------------------------------------------------------------------


async def acknowledge_change(uow: UnitOfWork, change_id: uuid.UUID, notes: str | None) -> uuid.UUID:
    """Acknowledge a detected change once, with optional notes; CONFLICT if it already is."""
    change = await uow.lock(ExternalDataChange, change_id, what="external data change")
    if change.acknowledged_at is not None:
        raise Conflict("The change was already acknowledged.", field="id")
    notes = notes.strip() if notes is not None else None
    uow.assign(change, {"acknowledged_by": uow.actor_id, "acknowledgment_notes": notes or None})
    change.acknowledged_at = func.now()
    uow.label(change, "external_data_change.acknowledged", "external data change acknowledged")
    await uow.flush()
    return change.id
