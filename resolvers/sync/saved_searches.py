"""Writes of saved searches and of the decisions on their candidates.

As everywhere in resolvers/: each function runs inside the mutation's unit of work and writes
through it; permissions are declared on the GraphQL fields. Saved searches are audited rows
(created, changed, deleted for good: their candidates stay, their schedule goes with them).
Candidates are search results the sync job keeps current (not audited rows, docs/decisions.md
W11): dismissing or tracking one is an event row written in the same transaction.

Tracking a candidate makes it an opportunity project the way a source reference does
(`create_project` with the source and the candidate's lineage key as `external_opportunity_id`,
sync status pending): the tenant's project limit applies, a project already tracking that
lineage is refused (CONFLICT), and a polling configuration is created so the next sync refreshes
it by solicitation number and fills it in.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from models import ExternalOpportunitySource, OpportunityProject, SavedSearch, SavedSearchCandidate
from models.enums import CandidateStatus
from models.errors import Conflict, Invalid
from models.unit_of_work import UnitOfWork
from resolvers.common.validation import Failure, RuleContext, custom_rule, declare, validate
from resolvers.external_data.mutations import create_polling
from resolvers.opportunities.mutations import create_project, manual_source_id

__all__ = [
    "NOTICE_TYPES",
    "create_saved_search",
    "delete_saved_search",
    "dismiss_candidate",
    "track_candidate",
    "update_saved_search",
]

_SEARCH = "saved_searches"
_FIELDS = frozenset(
    {
        "name",
        "description",
        "external_source_id",
        "naics_codes",
        "set_aside_codes",
        "notice_types",
        "title_keywords",
        "agency",
        "is_active",
    }
)
_LISTS = ("naics_codes", "set_aside_codes", "notice_types", "title_keywords")
#: SAM.gov's procurement type codes (`ptype`): what a search may restrict notices to.
NOTICE_TYPES = frozenset({"u", "p", "a", "r", "s", "o", "g", "k", "i"})
#: Most entries of one list (a search is a query, not a catalogue).
MAX_ENTRIES = 50
_NAICS = re.compile(r"^[0-9]{2,6}$")
_SET_ASIDE = re.compile(r"^[A-Z0-9]{1,20}$")


# -- validation rules (docs/validation.md) --------------------------------------------------------


def _entries(ctx: RuleContext, name: str) -> list[Any]:
    value = ctx.value(name)
    return list(value) if isinstance(value, list | tuple) else []


async def _naics(ctx: RuleContext) -> Failure | None:
    if any(not isinstance(code, str) or not _NAICS.match(code) for code in _entries(ctx, "naics_codes")):
        return Failure("naics codes are 2 to 6 digits each (a NAICS code or its prefix).")
    return None


async def _set_asides(ctx: RuleContext) -> Failure | None:
    if any(not isinstance(code, str) or not _SET_ASIDE.match(code) for code in _entries(ctx, "set_aside_codes")):
        return Failure("set aside codes are SAM.gov set-aside codes (e.g. SBA, 8A, WOSB, SDVOSBC).")
    return None


async def _notice_types(ctx: RuleContext) -> Failure | None:
    if any(code not in NOTICE_TYPES for code in _entries(ctx, "notice_types")):
        return Failure(f"notice types are SAM.gov procurement type codes: {', '.join(sorted(NOTICE_TYPES))}.")
    return None


async def _keywords(ctx: RuleContext) -> Failure | None:
    words = _entries(ctx, "title_keywords")
    if any(not isinstance(word, str) or not word.strip() or len(word) > 100 for word in words):
        return Failure("title keywords are words of 1 to 100 characters.")
    return None


def _size(name: str) -> Any:
    async def check(ctx: RuleContext) -> Failure | None:
        if len(_entries(ctx, name)) > MAX_ENTRIES:
            return Failure(f"{name.replace('_', ' ')} lists at most {MAX_ENTRIES} entries.")
        return None

    return check


async def _searchable_source(ctx: RuleContext) -> Failure | None:
    source_id = ctx.value("external_source_id")
    if source_id is None or not ctx.given("external_source_id"):
        return None
    if source_id == manual_source_id(ctx.uow.tenant_id):
        return Failure('The "Manual entry" source cannot be searched.')
    active = (
        await ctx.uow.connection.execute(
            select(ExternalOpportunitySource.is_active).where(
                ExternalOpportunitySource.tenant_id == ctx.uow.tenant_id, ExternalOpportunitySource.id == source_id
            )
        )
    ).scalar()
    if active is False:
        return Failure("The source searched must be active.")
    return None


declare(
    custom_rule(_SEARCH, "naics_codes", "format", sentence="Each NAICS code of a saved search is 2 to 6 digits.",
                check=_naics, sample={"naics_codes": ["54151x"]}),
    custom_rule(_SEARCH, "set_aside_codes", "format",
                sentence="Each set-aside of a saved search is a SAM.gov set-aside code (capital letters and digits).",
                check=_set_asides, sample={"set_aside_codes": ["small business"]}),
    custom_rule(_SEARCH, "notice_types", "enum",
                sentence="Each notice type of a saved search is a SAM.gov procurement type code (o, p, k, r, s, "
                "g, i, a, u).", check=_notice_types, sample={"notice_types": ["x"]}),
    custom_rule(_SEARCH, "title_keywords", "format",
                sentence="Each title keyword of a saved search has 1 to 100 characters, not all blank.",
                check=_keywords, sample={"title_keywords": ["  "]}),
    *(
        custom_rule(_SEARCH, name, "size", sentence=f"A saved search lists at most {MAX_ENTRIES} "
                    f"{name.replace('_', ' ')}.", check=_size(name), sample={name: ["1" * 2] * (MAX_ENTRIES + 1)}
                    if name != "notice_types" else {name: ["o"] * (MAX_ENTRIES + 1)})
        for name in _LISTS
    ),
    custom_rule(_SEARCH, "external_source_id", "searchable",
                sentence='The source a saved search runs on is active and not the "Manual entry" source.',
                check=_searchable_source),
)


def _normalised(values: Mapping[str, Any]) -> dict[str, Any]:
    """Lists trimmed and de-duplicated (set-asides upper-cased, notice types lower-cased)."""
    out = {k: v for k, v in values.items() if k in _FIELDS}
    for name in _LISTS:
        if name in out:
            entries = out[name] or []
            if name == "set_aside_codes":
                entries = [e.strip().upper() if isinstance(e, str) else e for e in entries]
            elif name == "notice_types":
                entries = [e.strip().lower() if isinstance(e, str) else e for e in entries]
            elif name in ("naics_codes", "title_keywords"):
                entries = [e.strip() if isinstance(e, str) and e.strip() else e for e in entries]
            out[name] = list(dict.fromkeys(entries))
    for name in ("description", "agency"):
        if name in out and isinstance(out[name], str):
            out[name] = out[name].strip() or None
    if isinstance(out.get("name"), str):
        out["name"] = out["name"].strip()
    return out


async def _name_free(uow: UnitOfWork, name: str, own: uuid.UUID | None = None) -> None:
    stmt = select(SavedSearch.id).where(
        SavedSearch.tenant_id == uow.tenant_id, func.lower(SavedSearch.name) == name.lower()
    )
    found = (await uow.connection.execute(stmt)).scalar()
    if found is not None and found != own:
        raise Conflict("A saved search of that name exists already.", field="name")


# -- saved searches -------------------------------------------------------------------------------


async def create_saved_search(uow: UnitOfWork, values: Mapping[str, Any]) -> uuid.UUID:
    """A new saved search on an active source; its first run is due at once (its schedule row is
    made by the sync claim)."""
    values = _normalised({k: v for k, v in values.items() if v is not None})
    if not str(values.get("name") or "").strip():
        raise Invalid("name must not be empty.", field="name")
    await uow.find(ExternalOpportunitySource, values["external_source_id"], what="external source",
                   field="external_source_id")
    await validate(uow, _SEARCH, values)
    await _name_free(uow, values["name"])
    search = SavedSearch(tenant_id=uow.tenant_id, created_by=uow.actor_id)
    uow.assign(search, values)
    uow.add(search)
    await uow.flush()
    return search.id


async def update_saved_search(uow: UnitOfWork, search_id: uuid.UUID, seen: Any, changes: Mapping[str, Any]
                              ) -> uuid.UUID:
    """Change a saved search read at `seen`; given lists replace the stored ones."""
    search = await uow.lock(SavedSearch, search_id, updated_at=seen, what="saved search")
    values = _normalised(changes)
    if "name" in values and not str(values["name"] or "").strip():
        raise Invalid("name must not be empty.", field="name")
    for name in (*_LISTS, "is_active", "external_source_id"):
        if name in values and values[name] is None:
            raise Invalid(f"{name.replace('_', ' ')} cannot be null.", field=name)
    if "external_source_id" in values:
        await uow.find(ExternalOpportunitySource, values["external_source_id"], what="external source",
                       field="external_source_id")
    await validate(uow, _SEARCH, values, row=search)
    if "name" in values:
        await _name_free(uow, values["name"], own=search.id)
    if uow.assign(search, values):
        await uow.flush()
    return search.id


async def delete_saved_search(uow: UnitOfWork, search_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Delete a saved search read at `seen` for good: its schedule goes with it, its candidates stay
    (their decisions and the projects they became are kept; `savedSearch` becomes null)."""
    search = await uow.lock(SavedSearch, search_id, updated_at=seen, what="saved search")
    await uow.delete(search)
    await uow.flush()
    return search_id


# -- candidates -----------------------------------------------------------------------------------


def _decide(uow: UnitOfWork, candidate: SavedSearchCandidate, status: CandidateStatus) -> None:
    candidate.status = status.value
    candidate.decided_by = uow.actor_id
    candidate.decided_at = func.now()


async def dismiss_candidate(uow: UnitOfWork, candidate_id: uuid.UUID) -> uuid.UUID:
    """Dismiss a new candidate: it stays dismissed whatever later runs find (CONFLICT once decided)."""
    candidate = await uow.lock(SavedSearchCandidate, candidate_id, what="candidate")
    if candidate.status != CandidateStatus.NEW.value:
        raise Conflict(f"The candidate is {candidate.status} already.", field="id")
    _decide(uow, candidate, CandidateStatus.DISMISSED)
    await uow.flush()
    uow.record_event(
        "saved_search_candidate.dismissed",
        entity_type="saved_search_candidate",
        entity_id=candidate.id,
        description=f"candidate {candidate.lineage_key} dismissed",
        details={"lineage_key": candidate.lineage_key, "notice_id": candidate.notice_id,
                 "saved_search_id": None if candidate.saved_search_id is None else str(candidate.saved_search_id)},
    )
    return candidate.id


async def track_candidate(
    uow: UnitOfWork, candidate_id: uuid.UUID, values: Mapping[str, Any]
) -> uuid.UUID:
    """Make a candidate (new or dismissed) an opportunity project; returns the project's id.

    `values`: optional `project_name` (default: the notice title) and `external_source_id` (needed
    only when the saved search that found it was deleted). PROJECT_LIMIT when the tenant has no
    project slot left; CONFLICT when it is tracked already or a project tracks its lineage.
    """
    candidate = await uow.lock(SavedSearchCandidate, candidate_id, what="candidate")
    if candidate.status == CandidateStatus.TRACKED.value:
        raise Conflict("The candidate is tracked already.", field="id")
    source_id = values.get("external_source_id")
    if source_id is None and candidate.saved_search_id is not None:
        search = await uow.session.get(SavedSearch, candidate.saved_search_id)
        source_id = None if search is None else search.external_source_id
    if source_id is None:
        raise Invalid("The saved search that found the candidate is gone: name the source to track it on.",
                      field="external_source_id")
    project = _project_values(candidate, source_id, values.get("project_name"))
    await validate(uow, "opportunity_projects", project)
    await _refuse_tracked_lineage(uow, source_id, candidate.lineage_key)
    project_id = await create_project(uow, project)
    await create_polling(uow, {"opportunity_project_id": project_id, "external_source_id": source_id})
    _decide(uow, candidate, CandidateStatus.TRACKED)
    candidate.opportunity_project_id = project_id
    await uow.flush()
    uow.record_event(
        "saved_search_candidate.tracked",
        entity_type="saved_search_candidate",
        entity_id=candidate.id,
        description=f"candidate {candidate.lineage_key} tracked as an opportunity project",
        details={"lineage_key": candidate.lineage_key, "notice_id": candidate.notice_id,
                 "opportunity_project_id": str(project_id)},
    )
    return project_id


async def _refuse_tracked_lineage(uow: UnitOfWork, source_id: uuid.UUID, lineage_key: str) -> None:
    found = (
        await uow.connection.execute(
            select(OpportunityProject.project_name, OpportunityProject.archived_at).where(
                OpportunityProject.tenant_id == uow.tenant_id,
                OpportunityProject.external_source_id == source_id,
                OpportunityProject.external_opportunity_id == lineage_key,
            )
        )
    ).first()
    if found is None:
        return
    if found.archived_at is not None:
        raise Conflict(f"The archived project \u201c{found.project_name}\u201d tracks this opportunity: restore it.",
                       field="id")
    raise Conflict(f"The project \u201c{found.project_name}\u201d tracks this opportunity already.", field="id")


def _text(value: Any, limit: int) -> str | None:
    return value.strip()[:limit] or None if isinstance(value, str) else None


def _project_values(candidate: SavedSearchCandidate, source_id: uuid.UUID, name: str | None) -> dict[str, Any]:
    raw: Mapping[str, Any] = candidate.raw_json_data if isinstance(candidate.raw_json_data, dict) else {}
    title = _text(candidate.title, 500)
    project_name = (name or "").strip() or _text(title, 255) or candidate.lineage_key
    values: dict[str, Any] = {
        "external_source_id": source_id,
        "external_opportunity_id": candidate.lineage_key,
        "project_name": project_name,
        "title": title,
        "solicitation_number": _text(candidate.solicitation_number, 100),
        "agency_name": _text(candidate.agency, 255),
        "external_opportunity_url": _text(raw.get("uiLink"), 1000),
    }
    return {k: v for k, v in values.items() if v is not None}
