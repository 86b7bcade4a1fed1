"""SAM.gov attachments: the `resourceLinks` of a tracked project's current version taken in as documents.

After `sync.ingest` has taken a lineage in, `take_in_attachments` looks at the project's current
`external_opportunity_data` version and its `resource_links` (recorded by the sync, D18):

- Which links are fetched: every link of a version written by this poll (`IngestResult.versions`;
  the file behind an unchanged link may have changed with the notice), and any link of the current
  version that has no document yet, unless its download since that version got a final answer
  (the file's audited refusal by the checks; in the call log a 4xx or a refusal of the guard). A
  server error, a timeout, a spent budget or a failed store is tried again on the next poll. Nothing else: a poll that
  brought nothing new makes no download at all.
- How: one budgeted call each, through the same `sync.calls.SyncCaller` as the searches (a budget
  slot of the source's API key reserved first, the outbound guard with its allow-list and redirect
  checks, the body bounded by the store's upload limit, the call logged with the key redacted).
  SAM.gov's download answers with a redirect to the file's own host: each hop is checked by the
  guard, so that host must be on the outbound allow-list (docs/samgov.md). No transaction is open
  during a call. No budget left: the remaining links wait for the next poll (`deferred`).
- What is stored: the same checks as an upload (`storage`: the type from the bytes against the
  allow-list, the size limit, SHA-256 and MD5 computed by the store), under a key of ids only. A
  link is one document chain per project, recognised by `external_document_id` (the link without
  its query: SAM.gov's links carry `api_key`/`token` parameters that are not the file's identity).
  The first fetch makes version 1; bytes whose SHA-256 equals the current version's are not stored
  again; other bytes become a new version (`storage.documents.add_version`: `parent_document_id` =
  the chain's first version, `version_number` + 1, `is_current_version` moved) in one unit of work
  as the tenant's system user (process `sync.attachments`: audit rows and change history like any
  document write). The project row is locked in that unit, so two workers taking in the same
  project never start two chains for one link; the object is deleted again if the row is not
  committed.
- The link to the change: each document version records the `external_data_changes` row of the
  version that brought it (`documents.external_data_change_id`, decision D29): for a link of a
  version written now, that version's change; for a link fetched late, the change of the first
  version that listed it.
- A refused file (type off the allow-list, too large, empty) or a failed download is logged and
  skipped, never the job's failure. A file the checks refuse is audited (`document.attachment.refused`
  on the project, MEDIUM risk, with the link, the version and the reason) and, like a 4xx or a
  refusal of the guard, not fetched again until a new version of the notice lists it. A store that
  fails (`StorageUnavailable`) leaves no object or row and is tried again on the next poll.

The new documents start `quarantined` like uploads (`scan_status`; the scanner clears them), with
the default access level (a new version keeps its chain's), `document_source` `external`,
`document_type` `notice_attachment` and `is_synced_from_external` true.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email.message
import hashlib
import logging
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import anyio
import httpx
from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from auth.audited import system_unit
from models.audit_chain import AuditChain
from models.audit_log import AuditLog
from models.db import set_tenant
from models.documents import Document
from models.enums import EntityType, RiskLevel
from models.external_data import ApiIntegrationLog, ExternalDataChange, ExternalOpportunityData
from models.opportunities import OpportunityProject
from storage import ingest
from storage.base import DocumentStorage
from storage.documents import add_document, add_version, chain_of, new_document_key, new_version_key
from storage.errors import Refused
from storage.ingest import Limits
from sync.calls import Budget, BudgetExhausted, CallError, CallSettings, CallTarget, SyncCaller, redact_url
from sync.connectors.base import ConnectorError

__all__ = [
    "PROCESS",
    "AttachmentFetcher",
    "AttachmentResult",
    "AttachmentUnavailable",
    "CallFetcher",
    "Download",
    "attachment_key",
    "attachment_settings",
    "filename_of",
    "take_in_attachments",
]

_log = logging.getLogger(__name__)

PROCESS: Final = "sync.attachments"
#: audit_logs.action_type of a file the source offered that the upload checks refused.
REFUSED_EVENT: Final = "document.attachment.refused"
#: documents.document_source of an attachment taken in from the source.
DOCUMENT_SOURCE: Final = "external"
#: documents.document_type of an attachment of a notice.
DOCUMENT_TYPE: Final = "notice_attachment"
_KEY_LIMIT: Final = 255  # documents.external_document_id
_NAME_LIMIT: Final = 255


# --- identity and names ----------------------------------------------------------------------------


def attachment_key(link: str) -> str:
    """The identity of an attachment across versions: the link without its query or fragment
    (SAM.gov's carry `api_key=null&token=`), or its SHA-256 when that is longer than the column."""
    url = httpx.URL(link.strip())
    key = str(url.copy_with(query=None, fragment=None))
    if len(key) > _KEY_LIMIT:
        return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


_UNSAFE_NAME: Final = re.compile(r"[\x00-\x1f\x7f/\\]+")


def _clean_name(name: str) -> str | None:
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE_NAME.sub("_", name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]).strip().strip(".")
    return name[-_NAME_LIMIT:] or None


def filename_of(headers: httpx.Headers, link: str) -> str:
    """The file name the server gives (Content-Disposition, RFC 6266 with RFC 5987 `filename*`),
    else the link's last path segment that is not `download`; never a path."""
    disposition = headers.get("content-disposition")
    if disposition:
        message = email.message.EmailMessage()
        message["content-disposition"] = disposition
        given = message.get_filename()
        if given:
            cleaned = _clean_name(given)
            if cleaned:
                return cleaned
    segments = [s for s in httpx.URL(link.strip()).path.split("/") if s and s.lower() != "download"]
    return (_clean_name(segments[-1]) if segments else None) or "attachment"


# --- fetching --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Download:
    """One fetched attachment: its bytes and the name the server gave it."""

    content: bytes
    filename: str


class AttachmentUnavailable(Exception):
    """The attachment could not be fetched (an HTTP error status, a refusal of the guard, no answer)."""


class AttachmentFetcher(Protocol):
    """Fetches one link (raises BudgetExhausted: no slot; AttachmentUnavailable: anything else)."""

    def logged_as(self, link: str) -> str:
        """The call log's `endpoint_called` of a link's download (credentials redacted)."""
        ...

    async def __call__(self, link: str) -> Download: ...


def _with_key(link: str, api_key: str | None) -> httpx.URL:
    """SAM.gov's links carry an `api_key` placeholder (`api_key=null`): the source's key replaces it."""
    url = httpx.URL(link.strip())
    if api_key is not None and "api_key" in url.params:
        url = url.copy_set_param("api_key", api_key)
    return url


def attachment_settings(settings: CallSettings, max_bytes: int) -> CallSettings:
    """The source's call settings for a download: its body bounded by the store's upload limit, and
    a 404 an error (the connector's searches read SAM.gov's 404 as an empty page)."""
    return dataclasses.replace(settings, max_bytes=max_bytes, empty_statuses=frozenset())


class CallFetcher:
    """Downloads through the budgeted, guarded, logged calls of `sync.calls` (one call = one slot,
    retries included)."""

    def __init__(
        self, caller: SyncCaller, target: CallTarget, settings: CallSettings, budget: Budget, *, api_key: str | None
    ) -> None:
        self._caller, self._target, self._settings, self._budget = caller, target, settings, budget
        self._api_key = api_key

    def logged_as(self, link: str) -> str:
        return redact_url(_with_key(link, self._api_key))[:500]

    async def __call__(self, link: str) -> Download:
        url = _with_key(link, self._api_key)
        try:
            response = await self._caller.request(self._target, self._settings, self._budget, "GET", url)
        except BudgetExhausted:
            raise
        except (CallError, ConnectorError) as error:
            raise AttachmentUnavailable(str(error)) from error
        if response.status_code != 200:
            raise AttachmentUnavailable(f"HTTP {response.status_code}")
        return Download(content=response.content, filename=filename_of(response.headers, link))


# --- what to fetch ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Wanted:
    link: str
    key: str
    change_id: uuid.UUID | None
    version_id: uuid.UUID  # the current version, whose links these are


@dataclass(slots=True)
class AttachmentResult:
    """What one `take_in_attachments` call did."""

    fetched: int = 0
    created: list[uuid.UUID] = field(default_factory=list)  # version 1 of a new attachment
    versions: list[uuid.UUID] = field(default_factory=list)  # a new version of a known one
    unchanged: list[str] = field(default_factory=list)  # keys whose bytes were already stored
    refused: dict[str, str] = field(default_factory=dict)  # key -> reason
    deferred: bool = False  # the budget ran out: the rest waits for the next poll

    @property
    def stored(self) -> list[uuid.UUID]:
        return [*self.created, *self.versions]


        return [*self.created, *self.versions]


def _links(value: object) -> dict[str, str]:
    """A version's resource links by attachment key (a link that is not an absolute http(s) URL is
    left out with a warning: it names no file, and it must not stop the others)."""
    links: dict[str, str] = {}
    for link in value if isinstance(value, list) else []:
        if not isinstance(link, str) or not link.strip():
            continue
        try:
            url = httpx.URL(link.strip())
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError("not an absolute http(s) URL")
            links.setdefault(attachment_key(link), link.strip())
        except (httpx.InvalidURL, ValueError):
            _log.warning("sync: resource link %r is not a URL; left out", link[:200])
    return links


async def _change_of(
    conn: AsyncConnection, project_id: uuid.UUID, snapshot: dt.datetime, notice_id: str | None
) -> uuid.UUID | None:
    """The external data change written with `version` (`sync.ingest` writes one per version, with
    the version's notice id and instant)."""
    found: uuid.UUID | None = await conn.scalar(
        select(ExternalDataChange.id)
        .where(
            ExternalDataChange.opportunity_project_id == project_id,
            ExternalDataChange.change_timestamp == snapshot,
            ExternalDataChange.external_change_id.is_not_distinct_from(notice_id),
        )
        .order_by(ExternalDataChange.created_at.desc())
        .limit(1)
    )
    return found


async def _settled(
    conn: AsyncConnection, tenant_id: uuid.UUID, project_id: uuid.UUID, version_id: uuid.UUID, key: str,
    endpoint: str, since: dt.datetime,
) -> bool:
    """Whether a download of the link since the current version came got an answer another try would
    not change: a file the checks refused (its audited refusal names the version), a client error
    or a refusal of the guard (the call log). Server errors, timeouts, calls never made (no budget)
    and a store that failed are not: the next poll tries again."""
    refused = await conn.scalar(
        select(AuditLog.id)
        .where(
            # (tenant_id, entity_type, entity_id) leads an index of audit_logs
            AuditLog.tenant_id == tenant_id,
            AuditLog.entity_type == EntityType.OPPORTUNITY_PROJECT.value,
            AuditLog.entity_id == project_id,
            AuditLog.action_type == REFUSED_EVENT,
            AuditLog.after_values["attachment"].astext == key,
            AuditLog.after_values["version"].astext == str(version_id),
        )
        .limit(1)
    )
    if refused is not None:
        return True
    answered = await conn.scalar(
        select(ApiIntegrationLog.id)
        .where(
            ApiIntegrationLog.opportunity_project_id == project_id,
            ApiIntegrationLog.endpoint_called == endpoint,
            ApiIntegrationLog.api_call_timestamp >= since,
            or_(
                ApiIntegrationLog.http_status.between(400, 428),
                ApiIntegrationLog.http_status.between(430, 499),
                ApiIntegrationLog.error_message.like("refused: %"),
            ),
        )
        .limit(1)
    )
    return answered is not None


async def _plan(
    engine: AsyncEngine,
    tenant_id: uuid.UUID,
    project_id: uuid.UUID,
    written: Sequence[uuid.UUID],
    fetcher: AttachmentFetcher,
) -> list[_Wanted]:
    """The links to fetch now (see the module docstring), each with the change it is linked to."""
    async with engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        versions = (
            await conn.execute(
                select(
                    ExternalOpportunityData.id,
                    ExternalOpportunityData.notice_id,
                    ExternalOpportunityData.resource_links,
                    ExternalOpportunityData.data_snapshot_timestamp,
                    ExternalOpportunityData.is_current_version,
                )
                .where(ExternalOpportunityData.opportunity_project_id == project_id)
                .order_by(ExternalOpportunityData.version_number)
            )
        ).all()
        current = next((v for v in reversed(versions) if v.is_current_version), None)
        if current is None:
            await conn.rollback()
            return []
        links = _links(current.resource_links)
        stored = set(
            (
                await conn.scalars(
                    select(Document.external_document_id).where(
                        Document.opportunity_project_id == project_id,
                        Document.is_synced_from_external.is_(True),
                        Document.external_document_id.in_(sorted(links)),
                    )
                )
            ).all()
        ) if links else set()
        fresh = set(written)
        wanted: list[_Wanted] = []
        for key, link in links.items():
            listing = [v for v in versions if key in _links(v.resource_links)]
            new = [v for v in listing if v.id in fresh]
            if new:
                # a new attachment: the first version of this poll listing it; a known one whose
                # notice changed: the newest (it brought the bytes, if they changed)
                brought_by = new[-1] if key in stored else new[0]
            elif key in stored:
                continue
            else:
                # never stored: the first version listing it brought it, unless its download was
                # answered for good since the current version came
                if await _settled(conn, tenant_id, project_id, current.id, key, fetcher.logged_as(link),
                                  current.data_snapshot_timestamp):
                    continue
                brought_by = listing[0]
            change_id = await _change_of(conn, project_id, brought_by.data_snapshot_timestamp, brought_by.notice_id)
            wanted.append(_Wanted(link=link, key=key, change_id=change_id, version_id=current.id))
        await conn.rollback()
    return wanted


# --- storing ---------------------------------------------------------------------------------------


def _current(project_id: uuid.UUID, key: str, *, lock: bool = False) -> Select[Document]:
    """The link's current document version."""
    stmt = select(Document).where(
        Document.opportunity_project_id == project_id,
        Document.is_synced_from_external.is_(True),
        Document.external_document_id == key,
        Document.is_current_version.is_(True),
    ).limit(1)
    if lock:
        stmt = stmt.with_for_update()
    return stmt


async def _current_hash(
    engine: AsyncEngine, tenant_id: uuid.UUID, project_id: uuid.UUID, key: str
) -> tuple[bool, str | None] | None:
    """(is_deleted, sha256) of the link's current document version; None when there is none."""
    async with engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        row = (
            await conn.execute(
                select(Document.is_deleted, Document.file_hash_sha256).where(
                    Document.opportunity_project_id == project_id,
                    Document.is_synced_from_external.is_(True),
                    Document.external_document_id == key,
                    Document.is_current_version.is_(True),
                ).limit(1)
            )
        ).one_or_none()
        await conn.rollback()
    return None if row is None else (bool(row.is_deleted), row.file_hash_sha256)


def _display_name(filename: str, extension: str | None) -> str:
    """The file name, with the extension of its detected type when it has none."""
    if "." not in filename.strip(".") and extension:
        filename = f"{filename}.{extension}"
    return filename[-_NAME_LIMIT:]


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content


async def _record_refusal(
    engine: AsyncEngine, chain: AuditChain, tenant_id: uuid.UUID, project_id: uuid.UUID, wanted: _Wanted,
    refusal: Refused,
) -> None:
    """The audited refusal of a file the source offered (an executable, HTML, a file over the limit):
    it tells the next polls not to fetch it again for this version."""
    async with system_unit(engine, chain, tenant_id, process=PROCESS) as uow:
        uow.record_event(
            REFUSED_EVENT,
            entity_type=EntityType.OPPORTUNITY_PROJECT.value,
            entity_id=project_id,
            description=f"attachment from the source refused ({refusal.code})",
            details={
                "attachment": wanted.key,
                "version": str(wanted.version_id),
                "change": None if wanted.change_id is None else str(wanted.change_id),
                "refusal": refusal.code,
                "reason": str(refusal)[:500],
            },
            risk=RiskLevel.MEDIUM,
        )


class _Raced(Exception):
    """Another worker stored the same bytes meanwhile (the object written here is removed)."""


async def _store(
    engine: AsyncEngine,
    chain: AuditChain,
    storage: DocumentStorage,
    tenant_id: uuid.UUID,
    project_id: uuid.UUID,
    wanted: _Wanted,
    download: Download,
    limits: Limits,
    now: dt.datetime,
    result: AttachmentResult,
) -> None:
    """Version 1, or a new version of the link's current document; nothing when its bytes are the
    current version's (compared before anything is stored). The object is checked and written by
    `storage.ingest.store` (the upload checks) under a key of fresh ids, and removed again if the
    row is not committed."""
    sha256 = hashlib.sha256(download.content).hexdigest()
    current = await _current_hash(engine, tenant_id, project_id, wanted.key)
    if current is not None and (current[1] == sha256 or current[0]):
        result.unchanged.append(wanted.key)  # the same bytes (or a version deleted on purpose)
        return
    version_id = uuid.uuid4()
    if current is None:
        chain_id = version_id
        key = new_document_key(storage, tenant_id, project_id, version_id)
    else:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            await set_tenant(await session.connection(), tenant_id)
            row = await session.scalar(_current(project_id, wanted.key))
            await session.commit()
        if row is None:
            raise _Raced()
        chain_id = chain_of(row)
        key = new_version_key(storage, row, version_id)
    stored = await ingest.store(storage, key, _one(download.content), limits)
    metadata: dict[str, Any] = {
        "document_type": DOCUMENT_TYPE,
        "document_source": DOCUMENT_SOURCE,
        "external_document_id": wanted.key,
        "external_sync_timestamp": now,
        "is_synced_from_external": True,
        "external_data_change_id": wanted.change_id,
    }
    name = _display_name(download.filename, stored.extension)
    try:
        async with system_unit(engine, chain, tenant_id, process=PROCESS) as uow:
            actor = uow.actor_id
            if actor is None:  # pragma: no cover - system_unit always acts as the system user
                raise RuntimeError("the system unit has no actor")
            # one chain per link: concurrent workers taking in the same project queue here
            await uow.lock(OpportunityProject, project_id, what="opportunity project")
            previous: Document | None = await uow.session.scalar(
                _current(project_id, wanted.key, lock=True)
            )
            if previous is not None and (previous.file_hash_sha256 == stored.sha256 or previous.is_deleted):
                raise _Raced()
            if (previous is None) != (current is None) or (previous is not None and chain_of(previous) != chain_id):
                raise _Raced()  # the chain moved under us: the next poll looks again
            if previous is None:
                await add_document(
                    uow, storage, stored, document_id=version_id, project_id=project_id, name=name,
                    original_filename=download.filename, uploaded_by=actor, **metadata,
                )
            else:
                await add_version(
                    uow, storage, stored, current=previous, version_id=version_id, uploaded_by=actor,
                    original_filename=download.filename, name=name, **metadata,
                )
    except BaseException:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await storage.delete(key)
        raise
    (result.created if previous is None else result.versions).append(version_id)


# --- the whole step --------------------------------------------------------------------------------


async def take_in_attachments(
    engine: AsyncEngine,
    chain: AuditChain,
    storage: DocumentStorage,
    tenant_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    fetch: AttachmentFetcher,
    max_bytes: int,
    now: dt.datetime,
    written: Sequence[uuid.UUID] = (),
    temp_dir: Path | None = None,
) -> AttachmentResult:
    """Fetch and store the attachments of the project's current version that need it (see the
    module docstring). `written`: the versions this poll wrote (`IngestResult.versions`)."""
    result = AttachmentResult()
    limits = Limits(max_bytes=max_bytes, temp_dir=temp_dir)
    for wanted in await _plan(engine, tenant_id, project_id, written, fetch):
        try:
            download = await fetch(wanted.link)
        except BudgetExhausted:
            result.deferred = True
            break  # the rest waits for the next poll
        except AttachmentUnavailable as error:
            result.refused[wanted.key] = str(error)[:500]
            _log.warning("sync: attachment %s of project %s not fetched: %s", wanted.key, project_id, error)
            continue
        result.fetched += 1
        try:
            await _store(engine, chain, storage, tenant_id, project_id, wanted, download, limits, now, result)
        except Refused as refusal:
            result.refused[wanted.key] = f"{refusal.code}: {refusal}"
            _log.warning("sync: attachment %s of project %s refused: %s", wanted.key, project_id, refusal)
            await _record_refusal(engine, chain, tenant_id, project_id, wanted, refusal)
        except _Raced:
            result.unchanged.append(wanted.key)
    return result
