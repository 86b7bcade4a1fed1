"""A repeated query whose root fields all compiled is answered without the executor, with the same answers.

The first request of a document text runs the whole pipeline (parse, limits, validation, input guard,
CompiledReads); a repeat is served by the view from the prepared operation (schema/context.py), which
coerces the variables with graphql-core, applies the cost limit and the input guard to them, and runs
the compiled statements on the request's connection. Whatever it would answer differently (a refused
variable, a cost over the limit, a refused string, a field that does not compile for the caller) goes
to the normal pipeline, so the refusal is the executor's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from schema.compiled.runner import PreparedCache
from tests.compiled.conftest import Caller, Clients, World, global_id
from tests.compiled.differential import Comparison, compiled_keys, run_both
from tests.support.http import make_login_user
from tests.support.roundtrips import count_round_trips

ROOT = Path(__file__).resolve().parents[2]
BY_ID = (
    "query PreparedProject($id: ID!) { node(id: $id) { __typename"
    " ... on OpportunityProject { id rowId projectName pipelineStage winProbabilityScore } } }"
)


def _prepared(clients: Clients) -> PreparedCache:
    cache = clients.on_app.state.graphql.prepared
    assert isinstance(cache, PreparedCache)
    return cache


async def _post(client: httpx.AsyncClient, caller: Caller, document: str, variables: dict[str, Any]) -> httpx.Response:
    return await client.post(
        "/graphql", json={"query": document, "variables": variables},
        headers={"authorization": f"Bearer {caller.token}"},
    )


def _body(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.text)
    body.pop("extensions", None)
    return body


async def test_repeats_are_answered_without_the_executor_the_same_for_every_caller(
    clients: Clients, callers: dict[str, Caller], world: World
) -> None:
    cache = _prepared(clients)
    comparison = Comparison()
    ids = [global_id("OpportunityProject", p) for p in [*world.projects, world.other_project] if p is not None]
    first = await run_both(clients, callers["admin"], BY_ID, {"id": ids[0]}, "prepare")
    comparison.outcomes.append(first)
    hits = cache.hits
    for caller in callers.values():  # the viewer is refused the score: FORBIDDEN, the same as the executor's
        for node_id in ids:
            comparison.outcomes.append(await run_both(clients, caller, BY_ID, {"id": node_id}, f"by id {node_id}"))
    assert comparison.differences() == [], comparison.differences()
    # Every repeat was served prepared (extensions.compiled is only shown to callers holding graphql:adhoc).
    assert cache.hits - hits == len(comparison.outcomes) - 1
    assert all(compiled_keys(o.on) == {"node"} for o in comparison.outcomes if o.caller.endswith("admin"))
    forbidden = [o for o in comparison.outcomes if o.caller == "viewer" and o.on.errors]
    assert forbidden and all(code == "FORBIDDEN" for o in forbidden for _, code in o.on.errors)


async def test_a_prepared_request_keeps_the_round_trips(
    clients: Clients, callers: dict[str, Caller], world: World
) -> None:
    cache = _prepared(clients)
    variables = {"id": global_id("OpportunityProject", world.projects[0])}
    await _post(clients.on, callers["admin"], BY_ID, variables)
    hits = cache.hits
    with count_round_trips(clients.on_app.state.engine) as trips:
        response = await _post(clients.on, callers["admin"], BY_ID, variables)
    assert response.status_code == 200 and cache.hits == hits + 1
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["extensions"] == {"compiled": ["node"]}
    assert len(trips) <= 4, [t.sql for t in trips]


async def test_refusals_of_a_prepared_document_are_the_executors(
    clients: Clients, callers: dict[str, Caller], world: World
) -> None:
    admin = callers["admin"]
    nested = (ROOT / "bench" / "queries" / "nested_pursuit.graphql").read_text()
    node_id = global_id("OpportunityProject", world.projects[0])
    await _post(clients.on, admin, BY_ID, {"id": node_id})
    await _post(clients.on, admin, nested, {"first": 2})
    cache = _prepared(clients)
    hits = cache.hits
    cases: list[tuple[str, dict[str, Any]]] = [
        (BY_ID, {}),  # a required variable missing
        (BY_ID, {"id": None}),  # null for a non-null variable
        (BY_ID, {"id": ["a", "b"]}),  # a list for an ID
        (BY_ID, {"id": "not a global id"}),  # the executor's NOT_FOUND/validation of the id
        (BY_ID, {"id": "x\u0000y"}),  # a string the input guard refuses
        (nested, {"first": 100}),  # the cost limit, computed from the variables
    ]
    for document, variables in cases:
        on = await _post(clients.on, admin, document, variables)
        off = await _post(clients.off, admin, document, variables)
        assert on.status_code == off.status_code, (variables, on.text, off.text)
        assert _body(on) == _body(off), (variables, on.text, off.text)
        assert "errors" in _body(on) or _body(on)["data"] == {"node": None}, on.text
    assert cache.hits == hits, "a refused request must be answered by the normal pipeline"


async def test_a_revoked_session_is_refused_on_its_next_prepared_request(
    clients: Clients, world: World, owner_engine: Any
) -> None:
    from tests.support.graphql import sign_in

    user = await make_login_user(owner_engine, world.tenant, roles=["Tenant Admin"])
    token = await sign_in(clients.on, user)
    headers = {"authorization": f"Bearer {token}"}
    body = {"query": BY_ID, "variables": {"id": global_id("OpportunityProject", world.projects[0])}}
    cache = _prepared(clients)
    for _ in range(2):
        response = await clients.on.post("/graphql", json=body, headers=headers)
        assert response.status_code == 200 and response.json()["data"]["node"] is not None
    hits = cache.hits
    assert (await clients.on.post("/auth/logout", headers=headers)).status_code in (200, 204)
    refused = await clients.on.post("/graphql", json=body, headers=headers)
    assert refused.status_code == 401 and cache.hits == hits


def test_the_cost_key_keeps_what_the_cost_estimate_reads() -> None:
    from graphql import parse

    from schema.compiled.runner import cost_key
    from schema.limits import estimate_cost
    from schema.schema import schema

    document = parse((ROOT / "bench" / "queries" / "nested_pursuit.graphql").read_text())
    variables: list[dict[str, Any]] = [
        {}, {"first": 2}, {"first": 50}, {"first": 100}, {"first": "50"}, {"first": True}, {"first": None},
        {"first": 50, "after": "abc"}, {"first": 50, "after": "xyz"}, {"first": 2.0}, {"after": None},
    ]
    costs: dict[Any, int] = {}
    for given in variables:
        cost = estimate_cost(schema._schema, document, None, given)
        assert costs.setdefault(cost_key(given), cost) == cost, given  # the same key never hides another cost
    assert cost_key({"first": 50}) != cost_key({"first": 100})
    assert cost_key({"ids": ["a", "b"]}) != cost_key({"ids": ["a"]})  # list arguments count their elements
    assert cost_key({"id": "a"}) == cost_key({"id": "b"})
