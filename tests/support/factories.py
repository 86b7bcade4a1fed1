"""Row factories: `make(conn, "table", tenant, **overrides)` inserts one row with sensible defaults.

They write SQL against table and column names (the seed's spec), so they exercise the database
itself, not the ORM. Each default is a function of a running counter, so rows never collide.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from models.audit_chain import AUDIT_TABLE_NAMES, audit_table
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef

__all__ = ["TENANT_TABLES", "make", "populate_every_table"]

_counter = itertools.count(1)

Defaults = Callable[[TenantRef, dict[str, Any], int], dict[str, Any]]


def _j(value: Any) -> str:
    return json.dumps(value)


# Default column values per table; `refs` holds ids of rows made earlier (see populate_every_table).
_DEFAULTS: dict[str, Defaults] = {
    "tenant_configurations": lambda t, r, n: {
        "config_key": f"key_{n}",
        "config_value": _j({"n": n}),
        "config_type": "json",
    },
    "users": lambda t, r, n: {"email": f"user{n}@example.test", "first_name": "Ada", "last_name": f"User{n}"},
    "roles": lambda t, r, n: {"name": f"Role {n}"},
    "user_roles": lambda t, r, n: {
        "user_id": r["users"],
        "role_id": r["roles"],
        "assigned_by": t.system_user_id,
    },
    "user_sessions": lambda t, r, n: {"user_id": r["users"], "session_token_hash": uuid.uuid4().hex * 2},
    "external_opportunity_sources": lambda t, r, n: {
        "source_name": f"Source {n}",
        "api_endpoint": "https://api.example.test/v2",
        "api_version": "v2",
        "authentication_type": "api_key",
        "api_credentials_encrypted": _j({}),
        "created_by": t.system_user_id,
    },
    "opportunity_projects": lambda t, r, n: {
        "project_name": f"Project {n}",
        "external_source_id": r.get("external_opportunity_sources", t.manual_source_id),
        "external_opportunity_id": f"EXT-{n}",
        "created_by": t.system_user_id,
    },
    "external_opportunity_data": lambda t, r, n: {
        "opportunity_project_id": r["opportunity_projects"],
        "data_snapshot_timestamp": datetime(2026, 1, 1, tzinfo=UTC),
        "version_number": 1,
        "raw_json_data": _j({"noticeId": f"N{n}"}),
    },
    "opportunity_project_overrides": lambda t, r, n: {
        "opportunity_project_id": r["opportunity_projects"],
        "field_name": f"title_{n}",
        "override_value": _j("Overridden"),
        "created_by": t.system_user_id,
    },
    "organizations": lambda t, r, n: {"name": f"Organization {n}", "created_by": t.system_user_id},
    "contacts": lambda t, r, n: {"first_name": "Grace", "last_name": f"Contact{n}", "created_by": t.system_user_id},
    "opportunity_project_contacts": lambda t, r, n: {
        "opportunity_project_id": r["opportunity_projects"],
        "contact_id": r["contacts"],
        # Unique per (project, contact, relationship_type): a distinct type lets one pair be linked twice.
        "relationship_type": f"relationship_{n}",
        "created_by": t.system_user_id,
    },
    "document_categories": lambda t, r, n: {"name": f"Category {n}"},
    "documents": lambda t, r, n: {
        "name": f"Document {n}",
        "original_filename": f"doc{n}.pdf",
        "mime_type": "application/pdf",
        "file_size_bytes": 1024,
        "storage_key": f"docs/{n}.pdf",
        "uploaded_by": t.system_user_id,
    },
    "document_associations": lambda t, r, n: {
        "document_id": r["documents"],
        "entity_type": "opportunity_project",
        "entity_id": r["opportunity_projects"],
        "association_type": f"related_{n}",
        "created_by": t.system_user_id,
    },
    "document_access_logs": lambda t, r, n: {
        "document_id": r["documents"],
        "user_id": t.system_user_id,
        "access_type": "view",
    },
    "document_readers": lambda t, r, n: {
        "document_id": r["documents"],
        "user_id": r.get("users", t.system_user_id),
        "added_by": t.system_user_id,
    },
    "document_extraction_jobs": lambda t, r, n: {"document_id": r["documents"]},
    "document_text_chunks": lambda t, r, n: {
        "document_id": r["documents"],
        "chunk_index": n,
        "start_offset": 0,
        "content": f"Extracted text {n}",
    },
    "activities": lambda t, r, n: {
        "entity_type": "opportunity_project",
        "entity_id": r["opportunity_projects"],
        "activity_type": "meeting",
        "subject": f"Activity {n}",
        "created_by": t.system_user_id,
    },
    "activity_participants": lambda t, r, n: {
        "activity_id": r["activities"],
        "participant_type": "user",
        "participant_id": t.system_user_id,
        "added_by": t.system_user_id,
    },
    "capture_plans": lambda t, r, n: {
        "opportunity_project_id": r["opportunity_projects"],
        "plan_name": f"Plan {n}",
        "created_by": t.system_user_id,
    },
    "proposals": lambda t, r, n: {
        "opportunity_project_id": r["opportunity_projects"],
        "proposal_title": f"Proposal {n}",
        "proposal_manager": t.system_user_id,
        "created_by": t.system_user_id,
    },
    "audit_logs": lambda t, r, n: {"action_type": "test", "entity_type": "opportunity_project"},
    "change_history": lambda t, r, n: {
        "entity_type": "opportunity_project",
        "entity_id": r["opportunity_projects"],
        "field_name": "title",
        "change_source": "user",
    },
    "permission_audit": lambda t, r, n: {
        "user_id": t.system_user_id,
        "resource_type": "opportunity_project",
        "permission_checked": "opportunity:read",
        "permission_granted": False,
    },
    "polling_configurations": lambda t, r, n: {
        "opportunity_project_id": r["opportunity_projects"],
        "external_source_id": r.get("external_opportunity_sources", t.manual_source_id),
        "created_by": t.system_user_id,
    },
    "api_integration_logs": lambda t, r, n: {
        "external_source_id": r.get("external_opportunity_sources", t.manual_source_id),
        "endpoint_called": "/opportunities",
        "http_method": "GET",
        "success": True,
    },
    "external_data_changes": lambda t, r, n: {
        "opportunity_project_id": r["opportunity_projects"],
        "changed_fields": _j(["title"]),
        "change_type": "updated",
        "external_source_id": r.get("external_opportunity_sources", t.manual_source_id),
    },
    "mfa_recovery_codes": lambda t, r, n: {"user_id": r["users"], "code_hash": f"{n:064x}"},
    "user_identities": lambda t, r, n: {
        "user_id": r["users"],
        "provider": "oidc",
        "issuer": "https://idp.example.test",
        "subject": f"sub-{n}",
    },
    "account_tokens": lambda t, r, n: {
        "user_id": r["users"],
        "purpose": "invitation",
        "token_hash": uuid.uuid4().hex * 2,
        "expires_at": datetime(2030, 1, 1, tzinfo=UTC),
    },
    "api_keys": lambda t, r, n: {
        "name": f"Key {n}",
        "key_prefix": f"gwm_{n}",
        "key_hash": uuid.uuid4().hex * 2,
        "role_id": r["roles"],
        "expires_at": datetime(2030, 1, 1, tzinfo=UTC),
        "created_by": t.system_user_id,
    },
    "saml_authn_requests": lambda t, r, n: {
        "request_id": f"ONELOGIN_{n}",
        "expires_at": datetime(2030, 1, 1, tzinfo=UTC),
    },
    "saml_assertions_seen": lambda t, r, n: {
        "assertion_id": f"_assertion{n}",
        "not_on_or_after": datetime(2030, 1, 1, tzinfo=UTC),
    },
    "idempotency_keys": lambda t, r, n: {
        "user_id": r["users"],
        "key": f"key-{n}",
        "mutation": "opportunityProjectCreate",
        "request_hash": f"{n:064x}",
        "result_type": "opportunity_project",
        "result_id": r["opportunity_projects"],
        "expires_at": datetime(2030, 1, 1, tzinfo=UTC),
    },
    "saved_searches": lambda t, r, n: {
        "name": f"Search {n}",
        "external_source_id": r.get("external_opportunity_sources", t.manual_source_id),
        "created_by": t.system_user_id,
    },
    "sync_schedules": lambda t, r, n: {
        "external_source_id": r.get("external_opportunity_sources", t.manual_source_id),
        "saved_search_id": r.get("saved_searches"),
    },
    "sync_key_budgets": lambda t, r, n: {"key_fingerprint": f"{n:064x}"},
    "saved_search_candidates": lambda t, r, n: {
        "saved_search_id": r.get("saved_searches"),
        "lineage_key": f"SOL-{n}",
        "notice_id": f"notice{n}",
        "raw_json_data": _j({"noticeId": f"notice{n}"}),
    },
    "notifications": lambda t, r, n: {
        "user_id": r["users"],
        "kind": "external_data_change",
        "impact_level": "high",
        "title": f"Notice amended {n}",
        "entity_type": "opportunity_project",
        "entity_id": r.get("opportunity_projects", uuid.uuid4()),
        "opportunity_project_id": r.get("opportunity_projects"),
    },
    "notification_preferences": lambda t, r, n: {"user_id": r["users"]},
    "notification_sends": lambda t, r, n: {"user_id": r["users"], "kind": "digest", "key": f"2026-01-{n % 28 + 1:02d}"},
    "trusted_documents": lambda t, r, n: {
        "sha256_hash": f"{n:064x}",
        "document": f"query Trusted{n} {{ __typename }}",
        "registered_by": t.system_user_id,
    },
    "persisted_queries": lambda t, r, n: {
        "sha256_hash": f"{n:064x}",
        "document": f"query Persisted{n} {{ __typename }}",
    },
}

# Every table that carries tenant_id, in an order where parents come first.
TENANT_TABLES: tuple[str, ...] = tuple(_DEFAULTS)

_JSON_COLUMNS = {
    "config_value",
    "api_credentials_encrypted",
    "raw_json_data",
    "override_value",
    "changed_fields",
}


async def make(
    conn: AsyncConnection,
    table: str,
    tenant: TenantRef,
    refs: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Row[Any]:
    """Insert one row into `table` for `tenant` and return it (RETURNING *)."""
    n = next(_counter)
    values = {"tenant_id": tenant.id, **_DEFAULTS[table](tenant, dict(refs or {}), n), **overrides}
    if table == "documents" and values.get("parent_document_id") is not None and "version_number" not in values:
        # A later version of its chain: one current version per chain, each number once (migration 0013).
        values = {"is_current_version": False, "version_number": n + 1, **values}
    if table in AUDIT_TABLE_NAMES:
        return await _append(conn, table, values)
    cols = ", ".join(values)
    params = ", ".join(
        f"CAST(:{k} AS jsonb)" if k in _JSON_COLUMNS and isinstance(values[k], str) else f":{k}" for k in values
    )
    result = await conn.execute(text(f"INSERT INTO {table} ({cols}) VALUES ({params}) RETURNING *"), values)
    return result.one()


async def _append(conn: AsyncConnection, table: str, values: dict[str, Any]) -> Row[Any]:
    """Audit rows enter only through the audit chain (the database refuses any other insert)."""
    columns = audit_table(table).c
    # JSON given as text, as the SQL path above takes it.
    row = {k: json.loads(v) if isinstance(v, str) and isinstance(columns[k].type, JSONB) else v
           for k, v in values.items()}
    (written,) = await TEST_AUDIT_CHAIN.append(conn, audit_table(table), [row])
    result = await conn.execute(text(f"SELECT * FROM {table} WHERE id = :id"), {"id": written["id"]})
    return result.one()


async def populate_every_table(conn: AsyncConnection, tenant: TenantRef) -> dict[str, uuid.UUID]:
    """One row in every tenant-owned table for `tenant` (its tenant must be set on `conn`)."""
    refs: dict[str, Any] = {}
    for table in TENANT_TABLES:
        row = await make(conn, table, tenant, refs)
        refs[table] = getattr(row, "id", None)
    return refs
