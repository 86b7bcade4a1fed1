"""Matrix factories of the sync API's mutations: saved searches, decisions on their candidates, and
a source's poll-now (tests/support/mutation_matrix.py)."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.mutation_matrix import Case, MatrixContext, matrix


def _name(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


async def _search(ctx: MatrixContext) -> tuple[Any, Any]:
    source = await ctx.make("external_opportunity_sources")
    search = await ctx.make("saved_searches", {"external_opportunity_sources": source.id}, name=_name("Search"))
    return source, search


@matrix("savedSearchCreate", kind="create", table="saved_searches", entity_type="saved_search", action="CREATE",
        permission="saved_search:manage", denied_role="Viewer", history={"name", "naics_codes"},
        actor_roles=("BD Analyst",))
async def saved_search_create(ctx: MatrixContext) -> Case:
    source = await ctx.make("external_opportunity_sources")
    return Case({"input": {
        "name": _name("Matrix search"),
        **ctx.ref("externalSource", source.id, node="ExternalOpportunitySource"),
        "naicsCodes": ["541512"], "titleKeywords": ["cloud"],
    }}, tables=("external_opportunity_sources",))


@matrix("savedSearchUpdate", kind="update", table="saved_searches", entity_type="saved_search", action="UPDATE",
        permission="saved_search:manage", denied_role="Viewer", history={"agency"}, actor_roles=("Capture Manager",))
async def saved_search_update(ctx: MatrixContext) -> Case:
    _, row = await _search(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "agency": "NAVSEA"}}, entity_id=row.id)


@matrix("savedSearchDelete", kind="delete", table="saved_searches", entity_type="saved_search", action="DELETE",
        permission="saved_search:manage", denied_role="Viewer", history={"name"}, actor_roles=("BD Analyst",))
async def saved_search_delete(ctx: MatrixContext) -> Case:
    _, row = await _search(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id)


@matrix("candidateDismiss", kind="action", table="saved_search_candidates", entity_type="saved_search_candidate",
        action="saved_search_candidate.dismissed", permission="saved_search:manage", denied_role="Viewer",
        history=None, actor_roles=("BD Analyst",))
async def candidate_dismiss(ctx: MatrixContext) -> Case:
    _, search = await _search(ctx)
    row = await ctx.make("saved_search_candidates", {"saved_searches": search.id},
                         lineage_key=f"MX-{uuid.uuid4().hex[:10].upper()}")

    async def verify(stored: Any, payload: dict[str, Any]) -> None:
        assert stored.status == "dismissed" and stored.decided_at is not None

    return Case({"input": ctx.target(row.id)}, entity_id=row.id, verify=verify)


@matrix("candidateTrack", kind="create", table="opportunity_projects", entity_type="opportunity_project",
        action="CREATE", permission="opportunity:write", denied_role="Viewer",
        history={"project_name", "external_opportunity_id"}, actor_roles=("BD Analyst",), rows_in_request=3)
async def candidate_track(ctx: MatrixContext) -> Case:
    _, search = await _search(ctx)
    lineage = f"MX-{uuid.uuid4().hex[:10].upper()}"
    row = await ctx.make("saved_search_candidates", {"saved_searches": search.id}, lineage_key=lineage,
                         title="Matrix notice")

    async def verify(stored: Any, payload: dict[str, Any]) -> None:
        assert stored.external_opportunity_id == lineage and stored.sync_status == "pending"
        candidate = await ctx.one("SELECT status, opportunity_project_id FROM saved_search_candidates"
                                  " WHERE id = :c", c=row.id)
        assert (candidate.status, candidate.opportunity_project_id) == ("tracked", stored.id)

    return Case({"input": ctx.target(row.id)}, verify=verify,
                tables=("saved_search_candidates", "polling_configurations"))


@matrix("sourcePollNow", kind="action", table="external_opportunity_sources", entity_type="source_schedule",
        action="sync.source.poll_requested", permission="source:admin", denied_role="Capture Manager",
        history=None)
async def source_poll_now(ctx: MatrixContext) -> Case:
    source = await ctx.make("external_opportunity_sources")
    return Case({"input": ctx.target(source.id)}, entity_id=source.id, tables=("sync_schedules",))


@matrix("sourceTestConnection", kind="action", table="external_opportunity_sources",
        entity_type="source_connection_test", action="sync.source.connection_tested", permission="source:admin",
        denied_role="Capture Manager", history=None)
async def source_test_connection(ctx: MatrixContext) -> Case:
    # A loopback address off the allow-list: the guard refuses it without connecting (the test fails,
    # the mutation succeeds and reports it).
    source = await ctx.make("external_opportunity_sources", api_endpoint="http://127.0.0.2:9/v2")

    async def verify(stored: Any, payload: dict[str, Any]) -> None:
        assert payload["succeeded"] is False and payload["message"]

    return Case({"input": ctx.target(source.id)}, entity_id=source.id, verify=verify,
                tables=("api_integration_logs", "sync_key_budgets"))
