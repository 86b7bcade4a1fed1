"""A project-scoped caller's grants are read by the compiled statement, not sent to it.

The principal lookup loads the caller's grants in the first statement of the request's REPEATABLE READ
transaction (auth/service.py). A compiled statement run in that same transaction reads the projects a
permission is granted on from the caller's unexpired assignments (a sub-select of user_roles) instead
of binding them as an id array: the same projects, since it is the same snapshot, without sending the
ids back on every request. A statement run anywhere else (another transaction) binds the ids the
principal holds, as before. A project read by id needs neither: whether its id is granted is a boolean
bound per request. Answers, errors and permission_audit rows stay the executor's, for an expired
assignment too; the round trips stay 4.
"""

from __future__ import annotations

import json
from typing import Any

from auth.audit import RequestMeta
from models.db import RequestConnection
from schema.compiled.runner import _reads_lookup_snapshot
from tests.compiled.conftest import Caller, Clients, World, global_id
from tests.compiled.differential import Comparison, run_both
from tests.compiled.test_sql_text import reads
from tests.support.roundtrips import count_round_trips

BY_ID = (
    "query GrantsById($id: ID!) { node(id: $id) { __typename"
    " ... on OpportunityProject { id rowId projectName pipelineStage winProbabilityScore } } }"
)
PAGE = (
    "query GrantsPage { opportunityProjects(first: 10, filter: {includeArchived: true}) {"
    " totalCount nodes { rowId projectName winProbabilityScore contacts(first: 3) { nodes { relationshipType } } } } }"
)


async def _statements(clients: Clients, caller: Caller, document: str, variables: dict[str, Any]) -> list[str]:
    """The compiled statements of a repeated request (the first prepares the document and the statement)."""
    body = {"query": document, "variables": variables}
    headers = {"authorization": f"Bearer {caller.token}"}
    assert (await clients.on.post("/graphql", json=body, headers=headers)).status_code == 200
    with count_round_trips(clients.on_app.state.engine) as trips:
        response = await clients.on.post("/graphql", json=body, headers=headers)
    assert response.status_code == 200, response.text
    # A statement's first use on a pooled connection adds its prepare exchange (the package's apps pool several
    # connections); tests/test_round_trips.py counts on one connection, prepares included.
    # A statement the driver's cache evicted is closed before the next one runs (close_statement): housekeeping
    # of the pooled connection, not a trip of this read (tests/test_write_round_trips.py leaves them out too).
    counted = [t for t in trips if t.kind not in ("prepare", "close_statement")]
    assert len(counted) <= 4, ([t.kind for t in trips], [str(t)[:80] for t in trips])
    return [s for s in reads(trips) if "gwm_request_session" not in s]


async def test_the_scoped_managers_reads_take_its_grants_from_the_lookups_snapshot(
    clients: Clients, callers: dict[str, Caller], world: World
) -> None:
    manager = callers["scoped_manager"]
    comparison = Comparison()
    ids = [global_id("OpportunityProject", p) for p in world.projects]  # granted, expired and never granted
    for node_id in ids:
        for _ in range(2):  # the first runs through the executor's pipeline, the repeat is served prepared
            comparison.outcomes.append(await run_both(clients, manager, BY_ID, {"id": node_id}, f"by id {node_id}"))
    comparison.outcomes.append(await run_both(clients, manager, PAGE, {}, "page"))
    assert comparison.differences() == [], comparison.differences()
    found = [o for o in comparison.outcomes if o.label.startswith("by id") and o.on.data["node"] is not None]
    assert 0 < len(found) < len(comparison.outcomes) - 1  # some projects are the manager's, some are not

    (statement,) = await _statements(clients, manager, PAGE, {})
    assert "FROM user_roles ga" in statement and "uuid[]" not in statement, statement
    # A project by id: whether its id is granted is bound (a boolean), neither the ids nor a sub-select.
    (statement,) = await _statements(clients, manager, BY_ID, {"id": ids[0]})
    assert "user_roles" not in statement and "uuid[]" not in statement and "::boolean" in statement, statement


async def test_a_tenant_wide_caller_reads_no_assignments(
    clients: Clients, callers: dict[str, Caller], world: World
) -> None:
    (statement,) = await _statements(
        clients, callers["admin"], BY_ID, {"id": global_id("OpportunityProject", world.projects[0])}
    )
    assert "user_roles" not in statement, statement


async def test_only_the_lookups_own_transaction_reads_the_grants_there(
    clients: Clients, callers: dict[str, Caller]
) -> None:
    auth = clients.on_app.state.auth
    meta = RequestMeta(ip="127.0.0.1", user_agent="test", request_id="grants-in-sql")
    principal, db = await auth.authenticate_request(callers["scoped_manager"].token, meta)
    assert db is not None and principal.grants.per_project
    try:
        assert _reads_lookup_snapshot(db, principal)
        other = await auth.authenticate_request(callers["viewer"].token, meta)
        assert other[1] is not None
        assert not _reads_lookup_snapshot(other[1], principal)  # another caller's lookup
        await other[1].close()
    finally:
        await db.close()
    assert not _reads_lookup_snapshot(db, principal)  # ended: nothing reads in it any more
    fresh = RequestConnection(clients.on_app.state.engine, principal.tenant_id)
    assert not _reads_lookup_snapshot(fresh, principal)  # begun without the lookup: the ids are bound
    assert json.dumps(sorted(map(str, principal.grants.per_project)))  # the principal still holds the ids


DOCUMENTS = (
    "query GrantsDocuments($after: String) { opportunityProjects(first: 2, after: $after,"
    " filter: {includeArchived: true}) { pageInfo { endCursor } nodes { rowId"
    " documents(first: 5) { nodes { name accessLevel } } } } }"
)


async def test_the_grants_probe_the_key_once_and_are_implied_under_a_granted_project(
    clients: Clients, callers: dict[str, Caller]
) -> None:
    """The manager's project list reads its grants as one array probed on the primary key; the documents
    listed under a granted project do not read the grants again (the project is known to be granted)."""
    manager = callers["scoped_manager"]
    comparison = Comparison()
    first = await run_both(clients, manager, DOCUMENTS, {"after": None}, "first page")
    comparison.outcomes.append(first)
    assert first.on.data is not None
    page = first.on.data["opportunityProjects"]
    comparison.outcomes.append(
        await run_both(clients, manager, DOCUMENTS, {"after": page["pageInfo"]["endCursor"]}, "second page")
    )
    assert comparison.differences() == [], comparison.differences()
    assert any(node["documents"]["nodes"] for node in page["nodes"])  # the answer holds documents

    (statement,) = await _statements(clients, manager, DOCUMENTS, {"after": None})
    assert statement.count("FROM user_roles ga") == 1, statement
    assert "t1.id = ANY(ARRAY(SELECT ga.opportunity_project_id FROM user_roles ga" in statement, statement
    assert "OR true" in statement  # the documents' own-project alternative, decided by the known grant
