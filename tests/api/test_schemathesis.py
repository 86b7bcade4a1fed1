"""A bounded schemathesis run over the served GraphQL schema, as a tenant admin on a throwaway tenant.

The schema is read by introspection over HTTP; schemathesis (hypothesis-graphql) generates
operations for every root field with a fixed seed and a fixed number of examples (no deadline: the
run is bounded by examples, never by time), and each is sent to the app. No answer may be a 5xx or
an INTERNAL_SERVER_ERROR, and at least 80% must be GraphQL answers: data, or a documented error
code other than UNAUTHENTICATED (the caller must stay signed in throughout).

Mutations that could lock the caller out are left out: deactivating a user, revoking a role
assignment or a session, setting a temporary password, changing or deleting a role, confirming an
MFA enrollment. Their ids are random, so they would almost never hit the caller; leaving them out
makes sure.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import schemathesis
from graphql import (
    BooleanValueNode,
    IntValueNode,
    NameNode,
    ObjectFieldNode,
    ObjectValueNode,
    StringValueNode,
    ValueNode,
    get_introspection_query,
)
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.db import TenantRef
from tests.support.error_codes import documented_codes
from tests.support.graphql import sign_in
from tests.support.http import make_login_user

SEED = 20261205
EXAMPLES = 300
SELF_DESTRUCTIVE = frozenset(
    {
        "userDeactivate",
        "userRoleRevoke",
        "sessionRevoke",
        "userSetTemporaryPassword",
        "roleUpdate",
        "roleDelete",
        "mfaEnrollmentConfirm",
    }
)



def _json_values() -> st.SearchStrategy[ValueNode]:
    """Literals of the JSON scalar (configuration values, custom fields): small scalars and objects."""
    leaves: st.SearchStrategy[ValueNode] = st.one_of(
        st.text(max_size=20).map(lambda text: StringValueNode(value=text)),
        st.integers(-1000, 1000).map(lambda number: IntValueNode(value=str(number))),
        st.booleans().map(lambda flag: BooleanValueNode(value=flag)),
    )
    objects = st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), leaves, max_size=3).map(
        lambda found: ObjectValueNode(
            fields=tuple(ObjectFieldNode(name=NameNode(value=k), value=v) for k, v in found.items())
        )
    )
    return st.one_of(leaves, objects)


schemathesis.graphql.scalar("JSON", _json_values())
# A file travels only as a part of a multipart request (tests/documents/): in a JSON request the
# Upload literal is refused by validation, which must stay a GraphQL answer, never a server error.
schemathesis.graphql.scalar("Upload", st.just(StringValueNode(value="file.pdf")))


def generate(introspection: dict[str, Any]) -> list[str]:
    """EXAMPLES documents over every allowed root field, the same ones on every run (fixed seed)."""
    loaded = schemathesis.graphql.from_dict(introspection)
    operations = []
    for result in loaded.get_all_operations():
        assert isinstance(result, Ok), result  # every root field loads as an operation
        operations.append(result.ok())
    allowed = [op for op in operations if op.label.split(".", 1)[1] not in SELF_DESTRUCTIVE]
    assert len(allowed) == len(operations) - len(SELF_DESTRUCTIVE), "an excluded mutation is missing"
    documents: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @seed(SEED)
    @given(case=st.one_of([op.as_strategy() for op in allowed]))
    def collect(case: Any) -> None:
        documents.append(case.body if isinstance(case.body, str) else case.body["query"])

    collect()
    return documents


async def test_schemathesis_finds_no_server_error(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    token = await sign_in(client, await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"]))
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    introspected = await client.post("/graphql", json={"query": get_introspection_query()}, headers=headers)
    assert introspected.status_code == 200 and "errors" not in introspected.json()
    documents = generate(introspected.json()["data"])
    assert len(documents) >= EXAMPLES * 0.9
    codes = documented_codes() - {"UNAUTHENTICATED"}
    failures: list[str] = []
    answered = 0
    for document in documents:
        response = await client.post("/graphql", content=json.dumps({"query": document}), headers=headers)
        if response.status_code >= 500:
            failures.append(f"HTTP {response.status_code}: {document}")
            continue
        body = response.json()
        errors = body.get("errors") or []
        got = {(e.get("extensions") or {}).get("code") for e in errors}
        if "INTERNAL_SERVER_ERROR" in got:
            failures.append(f"INTERNAL_SERVER_ERROR: {document}")
        elif body.get("data") or (errors and got <= codes):
            answered += 1
    assert not failures, "\n\n".join(failures)
    assert answered >= 0.8 * len(documents), f"only {answered} of {len(documents)} examples got a GraphQL answer"
