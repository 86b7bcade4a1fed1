"""Every way a client can get a list's arguments wrong gets a clear BAD_USER_INPUT error."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.support.graphql import gql


async def _error(
    client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    body = await gql(client, query, variables, token=token, errors=True)
    error: dict[str, Any]
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    return error


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("first: 101", "`first` must be between 0 and 100; got 101."),
        ("last: 101", "`last` must be between 0 and 100; got 101."),
        ("first: -1", "`first` must be between 0 and 100; got -1."),
        ("first: 1, last: 1", "Pass `first` or `last`, not both."),
        ('last: 1, after: "x"', "`last` pages backwards: combine it with `before`, not `after`."),
        ('after: "not a cursor"', "The cursor is not valid."),
        ('orderBy: [{field: NAME}, {field: NAME, direction: DESC}]', "`orderBy` names name twice."),
    ],
)
async def test_root_list_arguments(client: httpx.AsyncClient, admin_token: str, arguments: str, message: str) -> None:
    error = await _error(client, admin_token, f"{{ organizations({arguments}) {{ nodes {{ name }} }} }}")
    assert error["message"] == message
    assert error["path"] == ["organizations"]


async def test_a_cursor_of_another_order_is_refused(client: httpx.AsyncClient, admin_token: str) -> None:
    from resolvers.common.pagination import encode_cursor

    foreign = encode_cursor(["a", "b", "c", str(uuid.uuid4())])  # four values: not (name, id)
    error = await _error(
        client, admin_token, "query ($c: String) { organizations(after: $c) { nodes { name } } }", {"c": foreign}
    )
    assert error["message"] == "The cursor does not belong to this list and order."


async def test_too_many_values_in_a_filter(client: httpx.AsyncClient, admin_token: str) -> None:
    ids = [str(uuid.uuid4()) for _ in range(501)]
    error = await _error(
        client, admin_token, "query ($ids: [UUID!]) { organizations(filter: {rowId: {in: $ids}}) { nodes { name } } }",
        {"ids": ids},
    )
    assert error["message"] == "`in` takes at most 500 values."


async def test_nested_list_arguments_are_checked_too(client: httpx.AsyncClient, admin_token: str) -> None:
    query = "{ viewer { user { userSessions(first: 101) { nodes { rowId } } } } }"
    body = await gql(client, query, token=admin_token, errors=True)
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["path"] == ["viewer", "user", "userSessions"]


async def test_an_empty_in_list_matches_nothing(client: httpx.AsyncClient, admin_token: str) -> None:
    body = await gql(client, "{ organizations(filter: {rowId: {in: []}}) { totalCount } }", token=admin_token)
    assert body["data"]["organizations"]["totalCount"] == 0
