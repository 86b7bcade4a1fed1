"""Every example operation in graphql/operations/ runs against the demo tenant without errors.

The demo tenant (server.seed.seed_demo) is seeded into the test database and its Tenant Admin,
Dana Whitfield, signs in with the published demo password. Each `.graphql` file needs a case
below (its variables and a check that the answer carries real data): a file without one fails, and
so does a case whose file is gone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import OperationDefinitionNode, parse
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from strawberry.relay import to_base64

from auth.passwords import PasswordHasher
from server.app import create_app
from server.seed.demo import DEMO_PASSWORD, SUBDOMAIN, demo_id, seed_demo
from tests.conftest import Database
from tests.support.graphql import gql
from tests.support.http import TEST_ITERATIONS, app_client
from tests.support.http import test_settings as settings_for

OPERATIONS = Path(__file__).resolve().parent.parent / "graphql" / "operations"
ADMIN_EMAIL = "dana.whitfield@demofederal.example"
# A phase-3 pursuit of the demo with contacts, documents, a capture plan and external versions.
PROJECT = demo_id("project", "cisa_zta")

Data = dict[str, Any]


def _nested_pursuit(data: Data) -> None:
    projects = data["opportunityProjects"]["nodes"]
    assert len(projects) == 25  # the whole demo pipeline fits in the first page of 50
    created = [p["createdAt"] for p in projects]
    assert created == sorted(created, reverse=True)  # newest first
    assert any(p["captureManager"] for p in projects)
    assert any(c["contact"]["organization"] for p in projects for c in p["contacts"]["nodes"])
    assert any(p["documents"]["nodes"] for p in projects)
    assert all(len(p["documents"]["nodes"]) <= 10 for p in projects)
    assert any(p["capturePlans"]["nodes"] for p in projects)


def _project_by_id(data: Data) -> None:
    project = data["node"]
    assert project["rowId"] == str(PROJECT)
    assert project["projectName"] == "CISA Zero Trust Architecture Engineering"
    assert project["effective"]["title"]["source"] in {"OVERRIDE", "EXTERNAL", "LOCAL"}
    assert project["currentExternalData"] is not None


def _pipeline_summary(data: Data) -> None:
    stages = data["pipelineSummary"]
    assert sum(s["projectCount"] for s in stages) > 0
    assert {s["stage"] for s in stages} >= {"PHASE_0", "PHASE_3"}


def _document_search(data: Data) -> None:
    documents = data["documents"]["nodes"]
    assert documents and data["documents"]["totalCount"] >= len(documents)
    ranks = [d["searchRank"] for d in documents]
    assert ranks == sorted(ranks, reverse=True)  # most relevant first
    assert all("<mark>" in (d["searchSnippet"] or "") for d in documents)


# The project's updatedAt as the demo seeds it (server/seed/demo.py, relative to its AS_OF).
PROJECT_UPDATED_AT = "2026-09-24T16:42:00.000000Z"


def _project_update(data: Data) -> None:
    payload = data["opportunityProjectUpdate"]
    assert payload["errors"] == []
    project = payload["opportunityProject"]
    assert project["rowId"] == str(PROJECT)
    assert (project["priorityLevel"], project["pipelineStage"]) == ("HIGH", "PHASE_4")
    assert project["updatedAt"] > PROJECT_UPDATED_AT
    changes = {(h["fieldName"], h["oldValue"], h["newValue"]) for h in project["history"]["nodes"]}
    assert {("priority_level", "critical", "high"), ("pipeline_stage", "phase_3", "phase_4")} <= changes


def _viewer(data: Data) -> None:
    assert data["viewer"]["user"]["email"] == ADMIN_EMAIL
    assert data["viewer"]["tenant"]["subdomain"] == SUBDOMAIN
    assert [r["role"]["name"] for r in data["viewer"]["roles"]] == ["Tenant Admin"]


def _organizations_with_children(data: Data) -> None:
    roots = data["organizations"]["nodes"]
    assert len(roots) > 1
    # The demo's agency -> sub-agency -> office hierarchy reaches the second level.
    assert any(grandchild for o in roots for c in o["childOrganizations"]["nodes"]
               for grandchild in c["childOrganizations"]["nodes"])


@dataclass(frozen=True, slots=True)
class Case:
    variables: dict[str, Any]
    check: Callable[[Data], None]


CASES: dict[str, Case] = {
    "nested_pursuit": Case({}, _nested_pursuit),
    "project_by_id": Case({"id": to_base64("OpportunityProject", PROJECT)}, _project_by_id),
    "pipeline_summary": Case({}, _pipeline_summary),
    "document_search": Case({"search": "capture plan"}, _document_search),
    "project_update": Case(
        {"id": to_base64("OpportunityProject", PROJECT), "updatedAt": PROJECT_UPDATED_AT, "priority": "HIGH",
         "stage": "PHASE_4"},
        _project_update,
    ),
    "viewer": Case({}, _viewer),
    "organizations_with_children": Case({}, _organizations_with_children),
}


def _operation_files() -> list[Path]:
    return sorted(OPERATIONS.glob("*.graphql"))


def _read(path: Path) -> str:
    return path.read_text()


@pytest.fixture(scope="module")
async def demo(owner_engine: AsyncEngine) -> None:
    # Seeding is idempotent; passwords set here use the test hash count (already set ones stay).
    await seed_demo(owner_engine, PasswordHasher(TEST_ITERATIONS))


@pytest.fixture(scope="module")
def app(database: Database) -> Starlette:
    return create_app(settings_for(database.app_url))


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as http:
        yield http


@pytest.fixture
async def admin_token(client: httpx.AsyncClient, demo: None) -> str:
    credentials = {"email": ADMIN_EMAIL, "password": DEMO_PASSWORD, "tenant": SUBDOMAIN}
    response = await client.post("/auth/login", json=credentials)
    assert response.status_code == 200, response.text
    client.cookies.clear()
    token: str = response.json()["token"]
    return token


def test_the_folder_holds_only_graphql_operations() -> None:
    files = [p for p in OPERATIONS.rglob("*") if p.is_file()]
    assert files, "graphql/operations/ is empty"
    assert [p.name for p in files if p.suffix != ".graphql" or p.parent != OPERATIONS] == []


def test_every_case_has_its_operation_file() -> None:
    assert sorted(CASES) == sorted(p.stem for p in _operation_files())


@pytest.mark.parametrize("path", _operation_files(), ids=lambda p: p.stem)
async def test_operation_runs_on_the_demo_data(
    path: Path, client: httpx.AsyncClient, admin_token: str
) -> None:
    case = CASES.get(path.stem)
    assert case is not None, f"{path.name} has no case in tests/test_operations.py: add one"
    document = _read(path)
    operations = [d for d in parse(document).definitions if isinstance(d, OperationDefinitionNode)]
    assert len(operations) == 1 and operations[0].name is not None, "one named operation per file"
    body = await gql(client, document, case.variables, token=admin_token)
    case.check(body["data"])

