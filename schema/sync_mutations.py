"""Mutations of issue 14's API: saved searches, decisions on their candidates, and a source's
poll-now and connection test.

Each is one audited transaction (schema/mutation_kit.py); the domain functions are in
resolvers/sync/. Saved searches and dismissing candidates need `saved_search:manage`; tracking a
candidate makes an opportunity project, so it needs `opportunity:write` tenant-wide (as
`opportunityProjectCreate`), follows the tenant's project limit (PROJECT_LIMIT) and takes an
idempotency key. `sourcePollNow` and `sourceTestConnection` need `source:admin` and stay within
the source's API key budget (BUDGET_EXHAUSTED when no call is left today).
"""

from __future__ import annotations

import datetime
import functools
import uuid

import strawberry
from strawberry import relay
from strawberry.types.unset import UNSET

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models.idempotency import idempotent
from models.unit_of_work import UnitOfWork
from resolvers.sync import saved_searches, sources
from schema.context import GraphQLContext
from schema.external_data import ExternalOpportunitySource
from schema.mutation_kit import (
    IDEMPOTENCY_KEY,
    UPDATED_AT,
    Args,
    Deleted,
    Done,
    Entity,
    Extra,
    creates,
    mutation,
    ref_id,
    ref_row_id,
    removes,
    updates,
)
from schema.opportunities import OpportunityProject
from schema.sync import SavedSearch, SavedSearchCandidate
from schema.writes import describe_like
from sync.schedule import fingerprint_key

__all__ = [
    "CandidateDismissInput",
    "CandidateTrackInput",
    "SavedSearchCreateInput",
    "SavedSearchDeleteInput",
    "SavedSearchUpdateInput",
    "SourcePollNowInput",
    "SourceTestConnectionInput",
    "SyncMutation",
]


@strawberry.input(description="A new saved SAM.gov search: the source it runs on and its query (every part "
                  "optional; the parts given must all match).")
class SavedSearchCreateInput:
    name: str = strawberry.field(description="1 to 200 characters, unique in the tenant.")
    external_source_id: relay.GlobalID | None = ref_id("ExternalOpportunitySource")
    external_source_row_id: uuid.UUID | None = ref_row_id("ExternalOpportunitySource")
    description: str | None = None
    naics_codes: list[str] | None = strawberry.field(
        default=None, description="NAICS codes or prefixes (2 to 6 digits each), at most 50; a notice must carry "
        "one of them."
    )
    set_aside_codes: list[str] | None = strawberry.field(
        default=None, description="SAM.gov set-aside codes (e.g. SBA, 8A, WOSB), at most 50; a notice must have one."
    )
    notice_types: list[str] | None = strawberry.field(
        default=None, description="SAM.gov procurement type codes (o, p, k, r, s, g, i, a, u), at most 50."
    )
    title_keywords: list[str] | None = strawberry.field(
        default=None, description="Words that must all appear in a notice's title, at most 50."
    )
    agency: str | None = None
    is_active: bool | None = strawberry.field(default=None, description="Default true: the search runs at once.")
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to a saved search: only the fields given change; a list given replaces "
                  "the stored one.")
class SavedSearchUpdateInput:
    id: relay.GlobalID | None = ref_id("SavedSearch")
    row_id: uuid.UUID | None = ref_row_id("SavedSearch")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    name: str | None = UNSET
    external_source_id: relay.GlobalID | None = ref_id("ExternalOpportunitySource", required=False)
    external_source_row_id: uuid.UUID | None = ref_row_id("ExternalOpportunitySource")
    description: str | None = UNSET
    naics_codes: list[str] | None = UNSET
    set_aside_codes: list[str] | None = UNSET
    notice_types: list[str] | None = UNSET
    title_keywords: list[str] | None = UNSET
    agency: str | None = UNSET
    is_active: bool | None = strawberry.field(default=UNSET, description="false stops running the search.")


describe_like(SavedSearchCreateInput, SavedSearch)
describe_like(SavedSearchUpdateInput, SavedSearch)


@strawberry.input(description="Delete a saved search for good (its candidates and their decisions stay).")
class SavedSearchDeleteInput:
    id: relay.GlobalID | None = ref_id("SavedSearch")
    row_id: uuid.UUID | None = ref_row_id("SavedSearch")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)


@strawberry.input(description="Dismiss a new candidate (CONFLICT once it is dismissed or tracked).")
class CandidateDismissInput:
    id: relay.GlobalID | None = ref_id("SavedSearchCandidate")
    row_id: uuid.UUID | None = ref_row_id("SavedSearchCandidate")


@strawberry.input(description="Track a candidate (new or dismissed): it becomes an opportunity project.")
class CandidateTrackInput:
    id: relay.GlobalID | None = ref_id("SavedSearchCandidate")
    row_id: uuid.UUID | None = ref_row_id("SavedSearchCandidate")
    project_name: str | None = strawberry.field(
        default=None, description="The project's name (1 to 255 characters); default: the notice's title."
    )
    external_source_id: relay.GlobalID | None = ref_id(
        "ExternalOpportunitySource", required=False,
        description="The source to track it on; default (and needed only when that search was deleted): the "
        "source of the saved search that found it.",
    )
    external_source_row_id: uuid.UUID | None = ref_row_id("ExternalOpportunitySource")
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Poll a source now: its windowed search becomes due at once.")
class SourcePollNowInput:
    id: relay.GlobalID | None = ref_id("ExternalOpportunitySource")
    row_id: uuid.UUID | None = ref_row_id("ExternalOpportunitySource")


@strawberry.input(description="Test a source's connection with one call to it (counted in its key's budget).")
class SourceTestConnectionInput:
    id: relay.GlobalID | None = ref_id("ExternalOpportunitySource")
    row_id: uuid.UUID | None = ref_row_id("ExternalOpportunitySource")


async def _dismiss(uow: UnitOfWork, args: Args[CandidateDismissInput]) -> uuid.UUID:
    assert args.id is not None
    return await saved_searches.dismiss_candidate(uow, args.id)


async def _track(uow: UnitOfWork, args: Args[CandidateTrackInput]) -> uuid.UUID:
    # Idempotent here rather than by the kit: the request hash must name the candidate (the kit
    # leaves the target out of it), so one key cannot replay another candidate's project.
    candidate_id = args.id
    assert candidate_id is not None
    values = {**args.values, "candidate_id": candidate_id}
    return await idempotent(
        uow, args.input.idempotency_key, mutation="candidateTrack", values=values,
        create=lambda: saved_searches.track_candidate(uow, candidate_id, args.values),
    )


@functools.cache
def _fingerprint_key(secret_keys: str) -> bytes:
    return fingerprint_key(secret_keys)


def _fingerprint_hmac_key(context: GraphQLContext) -> bytes:
    """The HMAC key of API key fingerprints, derived from the server's secret keys as the sync workers do."""
    secret_keys: str = context.request.app.state.settings.secret_keys
    return _fingerprint_key(secret_keys)


async def _poll_now(uow: UnitOfWork, args: Args[SourcePollNowInput]) -> uuid.UUID:
    assert args.id is not None
    context = args.context
    return await sources.poll_now(
        uow, args.id, box=context.auth.secret_box, fingerprint_hmac_key=_fingerprint_hmac_key(context),
        now=context.auth.now(),
    )


async def _test_connection(args: Args[SourceTestConnectionInput]) -> Done:
    assert args.id is not None
    context = args.context
    outcome = await sources.test_connection(
        context.auth, context.principal, context.meta, args.id, fingerprint_hmac_key=_fingerprint_hmac_key(context),
        field="sourceTestConnection", permission=Permission.SOURCE_ADMIN.value,
    )
    return Done(
        id=args.id,
        extra={
            "succeeded": outcome.succeeded,
            "http_status": outcome.http_status,
            "response_time_ms": outcome.response_time_ms,
            "message": outcome.message,
        },
    )


@strawberry.type
class SyncMutation:
    saved_search_create = mutation(
        "savedSearchCreate",
        input=SavedSearchCreateInput,
        input_description="The search's name, source and query.",
        permission=Permission.SAVED_SEARCH_MANAGE,
        run=creates(saved_searches.create_saved_search),
        idempotent=True,
        returns=Entity(SavedSearch, "saved search created"),
        description="Save a SAM.gov search; the sync job runs it on its source's key and lists what it finds as "
        "candidates.",
    )
    saved_search_update = mutation(
        "savedSearchUpdate",
        input=SavedSearchUpdateInput,
        input_description="The search, the updatedAt read, and the fields to change.",
        permission=Permission.SAVED_SEARCH_MANAGE,
        run=updates(saved_searches.update_saved_search),
        returns=Entity(SavedSearch, "saved search as changed"),
        description="Change a saved search read at updatedAt.",
    )
    saved_search_delete = mutation(
        "savedSearchDelete",
        input=SavedSearchDeleteInput,
        input_description="The search and the updatedAt read.",
        permission=Permission.SAVED_SEARCH_MANAGE,
        run=removes(saved_searches.delete_saved_search),
        returns=Deleted(SavedSearch, "saved search"),
        description="Delete a saved search read at updatedAt; its candidates stay.",
    )
    candidate_dismiss = mutation(
        "candidateDismiss",
        input=CandidateDismissInput,
        input_description="The candidate.",
        permission=Permission.SAVED_SEARCH_MANAGE,
        run=_dismiss,
        returns=Entity(SavedSearchCandidate, "candidate, now dismissed"),
        description="Dismiss a new candidate: later runs of the searches never list it as new again.",
    )
    candidate_track = mutation(
        "candidateTrack",
        input=CandidateTrackInput,
        input_description="The candidate, and optionally the project's name.",
        permission=Permission.OPPORTUNITY_WRITE,
        run=_track,
        returns=Entity(OpportunityProject, "opportunity project the candidate became"),
        description="Track a candidate: it becomes an opportunity project on the search's source (sync status "
        "PENDING until its first poll fills it, which a polling configuration created with it schedules). "
        "PROJECT_LIMIT when the tenant's project limit is reached; CONFLICT when the candidate or its "
        "opportunity is tracked already.",
    )
    source_poll_now = mutation(
        "sourcePollNow",
        input=SourcePollNowInput,
        input_description="The source.",
        permission=Permission.SOURCE_ADMIN,
        run=_poll_now,
        returns=Entity(ExternalOpportunitySource, "source, its next poll due now"),
        description="Make an active source's windowed search due now (the next sync worker takes it); "
        "BUDGET_EXHAUSTED when its API key has no call left today.",
    )
    source_test_connection = mutation(
        "sourceTestConnection",
        input=SourceTestConnectionInput,
        input_description="The source.",
        permission=Permission.SOURCE_ADMIN,
        service=_test_connection,
        returns=Entity(ExternalOpportunitySource, "source, its health as this call left it"),
        extra={
            "succeeded": Extra(bool | None, "Whether the source answered the test call with success."),
            "http_status": Extra(int | None, "The HTTP status of the answer; null when none came."),
            "response_time_ms": Extra(int | None, "How long the call took, in milliseconds."),
            "message": Extra(str | None, "What went wrong (credentials masked); null on success."),
        },
        description="Call a source once (a small search, counted in its key's budget: BUDGET_EXHAUSTED when no "
        "call is left today) and report whether and how fast it answered; the call is logged and updates the "
        "source's health.",
    )
