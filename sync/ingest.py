"""Taking notices into the database: versions, detected changes, follow-ups, the project's columns.

One call of `ingest` handles the notices of one lineage (one opportunity across its revisions, the
project's `external_opportunity_id`) for one tenant and source:

- The project tracking the lineage is found (or, with `create=True`, made); a project created from a
  source reference is in `pending` with no version, and its first poll fills it.
- A new `external_opportunity_data` version (the previous one no longer current) is written only when
  the canonical payload hash (`sync.diff.payload_hash`) of the newest notice differs from the
  project's `version_hash`; the raw record is kept verbatim with its `notice_id`, and
  `amendment_number` is the number of distinct `noticeId`s of the lineage less one, so a version
  that only updates a notice does not count. When one answer holds several notices of the lineage
  (a presolicitation and its solicitation) on its first fill, the older ones are taken in first;
  later only the newest counts, so nothing alternates between two current versions from poll to poll.
- Each version gets an `external_data_changes` row classified by `sync.diff.diff_notices`
  (`created` for the first), and a change of high or critical impact a follow-up activity, assigned
  to the project's capture manager or, when there is none, to the tenant's active administrators
  (the first assigned, the others participants), due as `sync.diff.follow_up_due` says.
- The project's synced columns take the newest values through the unit of work as the tenant's
  system user (`auth.audited.system_unit`, process `sync.ingest`: audit rows and change history),
  except a field with an active override (`opportunity_project_overrides.field_name`), and its
  `version_hash`, `last_synced_at`, `sync_status`, `sync_error_message` are set with them.
- A poll that brings the same hash to a project already `synced` opens no transaction at all: no
  version, change, activity, audit or history row, and the project row (its `updated_at`, which
  users' optimistic edits compare) stays as it was. `last_synced_at` is therefore the last time the
  source's data was taken in, not the last poll: that is on the schedule (the source's schedule row,
  the project's `polling_configurations.last_poll_timestamp`).

Descriptions: SAM.gov gives a URL; its text costs one API call. `describe` (a `DescriptionFetcher`,
which the jobs build on the budgeted calls of `sync.calls`) is called only for a tracked project and
only for a version about to be written with a `noticeId` not seen before (an update of a known
notice keeps the text already fetched), and always outside any transaction. It answers None for
"Description Not Found" (the version's description stays null) and raises `DescriptionUnavailable`
when no call could be made (budget spent, source failing): the version is written without it.

`ingest_missing` records a tracked notice that is no longer returned (a `removed` change, critical);
`mark_error` keeps `sync_status` true when a refresh fails.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.audited import system_unit
from auth.permissions import SystemRole
from models.activities import Activity, ActivityParticipant
from models.audit_chain import AuditChain
from models.db import set_tenant
from models.enums import (
    ActivityStatus,
    ChangeType,
    EntityType,
    ImpactLevel,
    ParticipantType,
    Priority,
    ProjectStatus,
    SyncStatus,
)
from models.errors import Conflict
from models.external_data import ExternalDataChange, ExternalOpportunityData
from models.identity import Role, User, UserRole
from models.notifications import notify_activity_assigned, notify_external_change
from models.opportunities import OpportunityProject, OpportunityProjectOverride
from models.unit_of_work import UnitOfWork
from sync.connectors.base import JSONValue, NormalisedNotice
from sync.diff import NoticeDiff, diff_notices, follow_up_due, is_cancelled, payload_hash

__all__ = [
    "FOLLOW_UP_ACTIVITY_TYPE",
    "POLLED_STATUSES",
    "PROCESS",
    "DescriptionFetcher",
    "DescriptionUnavailable",
    "IngestResult",
    "find_project",
    "group_by_lineage",
    "ingest",
    "ingest_missing",
    "mark_error",
    "tracked_lineages",
    "version_columns",
]

PROCESS: Final = "sync.ingest"
FOLLOW_UP_ACTIVITY_TYPE: Final = "follow_up"
#: Projects still pursued: the others (closed, and archived ones) are not polled.
POLLED_STATUSES: Final = (ProjectStatus.ACTIVE.value, ProjectStatus.ON_HOLD.value)

DescriptionFetcher = Callable[[str], Awaitable[str | None]]
"""A description URL -> its text (None: "Description Not Found"); raises DescriptionUnavailable."""

_PRIORITY = {ImpactLevel.CRITICAL: Priority.CRITICAL, ImpactLevel.HIGH: Priority.HIGH}
_ACTIVITY_SUBJECT = 255


class DescriptionUnavailable(Exception):
    """No description call could be made now (budget spent, source failing): retried with a later version."""


@dataclass(slots=True)
class IngestResult:
    """What one `ingest` call did for one lineage."""

    lineage_key: str
    project_id: uuid.UUID | None = None
    created: bool = False
    versions: list[uuid.UUID] = field(default_factory=list)
    changes: list[uuid.UUID] = field(default_factory=list)
    activities: list[uuid.UUID] = field(default_factory=list)
    descriptions_fetched: int = 0
    project_fields: list[str] = field(default_factory=list)

    @property
    def wrote(self) -> bool:
        """Whether anything was written (a version, a change, the project's columns)."""
        return bool(self.versions or self.changes or self.project_fields or self.created)


# --- reading ---------------------------------------------------------------------------------------


def group_by_lineage(notices: Iterable[NormalisedNotice]) -> dict[str, list[NormalisedNotice]]:
    """Notices by lineage key, in the order received."""
    grouped: dict[str, list[NormalisedNotice]] = {}
    for notice in notices:
        grouped.setdefault(notice.lineage_key, []).append(notice)
    return grouped


async def find_project(conn: AsyncConnection, source_id: uuid.UUID, lineage_key: str) -> uuid.UUID | None:
    """The project of the tenant set on `conn` tracking `lineage_key` of the source (archived ones too)."""
    found: uuid.UUID | None = await conn.scalar(
        select(OpportunityProject.id).where(
            OpportunityProject.external_source_id == source_id,
            OpportunityProject.external_opportunity_id == lineage_key,
        )
    )
    return found


async def tracked_lineages(
    conn: AsyncConnection, source_id: uuid.UUID, keys: Iterable[str] | None = None
) -> dict[str, uuid.UUID]:
    """Lineage key -> project id of the source's projects still polled (not archived, not closed);
    all of them, or those among `keys`."""
    stmt = select(OpportunityProject.external_opportunity_id, OpportunityProject.id).where(
        OpportunityProject.external_source_id == source_id,
        OpportunityProject.archived_at.is_(None),
        OpportunityProject.project_status.in_(POLLED_STATUSES),
    )
    if keys is not None:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        stmt = stmt.where(OpportunityProject.external_opportunity_id.in_(wanted))
    return {row.external_opportunity_id: row.id for row in (await conn.execute(stmt)).all()}


@dataclass(frozen=True, slots=True)
class _Known:
    """A project and the notice ids of its lineage, as read before deciding anything."""

    project_id: uuid.UUID
    version_hash: str | None
    sync_status: str
    notice_ids: frozenset[str]


async def _known(conn: AsyncConnection, project_id: uuid.UUID) -> _Known | None:
    project = (
        await conn.execute(
            select(OpportunityProject.id, OpportunityProject.version_hash, OpportunityProject.sync_status).where(
                OpportunityProject.id == project_id
            )
        )
    ).one_or_none()
    if project is None:
        return None
    notice_ids = await conn.scalars(
        select(ExternalOpportunityData.notice_id)
        .where(
            ExternalOpportunityData.opportunity_project_id == project_id,
            ExternalOpportunityData.notice_id.is_not(None),
        )
        .distinct()
    )
    return _Known(
        project_id=project.id,
        version_hash=project.version_hash,
        sync_status=project.sync_status,
        notice_ids=frozenset(n for n in notice_ids.all() if n is not None),
    )


def _ordered(notices: Sequence[NormalisedNotice]) -> list[NormalisedNotice]:
    """Oldest first by posted date (a notice without one keeps its place among equals)."""
    return sorted(notices, key=lambda n: str(n.fields.get("posted_date") or ""))


def _to_write(notices: Sequence[NormalisedNotice], known: _Known | None) -> list[NormalisedNotice]:
    """The notices that make a version, oldest first: the newest when its hash differs from the
    current version's; the older ones only while the lineage has no version yet (its first fill
    counts every noticeId), never later (an older notice must not become current again)."""
    *older, newest = _ordered(notices)
    if known is not None and known.notice_ids:
        return [newest] if payload_hash(newest.raw) != known.version_hash else []
    chosen: list[NormalisedNotice] = []
    for notice in older:
        if notice.notice_id != newest.notice_id and all(n.notice_id != notice.notice_id for n in chosen):
            chosen.append(notice)
    return [*chosen, newest]


# --- the version's columns -------------------------------------------------------------------------


def _text(value: JSONValue, limit: int) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:limit] if text else None


def _place(value: JSONValue) -> str | None:
    """A readable place of performance: city, state, zip, country (the JSON when it is shaped otherwise)."""
    if not isinstance(value, dict):
        return _text(value, 10_000)
    parts: list[str] = []
    for key in ("streetAddress", "streetAddress2", "city", "state", "zip", "country"):
        part = value.get(key)
        if isinstance(part, dict):
            part = part.get("name") or part.get("code")
        if isinstance(part, str) and part.strip():
            parts.append(part.strip())
    return ", ".join(parts) if parts else json.dumps(value, sort_keys=True)


def _deadline(value: JSONValue) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _posting_date(value: JSONValue) -> dt.date | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _status(notice: NormalisedNotice) -> str:
    fields = notice.fields
    if is_cancelled(notice.raw):
        return "cancelled"
    if fields.get("award") or str(fields.get("notice_type") or "").lower() == "award notice":
        return "awarded"
    if fields.get("active") is False:
        return "archived"
    return "active"


def version_columns(notice: NormalisedNotice, description: str | None) -> dict[str, Any]:
    """The `external_opportunity_data` columns of a notice (besides versioning and the raw record)."""
    fields = notice.fields
    naics = fields.get("naics_codes")
    codes = [str(code) for code in naics] if isinstance(naics, list) else []
    return {
        "notice_id": notice.notice_id,
        "title": _text(fields.get("title"), 500),
        "description": description if description is not None else _text(fields.get("description_text"), 1_000_000),
        "opportunity_type": _text(fields.get("notice_type"), 100),
        "set_aside_type": _text(fields.get("set_aside"), 100),
        "naics_codes": ",".join(codes)[:200] or None,
        "posting_date": _posting_date(fields.get("posted_date")),
        "response_due_date": _deadline(fields.get("response_deadline")),
        "place_of_performance": _place(fields.get("place_of_performance")),
        "solicitation_status": _status(notice),
        "resource_links": list(links) if isinstance(links := fields.get("resource_links"), list) else [],
        "payload_hash": payload_hash(notice.raw),
    }


def _project_columns(notice: NormalisedNotice, description: str | None) -> dict[str, Any]:
    """The project's synced columns from a notice (None values are left out: the source's silence
    does not erase what the project holds)."""
    fields = notice.fields
    office = fields.get("office") or fields.get("sub_tier")
    values = {
        "title": _text(fields.get("title"), 500),
        "description": description if description is not None else _text(fields.get("description_text"), 1_000_000),
        "solicitation_number": _text(fields.get("solicitation_number"), 100),
        "agency_name": _text(fields.get("department"), 255),
        "contracting_office": _text(office, 255),
        "external_opportunity_url": _text(fields.get("ui_link"), 1000),
    }
    return {name: value for name, value in values.items() if value is not None}


def _diff_payload(raw: Mapping[str, Any], description: str | None) -> dict[str, Any]:
    """The raw record as the diff compares it: with the fetched description text in place of its URL."""
    payload = dict(raw)
    if description is not None:
        payload["description"] = description
    return payload


def _hash_of(version: ExternalOpportunityData) -> str:
    return version.payload_hash or payload_hash(version.raw_json_data)


def _json_safe(value: object) -> Any:
    return json.loads(json.dumps(value, default=str))


# --- writing ---------------------------------------------------------------------------------------


async def _admins(uow: UnitOfWork) -> list[uuid.UUID]:
    """The tenant's active administrators (Tenant Admin, tenant-wide, unexpired), oldest first."""
    rows = await uow.connection.execute(
        select(User.id)
        .join(UserRole, UserRole.user_id == User.id)
        .join(Role, Role.id == UserRole.role_id)
        .where(
            User.is_active.is_(True),
            User.is_system.is_(False),
            Role.is_system_role.is_(True),
            Role.name == SystemRole.TENANT_ADMIN.value,
            UserRole.opportunity_project_id.is_(None),
            (UserRole.expires_at.is_(None)) | (UserRole.expires_at > func.now()),
        )
        .group_by(User.id, User.created_at)
        .order_by(User.created_at, User.id)
    )
    return [row.id for row in rows.all()]


async def _assignees(uow: UnitOfWork, project: OpportunityProject) -> list[uuid.UUID]:
    manager = project.assigned_capture_manager
    if manager is not None:
        active = await uow.connection.scalar(select(User.is_active).where(User.id == manager))
        if active:
            return [manager]
    return await _admins(uow)


async def _follow_up(
    uow: UnitOfWork,
    project: OpportunityProject,
    change: ExternalDataChange,
    diff: NoticeDiff,
    deadline: object,
    now: dt.datetime,
    assignees: list[uuid.UUID],
) -> Activity:
    subject = f"Review {diff.change_type.value.replace('_', ' ')} notice: {project.project_name}"
    activity = Activity(
        tenant_id=uow.tenant_id,
        entity_type=EntityType.OPPORTUNITY_PROJECT.value,
        entity_id=project.id,
        activity_type=FOLLOW_UP_ACTIVITY_TYPE,
        subject=subject[:_ACTIVITY_SUBJECT],
        description=diff.summary,
        due_date=follow_up_due(deadline if isinstance(deadline, str | dt.datetime) else None, now),
        assigned_to=assignees[0] if assignees else None,
        status=ActivityStatus.PENDING.value,
        priority=_PRIORITY.get(diff.impact, Priority.HIGH).value,
        triggered_by_external_change=True,
        external_change_reference=change.id,
        created_by=uow.actor_id,
    )
    uow.add(activity)
    uow.label(activity, "activity.follow_up.created", f"follow-up of a {diff.impact.value} external change")
    await uow.flush()
    await notify_activity_assigned(uow, activity, activity.assigned_to, project_id=project.id)
    for other in assignees[1:]:
        participant = ActivityParticipant(
            tenant_id=uow.tenant_id,
            activity_id=activity.id,
            participant_type=ParticipantType.USER.value,
            participant_id=other,
            role="administrator",
            added_by=uow.actor_id,
        )
        uow.add(participant)
    return activity


async def _record_change(
    uow: UnitOfWork,
    project: OpportunityProject,
    source_id: uuid.UUID,
    diff: NoticeDiff,
    *,
    notice_id: str | None,
    deadline: object,
    now: dt.datetime,
    result: IngestResult,
) -> None:
    change = ExternalDataChange(
        tenant_id=uow.tenant_id,
        opportunity_project_id=project.id,
        change_timestamp=now,
        changed_fields=diff.changed_fields,
        previous_values=_json_safe({c.field: c.old for c in diff.changes}) if diff.changes else None,
        new_values=_json_safe({c.field: c.new for c in diff.changes}) if diff.changes else None,
        change_type=diff.change_type.value,
        impact_level=diff.impact.value,
        external_source_id=source_id,
        external_change_id=notice_id,
        # The inbox items of the project's team are written below, in this transaction.
        notification_sent=True,
    )
    uow.add(change)
    uow.label(change, "external_data_change.detected", diff.summary[:500])
    await uow.flush()
    result.changes.append(change.id)
    await notify_external_change(
        uow, change_id=change.id, project_id=project.id, project_name=project.project_name,
        change_type=diff.change_type.value, impact=diff.impact.value,
    )
    if diff.needs_follow_up:
        activity = await _follow_up(uow, project, change, diff, deadline, now, await _assignees(uow, project))
        result.activities.append(activity.id)


async def _overridden(uow: UnitOfWork, project_id: uuid.UUID) -> frozenset[str]:
    rows = await uow.connection.scalars(
        select(OpportunityProjectOverride.field_name).where(
            OpportunityProjectOverride.opportunity_project_id == project_id,
            OpportunityProjectOverride.is_active.is_(True),
        )
    )
    return frozenset(rows.all())


async def _write(
    uow: UnitOfWork,
    project: OpportunityProject,
    source_id: uuid.UUID,
    notices: Sequence[NormalisedNotice],
    descriptions: Mapping[str, str | None],
    now: dt.datetime,
    result: IngestResult,
) -> None:
    """Versions, changes and follow-ups for `notices` (oldest first), then the project's columns."""
    versions = list(
        (
            await uow.session.scalars(
                select(ExternalOpportunityData)
                .where(ExternalOpportunityData.opportunity_project_id == project.id)
                .order_by(ExternalOpportunityData.version_number)
                .with_for_update()
            )
        ).all()
    )
    current = next((v for v in reversed(versions) if v.is_current_version), None)
    notice_ids = {v.notice_id for v in versions if v.notice_id is not None}
    number = max((v.version_number for v in versions), default=0)
    newest: NormalisedNotice | None = None
    newest_description: str | None = None
    for index, notice in enumerate(notices):
        newest_here = index == len(notices) - 1
        if (not newest_here and notice.notice_id in notice_ids) or (
            newest_here and current is not None and _hash_of(current) == payload_hash(notice.raw)
        ):
            continue  # written meanwhile by another worker
        if notice.notice_id in descriptions:
            description = descriptions[notice.notice_id]
        elif current is not None and current.notice_id == notice.notice_id:
            description = current.description  # an update of a known notice keeps its text
        else:
            description = None
        old_payload = None if current is None else _diff_payload(current.raw_json_data, current.description)
        diff = diff_notices(old_payload, _diff_payload(notice.raw, description), now=now)
        notice_ids.add(notice.notice_id)
        number += 1
        if current is not None:
            current.is_current_version = False
            await uow.flush()  # one current version at any time
        version = ExternalOpportunityData(
            tenant_id=uow.tenant_id,
            opportunity_project_id=project.id,
            data_snapshot_timestamp=now,
            version_number=number,
            is_current_version=True,
            amendment_number=len(notice_ids) - 1,
            raw_json_data=dict(notice.raw),
            change_detected_at=None if current is None else now,
            changed_fields=diff.changed_fields or None,
            **version_columns(notice, description),
        )
        uow.add(version)
        await uow.flush()
        result.versions.append(version.id)
        await _record_change(
            uow, project, source_id, diff, notice_id=notice.notice_id,
            deadline=notice.raw.get("responseDeadLine"), now=now, result=result,
        )
        current, newest, newest_description = version, notice, description
    values: dict[str, Any] = {}
    if newest is not None:
        overridden = await _overridden(uow, project.id)
        values = {k: v for k, v in _project_columns(newest, newest_description).items() if k not in overridden}
        values["version_hash"] = payload_hash(newest.raw)
    if newest is not None or project.sync_status != SyncStatus.SYNCED.value or project.sync_error_message:
        values |= {"last_synced_at": now, "sync_status": SyncStatus.SYNCED.value, "sync_error_message": None}
    changed = uow.assign(project, values)
    if changed:
        result.project_fields = changed
        what = f"{len(result.versions)} new version(s)" if result.versions else "sync state"
        uow.label(project, "opportunity_project.synced", f"taken in from the source: {what}")
        await uow.flush()


async def _fetch_descriptions(
    notices: Sequence[NormalisedNotice], known: _Known | None, describe: DescriptionFetcher | None
) -> dict[str, str | None]:
    """Description text of the notices about to be written whose noticeId is new (one call each)."""
    texts: dict[str, str | None] = {}
    if describe is None:
        return texts
    seen = set() if known is None else set(known.notice_ids)
    for notice in notices:
        url = notice.fields.get("description_url")
        if notice.notice_id in seen or notice.notice_id in texts or not isinstance(url, str):
            continue
        try:
            texts[notice.notice_id] = await describe(url)
        except DescriptionUnavailable:
            break  # no budget now: the versions are written without their text
    return texts


async def _read(engine: AsyncEngine, tenant_id: uuid.UUID, source_id: uuid.UUID, lineage_key: str,
                project_id: uuid.UUID | None) -> _Known | None:
    async with engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        if project_id is None:
            project_id = await find_project(conn, source_id, lineage_key)
        known = None if project_id is None else await _known(conn, project_id)
        await conn.rollback()
    return known


async def ingest(
    engine: AsyncEngine,
    chain: AuditChain,
    tenant_id: uuid.UUID,
    source_id: uuid.UUID,
    notices: Sequence[NormalisedNotice],
    *,
    now: dt.datetime,
    describe: DescriptionFetcher | None = None,
    create: bool = False,
    project_name: str | None = None,
    project_id: uuid.UUID | None = None,
    process: str = PROCESS,
) -> IngestResult:
    """Take the notices of one lineage in (see the module docstring). Without a project tracking the
    lineage and without `create`, nothing is written (`project_id` None in the result)."""
    if not notices:
        raise ValueError("ingest needs at least one notice")
    lineage_key = notices[0].lineage_key
    if any(n.lineage_key != lineage_key for n in notices) and project_id is None:
        raise ValueError("ingest takes the notices of one lineage")
    result = IngestResult(lineage_key=lineage_key)
    known = await _read(engine, tenant_id, source_id, lineage_key, project_id)
    if known is None and not create:
        return result
    chosen = _to_write(notices, known)
    if known is not None and not chosen and known.sync_status == SyncStatus.SYNCED.value:
        result.project_id = known.project_id
        return result  # unchanged: nothing opened, nothing written
    texts = await _fetch_descriptions(chosen, known, describe)
    result.descriptions_fetched = len(texts)
    try:
        async with system_unit(engine, chain, tenant_id, process=process) as uow:
            project = await _locked_project(uow, source_id, lineage_key, known, create, project_name, notices, result)
            result.project_id = project.id
            await _write(uow, project, source_id, chosen, texts, now, result)
    except Conflict:
        if known is not None or not create:
            raise
        # another worker created the project meanwhile: take the notices into it
        return await ingest(engine, chain, tenant_id, source_id, notices, now=now, describe=describe,
                            process=process)
    return result


async def _locked_project(
    uow: UnitOfWork,
    source_id: uuid.UUID,
    lineage_key: str,
    known: _Known | None,
    create: bool,
    project_name: str | None,
    notices: Sequence[NormalisedNotice],
    result: IngestResult,
) -> OpportunityProject:
    if known is not None:
        return await uow.lock(OpportunityProject, known.project_id, what="opportunity project")
    newest = _ordered(notices)[-1]
    name = project_name or _text(newest.fields.get("title"), 255) or lineage_key[:255]
    project = OpportunityProject(tenant_id=uow.tenant_id, created_by=uow.actor_id)
    uow.assign(
        project,
        {
            "project_name": name[:255],
            "external_source_id": source_id,
            "external_opportunity_id": lineage_key,
            "sync_status": SyncStatus.PENDING.value,
        },
    )
    uow.add(project)
    uow.label(project, "opportunity_project.created", "created to track an external opportunity")
    await uow.flush()
    result.created = True
    return project


async def ingest_missing(
    engine: AsyncEngine,
    chain: AuditChain,
    tenant_id: uuid.UUID,
    source_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    now: dt.datetime,
    process: str = PROCESS,
) -> IngestResult:
    """A tracked notice the source no longer returns: one `removed` change (critical) and its
    follow-up, recorded once (not again until a new version comes)."""
    async with engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        last = (
            await conn.execute(
                select(ExternalOpportunityData.data_snapshot_timestamp, ExternalOpportunityData.raw_json_data)
                .where(
                    ExternalOpportunityData.opportunity_project_id == project_id,
                    ExternalOpportunityData.is_current_version.is_(True),
                )
                .order_by(ExternalOpportunityData.version_number.desc())
                .limit(1)
            )
        ).one_or_none()
        removed_since = None
        if last is not None:
            removed_since = await conn.scalar(
                select(ExternalDataChange.id).where(
                    ExternalDataChange.opportunity_project_id == project_id,
                    ExternalDataChange.change_type == ChangeType.REMOVED.value,
                    ExternalDataChange.change_timestamp >= last.data_snapshot_timestamp,
                ).limit(1)
            )
        await conn.rollback()
    result = IngestResult(lineage_key="", project_id=project_id)
    if last is None or removed_since is not None:
        return result  # never seen (pending), or its removal is recorded already
    async with system_unit(engine, chain, tenant_id, process=process) as uow:
        project = await uow.lock(OpportunityProject, project_id, what="opportunity project")
        result.lineage_key = project.external_opportunity_id
        diff = diff_notices(last.raw_json_data, None, now=now)
        await _record_change(
            uow, project, source_id, diff, notice_id=None, deadline=last.raw_json_data.get("responseDeadLine"),
            now=now, result=result,
        )
    return result


async def mark_error(
    engine: AsyncEngine,
    chain: AuditChain,
    tenant_id: uuid.UUID,
    project_id: uuid.UUID,
    message: str,
    *,
    process: str = PROCESS,
) -> bool:
    """`sync_status` error with `message` on the project (nothing written when it says so already)."""
    async with engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        row = (
            await conn.execute(
                select(OpportunityProject.sync_status, OpportunityProject.sync_error_message).where(
                    OpportunityProject.id == project_id
                )
            )
        ).one_or_none()
        await conn.rollback()
    message = message[:2000]
    if row is None or (row.sync_status == SyncStatus.ERROR.value and row.sync_error_message == message):
        return False
    async with system_unit(engine, chain, tenant_id, process=process) as uow:
        project = await uow.lock(OpportunityProject, project_id, what="opportunity project")
        if uow.assign(project, {"sync_status": SyncStatus.ERROR.value, "sync_error_message": message}):
            uow.label(project, "opportunity_project.sync_failed", message[:500])
    return True
