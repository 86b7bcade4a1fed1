"""Imports run downward (../shared/DESIGN.md): the import-linter contracts of pyproject.toml hold.

server -> schema -> resolvers -> auth -> models, and migrations use models only. `lint-imports`
reads the contracts from pyproject.toml ([tool.importlinter]); every top-level package of the
repository must be one of its root packages, so a new one (sync/, storage/) cannot escape them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"


def _lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def _config() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        config: dict[str, object] = tomllib.load(fh)["tool"]["importlinter"]
    return config


def test_the_layering_contracts_hold() -> None:
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_every_package_is_under_the_contracts() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert set(_config()["root_packages"]) == packages  # type: ignore[call-overload]


def test_a_broken_contract_fails(tmp_path: Path) -> None:
    """The same tool on a contract the code breaks (models above server): it must say so."""
    config = tmp_path / "upside_down.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["server", "models"]\n\n'
        '[[tool.importlinter.contracts]]\nname = "upside down"\ntype = "layers"\nlayers = ["models", "server"]\n'
    )
    result = _lint_imports(str(config))
    assert result.returncode == 1
    assert "upside down BROKEN" in result.stdout
    assert "server is not allowed to import models" in result.stdout
