"""The error codes docs/api.md documents (its "Error codes" section), for tests that check answers."""

from __future__ import annotations

import functools
import re
from pathlib import Path

__all__ = ["documented_codes"]

_API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@functools.cache
def documented_codes() -> frozenset[str]:
    """Every code named in the first column of the section's tables."""
    text = _API_MD.read_text()
    section = text.split("## Error codes", 1)[1].split("\n## ", 1)[0]
    codes: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            codes.update(re.findall(r"`([A-Z][A-Z_]+)`", line.split("|")[1]))
    return frozenset(codes)
