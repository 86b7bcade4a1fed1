"""A repeated mutation document runs without strawberry's per-request pipeline (schema/prepared_mutations.py),
with the same answer and the same checks as the first run of it, which took that pipeline.

Each test sends a document of its own (a comment makes the text new), so its first request is the
pipeline's and the ones after it are the prepared path's, or the pipeline's again where a check declines.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from schema.prepared_mutations import COUNTS
from server.app import create_app
from tests.conftest import Database
from tests.support.http import app_client
from tests.support.http import test_settings as settings_for
from tests.writes.conftest import Caller, Rows, SignIn

UPDATE = """mutation Upd($input: OpportunityProjectUpdateInput!) {{ # {tag}
  opportunityProjectUpdate(input: $input) {{
    opportunityProject {{ rowId projectName priorityLevel updatedAt }}
    errors {{ field code message currentUpdatedAt }}
  }}
}}"""


def _document() -> str:
    return UPDATE.format(tag=uuid.uuid4())


async def _post(client: httpx.AsyncClient, caller: Caller, document: str, variables: dict[str, Any]) -> httpx.Response:
    headers = {"authorization": f"Bearer {caller.token}"}
    return await client.post("/graphql", json={"query": document, "variables": variables}, headers=headers)


async def _seen(rows: Rows, project: Any) -> str:
    row = await rows.one("SELECT updated_at FROM opportunity_projects WHERE id = :p", p=project.id)
    return str(row.updated_at.isoformat()).replace("+00:00", "Z")


async def test_a_repeated_mutation_runs_prepared_and_answers_as_the_first(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    document = _document()
    answers = []
    for name in ("first", "second", "third"):
        project = await rows.project()
        before = COUNTS.served
        variables = {"input": {"rowId": str(project.id), "updatedAt": await _seen(rows, project), "projectName": name,
                               "priorityLevel": "HIGH"}}
        response = await _post(client, manager, document, variables)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/")
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        payload = body["data"]["opportunityProjectUpdate"]
        assert payload["errors"] == [], body
        assert payload["opportunityProject"]["rowId"] == str(project.id)
        assert payload["opportunityProject"]["projectName"] == name
        assert payload["opportunityProject"]["updatedAt"] == await _seen(rows, project)
        shape = (sorted(body), body.get("extensions"), sorted(payload["opportunityProject"]))
        answers.append((COUNTS.served - before, shape))
        assert len(await rows.audit(project.id)) == 1  # audited once, in the write's transaction
    # The first request took strawberry's pipeline (the document was new); the later ones the prepared path.
    assert [served for served, _ in answers] == [0, 1, 1]
    assert len({repr(shape) for _, shape in answers}) == 1


async def test_a_conflict_is_the_same_user_error_either_way(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    document = _document()
    project = await rows.project()
    stale = "2001-01-01T00:00:00+00:00"
    variables = {"input": {"rowId": str(project.id), "updatedAt": stale, "projectName": "late"}}
    first = (await _post(client, manager, document, variables)).json()
    before = COUNTS.served
    second = (await _post(client, manager, document, variables)).json()
    assert COUNTS.served == before + 1
    assert first == second
    errors = second["data"]["opportunityProjectUpdate"]["errors"]
    assert [e["code"] for e in errors] == ["CONFLICT"]
    assert errors[0]["currentUpdatedAt"] == await _seen(rows, project)


async def test_a_variable_that_does_not_coerce_is_refused_alike(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    document = _document()
    project = await rows.project()
    variables = {"input": {"rowId": str(project.id), "updatedAt": "not a time", "priorityLevel": "URGENTISSIMO"}}
    first = await _post(client, manager, document, variables)
    second = await _post(client, manager, document, variables)
    assert first.status_code == second.status_code
    assert first.json() == second.json()
    errors = second.json()["errors"]
    assert errors and {e["extensions"]["code"] for e in errors} == {"BAD_USER_INPUT"}
    assert "Did you mean" not in str(errors)
    assert second.json().get("data") is None


async def test_the_input_guard_refuses_a_value_of_a_kept_document(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    document = _document()
    project = await rows.project()
    seen = await _seen(rows, project)
    fine = {"input": {"rowId": str(project.id), "updatedAt": seen, "projectName": "kept"}}
    assert (await _post(client, manager, document, fine)).json()["data"]["opportunityProjectUpdate"]["errors"] == []
    before = COUNTS.served
    bad = {"input": {"rowId": str(project.id), "updatedAt": seen, "description": "nul \x00 here"}}
    body = (await _post(client, manager, document, bad)).json()
    assert COUNTS.served == before  # declined: strawberry's pipeline answered
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == ["input", "description"]
    row = await rows.one("SELECT project_name, description FROM opportunity_projects WHERE id = :p", p=project.id)
    assert row.project_name == "kept" and row.description != "nul \x00 here"


@pytest.fixture
async def costly_client(database: Database) -> Any:
    app: Starlette = create_app(settings_for(database.app_url, query_cost_limit=1))
    async with app_client(app) as http:
        yield http


async def test_the_cost_limit_applies_to_a_kept_document(
    client: httpx.AsyncClient, costly_client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    document = _document()
    project = await rows.project()
    variables = {"input": {"rowId": str(project.id), "updatedAt": await _seen(rows, project), "projectName": "ok"}}
    first = (await _post(client, manager, document, variables)).json()
    assert first["data"]["opportunityProjectUpdate"]["errors"] == []
    before = COUNTS.served
    variables["input"]["updatedAt"] = await _seen(rows, project)
    body = (await _post(costly_client, manager, document, variables)).json()
    assert COUNTS.served == before
    assert [e["extensions"]["code"] for e in body["errors"]] == ["QUERY_TOO_COSTLY"]
    row = await rows.one("SELECT project_name FROM opportunity_projects WHERE id = :p", p=project.id)
    assert row.project_name == "ok"


async def test_a_refused_caller_is_refused_and_audited_alike(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    reader = await sign_in_as("Viewer")
    document = _document()
    project = await rows.project()
    variables = {"input": {"rowId": str(project.id), "updatedAt": await _seen(rows, project), "projectName": "no"}}
    first = (await _post(client, reader, document, variables)).json()
    before = COUNTS.served
    second = (await _post(client, reader, document, variables)).json()
    assert COUNTS.served == before + 1
    assert first == second
    assert [e["extensions"]["code"] for e in second["errors"]] == ["FORBIDDEN"]
    assert len(await rows.denials()) == 2


@pytest.mark.parametrize("accept", ["application/json", "application/graphql-response+json"])
async def test_the_response_is_the_views_own_in_either_media_type(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, accept: str
) -> None:
    """Status, headers and body of a kept document's answer are those of its first, strawberry-served answer."""
    manager = await sign_in_as("Capture Manager")
    document = _document()
    project = await rows.project()
    headers = {"authorization": f"Bearer {manager.token}", "accept": accept}
    answers = []
    for variables in (
        {"input": {"rowId": str(project.id), "updatedAt": "not a time"}},  # refused before execution: data null
        {"input": {"rowId": str(project.id), "updatedAt": "2001-01-01T00:00:00Z"}},  # a CONFLICT in the payload
    ):
        for _ in range(2):
            before = COUNTS.served
            response = await client.post("/graphql", json={"query": document, "variables": variables}, headers=headers)
            served = COUNTS.served - before
            kept = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "date")}
            answers.append((served, response.status_code, kept, response.json()))
    assert [a[0] for a in answers] == [0, 1, 1, 1]
    for first, second in ((answers[0], answers[1]), (answers[2], answers[3])):
        assert first[1:] == second[1:]
    assert answers[0][2]["content-type"].startswith(accept)
    assert answers[0][1] == (200 if accept == "application/json" else 400)
    assert answers[2][1] == 200
    assert answers[3][3]["data"]["opportunityProjectUpdate"]["errors"][0]["code"] == "CONFLICT"


#: What schema/prepared_mutations.py does about each extension of the schema, in the schema's order.
MIRRORED = {
    "ProfileRules": "the profile's token limit on the kept document, its rules in the cached validation",
    "GetSafety": "not applicable: the path serves POSTs only",
    "OperationLimits": "cost estimate and limit, cached validation, suggestions stripped",
    "RateLimits": "charge_request, once per request",
    "InputGuard": "the operation's PreparedCheck",
    "CompiledReads": "the result's extensions (no compiled key for a mutation)",
    "MaskUnexpectedErrors": "unexpected errors masked with the request id",
}


def test_every_extension_of_the_schema_is_accounted_for_by_the_prepared_path() -> None:
    """The prepared path repeats the extensions' checks by hand, so an extension added to the schema (or one
    reordered) fails here until schema/prepared_mutations.py and MIRRORED say what a repeated mutation does
    about it."""
    from schema.schema import schema

    names = [(ext if isinstance(ext, type) else type(ext())).__name__ for ext in schema.extensions]
    assert names == list(MIRRORED), (
        "the schema's extensions changed: mirror the change in schema/prepared_mutations.py (its docstring lists "
        f"what it repeats), then update MIRRORED: {names}"
    )
