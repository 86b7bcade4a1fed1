"""Assertions on refusals of the validation registry (resolvers/common/validation.py).

A test marked `@pytest.mark.validates("<rule id>")` shows that rule refusing by calling
`expect_refusal`; tests/writes/test_validation_meta.py fails when a rule has neither such a test
nor a `sample` (which the generic test in tests/writes/test_validation.py feeds to it).
"""

from __future__ import annotations

from typing import Any

import pytest

from models.errors import DomainError
from resolvers.common.validation import RuleError, rules

__all__ = ["expect_refusal"]


def expect_refusal(error: BaseException | pytest.ExceptionInfo[Any], rule: str, *, field: str, code: str) -> None:
    """`error` is the refusal of the registry's rule `rule`, with this error code and field path."""
    exc = error.value if isinstance(error, pytest.ExceptionInfo) else error
    assert isinstance(exc, RuleError) and isinstance(exc, DomainError), f"not a rule's refusal: {exc!r}"
    assert exc.rule == rule, f"refused by {exc.rule}, expected {rule}: {exc.message}"
    registered = {r.id: r for r in rules()}
    assert rule in registered, f"no rule {rule} in the registry"
    assert exc.code == code == registered[rule].code, (exc.code, code, registered[rule].code)
    assert exc.field == field, (exc.field, field)
    assert exc.message, rule
