#!/usr/bin/env python3
"""Set up and run GWM CRM with nothing but Python 3.11+ and pip.

    python3 dev.py serve [gwm serve options]   # the API on http://127.0.0.1:8000 (embedded PostgreSQL)
    python3 dev.py test  [pytest options]      # the test suite
    python3 dev.py gwm ARGS...                 # any other `gwm` command, e.g. `db seed`

The first run creates .venv/ and installs the project with its test dependencies; later runs
reinstall only when pyproject.toml or the set of packages changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("GWM_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".gwm-installed"


def _ensure_env() -> None:
    if sys.version_info < (3, 11):
        sys.exit("GWM CRM needs Python 3.11 or newer")
    # Reinstall when the dependencies or the set of top-level packages change (an editable
    # install maps the packages it found when it ran).
    packages = sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + repr(packages).encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    print("installing dependencies (first run takes a minute or two)", file=sys.stderr)
    subprocess.run([*pip, "install", "--editable", f"{ROOT}[test]"], check=True, cwd=ROOT)
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"serve", "test", "gwm"}:
        print(__doc__, file=sys.stderr)
        return 2
    _ensure_env()
    command, rest = argv[0], argv[1:]
    os.chdir(ROOT)
    if command == "serve":
        cmd = [str(BIN / "gwm"), "serve", *rest]
    elif command == "gwm":
        cmd = [str(BIN / "gwm"), *rest]
    else:
        cmd = [str(BIN / "python"), "-m", "pytest", *rest]
    os.execv(cmd[0], cmd)  # noqa: S606 - replaces this process with the project's own command
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
