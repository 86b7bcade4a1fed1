"""Guards on the repository's shape: graphql/ holds no Python, our packages are the ones imported."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_graphql_folder_holds_no_python() -> None:
    # A .py file (or __init__.py) there would shadow graphql-core for every import of `graphql`.
    assert [p for p in (ROOT / "graphql").rglob("*.py")] == []
    import graphql

    assert "site-packages" in str(Path(graphql.__file__).resolve()), graphql.__file__


@pytest.mark.parametrize("package", ["server", "models", "migrations"])
def test_our_packages_come_from_the_repository(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(ROOT), module.__file__


def test_models_import_nothing_above_them() -> None:
    # Imports run downward: models/ must not import server, schema, resolvers, auth, sync, live or storage.
    forbidden = ("server", "schema", "resolvers", "auth", "sync", "live", "storage")
    offenders = []
    for path in (ROOT / "models").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            for name in forbidden:
                if stripped.startswith((f"import {name}", f"from {name} ", f"from {name}.")):
                    offenders.append(f"{path.relative_to(ROOT)}: {stripped}")
    assert offenders == []
