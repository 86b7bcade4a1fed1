"""Keyset pages answer the same on both paths: through every order, both ways, and in nested lists.

Every order field of the compiled root lists is paged through in both directions (`first`/`after`
to the end, `last`/`before` back to the start), three rows a page, following the cursors the
executor answers with, so each page boundary (ties on equal values, NULLs that sort last ascending
and first descending) is asked for on both paths. Nested lists page with a cursor taken from the
first parent's list, applied under every parent.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.compiled.conftest import Caller, Clients, World
from tests.compiled.differential import Comparison, compiled_keys, report, run_both
from tests.compiled.test_grants_in_sql import _statements

PAGE = 3
MAX_PAGES = 6
ORDERS: dict[str, tuple[str, str, list[str]]] = {
    # root field: (order input type, filter literal, order fields)
    "opportunityProjects": (
        "OpportunityProjectOrder", "{includeArchived: true}",
        ["CREATED_AT", "PROJECT_STATUS", "PIPELINE_STAGE", "WIN_PROBABILITY_SCORE"],
    ),
    "contacts": ("ContactOrder", "{}", ["LAST_NAME", "EMAIL", "CREATED_AT"]),
    "organizations": ("OrganizationOrder", "{}", ["NAME"]),
    "documents": ("DocumentOrder", "{includeDeleted: true}", ["DOCUMENT_TYPE"]),
    "activities": ("ActivityOrder", "{}", ["ACTIVITY_DATE", "DUE_DATE"]),
    "roles": ("RoleOrder", "{}", ["NAME", "IS_SYSTEM_ROLE"]),  # a Boolean order
}


def _page_document(root: str, order_type: str, where: str) -> str:
    return (
        f"query Page($first: Int, $after: String, $last: Int, $before: String, $order: [{order_type}!]) {{"
        f" {root}(first: $first, after: $after, last: $last, before: $before, orderBy: $order, filter: {where}) {{"
        " totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }"
        " edges { cursor node { id __typename } } } }"
    )


async def test_every_order_pages_the_same_both_ways(
    clients: Clients, callers: dict[str, Caller], world: World, owner_engine: AsyncEngine
) -> None:
    comparison = Comparison()
    walked = 0
    for root, (order_type, where, fields) in ORDERS.items():
        document = _page_document(root, order_type, where)
        # Projects also as the project-scoped manager (its grants are conditions of the statement)
        # and as the Viewer (refused the order on the score it may not read).
        names = ["admin", "scoped_manager", "viewer"] if root == "opportunityProjects" else ["admin"]
        for caller, field, direction, forward in (
            (callers[n], f, d, w) for n in names for f in fields for d in ("ASC", "DESC") for w in (True, False)
        ):
            order = [{"field": field, "direction": direction}]
            cursor: str | None = None
            for page in range(MAX_PAGES):
                variables: dict[str, Any] = (
                    {"first": PAGE, "after": cursor, "order": order} if forward
                    else {"last": PAGE, "before": cursor, "order": order}
                )
                label = f"{root} by {field} {direction} {'forward' if forward else 'backward'} page {page}"
                outcome = await run_both(clients, caller, document, variables, label)
                comparison.outcomes.append(outcome)
                connection = (outcome.off.data or {}).get(root)
                if connection is None:  # refused (the Viewer's score order): compared, nothing to follow
                    assert caller.name == "viewer", (label, outcome.off.messages)
                    break
                info = connection["pageInfo"]
                more = info["hasNextPage"] if forward else info["hasPreviousPage"]
                cursor = info["endCursor"] if forward else info["startCursor"]
                walked += len(connection["edges"])
                if not more:
                    break
            else:
                raise AssertionError(f"{label}: more than {MAX_PAGES} pages")
    assert walked > 100
    compiled = sum(1 for o in comparison.outcomes if compiled_keys(o.on))
    report(f"paging: {compiled} of {len(comparison.outcomes)} pages ran compiled")
    differences = comparison.differences()
    differences += await comparison.audit_differences(owner_engine, [world.tenant.id])
    assert not differences, f"{len(differences)} differences:\n\n" + "\n\n".join(differences[:8])


NESTED = {
    "projects' documents": (
        "query ($c: String) { opportunityProjects(first: 4, filter: {includeArchived: true}) { nodes { rowId"
        " documents(first: 1, after: $c) { totalCount pageInfo { hasNextPage hasPreviousPage endCursor }"
        " nodes { name } } } } }",
        ("opportunityProjects", "nodes", 0, "documents", "pageInfo", "endCursor"),
    ),
    "projects' activities backwards": (
        "query ($c: String) { opportunityProjects(last: 3) { nodes { rowId"
        " activities(last: 1, before: $c) { pageInfo { hasNextPage hasPreviousPage startCursor }"
        " edges { cursor node { subject activityDate } } } } } }",
        ("opportunityProjects", "nodes", 0, "activities", "pageInfo", "startCursor"),
    ),
    "organization children": (
        "query ($c: String) { organizations(filter: {parentOrganizationId: {isNull: true}},"
        " orderBy: [{field: NAME, direction: DESC}]) { nodes { name"
        " childOrganizations(first: 1, after: $c) { totalCount pageInfo { hasNextPage endCursor } nodes { name } }"
        " } } }",
        ("organizations", "nodes", 0, "childOrganizations", "pageInfo", "endCursor"),
    ),
    "project contacts": (
        "query ($c: String) { opportunityProjects(first: 4) { nodes { rowId"
        " contacts(first: 1, after: $c) { totalCount pageInfo { hasNextPage endCursor }"
        " nodes { influenceLevel contact { lastName } } } } } }",
        ("opportunityProjects", "nodes", 0, "contacts", "pageInfo", "endCursor"),
    ),
}


def _dig(data: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        if isinstance(step, int):
            if not isinstance(data, list) or len(data) <= step:
                return None
        elif not isinstance(data, dict):
            return None
        data = data[step]
    return data


async def test_nested_lists_page_the_same(
    clients: Clients, callers: dict[str, Caller], world: World, owner_engine: AsyncEngine
) -> None:
    comparison = Comparison()
    cursors = 0
    for label, (document, path) in NESTED.items():
        first = await run_both(clients, callers["admin"], document, {"c": None}, label + " (first page)")
        comparison.outcomes.append(first)
        cursor = _dig(first.off.data, path)
        cursors += cursor is not None
        for caller in callers.values():
            comparison.outcomes.append(await run_both(clients, caller, document, {"c": cursor}, label))
    assert cursors == len(NESTED)
    compiled = sum(1 for o in comparison.outcomes if compiled_keys(o.on))
    report(f"nested paging: {compiled} of {len(comparison.outcomes)} requests ran compiled")
    differences = comparison.differences()
    differences += await comparison.audit_differences(owner_engine, [world.tenant.id, world.other_tenant.id])
    assert not differences, f"{len(differences)} differences:\n\n" + "\n\n".join(differences[:8])


async def test_a_cursor_of_another_list_is_refused_alike(
    clients: Clients, callers: dict[str, Caller], world: World, owner_engine: AsyncEngine
) -> None:
    """A real cursor (organizations by name) given to lists ordered otherwise: a BAD_USER_INPUT on
    both paths, as a cursor that does not decode is, never a server error or a database message."""
    source = "{ organizations(first: 1, orderBy: [{field: NAME}]) { pageInfo { endCursor } } }"
    first = await run_both(clients, callers["admin"], source, {}, "the organization cursor")
    cursor = first.off.data["organizations"]["pageInfo"]["endCursor"]
    comparison = Comparison()
    for root in ("opportunityProjects", "activities", "documents", "capturePlans"):
        document = f"query ($c: String) {{ {root}(first: 2, after: $c) {{ totalCount nodes {{ id }} }} }}"
        for caller in (callers["admin"], callers["viewer"]):
            comparison.outcomes.append(await run_both(clients, caller, document, {"c": cursor}, f"{root} after"))
    differences = comparison.differences()
    assert not differences, f"{len(differences)} differences:\n\n" + "\n\n".join(differences[:8])
    codes = {code for o in comparison.outcomes for answer in (o.on, o.off) for _, code in answer.errors}
    assert codes == {"BAD_USER_INPUT"}, [m for o in comparison.outcomes for m in (*o.off.messages, *o.on.messages)]


async def test_a_cursor_bounds_the_first_order_column_as_a_range(clients: Clients, callers: dict[str, Caller]) -> None:
    """After a cursor, the statement states the first (non-null) order column's bound as a range an index on
    the order can start from, implied by the keyset condition it stands beside (the answers above are equal)."""
    document = "query ($c: String) { opportunityProjects(first: 2, after: $c) { pageInfo { endCursor } nodes { id } } }"
    admin = callers["admin"]
    first = await run_both(clients, admin, document, {"c": None}, "first")
    assert first.on.data is not None
    cursor = first.on.data["opportunityProjects"]["pageInfo"]["endCursor"]
    (statement,) = await _statements(clients, admin, document, {"c": cursor})
    assert 't1."created_at" <= $' in statement, statement
    backwards = document.replace("first: 2, after: $c", "last: 2, before: $c")
    (statement,) = await _statements(clients, admin, backwards, {"c": cursor})
    assert 't1."created_at" >= $' in statement, statement
