"""The input guard of a prepared document (schema/input_guard.py PreparedCheck) answers as check_operation.

The prepared path (schema/context.py) walks a document's selections, literals and variable defaults once
and then checks only the variables' values where the walk reads them: for every document and variables
here, its refusal (or its None) is check_operation's, message, code and path included.
"""

from __future__ import annotations

from typing import Any

import pytest
from graphql import GraphQLError, parse

from schema.input_guard import PreparedCheck, check_operation
from schema.schema import schema

GID = "T3Bwb3J0dW5pdHlQcm9qZWN0OjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMQ=="  # OpportunityProject:…01
NOT_A_NODE = "VXNlckVycm9yOjE="  # UserError:1

BY_ID = "query One($id: ID!) { node(id: $id) { id } }"
LIST = (
    "query List($name: String, $names: [String!], $first: Int, $order: [OpportunityProjectOrder!]) {"
    " opportunityProjects(first: $first, orderBy: $order, filter: {projectName: {contains: $name, in: $names}})"
    " { nodes { id } } }"
)
DEFAULTED = (
    'query Defaulted($name: String = "fine", $id: ID! = "' + GID + '") {'
    " node(id: $id) { id } opportunityProjects(filter: {title: {eq: $name}}) { nodes { id } } }"
)
BAD_DEFAULT = 'query BadDefault($id: ID = "nope") { node(id: $id) { id } }'
BAD_LITERAL = 'query BadLiteral($id: ID!) { node(id: $id) { id } other: node(id: "nope") { id } }'
FRAGMENTS = (
    "query Frag($id: ID!, $name: String) { ...Root ...Root }"
    " fragment Root on Query { node(id: $id) { id }"
    " opportunityProjects(filter: {title: {eq: $name}}) { nodes { id } } }"
)
JSON_LITERAL = (
    "mutation Json($subject: String!, $tag: String) { activityCreate(input: {activityType: \"call\","
    " subject: $subject, customFields: {note: $tag}}) { __typename } }"
)
TWO = "query A($id: ID!) { node(id: $id) { id } } query B($id: ID!) { node(id: $id) { id } }"


def _formatted(error: GraphQLError | None) -> Any:
    return None if error is None else error.formatted


CASES: list[tuple[str, str | None, dict[str, Any] | None]] = [
    (BY_ID, None, {"id": GID}),
    (BY_ID, None, {"id": NOT_A_NODE}),
    (BY_ID, None, {"id": "x\u0000y"}),
    (BY_ID, None, {"id": "a" * 300}),
    (BY_ID, None, {}),
    (BY_ID, None, None),
    (BY_ID, "One", {"id": NOT_A_NODE}),
    (BY_ID, "Other", {"id": NOT_A_NODE}),  # an unknown operation: graphql-core's to report
    (LIST, None, {"name": "ok", "names": ["a", "b\ud800"], "first": 3}),
    (LIST, None, {"name": "a" * 100_001}),
    (LIST, None, {"names": ["fine", "also\u0000bad"]}),
    (LIST, None, {"order": [{"field": "PROJECT_NAME", "direction": "DESC"}], "name": "\udc00"}),
    (DEFAULTED, None, {}),
    (DEFAULTED, None, {"id": NOT_A_NODE}),
    (DEFAULTED, None, {"name": "x\u0000"}),
    (BAD_DEFAULT, None, {}),
    (BAD_DEFAULT, None, {"id": GID}),
    (BAD_LITERAL, None, {"id": GID}),
    (FRAGMENTS, None, {"id": GID, "name": "\u0000"}),
    (FRAGMENTS, None, {"id": NOT_A_NODE}),
    (JSON_LITERAL, None, {"subject": "s", "tag": "t"}),
    (JSON_LITERAL, None, {"subject": "s", "tag": "t\u0000"}),
    (JSON_LITERAL, None, {"subject": "s\u0000"}),
    (TWO, None, {"id": GID}),
    (TWO, "B", {"id": NOT_A_NODE}),
    (TWO, "A", {"id": GID}),
]


@pytest.mark.parametrize(("source", "operation_name", "variables"), CASES)
def test_a_prepared_check_answers_as_check_operation(
    source: str, operation_name: str | None, variables: dict[str, Any] | None
) -> None:
    document = parse(source)
    graphql_schema = schema._schema
    expected = check_operation(graphql_schema, document, operation_name, variables)
    prepared = PreparedCheck(graphql_schema, document, operation_name)
    for _ in range(2):  # the walk is kept: a second run answers the same
        assert _formatted(prepared.check(variables)) == _formatted(expected)


def test_the_cases_include_refusals_and_acceptances() -> None:
    outcomes = [check_operation(schema._schema, parse(s), n, v) for s, n, v in CASES]
    assert any(o is None for o in outcomes)
    codes = {o.extensions["code"] for o in outcomes if o is not None and o.extensions}
    assert codes == {"BAD_USER_INPUT", "BAD_REQUEST"}
