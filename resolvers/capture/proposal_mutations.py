"""Writes of proposals (create, update, archive, restore), of their entries, and the go/no-go decision.

As resolvers/capture/mutations.py: each function runs inside a unit of work and changes rows only
through it (the flush hook audits them); permissions are declared on the GraphQL fields.
Proposals are evidence like capture plans: archived and restored, never deleted (W14).

Entries: three JSON columns of a proposal hold lists edited one entry at a time, each entry with
a natural key (docs/api.md, Proposal entries):

- `review_stages`: `[{"stage", "scheduled", "status", "completed"?, "outcome"?, "lead"?}]`, one per
  colour-team stage (`ReviewStage`), keyed by `stage`;
- `compliance_matrix`: `{"rows": [{"ref", "requirement", "status", "volume"?, "owner"?, "notes"?}]}`
  (null until its first row), keyed by `ref`;
- `amendment_impact_log`: `[{"versionNumber", "changedFields", "impact", "impactLevel"?,
  "recordedAt", "recordedBy"}]`, keyed by `versionNumber` (the external data version the amendment
  produced); `recordedAt`/`recordedBy` are set here.

An entry is set (added, or replaced when its key is there) or removed under the proposal's row
lock (`SELECT ... FOR UPDATE`): concurrent edits of one proposal take turns, each reads the list
as the one before it left it, so no edit is lost. Their `updatedAt` is optional: given, it is
checked as on any update (stale: CONFLICT); left out, the edit applies to the current list.
Entries already stored are kept as they are; only the entry written is checked.
"""

from __future__ import annotations

import datetime
import enum
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from models import CapturePlan, OpportunityProject, Proposal
from models.enums import GoNoGoDecision, ImpactLevel
from models.errors import Conflict, Invalid, NotFound
from models.unit_of_work import UnitOfWork
from resolvers.activities.mutations import active_person, require_open_project
from resolvers.common.validation import (
    Failure,
    RuleContext,
    custom_rule,
    date_order,
    declare,
    enum_rule,
    length_rule,
    range_rule,
    validate,
)

__all__ = [
    "AMENDMENT_LIMIT",
    "COMPLIANCE_LIMIT",
    "TEXT_LIMIT",
    "Busy",
    "ComplianceStatus",
    "ReviewStage",
    "ReviewStageStatus",
    "archive_proposal",
    "create_proposal",
    "decide_plan",
    "remove_amendment_impact",
    "remove_compliance_entry",
    "remove_review_stage",
    "restore_proposal",
    "set_amendment_impact",
    "set_compliance_entry",
    "set_review_stage",
    "update_proposal",
]

_WHAT = "proposal"
#: Characters of an entry's free-text parts (requirement, outcome, impact, notes).
TEXT_LIMIT = 2000
#: Rows a compliance matrix may hold, and entries an amendment impact log may hold.
COMPLIANCE_LIMIT = 1000
AMENDMENT_LIMIT = 500
_KEY_LIMIT = 50
_FIELD_NAME_LIMIT = 100


class ReviewStage(enum.StrEnum):
    """A colour-team review of a proposal (Shipley), the key of a `review_stages` entry."""

    BLUE_TEAM = "blue_team"
    BLACK_HAT = "black_hat"
    PINK_TEAM = "pink_team"
    RED_TEAM = "red_team"
    GREEN_TEAM = "green_team"
    GOLD_TEAM = "gold_team"
    WHITE_GLOVE = "white_glove"
    FINAL_REVIEW = "final_review"


class ReviewStageStatus(enum.StrEnum):
    """Where a review stage stands."""

    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class ComplianceStatus(enum.StrEnum):
    """How far the proposal answers one requirement of the compliance matrix."""

    OPEN = "open"
    IN_PROGRESS = "in_progress"
    ADDRESSED = "addressed"
    COMPLIANT = "compliant"
    PARTIALLY_COMPLIANT = "partially_compliant"
    NON_COMPLIANT = "non_compliant"
    NOT_APPLICABLE = "not_applicable"


class Busy(Conflict):
    """The proposal was written by a transaction that began after this one: run the edit again in
    a new transaction (its `updated_at` must move forward, W12); the GraphQL field retries it."""


def _words(field: str) -> str:
    return field.rsplit(".", 1)[-1].replace("_", " ")


def _value(raw: Any) -> Any:
    return getattr(raw, "value", raw)


# -- validation rules (docs/validation.md) -------------------------------------------------------------


def _person(name: str) -> Any:
    async def check(ctx: RuleContext) -> Failure | None:
        user = ctx.values.get(name)
        if user is None:
            return None
        why = await active_person(ctx.uow, user)
        return None if why is None else Failure(why)

    return check


async def _team(ctx: RuleContext) -> Failure | None:
    members = ctx.values.get("team_members")
    if members is None:
        return None
    if len(members) > 100:
        return Failure("team members lists at most 100 users.")
    if len(set(members)) != len(members):
        return Failure("team members lists someone twice.")
    for member in members:
        why = await active_person(ctx.uow, member)
        if why is not None:
            return Failure(why)
    return None


def _not_blank(entity: str, name: str) -> Any:
    async def check(ctx: RuleContext) -> Failure | None:
        value = ctx.values.get(name)
        return Failure(f"{_words(name)} must not be empty.") if value is None or not str(value).strip() else None

    return custom_rule(
        entity, name, "blank", sentence=f"{_words(name).capitalize()} is given and not only spaces.",
        check=check, sample={name: "  "},
    )


async def _completed_with_status(ctx: RuleContext) -> Failure | None:
    if ctx.values.get("completed") is None:
        return None
    if _value(ctx.values.get("status")) == ReviewStageStatus.COMPLETED.value:
        return None
    return Failure("completed is given only with status COMPLETED.")


async def _changed_fields(ctx: RuleContext) -> Failure | None:
    fields = ctx.values.get("changed_fields") or []
    if len(fields) > 100:
        return Failure("changed fields lists at most 100 names.")
    if any(not isinstance(f, str) or not f.strip() or len(f) > _FIELD_NAME_LIMIT for f in fields):
        return Failure(f"each changed field name is 1 to {_FIELD_NAME_LIMIT} characters.")
    if len(set(fields)) != len(fields):
        return Failure("changed fields lists a name twice.")
    return None


async def _decision_rationale(ctx: RuleContext) -> Failure | None:
    decision = _value(ctx.values.get("go_no_go_decision"))
    rationale = ctx.values.get("decision_rationale")
    if decision in (GoNoGoDecision.GO.value, GoNoGoDecision.NO_GO.value):
        if rationale is None or not str(rationale).strip():
            return Failure("A GO or NO_GO decision needs its rationale.")
    return None


async def _decision_date_past(ctx: RuleContext) -> Failure | None:
    when = ctx.values.get("decision_date")
    if when is None:
        return None
    today: datetime.date = (await ctx.uow.connection.execute(select(func.current_date()))).scalar_one()
    return Failure("decision date must not be in the future.") if when > today else None


_ZERO = uuid.UUID(int=0)
REVIEW_STAGES = "proposal_review_stages"
COMPLIANCE_ENTRIES = "proposal_compliance_entries"
AMENDMENT_IMPACTS = "proposal_amendment_impacts"
#: The go/no-go decision of a capture plan (capturePlanDecide only: capturePlanUpdate keeps its own rules).
DECISIONS = "capture_plan_decisions"

declare(
    date_order("proposals", "submission_date", "final_submittal_date"),
    custom_rule(
        "proposals", "proposal_manager", "active",
        sentence="The proposal manager is an active person of the tenant (not deactivated, not the system user).",
        check=_person("proposal_manager"),
    ),
    custom_rule(
        "proposals", "team_members", "users",
        sentence="Team members are at most 100 distinct active people of the tenant.",
        check=_team, sample={"team_members": [_ZERO, _ZERO]},
    ),
    custom_rule(
        DECISIONS, "decision_rationale", "decided",
        sentence="A GO or NO_GO decision carries its rationale.",
        check=_decision_rationale, triggers=("go_no_go_decision", "decision_rationale"),
        sample={"go_no_go_decision": "go", "decision_rationale": " "},
    ),
    length_rule(DECISIONS, "decision_rationale", 10_000),
    custom_rule(
        DECISIONS, "decision_date", "past",
        sentence="A decision date is not in the future.", check=_decision_date_past,
        sample={"decision_date": datetime.date(9999, 1, 1)},
    ),
    enum_rule(REVIEW_STAGES, "stage", ReviewStage),
    enum_rule(REVIEW_STAGES, "status", ReviewStageStatus),
    date_order(
        REVIEW_STAGES, "scheduled", "completed",
        sample={"scheduled": datetime.date(2026, 2, 2), "completed": datetime.date(2026, 2, 1)},
    ),
    custom_rule(
        REVIEW_STAGES, "completed", "status",
        sentence="A review stage has a completed date only with status COMPLETED.",
        check=_completed_with_status, triggers=("completed", "status"),
        sample={"status": "scheduled", "completed": datetime.date(2026, 1, 1)},
    ),
    length_rule(REVIEW_STAGES, "outcome", TEXT_LIMIT),
    custom_rule(
        REVIEW_STAGES, "lead", "active",
        sentence="A review stage's lead is an active person of the tenant.", check=_person("lead"),
        sample={"lead": _ZERO},
    ),
    _not_blank(COMPLIANCE_ENTRIES, "ref"),
    length_rule(COMPLIANCE_ENTRIES, "ref", _KEY_LIMIT),
    _not_blank(COMPLIANCE_ENTRIES, "requirement"),
    length_rule(COMPLIANCE_ENTRIES, "requirement", TEXT_LIMIT),
    enum_rule(COMPLIANCE_ENTRIES, "status", ComplianceStatus),
    length_rule(COMPLIANCE_ENTRIES, "volume", _KEY_LIMIT),
    length_rule(COMPLIANCE_ENTRIES, "notes", TEXT_LIMIT),
    custom_rule(
        COMPLIANCE_ENTRIES, "owner", "active",
        sentence="A compliance row's owner is an active person of the tenant.", check=_person("owner"),
        sample={"owner": _ZERO},
    ),
    range_rule(AMENDMENT_IMPACTS, "version_number", low=1, high=1_000_000),
    custom_rule(
        AMENDMENT_IMPACTS, "changed_fields", "names",
        sentence=f"Changed fields are at most 100 distinct names of 1 to {_FIELD_NAME_LIMIT} characters.",
        check=_changed_fields, sample={"changed_fields": ["x", "x"]},
    ),
    _not_blank(AMENDMENT_IMPACTS, "impact"),
    length_rule(AMENDMENT_IMPACTS, "impact", TEXT_LIMIT),
    enum_rule(AMENDMENT_IMPACTS, "impact_level", ImpactLevel),
)


# -- proposals ---------------------------------------------------------------------------------------


async def create_proposal(uow: UnitOfWork, values: Mapping[str, Any]) -> uuid.UUID:
    """A new proposal for an open project (not archived, not closed); its manager and team are
    active users of the tenant."""
    values = {k: v for k, v in values.items() if v is not None}
    project_id = values.pop("opportunity_project_id")
    await require_open_project(uow, project_id, field="opportunity_project_id", what="proposals")
    await _check_proposal_values(uow, values)
    proposal = Proposal(tenant_id=uow.tenant_id, opportunity_project_id=project_id, created_by=uow.actor_id)
    uow.assign(proposal, values)
    uow.add(proposal)
    await uow.flush()
    return proposal.id


async def update_proposal(uow: UnitOfWork, proposal_id: uuid.UUID, seen: Any, changes: Mapping[str, Any]) -> uuid.UUID:
    """Change the given fields of a proposal read at `seen` (not archived)."""
    proposal = await _lock_unarchived(uow, proposal_id, seen)
    values = dict(changes)
    if "team_members" in values and values["team_members"] is None:
        values["team_members"] = []
    await _check_proposal_values(uow, values, proposal)
    if uow.assign(proposal, values):
        uow.assign(proposal, {"updated_by": uow.actor_id})
        await uow.flush()
    return proposal.id


async def archive_proposal(uow: UnitOfWork, proposal_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Archive a proposal read at `seen`: it is kept, hidden from default lists, and frozen."""
    proposal = await uow.lock(Proposal, proposal_id, updated_at=seen, what=_WHAT)
    if proposal.archived_at is not None:
        raise Invalid("The proposal is already archived.", field="id")
    uow.archive(proposal)
    await uow.flush()
    return proposal.id


async def restore_proposal(uow: UnitOfWork, proposal_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Bring an archived proposal read at `seen` back; its project must not be archived."""
    proposal = await uow.lock(Proposal, proposal_id, updated_at=seen, what=_WHAT)
    if proposal.archived_at is None:
        raise Invalid("The proposal is not archived.", field="id")
    project = await uow.find(OpportunityProject, proposal.opportunity_project_id, what="opportunity project")
    if project.archived_at is not None:
        raise Invalid("The proposal's opportunity project is archived: restore the project first.", field="id")
    uow.assign(proposal, {"archived_at": None, "archived_by": None, "updated_by": uow.actor_id})
    await uow.flush()
    return proposal.id


async def _lock_unarchived(uow: UnitOfWork, proposal_id: uuid.UUID, seen: Any) -> Proposal:
    proposal = await uow.lock(Proposal, proposal_id, updated_at=seen, what=_WHAT)
    if proposal.archived_at is not None:
        raise Invalid("The proposal is archived: it can no longer be changed.", field="id")
    return proposal


async def _check_proposal_values(uow: UnitOfWork, values: dict[str, Any], current: Proposal | None = None) -> None:
    await validate(uow, "proposals", values, row=current)
    if current is None and values.get("proposal_manager") is None:
        raise Invalid("proposal manager is required.", field="proposal_manager")
    if values.get("team_members") is not None:
        values["team_members"] = [str(m) for m in values["team_members"]]


# -- entries ---------------------------------------------------------------------------------------


async def _lock_for_entry(uow: UnitOfWork, proposal_id: uuid.UUID, seen: Any) -> Proposal:
    """The proposal locked FOR UPDATE, not archived; with `seen`, checked as any update's."""
    proposal = await _lock_unarchived(uow, proposal_id, seen)
    if seen is None:
        now: datetime.datetime = (await uow.connection.execute(select(func.now()))).scalar_one()
        if not now > proposal.updated_at:
            raise Busy("The proposal is being changed by another request: retry.", field="updated_at")
    return proposal


def _put(entries: list[Any], key: str, value: Any, entry: dict[str, Any]) -> tuple[list[Any], bool]:
    """`entries` with `entry` in place of the one whose `key` is `value` (or added at the end)."""
    out = list(entries)
    for i, old in enumerate(out):
        if isinstance(old, dict) and old.get(key) == value:
            out[i] = entry
            return out, False
    out.append(entry)
    return out, True


def _drop(entries: list[Any], key: str, value: Any, *, field: str, what: str) -> list[Any]:
    out = [e for e in entries if not (isinstance(e, dict) and e.get(key) == value)]
    if len(out) == len(entries):
        raise NotFound(f"The proposal has no {what} {value!s}.", field=field)
    return out


def _as_list(stored: Any) -> list[Any]:
    return list(stored) if isinstance(stored, list) else []


async def set_review_stage(
    uow: UnitOfWork, proposal_id: uuid.UUID, seen: Any, entry: Mapping[str, Any]
) -> uuid.UUID:
    """Add or replace the review stage `entry["stage"]` of a proposal."""
    proposal = await _lock_for_entry(uow, proposal_id, seen)
    await validate(uow, REVIEW_STAGES, entry, under="entry")
    stage = ReviewStage(_value(entry["stage"]))
    scheduled: datetime.date = entry["scheduled"]
    stored: dict[str, Any] = {
        "stage": stage.value,
        "scheduled": scheduled.isoformat(),
        "status": ReviewStageStatus(_value(entry["status"])).value,
    }
    completed: datetime.date | None = entry.get("completed")
    if completed is not None:
        stored["completed"] = completed.isoformat()
    if entry.get("outcome") is not None:
        stored["outcome"] = entry["outcome"]
    if entry.get("lead") is not None:
        stored["lead"] = str(entry["lead"])
    stages, added = _put(_as_list(proposal.review_stages), "stage", stage.value, stored)
    uow.assign(proposal, {"review_stages": stages, "updated_by": uow.actor_id})
    uow.label(proposal, "proposal.review_stage.set", f"review stage {stage.value} {'added' if added else 'replaced'}")
    await uow.flush()
    return proposal.id


async def remove_review_stage(uow: UnitOfWork, proposal_id: uuid.UUID, seen: Any, stage: Any) -> uuid.UUID:
    proposal = await _lock_for_entry(uow, proposal_id, seen)
    key = ReviewStage(_value(stage)).value
    stages = _drop(_as_list(proposal.review_stages), "stage", key, field="stage", what="review stage")
    uow.assign(proposal, {"review_stages": stages, "updated_by": uow.actor_id})
    uow.label(proposal, "proposal.review_stage.removed", f"review stage {key} removed")
    await uow.flush()
    return proposal.id


def _matrix_rows(stored: Any) -> list[Any]:
    if stored is None:
        return []
    if isinstance(stored, dict) and isinstance(stored.get("rows", []), list):
        return list(stored.get("rows", []))
    raise Invalid(
        "The proposal's compliance matrix is not in the documented shape ({\"rows\": [...]}); "
        "it cannot be edited by entry.",
        field="id",
    )


async def set_compliance_entry(
    uow: UnitOfWork, proposal_id: uuid.UUID, seen: Any, entry: Mapping[str, Any]
) -> uuid.UUID:
    """Add or replace the compliance matrix row `entry["ref"]` of a proposal."""
    proposal = await _lock_for_entry(uow, proposal_id, seen)
    rows = _matrix_rows(proposal.compliance_matrix)
    await validate(uow, COMPLIANCE_ENTRIES, entry, under="entry")
    ref = entry["ref"]
    stored: dict[str, Any] = {
        "ref": ref,
        "requirement": entry["requirement"],
        "status": ComplianceStatus(_value(entry["status"])).value,
    }
    for name in ("volume", "notes"):
        if entry.get(name) is not None:
            stored[name] = entry[name]
    if entry.get("owner") is not None:
        stored["owner"] = str(entry["owner"])
    rows, added = _put(rows, "ref", ref, stored)
    if added and len(rows) > COMPLIANCE_LIMIT:
        raise Invalid(f"A compliance matrix holds at most {COMPLIANCE_LIMIT} rows.", field="entry.ref")
    matrix = dict(proposal.compliance_matrix) if isinstance(proposal.compliance_matrix, dict) else {}
    matrix["rows"] = rows
    uow.assign(proposal, {"compliance_matrix": matrix, "updated_by": uow.actor_id})
    uow.label(proposal, "proposal.compliance_entry.set", f"compliance row {'added' if added else 'replaced'}")
    await uow.flush()
    return proposal.id


async def remove_compliance_entry(uow: UnitOfWork, proposal_id: uuid.UUID, seen: Any, ref: str) -> uuid.UUID:
    proposal = await _lock_for_entry(uow, proposal_id, seen)
    rows = _drop(_matrix_rows(proposal.compliance_matrix), "ref", ref, field="ref", what="compliance row")
    matrix = dict(proposal.compliance_matrix)
    matrix["rows"] = rows
    uow.assign(proposal, {"compliance_matrix": matrix, "updated_by": uow.actor_id})
    uow.label(proposal, "proposal.compliance_entry.removed", "compliance row removed")
    await uow.flush()
    return proposal.id


async def set_amendment_impact(
    uow: UnitOfWork, proposal_id: uuid.UUID, seen: Any, entry: Mapping[str, Any]
) -> uuid.UUID:
    """Add or replace the amendment impact entry `entry["version_number"]` of a proposal."""
    proposal = await _lock_for_entry(uow, proposal_id, seen)
    await validate(uow, AMENDMENT_IMPACTS, entry, under="entry")
    version: int = entry["version_number"]
    now: datetime.datetime = (await uow.connection.execute(select(func.now()))).scalar_one()
    stored: dict[str, Any] = {
        "versionNumber": version,
        "changedFields": list(entry.get("changed_fields") or []),
        "impact": entry["impact"],
        "recordedAt": now.isoformat(),
        "recordedBy": None if uow.actor_id is None else str(uow.actor_id),
    }
    level = entry.get("impact_level")
    if level is not None:
        stored["impactLevel"] = ImpactLevel(_value(level)).value
    log, added = _put(_as_list(proposal.amendment_impact_log), "versionNumber", version, stored)
    if added and len(log) > AMENDMENT_LIMIT:
        raise Invalid(f"An amendment impact log holds at most {AMENDMENT_LIMIT} entries.", field="entry.version_number")
    done = "added" if added else "replaced"
    uow.assign(proposal, {"amendment_impact_log": log, "updated_by": uow.actor_id})
    uow.label(proposal, "proposal.amendment_impact.set", f"amendment impact {version} {done}")
    await uow.flush()
    return proposal.id


async def remove_amendment_impact(uow: UnitOfWork, proposal_id: uuid.UUID, seen: Any, version: int) -> uuid.UUID:
    proposal = await _lock_for_entry(uow, proposal_id, seen)
    log = _drop(
        _as_list(proposal.amendment_impact_log), "versionNumber", version, field="version_number",
        what="amendment impact entry for version",
    )
    uow.assign(proposal, {"amendment_impact_log": log, "updated_by": uow.actor_id})
    uow.label(proposal, "proposal.amendment_impact.removed", f"amendment impact {version} removed")
    await uow.flush()
    return proposal.id


# -- capture plans: the go/no-go decision ----------------------------------------------------------------


async def decide_plan(
    uow: UnitOfWork,
    plan_id: uuid.UUID,
    seen: Any,
    *,
    decision: Any,
    rationale: str | None,
    decision_date: datetime.date | None = None,
) -> uuid.UUID:
    """Record the go/no-go decision of a capture plan read at `seen` (not archived).

    GO and NO_GO need a rationale and take a decision date (default: today, the database's
    date); the date may not be in the future. PENDING withdraws a decision: date and rationale
    are cleared (the previous ones stay in the history).
    """
    plan = await uow.lock(CapturePlan, plan_id, updated_at=seen, what="capture plan")
    if plan.archived_at is not None:
        raise Invalid("The capture plan is archived: it can no longer be changed.", field="id")
    value = GoNoGoDecision(_value(decision))
    if value is GoNoGoDecision.PENDING:
        if decision_date is not None or rationale is not None:
            field = "decision_date" if decision_date is not None else "rationale"
            raise Invalid("A PENDING decision takes no date and no rationale.", field=field)
        values: dict[str, Any] = {"go_no_go_decision": value.value, "decision_date": None, "decision_rationale": None}
    else:
        if decision_date is None:
            decision_date = (await uow.connection.execute(select(func.current_date()))).scalar_one()
        values = {"go_no_go_decision": value.value, "decision_date": decision_date, "decision_rationale": rationale}
        try:
            await validate(uow, "capture_plans", values, row=plan)
            await validate(uow, DECISIONS, values, row=plan)
        except Invalid as exc:
            if exc.field == "decision_rationale":
                exc.field = "rationale"
            raise
    if plan.go_no_go_decision == values["go_no_go_decision"] and plan.decision_date == values["decision_date"] and (
        plan.decision_rationale == values["decision_rationale"]
    ):
        raise Invalid("The plan already records this decision.", field="decision")
    uow.assign(plan, {**values, "updated_by": uow.actor_id})
    uow.label(plan, "capture_plan.decided", f"go/no-go decision: {value.value}")
    await uow.flush()
    return plan.id

