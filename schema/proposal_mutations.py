"""Mutations of proposals and their entries, and the go/no-go decision of a capture plan.

Proposals: create, update, archive, restore (never deleted, docs/decisions.md W14); they need
`proposal:write`, a grant on the proposal's project counting. Entries (review stages, compliance
matrix rows, amendment impacts) are set or removed one at a time under the proposal's row lock
(resolvers/capture/proposal_mutations.py): `updatedAt` is optional there, so that edits of
different entries made at the same time all apply. `capturePlanDecide` records the go/no-go
decision (`capture_plan:write`) as its own audited change.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import strawberry
from sqlalchemy import Table
from strawberry import relay
from strawberry.types.unset import UNSET

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models import CapturePlan as CapturePlanModel
from models import OpportunityProject as ProjectModel
from models import Proposal as ProposalModel
from models.enums import GoNoGoDecision, ImpactLevel, ProposalStatus
from models.errors import DomainError, Invalid, NotFound
from models.unit_of_work import UnitOfWork
from resolvers.capture import proposal_mutations as domain
from resolvers.capture.proposal_mutations import ComplianceStatus, ReviewStage, ReviewStageStatus
from schema import mutation_kit
from schema.capture import CapturePlan, Proposal
from schema.enums import describe_values
from schema.mutation_kit import (
    IDEMPOTENCY_KEY,
    Args,
    Entity,
    mutation,
    node_id,
    ref_project,
    removes,
    resolve_ref,
    target_project,
)
from schema.writes import describe_like, write

__all__ = [
    "CapturePlanDecideInput",
    "ProposalAmendmentImpactInput",
    "ProposalAmendmentImpactRemoveInput",
    "ProposalAmendmentImpactSetInput",
    "ProposalArchiveInput",
    "ProposalComplianceEntryInput",
    "ProposalComplianceEntryRemoveInput",
    "ProposalComplianceEntrySetInput",
    "ProposalCreateInput",
    "ProposalMutation",
    "ProposalRestoreInput",
    "ProposalReviewStageInput",
    "ProposalReviewStageRemoveInput",
    "ProposalReviewStageSetInput",
    "ProposalUpdateInput",
]

_PROPOSALS: Table = ProposalModel.__table__
_PLANS: Table = CapturePlanModel.__table__
_PROJECTS: Table = ProjectModel.__table__
_UPDATED_AT = "The updatedAt you read (exact to the microsecond); CONFLICT if the row changed since."
_ENTRY_UPDATED_AT = (
    "Optional: the proposal's updatedAt you read; given, CONFLICT if the proposal changed since. Left out, the "
    "entry is written over the proposal as it is now (concurrent edits of other entries are kept)."
)
#: How many times an entry edit runs again when a concurrent edit of the proposal committed under it.
_ENTRY_ATTEMPTS = 8

T = TypeVar("T")
_log = logging.getLogger(__name__)

strawberry.enum(domain.ReviewStage, description="A colour-team review of a proposal (Shipley).")
strawberry.enum(domain.ReviewStageStatus, description="Where a review stage stands.")
strawberry.enum(
    domain.ComplianceStatus, description="How far the proposal answers one requirement of the compliance matrix."
)
describe_values(
    domain.ReviewStage,
    {
        "BLUE_TEAM": "Reviews the capture strategy and win themes before writing starts.",
        "BLACK_HAT": "Role-plays the competitors to find their likely approach.",
        "PINK_TEAM": "Reviews the storyboards / first draft for compliance and approach.",
        "RED_TEAM": "Scores the near-final draft as the government evaluators would.",
        "GREEN_TEAM": "Reviews the cost / price volume.",
        "GOLD_TEAM": "Executive review and approval of the final proposal and price.",
        "WHITE_GLOVE": "Final production check: format, page counts, packaging.",
        "FINAL_REVIEW": "The last check before submission.",
    },
)
describe_values(
    domain.ReviewStageStatus,
    {
        "SCHEDULED": "Planned for its scheduled date.",
        "IN_PROGRESS": "Under way.",
        "COMPLETED": "Held (see `completed` and `outcome`).",
        "CANCELLED": "Will not be held.",
    },
)
describe_values(
    domain.ComplianceStatus,
    {
        "OPEN": "Not yet worked on.",
        "IN_PROGRESS": "Being written.",
        "ADDRESSED": "Answered in the proposal, not yet checked.",
        "COMPLIANT": "Answered and checked compliant.",
        "PARTIALLY_COMPLIANT": "Answered in part.",
        "NON_COMPLIANT": "The proposal does not meet it (a deliberate exception, or a gap).",
        "NOT_APPLICABLE": "Does not apply to this proposal.",
    },
)


# -- references and refusals ------------------------------------------------------------------------


async def _renamed(work: Awaitable[T], names: Mapping[str, str]) -> T:
    """Run `work`; a refusal on a domain field in `names` is reported on the input field it came from."""
    try:
        return await work
    except DomainError as exc:
        if exc.field is not None and exc.field in names:
            exc.field = names[exc.field]
        raise


def _user(value: Any, name: str, *, under: str = "") -> tuple[Any, str]:
    """The user row id named by `<name>_id` / `<name>_row_id` of `value` (UNSET when left out), and
    the field the caller used (for errors)."""
    row, given = getattr(value, f"{name}_row_id", UNSET), getattr(value, f"{name}_id", UNSET)
    by_row = (row is not None and row is not UNSET) or (row is None and given is UNSET)
    used = f"{name}_row_id" if by_row else f"{name}_id"
    try:
        return resolve_ref(value, name, "User", required=False), under + used
    except DomainError as exc:
        exc.field = under + (exc.field or used)
        raise


def _team(value: Any) -> tuple[Any, str]:
    """The team members' row ids from `teamMemberIds` (global ids) or `teamMemberRowIds` (UNSET: neither)."""
    given = getattr(value, "team_member_ids", UNSET)
    raw = getattr(value, "team_member_row_ids", UNSET)
    if given is not UNSET and raw is not UNSET:
        raise Invalid("Give teamMemberIds or teamMemberRowIds, not both.", field="team_member_ids")
    if raw is not UNSET:
        return raw, "team_member_row_ids"
    if given is UNSET or given is None:
        return given, "team_member_ids"
    ids: list[uuid.UUID] = []
    for gid in given:
        if gid.type_name != "User":
            raise NotFound("teamMemberIds lists a global id that is not a User's.", field="team_member_ids")
        try:
            ids.append(uuid.UUID(gid.node_id))
        except ValueError:
            raise NotFound("teamMemberIds lists a global id of no User.", field="team_member_ids") from None
    return ids, "team_member_ids"


def _proposal_values(args: Args[Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The proposal columns an input sets, and domain field -> input field for refusals."""
    values = {
        k: v for k, v in args.values.items()
        if k not in ("proposal_manager_id", "team_member_ids", "team_member_row_ids")
    }
    names: dict[str, str] = {}
    manager, names["proposal_manager"] = _user(args.input, "proposal_manager")
    if manager is not UNSET:
        values["proposal_manager"] = manager
    members, names["team_members"] = _team(args.input)
    if members is not UNSET:
        values["team_members"] = members
    return values, names


# -- inputs ---------------------------------------------------------------------------------------


@strawberry.input(description="A new proposal for an opportunity project (open: not archived, not closed).")
class ProposalCreateInput:
    opportunity_project_id: relay.GlobalID | None = node_id("OpportunityProject")
    opportunity_project_row_id: uuid.UUID | None = mutation_kit.row_id("OpportunityProject")
    proposal_title: str = strawberry.field(description="1 to 255 characters.")
    status: ProposalStatus | None = strawberry.field(default=None, description="Default DRAFT.")
    proposal_manager_id: relay.GlobalID | None = node_id(
        "User", description="The proposal manager's global id (an active user); or proposalManagerRowId."
    )
    proposal_manager_row_id: uuid.UUID | None = mutation_kit.row_id("User")
    team_member_ids: list[relay.GlobalID] | None = strawberry.field(
        default=UNSET, description="The writing team: global ids of at most 100 distinct active users."
    )
    team_member_row_ids: list[uuid.UUID] | None = strawberry.field(
        default=UNSET, description="The writing team by rowId, instead of teamMemberIds."
    )
    submission_date: datetime.datetime | None = strawberry.field(
        default=None, description="When it was submitted; not after finalSubmittalDate."
    )
    final_submittal_date: datetime.datetime | None = None
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to a proposal (not archived): only the fields given change; null clears.")
class ProposalUpdateInput:
    id: relay.GlobalID | None = node_id("Proposal")
    row_id: uuid.UUID | None = mutation_kit.row_id("Proposal")
    updated_at: datetime.datetime = strawberry.field(description=_UPDATED_AT)
    proposal_title: str | None = UNSET
    status: ProposalStatus | None = UNSET
    proposal_manager_id: relay.GlobalID | None = node_id(
        "User", required=False, description="A new proposal manager's global id (an active user)."
    )
    proposal_manager_row_id: uuid.UUID | None = mutation_kit.row_id("User")
    team_member_ids: list[relay.GlobalID] | None = strawberry.field(
        default=UNSET, description="The whole writing team (global ids of active users); null or [] for none."
    )
    team_member_row_ids: list[uuid.UUID] | None = strawberry.field(
        default=UNSET, description="The whole writing team by rowId, instead of teamMemberIds."
    )
    submission_date: datetime.datetime | None = UNSET
    final_submittal_date: datetime.datetime | None = UNSET


describe_like(ProposalCreateInput, Proposal)
describe_like(ProposalUpdateInput, Proposal)


@strawberry.input(description="Archive a proposal: it is kept (evidence), hidden from default lists and frozen.")
class ProposalArchiveInput:
    id: relay.GlobalID | None = node_id("Proposal")
    row_id: uuid.UUID | None = mutation_kit.row_id("Proposal")
    updated_at: datetime.datetime = strawberry.field(description=_UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description="Recorded in the audit log (255 characters).")


@strawberry.input(description="Bring an archived proposal back (its project must not be archived).")
class ProposalRestoreInput:
    id: relay.GlobalID | None = node_id("Proposal")
    row_id: uuid.UUID | None = mutation_kit.row_id("Proposal")
    updated_at: datetime.datetime = strawberry.field(description=_UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description="Recorded in the audit log (255 characters).")


@strawberry.input(description="One review stage (colour team) of a proposal; `stage` is its key.")
class ProposalReviewStageInput:
    stage: ReviewStage = strawberry.field(description="Which review: the entry's key (one entry per stage).")
    scheduled: datetime.date = strawberry.field(description="The day it is planned for.")
    status: ReviewStageStatus = strawberry.field(description="Where it stands.")
    completed: datetime.date | None = strawberry.field(
        default=None, description="The day it was held: only with status COMPLETED, not before scheduled."
    )
    outcome: str | None = strawberry.field(default=None, description="What the review found (2000 characters).")
    lead_id: relay.GlobalID | None = node_id("User", required=False, description="Who leads the review (a User).")
    lead_row_id: uuid.UUID | None = mutation_kit.row_id("User")


@strawberry.input(description="One row of a proposal's compliance matrix; `ref` is its key.")
class ProposalComplianceEntryInput:
    ref: str = strawberry.field(description="The requirement's reference in the solicitation, e.g. L.3.1 (50 "
                                "characters): the entry's key.")
    requirement: str = strawberry.field(description="What is required (2000 characters).")
    status: ComplianceStatus = strawberry.field(description="How far the proposal answers it.")
    volume: str | None = strawberry.field(default=None, description="The proposal volume answering it (50).")
    owner_id: relay.GlobalID | None = node_id("User", required=False, description="Who answers it (a User).")
    owner_row_id: uuid.UUID | None = mutation_kit.row_id("User")
    notes: str | None = strawberry.field(default=None, description="Notes (2000 characters).")


@strawberry.input(description="What one amendment of the solicitation changed for a proposal; `versionNumber` is "
                  "its key.")
class ProposalAmendmentImpactInput:
    version_number: int = strawberry.field(
        description="The external data version the amendment produced (1 to 1000000): the entry's key."
    )
    changed_fields: list[str] = strawberry.field(
        description="The solicitation fields it changed (at most 100 distinct names of 1 to 100 characters)."
    )
    impact: str = strawberry.field(description="What it means for the proposal (2000 characters).")
    impact_level: ImpactLevel | None = strawberry.field(default=None, description="How much it matters.")


@strawberry.input(description="Add a review stage to a proposal (not archived), or replace the one of that stage.")
class ProposalReviewStageSetInput:
    id: relay.GlobalID | None = node_id("Proposal")
    row_id: uuid.UUID | None = mutation_kit.row_id("Proposal")
    updated_at: datetime.datetime | None = strawberry.field(default=None, description=_ENTRY_UPDATED_AT)
    entry: ProposalReviewStageInput = strawberry.field(description="The review stage.")


@strawberry.input(description="Remove a review stage from a proposal (not archived).")
class ProposalReviewStageRemoveInput:
    id: relay.GlobalID | None = node_id("Proposal")
    row_id: uuid.UUID | None = mutation_kit.row_id("Proposal")
    updated_at: datetime.datetime | None = strawberry.field(default=None, description=_ENTRY_UPDATED_AT)
    stage: ReviewStage = strawberry.field(description="The stage whose entry is removed (NOT_FOUND if none).")


@strawberry.input(description="Add a row to a proposal's compliance matrix, or replace the row of that ref.")
class ProposalComplianceEntrySetInput:
    id: relay.GlobalID | None = node_id("Proposal")
    row_id: uuid.UUID | None = mutation_kit.row_id("Proposal")
    updated_at: datetime.datetime | None = strawberry.field(default=None, description=_ENTRY_UPDATED_AT)
    entry: ProposalComplianceEntryInput = strawberry.field(description="The compliance matrix row.")


@strawberry.input(description="Remove a row from a proposal's compliance matrix.")
class ProposalComplianceEntryRemoveInput:
    id: relay.GlobalID | None = node_id("Proposal")
    row_id: uuid.UUID | None = mutation_kit.row_id("Proposal")
    updated_at: datetime.datetime | None = strawberry.field(default=None, description=_ENTRY_UPDATED_AT)
    ref: str = strawberry.field(description="The ref of the row removed (NOT_FOUND if none).")


@strawberry.input(description="Add an entry to a proposal's amendment impact log, or replace the one of that version.")
class ProposalAmendmentImpactSetInput:
    id: relay.GlobalID | None = node_id("Proposal")
    row_id: uuid.UUID | None = mutation_kit.row_id("Proposal")
    updated_at: datetime.datetime | None = strawberry.field(default=None, description=_ENTRY_UPDATED_AT)
    entry: ProposalAmendmentImpactInput = strawberry.field(description="The amendment impact entry.")


@strawberry.input(description="Remove an entry from a proposal's amendment impact log.")
class ProposalAmendmentImpactRemoveInput:
    id: relay.GlobalID | None = node_id("Proposal")
    row_id: uuid.UUID | None = mutation_kit.row_id("Proposal")
    updated_at: datetime.datetime | None = strawberry.field(default=None, description=_ENTRY_UPDATED_AT)
    version_number: int = strawberry.field(description="The version whose entry is removed (NOT_FOUND if none).")


@strawberry.input(description="Record the go/no-go decision of a capture plan (not archived).")
class CapturePlanDecideInput:
    id: relay.GlobalID | None = node_id("CapturePlan")
    row_id: uuid.UUID | None = mutation_kit.row_id("CapturePlan")
    updated_at: datetime.datetime = strawberry.field(description=_UPDATED_AT)
    decision: GoNoGoDecision = strawberry.field(
        description="GO or NO_GO (with a rationale), or PENDING to withdraw the decision (date and rationale cleared)."
    )
    decision_date: datetime.date | None = strawberry.field(
        default=None, description="The day it was taken: default today; not in the future. Not with PENDING."
    )
    rationale: str | None = strawberry.field(
        default=None, description="Why: required with GO and NO_GO (10000 characters), not with PENDING."
    )
    reason: str | None = strawberry.field(default=None, description="Recorded in the audit log (255 characters).")


# -- domain calls -----------------------------------------------------------------------------------


async def _create(uow: UnitOfWork, args: Args[ProposalCreateInput]) -> uuid.UUID:
    values, names = _proposal_values(args)
    return await _renamed(domain.create_proposal(uow, values), names)


async def _update(uow: UnitOfWork, args: Args[ProposalUpdateInput]) -> uuid.UUID:
    assert args.id is not None
    values, names = _proposal_values(args)
    return await _renamed(domain.update_proposal(uow, args.id, args.updated_at, values), names)


async def _decide(uow: UnitOfWork, args: Args[CapturePlanDecideInput]) -> uuid.UUID:
    assert args.id is not None
    value = args.input
    return await _renamed(
        domain.decide_plan(
            uow, args.id, args.updated_at, decision=value.decision, rationale=value.rationale,
            decision_date=value.decision_date,
        ),
        {"go_no_go_decision": "decision"},
    )


def _entry_values(entry: Any, users: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    """An entry input as the domain takes it (user references resolved), and its refusal names."""
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, given in vars(entry).items():
        if any(name in (f"{user}_id", f"{user}_row_id") for user in users):
            continue
        values[name] = given
    for user in users:
        found, used = _user(entry, user, under="entry.")
        values[user] = None if found is UNSET else found
        names[f"entry.{user}"] = used
    return values, names


def _entry_edit(
    change: Callable[[UnitOfWork, Args[Any]], Awaitable[uuid.UUID]],
) -> Callable[[Args[Any]], Awaitable[uuid.UUID]]:
    """An entry edit in its own unit of work, run again (a new transaction) while the proposal was
    written by a transaction that began after this one's (domain.Busy; W12 keeps updated_at moving
    forward): concurrent edits of a proposal's entries all apply, one after the other."""

    async def service(args: Args[Any]) -> uuid.UUID:
        for attempt in range(_ENTRY_ATTEMPTS):
            try:
                return await write(
                    args.info, lambda uow: change(uow, args), permissions=(Permission.PROPOSAL_WRITE,)
                )
            except domain.Busy:
                if attempt == _ENTRY_ATTEMPTS - 1:
                    raise
                _log.info("%s: the proposal was written under this edit; running it again", args.info.field_name)
        raise AssertionError("unreachable")

    return service


async def _stage_set(uow: UnitOfWork, args: Args[ProposalReviewStageSetInput]) -> uuid.UUID:
    assert args.id is not None
    entry, names = _entry_values(args.input.entry, ("lead",))
    return await _renamed(domain.set_review_stage(uow, args.id, args.updated_at, entry), names)


async def _stage_remove(uow: UnitOfWork, args: Args[ProposalReviewStageRemoveInput]) -> uuid.UUID:
    assert args.id is not None
    return await domain.remove_review_stage(uow, args.id, args.updated_at, args.input.stage)


async def _compliance_set(uow: UnitOfWork, args: Args[ProposalComplianceEntrySetInput]) -> uuid.UUID:
    assert args.id is not None
    entry, names = _entry_values(args.input.entry, ("owner",))
    return await _renamed(domain.set_compliance_entry(uow, args.id, args.updated_at, entry), names)


async def _compliance_remove(uow: UnitOfWork, args: Args[ProposalComplianceEntryRemoveInput]) -> uuid.UUID:
    assert args.id is not None
    return await domain.remove_compliance_entry(uow, args.id, args.updated_at, args.input.ref)


async def _impact_set(uow: UnitOfWork, args: Args[ProposalAmendmentImpactSetInput]) -> uuid.UUID:
    assert args.id is not None
    entry, _ = _entry_values(args.input.entry, ())
    return await domain.set_amendment_impact(uow, args.id, args.updated_at, entry)


async def _impact_remove(uow: UnitOfWork, args: Args[ProposalAmendmentImpactRemoveInput]) -> uuid.UUID:
    assert args.id is not None
    return await domain.remove_amendment_impact(uow, args.id, args.updated_at, args.input.version_number)


_WRITE = Permission.PROPOSAL_WRITE
_OF_PROPOSAL = target_project(_PROPOSALS)


def _entry_mutation(name: str, input: type, change: Any, description: str, what: str) -> Any:
    return mutation(
        name,
        input=input,
        permission=_WRITE,
        project=_OF_PROPOSAL,
        service=_entry_edit(change),
        returns=Entity(Proposal, what),
        description=description,
    )


@strawberry.type
class ProposalMutation:
    proposal_create = mutation(
        "proposalCreate",
        input=ProposalCreateInput,
        input_description="The project the proposal is for and the proposal's fields.",
        permission=_WRITE,
        project=ref_project("opportunity_project", _PROJECTS),
        run=_create,
        idempotent=True,
        returns=Entity(Proposal, "proposal created"),
        description="Create a proposal for an opportunity project (not archived, not closed).",
    )
    proposal_update = mutation(
        "proposalUpdate",
        input=ProposalUpdateInput,
        input_description="The proposal, the updatedAt read, and the fields to change.",
        permission=_WRITE,
        project=_OF_PROPOSAL,
        run=_update,
        returns=Entity(Proposal, "proposal as changed"),
        description="Change fields of a proposal (not archived) read at updatedAt.",
    )
    proposal_archive = mutation(
        "proposalArchive",
        input=ProposalArchiveInput,
        input_description="The proposal and the updatedAt read.",
        permission=_WRITE,
        project=_OF_PROPOSAL,
        run=removes(domain.archive_proposal),
        returns=Entity(Proposal, "proposal, now archived"),
        description="Archive a proposal read at updatedAt (proposals are never deleted).",
    )
    proposal_restore = mutation(
        "proposalRestore",
        input=ProposalRestoreInput,
        input_description="The archived proposal and the updatedAt read.",
        permission=_WRITE,
        project=_OF_PROPOSAL,
        run=removes(domain.restore_proposal),
        returns=Entity(Proposal, "proposal, now restored"),
        description="Restore an archived proposal read at updatedAt.",
    )
    proposal_review_stage_set = _entry_mutation(
        "proposalReviewStageSet", ProposalReviewStageSetInput, _stage_set,
        "Add or replace one review stage (colour team) of a proposal, under the proposal's row lock.",
        "proposal with the review stage set",
    )
    proposal_review_stage_remove = _entry_mutation(
        "proposalReviewStageRemove", ProposalReviewStageRemoveInput, _stage_remove,
        "Remove one review stage of a proposal, under the proposal's row lock.",
        "proposal without the review stage",
    )
    proposal_compliance_entry_set = _entry_mutation(
        "proposalComplianceEntrySet", ProposalComplianceEntrySetInput, _compliance_set,
        "Add or replace one row of a proposal's compliance matrix, under the proposal's row lock.",
        "proposal with the compliance row set",
    )
    proposal_compliance_entry_remove = _entry_mutation(
        "proposalComplianceEntryRemove", ProposalComplianceEntryRemoveInput, _compliance_remove,
        "Remove one row of a proposal's compliance matrix, under the proposal's row lock.",
        "proposal without the compliance row",
    )
    proposal_amendment_impact_set = _entry_mutation(
        "proposalAmendmentImpactSet", ProposalAmendmentImpactSetInput, _impact_set,
        "Add or replace one entry of a proposal's amendment impact log, under the proposal's row lock.",
        "proposal with the amendment impact set",
    )
    proposal_amendment_impact_remove = _entry_mutation(
        "proposalAmendmentImpactRemove", ProposalAmendmentImpactRemoveInput, _impact_remove,
        "Remove one entry of a proposal's amendment impact log, under the proposal's row lock.",
        "proposal without the amendment impact",
    )
    capture_plan_decide = mutation(
        "capturePlanDecide",
        input=CapturePlanDecideInput,
        input_description="The plan, the updatedAt read, and the decision with its date and rationale.",
        permission=Permission.CAPTURE_PLAN_WRITE,
        project=target_project(_PLANS),
        run=_decide,
        returns=Entity(CapturePlan, "capture plan with its decision"),
        description="Record the go/no-go decision of a capture plan read at updatedAt (its own audited change: "
        "capture_plan.decided).",
    )
