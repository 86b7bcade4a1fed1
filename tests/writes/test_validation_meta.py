"""Every rule of the validation registry has a test asserting its error code and field path.

A rule with a `sample` is shown by the generated test of tests/writes/test_validation.py (which
feeds every sample to `validate` and asserts the rule, code and path). Any other rule needs a test
marked `@pytest.mark.validates("<rule id>")` that calls `tests.support.validation.expect_refusal`.
The marks are read from the test sources' syntax trees, so the check does not depend on which tests
a run collected. And every domain write that takes input values (a public function of resolvers/
with a unit of work and `values` or `changes`) runs `validate` before its first write.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from resolvers.common.validation import rules

_TESTS = Path(__file__).resolve().parents[1]


def _is_validates_mark(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "validates"
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "mark"
    )


def _calls(function: ast.AST, name: str) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if called == name:
                return True
    return False


def marked_tests() -> dict[str, list[str]]:
    """Rule id -> the tests (path::name) marked as showing it refuse."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(_TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or not node.name.startswith("test_"):
                continue
            for decorator in node.decorator_list:
                if not _is_validates_mark(decorator):
                    continue
                assert isinstance(decorator, ast.Call)
                where = f"{path.relative_to(_TESTS.parent)}::{node.name}"
                assert _calls(node, "expect_refusal"), f"{where} is marked validates(...) without expect_refusal"
                for arg in decorator.args:
                    assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), where
                    found[arg.value].append(where)
    return dict(found)


def test_every_rule_has_a_test() -> None:
    marked = marked_tests()
    untested = [r.id for r in rules() if r.sample is None and r.id not in marked]
    assert untested == [], (
        "validation rules without a test: give each a `sample` (failing values) or a test marked "
        f"@pytest.mark.validates(<id>) calling expect_refusal: {untested}"
    )


def test_every_validates_mark_names_a_rule() -> None:
    known = {r.id for r in rules()}
    unknown = sorted(set(marked_tests()) - known)
    assert unknown == [], f"validates marks naming no rule of the registry: {unknown}"


def test_rule_ids_are_unique_and_name_their_entity_and_field() -> None:
    everything = rules()
    ids = [r.id for r in everything]
    assert len(ids) == len(set(ids))
    for rule in everything:
        assert rule.id.startswith(f"{rule.entity}.{rule.field}."), rule.id
        assert rule.sentence.strip() and rule.code in {"VALIDATION", "NOT_FOUND"}, rule.id


def test_the_generic_test_covers_every_sampled_rule() -> None:
    """The generated test parametrizes over exactly the rules with a sample (so a sample is a test)."""
    from tests.writes import test_validation

    assert [r.id for r in test_validation._SAMPLED] == [r.id for r in rules() if r.sample is not None]
    source = Path(test_validation.__file__).read_text()
    assert '@pytest.mark.parametrize("rule", _SAMPLED' in source and "expect_refusal(refused, rule.id" in source


_WRITES = frozenset({"assign", "add", "flush", "delete", "archive"})
_RESOLVERS = _TESTS.parent / "resolvers"


def _domain_writes() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef, dict[str, ast.AST]]]:
    """Every public function of resolvers/ taking a unit of work and input values (`values`/`changes`)."""
    found = []
    for path in sorted(_RESOLVERS.rglob("*.py")):
        if path.name == "validation.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        functions: dict[str, ast.AST] = {
            n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        for name, node in functions.items():
            assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            params = {a.arg for a in node.args.args}
            if not name.startswith("_") and "uow" in params and params & {"values", "changes"}:
                found.append((f"{path.relative_to(_TESTS.parent)}::{name}", node, functions))
    return found


def _first_call(function: ast.AST, names: frozenset[str], functions: dict[str, ast.AST], seen: set[str]) -> int | None:
    """Source position (line) in `function` of the first call that is, or leads through a helper of
    the same module to, a call of one of `names` (for the writes: a method of the unit of work)."""
    lines = []
    for node in ast.walk(function):
        if not isinstance(node, ast.Call):
            continue
        called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        on_uow = isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", None) == "uow"
        if called in names and (on_uow or names is not _WRITES):
            lines.append(node.lineno)
        elif called in functions and called not in seen:
            if _first_call(functions[called], names, functions, seen | {called}) is not None:
                lines.append(node.lineno)
    return min(lines, default=None)


def test_every_domain_write_runs_the_registry_before_writing() -> None:
    writes = _domain_writes()
    assert len(writes) >= 6  # projects, overrides and capture plans at least
    late = []
    for where, function, functions in writes:
        checked = _first_call(function, frozenset({"validate"}), functions, set())
        written = _first_call(function, _WRITES, functions, set())
        if checked is None or (written is not None and written < checked):
            late.append(where)
    assert late == [], f"domain writes that do not run validate() before their first write: {late}"
