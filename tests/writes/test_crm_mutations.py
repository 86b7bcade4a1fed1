"""Organizations, contacts and project-contact links: audited writes, archive/restore, the hierarchy
without cycles (also under concurrent re-parentings), closed projects, errors."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.audit_trail import AuditContext
from models.errors import Invalid
from models.unit_of_work import UnitOfWork
from resolvers.crm import mutations
from schema.writes import REDACTION
from tests.support.audit_trail import expect_audit
from tests.support.db import TEST_AUDIT_CHAIN
from tests.writes.conftest import Caller, Rows, SignIn, codes, mutate, refused
from tests.writes.test_projects import _wire

ORG_FIELDS = "id rowId name country isActive updatedAt parentOrganization { rowId } updatedBy { rowId }"
CONTACT_FIELDS = (
    "id rowId firstName lastName decisionMakerLevel tags isActive updatedAt organization { rowId } updatedBy { rowId }"
)
LINK_FIELDS = "id rowId relationshipType influenceLevel notes updatedAt contact { rowId } opportunityProject { rowId }"
ERRORS = "errors { field code message currentUpdatedAt }"


def _document(field: str, input_type: str, selection: str) -> str:
    return f"mutation($input: {input_type}!) {{ {field}(input: $input) {{ {selection} {ERRORS} }} }}"


def _entity(field: str, node: str, fields: str) -> str:
    return _document(field, f"{field[0].upper()}{field[1:]}Input", f"{node} {{ {fields} }}")


ORG_CREATE = _entity("organizationCreate", "organization", ORG_FIELDS)
ORG_UPDATE = _entity("organizationUpdate", "organization", ORG_FIELDS)
ORG_ARCHIVE = _entity("organizationArchive", "organization", ORG_FIELDS)
ORG_RESTORE = _entity("organizationRestore", "organization", ORG_FIELDS)
CONTACT_CREATE = _entity("contactCreate", "contact", CONTACT_FIELDS)
CONTACT_UPDATE = _entity("contactUpdate", "contact", CONTACT_FIELDS)
CONTACT_ARCHIVE = _entity("contactArchive", "contact", CONTACT_FIELDS)
CONTACT_RESTORE = _entity("contactRestore", "contact", CONTACT_FIELDS)
LINK_CREATE = _entity("opportunityProjectContactCreate", "opportunityProjectContact", LINK_FIELDS)
LINK_UPDATE = _entity("opportunityProjectContactUpdate", "opportunityProjectContact", LINK_FIELDS)
LINK_DELETE = _document(
    "opportunityProjectContactDelete", "OpportunityProjectContactDeleteInput", "deletedId deletedRowId"
)
STALE = "2020-01-01T00:00:00.000000Z"
ARCHIVED_AT = datetime(2026, 1, 1, tzinfo=UTC)


def _errors(payload: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


async def _payload(client: httpx.AsyncClient, caller: Caller, document: str, values: dict[str, Any]) -> Any:
    (payload,) = (await mutate(client, caller, document, {"input": values})).values()
    return payload


# -- organizations ------------------------------------------------------------------------------


@pytest.mark.audits("organizationCreate", "organizationUpdate", "organizationArchive", "organizationRestore")
async def test_an_organization_through_its_life(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    manager = await sign_in_as("Capture Manager")
    key = str(uuid.uuid4())
    created = await _payload(client, manager, ORG_CREATE, {
        "name": "Department of the Navy", "socioeconomicCertifications": [], "idempotencyKey": key})
    navy = created["organization"]
    assert created["errors"] == [] and navy["isActive"] is True and navy["country"] == "United States"
    navy_id = uuid.UUID(navy["rowId"])
    again = await _payload(client, manager, ORG_CREATE, {
        "name": "Department of the Navy", "socioeconomicCertifications": [], "idempotencyKey": key})
    assert again["organization"]["rowId"] == navy["rowId"]  # the retry returns the first create
    await expect_audit(rows.engine, rows.tenant.id, "organizationCreate", action="CREATE", entity_id=navy_id,
                       history={"name"}, user_id=manager.id, rows_in_request=1)

    # A child named by the parent's global id.
    sea = (await _payload(client, manager, ORG_CREATE, {
        "name": "Naval Sea Systems Command", "parentOrganizationId": navy["id"], "cageCode": "N0002"}))["organization"]
    assert sea["parentOrganization"] == {"rowId": navy["rowId"]}
    sea_id = uuid.UUID(sea["rowId"])

    updated = await _payload(client, manager, ORG_UPDATE, {
        "id": sea["id"], "updatedAt": sea["updatedAt"], "name": "NAVSEA", "city": "Washington"})
    sea = updated["organization"]
    assert updated["errors"] == [] and sea["name"] == "NAVSEA" and sea["updatedBy"] == {"rowId": str(manager.id)}
    await expect_audit(rows.engine, rows.tenant.id, "organizationUpdate", action="UPDATE", entity_id=sea_id,
                       history={"name", "city", "updated_by"}, user_id=manager.id, rows_in_request=1)

    archived = await _payload(client, manager, ORG_ARCHIVE, {
        "rowId": str(sea_id), "updatedAt": sea["updatedAt"], "reason": "Merged into NAVAIR"})
    sea = archived["organization"]
    assert archived["errors"] == [] and sea["isActive"] is False
    log, _ = await expect_audit(rows.engine, rows.tenant.id, "organizationArchive", action="ARCHIVE",
                                entity_id=sea_id, history={"is_active"}, user_id=manager.id, rows_in_request=1)
    assert log.change_reason == "Merged into NAVAIR" and log.permission_used == "organization:write"

    restored = await _payload(client, manager, ORG_RESTORE, {"rowId": str(sea_id), "updatedAt": sea["updatedAt"]})
    assert restored["errors"] == [] and restored["organization"]["isActive"] is True
    await expect_audit(rows.engine, rows.tenant.id, "organizationRestore", action="RESTORE", entity_id=sea_id,
                       history={"is_active"}, user_id=manager.id, rows_in_request=1)
    # Never deleted: both rows are still there, the child still under its parent.
    row = await rows.one("SELECT parent_organization_id, is_active FROM organizations WHERE id = :o", o=sea_id)
    assert (row.parent_organization_id, row.is_active) == (navy_id, True)


async def test_organization_errors(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    manager = await sign_in_as("Capture Manager")
    top = await rows.make("organizations")
    middle = await rows.make("organizations", parent_organization_id=top.id)
    bottom = await rows.make("organizations", parent_organization_id=middle.id)
    archived = await rows.make("organizations", is_active=False)
    for values, expected in (
        ({"name": ""}, ("VALIDATION", ["input", "name"])),
        ({"name": "n" * 256}, ("VALIDATION", ["input", "name"])),
        ({"name": "x", "cageCode": "c" * 11}, ("VALIDATION", ["input", "cageCode"])),
        ({"name": "x", "parentOrganizationRowId": str(uuid.uuid4())},
         ("VALIDATION", ["input", "parentOrganizationRowId"])),
        ({"name": "x", "parentOrganizationRowId": str(archived.id)},
         ("VALIDATION", ["input", "parentOrganizationRowId"])),
        ({"name": "x", "parentOrganizationId": "T3Bwb3J0dW5pdHlQcm9qZWN0OjA=", },
         ("NOT_FOUND", ["input", "parentOrganizationId"])),  # a global id of another type
    ):
        payload = await _payload(client, manager, ORG_CREATE, values)
        assert _errors(payload) == [expected], values
        assert payload["organization"] is None

    def update(row: Any, **values: Any) -> dict[str, Any]:
        return {"rowId": str(row.id), "updatedAt": _wire(row.updated_at), **values}

    # Cycles: under itself, under its child, under its grandchild.
    for target, parent in ((top, top), (top, middle), (top, bottom), (middle, bottom)):
        payload = await _payload(client, manager, ORG_UPDATE, update(target, parentOrganizationRowId=str(parent.id)))
        assert _errors(payload) == [("VALIDATION", ["input", "parentOrganizationRowId"])], (target, parent)
    payload = await _payload(client, manager, ORG_UPDATE, update(middle, name=None))
    assert _errors(payload) == [("VALIDATION", ["input", "name"])]
    # Archived: no change until restored; archiving twice or restoring an active one is refused.
    for document, row, extra in ((ORG_UPDATE, archived, {"name": "x"}), (ORG_ARCHIVE, archived, {}),
                                 (ORG_RESTORE, top, {})):
        payload = await _payload(client, manager, document, update(row, **extra))
        assert _errors(payload) == [("VALIDATION", ["input", "rowId"])]
    # Missing, stale (with the row's current updatedAt), both or neither of id / rowId.
    for document, extra in ((ORG_UPDATE, {"name": "x"}), (ORG_ARCHIVE, {}), (ORG_RESTORE, {})):
        payload = await _payload(client, manager, document, {"rowId": str(uuid.uuid4()), "updatedAt": STALE, **extra})
        assert _errors(payload) == [("NOT_FOUND", ["input", "rowId"])]
        payload = await _payload(client, manager, document, {"rowId": str(bottom.id), "updatedAt": STALE, **extra})
        assert _errors(payload) == [("CONFLICT", ["input", "updatedAt"])]
        assert payload["errors"][0]["currentUpdatedAt"] == _wire(bottom.updated_at)
        payload = await _payload(client, manager, document, {"updatedAt": STALE, **extra})
        assert _errors(payload) == [("VALIDATION", ["input", "id"])]
    assert await rows.audit() == []
    assert (await rows.one("SELECT parent_organization_id FROM organizations WHERE id = :o", o=top.id)) == (None,)


async def test_detaching_and_moving_within_the_hierarchy(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("BD Analyst")
    top = await rows.make("organizations")
    other = await rows.make("organizations")
    child = await rows.make("organizations", parent_organization_id=top.id)
    moved = await _payload(client, manager, ORG_UPDATE, {
        "rowId": str(child.id), "updatedAt": _wire(child.updated_at), "parentOrganizationRowId": str(other.id)})
    assert moved["errors"] == [] and moved["organization"]["parentOrganization"] == {"rowId": str(other.id)}
    # `top` may now go under its former child's new parent: no cycle.
    payload = await _payload(client, manager, ORG_UPDATE, {
        "rowId": str(top.id), "updatedAt": _wire(top.updated_at), "parentOrganizationRowId": str(child.id)})
    assert payload["errors"] == []
    detached = await _payload(client, manager, ORG_UPDATE, {
        "rowId": str(child.id), "updatedAt": moved["organization"]["updatedAt"], "parentOrganizationId": None})
    assert detached["errors"] == [] and detached["organization"]["parentOrganization"] is None


async def test_organization_writes_need_organization_write(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    viewer = await sign_in_as("Viewer")
    org = await rows.make("organizations")
    errors = await refused(client, viewer, ORG_CREATE, {"input": {"name": "x"}})
    assert codes(errors) == ["FORBIDDEN"]
    errors = await refused(client, viewer, ORG_ARCHIVE, {"input": {"rowId": str(org.id),
                                                                    "updatedAt": _wire(org.updated_at)}})
    assert codes(errors) == ["FORBIDDEN"]
    assert [d.permission_used for d in await rows.denials()] == ["organization:write", "organization:write"]
    assert (await rows.one("SELECT is_active FROM organizations WHERE id = :o", o=org.id)) == (True,)


# -- the hierarchy under concurrent re-parentings ------------------------------------------------


def _unit(engine: AsyncEngine, rows: Rows, request: str) -> UnitOfWork:
    context = AuditContext(tenant_id=rows.tenant.id, user_id=rows.tenant.system_user_id,
                           system_process="test", request_id=request)
    return UnitOfWork(engine, chain=TEST_AUDIT_CHAIN, context=context, redaction=REDACTION)


async def _waiting_for_advisory_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        waiting = await conn.scalar(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))
        await conn.rollback()
    return bool(waiting)


async def test_two_concurrent_reparentings_cannot_close_a_cycle(
    app_engine: AsyncEngine, owner_engine: AsyncEngine, rows: Rows
) -> None:
    """A under B's child and, at the same time, B under A's child: each alone is fine, together they
    close the loop A -> B1 -> B -> A1 -> A. The two touch four different rows, so no row lock makes
    them meet.

    The first holds its transaction open after its check; the second must wait for it (the
    hierarchy lock) rather than check against the old parents, and is refused once it has
    committed. Exactly one succeeds.
    """
    a, b = await rows.make("organizations"), await rows.make("organizations")
    a1 = await rows.make("organizations", parent_organization_id=a.id)
    b1 = await rows.make("organizations", parent_organization_id=b.id)
    first = _unit(app_engine, rows, "reparent-1")
    async with first:
        await mutations.update_organization(first, a.id, a.updated_at, {"parent_organization_id": b1.id})

        async def second() -> uuid.UUID:
            async with _unit(app_engine, rows, "reparent-2") as uow:
                return await mutations.update_organization(uow, b.id, b.updated_at, {"parent_organization_id": a1.id})

        racing = asyncio.create_task(second())
        for _ in range(200):  # until the second request waits on the lock (at most 10 s)
            if await _waiting_for_advisory_lock(owner_engine):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the second re-parenting did not wait for the first")
        assert not racing.done()
    with pytest.raises(Invalid) as refusal:
        await racing
    assert refusal.value.field == "parent_organization_id"
    parents = {r.id: r.parent_organization_id for r in await rows.all(
        "SELECT id, parent_organization_id FROM organizations WHERE id IN (:a, :b)", a=a.id, b=b.id)}
    assert parents == {a.id: b1.id, b.id: None}
    assert [log.entity_id for log in await rows.audit()] == [a.id]


async def test_concurrent_reparenting_requests_exactly_one_succeeds(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    for _ in range(5):  # A under B's child, B under A's child: together a loop
        a, b = await rows.make("organizations"), await rows.make("organizations")
        a1 = await rows.make("organizations", parent_organization_id=a.id)
        b1 = await rows.make("organizations", parent_organization_id=b.id)
        results = await asyncio.gather(*(
            _payload(client, manager, ORG_UPDATE, {
                "rowId": str(child.id), "updatedAt": _wire(child.updated_at),
                "parentOrganizationRowId": str(parent.id)})
            for child, parent in ((a, b1), (b, a1))
        ))
        outcomes = sorted(_errors(r) == [] for r in results)
        assert outcomes == [False, True], results
        (loser,) = [r for r in results if r["errors"]]
        assert _errors(loser) == [("VALIDATION", ["input", "parentOrganizationRowId"])]


# -- contacts -----------------------------------------------------------------------------------


@pytest.mark.audits("contactCreate", "contactUpdate", "contactArchive", "contactRestore")
async def test_a_contact_through_its_life(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    analyst = await sign_in_as("BD Analyst")
    org = await rows.make("organizations")
    created = await _payload(client, analyst, CONTACT_CREATE, {
        "firstName": "Grace", "lastName": "Hopper", "organizationRowId": str(org.id), "decisionMakerLevel": 5,
        "tags": ["decision_maker"], "idempotencyKey": "contact-1"})
    contact = created["contact"]
    assert created["errors"] == [] and contact["organization"] == {"rowId": str(org.id)}
    assert contact["tags"] == ["decision_maker"] and contact["decisionMakerLevel"] == 5
    contact_id = uuid.UUID(contact["rowId"])
    await expect_audit(rows.engine, rows.tenant.id, "contactCreate", action="CREATE", entity_id=contact_id,
                       history={"first_name", "last_name", "organization_id"}, user_id=analyst.id, rows_in_request=1)

    updated = await _payload(client, analyst, CONTACT_UPDATE, {
        "id": contact["id"], "updatedAt": contact["updatedAt"], "title": "Contracting Officer",
        "organizationId": None, "tags": None})
    contact = updated["contact"]
    assert updated["errors"] == [] and contact["organization"] is None and contact["tags"] == []
    await expect_audit(rows.engine, rows.tenant.id, "contactUpdate", action="UPDATE", entity_id=contact_id,
                       history={"title", "organization_id", "tags"}, user_id=analyst.id, rows_in_request=1)

    archived = await _payload(client, analyst, CONTACT_ARCHIVE, {
        "id": contact["id"], "updatedAt": contact["updatedAt"]})
    assert archived["errors"] == [] and archived["contact"]["isActive"] is False
    await expect_audit(rows.engine, rows.tenant.id, "contactArchive", action="ARCHIVE", entity_id=contact_id,
                       history={"is_active"}, user_id=analyst.id)
    restored = await _payload(client, analyst, CONTACT_RESTORE, {
        "id": contact["id"], "updatedAt": archived["contact"]["updatedAt"]})
    assert restored["errors"] == [] and restored["contact"]["isActive"] is True
    await expect_audit(rows.engine, rows.tenant.id, "contactRestore", action="RESTORE", entity_id=contact_id,
                       history={"is_active"}, user_id=analyst.id)


async def test_contact_errors(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    analyst = await sign_in_as("BD Analyst")
    archived_org = await rows.make("organizations", is_active=False)
    base = {"firstName": "Ada", "lastName": "Lovelace"}
    for values, expected in (
        ({**base, "firstName": " "}, ("VALIDATION", ["input", "firstName"])),
        ({**base, "lastName": "l" * 101}, ("VALIDATION", ["input", "lastName"])),
        ({**base, "decisionMakerLevel": 6}, ("VALIDATION", ["input", "decisionMakerLevel"])),
        ({**base, "relationshipStrength": 0}, ("VALIDATION", ["input", "relationshipStrength"])),
        ({**base, "organizationRowId": str(uuid.uuid4())}, ("VALIDATION", ["input", "organizationRowId"])),
        ({**base, "organizationRowId": str(archived_org.id)}, ("VALIDATION", ["input", "organizationRowId"])),
    ):
        payload = await _payload(client, analyst, CONTACT_CREATE, values)
        assert _errors(payload) == [expected], values
    contact = await rows.make("contacts")
    archived = await rows.make("contacts", is_active=False)
    payload = await _payload(client, analyst, CONTACT_UPDATE, {
        "rowId": str(contact.id), "updatedAt": STALE, "title": "x"})
    assert _errors(payload) == [("CONFLICT", ["input", "updatedAt"])]
    assert payload["errors"][0]["currentUpdatedAt"] == _wire(contact.updated_at)
    for document, row in ((CONTACT_UPDATE, archived), (CONTACT_ARCHIVE, archived), (CONTACT_RESTORE, contact)):
        payload = await _payload(client, analyst, document, {"rowId": str(row.id), "updatedAt": _wire(row.updated_at)})
        assert _errors(payload) == [("VALIDATION", ["input", "rowId"])]
        payload = await _payload(client, analyst, document, {"rowId": str(uuid.uuid4()), "updatedAt": STALE})
        assert _errors(payload) == [("NOT_FOUND", ["input", "rowId"])]
    payload = await _payload(client, analyst, CONTACT_UPDATE, {
        "rowId": str(contact.id), "updatedAt": _wire(contact.updated_at), "decisionMakerLevel": 9})
    assert _errors(payload) == [("VALIDATION", ["input", "decisionMakerLevel"])]
    viewer = await sign_in_as("Viewer")
    assert codes(await refused(client, viewer, CONTACT_CREATE, {"input": base})) == ["FORBIDDEN"]
    assert await rows.audit() == []


# -- project-contact links ----------------------------------------------------------------------


@pytest.mark.audits(
    "opportunityProjectContactCreate", "opportunityProjectContactUpdate", "opportunityProjectContactDelete"
)
async def test_a_project_contact_link_through_its_life(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    project = await rows.project()
    contact = await rows.make("contacts")
    # contact:write granted on this project only is enough to link contacts to it.
    member = await sign_in_as("BD Analyst", on_project=project.id)
    created = await _payload(client, member, LINK_CREATE, {
        "opportunityProjectRowId": str(project.id), "contactRowId": str(contact.id),
        "relationshipType": "contracting officer", "influenceLevel": 4})
    link = created["opportunityProjectContact"]
    assert created["errors"] == [] and link["influenceLevel"] == 4
    assert link["opportunityProject"] == {"rowId": str(project.id)}
    assert link["contact"] is None  # contacts are tenant-level: a grant on one project does not read them
    link_id = uuid.UUID(link["rowId"])
    await expect_audit(rows.engine, rows.tenant.id, "opportunityProjectContactCreate", action="CREATE",
                       entity_id=link_id, history={"relationship_type", "influence_level", "contact_id"},
                       user_id=member.id, rows_in_request=1)

    updated = await _payload(client, member, LINK_UPDATE, {
        "id": link["id"], "updatedAt": link["updatedAt"], "influenceLevel": 5, "notes": "Decides on price"})
    link = updated["opportunityProjectContact"]
    assert updated["errors"] == [] and (link["influenceLevel"], link["notes"]) == (5, "Decides on price")
    assert link["updatedAt"] > created["opportunityProjectContact"]["updatedAt"]
    await expect_audit(rows.engine, rows.tenant.id, "opportunityProjectContactUpdate", action="UPDATE",
                       entity_id=link_id, history={"influence_level", "notes"}, user_id=member.id)

    deleted = await _payload(client, member, LINK_DELETE, {"id": link["id"], "updatedAt": link["updatedAt"]})
    assert deleted == {"deletedId": link["id"], "deletedRowId": str(link_id), "errors": []}
    log, _ = await expect_audit(rows.engine, rows.tenant.id, "opportunityProjectContactDelete", action="DELETE",
                                entity_id=link_id, history={"influence_level", "relationship_type"},
                                user_id=member.id)
    assert log.before_values["notes"] == "Decides on price"
    assert await rows.all("SELECT id FROM opportunity_project_contacts WHERE id = :l", l=link_id) == []
    assert await rows.all("SELECT id FROM contacts WHERE id = :c", c=contact.id) != []

    # ...but not to another project.
    other = await rows.project()
    errors = await refused(client, member, LINK_CREATE, {"input": {
        "opportunityProjectRowId": str(other.id), "contactRowId": str(contact.id)}})
    assert codes(errors) == ["FORBIDDEN"]


@pytest.mark.parametrize("status", ["won", "lost", "no_bid", "cancelled_by_government", "withdrawn"])
async def test_a_closed_project_takes_no_new_contact_links(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, status: str
) -> None:
    manager = await sign_in_as("Capture Manager")
    project = await rows.project(project_status=status)
    contact = await rows.make("contacts")
    payload = await _payload(client, manager, LINK_CREATE, {
        "opportunityProjectRowId": str(project.id), "contactRowId": str(contact.id)})
    assert _errors(payload) == [("VALIDATION", ["input", "opportunityProjectRowId"])]
    # An existing link of the closed project can still be corrected (e.g. after the debrief).
    link = await rows.make("opportunity_project_contacts", {"opportunity_projects": project.id,
                                                            "contacts": contact.id})
    payload = await _payload(client, manager, LINK_UPDATE, {
        "rowId": str(link.id), "updatedAt": _wire(link.updated_at), "notes": "Debriefed"})
    assert payload["errors"] == []


async def test_link_errors(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    manager = await sign_in_as("Capture Manager")
    project = await rows.project()
    archived_project = await rows.project(archived_at=ARCHIVED_AT)
    contact = await rows.make("contacts")
    archived_contact = await rows.make("contacts", is_active=False)
    existing = await rows.make("opportunity_project_contacts", {"opportunity_projects": project.id,
                                                                "contacts": contact.id}, relationship_type="cor")

    def link(**values: Any) -> dict[str, Any]:
        return {"opportunityProjectRowId": str(project.id), "contactRowId": str(contact.id), **values}

    for values, expected in (
        (link(opportunityProjectRowId=str(uuid.uuid4())), ("NOT_FOUND", ["input", "opportunityProjectRowId"])),
        (link(contactRowId=str(uuid.uuid4())), ("NOT_FOUND", ["input", "contactRowId"])),
        (link(opportunityProjectRowId=str(archived_project.id)),
         ("VALIDATION", ["input", "opportunityProjectRowId"])),
        (link(contactRowId=str(archived_contact.id)), ("VALIDATION", ["input", "contactRowId"])),
        (link(influenceLevel=0), ("VALIDATION", ["input", "influenceLevel"])),
        (link(relationshipType="r" * 51), ("VALIDATION", ["input", "relationshipType"])),
        (link(relationshipType="cor"), ("CONFLICT", None)),  # the same contact, project and relationship
        ({"contactRowId": str(contact.id)}, ("VALIDATION", ["input", "opportunityProjectId"])),
    ):
        payload = await _payload(client, manager, LINK_CREATE, values)
        assert [(code, field if code != "CONFLICT" else None) for code, field in _errors(payload)] == [expected], values
    for document, extra in ((LINK_UPDATE, {"notes": "x"}), (LINK_DELETE, {})):
        payload = await _payload(client, manager, document, {"rowId": str(existing.id), "updatedAt": STALE, **extra})
        assert _errors(payload) == [("CONFLICT", ["input", "updatedAt"])]
        assert payload["errors"][0]["currentUpdatedAt"] == _wire(existing.updated_at)
        payload = await _payload(client, manager, document, {"rowId": str(uuid.uuid4()), "updatedAt": STALE, **extra})
        assert _errors(payload) == [("NOT_FOUND", ["input", "rowId"])]
    payload = await _payload(client, manager, LINK_UPDATE, {
        "rowId": str(existing.id), "updatedAt": _wire(existing.updated_at), "influenceLevel": 6})
    assert _errors(payload) == [("VALIDATION", ["input", "influenceLevel"])]
    on_archived = await rows.make("opportunity_project_contacts", {"opportunity_projects": archived_project.id,
                                                                   "contacts": contact.id})
    for document, extra in ((LINK_UPDATE, {"notes": "x"}), (LINK_DELETE, {})):
        payload = await _payload(client, manager, document, {
            "rowId": str(on_archived.id), "updatedAt": _wire(on_archived.updated_at), **extra})
        assert _errors(payload) == [("VALIDATION", ["input", "rowId"])]
    assert await rows.audit() == []
