"""Documents through the read API: categories, versions, associations, access logs, full-text search.

Relations both ways with exact ids (the category tree, the version tree, association targets of
every allowed type), the root list (deleted documents hidden, filters, orders), the search
(ranking, snippet, cursors that carry the rank), statement counts that do not grow with the
list, node(id) and other tenants' ids.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Row, event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from models.enums import ACTIVITY_ENTITY_TYPES
from resolvers.documents.queries import snippet_html
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql
from tests.support.sqlcount import count_statements

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TYPE_OF = {
    "opportunity_project": "OpportunityProject",
    "organization": "Organization",
    "contact": "Contact",
    "capture_plan": "CapturePlan",
    "proposal": "Proposal",
    "document": "Document",
}


def _gid(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def _ids(connection: dict[str, Any]) -> list[str]:
    return [n["rowId"] for n in connection["nodes"]]


def _access_logs(statements: list[str]) -> list[str]:
    """The side-effect writer's access-log inserts (content reads are accesses), each in its own transaction."""
    return [s for s in statements if "INSERT INTO document_access_logs" in s]


def _operation(statements: list[str]) -> list[str]:
    """The statements of the GraphQL operation itself (after its set_config), counts and the access-log
    writes excluded (each its own transaction: a set_config, then the INSERT, interleaved with the reads)."""
    dropped: set[int] = set()
    for i, s in enumerate(statements):
        if "INSERT INTO document_access_logs" in s:
            begun = max(j for j in range(i) if "set_config" in statements[j] and j not in dropped)
            dropped |= {i, begun}
    statements = [s for i, s in enumerate(statements) if i not in dropped]
    start = max((i for i, s in enumerate(statements) if "set_config" in s), default=-1)
    return [s for s in statements[start + 1 :] if "count(" not in s]


async def _node(client: httpx.AsyncClient, token: str, type_name: str, row_id: Any, selection: str) -> Any:
    query = f"query ($id: ID!) {{ node(id: $id) {{ ... on {type_name} {{ {selection} }} }} }}"
    body = await gql(client, query, {"id": _gid(type_name, row_id)}, token=token)
    return body["data"]["node"]


# --- data -----------------------------------------------------------------------------------------


@dataclass
class Library:
    """A category tree, a document with two later versions, links to one record of every allowed
    type, access logs, and a deleted document that lists must not show."""

    uploader: Row[Any]
    project: Row[Any]
    root: Row[Any]
    categories: list[Row[Any]]  # children of root, by name
    document: Row[Any]
    versions: list[Row[Any]]  # children of document, by version number
    deleted: Row[Any]
    targets: dict[str, Row[Any]] = field(default_factory=dict)  # entity_type -> the linked row
    associations: list[Row[Any]] = field(default_factory=list)  # of document, oldest first
    logs: list[Row[Any]] = field(default_factory=list)  # of document, newest first
    history: list[Row[Any]] = field(default_factory=list)  # of document, newest first


async def _library(owner_engine: AsyncEngine, tenant: TenantRef) -> Library:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        uploader = await make(conn, "users", tenant)
        project = await make(conn, "opportunity_projects", tenant)
        refs = {"opportunity_projects": project.id}
        root = await make(conn, "document_categories", tenant, name="Contracts")
        # Inserted out of name order: the children list sorts them.
        beta = await make(conn, "document_categories", tenant, name="Beta", parent_category_id=root.id)
        alpha = await make(conn, "document_categories", tenant, name="Alpha", parent_category_id=root.id)
        document = await make(
            conn,
            "documents",
            tenant,
            refs,
            name="Statement of work",
            category_id=alpha.id,
            opportunity_project_id=project.id,
            uploaded_by=uploader.id,
            file_size_bytes=5_000_000_000,
            processing_status="completed",
            # Tenant-wide: the callers here are not its readers (access levels: tests/documents/test_access_levels.py).
            access_level="tenant",
            extracted_text="Scope: radar upgrades.",
            created_at=T0,
            is_current_version=False,  # v3 is (one current version per chain)
        )
        versions = [
            await make(
                conn,
                "documents",
                tenant,
                refs,
                name=f"Statement of work v{n}",
                parent_document_id=document.id,
                version_number=n,
                category_id=alpha.id,
                opportunity_project_id=project.id,
                created_at=T0 + timedelta(days=n),
                is_current_version=n == 3,
            )
            for n in (3, 2)  # inserted out of order
        ]
        versions.sort(key=lambda v: v.version_number)
        deleted = await make(
            conn,
            "documents",
            tenant,
            refs,
            name="Old draft",
            category_id=alpha.id,
            parent_document_id=document.id,
            version_number=4,
            opportunity_project_id=project.id,
            is_deleted=True,
            deleted_at=T0,
            deleted_by=uploader.id,
            created_at=T0 + timedelta(days=9),
            is_current_version=False,
        )
        lib = Library(uploader, project, root, [alpha, beta], document, versions, deleted)
        organization = await make(conn, "organizations", tenant)
        lib.targets = {
            "opportunity_project": project,
            "organization": organization,
            "contact": await make(conn, "contacts", tenant, organization_id=organization.id),
            "capture_plan": await make(conn, "capture_plans", tenant, refs),
            "proposal": await make(conn, "proposals", tenant, refs),
            "document": versions[0],
        }
        assert set(lib.targets) == {t.value for t in ACTIVITY_ENTITY_TYPES}
        for i, (kind, target) in enumerate(lib.targets.items()):
            lib.associations.append(
                await make(
                    conn,
                    "document_associations",
                    tenant,
                    {**refs, "documents": document.id},
                    entity_type=kind,
                    entity_id=target.id,
                    created_by=uploader.id,
                    created_at=T0 + timedelta(minutes=i),
                )
            )
        for i, user_id in enumerate((uploader.id, tenant.system_user_id)):
            lib.logs.insert(
                0,
                await make(
                    conn,
                    "document_access_logs",
                    tenant,
                    {**refs, "documents": document.id},
                    user_id=user_id,
                    accessed_at=T0 + timedelta(hours=i),
                    ip_address="192.0.2.7",
                ),
            )
        for i in range(2):
            lib.history.insert(
                0,
                await make(
                    conn,
                    "change_history",
                    tenant,
                    refs,
                    entity_type="document",
                    entity_id=document.id,
                    change_timestamp=T0 + timedelta(hours=i),
                ),
            )
    return lib


# --- relations, both ways -------------------------------------------------------------------------


async def test_document_fields_and_relations(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    lib = await _library(owner_engine, fresh_tenant)
    doc = await _node(
        client,
        admin_token,
        "Document",
        lib.document.id,
        """
        rowId name fileSizeBytes processingStatus accessLevel isDeleted searchRank searchSnippet
        extractedText cut: extractedText(maxLength: 6)
        opportunityProject { rowId }
        category { rowId }
        uploader { rowId }
        deletedBy { rowId }
        parentDocument { rowId }
        childVersions(first: 10) { totalCount nodes { rowId parentDocument { rowId } } }
        associations(first: 10) {
          nodes { rowId entityType entityId document { rowId } createdBy { rowId } target { __typename id } }
        }
        accessLogs(first: 10) { nodes { rowId ipAddress user { rowId } document { rowId } } }
        history(first: 10) { nodes { rowId } }
    """,
    )
    assert doc["rowId"] == str(lib.document.id)
    assert doc["fileSizeBytes"] == "5000000000"  # BigInt travels as a string
    assert (doc["processingStatus"], doc["accessLevel"], doc["isDeleted"]) == (
        "COMPLETED",
        "TENANT",
        False,
    )
    assert doc["searchRank"] is None and doc["searchSnippet"] is None  # set only in search results
    assert doc["extractedText"] == "Scope: radar upgrades." and doc["cut"] == "Scope:"
    assert doc["opportunityProject"] == {"rowId": str(lib.project.id)}
    assert doc["category"] == {"rowId": str(lib.categories[0].id)}
    assert doc["uploader"] == {"rowId": str(lib.uploader.id)}
    assert doc["deletedBy"] is None and doc["parentDocument"] is None
    # The version tree: later versions by number, the deleted one left out; each points back.
    versions = doc["childVersions"]
    assert _ids(versions) == [str(v.id) for v in lib.versions] and versions["totalCount"] == 2
    assert {n["parentDocument"]["rowId"] for n in versions["nodes"]} == {str(lib.document.id)}
    # One association per allowed target type, oldest first, each target the exact row and type.
    associations = doc["associations"]["nodes"]
    assert [a["rowId"] for a in associations] == [str(a.id) for a in lib.associations]
    for assoc, (kind, target) in zip(associations, lib.targets.items(), strict=True):
        assert assoc["entityType"] == kind.upper() and assoc["entityId"] == str(target.id)
        assert assoc["target"] == {"__typename": TYPE_OF[kind], "id": _gid(TYPE_OF[kind], target.id)}
        assert assoc["document"] == {"rowId": str(lib.document.id)}
        assert assoc["createdBy"] == {"rowId": str(lib.uploader.id)}
    logs = doc["accessLogs"]["nodes"]
    assert [n["rowId"] for n in logs] == [str(log.id) for log in lib.logs]
    assert [n["user"]["rowId"] for n in logs] == [str(fresh_tenant.system_user_id), str(lib.uploader.id)]
    assert {n["document"]["rowId"] for n in logs} == {str(lib.document.id)} and logs[0][
        "ipAddress"
    ] == "192.0.2.7"
    assert _ids(doc["history"]) == [str(h.id) for h in lib.history]

    # The deleted document: still found by id, with who deleted it.
    deleted = await _node(
        client,
        admin_token,
        "Document",
        lib.deleted.id,
        "isDeleted deletedAt deletedBy { rowId } parentDocument { rowId }",
    )
    assert deleted == {
        "isDeleted": True,
        "deletedAt": "2026-03-01T12:00:00.000000Z",
        "deletedBy": {"rowId": str(lib.uploader.id)},
        "parentDocument": {"rowId": str(lib.document.id)},
    }
    # The linked version sees the association that targets it.
    version = await _node(
        client,
        admin_token,
        "Document",
        lib.versions[0].id,
        "parentDocument { rowId } documentAssociations(first: 5) { nodes { rowId } }",
    )
    assert version["parentDocument"] == {"rowId": str(lib.document.id)}
    assert _ids(version["documentAssociations"]) == [str(lib.associations[-1].id)]


async def test_category_tree_both_ways(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    lib = await _library(owner_engine, fresh_tenant)
    root = await _node(
        client,
        admin_token,
        "DocumentCategory",
        lib.root.id,
        """
        name parentCategory { rowId }
        childCategories(first: 10) { nodes { rowId name parentCategory { rowId } } }
    """,
    )
    assert root["name"] == "Contracts" and root["parentCategory"] is None
    assert [n["name"] for n in root["childCategories"]["nodes"]] == ["Alpha", "Beta"]
    assert _ids(root["childCategories"]) == [str(c.id) for c in lib.categories]
    assert {n["parentCategory"]["rowId"] for n in root["childCategories"]["nodes"]} == {str(lib.root.id)}
    alpha = await _node(
        client,
        admin_token,
        "DocumentCategory",
        lib.categories[0].id,
        "documents(first: 10) { totalCount nodes { rowId category { rowId } } }",
    )
    # Newest first, the deleted document left out.
    expected = [lib.versions[1].id, lib.versions[0].id, lib.document.id]
    assert _ids(alpha["documents"]) == [str(i) for i in expected] and alpha["documents"]["totalCount"] == 3
    listed = await gql(client, "{ documentCategories(first: 10) { nodes { name } } }", token=admin_token)
    assert [n["name"] for n in listed["data"]["documentCategories"]["nodes"]] == [
        "Alpha",
        "Beta",
        "Contracts",
    ]


async def test_access_log_and_association_reverse_sides(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    lib = await _library(owner_engine, fresh_tenant)
    log = await _node(
        client,
        admin_token,
        "DocumentAccessLog",
        lib.logs[0].id,
        "accessType success document { rowId } user { rowId } history(first: 1) { totalCount }",
    )
    assert log == {
        "accessType": "view",
        "success": True,
        "document": {"rowId": str(lib.document.id)},
        "user": {"rowId": str(fresh_tenant.system_user_id)},
        "history": {"totalCount": 0},
    }
    assoc = await _node(
        client,
        admin_token,
        "DocumentAssociation",
        lib.associations[0].id,
        "document { name } target { ... on OpportunityProject { rowId } }",
    )
    assert assoc == {"document": {"name": "Statement of work"}, "target": {"rowId": str(lib.project.id)}}


# --- the root list --------------------------------------------------------------------------------

LIST = """
query ($filter: DocumentFilter, $orderBy: [DocumentOrder!], $first: Int, $after: String) {
  documents(filter: $filter, orderBy: $orderBy, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } nodes { rowId name }
  }
}
"""


async def _list(client: httpx.AsyncClient, token: str, **variables: Any) -> dict[str, Any]:
    body = await gql(client, LIST, variables, token=token)
    page: dict[str, Any] = body["data"]["documents"]
    return page


async def test_root_list_hides_deleted_and_filters(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    lib = await _library(owner_engine, fresh_tenant)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        loose = await make(
            conn,
            "documents",
            fresh_tenant,
            name="Loose RFP notes",
            document_type="rfp",
            processing_status="failed",
            created_at=T0 - timedelta(days=30),
        )
    newest_first = [lib.versions[1], lib.versions[0], lib.document, loose]
    page = await _list(client, admin_token)
    assert page["nodes"] == [{"rowId": str(d.id), "name": d.name} for d in newest_first]
    assert page["totalCount"] == 4
    everything = await _list(client, admin_token, filter={"includeDeleted": True})
    assert _ids(everything) == [str(lib.deleted.id)] + [str(d.id) for d in newest_first]
    only_deleted = await _list(client, admin_token, filter={"deletedAt": {"isNull": False}})
    assert _ids(only_deleted) == [str(lib.deleted.id)]

    async def ids(filter_: dict[str, Any]) -> list[str]:
        return _ids(await _list(client, admin_token, filter=filter_))

    assert await ids({"name": {"contains": "WORK V"}}) == [str(lib.versions[1].id), str(lib.versions[0].id)]
    assert await ids({"documentType": {"eq": "rfp"}}) == [str(loose.id)]
    assert await ids({"processingStatus": {"in": ["FAILED", "COMPLETED"]}}) == [
        str(lib.document.id),
        str(loose.id),
    ]
    assert await ids({"opportunityProjectId": {"isNull": True}}) == [str(loose.id)]
    assert await ids({"opportunityProjectId": {"eq": str(lib.project.id)}}) == [
        str(d.id) for d in newest_first[:3]
    ]
    assert await ids({"categoryId": {"eq": str(lib.categories[1].id)}}) == []
    window = {"gte": "2026-03-01T12:00:00Z", "lte": "2026-03-03T12:00:00Z"}
    assert await ids({"createdAt": window}) == [str(lib.versions[0].id), str(lib.document.id)]
    by_type = await _list(client, admin_token, orderBy=[{"field": "DOCUMENT_TYPE", "direction": "DESC"}])
    assert _ids(by_type)[-1] == str(loose.id)  # NULL types sort first descending, "rfp" last

    # Keyset pages: forwards in twos across an insert, nothing repeated or skipped.
    first = await _list(client, admin_token, first=2)
    assert _ids(first) == [str(d.id) for d in newest_first[:2]] and first["pageInfo"]["hasNextPage"]
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await make(conn, "documents", fresh_tenant, name="Brand new", created_at=T0 + timedelta(days=100))
    rest = await _list(client, admin_token, first=10, after=first["pageInfo"]["endCursor"])
    assert _ids(rest) == [str(d.id) for d in newest_first[2:]]
    refused = await gql(
        client, "{ documents(first: 101) { nodes { rowId } } }", token=admin_token, errors=True
    )
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


# --- search ---------------------------------------------------------------------------------------

SEARCH = """
query ($search: String, $first: Int, $after: String, $last: Int, $before: String, $filter: DocumentFilter) {
  documents(search: $search, first: $first, after: $after, last: $last, before: $before, filter: $filter) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    nodes { rowId name searchRank searchSnippet }
  }
}
"""


async def _search(client: httpx.AsyncClient, token: str, search: str, **variables: Any) -> dict[str, Any]:
    body = await gql(client, SEARCH, {"search": search, **variables}, token=token)
    page: dict[str, Any] = body["data"]["documents"]
    return page


async def test_search_ranks_name_matches_first_with_highlighted_snippets(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        # Inserted text-match first, so insertion order cannot explain the ranking.
        in_text = await make(
            conn,
            "documents",
            fresh_tenant,
            name="Quarterly report",
            extracted_text="Budget review: the radar & sonar items are < 5% of costs.",
            created_at=T0 + timedelta(hours=1),
        )
        in_name = await make(
            conn,
            "documents",
            fresh_tenant,
            name="Radar modernization plan",
            extracted_text="Nothing about that here.",
            created_at=T0,
        )
        await make(conn, "documents", fresh_tenant, name="Unrelated", extracted_text="Sonar only.")
        await make(conn, "documents", fresh_tenant, name="Radar (deleted)", is_deleted=True)
        await make(conn, "documents", fresh_tenant, name="Radar (not searchable)", is_searchable=False)
    found = await _search(client, admin_token, "radars")  # stemmed: radars matches radar
    nodes = found["nodes"]
    assert [n["rowId"] for n in nodes] == [str(in_name.id), str(in_text.id)] and found["totalCount"] == 2
    assert nodes[0]["searchRank"] > nodes[1]["searchRank"] > 0
    assert nodes[0]["searchSnippet"].startswith("<mark>Radar</mark> modernization plan")
    # The text is escaped; only the highlight is HTML.
    assert nodes[1]["searchSnippet"].startswith(
        "Quarterly report\nBudget review: the <mark>radar</mark> &amp; sonar"
    )
    assert "&lt; 5%" in nodes[1]["searchSnippet"]
    # Web-search syntax: a phrase, an exclusion.
    assert _ids(await _search(client, admin_token, '"radar modernization"')) == [str(in_name.id)]
    assert _ids(await _search(client, admin_token, "radar -budget")) == [str(in_name.id)]
    # Filters apply to the search; deleted documents only when asked.
    assert _ids(await _search(client, admin_token, "radar", filter={"name": {"contains": "quarterly"}})) == [
        str(in_text.id)
    ]
    with_deleted = await _search(client, admin_token, "radar", filter={"includeDeleted": True})
    assert len(with_deleted["nodes"]) == 3
    # orderBy replaces relevance (here: newest first, the text match), still ranked and highlighted.
    by_date = await gql(
        client,
        '{ documents(search: "radar", orderBy: [{field: CREATED_AT, direction: DESC}])'
        " { nodes { rowId searchRank searchSnippet } } }",
        token=admin_token,
    )
    dated = by_date["data"]["documents"]["nodes"]
    assert [n["rowId"] for n in dated] == [str(in_text.id), str(in_name.id)]
    assert all(n["searchRank"] > 0 and "<mark>" in n["searchSnippet"] for n in dated)
    assert _ids(await _search(client, admin_token, "the")) == []  # stop words only: nothing to match
    for bad in ("   ", "x" * 501):
        refused = await gql(client, SEARCH, {"search": bad}, token=admin_token, errors=True)
        assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_snippet_html_escapes_everything_but_the_marks() -> None:
    assert snippet_html("a < b \ue000c\ue001 & d") == "a &lt; b <mark>c</mark> &amp; d"


async def test_search_cursor_carries_the_rank(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        # Seven matches with four distinct ranks (ties are broken by id).
        for i in range(7):
            await make(
                conn,
                "documents",
                fresh_tenant,
                name=f"Sensor report {i}",
                extracted_text=" ".join(["antenna calibration"] * (i % 4 + 1)),
            )
        await make(conn, "documents", fresh_tenant, name="Other", extracted_text="nothing")
    whole = await _search(client, admin_token, "antenna", first=50)
    expected = _ids(whole)
    ranks = [n["searchRank"] for n in whole["nodes"]]
    assert len(expected) == 7 and ranks == sorted(ranks, reverse=True) and len(set(ranks)) == 4
    seen: list[str] = []
    after = None
    while True:
        page = await _search(client, admin_token, "antenna", first=3, after=after)
        seen += _ids(page)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == expected
    # A new, better match inserted between pages does not shift the next page.
    first_page = await _search(client, admin_token, "antenna", first=3)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await make(conn, "documents", fresh_tenant, name="Antenna antenna", extracted_text="antenna " * 10)
    second_page = await _search(
        client, admin_token, "antenna", first=3, after=first_page["pageInfo"]["endCursor"]
    )
    assert _ids(second_page) == expected[3:6]
    # Backwards from the end of the second page.
    back = await _search(
        client, admin_token, "antenna", last=2, before=second_page["pageInfo"]["startCursor"]
    )
    assert _ids(back) == expected[1:3] and back["pageInfo"]["hasPreviousPage"]
    # A cursor of the plain list (created_at, id) is refused, not sent to SQL.
    plain = await _list(client, admin_token, first=1)
    refused = await gql(
        client,
        SEARCH,
        {"search": "antenna", "after": plain["pageInfo"]["endCursor"]},
        token=admin_token,
        errors=True,
    )
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@contextmanager
def _capture(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        seen.append((statement, params))

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)


async def test_snippets_are_computed_for_the_page_only(
    executor_client: httpx.AsyncClient,
    executor_app: Starlette,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    admin_token: str,
) -> None:
    # The executor's own statements are what this counts (the compiled path: tests/test_compiled_reads.py).
    client, read_app = executor_client, executor_app
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        for i in range(3):
            await make(conn, "documents", fresh_tenant, name=f"Radar {i}")
    with _capture(read_app.state.engine) as seen:
        await _search(client, admin_token, "radar", first=2)
    ((statement, params),) = [
        (s, p) for s, p in seen if "ts_headline" in s and not s.startswith("SELECT count")
    ]
    async with owner_engine.connect() as conn:
        await set_tenant(conn, fresh_tenant.id)
        plan = (
            (await conn.exec_driver_sql(f"EXPLAIN (VERBOSE, COSTS OFF) {statement}", params)).scalars().all()
        )
    # ts_headline is evaluated above the Sort (for the rows the Limit lets through), never below it.
    sort = next(i for i, line in enumerate(plan) if line.strip().startswith("->  Sort"))
    assert any("ts_headline" in line for line in plan[:sort]), plan
    assert not any("ts_headline" in line for line in plan[sort:]), plan


# --- statement counts -----------------------------------------------------------------------------

NESTED = """
query ($first: Int, $search: String) {
  documents(first: $first, search: $search) {
    nodes {
      rowId searchSnippet extractedText(maxLength: 10)
      category { name parentCategory { name } }
      uploader { email }
      opportunityProject { rowId }
      parentDocument { rowId }
      childVersions(first: 2) { nodes { rowId } }
      associations(first: 3) { nodes { target { id } } }
      accessLogs(first: 2) { nodes { user { rowId } } }
      history(first: 2) { nodes { rowId } }
    }
  }
}
"""


async def test_nested_documents_cost_the_same_statements_for_5_and_50(
    client: httpx.AsyncClient,
    read_app: Starlette,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    admin_token: str,
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        project = await make(conn, "opportunity_projects", fresh_tenant)
        parent_category = await make(conn, "document_categories", fresh_tenant)
        category = await make(
            conn, "document_categories", fresh_tenant, parent_category_id=parent_category.id
        )
        organization = await make(conn, "organizations", fresh_tenant)
        reader = await make(conn, "users", fresh_tenant)
        previous = None
        for i in range(50):
            doc = await make(
                conn,
                "documents",
                fresh_tenant,
                {"opportunity_projects": project.id},
                name=f"Radar memo {i}",
                category_id=category.id,
                opportunity_project_id=project.id,
                parent_document_id=previous.id if previous is not None else None,
                extracted_text="radar " * 3,
                created_at=T0 + timedelta(minutes=i),
                is_current_version=i == 49,  # one current version per chain
                version_number=i + 1,
            )
            refs = {"documents": doc.id, "opportunity_projects": project.id}
            await make(conn, "document_associations", fresh_tenant, refs)
            await make(
                conn,
                "document_associations",
                fresh_tenant,
                refs,
                entity_type="organization",
                entity_id=organization.id,
            )
            await make(conn, "document_access_logs", fresh_tenant, refs, user_id=reader.id)
            previous = doc
    engine = read_app.state.engine
    for search in (None, "radar"):
        counts, logs = [], []
        for first in (5, 50):
            with count_statements(engine) as statements:
                body = await gql(client, NESTED, {"first": first, "search": search}, token=admin_token)
            nodes = body["data"]["documents"]["nodes"]
            assert len(nodes) == first
            counts.append(len(_operation(statements)))
            logs.append(len(_access_logs(statements)))
        assert logs[0] == logs[1] >= 1, logs  # content reads logged, one insert per access type and level

        # documents; their texts, categories, uploaders, projects, parents, child versions,
        # associations, access logs, history; the categories' parents, the targets that are
        # organizations (the project targets are already loaded: the loaders cache by id), the
        # readers of the access logs
        assert counts[0] == counts[1] == 13, (search, counts)
        assert all(len(n["associations"]["nodes"]) == 2 for n in nodes)


# --- node and other tenants -----------------------------------------------------------------------


async def test_node_and_other_tenants(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    tenant_b: TenantRef,
    admin_token: str,
) -> None:
    lib = await _library(owner_engine, fresh_tenant)
    other = await _library(owner_engine, tenant_b)
    for type_name, row in (
        ("Document", lib.document),
        ("DocumentCategory", lib.root),
        ("DocumentAssociation", lib.associations[0]),
        ("DocumentAccessLog", lib.logs[0]),
    ):
        body = await gql(
            client,
            "query ($id: ID!) { node(id: $id) { id } }",
            {"id": _gid(type_name, row.id)},
            token=admin_token,
        )
        assert body["data"]["node"] == {"id": _gid(type_name, row.id)}
        foreign = {
            "Document": other.document,
            "DocumentCategory": other.root,
            "DocumentAssociation": other.associations[0],
            "DocumentAccessLog": other.logs[0],
        }[type_name]
        for gid in (_gid(type_name, foreign.id), _gid(type_name, uuid.uuid4())):
            body = await gql(
                client, "query ($id: ID!) { node(id: $id) { id } }", {"id": gid}, token=admin_token
            )
            assert body["data"]["node"] is None
    # Another tenant's rows never show in lists or filters.
    listed = await _list(
        client, admin_token, filter={"includeDeleted": True, "rowId": {"eq": str(other.document.id)}}
    )
    assert listed["nodes"] == [] and listed["totalCount"] == 0
    searched = await _search(client, admin_token, "radar")
    assert _ids(searched) == [str(lib.document.id)]
    # An association (no foreign key: polymorphic) naming another tenant's ids resolves to null,
    # exactly like an id that exists nowhere.
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        dangling = [
            await make(
                conn,
                "document_associations",
                fresh_tenant,
                {"documents": lib.document.id, "opportunity_projects": lib.project.id},
                entity_type=kind,
                entity_id=target_id,
                created_by=lib.uploader.id,
            )
            for kind, target_id in (
                ("opportunity_project", other.project.id),
                ("document", other.document.id),
                ("contact", uuid.uuid4()),
            )
        ]
    for row in dangling:
        assoc = await _node(client, admin_token, "DocumentAssociation", row.id, "entityId target { id }")
        assert assoc == {"entityId": str(row.entity_id), "target": None}
    # The other tenant's category id given as a filter finds nothing either.
    assert (
        _ids(await _list(client, admin_token, filter={"categoryId": {"eq": str(other.categories[0].id)}}))
        == []
    )


async def test_extracted_text_is_not_read_by_lists(
    executor_client: httpx.AsyncClient,
    executor_app: Starlette,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    admin_token: str,
) -> None:
    # The executor's own statements are what this counts (the compiled path: tests/test_compiled_reads.py).
    client, read_app = executor_client, executor_app
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        doc = await make(conn, "documents", fresh_tenant, extracted_text="x" * 100_000)
    with count_statements(read_app.state.engine) as statements:
        await gql(client, "{ documents(first: 5) { nodes { rowId name } } }", token=admin_token)
    operation = _operation(statements)
    assert (
        len(operation) == 1 and "extracted_text" not in operation[0] and "search_vector" not in operation[0]
    )
    found = await _node(client, admin_token, "Document", doc.id, "extractedText")
    assert len(found["extractedText"]) == 100_000
