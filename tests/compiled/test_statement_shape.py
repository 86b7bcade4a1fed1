"""The shape of the compiled statement where its cost lies: plain pages and to-one fields.

A forward page read only for its rows (no pageInfo) is `ARRAY(SELECT row ...)` over the page's rows, limited
before any JSON is built: no `row_number()` window, no row past the page. A to-one field under such a page is
a LEFT JOIN of its table (the row by id, under the caller's conditions) instead of a sub-select per row.
Answers stay the executor's: for every caller of the world, in pages ordered by an indexed column and by
columns that are not (PostgreSQL sorts there, and the joins must neither reorder the page nor widen it),
to-one chains (contact, its organization), a to-one the caller may not read (null, as on the executor) and
the pages that keep the numbered form (pageInfo, backwards).
"""

from __future__ import annotations

import re

from tests.compiled.conftest import Caller, Clients
from tests.compiled.differential import Comparison, compiled_keys, report, run_both
from tests.compiled.test_sql_text import reads
from tests.support.roundtrips import count_round_trips

PLAIN = """query Plain($order: [OpportunityProjectOrder!]) {
  opportunityProjects(first: 3, orderBy: $order, filter: {includeArchived: true}) {
    nodes {
      rowId projectName agencyName pipelineStage
      captureManager { firstName email }
      contacts(first: 5) { nodes { relationshipType contact { lastName title organization { name } } } }
      documents(first: 2) { nodes { name } }
    }
  }
}"""

EDGES = """query Edges($order: [ContactOrder!]) {
  contacts(first: 4, orderBy: $order) {
    totalCount
    edges { cursor node { lastName organization { name parentOrganization { name } } } }
  }
}"""

NUMBERED = """query Numbered($last: Int, $first: Int) {
  contacts(first: $first, last: $last) {
    pageInfo { hasNextPage endCursor }
    nodes { lastName organization { name } }
  }
}"""


async def test_plain_pages_are_arrays_with_joins_and_no_window(clients: Clients, callers: dict[str, Caller]) -> None:
    admin = callers["admin"]
    with count_round_trips(clients.on_app.state.engine) as trips:
        response = await clients.on.post(
            "/graphql", json={"query": PLAIN, "variables": {"order": [{"field": "WIN_PROBABILITY_SCORE"}]}},
            headers={"authorization": f"Bearer {admin.token}"},
        )
    assert response.status_code == 200, response.text
    assert "errors" not in response.json(), response.text
    (statement,) = [s for s in reads(trips) if "json_build_object(" in s]
    assert "row_number()" not in statement
    assert statement.count("array_to_json(ARRAY(SELECT") == 3  # the projects, their contacts, their documents
    # users (the capture manager), contacts and organizations joined; the page limited in a sub-select first
    assert len(re.findall(r'LEFT JOIN "(users|contacts|organizations)"', statement)) == 3
    assert re.search(r'LIMIT \$\d+::int\) t\d+ LEFT JOIN "users"', statement), statement


async def test_plain_pages_and_joins_answer_as_the_executor(clients: Clients, callers: dict[str, Caller]) -> None:
    comparison = Comparison()
    cases: list[tuple[str, str, dict[str, object]]] = []
    for order in ([], [{"field": "WIN_PROBABILITY_SCORE"}], [{"field": "PIPELINE_STAGE", "direction": "DESC"}],
                  [{"field": "PROJECT_STATUS"}, {"field": "WIN_PROBABILITY_SCORE", "direction": "DESC"}],
                  [{"field": "CREATED_AT", "direction": "ASC"}]):
        cases.append(("plain projects", PLAIN, {"order": order}))
    for order in ([], [{"field": "EMAIL", "direction": "DESC"}], [{"field": "LAST_NAME"}]):
        cases.append(("edges of contacts", EDGES, {"order": order}))
    cases += [("numbered forward", NUMBERED, {"first": 2}), ("numbered backward", NUMBERED, {"last": 2})]
    for caller in callers.values():
        for label, document, variables in cases:
            outcome = await run_both(clients, caller, document, variables, f"{label} {variables}")
            comparison.outcomes.append(outcome)
            if caller.name in {"admin", "other_tenant_admin"}:
                assert compiled_keys(outcome.on), (label, caller.name, outcome.on.extensions)
    differences = comparison.differences()
    if differences:
        report("\n".join(differences))
    assert differences == [], "\n".join(differences[:5])
