"""Aliases and string variables never reach the compiled path's SQL text.

One document with two compiled root lists is sent with fuzzed aliases (any GraphQL name) on every
field and fuzzed string variables (any NUL-free text: unicode, quotes, backslashes, SQL and JSON
metacharacters). The statements the app's connections execute for it, seen at the driver
(tests/support/roundtrips.py: SQLAlchemy's statements and those sent on the asyncpg connection
directly alike), must be the same text as for the plain document: values travel as bind parameters
and JSON keys are not spelled in the statement. Strings are fuzzed, never null: a condition on null
is left out, so a null may change the statement (the plan is keyed by the variables' shape). Reads
are compared (SELECT/WITH); writes the request may make beside its read (a session's activity time,
at most once a minute) are not.
"""

from __future__ import annotations

from string import Template
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.compiled.conftest import Caller, Clients
from tests.compiled.differential import compiled_keys, normalized
from tests.compiled.generator import ODD_ALIASES
from tests.support.roundtrips import RoundTrip, count_round_trips

SEED = 20261206
EXAMPLES = 25
SLOTS = ("A", "B", "C", "D", "E", "F", "G", "H", "I")
# ${X}: an alias slot; $s and $n are the GraphQL variables (Template.safe_substitute leaves them).
TEMPLATE = Template("""query Fuzz($s: String, $n: String) {
  ${A}: opportunityProjects(first: 3, filter: {projectName: {contains: $s}}, orderBy: [{field: CREATED_AT}]) {
    ${B}: totalCount
    ${C}: nodes { ${D}: projectName ${E}: rowId ${F}: agencyName }
  }
  ${G}: contacts(first: 2, filter: {lastName: {eq: $n}}) { ${H}: nodes { ${I}: lastName } }
}""")
NASTY = ["'", '"', "\\", "\\'", "'; DROP TABLE contacts; --", "$1", "%_", "\\u0000", "}", ")::text", "é✓𝄞", "\n\t"]


def document(aliases: dict[str, str]) -> str:
    return TEMPLATE.safe_substitute(aliases)


def _names() -> st.SearchStrategy[str]:
    """Any GraphQL name, and names the compiled SQL or the response envelope use themselves."""
    return st.one_of(st.from_regex(r"[_A-Za-z][_0-9A-Za-z]{0,20}", fullmatch=True), st.sampled_from(ODD_ALIASES))


def _strings() -> st.SearchStrategy[str]:
    free = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
    return st.one_of(free, st.sampled_from(NASTY), st.lists(st.sampled_from(NASTY), max_size=4).map("".join))


def fuzzed() -> list[tuple[dict[str, str], dict[str, Any]]]:
    found: list[tuple[dict[str, str], dict[str, Any]]] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @seed(SEED)
    @given(names=st.lists(_names(), min_size=len(SLOTS), max_size=len(SLOTS), unique=True),
           s=_strings(), n=_strings())
    def collect(names: list[str], s: str, n: str) -> None:
        found.append((dict(zip(SLOTS, names, strict=True)), {"s": s, "n": n}))

    collect()
    return found


def test_the_template_takes_every_alias() -> None:
    aliases = {slot: f"alias{slot}" for slot in SLOTS}
    text = document(aliases)
    assert all(f"alias{slot}:" in text for slot in SLOTS) and "${" not in text
    assert "contains: $s" in text and "eq: $n" in text


# asyncpg exchanges that execute a statement (a prepare depends on the connection's statement cache).
EXECUTIONS = frozenset({"query", "bind_execute", "bind_execute_many", "execute"})


def reads(trips: list[RoundTrip]) -> list[str]:
    """The statements executed that read: their SQL text, in order."""
    return [
        t.sql for t in trips
        if t.kind in EXECUTIONS and (t.sql.split(None, 1) or [""])[0].upper() in ("SELECT", "WITH")
    ]


async def _statements(clients: Clients, caller: Caller, text: str, variables: dict[str, Any]) -> tuple[list[str], Any]:
    with count_round_trips(clients.on_app.state.engine) as log:
        response = await clients.on.post(
            "/graphql", json={"query": text, "variables": variables},
            headers={"authorization": f"Bearer {caller.token}"},
        )
    assert response.status_code == 200, response.text
    answer = normalized(response)
    assert not answer.errors, response.text
    return reads(log), answer


async def test_fuzzed_aliases_and_strings_do_not_change_the_sql_text(
    clients: Clients, callers: dict[str, Caller]
) -> None:
    admin = callers["admin"]
    plain = {slot: slot for slot in SLOTS}
    reference, answer = await _statements(clients, admin, document(plain), {"s": "Pursuit", "n": "Smith-1"})
    assert {"A", "G"} <= compiled_keys(answer), f"not compiled: {answer.extensions}"
    assert [p["D"] for p in answer.data["A"]["C"]], answer.data  # the filter matched rows
    for aliases, variables in fuzzed():
        text = document(aliases)
        statements, answer = await _statements(clients, admin, text, variables)
        assert {aliases["A"], aliases["G"]} <= compiled_keys(answer), (text, answer.extensions)
        assert list(answer.data) == [aliases["A"], aliases["G"]]
        assert statements == reference, (
            f"SQL text changed for aliases {aliases} and variables {variables!r}:\n"
            + "\n---\n".join(s for s in statements if s not in reference)
        )
