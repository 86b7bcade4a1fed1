"""The differential comparison itself: it sees what the differential test must catch.

Answers that differ only in key order, in an error code or in a value are different; answers that
differ only in `extensions`, in error messages or in the order of errors are the same.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.compiled.differential import Answer, Comparison, Outcome, compiled_keys, normalized


def _answer(body: Any, *, raw: str | None = None, status: int = 200) -> Answer:
    text = raw if raw is not None else json.dumps(body)
    return normalized(httpx.Response(status, text=text, headers={"x-request-id": "r"}))


def _differences(on: Answer, off: Answer) -> list[str]:
    comparison = Comparison([Outcome(label="case", caller="admin", document="{ x }", variables={}, on=on, off=off)])
    return comparison.differences()


def test_key_order_counts_at_every_level() -> None:
    off = _answer(None, raw='{"data": {"a": {"x": 1, "y": [{"p": 1, "q": 2}]}}}')
    assert _differences(_answer(None, raw='{"data": {"a": {"x": 1, "y": [{"p": 1, "q": 2}]}}}'), off) == []
    inner = _answer(None, raw='{"data": {"a": {"x": 1, "y": [{"q": 2, "p": 1}]}}}')
    assert "data differ" in _differences(inner, off)[0]
    outer = _answer(None, raw='{"data": {"a": {"y": [{"p": 1, "q": 2}], "x": 1}}}')
    assert "data differ" in _differences(outer, off)[0]
    top = _answer(None, raw='{"errors": [], "data": {"a": {"x": 1, "y": [{"p": 1, "q": 2}]}}}')
    assert "top-level keys" in _differences(top, off)[0]


def test_errors_compare_by_path_and_code_only() -> None:
    def body(code: str, message: str, *paths: list[Any]) -> dict[str, Any]:
        return {"data": {"a": None},
                "errors": [{"message": message, "path": p, "extensions": {"code": code}} for p in paths]}

    off = _answer(body("FORBIDDEN", "no", ["a", 0, "b"], ["a", 1, "b"]))
    assert _differences(_answer(body("FORBIDDEN", "other words", ["a", 1, "b"], ["a", 0, "b"])), off) == []
    assert "errors only on" in _differences(_answer(body("NOT_FOUND", "no", ["a", 0, "b"], ["a", 1, "b"])), off)[0]
    assert "errors only on" in _differences(_answer(body("FORBIDDEN", "no", ["a", 0, "b"])), off)[0]


def test_extensions_are_left_out_but_read_for_the_compiled_flag() -> None:
    on = _answer({"data": {"a": 1, "b": 2}, "extensions": {"compiled": ["a"]}})
    off = _answer({"data": {"a": 1, "b": 2}})
    assert _differences(on, off) == []
    assert compiled_keys(on) == {"a"} and compiled_keys(off) == frozenset()
    assert "data differ" in _differences(_answer({"data": {"a": 1, "b": 3}}), off)[0]
    assert "HTTP status" in _differences(_answer({"data": {"a": 1, "b": 2}}, status=400), off)[0]


def test_a_body_that_is_not_json_is_a_difference() -> None:
    off = _answer({"data": {"a": {"b": "x"}}})
    on = _answer(None, raw="{\"data\":{\"a\":{'b': 'x'}}}")
    assert on.data.startswith("<not JSON>")
    assert "data differ" in _differences(on, off)[0]
