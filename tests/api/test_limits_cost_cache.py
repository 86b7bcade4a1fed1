"""A kept document's cost estimate is remembered by what of the variables it reads (schema/limits.py).

`DocumentCache.estimate` must answer exactly as a fresh walk (`estimate`) for any variables: page sizes
given as variables, list lengths (however deep in an input), defaults of variables left out, and a page
over the maximum; a request differing only in strings, ids or booleans reuses the walk made.
"""

from __future__ import annotations

from typing import Any

from graphql import parse

from resolvers.common.pagination import MAX_PAGE_SIZE
from schema.limits import DocumentCache, estimate
from schema.schema import schema

PAGED = """query Paged($n: Int = 7, $m: Int, $ids: [ID!]!) {
  a: opportunityProjects(first: $n) { nodes { rowId contacts(first: $m) { nodes { rowId } } } }
  nodes(ids: $ids) { id }
}
query Other { viewer { credential } }"""
UPDATE = """mutation Upd($input: OpportunityProjectUpdateInput!) {
  opportunityProjectUpdate(input: $input) { opportunityProject { rowId updatedAt } errors { code message } }
}"""

VARIABLES: list[tuple[str, str | None, dict[str, Any] | None]] = [
    (PAGED, "Paged", {"ids": []}),
    (PAGED, "Paged", {"n": 3, "ids": ["a"]}),
    (PAGED, "Paged", {"n": 3, "ids": ["b"]}),  # the same estimate as the one before
    (PAGED, "Paged", {"n": 3, "m": 20, "ids": ["a", "b", "c"]}),
    (PAGED, "Paged", {"n": None, "ids": []}),  # given as null: no default
    (PAGED, "Paged", {"n": "3", "ids": []}),  # not an integer: the default page size
    (PAGED, "Paged", {"n": True, "ids": []}),
    (PAGED, "Paged", {"n": MAX_PAGE_SIZE + 1, "ids": []}),  # over the maximum
    (PAGED, "Other", None),
    (PAGED, None, {"ids": ["x"]}),
    (UPDATE, None, {"input": {"id": "T3Bw", "updatedAt": "2026-01-01T00:00:00Z", "title": "x"}}),
    (UPDATE, None, {"input": {"id": "T3Bw", "updatedAt": "2026-01-01T00:00:00Z", "assignedTeamMembers": ["a", "b"]}}),
    (UPDATE, None, {"input": {"id": "T3Bw", "updatedAt": "2026-01-01T00:00:00Z", "assignedTeamMembers": ["a"]}}),
]


def test_a_remembered_estimate_is_the_walks_for_any_variables() -> None:
    cache = DocumentCache(4)
    documents = {PAGED: parse(PAGED), UPDATE: parse(UPDATE)}
    graphql_schema = schema._schema
    for _ in range(2):  # the second round is served from what the first remembered
        for text, name, variables in VARIABLES:
            document = documents[text]
            walked = estimate(graphql_schema, document, name, variables)
            remembered = cache.estimate(graphql_schema, document, name, variables)
            assert remembered[0] == walked[0], (name, variables)
            assert (remembered[1] is None) == (walked[1] is None), (name, variables)
            if walked[1] is not None:
                assert remembered[1] is not None and remembered[1].value == walked[1].value


def test_the_estimates_differ_where_the_variables_they_read_differ() -> None:
    cache = DocumentCache(4)
    document = parse(PAGED)
    graphql_schema = schema._schema
    small = cache.estimate(graphql_schema, document, "Paged", {"n": 1, "ids": []})[0]
    large = cache.estimate(graphql_schema, document, "Paged", {"n": 50, "ids": []})[0]
    listed = cache.estimate(graphql_schema, document, "Paged", {"n": 1, "ids": ["a", "b"]})[0]
    assert small < large and small < listed
    assert cache.estimate(graphql_schema, document, "Paged", {"n": MAX_PAGE_SIZE + 1, "ids": []})[1] is not None


def test_a_document_evicted_and_a_new_one_are_walked_again() -> None:
    cache = DocumentCache(1)
    graphql_schema = schema._schema
    first, other = parse(PAGED), parse(UPDATE)
    assert cache.estimate(graphql_schema, first, "Paged", {"n": 2, "ids": []}) == estimate(
        graphql_schema, first, "Paged", {"n": 2, "ids": []}
    )
    variables = {"input": {"id": "T3Bw", "updatedAt": "2026-01-01T00:00:00Z"}}
    assert cache.estimate(graphql_schema, other, None, variables) == estimate(graphql_schema, other, None, variables)
    assert cache.estimate(graphql_schema, first, "Paged", {"n": 9, "ids": []}) == estimate(
        graphql_schema, first, "Paged", {"n": 9, "ids": []}
    )
