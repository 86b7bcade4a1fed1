"""Saved searches (issue 14, acceptance 5): a saved search turns the fake SAM.gov's results into
candidates, one becomes a project, another is dismissed; candidates are de-duplicated against
lineages already tracked and across runs; the tenant's project limit and idempotency keys hold;
permissions and validation refuse what they must.

The fake SAM.gov runs on a real server on 127.0.0.1 (tests/sync/fake_samgov.py `serve`); the run
goes through the SAM.gov connector and `sync.saved_searches.run_saved_search`, the function the
sync job calls.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from auth.audited import system_unit
from auth.outbound import OutboundPolicy
from models.db import set_tenant
from resolvers.common.validation import ValidationFailed, validate
from resolvers.external_data.mutations import seal_credentials
from sync.connectors.base import SearchQuery, SearchResult
from sync.connectors.samgov import SamGovConnector
from sync.jobs import JOBS
from sync.saved_searches import RunOutcome, run_saved_search
from sync.schedule import Job, JobKind, fingerprint_key, key_fingerprint, set_budget_limits
from sync.worker import JobContext, SyncServices, Worker
from tests.support.audit_trail import expect_audit
from tests.support.clock import FakeClock
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.support.factories import make
from tests.support.graphql import audit_rows, gql, sign_in
from tests.support.http import make_login_user
from tests.support.validation import expect_refusal
from tests.sync.fake_samgov import API_KEY, FakeSamGov, notice, serve

NOW = datetime(2026, 2, 10, 15, 0, tzinfo=UTC)
NAVY = "DEPT OF DEFENSE.DEPT OF THE NAVY.NAVSEA.NAVSEA HQ"
ARMY = "DEPT OF DEFENSE.DEPT OF THE ARMY.AMC.ACC"

CREATE = """
mutation ($i: SavedSearchCreateInput!) { savedSearchCreate(input: $i) {
  savedSearch { rowId name naicsCodes setAsideCodes titleKeywords agency isActive externalSource { rowId } }
  errors { code field message } } }
"""
TRACK = """
mutation ($i: CandidateTrackInput!) { candidateTrack(input: $i) {
  opportunityProject { rowId projectName title solicitationNumber externalOpportunityId syncStatus
                       externalSource { rowId } pollingConfigurations { totalCount } }
  errors { code field message } } }
"""
DISMISS = """
mutation ($i: CandidateDismissInput!) { candidateDismiss(input: $i) {
  savedSearchCandidate { rowId status decidedAt decidedBy { rowId } }
  errors { code field message } } }
"""
CANDIDATES = """
query ($id: ID!) { node(id: $id) { ... on SavedSearch { candidates(first: 50) { totalCount nodes {
  rowId lineageKey noticeId title status solicitationNumber agency postedDate
  opportunityProject { rowId } savedSearch { name } } } } } }
"""
NEW_ONES = """
{ savedSearchCandidates(filter: {status: {eq: NEW}}, orderBy: [{field: POSTED_DATE, direction: ASC}]) {
  totalCount nodes { lineageKey } } }
"""


def _notices() -> list[dict[str, Any]]:
    """What the fake SAM.gov holds: three lineages that match, and five notices that do not."""
    cloud = {"naicsCode": "541512", "naicsCodes": ["541512"], "fullParentPathName": NAVY}
    return [
        notice(1, title="Cloud hosting services", postedDate="2026-02-01", **cloud),
        notice(2, title="Cloud migration support", postedDate="2026-02-02", **cloud),
        notice(3, title="Secure cloud enclave", postedDate="2026-02-03", **cloud),
        # an amendment of lineage 3: a new noticeId, the same solicitation number, posted later
        notice(30, title="Secure cloud enclave (amendment 1)", solicitationNumber="SOL-00003",
               postedDate="2026-02-05", **cloud),
        notice(4, title="Data centre operations", postedDate="2026-02-02", **cloud),  # no keyword
        notice(5, title="Cloud ship repair", postedDate="2026-02-02"),  # NAICS 336611: filtered by SAM.gov
        notice(6, title="Cloud analytics", postedDate="2026-02-02",
               **{**cloud, "fullParentPathName": ARMY, "fullParentPathCode": "021.2100.AMC.ACC"}),  # agency
        notice(7, title="Cloud desktop", postedDate="2026-02-04", **cloud),  # tracked already (see below)
        notice(9, title="Cloud storage", postedDate="2026-02-04", typeOfSetAside="8A", **cloud),  # set-aside
    ]


class World:
    """The tenant, its SAM.gov source on the fake server, an admin and a viewer."""

    def __init__(self, client: httpx.AsyncClient, owner: AsyncEngine, app: AsyncEngine, tenant: TenantRef,
                 fake: FakeSamGov, base_url: str) -> None:
        self.client, self.owner, self.app, self.tenant = client, owner, app, tenant
        self.fake, self.base_url = fake, base_url
        self.source_id = uuid.UUID(int=0)
        self.admin = ""
        self.admin_id = uuid.UUID(int=0)
        self.viewer = ""

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.owner.connect() as conn:
            await set_tenant(conn, self.tenant.id)
            found = (await conn.execute(text(sql), {"t": self.tenant.id, **params})).all()
            await conn.rollback()
        return list(found)

    async def execute(self, sql: str, **params: Any) -> None:
        async with self.owner.begin() as conn:
            await set_tenant(conn, self.tenant.id)
            await conn.execute(text(sql), {"t": self.tenant.id, **params})

    async def run(self, search_id: uuid.UUID) -> RunOutcome:
        async with httpx.AsyncClient(trust_env=False) as http:
            connector = SamGovConnector(http, api_key=API_KEY, base_url=self.base_url, limit=2)

            async def search(query: SearchQuery) -> SearchResult:
                return await connector.search_all(query)

            return await run_saved_search(self.app, TEST_AUDIT_CHAIN, self.tenant.id, search_id, search=search,
                                          now=NOW)

    async def create_search(self, **values: Any) -> dict[str, Any]:
        variables = {"i": {"name": f"Navy cloud {uuid.uuid4().hex[:6]}", "externalSourceRowId": str(self.source_id),
                           "naicsCodes": ["541512"], "setAsideCodes": ["sba"], "titleKeywords": ["Cloud"],
                           "agency": "navy", **values}}
        body = await gql(self.client, CREATE, variables, token=self.admin)
        payload: dict[str, Any] = body["data"]["savedSearchCreate"]
        return payload

    async def candidates(self, search_id: uuid.UUID) -> dict[str, dict[str, Any]]:
        body = await gql(self.client, CANDIDATES, {"id": _gid("SavedSearch", search_id)}, token=self.admin)
        nodes = body["data"]["node"]["candidates"]["nodes"]
        return {n["lineageKey"]: n for n in nodes}


def _gid(type_name: str, row_id: uuid.UUID | str) -> str:
    from strawberry.relay import to_base64

    return to_base64(type_name, str(row_id))


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeSamGov, str]]:
    fake = FakeSamGov(notices=_notices())
    with serve(fake) as base_url:
        yield fake, base_url


@pytest.fixture
async def world(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef,
    fake_server: tuple[FakeSamGov, str],
) -> AsyncIterator[World]:
    fake, base_url = fake_server
    fake.notices = _notices()
    w = World(client, owner_engine, app_engine, fresh_tenant, fake, base_url)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        source = await make(conn, "external_opportunity_sources", fresh_tenant, source_name="SAM.gov",
                            api_endpoint=base_url)
        # lineage 7 is tracked already by a project of the source
        await make(conn, "opportunity_projects", fresh_tenant, {"external_opportunity_sources": source.id},
                   external_opportunity_id="SOL-00007", project_name="Cloud desktop pursuit")
    w.source_id = source.id
    admin = await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])
    w.admin, w.admin_id = await sign_in(client, admin), admin.id
    w.viewer = await sign_in(client, await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"]))
    yield w


# -- acceptance 5 -------------------------------------------------------------------------------------


@pytest.mark.audits("candidateTrack", "candidateDismiss", "savedSearchCreate")
async def test_a_saved_search_turns_results_into_candidates_and_one_becomes_a_project(world: World) -> None:
    created = await world.create_search()
    assert created["errors"] == []
    search = created["savedSearch"]
    assert (search["naicsCodes"], search["setAsideCodes"], search["titleKeywords"], search["agency"]) == (
        ["541512"], ["SBA"], ["Cloud"], "navy")
    search_id = uuid.UUID(search["rowId"])
    await expect_audit(world.owner, world.tenant.id, "savedSearchCreate", action="CREATE", entity_id=search_id,
                       history={"name", "naics_codes", "title_keywords"}, user_id=world.admin_id)

    outcome = await world.run(search_id)
    # every request named the search's NAICS code and set-aside; pages of 2 were walked
    assert world.fake.requests and all(("ncode", "541512") in r and ("typeOfSetAside", "SBA") in r
                                       for r in world.fake.requests)
    assert (outcome.created, outcome.tracked, outcome.refreshed) == (3, 1, 0)
    found = await world.candidates(search_id)
    assert sorted(found) == ["SOL-00001", "SOL-00002", "SOL-00003"]
    assert {n["status"] for n in found.values()} == {"NEW"}
    # lineage 3: one candidate, at its latest revision
    assert found["SOL-00003"]["noticeId"] == f"{30:032x}"
    assert found["SOL-00003"]["title"] == "Secure cloud enclave (amendment 1)"
    assert found["SOL-00001"]["agency"] == NAVY and found["SOL-00001"]["savedSearch"]["name"] == search["name"]

    # one becomes a project
    body = await gql(world.client, TRACK, {"i": {"rowId": found["SOL-00001"]["rowId"], "idempotencyKey": "k-1"}},
                     token=world.admin)
    payload = body["data"]["candidateTrack"]
    assert payload["errors"] == []
    project = payload["opportunityProject"]
    assert project["externalOpportunityId"] == "SOL-00001" and project["syncStatus"] == "PENDING"
    assert (project["projectName"], project["title"], project["solicitationNumber"]) == (
        "Cloud hosting services", "Cloud hosting services", "SOL-00001")
    assert project["externalSource"]["rowId"] == str(world.source_id)
    assert project["pollingConfigurations"]["totalCount"] == 1
    project_id = uuid.UUID(project["rowId"])
    await expect_audit(world.owner, world.tenant.id, "candidateTrack", action="CREATE", entity_id=project_id,
                       history={"project_name", "external_opportunity_id"}, user_id=world.admin_id,
                       rows_in_request=3)
    (tracked_event,) = await audit_rows(world.owner, world.tenant.id, "saved_search_candidate.tracked")
    assert tracked_event.entity_id == uuid.UUID(found["SOL-00001"]["rowId"])

    # another is dismissed
    body = await gql(world.client, DISMISS, {"i": {"rowId": found["SOL-00002"]["rowId"]}}, token=world.admin)
    dismissed = body["data"]["candidateDismiss"]
    assert dismissed["errors"] == [] and dismissed["savedSearchCandidate"]["status"] == "DISMISSED"
    assert dismissed["savedSearchCandidate"]["decidedBy"] == {"rowId": str(world.admin_id)}
    await expect_audit(world.owner, world.tenant.id, "candidateDismiss", action="saved_search_candidate.dismissed",
                       entity_id=uuid.UUID(found["SOL-00002"]["rowId"]), history=None, user_id=world.admin_id)

    found = await world.candidates(search_id)
    assert {k: n["status"] for k, n in found.items()} == {
        "SOL-00001": "TRACKED", "SOL-00002": "DISMISSED", "SOL-00003": "NEW"}
    assert found["SOL-00001"]["opportunityProject"] == {"rowId": str(project_id)}
    new_ones = (await gql(world.client, NEW_ONES, token=world.admin))["data"]["savedSearchCandidates"]
    assert [n["lineageKey"] for n in new_ones["nodes"]] == ["SOL-00003"]

    # the next run: a new notice is listed; decisions stay; the tracked lineage is not listed again
    world.fake.notices.append(notice(8, title="Cloud backup", postedDate="2026-02-06", naicsCode="541512",
                                     naicsCodes=["541512"], fullParentPathName=NAVY))
    again = await world.run(search_id)
    assert (again.created, again.refreshed, again.tracked) == (1, 2, 2)
    found = await world.candidates(search_id)
    assert {k: n["status"] for k, n in found.items()} == {
        "SOL-00001": "TRACKED", "SOL-00002": "DISMISSED", "SOL-00003": "NEW", "SOL-00008": "NEW"}
    assert len(await world.rows("SELECT 1 FROM saved_search_candidates WHERE tenant_id = :t")) == 4


async def test_a_lineage_tracked_later_is_marked_tracked_and_not_listed_again(world: World) -> None:
    search_id = uuid.UUID((await world.create_search())["savedSearch"]["rowId"])
    await world.run(search_id)
    # someone creates the project of lineage 2 by hand, from the source reference
    created = await gql(world.client, """mutation ($i: OpportunityProjectCreateInput!) {
        opportunityProjectCreate(input: $i) { opportunityProject { rowId } errors { code } } }""",
                        {"i": {"projectName": "By hand", "externalSourceRowId": str(world.source_id),
                               "externalOpportunityId": "SOL-00002"}}, token=world.admin)
    project_id = created["data"]["opportunityProjectCreate"]["opportunityProject"]["rowId"]
    found = await world.candidates(search_id)
    body = await gql(world.client, TRACK, {"i": {"rowId": found["SOL-00002"]["rowId"]}}, token=world.admin)
    payload = body["data"]["candidateTrack"]
    assert payload["opportunityProject"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("CONFLICT", ["input", "rowId"])]
    assert "By hand" in payload["errors"][0]["message"]
    await world.run(search_id)
    found = await world.candidates(search_id)
    assert found["SOL-00002"]["status"] == "TRACKED"
    assert found["SOL-00002"]["opportunityProject"] == {"rowId": project_id}


async def test_tracking_follows_the_project_limit(world: World) -> None:
    search_id = uuid.UUID((await world.create_search())["savedSearch"]["rowId"])
    await world.run(search_id)
    found = await world.candidates(search_id)
    count = (await world.rows("SELECT count(*) AS n FROM opportunity_projects WHERE tenant_id = :t"
                              " AND archived_at IS NULL"))[0].n
    await world.execute("UPDATE tenants SET max_opportunity_projects = :n WHERE id = :t", n=count)
    before = await world.rows("SELECT count(*) AS n FROM polling_configurations WHERE tenant_id = :t")
    body = await gql(world.client, TRACK, {"i": {"rowId": found["SOL-00003"]["rowId"]}}, token=world.admin)
    payload = body["data"]["candidateTrack"]
    assert payload["opportunityProject"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("PROJECT_LIMIT", None)]
    # nothing was written: no project, no polling configuration, the candidate is still new
    assert (await world.rows("SELECT count(*) AS n FROM opportunity_projects WHERE tenant_id = :t"))[0].n == count
    assert await world.rows("SELECT count(*) AS n FROM polling_configurations WHERE tenant_id = :t") == before
    assert (await world.candidates(search_id))["SOL-00003"]["status"] == "NEW"
    # a slot freed: the same request goes through
    await world.execute("UPDATE tenants SET max_opportunity_projects = :n WHERE id = :t", n=count + 1)
    body = await gql(world.client, TRACK, {"i": {"rowId": found["SOL-00003"]["rowId"]}}, token=world.admin)
    assert body["data"]["candidateTrack"]["errors"] == []


async def test_an_idempotency_key_replays_the_first_project(world: World) -> None:
    search_id = uuid.UUID((await world.create_search())["savedSearch"]["rowId"])
    await world.run(search_id)
    found = await world.candidates(search_id)
    first_input = {"rowId": found["SOL-00001"]["rowId"], "idempotencyKey": "retry-me", "projectName": "Hosting"}
    first = (await gql(world.client, TRACK, {"i": first_input}, token=world.admin))["data"]["candidateTrack"]
    again = (await gql(world.client, TRACK, {"i": first_input}, token=world.admin))["data"]["candidateTrack"]
    assert first["errors"] == [] and again["errors"] == []
    assert again["opportunityProject"]["rowId"] == first["opportunityProject"]["rowId"]
    assert first["opportunityProject"]["projectName"] == "Hosting"
    projects = await world.rows("SELECT id FROM opportunity_projects WHERE tenant_id = :t"
                                " AND external_opportunity_id = 'SOL-00001'")
    assert len(projects) == 1
    # the same key for another candidate is refused; without a key, tracking twice is a CONFLICT
    other = {"rowId": found["SOL-00002"]["rowId"], "idempotencyKey": "retry-me", "projectName": "Hosting"}
    reused = (await gql(world.client, TRACK, {"i": other}, token=world.admin))["data"]["candidateTrack"]
    assert [(e["code"], e["field"]) for e in reused["errors"]] == [
        ("IDEMPOTENCY_KEY_REUSED", ["input", "idempotencyKey"])]
    twice = (await gql(world.client, TRACK, {"i": {"rowId": found["SOL-00001"]["rowId"]}}, token=world.admin))
    assert [e["code"] for e in twice["data"]["candidateTrack"]["errors"]] == ["CONFLICT"]


async def test_decided_candidates_refuse_a_second_decision(world: World) -> None:
    search_id = uuid.UUID((await world.create_search())["savedSearch"]["rowId"])
    await world.run(search_id)
    found = await world.candidates(search_id)
    done = await gql(world.client, DISMISS, {"i": {"rowId": found["SOL-00002"]["rowId"]}}, token=world.admin)
    assert done["data"]["candidateDismiss"]["errors"] == []
    again = await gql(world.client, DISMISS, {"i": {"rowId": found["SOL-00002"]["rowId"]}}, token=world.admin)
    assert [(e["code"], e["field"]) for e in again["data"]["candidateDismiss"]["errors"]] == [
        ("CONFLICT", ["input", "rowId"])]
    # a dismissed candidate can still be tracked (the team changed its mind)
    tracked = await gql(world.client, TRACK, {"i": {"rowId": found["SOL-00002"]["rowId"]}}, token=world.admin)
    assert tracked["data"]["candidateTrack"]["errors"] == []
    missing = await gql(world.client, DISMISS, {"i": {"rowId": str(uuid.uuid4())}}, token=world.admin)
    assert [e["code"] for e in missing["data"]["candidateDismiss"]["errors"]] == ["NOT_FOUND"]


async def test_a_candidate_whose_search_was_deleted_needs_a_source(world: World) -> None:
    created = (await world.create_search())["savedSearch"]
    search_id = uuid.UUID(created["rowId"])
    await world.run(search_id)
    found = await world.candidates(search_id)
    (row,) = await world.rows("SELECT updated_at FROM saved_searches WHERE id = :s", s=search_id)
    deleted = await gql(world.client, """mutation ($i: SavedSearchDeleteInput!) { savedSearchDelete(input: $i) {
        deletedRowId errors { code } } }""", {"i": {"rowId": str(search_id),
                                                     "updatedAt": row.updated_at.isoformat()}}, token=world.admin)
    assert deleted["data"]["savedSearchDelete"] == {"deletedRowId": str(search_id), "errors": []}
    left = await world.rows("SELECT saved_search_id FROM saved_search_candidates WHERE tenant_id = :t")
    assert len(left) == 3 and {r.saved_search_id for r in left} == {None}
    candidate = found["SOL-00003"]["rowId"]
    refused = (await gql(world.client, TRACK, {"i": {"rowId": candidate}}, token=world.admin))["data"]
    assert [(e["code"], e["field"]) for e in refused["candidateTrack"]["errors"]] == [
        ("VALIDATION", ["input", "externalSourceId"])]
    named = {"rowId": candidate, "externalSourceRowId": str(world.source_id)}
    body = await gql(world.client, TRACK, {"i": named}, token=world.admin)
    assert body["data"]["candidateTrack"]["errors"] == []


async def test_an_inactive_search_does_not_run(world: World) -> None:
    search_id = uuid.UUID((await world.create_search(isActive=False))["savedSearch"]["rowId"])
    calls = len(world.fake.requests)
    assert await world.run(search_id) == RunOutcome()
    assert len(world.fake.requests) == calls
    assert await world.rows("SELECT 1 FROM saved_search_candidates WHERE tenant_id = :t") == []


# -- permissions ----------------------------------------------------------------------------------------


async def test_permissions(world: World) -> None:
    search_id = uuid.UUID((await world.create_search())["savedSearch"]["rowId"])
    await world.run(search_id)
    found = await world.candidates(search_id)
    candidate = found["SOL-00001"]["rowId"]
    # a viewer reads saved searches and candidates, and may neither change nor decide them
    both = "{ savedSearches { totalCount nodes { rowId } } savedSearchCandidates { totalCount nodes { rowId } } }"
    listed = (await gql(world.client, both, token=world.viewer))["data"]
    assert listed["savedSearches"] == {"totalCount": 1, "nodes": [{"rowId": str(search_id)}]}
    assert listed["savedSearchCandidates"]["totalCount"] == 3
    assert {n["rowId"] for n in listed["savedSearchCandidates"]["nodes"]} == {n["rowId"] for n in found.values()}
    for document, variables, permission in (
        (CREATE, {"i": {"name": "Mine", "externalSourceRowId": str(world.source_id)}}, "saved_search:manage"),
        (DISMISS, {"i": {"rowId": candidate}}, "saved_search:manage"),
        (TRACK, {"i": {"rowId": candidate}}, "opportunity:write"),
    ):
        body = await gql(world.client, document, variables, token=world.viewer, errors=True)
        assert [(e["extensions"]["code"], e["extensions"]["permission"]) for e in body["errors"]] == [
            ("FORBIDDEN", permission)]
    assert (await world.candidates(search_id))["SOL-00001"]["status"] == "NEW"
    # without saved_search:read, both lists are empty (rows denied, not an error)
    async with world.owner.begin() as conn:
        await set_tenant(conn, world.tenant.id)
        await make(conn, "roles", world.tenant, name="Projects only", permissions=json.dumps(["opportunity:read"]))
    blind = await sign_in(world.client, await make_login_user(world.owner, world.tenant, roles=["Projects only"]))
    listed = (await gql(world.client, both, token=blind))["data"]
    assert listed == {"savedSearches": {"totalCount": 0, "nodes": []},
                      "savedSearchCandidates": {"totalCount": 0, "nodes": []}}


# -- validation -----------------------------------------------------------------------------------------


async def test_saved_search_inputs_are_validated(world: World) -> None:
    cases: list[tuple[dict[str, Any], str, list[str]]] = [
        ({"naicsCodes": ["54151x"]}, "VALIDATION", ["input", "naicsCodes"]),
        ({"setAsideCodes": ["small business"]}, "VALIDATION", ["input", "setAsideCodes"]),
        ({"noticeTypes": ["x"]}, "VALIDATION", ["input", "noticeTypes"]),
        ({"titleKeywords": ["  "]}, "VALIDATION", ["input", "titleKeywords"]),
        ({"name": "  "}, "VALIDATION", ["input", "name"]),
        ({"externalSourceRowId": str(uuid.uuid4())}, "NOT_FOUND", ["input", "externalSourceRowId"]),
    ]
    for values, code, field in cases:
        payload = await world.create_search(**values)
        assert payload["savedSearch"] is None
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [(code, field)], values
    first = await world.create_search(name="Twice")
    assert first["errors"] == []
    second = await world.create_search(name="twice")
    assert [(e["code"], e["field"]) for e in second["errors"]] == [("CONFLICT", ["input", "name"])]
    manual = await world.create_search(externalSourceRowId=str(world.tenant.manual_source_id))
    assert [(e["code"], e["field"]) for e in manual["errors"]] == [("VALIDATION", ["input", "externalSourceRowId"])]


@pytest.mark.validates("saved_searches.external_source_id.searchable")
async def test_only_an_active_source_can_be_searched(world: World) -> None:
    async with world.owner.begin() as conn:
        await set_tenant(conn, world.tenant.id)
        inactive = await make(conn, "external_opportunity_sources", world.tenant, is_active=False)
    rule = "saved_searches.external_source_id.searchable"
    async with system_unit(world.app, TEST_AUDIT_CHAIN, world.tenant.id, process="tests") as uow:
        for source_id in (inactive.id, world.tenant.manual_source_id):
            with pytest.raises(ValidationFailed) as refused:
                await validate(uow, "saved_searches", {"external_source_id": source_id})
            expect_refusal(refused, rule, field="external_source_id", code="VALIDATION")
        await validate(uow, "saved_searches", {"external_source_id": world.source_id})


# -- through the sync job ----------------------------------------------------------------------------


async def test_the_sync_job_runs_a_saved_search_through_budgeted_guarded_calls(
    world: World, read_app: Starlette
) -> None:
    """The worker's saved-search job (sync/jobs.py) runs the search on the source's key: each page a
    budget slot, a guarded call and a call log row; the candidates are the same as above."""
    auth = read_app.state.auth
    sealed = seal_credentials(auth.secret_box, world.tenant.id, world.source_id, {"api_key": API_KEY})
    await world.execute("UPDATE external_opportunity_sources SET api_credentials_encrypted = CAST(:c AS jsonb)"
                        " WHERE id = :s", c=json.dumps(sealed), s=world.source_id)
    search_id = uuid.UUID((await world.create_search())["savedSearch"]["rowId"])
    hmac_key = fingerprint_key(read_app.state.settings.secret_keys)
    fingerprint = key_fingerprint(hmac_key, API_KEY)
    async with world.owner.begin() as conn:
        await set_tenant(conn, world.tenant.id)
        await set_budget_limits(conn, world.tenant.id, fingerprint, daily_limit=50, hourly_limit=None)
    services = SyncServices(engine=world.app, chain=TEST_AUDIT_CHAIN, secret_box=auth.secret_box,
                            fingerprint_key=hmac_key,
                            outbound=OutboundPolicy.from_setting(world.base_url.removeprefix("http://")))
    clock = FakeClock(NOW)
    worker = Worker(services, JOBS, clock=clock)
    job = Job(kind=JobKind.SAVED_SEARCH, job_id=uuid.uuid4(), tenant_id=world.tenant.id,
              external_source_id=world.source_id, saved_search_id=search_id, opportunity_project_id=None,
              claimed_until=NOW + timedelta(minutes=10), worker=worker.name)
    calls = len(world.fake.requests)
    outcome = await JOBS[JobKind.SAVED_SEARCH](
        JobContext(job=job, services=services, clock=clock, started_at=NOW, _worker=worker))
    assert outcome.kind.value == "done", outcome
    sent = len(world.fake.requests) - calls
    assert sent >= 1
    found = await world.candidates(search_id)
    assert sorted(found) == ["SOL-00001", "SOL-00002", "SOL-00003"]
    logs = await world.rows("SELECT endpoint_called FROM api_integration_logs WHERE external_source_id = :s",
                            s=world.source_id)
    assert len(logs) == sent and all(API_KEY not in log.endpoint_called for log in logs)
    (budget,) = await world.rows("SELECT day_count FROM sync_key_budgets WHERE key_fingerprint = :f", f=fingerprint)
    assert budget.day_count == sent


async def test_two_requests_tracking_one_candidate_make_one_project(world: World) -> None:
    search_id = uuid.UUID((await world.create_search())["savedSearch"]["rowId"])
    await world.run(search_id)
    candidate = (await world.candidates(search_id))["SOL-00003"]["rowId"]
    bodies = await asyncio.gather(*(
        gql(world.client, TRACK, {"i": {"rowId": candidate}}, token=world.admin) for _ in range(3)
    ))
    outcomes = sorted(
        "ok" if b["data"]["candidateTrack"]["errors"] == [] else b["data"]["candidateTrack"]["errors"][0]["code"]
        for b in bodies
    )
    assert outcomes == ["CONFLICT", "CONFLICT", "ok"]
    projects = await world.rows("SELECT id FROM opportunity_projects WHERE tenant_id = :t"
                                " AND external_opportunity_id = 'SOL-00003'")
    assert len(projects) == 1
    polls = await world.rows("SELECT 1 FROM polling_configurations WHERE opportunity_project_id = :p",
                             p=projects[0].id)
    assert len(polls) == 1
