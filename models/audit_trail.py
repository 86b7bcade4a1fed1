"""The audit trail of writes: one flush hook turns every change of an audited entity into evidence.

Every write of business data goes through a unit of work (models/unit_of_work.py), whose ORM
session is an `AuditedSession`. Its flush hook, not the code that made the change, writes:

- one `audit_logs` row per inserted, updated or deleted row of an audited model: who (user,
  session, IP, user agent), from which request (request id, endpoint, HTTP method, GraphQL
  operation and field), with which permission, what (entity type and id, action, changed fields)
  and the values before and after;
- one `change_history` row per changed field (old and new value as JSON, source, impact level),
  every row of one unit of work sharing its `change_batch_id`;

inside the same transaction as the change, appended through the audit chain
(models/audit_chain.py), so the change and its evidence commit together or not at all.

The values recorded are the database's, not the Python objects': before the flush the hook reads
the rows about to be updated or deleted (`SELECT ... FOR UPDATE`, which also pins them until the
commit); after it, the rows inserted or updated. So numeric scale, trigger-set `updated_at`,
server defaults and jsonb normalisation are recorded as stored, and an object loaded before a
concurrent change cannot make the "before" values lie. Values are encoded as the API writes them
(schema/scalars.py): UUIDs as text, instants as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, dates as
`YYYY-MM-DD`, decimals and 64-bit integers as strings, jsonb as stored. Secret columns never
appear with their value (`Redaction`): the field name is kept with the value "[redacted]", and
secret-looking keys inside JSON values are redacted too.

The unit of work's single-row UPDATE or INSERT (models/unit_of_work.py `_flush_one_update`,
`_flush_one_insert`) stands for a flush of one object: it runs with the trail marked as flushing
(`flushing`), and `record_write` records it through the same code as `after_flush`.

Nothing can write an audited table around the hook through a unit of work: `do_orm_execute`
refuses ORM bulk INSERT/UPDATE/DELETE statements on audited models (they skip the flush), and a
listener on the unit of work's connection refuses Core and textual INSERT/UPDATE/DELETE on their
tables outside a flush.

A change may carry its meaning: `AuditTrail.label(obj, action, description)` makes the audit row
of that object's change say e.g. `auth.role.created` instead of CREATE (change_history keeps the
plain category). Changes of tables the hook does not audit (sessions, API keys, recovery codes,
account tokens, linked identities) queue one event row each with `AuditTrail.event`; the unit of
work appends them after its last flush, before COMMIT (`write_events`), so they commit with the
change. `in_flush(connection)` tells whether a connection is a unit of work's inside its flush:
the test suite's listener (tests/support/dml_guard.py) uses it to find audited writes made
anywhere else.

Which models are audited is `AUDITED`; `NOT_AUDITED` lists the rest with the reason (a test keeps
every mapped model in one of the two). Operational columns of audited models (login counters,
polling state) are `OPERATIONAL_COLUMNS`: a change to them alone is not recorded. docs/decisions.md
(W10-W15) has the reasoning.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import functools
import ipaddress
import re
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Table, event, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session, UOWTransaction, object_mapper
from sqlalchemy.orm import class_mapper as object_mapper_of
from sqlalchemy.orm.exc import UnmappedColumnError
from sqlalchemy.orm.session import ORMExecuteState
from sqlalchemy.sql.dml import Insert, Update, UpdateBase
from sqlalchemy.sql.elements import TextClause

from models.activities import Activity, ActivityParticipant
from models.audit_chain import AuditChain
from models.audit_log import AuditLog, ChangeHistory, PermissionAudit
from models.base import Base
from models.capture import CapturePlan, Proposal
from models.credentials import (
    AccountToken,
    ApiKey,
    MfaRecoveryCode,
    SamlAssertionSeen,
    SamlAuthnRequest,
    UserIdentity,
)
from models.crm import Contact, Organization
from models.document_readers import DocumentReader
from models.document_text import DocumentExtractionJob, DocumentTextChunk
from models.documents import Document, DocumentAccessLog, DocumentAssociation, DocumentCategory
from models.enums import ChangeSource, EntityType, ImpactLevel, RiskLevel
from models.external_data import (
    ApiIntegrationLog,
    ExternalDataChange,
    ExternalOpportunityData,
    ExternalOpportunitySource,
    PollingConfiguration,
)
from models.idempotency import IdempotencyKey
from models.identity import Role, User, UserRole, UserSession
from models.notifications import Notification, NotificationPreference, NotificationSend
from models.opportunities import OpportunityProject, OpportunityProjectContact, OpportunityProjectOverride
from models.sync import SavedSearch, SavedSearchCandidate, SyncKeyBudget, SyncSchedule
from models.tenancy import Tenant, TenantConfiguration
from models.trusted_documents import PersistedQuery, TrustedDocument

__all__ = [
    "AUDITED",
    "NOT_AUDITED",
    "OPERATIONAL_COLUMNS",
    "REDACTED",
    "STORED_SECRETS",
    "Action",
    "AuditContext",
    "AuditTrail",
    "AuditedSession",
    "BypassRefused",
    "Redaction",
    "TrailError",
    "audited_dml_table",
    "in_flush",
    "wire_value",
]

REDACTED = "[redacted]"

#: Every stored secret column (hashes, sealed secrets): an audit row records that it changed,
#: never its value. The API's loaders never read them either (resolvers.common.loaders).
STORED_SECRETS: frozenset[tuple[str, str]] = frozenset(
    {
        ("users", "password_hash"),
        ("users", "mfa_secret_encrypted"),
        ("user_sessions", "session_token_hash"),
        ("external_opportunity_sources", "api_credentials_encrypted"),
        ("api_keys", "key_hash"),
        ("mfa_recovery_codes", "code_hash"),
        ("account_tokens", "token_hash"),
    }
)

#: Models whose every insert, update and delete the hook records, with their entity type.
AUDITED: Mapping[type[Base], EntityType] = {
    Tenant: EntityType.TENANT,
    TenantConfiguration: EntityType.TENANT_CONFIGURATION,
    User: EntityType.USER,
    Role: EntityType.ROLE,
    UserRole: EntityType.USER_ROLE,
    ExternalOpportunitySource: EntityType.EXTERNAL_OPPORTUNITY_SOURCE,
    PollingConfiguration: EntityType.POLLING_CONFIGURATION,
    ExternalDataChange: EntityType.EXTERNAL_DATA_CHANGE,
    OpportunityProject: EntityType.OPPORTUNITY_PROJECT,
    OpportunityProjectOverride: EntityType.OPPORTUNITY_PROJECT_OVERRIDE,
    OpportunityProjectContact: EntityType.OPPORTUNITY_PROJECT_CONTACT,
    Organization: EntityType.ORGANIZATION,
    Contact: EntityType.CONTACT,
    DocumentCategory: EntityType.DOCUMENT_CATEGORY,
    Document: EntityType.DOCUMENT,
    DocumentAssociation: EntityType.DOCUMENT_ASSOCIATION,
    Activity: EntityType.ACTIVITY,
    ActivityParticipant: EntityType.ACTIVITY_PARTICIPANT,
    CapturePlan: EntityType.CAPTURE_PLAN,
    Proposal: EntityType.PROPOSAL,
    SavedSearch: EntityType.SAVED_SEARCH,
}

#: Models the hook does not record, and why (docs/decisions.md W11).
NOT_AUDITED: Mapping[type, str] = {
    AuditLog: "the audit trail itself (append-only, chained)",
    ChangeHistory: "the audit trail itself (append-only, chained)",
    PermissionAudit: "the audit trail itself (append-only, chained)",
    UserSession: "operational: session activity; its ends are event rows in the same transaction",
    MfaRecoveryCode: "secret material; issue and use are event rows in the same transaction",
    UserIdentity: "linking an identity is an event row in the same transaction",
    AccountToken: "secret material; invitations and resets are event rows in the same transaction",
    ApiKey: "secret material; creation, revocation and use are event rows in the same transaction",
    SamlAuthnRequest: "operational: SAML replay protection",
    SamlAssertionSeen: "operational: SAML replay protection",
    ApiIntegrationLog: "operational: itself a log of external calls",
    DocumentAccessLog: "itself an access log",
    DocumentExtractionJob: (
        "operational: the extraction's lease and attempts; its outcome is an event row of the document"
    ),
    DocumentTextChunk: "derived from the stored object by the extraction job, written with the document's status",
    DocumentReader: "adding or removing a named reader is an event row of the document's trail in the same transaction",
    ExternalOpportunityData: "append-only versions of the source's data; changes are external_data_changes",
    IdempotencyKey: "operational: retry bookkeeping",
    TrustedDocument: "registering and unregistering a document are event rows in the same transaction (D32)",
    PersistedQuery: "operational: a cache of documents by hash, not a grant (D32)",
    SyncSchedule: "operational: when the sync workers poll next, their leases and error state",
    SyncKeyBudget: "operational: call counters of an API key (its limits are set by the operator's CLI)",
    Notification: (
        "a copy, per recipient, of an audited event (external data change, activity assignment) or a"
        " reminder; marking read is an event row in the same transaction (docs/decisions.md D20)"
    ),
    NotificationPreference: "a user's own inbox setting; each change is an event row with its values (D20)",
    NotificationSend: "operational: which reminders and digests were produced, so each is produced once",
    SavedSearchCandidate: (
        "search results refreshed by the sync job; dismissing or tracking one is an event row in the same"
        " transaction, and the project it becomes is audited"
    ),
}

#: Columns of audited models that change as a side effect of operation (counters, polling and
#: sync state): a flush that changes only these writes no audit row, and they get no
#: change_history rows; changed together with other columns, they show in before/after values.
OPERATIONAL_COLUMNS: Mapping[str, frozenset[str]] = {
    "users": frozenset(
        {"last_login_at", "failed_login_attempts", "failed_login_window_started_at", "locked_until", "totp_last_step"}
    ),
    "external_opportunity_sources": frozenset(
        {"connection_status", "last_successful_call", "last_error_message", "consecutive_errors"}
    ),
    # Written by the extraction job (sync/extraction.py), which records its outcome as an event row
    # (search_vector: generated from the text).
    "documents": frozenset(
        {"processing_status", "processing_error", "extracted_text", "content_preview", "page_count", "search_vector"}
    ),
    "polling_configurations": frozenset(
        {
            "last_poll_timestamp",
            "next_poll_timestamp",
            "consecutive_errors",
            "average_response_time_ms",
            "success_rate_percentage",
            "claimed_until",
            "claimed_by",
        }
    ),
}

# Bookkeeping columns: part of before/after values, never a change_history row of their own.
_BOOKKEEPING = frozenset({"id", "tenant_id", "created_at", "updated_at"})

# How much a change of a field matters (change_history.change_impact_level); others are LOW.
_FIELD_IMPACT: Mapping[tuple[str, str], ImpactLevel] = {
    ("opportunity_projects", "project_status"): ImpactLevel.HIGH,
    ("opportunity_projects", "pipeline_stage"): ImpactLevel.MEDIUM,
    ("opportunity_projects", "priority_level"): ImpactLevel.MEDIUM,
    ("opportunity_projects", "win_probability_score"): ImpactLevel.MEDIUM,
    ("opportunity_projects", "strategic_value_score"): ImpactLevel.MEDIUM,
    ("opportunity_projects", "pursuit_health_score"): ImpactLevel.MEDIUM,
    ("opportunity_projects", "assigned_capture_manager"): ImpactLevel.MEDIUM,
    ("opportunity_projects", "assigned_proposal_manager"): ImpactLevel.MEDIUM,
    ("opportunity_projects", "archived_at"): ImpactLevel.MEDIUM,
    ("opportunity_project_overrides", "override_value"): ImpactLevel.MEDIUM,
    ("opportunity_project_overrides", "is_active"): ImpactLevel.MEDIUM,
    ("capture_plans", "go_no_go_decision"): ImpactLevel.HIGH,
    ("capture_plans", "status"): ImpactLevel.MEDIUM,
    ("capture_plans", "decision_date"): ImpactLevel.MEDIUM,
    ("capture_plans", "archived_at"): ImpactLevel.MEDIUM,
    ("proposals", "status"): ImpactLevel.MEDIUM,
    ("proposals", "archived_at"): ImpactLevel.MEDIUM,
}

# Security-relevant entities: their changes are reviewed first (audit_logs.risk_level).
_HIGH_RISK = frozenset(
    {
        EntityType.TENANT,
        EntityType.TENANT_CONFIGURATION,
        EntityType.USER,
        EntityType.ROLE,
        EntityType.USER_ROLE,
        EntityType.EXTERNAL_OPPORTUNITY_SOURCE,
    }
)

_AUDITED_TABLES: Mapping[str, type[Base]] = {model.__tablename__: model for model in AUDITED}
_DML_TEXT = re.compile(
    r"\b(?:insert\s+into|update|delete\s+from)\s+(?:only\s+)?(?:public\.)?\"?("
    + "|".join(sorted(_AUDITED_TABLES, key=len, reverse=True))
    + r")\b",
    re.IGNORECASE,
)
_DESCRIPTION_LENGTH = 500
_STATE_KEY = "gwm.audit_trail"


class Action(enum.StrEnum):
    """audit_logs.action_type of the hook's rows (change_history.change_category in lower case)."""

    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    ARCHIVE = "ARCHIVE"
    RESTORE = "RESTORE"
    DEACTIVATE = "DEACTIVATE"
    REACTIVATE = "REACTIVATE"


class TrailError(RuntimeError):
    """The hook cannot record a change as required (a bug: the write is refused, never unaudited)."""


class BypassRefused(TrailError):
    """A statement would write an audited table without going through the flush hook."""


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who writes, from where, under which permission: copied onto every row the hook writes.

    `change_batch_id` groups the change_history rows of one unit of work (one transaction).
    """

    tenant_id: uuid.UUID
    user_id: uuid.UUID | None
    change_batch_id: uuid.UUID = field(default_factory=uuid.uuid4)
    session_id: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    endpoint: str | None = None
    http_method: str | None = None
    operation_name: str | None = None
    field_name: str | None = None
    permission: str | None = None
    change_source: ChangeSource = ChangeSource.USER
    system_process: str | None = None
    change_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Redaction:
    """What never reaches an audit row: whole secret columns, and secret keys inside JSON values.

    `secret_columns` holds (table, column) pairs; `redact_json` returns a copy of a mapping with
    secret-looking keys' values replaced (the caller's policy, e.g. auth.audit.redact).
    """

    secret_columns: frozenset[tuple[str, str]]
    redact_json: Callable[[Mapping[str, Any]], Mapping[str, Any] | None]

    def value(self, table: str, column: str, value: Any) -> Any:
        if (table, column) in self.secret_columns:
            return None if value is None else REDACTED
        return self._json(value)

    def _json(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            redacted = self.redact_json(value) or {}
            return {k: self._json(v) for k, v in redacted.items()}
        if isinstance(value, list):
            return [self._json(v) for v in value]
        return value


def wire_value(value: Any, column_type: Any = None) -> Any:
    """A column value as JSON, in the API's wire formats (schema/scalars.py)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        return wire_value(value.value)
    if isinstance(value, int):
        return str(value) if isinstance(column_type, BigInteger) else value
    if isinstance(value, float):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise TrailError("a naive datetime cannot be recorded")
        return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): wire_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [wire_value(v) for v in value]
    raise TrailError(f"no JSON form for a {type(value).__name__} value")


@dataclass(slots=True)
class _Change:
    """One audited row changed by one flush: its stored values before and after (None: absent)."""

    model: type
    table: Table
    entity_id: uuid.UUID
    deleted: bool = False
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    obj: Any = None


@dataclass(slots=True)
class AuditTrail:
    """The hook's state for one session (one unit of work): its context and what it has recorded."""

    context: AuditContext
    chain: AuditChain
    redaction: Redaction
    # (entity type, id) of every audited row changed so far, in order, without repeats.
    entities: list[tuple[str, uuid.UUID]] = field(default_factory=list)
    audit_rows: int = 0
    history_rows: int = 0
    _seen: set[tuple[str, uuid.UUID]] = field(default_factory=set)
    _pending: dict[tuple[str, uuid.UUID], _Change] = field(default_factory=dict)
    _flushing: bool = False
    # id(obj) -> (obj, action name, description): the meaning of a change (`label`).
    _labels: dict[int, tuple[Any, str, str | None]] = field(default_factory=dict)
    # Event rows (`event`) waiting for `write_events`.
    _events: list[dict[str, Any]] = field(default_factory=list)
    # (table, id) -> the row's stored values as this transaction last read them while holding its
    # row lock (the unit of work's `lock`, or the read-back after a flush that wrote it): the
    # "before" of its next change, with no second read. Forgotten whenever a statement outside the
    # flush, or a flush deleting rows, may have changed rows behind the session (foreign-key actions).
    _known: dict[tuple[str, uuid.UUID], dict[str, Any]] = field(default_factory=dict)
    # `defer` (the unit of work's `defer_audit_rows`): the audit and history rows of every flush wait
    # in `_queued` (audit_logs rows, change_history rows) until `append_queued` appends them all in
    # two round trips, the second carrying the batch's notification. `announced` once it did: the
    # batch is complete, and a later change of an entity the notification does not name is refused.
    defer: bool = False
    announced: bool = False
    _queued: tuple[list[dict[str, Any]], list[dict[str, Any]]] = field(default_factory=lambda: ([], []))
    # (table, id) -> every column of a row the flush inserted or updated, as its statement returned
    # them (`guard` makes the flush's INSERT and UPDATE of an audited table return every column): the
    # "after" of its change without a read-back. Only the current flush's.
    _returned: dict[tuple[str, uuid.UUID], dict[str, Any]] = field(default_factory=dict)

    def install(self, session: Session) -> None:
        """Attach to `session` (an AuditedSession): its flushes are recorded from now on."""
        if not isinstance(session, AuditedSession):
            raise TrailError("the audit trail needs an AuditedSession")
        session.info[_STATE_KEY] = self

    def guard(self, connection: Connection) -> Callable[[], None]:
        """Refuse DML on audited tables on `connection` outside a flush; returns the remover.

        The listeners are the engine's, registered once per engine (`_guard_engine`; listening on each
        unit's connection and removing the listeners again cost about 30 us per unit): they act on a
        connection only while it carries a trail (`_STATE_KEY` in its info)."""
        _guard_engine(connection.engine)
        # Marks the connection as this unit of work's (for the listeners and `in_flush`); the dict is kept
        # so that removing the mark never touches a connection that died (which would reconnect it).
        info = connection.info
        info[_STATE_KEY] = self

        def remove() -> None:
            if info.get(_STATE_KEY) is self:
                del info[_STATE_KEY]

        return remove

    def _before_execute(self, clause: Any, multiparams: Any, params: Any) -> tuple[Any, Any, Any]:
        if self._flushing:
            # The flush's own INSERT or UPDATE of one row of an audited table returns every column as
            # stored (defaults, triggers, numeric scale, jsonb normalisation): its "after", with no
            # read-back. The ORM takes them as the object's loaded values (eager_defaults' path).
            if len(multiparams) <= 1 and isinstance(clause, Insert | Update):
                clause = _returning_every_column(clause)
            return clause, multiparams, params
        if self._known and _may_write(clause):
            self._known.clear()
        table_name = _dml_table(clause)
        if table_name is not None:
            raise BypassRefused(
                f"{table_name} is audited: write it through the unit of work's session (the flush hook), "
                "not with a statement"
            )
        return clause, multiparams, params

    def _after_execute(self, clause: Any, result: Any) -> None:
        if not self._flushing or not isinstance(clause, Insert | Update):
            return
        table = _audited_table(clause)
        rows = getattr(result.context, "returned_default_rows", None)
        if table is None or not rows or len(rows) != 1:
            return
        columns = result.context.compiled.effective_returning
        values = {
            column.name: value
            for column, value in zip(columns, rows[0], strict=True)
            if getattr(column, "table", None) is table
        }
        if len(values) == len(table.columns) and values.get("id") is not None:
            self._returned[(table.name, values["id"])] = values

    def label(self, obj: Any, action: str, description: str | None = None) -> None:
        """Record the change of `obj` under `action` (e.g. `auth.role.created`) instead of the plain
        CREATE/UPDATE/DELETE, with `description` as its operation description."""
        if len(action) > 100:
            raise TrailError("an action name has at most 100 characters")
        self._labels[id(obj)] = (obj, action, description)

    def event(
        self,
        action: str,
        *,
        entity_type: str,
        entity_id: uuid.UUID | None,
        description: str | None = None,
        details: Mapping[str, Any] | None = None,
        risk: RiskLevel = RiskLevel.LOW,
        granted: bool = True,
    ) -> None:
        """Queue one audit_logs row for an event that is not the change of an audited row (an API
        key created, a session revoked); `write_events` appends it in the same transaction."""
        context = self.context
        details_json = None if details is None else self.redaction._json(wire_value(dict(details)))
        text_ = f"{context.field_name or context.system_process or 'write'}: {description or action}"
        self._events.append(
            {
                "user_id": context.user_id,
                "session_id": context.session_id,
                "ip_address": context.ip_address,
                "user_agent": context.user_agent,
                "action_type": action,
                "entity_type": entity_type,
                "entity_id": entity_id,
                "operation_description": text_[:_DESCRIPTION_LENGTH],
                "after_values": details_json,
                "change_reason": None if context.change_reason is None else context.change_reason[:255],
                "access_granted": granted,
                "permission_used": context.permission,
                "risk_level": risk.value,
                "request_id": context.request_id,
                "api_endpoint": context.endpoint,
                "http_method": context.http_method,
            }
        )

    @property
    def events_pending(self) -> bool:
        """Whether event rows wait for `write_events`."""
        return bool(self._events)

    def write_events(self, connection: Connection) -> None:
        """Append the queued event rows (after the last flush, before COMMIT)."""
        rows, self._events = self._events, []
        if rows:
            self.chain.append_sync(connection, AuditLog.__table__, rows)
            self.audit_rows += len(rows)

    def append_queued(self, connection: Connection, notify: tuple[str, str] | None) -> bool:
        """Append the rows `defer` queued (in the order the flushes recorded them), with `notify`
        (channel, payload) sent by the inserting statement; True if it was (there were rows). The batch
        is then announced: rows recorded later are appended by their flush, as without `defer`."""
        logs, history = self._queued
        self._queued = ([], [])
        if not logs and not history:
            return False
        self.chain.append_many_sync(
            connection, [(AuditLog.__table__, logs), (ChangeHistory.__table__, history)], notify=notify
        )
        self.announced = self.announced or notify is not None
        return notify is not None

    async def append_queued_async(self, conn: AsyncConnection, notify: tuple[str, str] | None) -> bool:
        """`append_queued` on an async connection: the same rows and statements, run on the driver's
        connection where they can be (`AuditChain.append_many`)."""
        logs, history = self._queued
        self._queued = ([], [])
        if not logs and not history:
            return False
        await self.chain.append_many(
            conn, [(AuditLog.__table__, logs), (ChangeHistory.__table__, history)], notify=notify
        )
        self.announced = self.announced or notify is not None
        return notify is not None

    def set_reason(self, reason: str | None) -> None:
        """Record `reason` as audit_logs.change_reason of the rows written from now on."""
        self.context = dataclasses.replace(self.context, change_reason=reason)

    # -- the flush -------------------------------------------------------------------------------

    def before_flush(self, session: Session) -> None:
        self._flushing = True
        self._returned.clear()
        pending: dict[tuple[str, uuid.UUID], _Change] = {}
        by_table: dict[str, list[uuid.UUID]] = {}
        deleted = set(session.deleted)
        for obj in [*session.dirty, *deleted]:
            model = type(obj)
            if model not in AUDITED:
                continue
            if obj not in deleted and not session.is_modified(obj, include_collections=False):
                continue
            table: Table = object_mapper(obj).local_table  # type: ignore[assignment]
            entity_id = obj.id
            if entity_id is None:
                raise TrailError(f"a changed {table.name} row without an id")
            pending[(table.name, entity_id)] = _Change(model, table, entity_id, deleted=obj in deleted, obj=obj)
            by_table.setdefault(table.name, []).append(entity_id)
        connection = session.connection()
        for table_name, ids in list(by_table.items()):
            ids = [i for i in ids if not _known_before(pending[(table_name, i)], self._known.get((table_name, i)))]
            if not ids:
                continue
            table = _AUDITED_TABLES[table_name].__table__
            rows = connection.execute(select(table).where(table.c.id.in_(ids)).with_for_update()).mappings()
            for row in rows:
                pending[(table_name, row["id"])].before = dict(row)
        missing = [key for key, change in pending.items() if change.before is None]
        if missing:
            # The row is gone (deleted by another transaction): the write would change nothing.
            raise TrailError(f"{missing[0][0]} row {missing[0][1]} no longer exists")
        self._pending = pending

    def after_flush(self, session: Session) -> None:
        changes = dict(self._pending)
        self._pending = {}
        for obj in session.new:
            model = type(obj)
            if model not in AUDITED:
                continue
            table: Table = object_mapper(obj).local_table  # type: ignore[assignment]
            if obj.id is None:
                raise TrailError(f"an inserted {table.name} row without an id")
            changes[(table.name, obj.id)] = _Change(model, table, obj.id, obj=obj)
        if not changes:
            return
        connection = session.connection()
        written: dict[str, list[uuid.UUID]] = {}
        for (table_name, entity_id), change in changes.items():
            if not change.deleted:
                written.setdefault(table_name, []).append(entity_id)
        returned, self._returned = self._returned, {}
        for table_name, ids in written.items():
            unread: list[uuid.UUID] = []
            for entity_id in ids:
                stored = returned.get((table_name, entity_id))
                if stored is None:
                    unread.append(entity_id)
                else:
                    changes[(table_name, entity_id)].after = stored
            if not unread:
                continue  # every row came back from its own statement
            table = _AUDITED_TABLES[table_name].__table__
            for row in connection.execute(select(table).where(table.c.id.in_(unread))).mappings():
                changes[(table_name, row["id"])].after = dict(row)
        if any(change.deleted for change in changes.values()):
            self._known.clear()  # a delete's foreign-key actions may have changed other rows
        else:
            # Written by this transaction, so locked by it until it ends: still what is stored.
            for key, change in changes.items():
                if change.after is not None:
                    self._known[key] = dict(change.after)
        self._record(connection, list(changes.values()))

    def locked(self, obj: Any) -> None:
        """`obj` was just read from the database with its row locked (FOR UPDATE) by this transaction:
        its loaded values are the row's "before" for the next flush changing it (no second read)."""
        model: Any = type(obj)
        if model not in AUDITED or obj.id is None:
            return
        table_name, columns = _locked_plan(model)
        loaded = obj.__dict__
        row: dict[str, Any] = {}
        for name, key in columns:
            if key is None or key not in loaded:  # unmapped or deferred: read the row at the flush instead
                self._known.pop((table_name, obj.id), None)
                return
            value = loaded[key]
            # A copy: the domain code may change a loaded list or dict in place before the flush.
            row[name] = copy.deepcopy(value) if isinstance(value, list | dict) else value
        self._known[(table_name, obj.id)] = row

    def after_flush_postexec(self) -> None:
        self._flushing = False

    @property
    def flushing(self) -> bool:
        """Inside a flush: audited DML is the flush's own (the unit of work sets it around its single-row
        UPDATE, which stands for a flush)."""
        return self._flushing

    @flushing.setter
    def flushing(self, value: bool) -> None:
        self._flushing = value

    def known_row(self, table_name: str, entity_id: uuid.UUID) -> dict[str, Any] | None:
        """The stored values of a row this transaction holds locked and knows unchanged since it read or
        wrote them (see `_known`), or None."""
        return self._known.get((table_name, entity_id))

    def record_write(
        self, connection: Connection, obj: Any, before: Mapping[str, Any] | None, after: dict[str, Any]
    ) -> None:
        """Record the insert (`before` None) or update of `obj`'s row from `before` (its known row) to
        `after` (every column as the statement returned it), as `after_flush` records a flush's: the same
        audit and history rows."""
        table: Table = object_mapper(obj).local_table  # type: ignore[assignment]
        if obj.id is None:
            raise TrailError(f"an inserted {table.name} row without an id")
        known = None if before is None else dict(before)
        change = _Change(type(obj), table, obj.id, before=known, after=after, obj=obj)
        self._known[(table.name, obj.id)] = dict(after)
        self._record(connection, [change])

    # -- rows --------------------------------------------------------------------------------------

    def _record(self, connection: Connection, changes: list[_Change]) -> None:
        context = self.context
        log_rows: list[dict[str, Any]] = []
        history_rows: list[dict[str, Any]] = []
        for change in changes:
            entity_type = AUDITED[change.model]
            table = change.table
            if change.after is None and not change.deleted:
                raise TrailError(f"{table.name} row {change.entity_id} was written but cannot be read back")
            # Compared unredacted (a changed secret is a change), recorded redacted.
            raw_before = None if change.before is None else _wire_row(table, change.before)
            raw_after = None if change.after is None else _wire_row(table, change.after)
            if raw_before is not None and raw_after is not None:
                changed = [name for name in raw_after if raw_before[name] != raw_after[name]]
                operational = OPERATIONAL_COLUMNS.get(table.name, frozenset()) | {"updated_at"}
                if all(name in operational for name in changed):
                    continue  # nothing but bookkeeping or operational state moved
            else:
                shown = raw_after if raw_after is not None else raw_before
                assert shown is not None
                changed = [name for name, value in shown.items() if value is not None and name not in _BOOKKEEPING]
            before: dict[str, Any] | None
            after: dict[str, Any] | None
            if raw_before is not None and raw_after is not None:
                # An update records its changed columns only: only they are redacted (what `_action` and the
                # history rows read of the rows is among them, or equal before and after).
                redact = self.redaction.value
                before = {name: redact(table.name, name, raw_before[name]) for name in changed}
                after = {name: redact(table.name, name, raw_after[name]) for name in changed}
            else:
                before = None if raw_before is None else self._redact(table, raw_before)
                after = None if raw_after is None else self._redact(table, raw_after)
            values_before: dict[str, Any] | None = before
            values_after: dict[str, Any] | None = after
            action = _action(change, before, after)
            label = None if change.obj is None else self._labels.get(id(change.obj))
            action_name = action.value if label is None else label[1]
            description = _description(context, action, entity_type)
            if label is not None and label[2]:
                via = context.field_name or context.system_process or "write"
                description = f"{via}: {label[2]}"[:_DESCRIPTION_LENGTH]
            key = (entity_type.value, change.entity_id)
            if key not in self._seen:
                if self.announced:
                    raise TrailError(f"{table.name} row {change.entity_id} changed after its batch was announced")
                self._seen.add(key)
                self.entities.append(key)
            log_rows.append(
                {
                    "user_id": context.user_id,
                    "session_id": context.session_id,
                    "ip_address": context.ip_address,
                    "user_agent": context.user_agent,
                    "action_type": action_name,
                    "entity_type": entity_type.value,
                    "entity_id": change.entity_id,
                    "operation_description": description,
                    "before_values": values_before,
                    "after_values": values_after,
                    "changed_fields": changed,
                    "change_reason": None if context.change_reason is None else context.change_reason[:255],
                    "access_granted": True,
                    "permission_used": context.permission,
                    "risk_level": _risk(entity_type, action).value,
                    "request_id": context.request_id,
                    "api_endpoint": context.endpoint,
                    "http_method": context.http_method,
                }
            )
            operational = OPERATIONAL_COLUMNS.get(table.name, frozenset())
            for name in changed:
                if name in _BOOKKEEPING or name in operational:
                    continue
                history_rows.append(
                    {
                        "entity_type": entity_type.value,
                        "entity_id": change.entity_id,
                        "field_name": name,
                        "old_value": None if before is None else before.get(name),
                        "new_value": None if after is None else after.get(name),
                        "changed_by_user_id": context.user_id,
                        "changed_by_system_process": context.system_process,
                        "change_source": context.change_source.value,
                        "change_category": action.value.lower(),
                        "change_impact_level": _FIELD_IMPACT.get((table.name, name), ImpactLevel.LOW).value,
                        "change_batch_id": context.change_batch_id,
                    }
                )
        if log_rows or history_rows:
            if self.defer and not self.announced:
                self._queued[0].extend(log_rows)
                self._queued[1].extend(history_rows)
            else:
                # Both chains' locks and heads in one round trip, both tables' rows in one more.
                self.chain.append_many_sync(
                    connection, [(AuditLog.__table__, log_rows), (ChangeHistory.__table__, history_rows)]
                )
            self.audit_rows += len(log_rows)
            self.history_rows += len(history_rows)

    def _redact(self, table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
        return {name: self.redaction.value(table.name, name, value) for name, value in row.items()}


@functools.cache
def _locked_plan(model: Any) -> tuple[str, tuple[tuple[str, str | None], ...]]:
    """`AuditTrail.locked`'s view of an audited model: its table's name, and (column name, attribute key, None
    when the column is not mapped) of every column, in order."""
    mapper: Any = object_mapper_of(model)
    table: Table = mapper.local_table
    columns: list[tuple[str, str | None]] = []
    for column in table.columns:
        try:
            key: str | None = mapper.get_property_by_column(column).key
        except UnmappedColumnError:
            key = None
        columns.append((column.name, key))
    return table.name, tuple(columns)


def _wire_row(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """Every column of a stored row, in the API's wire formats (`wire_value`; a text, boolean, float or
    NULL value is its own wire form)."""
    columns = _WIRE_COLUMNS.get(table)
    if columns is None:
        columns = _WIRE_COLUMNS[table] = tuple((column.name, column.type) for column in table.columns)
    plain = _PLAIN_WIRE
    return {
        name: value if type(value) in plain else wire_value(value, kind)
        for name, kind in columns
        for value in (row[name],)
    }


# Table -> (name, type) of its columns, in order (`_wire_row`).
_WIRE_COLUMNS: dict[Table, tuple[tuple[str, Any], ...]] = {}
# Value types `wire_value` returns unchanged (exact types: a subclass, e.g. an enum, goes through it).
_PLAIN_WIRE = frozenset({str, bool, float, type(None)})


class AuditedSession(Session):
    """The ORM session class of units of work: its flushes are recorded by the audit trail."""


def _trail(session: Session) -> AuditTrail:
    trail = session.info.get(_STATE_KEY)
    if not isinstance(trail, AuditTrail):
        raise TrailError("this session has no audit trail installed: open it through a unit of work")
    return trail


@event.listens_for(AuditedSession, "before_flush")
def _before_flush(session: Session, flush_context: UOWTransaction, instances: Iterable[Any] | None) -> None:
    _trail(session).before_flush(session)


@event.listens_for(AuditedSession, "after_flush")
def _after_flush(session: Session, flush_context: UOWTransaction) -> None:
    _trail(session).after_flush(session)


@event.listens_for(AuditedSession, "after_flush_postexec")
def _after_flush_postexec(session: Session, flush_context: UOWTransaction) -> None:
    _trail(session).after_flush_postexec()


@event.listens_for(AuditedSession, "after_soft_rollback")
def _after_soft_rollback(session: Session, previous_transaction: Any) -> None:
    trail = session.info.get(_STATE_KEY)
    if isinstance(trail, AuditTrail):
        trail.after_flush_postexec()


@event.listens_for(AuditedSession, "do_orm_execute")
def _refuse_bulk_writes(state: ORMExecuteState) -> None:
    """ORM bulk INSERT/UPDATE/DELETE never reach the flush, so they would go unaudited."""
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    for mapper in state.all_mappers:
        if mapper.class_ in AUDITED:
            verb = "INSERT" if state.is_insert else "UPDATE" if state.is_update else "DELETE"
            raise BypassRefused(
                f"bulk {verb} of {mapper.class_.__name__} would bypass the audit trail: "
                "load the rows and change them through the session"
            )
    table = _dml_table(state.statement)
    if table is not None:
        raise BypassRefused(f"{table} is audited: a statement would bypass the audit trail")


# Engines whose connections the trails guard (`AuditTrail.guard`): their listeners are registered once.
_GUARDED: weakref.WeakSet[Engine] = weakref.WeakSet()


def _guard_engine(engine: Engine) -> None:
    if engine not in _GUARDED:
        event.listen(engine, "before_execute", _guard_before_execute, retval=True)
        event.listen(engine, "after_execute", _guard_after_execute)
        _GUARDED.add(engine)


def _guard_before_execute(
    conn: Connection, clause: Any, multiparams: Any, params: Any, options: Any
) -> tuple[Any, Any, Any]:
    trail = conn.info.get(_STATE_KEY)
    if trail is None:
        return clause, multiparams, params
    return trail._before_execute(clause, multiparams, params)  # type: ignore[no-any-return]


def _guard_after_execute(
    conn: Connection, clause: Any, multiparams: Any, params: Any, options: Any, result: Any
) -> None:
    trail = conn.info.get(_STATE_KEY)
    if trail is not None:
        trail._after_execute(clause, result)


def in_flush(connection: Connection) -> bool:
    """Is `connection` a unit of work's, inside its audit trail's flush (where audited DML belongs)?"""
    trail = connection.info.get(_STATE_KEY)
    return isinstance(trail, AuditTrail) and trail._flushing


def audited_dml_table(statement: str) -> str | None:
    """The audited table an INSERT/UPDATE/DELETE statement's SQL text writes, if any."""
    match = _DML_TEXT.search(statement)
    return match.group(1).lower() if match else None


def _returning_every_column(clause: Insert | Update) -> Insert | Update:
    """`clause` returning every column of its audited table (the "after" of the change), or `clause`
    itself when its table is not audited."""
    table = _audited_table(clause)
    if table is None or clause._returning:  # none, or its own RETURNING (the unit of work's single-row UPDATE)
        return clause
    # The supplemental columns: the SET clause's own columns too (return_defaults leaves out those given
    # a parameter, whose stored form may differ: numeric scale, jsonb).
    return clause.return_defaults(*table.columns, supplemental_cols=table.columns)


def _known_before(change: _Change, row: dict[str, Any] | None) -> bool:
    """Give `change` the row its transaction knows (locked, unchanged since); False if it knows none."""
    if row is None:
        return False
    change.before = dict(row)
    return True


def _may_write(clause: Any) -> bool:
    """Can this statement (outside a flush) change rows: DML, or SQL text."""
    if isinstance(clause, UpdateBase):
        return True
    return isinstance(clause, TextClause)  # any SQL text may (a function call too)


def _audited_table(clause: Insert | Update) -> Table | None:
    """The audited table an INSERT or UPDATE statement writes (the model's own Table), if any."""
    table = getattr(clause, "table", None)
    model = _AUDITED_TABLES.get(getattr(table, "name", ""))
    return table if model is not None and model.__table__ is table else None


def _dml_table(clause: Any) -> str | None:
    """The audited table an INSERT/UPDATE/DELETE statement writes, if any."""
    if isinstance(clause, UpdateBase):
        table = getattr(clause, "table", None)
        name = getattr(table, "name", None)
        return name if name in _AUDITED_TABLES else None
    if isinstance(clause, TextClause):
        return _text_dml_table(clause.text)
    return None


@functools.lru_cache(maxsize=1024)
def _text_dml_table(statement: str) -> str | None:
    """`audited_dml_table` of a textual statement, searched once per text (statements bind their values)."""
    return audited_dml_table(statement)


def _action(change: _Change, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> Action:
    if before is None:
        return Action.CREATE
    if after is None:
        return Action.DELETE
    if "archived_at" in after and before.get("archived_at") != after.get("archived_at"):
        return Action.ARCHIVE if after["archived_at"] is not None else Action.RESTORE
    if change.model in (User, Tenant) and before.get("is_active") != after.get("is_active"):
        return Action.REACTIVATE if after["is_active"] else Action.DEACTIVATE
    return Action.UPDATE


def _risk(entity_type: EntityType, action: Action) -> RiskLevel:
    if entity_type in _HIGH_RISK:
        return RiskLevel.HIGH
    if action in (Action.DELETE, Action.ARCHIVE, Action.RESTORE):
        return RiskLevel.MEDIUM
    return RiskLevel.LOW


def _description(context: AuditContext, action: Action, entity_type: EntityType) -> str:
    via = context.field_name or context.system_process or "write"
    operation = f" (operation {context.operation_name})" if context.operation_name else ""
    text = f"{via}{operation}: {action.value} {entity_type.value}"
    return text[:_DESCRIPTION_LENGTH]
