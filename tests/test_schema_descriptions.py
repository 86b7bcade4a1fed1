"""The schema is the analyst's manual in GraphiQL: every element of the exported SDL says what it means.

Read from the SDL exactly as `gwm schema export` writes it (`schema.schema.sdl()`), so what is checked
is what a client's introspection shows:

- every type, field, argument, input field and enum value has a description (built-in scalars and
  introspection types excepted; the sentences appended automatically, permission and page sizes,
  do not count as one), and no description merely restates the element's name;
- a guarded field (`@requiresPermission`, `@requiresPermissionForInput`, and every column of
  auth.rules.FIELD_RULES on its entity type) names the permission it needs;
- a connection field states its default and maximum page size, its `first`/`last` the bounds;
- the values of the domain enums carry the meanings of docs/enums.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

import pytest
from graphql import (
    DirectiveNode,
    FieldDefinitionNode,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    ObjectTypeDefinitionNode,
    StringValueNode,
    build_schema,
    get_named_type,
    parse,
)
from graphql.type import introspection_types, specified_scalar_types
from strawberry.utils.str_converters import to_camel_case

from auth.rules import FIELD_RULES
from models import enums as model_enums
from resolvers.common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from schema.node import EntityNode
from schema.pagination import PAGE_SIZES
from schema.schema import sdl

ROOT = Path(__file__).resolve().parent.parent

# The sentences the schema appends by itself: they say what a field needs, not what it means.
AUTOMATIC = [
    re.compile(r"Requires the `[^`]+` permission[^.]*\."),
    re.compile(r"Setting (`[^`]+`(, )?)+ also requires the `[^`]+` permission[^.]*\."),
    re.compile(re.escape(PAGE_SIZES)),
]


@pytest.fixture(scope="module")
def served() -> GraphQLSchema:
    return build_schema(sdl())


def elements(schema: GraphQLSchema) -> Iterator[tuple[str, str, str | None]]:
    """(kind, coordinate, description) of every element a client sees, built-ins excepted."""
    for name, named in sorted(schema.type_map.items()):
        if name in introspection_types or name in specified_scalar_types:
            continue
        yield "type", name, named.description
        if isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
            for field_name, field in named.fields.items():
                yield "field", f"{name}.{field_name}", field.description
                for arg_name, arg in field.args.items():
                    yield "argument", f"{name}.{field_name}({arg_name}:)", arg.description
        elif isinstance(named, GraphQLInputObjectType):
            for field_name, input_field in named.fields.items():
                yield "input field", f"{name}.{field_name}", input_field.description
        elif isinstance(named, GraphQLEnumType):
            for value_name, value in named.values.items():
                yield "enum value", f"{name}.{value_name}", value.description
    # Directive definitions are described; strawberry does not carry descriptions of their arguments.
    for directive in schema.directives:
        if directive.name in {"skip", "include", "deprecated", "specifiedBy", "oneOf"}:
            continue
        yield "directive", f"@{directive.name}", directive.description


def own_words(description: str | None) -> str:
    """The description without the automatic sentences."""
    text = description or ""
    for sentence in AUTOMATIC:
        text = sentence.sub("", text)
    return text.strip()


def name_words(coordinate: str) -> str:
    """The element's own name split into lower-case words: `rowId` -> "row id", `PHASE_0` -> "phase 0"."""
    name = re.split(r"[.(@]", coordinate.rstrip(":)"))[-1]
    return " ".join(re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).replace("_", " ").lower().split())


def normalised(text: str) -> str:
    words = re.sub(r"[^a-z0-9 ]", " ", text.lower().replace("`", "")).split()
    while words and words[0] in {"the", "a", "an"}:
        words.pop(0)
    return " ".join(words)


def test_every_element_has_a_description(served: GraphQLSchema) -> None:
    missing = [f"{kind} {coordinate}" for kind, coordinate, text in elements(served) if not own_words(text)]
    assert not missing, f"{len(missing)} elements without a description of their own:\n" + "\n".join(missing)


def restates(description: str, coordinate: str) -> bool:
    """The description is the element's name again (as words, or as written), and nothing more."""
    name = name_words(coordinate)
    return normalised(description) in {name, name.replace(" ", "")}


def test_no_description_only_restates_the_name(served: GraphQLSchema) -> None:
    restating = []
    for kind, coordinate, text in elements(served):
        words = own_words(text)
        if words and restates(words, coordinate):
            restating.append(f"{kind} {coordinate}: {words!r}")
    assert not restating, "descriptions that only restate the name:\n" + "\n".join(restating)


def test_the_restatement_check_catches_restatements() -> None:
    assert restates("The row id.", "Organization.rowId")
    assert restates("Phase 0", "PipelineStage.PHASE_0")
    assert restates("`createdBy`", "Contact.createdBy")
    assert restates("An activity.", "ActivityParticipant.activity")
    assert restates("Include revoked", "Query.apiKeys(includeRevoked:)")
    assert not restates("When it was created (UTC).", "Contact.createdAt")
    assert not restates("The activity the participant takes part in.", "ActivityParticipant.activity")


def _directives(node: FieldDefinitionNode, name: str) -> list[DirectiveNode]:
    return [d for d in node.directives or () if d.name.value == name]


def _argument(directive: DirectiveNode, name: str) -> str:
    for argument in directive.arguments or ():
        if argument.name.value == name:
            assert isinstance(argument.value, StringValueNode)
            return argument.value.value
    raise AssertionError(f"@{directive.name.value} has no {name}")


def test_guarded_fields_name_the_permission_they_need(served: GraphQLSchema) -> None:
    document = parse(sdl())
    guarded, wrong = 0, []
    for definition in document.definitions:
        if not isinstance(definition, ObjectTypeDefinitionNode):
            continue
        for node in definition.fields or ():
            description = node.description.value if node.description else ""
            for name in ("requiresPermission", "requiresPermissionForInput"):
                for directive in _directives(node, name):
                    guarded += 1
                    permission = _argument(directive, "permission")
                    if f"`{permission}`" not in description:
                        wrong.append(f"{definition.name.value}.{node.name.value} needs {permission}: {description!r}")
    assert guarded >= len(FIELD_RULES)
    assert not wrong, "guarded fields whose description does not name their permission:\n" + "\n".join(wrong)


def _entity_types() -> Iterator[type[EntityNode]]:
    pending = list(EntityNode.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "_table" in vars(cls):
            yield cls


def test_every_field_rule_is_described_on_its_entity_type(served: GraphQLSchema) -> None:
    """From the rules themselves, not the directives: a guarded column's field names its permission."""
    types = {cls._table.name: cls for cls in _entity_types()}
    for (table, column), permission in FIELD_RULES.items():
        cls = types[table]
        renamed = {column_name: field for field, column_name in cls._renames.items()}
        field_name = to_camel_case(renamed.get(column, column))
        named = served.get_type(cls.__name__)
        assert isinstance(named, GraphQLObjectType)
        description = named.fields[field_name].description or ""
        assert f"`{permission.value}`" in description, (cls.__name__, field_name, description)
        assert own_words(description), f"{cls.__name__}.{field_name} says only which permission it needs"


def test_connection_fields_state_their_page_sizes(served: GraphQLSchema) -> None:
    assert f"{DEFAULT_PAGE_SIZE} items by default" in PAGE_SIZES and f"at most {MAX_PAGE_SIZE}" in PAGE_SIZES
    connections, wrong = 0, []
    for name, named in served.type_map.items():
        if not isinstance(named, GraphQLObjectType) or name.startswith("__"):
            continue
        for field_name, field in named.fields.items():
            if not get_named_type(field.type).name.endswith("Connection"):
                continue
            connections += 1
            if PAGE_SIZES not in (field.description or ""):
                wrong.append(f"{name}.{field_name}")
            for bound in ("first", "last"):
                if f"0 to {MAX_PAGE_SIZE}" not in (field.args[bound].description or ""):
                    wrong.append(f"{name}.{field_name}({bound}:)")
    assert connections > 100
    assert not wrong, "connection fields without their page sizes:\n" + "\n".join(wrong)


def _docs_meanings() -> dict[str, dict[str, str]]:
    """docs/enums.md: for each value set, value -> its Meaning (or Table) column."""
    sets: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    column = 1
    for line in (ROOT / "docs" / "enums.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = sets.setdefault(line[3:].strip(), {})
        elif current is not None and line.startswith("| Value"):
            headers = [cell.strip() for cell in line.strip("|").split("|")]
            column = 1 if headers[1].startswith("Meaning") else headers.index("Table")
        elif current is not None and line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            current[cells[0].strip("`")] = cells[column]
    return sets


def _comparable(text: str) -> str:
    """Lower case, without backticks, snake_case column names as their camelCase field names."""
    text = re.sub(r"`([a-z0-9_]+)`", lambda m: to_camel_case(m.group(1)), text)
    return " ".join(text.replace("`", "").lower().split())


def test_domain_enum_values_carry_the_meanings_of_docs_enums_md(served: GraphQLSchema) -> None:
    meanings = _docs_meanings()
    documented: list[type[Enum]] = [
        e for e in vars(model_enums).values() if isinstance(e, type) and issubclass(e, Enum) and e.__name__ in meanings
    ]
    assert len(documented) == len(model_enums.__all__) - 1  # every value set but ACTIVITY_ENTITY_TYPES
    wrong = []
    for enum in documented:
        named = served.get_type(enum.__name__)
        assert isinstance(named, GraphQLEnumType), enum.__name__
        for member in enum:
            meaning = meanings[enum.__name__][member.value]
            description = named.values[member.name].description or ""
            # The meaning's first clause (up to its first colon, semicolon or parenthesis) must be there.
            clause = _comparable(re.split(r"[:;(]", meaning)[0]).rstrip(" .,")
            if clause not in _comparable(description):
                wrong.append(f"{enum.__name__}.{member.name}: {clause!r} not in {description!r}")
    assert not wrong, "enum values that do not say what docs/enums.md says:\n" + "\n".join(wrong)
