"""A mutation input's value built by the kit's plan (schema/mutation_kit.py `_InputPlan`) is the one strawberry's
own conversion builds, refusals included."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from strawberry.relay import to_base64
from strawberry.relay.types import InvalidGlobalIDError
from strawberry.types.arguments import convert_argument
from strawberry.types.base import get_object_definition

from schema.mutation_kit import _InputPlan
from schema.opportunity_mutations import OpportunityProjectUpdateInput
from schema.schema import schema

NOW = datetime.datetime(2026, 12, 6, 8, 0, tzinfo=datetime.UTC)


def _planned_inputs() -> list[Any]:
    found = []
    for concrete in schema.schema_converter.type_map.values():
        definition: Any = concrete.definition
        hook = getattr(definition, "from_input", None)
        if hook is not None and isinstance(getattr(hook, "__self__", None), _InputPlan):
            found.append(definition.origin)
    return found


@pytest.fixture
def strawberry_conversion() -> Iterator[Any]:
    """Convert as strawberry does without the plan (the hook put back afterwards)."""
    definition = get_object_definition(OpportunityProjectUpdateInput, strict=True)
    hook = definition.from_input

    def convert(value: Any) -> Any:
        definition.from_input = None
        try:
            return _convert(value)
        finally:
            definition.from_input = hook

    yield convert
    definition.from_input = hook


def _convert(value: Any) -> Any:
    registry = schema.schema_converter.scalar_registry
    return convert_argument(value, OpportunityProjectUpdateInput, registry, schema.config)


def test_every_kit_input_without_a_maybe_field_has_a_plan() -> None:
    planned = _planned_inputs()
    assert OpportunityProjectUpdateInput in planned
    assert len(planned) > 20


@pytest.mark.parametrize(
    "value",
    [
        {"id": to_base64("OpportunityProject", uuid.UUID(int=7)), "updatedAt": NOW, "projectName": "x"},
        {"rowId": uuid.UUID(int=8), "updatedAt": NOW, "priorityLevel": None, "description": None},
        {"id": None, "rowId": None, "updatedAt": NOW, "assignedTeamMembers": [uuid.UUID(int=1), uuid.UUID(int=2)]},
        {"updatedAt": NOW, "assignedTeamMembers": None, "winProbabilityScore": 5},
    ],
)
def test_the_plan_builds_what_strawberry_builds(value: dict[str, Any], strawberry_conversion: Any) -> None:
    planned = _convert(value)
    assert planned == strawberry_conversion(value)
    assert type(planned) is OpportunityProjectUpdateInput


def test_a_malformed_global_id_is_refused_alike(strawberry_conversion: Any) -> None:
    value = {"id": "not base64!", "updatedAt": NOW}
    with pytest.raises(InvalidGlobalIDError) as planned:
        _convert(value)
    with pytest.raises(InvalidGlobalIDError) as converted:
        strawberry_conversion(value)
    assert str(planned.value) == str(converted.value)
