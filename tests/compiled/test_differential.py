"""The compiled read path answers exactly as the normal executor: every read operation, generated queries.

Each document runs as four callers (a tenant admin, a Capture Manager holding its role on two of the
four projects, a Viewer without the score and strategy permissions, a tenant admin of another
tenant) on two apps over one database, the compiled read path on in one and off in the other.
The answers must be equal after JSON parsing with key order kept (errors by path and code,
`extensions` left out) and so must the permission_audit rows each request wrote.

Documents: every query operation of graphql/operations/ (run by name from one document holding
them all), queries drawn over the schema (tests/compiled/generator.py, a fixed seed), documents of
hypothesis-graphql (argument values of every kind), one of values a JSON writer may spell
differently, and generated queries sent eight at a time.

The generated queries must mostly run compiled: a query counts as compiled when the tenant admin's
answer names every root field in `extensions.compiled`; the share is printed and must be at least
one half. With GWM_DIFF_REPORT=<path> the share and every difference are written to that file as
well; GWM_DIFF_EXAMPLES, GWM_DIFF_FUZZED and GWM_DIFF_SEED draw more (or other) documents.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

import hypothesis_graphql
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    parse,
    validate,
)
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

import schema.schema as schema_module
from tests.compiled.conftest import Caller, Clients, World, global_id
from tests.compiled.differential import Answer, Comparison, Outcome, compiled_keys, normalized, report, run_both
from tests.compiled.generator import Generated, Pools, guarded_fields, operations

SCHEMA = schema_module.schema._schema
OPERATIONS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
# A deeper hunt: GWM_DIFF_EXAMPLES=500 GWM_DIFF_SEED=<n> (the suite's run stays within its time).
SEED = int(os.environ.get("GWM_DIFF_SEED", "20261205"))
GENERATED = int(os.environ.get("GWM_DIFF_EXAMPLES", "120"))
CALLER_ORDER = ("admin", "scoped_manager", "viewer", "other_tenant_admin")


def root_keys(document: str, operation_name: str | None = None) -> tuple[str, ...]:
    """The response keys of the operation's root fields (aliases included, through fragments)."""
    ast = parse(document)
    fragments = {d.name.value: d for d in ast.definitions if isinstance(d, FragmentDefinitionNode)}
    operation = next(
        d for d in ast.definitions
        if isinstance(d, OperationDefinitionNode)
        and (operation_name is None or (d.name is not None and d.name.value == operation_name))
    )
    keys: list[str] = []

    def walk(selection_set: SelectionSetNode) -> None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                key = (selection.alias or selection.name).value
                if key not in keys:
                    keys.append(key)
            elif isinstance(selection, InlineFragmentNode):
                walk(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                walk(fragments[selection.name.value].selection_set)

    walk(operation.selection_set)
    return tuple(keys)


def _operation_variables(world: World) -> dict[str, list[dict[str, Any]]]:
    """Variables for each read operation of graphql/operations/ (a cursor is filled in by the test)."""
    projects = [*world.projects, world.other_project]
    return {
        "DocumentSearch": [{"search": "volume"}, {"search": "Proposal", "first": 2}, {"search": "zz-none"}],
        "NestedPursuit": [{"first": 3}, {"first": 2, "after": "<endCursor>"}, {}],
        "OrganizationsWithChildren": [{}, {"first": 1}],
        "PipelineSummary": [{}, {"filter": {"projectStatus": {"eq": "ACTIVE"}}}],
        "ProjectById": [{"id": global_id("OpportunityProject", p)} for p in projects if p is not None],
        "Viewer": [{}],
    }


def _read_operations() -> list[tuple[str, str]]:
    """(operation name, document) of every query operation in graphql/operations/."""
    found = []
    for path in sorted(OPERATIONS.glob("*.graphql")):
        document = path.read_text()
        for definition in parse(document).definitions:
            if (
                isinstance(definition, OperationDefinitionNode)
                and definition.operation == OperationType.QUERY
                and definition.name is not None
            ):
                found.append((definition.name.value, document))
    return found


def _ordered(callers: dict[str, Caller]) -> list[Caller]:
    return [callers[name] for name in CALLER_ORDER]


async def test_every_read_operation_answers_the_same_on_both_paths(
    clients: Clients, callers: dict[str, Caller], world: World, owner_engine: AsyncEngine
) -> None:
    variable_sets = _operation_variables(world)
    operations_found = _read_operations()
    every_operation = "\n".join(
        path.read_text() for path in sorted(OPERATIONS.glob("*.graphql"))
    )
    assert {name for name, _ in operations_found} == set(variable_sets), "an operation has no variables here"
    comparison = Comparison()
    compiled: dict[str, bool] = {}
    for name, document in operations_found:
        for variables in variable_sets[name]:
            for caller in _ordered(callers):
                values = dict(variables)
                if values.get("after") == "<endCursor>":
                    first = await run_both(clients, caller, document, {"first": 2}, name, operation_name=name)
                    page = (first.off.data or {}).get("opportunityProjects") or {}
                    values["after"] = (page.get("pageInfo") or {}).get("endCursor")
                # Each file's operation is run by name from a document holding every operation.
                outcome = await run_both(clients, caller, every_operation, values, name, operation_name=name)
                comparison.outcomes.append(outcome)
                if caller.name == "admin":
                    keys = set(root_keys(document, name))
                    compiled[name] = compiled.get(name, True) and keys <= compiled_keys(outcome.on)
    assert all(o.off.status == 200 and o.off.data is not None for o in comparison.outcomes), [
        (o.label, o.caller, o.off.status) for o in comparison.outcomes if o.off.status != 200 or o.off.data is None
    ]
    report(f"read operations compiled for the tenant admin: {sorted(n for n, c in compiled.items() if c)}; "
            f"not compiled: {sorted(n for n, c in compiled.items() if not c)}")
    differences = comparison.differences()
    differences += await comparison.audit_differences(owner_engine, [world.tenant.id, world.other_tenant.id])
    report(f"{comparison.audited} of {len(comparison.outcomes)} requests wrote permission_audit rows")
    report("\n\n".join(differences) or "read operations: no difference")
    assert not differences, f"{len(differences)} differences:\n\n" + "\n\n".join(differences[:8])
    assert comparison.audited > 0  # the Viewer's denied scores were compared


def generate(world: World, count: int = GENERATED) -> list[Generated]:
    """`count` operations, the same shapes on every run (fixed seed; ids from this run's data)."""
    pools = Pools(
        uuids=[str(u) for u in world.uuids],
        strings=world.strings,
        node_ids=[gid for _, gid in world.node_ids],
    )
    found: list[Generated] = []

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @seed(SEED)
    @given(operation=operations(SCHEMA, pools, guarded_fields(SCHEMA)))
    def collect(operation: Generated) -> None:
        found.append(operation)

    collect()
    return found


async def _foreign_cursor(clients: Clients, admin: Caller) -> str:
    """A real cursor of the organization list by name (another list, another order than most)."""
    document = "{ organizations(first: 1, orderBy: [{field: NAME}]) { pageInfo { endCursor } } }"
    outcome = await run_both(clients, admin, document, {}, "foreign cursor")
    cursor = outcome.off.data["organizations"]["pageInfo"]["endCursor"]
    assert isinstance(cursor, str), outcome.off.data
    return cursor


async def test_generated_queries_answer_the_same_on_both_paths_and_mostly_compile(
    clients: Clients, callers: dict[str, Caller], world: World, owner_engine: AsyncEngine
) -> None:
    generated = generate(world)
    assert len(generated) >= GENERATED * 0.9
    invalid = [(g.document, validate(SCHEMA, parse(g.document))) for g in generated]
    assert not [pair for pair in invalid if pair[1]], [pair for pair in invalid if pair[1]][:3]
    foreign = await _foreign_cursor(clients, callers["admin"])
    comparison = Comparison()
    compiled = 0
    fallbacks: Counter[str] = Counter()  # root fields that fell back to the executor, by name
    for index, operation in enumerate(generated):
        variables = dict(operation.variables)
        label = f"generated #{index}"
        if operation.cursor is not None:
            first = await run_both(clients, callers["admin"], operation.document, variables, label + " (page 1)")
            comparison.outcomes.append(first)
            page = (first.off.data or {}).get(operation.cursor.root_key) or {}
            # A cursor that is not one, and one of another list and order: answered alike on both paths.
            for wrong, cursor in (("bad cursor", "bm90IGEgY3Vyc29y"), ("foreign cursor", foreign)):
                changed = {**variables, operation.cursor.variable: cursor}
                comparison.outcomes.append(
                    await run_both(clients, callers["admin"], operation.document, changed, f"{label} ({wrong})")
                )
            variables[operation.cursor.variable] = (page.get("pageInfo") or {}).get(operation.cursor.field)
        # Every other query runs in the reverse order of callers: a plan kept for one caller's
        # permissions must never serve another's, whoever came first.
        order = _ordered(callers) if index % 2 == 0 else _ordered(callers)[::-1]
        for caller in order:
            outcome = await run_both(clients, caller, operation.document, variables, label)
            comparison.outcomes.append(outcome)
            if caller.name == "admin":
                ran = compiled_keys(outcome.on)
                compiled += set(operation.root_keys) <= ran
                fallbacks.update(n for k, n in zip(operation.root_keys, operation.root_names, strict=True)
                                 if k not in ran)
    answered = sum(1 for o in comparison.outcomes if o.off.data is not None)
    refused = sum(1 for o in comparison.outcomes if o.off.errors)
    by_caller = Counter(o.caller for o in comparison.outcomes if o.json_statements and "(" not in o.label)
    report(f"generated queries that ran a compiled statement, by caller (of {len(generated)}): {dict(by_caller)}")
    share = compiled / len(generated)
    report(f"generated queries compiled: {compiled} of {len(generated)} ({share:.0%}); "
            f"{answered} of {len(comparison.outcomes)} requests answered with data, {refused} with errors; "
            f"root fields not compiled: {dict(fallbacks.most_common())}")
    differences = comparison.differences()
    differences += await comparison.audit_differences(owner_engine, [world.tenant.id, world.other_tenant.id])
    report(f"{comparison.audited} of {len(comparison.outcomes)} requests wrote permission_audit rows")
    report("\n\n".join(differences) or "generated queries: no difference")
    assert not differences, f"{len(differences)} differences:\n\n" + "\n\n".join(differences[:8])
    assert comparison.audited > 0  # denials were compared, not only answers
    # Only callers allowed ad-hoc documents (graphql:adhoc) learn which fields ran compiled.
    told = [o.label for o in comparison.outcomes if o.caller == "viewer" and o.on.extensions is not None]
    assert not told, f"the Viewer (no graphql:adhoc) was answered with extensions: {told[:5]}"
    # The compiled path ran for every caller, not only for those its answers may tell.
    assert all(by_caller[name] > 0 for name in CALLER_ORDER), by_caller
    # Most answers carry data: the generator asks what the schema serves, not only refusals.
    assert answered >= 0.8 * len(comparison.outcomes), answered
    assert share >= 0.5, f"only {compiled} of {len(generated)} generated queries ran compiled"


EDGE_VALUES = """
query EdgeValues {
  contacts(orderBy: [{field: LAST_NAME}]) { nodes { firstName lastName title email tags isActive lastContactDate } }
  documents(filter: {includeDeleted: true}) {
    totalCount nodes { name fileSizeBytes tags customMetadata pageCount createdAt deletedAt category { name } }
  }
  activities(first: 20, orderBy: [{field: ACTIVITY_DATE, direction: DESC}]) {
    nodes { subject activityDate dueDate completionPercentage entityType status priority tags }
  }
  opportunityProjects(filter: {includeArchived: true}, orderBy: [{field: CREATED_AT}]) {
    nodes {
      projectName winProbabilityScore strategicValueScore archivedAt assignedTeamMembers
      captureManager { email } capturePlans { nodes { decisionDate winStrategy goNoGoDecision } }
    }
  }
}
"""


async def test_edge_values_answer_the_same_on_both_paths(
    clients: Clients, callers: dict[str, Caller], world: World, owner_engine: AsyncEngine
) -> None:
    """Values a JSON writer may spell differently: unicode, U+2028, control characters, integers past
    2^53, decimals, timestamps whose microseconds end in zeros or are zero, JSON columns, nulls."""
    comparison = Comparison()
    for caller in _ordered(callers):
        outcome = await run_both(clients, caller, EDGE_VALUES, {}, "EdgeValues")
        comparison.outcomes.append(outcome)
        if caller.name == "admin":
            names = [c["firstName"] for c in outcome.off.data["contacts"]["nodes"]]
            assert {"Zoë 𝄞", "Line\u2028Sep", "Tab\tand\x01ctl", ""} <= set(names), names
            sizes = {d["fileSizeBytes"] for d in outcome.off.data["documents"]["nodes"]}
            assert {str(2**53 + 1), 2**53 + 1} & sizes, sizes
            report(f"edge values compiled for the tenant admin: {sorted(compiled_keys(outcome.on))}")
    differences = comparison.differences()
    differences += await comparison.audit_differences(owner_engine, [world.tenant.id, world.other_tenant.id])
    report(f"{comparison.audited} of {len(comparison.outcomes)} requests wrote permission_audit rows")
    report("\n\n".join(differences) or "edge values: no difference")
    assert not differences, f"{len(differences)} differences:\n\n" + "\n\n".join(differences[:8])


# hypothesis-graphql documents: arguments of every kind, mostly out of range (GWM_DIFF_FUZZED for more)
FUZZED = int(os.environ.get("GWM_DIFF_FUZZED", "12"))


def fuzzed_arguments(world: World, count: int = FUZZED) -> list[str]:
    """hypothesis-graphql's documents over the compiled root fields: any argument values (negative
    pages, cursors that are not, filters with every operator), small selections."""
    roots = [
        "opportunityProjects", "organizations", "contacts", "documents", "activities", "capturePlans", "node",
    ]

    def strings(values: list[str]) -> st.SearchStrategy[StringValueNode]:
        return st.sampled_from(values).map(lambda v: StringValueNode(value=v))

    scalars: dict[str, st.SearchStrategy[Any]] = {
        "UUID": strings([str(u) for u in world.uuids]),
        "ID": strings([gid for _, gid in world.node_ids]),
        "DateTime": strings(["2026-01-01T00:00:00Z", "2026-02-02T09:30:15.12345+00:00"]),
        "Date": strings(["2026-03-02"]),
        "Decimal": strings(["10", "75.5"]),
        "BigInt": st.integers(0, 2**40).map(lambda i: IntValueNode(value=str(i))),
        "JSON": strings(["x"]),
    }
    found: list[str] = []

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @seed(SEED)
    @given(document=hypothesis_graphql.queries(SCHEMA, fields=roots, custom_scalars=scalars, allow_x00=False))
    def collect(document: str) -> None:
        found.append(document)

    collect()
    return found


async def test_fuzzed_arguments_answer_the_same_on_both_paths(
    clients: Clients, callers: dict[str, Caller], world: World, owner_engine: AsyncEngine
) -> None:
    documents = fuzzed_arguments(world)
    assert len(documents) >= FUZZED * 0.8
    comparison = Comparison()
    compiled = clean = 0
    for index, document in enumerate(documents):
        for caller in _ordered(callers):
            outcome = await run_both(clients, caller, document, {}, f"hypothesis-graphql #{index}")
            comparison.outcomes.append(outcome)
            if caller.name == "admin" and not outcome.off.errors:
                clean += 1
                compiled += set(root_keys(document)) <= compiled_keys(outcome.on)
    refused = sum(1 for o in comparison.outcomes if o.off.errors)
    report(f"hypothesis-graphql documents: {len(documents)}; the admin's answered without errors: {clean}, "
            f"of them compiled: {compiled}; requests with errors: {refused} of {len(comparison.outcomes)}")
    differences = comparison.differences()
    differences += await comparison.audit_differences(owner_engine, [world.tenant.id, world.other_tenant.id])
    report(f"{comparison.audited} of {len(comparison.outcomes)} requests wrote permission_audit rows")
    report("\n\n".join(differences) or "hypothesis-graphql documents: no difference")
    assert not differences, f"{len(differences)} differences:\n\n" + "\n\n".join(differences[:8])


CONCURRENT = 8


async def test_concurrent_requests_answer_as_each_alone(
    clients: Clients, callers: dict[str, Caller], world: World
) -> None:
    """Generated queries sent to the path-on app eight at a time, by every caller mixed, answer as
    the executor answers each alone (compiled statements and loader batches of one operation share
    its connection; operations must never share theirs)."""
    generated = [g for g in generate(world, 24) if g.cursor is None]
    jobs = [(g, callers[CALLER_ORDER[i % len(CALLER_ORDER)]]) for i, g in enumerate(generated)]
    alone = [await run_both(clients, caller, g.document, g.variables, f"alone #{i}") for i, (g, caller) in
             enumerate(jobs)]

    async def concurrently(index: int) -> Answer:
        g, caller = jobs[index]
        response = await clients.on.post(
            "/graphql", json={"query": g.document, "variables": g.variables},
            headers={"authorization": f"Bearer {caller.token}"},
        )
        return normalized(response)

    comparison = Comparison()
    for start in range(0, len(jobs), CONCURRENT):
        batch = range(start, min(start + CONCURRENT, len(jobs)))
        answers = await asyncio.gather(*(concurrently(i) for i in batch))
        for i, answer in zip(batch, answers, strict=True):
            first = alone[i]
            comparison.outcomes.append(
                Outcome(label=f"concurrent #{i}", caller=first.caller, document=first.document,
                        variables=first.variables, on=answer, off=first.off)
            )
    assert len(comparison.outcomes) >= 16
    differences = comparison.differences()
    assert not differences, f"{len(differences)} differences:\n\n" + "\n\n".join(differences[:8])
