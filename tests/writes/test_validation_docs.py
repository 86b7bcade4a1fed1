"""docs/validation.md is generated from the validation registry (`gwm docs validation`): a rule
added, changed or removed without regenerating the file fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from resolvers.common.validation import DOCS_PATH, render_docs, rules
from server.cli import main

_ROOT = Path(__file__).resolve().parents[2]


def test_the_file_matches_the_registry() -> None:
    written = (_ROOT / DOCS_PATH).read_text(encoding="utf-8")
    assert written == render_docs(), "docs/validation.md is stale: run `.venv/bin/gwm docs validation`"


def test_every_rule_is_listed_with_its_code_and_field() -> None:
    written = (_ROOT / DOCS_PATH).read_text(encoding="utf-8")
    for rule in rules():
        assert f"| `{rule.id}` | `{rule.field}` | {rule.code} |" in written, rule.id


def test_the_command_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "validation.md"
    assert main(["docs", "validation", "--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render_docs()
    capsys.readouterr()
    assert main(["docs", "validation", "--output", "-"]) == 0
    assert capsys.readouterr().out == render_docs()
