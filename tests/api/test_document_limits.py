"""Bounds on one GraphQL document: depth, aliases, tokens; introspection still works."""

from __future__ import annotations

from typing import Any

import httpx
from graphql import get_introspection_query

from schema.schema import MAX_ALIASES, MAX_DEPTH, MAX_TOKENS
from tests.support.graphql import gql, gql_response


def _deep(levels: int) -> str:
    # organizations > nodes > parentOrganization > ... : each parentOrganization adds one level.
    inner = "name"
    for _ in range(levels - 2):
        inner = f"parentOrganization {{ {inner} }}"
    return f"{{ organizations(first: 1) {{ nodes {{ {inner} }} }} }}"


async def test_depth_limit(client: httpx.AsyncClient, admin_token: str) -> None:
    await gql(client, _deep(MAX_DEPTH), token=admin_token)
    refused = await gql(client, _deep(MAX_DEPTH + 1), token=admin_token, errors=True)
    assert "exceeds maximum operation depth" in refused["errors"][0]["message"]


async def test_depth_limit_cannot_be_dodged_with_fragments_named_like_introspection(
    client: httpx.AsyncClient, admin_token: str
) -> None:
    inner = "name"
    for _ in range(MAX_DEPTH):
        inner = f"parentOrganization {{ {inner} }}"
    query = f"query __schema {{ ...__schema }} fragment __schema on Query {{ organizations {{ nodes {{ {inner} }} }} }}"
    refused = await gql(client, query, token=admin_token, errors=True)
    assert "exceeds maximum operation depth" in refused["errors"][0]["message"]


async def test_alias_limit(client: httpx.AsyncClient, admin_token: str) -> None:
    ok = " ".join(f"a{i}: __typename" for i in range(MAX_ALIASES))
    await gql(client, f"{{ {ok} }}", token=admin_token)
    too_many = " ".join(f"a{i}: __typename" for i in range(MAX_ALIASES + 1))
    refused = await gql(client, f"{{ {too_many} }}", token=admin_token, errors=True)
    assert "aliases" in refused["errors"][0]["message"]


async def test_token_limit(client: httpx.AsyncClient, admin_token: str) -> None:
    huge = "{ " + " ".join("__typename" for _ in range(MAX_TOKENS)) + " }"
    response = await gql_response(client, huge, token=admin_token)
    body = response.json()
    assert body.get("errors") and "token" in body["errors"][0]["message"].lower()
    assert body.get("data") is None


async def test_the_standard_introspection_query_is_within_the_limits(
    client: httpx.AsyncClient, admin_token: str
) -> None:
    body = await gql(client, get_introspection_query(descriptions=True), token=admin_token)
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_a_document_is_validated_once_then_served_from_the_cache(
    client: httpx.AsyncClient, admin_token: str, read_app: Any
) -> None:
    """The limits must not defeat the validation cache (it is keyed by the rules: they are made once)."""
    from schema.schema import DOCUMENT_CACHE as cache

    query = "query ValidatedOnce { viewer { credential } }"
    await gql(client, query, token=admin_token)
    prepared = read_app.state.graphql.prepared  # a compiled query's repeats skip validation (schema/context.py)
    hits, runs, served = cache.hits, cache.runs, prepared.hits
    for _ in range(3):
        await gql(client, query, token=admin_token)
    assert (cache.hits - hits + prepared.hits - served, cache.runs - runs) == (3, 0)
    refused = await gql(client, _deep(MAX_DEPTH + 1), token=admin_token, errors=True)
    again = await gql(client, _deep(MAX_DEPTH + 1), token=admin_token, errors=True)
    assert refused["errors"] == again["errors"]  # a cached refusal is still a refusal
