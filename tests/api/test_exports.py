"""Exports (docs/api.md "Exports"): the pipeline as CSV and XLSX, the audit log of a period as CSV.

The files open with the standard library's csv module and with openpyxl; they hold the caller's
visible rows only (a project-scoped caller its project, another tenant's rows never); guarded
columns read `[withheld]` without their permission (and the denial is in permission_audit) and
their values with it; a formula-looking cell comes back as text; every export writes one audit row
with its row count; a large export streams batch by batch from one snapshot under a low statement
timeout; bad parameters answer 400 and a caller without the permission 403, both JSON with a code.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import uuid
from collections.abc import MutableMapping
from typing import Any

import asyncpg
import httpx
import openpyxl
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from server.app import create_app
from tests.conftest import Database
from tests.support.db import TenantRef, create_tenant
from tests.support.factories import make
from tests.support.graphql import audit_rows, sign_in
from tests.support.http import LoginUser, app_client, make_login_user
from tests.support.http import test_settings as settings_for

FORMULA = '=HYPERLINK("https://evil.example/x","open")'
WITHHELD = "[withheld]"


# -- data -----------------------------------------------------------------------------------------


async def _world(owner_engine: AsyncEngine) -> dict[str, Any]:
    """A tenant with two live projects (one named like a formula) and an archived one; another
    tenant with a project of its own."""
    tenant = await create_tenant(owner_engine)
    other = await create_tenant(owner_engine)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        formula = await make(conn, "opportunity_projects", tenant, project_name=FORMULA, win_probability_score=55,
                             title="+cmd|' /C calc'!A0", agency_name="@SUM(1+1)")
        plain = await make(conn, "opportunity_projects", tenant, project_name="Plain project",
                           win_probability_score=70, strategic_value_score=12.5, agency_name="-2+3")
        archived = await make(conn, "opportunity_projects", tenant, project_name="Archived project",
                              archived_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        # Effective values: the plain project's from its current external version, the formula
        # project's estimated value from an active override over its external version.
        for project, value in ((plain, 1_250_000), (formula, 10)):
            await make(conn, "external_opportunity_data", tenant, {"opportunity_projects": project.id},
                       is_current_version=True, estimated_value_max=value, set_aside_type="8(a)",
                       response_due_date=dt.datetime(2027, 1, 15, 17, tzinfo=dt.UTC))
        await make(conn, "opportunity_project_overrides", tenant, {"opportunity_projects": formula.id},
                   field_name="estimated_value_max", override_value='"900000.50"')
        await set_tenant(conn, other.id)
        foreign = await make(conn, "opportunity_projects", other, project_name="Other tenant's project")
    return {"tenant": tenant, "other": other, "formula": formula.id, "plain": plain.id, "archived": archived.id,
            "foreign": foreign.id}


async def _user_with(owner_engine: AsyncEngine, tenant: TenantRef, role: str, project: uuid.UUID | None) -> LoginUser:
    """A user whose only role is `role`, tenant-wide or on `project`."""
    user = await make_login_user(owner_engine, tenant, roles=[])
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(
            text(
                "INSERT INTO user_roles (tenant_id, user_id, role_id, opportunity_project_id, assigned_by)"
                " SELECT :t, :u, id, :p, :by FROM roles WHERE tenant_id = :t AND name = :r"
            ),
            {"t": tenant.id, "u": user.id, "p": project, "by": tenant.system_user_id, "r": role},
        )
    return user


async def _custom_role_user(owner_engine: AsyncEngine, tenant: TenantRef, permissions: list[str]) -> LoginUser:
    user = await make_login_user(owner_engine, tenant, roles=[])
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        role_id = await conn.scalar(
            text("INSERT INTO roles (tenant_id, name, permissions) VALUES (:t, :n, CAST(:p AS jsonb)) RETURNING id"),
            {"t": tenant.id, "n": f"Custom {uuid.uuid4().hex[:8]}", "p": str(permissions).replace("'", '"')},
        )
        await conn.execute(
            text("INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by) VALUES (:t, :u, :r, :by)"),
            {"t": tenant.id, "u": user.id, "r": role_id, "by": tenant.system_user_id},
        )
    return user


@pytest.fixture(scope="module")
async def world(owner_engine: AsyncEngine) -> dict[str, Any]:
    return await _world(owner_engine)


async def _get(client: httpx.AsyncClient, path: str, token: str, **params: str) -> httpx.Response:
    return await client.get(path, params=params, headers={"authorization": f"Bearer {token}"})


def _csv(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["cache-control"] == "no-store"
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))


async def _exports(owner_engine: AsyncEngine, tenant: TenantRef, action: str, request_id: str) -> list[Any]:
    return [row for row in await audit_rows(owner_engine, tenant.id, action) if row.request_id == request_id]


async def _denials(owner_engine: AsyncEngine, tenant: TenantRef, request_id: str) -> dict[str, tuple[str, int]]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = (
            await conn.execute(
                text("SELECT field_path, permission_checked, denied_count FROM permission_audit"
                     " WHERE tenant_id = :t AND request_id = :r"),
                {"t": tenant.id, "r": request_id},
            )
        ).all()
    return {row.field_path: (row.permission_checked, row.denied_count) for row in rows}


# -- the pipeline -----------------------------------------------------------------------------------


async def test_pipeline_csv_holds_the_visible_rows_with_their_columns_and_is_audited(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    tenant = world["tenant"]
    token = await sign_in(client, await _user_with(owner_engine, tenant, "Capture Manager", None))
    response = await _get(client, "/export/pipeline.csv", token)
    rows = _csv(response)
    by_id = {row["rowId"]: row for row in rows}
    # Archived projects are left out by default, as in opportunityProjects; another tenant's never appear.
    assert set(by_id) == {str(world["formula"]), str(world["plain"])}
    plain = by_id[str(world["plain"])]
    assert plain["projectName"] == "Plain project"
    assert plain["winProbabilityScore"] == "70.00"
    assert plain["strategicValueScore"] == "12.50"
    assert plain["pipelineStage"] == "phase_0"
    assert plain["effective.estimatedValueMax"] == "1250000.00"
    assert plain["effective.setAsideType"] == "8(a)"
    assert plain["effective.responseDueDate"] == "2027-01-15T17:00:00Z"
    assert by_id[str(world["formula"])]["effective.estimatedValueMax"] == "900000.50"  # the override wins
    # Formula-looking text is escaped with a single quote, so a spreadsheet reads it as text.
    formula = by_id[str(world["formula"])]
    assert formula["projectName"] == "'" + FORMULA
    assert formula["title"] == "'+cmd|' /C calc'!A0"
    assert formula["agencyName"] == "'@SUM(1+1)"
    assert plain["agencyName"] == "'-2+3"
    assert list(rows[0]) == [
        "rowId", "projectName", "internalReferenceNumber", "solicitationNumber", "title", "agencyName",
        "contractingOffice", "projectStatus", "pipelineStage", "priorityLevel", "winProbabilityScore",
        "strategicValueScore", "pursuitHealthScore", "effective.title", "effective.solicitationStatus",
        "effective.setAsideType", "effective.naicsCodes", "effective.estimatedValueMin", "effective.estimatedValueMax",
        "effective.postingDate", "effective.responseDueDate", "effective.placeOfPerformance",
        "assignedCaptureManagerId", "assignedProposalManagerId",
        "externalOpportunityUrl", "syncStatus", "lastSyncedAt", "createdAt", "updatedAt", "archivedAt",
    ]

    (event,) = await _exports(owner_engine, tenant, "export.pipeline", response.headers["x-request-id"])
    assert event.entity_type == "export" and event.access_granted
    assert event.after_values["rows"] == 2 and event.after_values["format"] == "csv"
    assert event.after_values["completed"] is True and event.after_values["withheldColumns"] == {}
    assert event.operation_description == "pipeline export (csv): 2 rows"

    archived = _csv(await _get(client, "/export/pipeline.csv", token, includeArchived="true"))
    assert {row["rowId"] for row in archived} == {str(world[k]) for k in ("formula", "plain", "archived")}


async def test_pipeline_withholds_scores_from_a_caller_without_their_permission(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    tenant = world["tenant"]
    token = await sign_in(client, await _user_with(owner_engine, tenant, "Viewer", None))  # no opportunity.score:read
    response = await _get(client, "/export/pipeline.csv", token)
    rows = _csv(response)
    assert len(rows) == 2
    for row in rows:
        assert (row["winProbabilityScore"], row["strategicValueScore"], row["pursuitHealthScore"]) == (WITHHELD,) * 3
        assert row["projectName"]  # the rest is served
    request_id = response.headers["x-request-id"]
    assert await _denials(owner_engine, tenant, request_id) == {
        f"export.pipeline.{column}": ("opportunity.score:read", 2)
        for column in ("winProbabilityScore", "strategicValueScore", "pursuitHealthScore")
    }
    (event,) = await _exports(owner_engine, tenant, "export.pipeline", request_id)
    assert event.after_values["withheldColumns"] == {
        "pursuitHealthScore": 2, "strategicValueScore": 2, "winProbabilityScore": 2
    }


async def test_a_project_scoped_caller_exports_its_project_only(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    tenant = world["tenant"]
    token = await sign_in(client, await _user_with(owner_engine, tenant, "BD Analyst", world["plain"]))
    response = await _get(client, "/export/pipeline.csv", token)
    (row,) = _csv(response)
    assert row["rowId"] == str(world["plain"])
    assert row["winProbabilityScore"] == "70.00"  # BD Analyst holds opportunity.score:read on the project
    (event,) = await _exports(owner_engine, tenant, "export.pipeline", response.headers["x-request-id"])
    assert event.after_values["rows"] == 1

    book = openpyxl.load_workbook(io.BytesIO((await _get(client, "/export/pipeline.xlsx", token)).content))
    assert [r[0] for r in book["Pipeline"].iter_rows(min_row=2, values_only=True)] == [str(world["plain"])]


async def test_pipeline_xlsx_opens_with_openpyxl_and_keeps_formulas_as_text(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    tenant = world["tenant"]
    token = await sign_in(client, await _user_with(owner_engine, tenant, "Capture Manager", None))
    response = await _get(client, "/export/pipeline.xlsx", token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert response.headers["content-disposition"].endswith('.xlsx"')
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    sheet = book["Pipeline"]
    header = [cell.value for cell in sheet[1]]
    rows = {row[0].value: {h: cell for h, cell in zip(header, row, strict=True)} for row in sheet.iter_rows(min_row=2)}
    assert set(rows) == {str(world["formula"]), str(world["plain"])}
    name = rows[str(world["formula"])]["projectName"]
    # Text, never a formula: the exact value, a string cell, with the spreadsheet's own quote prefix.
    assert name.value == FORMULA and name.data_type == "s" and name.quotePrefix
    assert rows[str(world["formula"])]["title"].data_type == "s"
    assert rows[str(world["plain"])]["winProbabilityScore"].value == 70
    assert rows[str(world["plain"])]["projectName"].quotePrefix is False
    (event,) = await _exports(owner_engine, tenant, "export.pipeline", response.headers["x-request-id"])
    assert event.after_values["format"] == "xlsx" and event.after_values["rows"] == 2

    viewer = await sign_in(client, await _user_with(owner_engine, tenant, "Viewer", None))
    book = openpyxl.load_workbook(io.BytesIO((await _get(client, "/export/pipeline.xlsx", viewer)).content))
    column = header.index("winProbabilityScore")
    scores = {row[column] for row in book["Pipeline"].iter_rows(min_row=2, values_only=True)}
    assert scores == {WITHHELD}


async def test_effective_values_draw_on_external_data_only_where_the_caller_reads_it(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    token = await sign_in(client, await _custom_role_user(owner_engine, world["tenant"], ["opportunity:read"]))
    by_id = {row["rowId"]: row for row in _csv(await _get(client, "/export/pipeline.csv", token))}
    assert by_id[str(world["plain"])]["effective.estimatedValueMax"] == ""
    assert by_id[str(world["plain"])]["effective.setAsideType"] == ""
    assert by_id[str(world["formula"])]["effective.estimatedValueMax"] == "900000.50"


async def test_pipeline_refuses_a_caller_who_reads_no_project(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    tenant = world["tenant"]
    token = await sign_in(client, await _custom_role_user(owner_engine, tenant, ["contact:read"]))
    for path in ("/export/pipeline.csv", "/export/pipeline.xlsx"):
        response = await _get(client, path, token)
        assert response.status_code == 403
        assert response.json() == {"error": {
            "code": "FORBIDDEN", "message": "Exporting the pipeline requires the opportunity:read permission.",
            "permission": "opportunity:read",
        }}
        (denied,) = await _exports(owner_engine, tenant, "auth.access.denied", response.headers["x-request-id"])
        assert denied.entity_type == "export" and denied.access_granted is False and denied.response_status == 403
        assert await _exports(owner_engine, tenant, "export.pipeline", response.headers["x-request-id"]) == []


async def test_pipeline_parameters_are_checked(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    token = await sign_in(client, await _user_with(owner_engine, world["tenant"], "Viewer", None))
    bad = await _get(client, "/export/pipeline.csv", token, includeArchived="yes")
    assert bad.status_code == 400
    assert bad.json()["error"] == {"code": "BAD_REQUEST", "message": "includeArchived takes true or false.",
                                   "field": "includeArchived"}
    unknown = await _get(client, "/export/pipeline.xlsx", token, orderBy="name")
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "orderBy"
    head = await client.head("/export/pipeline.csv", headers={"authorization": f"Bearer {token}"})
    assert head.status_code == 405
    other = await _get(client, "/export/pipeline.pdf", token)
    assert other.status_code == 404 and other.json()["error"]["code"] == "NOT_FOUND"
    anonymous = await client.get("/export/pipeline.csv")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "UNAUTHENTICATED"


# -- the audit log ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def audited(owner_engine: AsyncEngine, world: dict[str, Any]) -> dict[str, Any]:
    """Audit rows about the formula project (its score in the values), one before the period."""
    tenant = world["tenant"]
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        old = await make(conn, "audit_logs", tenant, entity_id=world["formula"], action_type="UPDATE",
                         timestamp_utc=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        change = await make(
            conn, "audit_logs", tenant, entity_id=world["formula"], action_type="UPDATE",
            operation_description=FORMULA,
            before_values={"win_probability_score": "40.00", "project_name": "Before"},
            after_values={"win_probability_score": "55.00", "project_name": FORMULA},
            changed_fields=["win_probability_score", "project_name"],
        )
        await set_tenant(conn, world["other"].id)
        foreign = await make(conn, "audit_logs", world["other"], entity_id=world["foreign"], action_type="UPDATE")
    return {"old": old.id, "change": change.id, "foreign": foreign.id}


def _this_week() -> dict[str, str]:
    today = dt.datetime.now(dt.UTC).date()
    return {"from": (today - dt.timedelta(days=6)).isoformat(), "to": (today + dt.timedelta(days=1)).isoformat()}


async def test_audit_log_csv_holds_the_period_with_values_for_an_auditor(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any], audited: dict[str, Any]
) -> None:
    tenant = world["tenant"]
    token = await sign_in(client, await _user_with(owner_engine, tenant, "Auditor", None))
    response = await _get(client, "/export/audit-log.csv", token, **_this_week())
    rows = _csv(response)
    ids = [row["rowId"] for row in rows]
    assert str(audited["change"]) in ids
    assert str(audited["old"]) not in ids  # before the period
    assert str(audited["foreign"]) not in ids  # another tenant's
    assert [int(row["seq"]) for row in rows] == sorted(int(row["seq"]) for row in rows)
    change = next(row for row in rows if row["rowId"] == str(audited["change"]))
    assert change["operationDescription"] == "'" + FORMULA
    assert change["afterValues"] == '{"project_name":"=HYPERLINK(\\"https://evil.example/x\\",\\"open\\")",' \
        '"win_probability_score":"55.00"}'
    assert '"win_probability_score":"40.00"' in change["beforeValues"]
    assert change["changedFields"] == '["win_probability_score","project_name"]'
    # The sign-in of this very caller is an event of the period, readable with audit:read.
    assert any(row["actionType"] == "auth.login.succeeded" for row in rows)

    (event,) = await _exports(owner_engine, tenant, "export.audit_log", response.headers["x-request-id"])
    assert event.after_values["rows"] == len(rows) and event.after_values["from"].startswith(_this_week()["from"])
    assert event.user_id is not None and event.operation_description == f"auditLog export (csv): {len(rows)} rows"


async def test_audit_log_withholds_guarded_values_from_a_caller_without_their_permission(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any], audited: dict[str, Any]
) -> None:
    tenant = world["tenant"]
    token = await sign_in(client, await _custom_role_user(owner_engine, tenant, ["audit:read", "opportunity:read"]))
    response = await _get(client, "/export/audit-log.csv", token, **_this_week())
    change = next(row for row in _csv(response) if row["rowId"] == str(audited["change"]))
    assert '"win_probability_score":"[withheld]"' in change["afterValues"]
    assert '"win_probability_score":"[withheld]"' in change["beforeValues"]
    assert '"project_name":"Before"' in change["beforeValues"]  # the other keys are served
    assert change["changedFields"] == '["win_probability_score","project_name"]'  # names, not values
    denials = await _denials(owner_engine, tenant, response.headers["x-request-id"])
    assert denials == {
        "export.auditLog.beforeValues": ("opportunity.score:read", 1),
        "export.auditLog.afterValues": ("opportunity.score:read", 1),
    }


async def test_audit_log_needs_audit_read(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    tenant = world["tenant"]
    token = await sign_in(client, await _user_with(owner_engine, tenant, "Capture Manager", None))
    response = await _get(client, "/export/audit-log.csv", token, **_this_week())
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"
    assert response.json()["error"]["permission"] == "audit:read"
    (denied,) = await _exports(owner_engine, tenant, "auth.access.denied", response.headers["x-request-id"])
    assert denied.permission_used == "audit:read" and denied.access_granted is False


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({}, "from", "from is required"),
        ({"from": "2026-12-01"}, "to", "to is required"),
        ({"from": "last week", "to": "2026-12-01"}, "from", "from is not a date"),
        ({"from": "2026-12-01T00:00:00", "to": "2026-12-02"}, "from", "from needs an offset"),
        ({"from": "2026-12-08", "to": "2026-12-01"}, "to", "to must be after from"),
        ({"from": "2026-12-01", "to": "2026-12-01"}, "to", "to must be after from"),
        ({"from": "2024-01-01", "to": "2026-12-01"}, "to", "at most 366 days"),
        ({"from": "2026-12-01", "to": "2026-12-02", "user": "x"}, "user", "Unknown parameter"),
        ({"from": "2026-13-01", "to": "2026-12-02"}, "from", "from is not a date"),
        ({"from": "2026-12-01\x00", "to": "2026-12-02"}, "from", "from is not a date"),
        ({"from": "2026-12-01", "to": "2026-12-02", "\x00": "x"}, "\x00", "Unknown parameter"),
    ],
)
async def test_audit_log_period_errors_are_400_with_a_code(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any],
    params: dict[str, str], field: str, message: str,
) -> None:
    token = await sign_in(client, await _user_with(owner_engine, world["tenant"], "Auditor", None))
    response = await _get(client, "/export/audit-log.csv", token, **params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "BAD_REQUEST" and error["field"] == field and message in error["message"]


async def test_audit_log_refuses_bytes_that_are_not_utf8_in_the_query(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    token = await sign_in(client, await _user_with(owner_engine, world["tenant"], "Auditor", None))
    response = await client.get("/export/audit-log.csv?from=2026-12-01&to=%ED%A0%80%FF",
                                headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BAD_REQUEST" and response.json()["error"]["field"] == "to"


async def test_audit_log_accepts_instants_with_an_offset(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any], audited: dict[str, Any]
) -> None:
    token = await sign_in(client, await _user_with(owner_engine, world["tenant"], "Auditor", None))
    response = await _get(client, "/export/audit-log.csv", token, **{"from": "2019-12-31T18:00:00-05:00",
                                                                      "to": "2020-01-01T00:00:01Z"})
    assert [row["rowId"] for row in _csv(response)] == [str(audited["old"])]


# -- a large export streams from one snapshot ----------------------------------------------------------

LARGE = 3_000
BATCH = 500  # resolvers.exports.runner.DEFAULT_BATCH_SIZE


@pytest.fixture(scope="module")
async def low_timeout_app(database: Database) -> Starlette:
    # Every statement of the server's role is bounded by 300 ms; the export's batches stay far below.
    return create_app(settings_for(database.app_url, db_statement_timeout_ms=300))


class AsgiDownload:
    """GET through the ASGI interface itself, seeing each body message as the app sends it; the
    client may go away after `disconnect_after` chunks."""

    def __init__(self, on_chunk: Any = None, disconnect_after: int | None = None) -> None:
        self.on_chunk = on_chunk
        self.disconnect_after = disconnect_after
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.finished = False  # the final (more_body false) message was sent
        self._requested = False
        self._gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            if message.get("body"):
                self.chunks.append(message["body"])
                if self.on_chunk is not None:
                    await self.on_chunk(len(self.chunks), self.headers)
                if self.disconnect_after is not None and len(self.chunks) >= self.disconnect_after:
                    self._gone.set()
                    await asyncio.sleep(3600)  # the client stopped reading: this send never completes
            if not message.get("more_body"):
                self.finished = True
                self._gone.set()

    async def get(self, app: Starlette, path: str, token: str) -> AsgiDownload:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "https",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())],
            "client": ("127.0.0.1", 50001), "server": ("testserver", 443), "state": {}, "app": app,
        }
        await app(scope, self.receive, self.send)
        return self


async def _large_tenant(owner_engine: AsyncEngine, *, names: str = "'Project ' || n") -> TenantRef:
    tenant = await create_tenant(owner_engine)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(
            text(
                "INSERT INTO opportunity_projects (tenant_id, project_name, external_source_id,"
                " external_opportunity_id, created_by, win_probability_score, created_at)"
                f" SELECT :t, {names}, :s, 'EXT-' || n, :u, n % 100, now() - n * interval '1 second'"
                " FROM generate_series(1, :n) AS n"
            ),
            {"t": tenant.id, "s": tenant.manual_source_id, "u": tenant.system_user_id, "n": LARGE},
        )
    return tenant


async def test_a_large_pipeline_export_streams_from_one_snapshot_under_a_low_statement_timeout(
    low_timeout_app: Starlette, owner_engine: AsyncEngine
) -> None:
    tenant = await _large_tenant(owner_engine)
    user = await make_login_user(owner_engine, tenant, roles=["Capture Manager"])
    seen_during_stream: list[int] = []

    async def on_chunk(count: int, headers: dict[str, str]) -> None:
        if count == 2:  # the header row, then the first batch: the export is under way
            request_id = headers["x-request-id"]
            seen_during_stream.append(len(await _exports(owner_engine, tenant, "export.pipeline", request_id)))
            # Committed now, and oldest of all (so it sorts into a batch not read yet): the export's
            # snapshot was taken before it, so the file does not hold it.
            async with owner_engine.begin() as conn:
                await set_tenant(conn, tenant.id)
                await make(conn, "opportunity_projects", tenant, project_name="Added during the export",
                           external_opportunity_id="ADDED-DURING-EXPORT",
                           created_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))

    async with app_client(low_timeout_app) as client:
        token = await sign_in(client, user)
        download = await AsgiDownload(on_chunk).get(low_timeout_app, "/export/pipeline.csv", token)
    assert download.status == 200 and download.finished
    chunks = download.chunks
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode("utf-8-sig"), newline="")))
    assert len(rows) == LARGE
    assert "Added during the export" not in {row["projectName"] for row in rows}
    assert len({row["rowId"] for row in rows}) == LARGE
    # One chunk for the header, then one per batch: memory holds one batch at a time.
    assert len(chunks) == 1 + LARGE // BATCH
    assert max(len(chunk) for chunk in chunks) < BATCH * 400
    # The first batch went out before the export ended (its audit row is written at the end).
    assert seen_during_stream == [0]
    (event,) = await _exports(owner_engine, tenant, "export.pipeline", download.headers["x-request-id"])
    assert event.after_values["rows"] == LARGE and event.after_values["completed"] is True


async def test_a_client_that_goes_away_ends_the_snapshot_and_the_export_is_audited_as_stopped(
    low_timeout_app: Starlette, owner_engine: AsyncEngine
) -> None:
    tenant = await _large_tenant(owner_engine)
    user = await make_login_user(owner_engine, tenant, roles=["Viewer"])
    async with app_client(low_timeout_app) as client:
        token = await sign_in(client, user)
        download = await AsgiDownload(disconnect_after=2).get(low_timeout_app, "/export/pipeline.csv", token)
    assert download.status == 200 and not download.finished and len(download.chunks) == 2
    (event,) = await _exports(owner_engine, tenant, "export.pipeline", download.headers["x-request-id"])
    assert event.after_values["completed"] is False and event.after_values["rows"] == BATCH
    assert event.operation_description == f"pipeline export (csv): {BATCH} rows (stopped before the end)"


async def test_an_export_past_its_time_bound_stops_without_a_final_chunk(
    database: Database, owner_engine: AsyncEngine
) -> None:
    app = create_app(settings_for(database.app_url, export_max_seconds=1))
    tenant = await _large_tenant(owner_engine)
    user = await make_login_user(owner_engine, tenant, roles=["Viewer"])

    async def slow_reader(count: int, headers: dict[str, str]) -> None:
        if count == 2:
            await asyncio.sleep(1.2)  # the client reads slowly: the snapshot reaches its bound

    async with app_client(app) as client:
        token = await sign_in(client, user)
        download = await AsgiDownload(slow_reader).get(app, "/export/pipeline.csv", token)
    # The response ends without its last chunk (a failed download, never a complete-looking short file).
    assert download.status == 200 and not download.finished and len(download.chunks) == 2
    (event,) = await _exports(owner_engine, tenant, "export.pipeline", download.headers["x-request-id"])
    assert event.after_values["completed"] is False and event.after_values["rows"] == BATCH


async def test_a_client_that_stops_reading_cannot_hold_the_snapshot(
    database: Database, owner_engine: AsyncEngine
) -> None:
    app = create_app(settings_for(database.app_url, export_idle_seconds=1))
    tenant = await _large_tenant(owner_engine)
    user = await make_login_user(owner_engine, tenant, roles=["Viewer"])
    idle_backends: list[int] = []

    async def stalled_reader(count: int, headers: dict[str, str]) -> None:
        if count == 2:
            await asyncio.sleep(0.3)
            # The export's snapshot, waiting for the client (another role's sessions show their
            # state to a superuser only).
            conn = await asyncpg.connect(database.superuser_url.replace("postgresql+asyncpg://", "postgresql://", 1))
            try:
                idle_backends.append(await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'gwm-server'"
                    " AND state = 'idle in transaction' AND backend_xmin IS NOT NULL", database.name
                ))
            finally:
                await conn.close()
            await asyncio.sleep(1.5)  # past the idle limit: PostgreSQL ends the export's session

    async with app_client(app) as client:
        token = await sign_in(client, user)
        download = await AsgiDownload(stalled_reader).get(app, "/export/pipeline.csv", token)
    assert idle_backends and idle_backends[0] >= 1
    assert download.status == 200 and not download.finished and len(download.chunks) == 2
    (event,) = await _exports(owner_engine, tenant, "export.pipeline", download.headers["x-request-id"])
    assert event.after_values["completed"] is False and event.after_values["rows"] == BATCH


async def test_a_large_xlsx_export_completes_under_a_low_statement_timeout(
    low_timeout_app: Starlette, owner_engine: AsyncEngine
) -> None:
    tenant = await _large_tenant(owner_engine, names="'=Project ' || n")
    user = await make_login_user(owner_engine, tenant, roles=["Viewer"])
    async with app_client(low_timeout_app) as client:
        token = await sign_in(client, user)
        response = await _get(client, "/export/pipeline.xlsx", token)
    assert response.status_code == 200, response.text
    sheet = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True)["Pipeline"]
    names = [row[1] for row in sheet.iter_rows(min_row=2, values_only=True)]
    assert len(names) == LARGE and all(isinstance(n, str) and n.startswith("=Project ") for n in names)
    (event,) = await _exports(owner_engine, tenant, "export.pipeline", response.headers["x-request-id"])
    assert event.after_values["rows"] == LARGE
