"""Run one GraphQL request on both apps (compiled path on, off) and compare the answers.

Answers are compared as PostgreSQL-independent JSON: parsed with key order kept (OrderedDict
compares in order, recursively), `extensions` left out (the compiled flag lives there), errors as
the set of (path, extensions.code), everything else exactly, with the HTTP status. The
permission_audit rows each request wrote are found by the request id the server answers with
(`x-request-id`) and compared without their ids and times.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from tests.compiled.conftest import Caller, Clients
from tests.support.roundtrips import count_round_trips

__all__ = ["Answer", "Comparison", "Outcome", "audit_rows", "compiled_keys", "normalized", "report", "run_both"]

ErrorKey = tuple[tuple[str | int, ...], str | None]


def report(text: str) -> None:
    """Print a finding; with GWM_DIFF_REPORT=<path> append it to that file as well."""
    print(text)
    target = os.environ.get("GWM_DIFF_REPORT")
    if target:
        with Path(target).open("a") as out:
            out.write(text + "\n")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    keys: tuple[str, ...]  # the top-level keys but `extensions`, in order
    data: Any  # OrderedDict tree
    errors: frozenset[ErrorKey]
    request_id: str
    extensions: Any
    messages: tuple[str, ...] = ()  # "path code: message" of each error, for reports


def normalized(response: httpx.Response) -> Answer:
    """The answer as compared; a body that is not JSON stays as its text (and differs from any JSON)."""
    try:
        body = json.loads(response.text, object_pairs_hook=OrderedDict)
    except json.JSONDecodeError:
        body = f"<not JSON> {response.text[:2000]}"
    extensions = body.pop("extensions", None) if isinstance(body, OrderedDict) else None
    errors: frozenset[ErrorKey] = frozenset()
    data: Any = body
    if isinstance(body, OrderedDict):
        errors = frozenset(
            (tuple(error.get("path") or ()), (error.get("extensions") or {}).get("code"))
            for error in body.get("errors") or ()
        )
        data = body.get("data")
    keys = tuple(body) if isinstance(body, OrderedDict) else ()
    messages = tuple(
        f"{error.get('path')} {(error.get('extensions') or {}).get('code')}: {error.get('message')}"
        for error in (body.get("errors") or () if isinstance(body, OrderedDict) else ())
    )
    return Answer(
        response.status_code, keys, data, errors, response.headers.get("x-request-id", ""), extensions, messages
    )


def compiled_keys(answer: Answer) -> frozenset[str]:
    """The root response keys the compiled path answered (extensions.compiled), none if absent."""
    found = answer.extensions.get("compiled") if isinstance(answer.extensions, dict) else None
    return frozenset(found) if isinstance(found, list) else frozenset()


@dataclass(slots=True)
class Outcome:
    label: str
    caller: str
    document: str
    variables: dict[str, Any]
    on: Answer
    off: Answer
    # Statements the path-on request executed that build JSON in PostgreSQL (json[b]_build_object):
    # the compiled path ran for this caller, whether or not its answer may say so.
    json_statements: int = 0


@dataclass(slots=True)
class Comparison:
    """Every request pair of a run, and at the end their differences (answers, then audit rows)."""

    outcomes: list[Outcome] = field(default_factory=list)
    audited: int = 0  # requests (path off) that wrote permission_audit rows, once audit_differences ran

    def differences(self) -> list[str]:
        out = []
        for o in self.outcomes:
            problems = []
            if o.on.status != o.off.status:
                problems.append(f"HTTP status on={o.on.status} off={o.off.status}")
            if o.on.keys != o.off.keys:
                problems.append(f"top-level keys on={o.on.keys} off={o.off.keys}")
            if o.on.errors != o.off.errors:
                problems.append(
                    f"errors only on={sorted(o.on.errors - o.off.errors, key=repr)} "
                    f"only off={sorted(o.off.errors - o.on.errors, key=repr)}"
                    f"\n  errors on = {list(o.on.messages)[:5]}\n  errors off= {list(o.off.messages)[:5]}"
                )
            if o.on.data != o.off.data:
                problems.append(f"data differ:\n  on = {_dump(o.on.data)}\n  off= {_dump(o.off.data)}")
            if problems:
                out.append(self._describe(o, problems))
        return out

    def _describe(self, o: Outcome, problems: list[str]) -> str:
        lines = [line for line in o.document.splitlines() if not line.lstrip().startswith("#")]
        return (
            f"[{o.label} as {o.caller}] " + "; ".join(problems)
            + f"\n  document: {' '.join(' '.join(lines).split())[:3000]}\n  variables: {json.dumps(o.variables)}"
        )

    async def audit_differences(self, owner_engine: AsyncEngine, tenants: list[uuid.UUID]) -> list[str]:
        ids = [i for o in self.outcomes for i in (o.on.request_id, o.off.request_id) if i]
        rows = await audit_rows(owner_engine, tenants, ids)
        out = []
        self.audited = sum(1 for o in self.outcomes if rows.get(o.off.request_id))
        for o in self.outcomes:
            on, off = rows.get(o.on.request_id, []), rows.get(o.off.request_id, [])
            if on != off:
                out.append(self._describe(o, [f"permission_audit rows differ:\n  on = {on}\n  off= {off}"]))
        return out


def _dump(value: Any) -> str:
    return json.dumps(value)[:1500]


async def audit_rows(
    owner_engine: AsyncEngine, tenants: list[uuid.UUID], request_ids: list[str]
) -> dict[str, list[tuple[Any, ...]]]:
    """permission_audit rows per request id: (user, type, permission, granted, reason, path, count), sorted."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    for tenant_id in tenants:
        async with owner_engine.connect() as conn:
            await set_tenant(conn, tenant_id)
            result = await conn.execute(
                text(
                    "SELECT request_id, user_id, resource_type, permission_checked, permission_granted,"
                    " denial_reason, field_path, denied_count FROM permission_audit"
                    " WHERE request_id = ANY(:ids)"
                ),
                {"ids": request_ids},
            )
            for row in result:
                found.setdefault(row.request_id, []).append(tuple(row)[1:])
            await conn.rollback()
    return {k: sorted(v, key=repr) for k, v in found.items()}


async def _post(
    client: httpx.AsyncClient, caller: Caller, document: str, variables: dict[str, Any], operation_name: str | None
) -> httpx.Response:
    body: dict[str, Any] = {"query": document, "variables": variables}
    if operation_name is not None:
        body["operationName"] = operation_name
    return await client.post("/graphql", json=body, headers={"authorization": f"Bearer {caller.token}"})


async def run_both(
    clients: Clients,
    caller: Caller,
    document: str,
    variables: dict[str, Any],
    label: str,
    operation_name: str | None = None,
) -> Outcome:
    """The request on the path-off app, then on the path-on app (same database, same snapshot of data)."""
    off = normalized(await _post(clients.off, caller, document, variables, operation_name))
    with count_round_trips(clients.on_app.state.engine) as trips:
        on = normalized(await _post(clients.on, caller, document, variables, operation_name))
    built = sum(1 for t in trips if t.kind in _EXECUTIONS and "_build_object(" in t.sql)
    return Outcome(
        label=label, caller=caller.name, document=document, variables=variables, on=on, off=off, json_statements=built
    )


_EXECUTIONS = frozenset({"query", "bind_execute", "bind_execute_many", "execute"})
