"""Every mutation of the served schema has a test showing its audit rows (and, for audited tables,
its change_history rows): a test marked `@pytest.mark.audits("<field>")` that calls
`tests.support.audit_trail.expect_audit`. The marks are read from the test sources' syntax trees,
so the check does not depend on which tests a run collected."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from schema.schema import schema

_TESTS = Path(__file__).resolve().parents[1]


def _mutation_fields() -> set[str]:
    mutation = schema._schema.mutation_type
    assert mutation is not None
    return set(mutation.fields)


def _is_audits_mark(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "audits"
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "mark"
    )


def _calls_expect_audit(function: ast.AST) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name == "expect_audit":
                return True
    return False


def marked_tests() -> dict[str, list[str]]:
    """Mutation field -> the tests (path::name) marked as showing its audit trail."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(_TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or not node.name.startswith("test_"):
                continue
            for decorator in node.decorator_list:
                if not _is_audits_mark(decorator):
                    continue
                assert isinstance(decorator, ast.Call)
                where = f"{path.relative_to(_TESTS.parent)}::{node.name}"
                assert _calls_expect_audit(node), f"{where} is marked audits(...) but never calls expect_audit"
                for arg in decorator.args:
                    assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), where
                    found[arg.value].append(where)
    for field, where in _matrix_tests().items():
        found[field].append(where)
    return dict(found)


def _matrix_tests() -> dict[str, str]:
    """The mutation matrix's success test (tests/writes/test_mutation_matrix.py::test_success),
    generated per registered factory and marked `audits(<field>)` per case, calls expect_audit for
    each: it counts for every mutation with a factory (tests/support/mutation_matrix.py)."""
    from tests.support.mutation_matrix import registry

    path = _TESTS / "writes" / "test_mutation_matrix.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    (success,) = [n for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef) and n.name == "test_success"]
    assert _calls_expect_audit(success), "the matrix's success test must call expect_audit"
    return {field: f"tests/writes/test_mutation_matrix.py::test_success[{field}]" for field in registry()}


def test_every_mutation_has_a_test_showing_its_audit_trail() -> None:
    missing = sorted(_mutation_fields() - set(marked_tests()))
    assert missing == [], f"mutations without a test showing their audit rows: {missing}"


def test_every_audits_mark_names_a_mutation_of_the_schema() -> None:
    unknown = sorted(set(marked_tests()) - _mutation_fields())
    assert unknown == [], f"audits marks naming no mutation: {unknown}"
