"""Relay's Node for every entity: an opaque global `id` and the row's `rowId: UUID!`.

Each entity type subclasses `EntityNode` and `strawberry.relay.Node` and names its table. Its
objects are built from database rows (`from_row`), keeping the row for relation resolvers (a
foreign key the type does not expose as a field is still on the row). `node(id:)` and
`nodes(ids:)` resolve through the same per-request loaders as every other read, so an id of
another tenant gives exactly what a missing id gives: null.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, overload

import strawberry
from sqlalchemy import Row, Table

from schema.context import Info

__all__ = ["EntityNode", "TenantOwned"]


class EntityNode:
    """Mixin of the entity types (not a GraphQL type itself)."""

    _table: ClassVar[Table]
    # Column -> field renames beyond snake_case identity (the primary key is `rowId`).
    _renames: ClassVar[dict[str, str]] = {}
    # Field (Python name) -> its description in the schema, for fields declared without one
    # (plain column annotations, relation helpers); `_describe_fields` applies them.
    _descriptions: ClassVar[dict[str, str]] = {}
    if TYPE_CHECKING:
        # The row the object was built from (set by from_row, not a field of the type).
        _row: Row[Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from schema.relations import collect_relations

        collect_relations(cls)
        _describe_fields(cls)
        _guard_fields(cls)
        if issubclass(cls, TenantOwned):  # strawberry keeps the inherited field off the subclass's vars
            import models
            from schema.relations import RELATIONS, Relation

            RELATIONS[(cls.__name__, "tenant")] = Relation(
                "one", ("Tenant", "schema.identity"), "tenants", "tenant_id", table_object=models.Tenant.__table__
            )

    @classmethod
    def resolve_id(cls, root: Any, *, info: Info) -> str:
        return str(root.row_id)

    # The overloads of relay.Node.resolve_nodes: `required=True` promises a node for every id. The
    # schema's node(id:) and nodes(ids:) are nullable, so strawberry always asks with required=False.
    @overload
    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str], required: Literal[True]) -> list[Self]: ...

    @overload
    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: Literal[False] = ...
    ) -> list[Self | None]: ...

    @overload
    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool
    ) -> list[Self] | list[Self | None]: ...

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self] | list[Self | None]:
        ids: list[uuid.UUID | None] = []
        for node_id in node_ids:
            try:
                ids.append(uuid.UUID(node_id))
            except ValueError:
                ids.append(None)
        loader = info.context.loaders.by_id(cls._table)
        rows = await loader.load_many([i for i in ids if i is not None])
        found = iter(rows)
        nodes = [cls.from_row(next(found)) if i is not None else None for i in ids]
        if not required:
            return nodes
        present = [node for node in nodes if node is not None]
        if len(present) != len(nodes):
            raise ValueError(f"{cls.__name__}: no node for some of the ids")
        return present

    @classmethod
    def from_row(cls, row: Any) -> Self | None:
        if row is None:
            return None
        # The hottest code of a large read (one call per row): which row position feeds which field
        # is worked out once per class and row shape, and the instance is filled without __init__.
        plan = _PLANS.get((cls, row._fields))
        if plan is None:
            plan = _plan(cls, row._fields)
        instance = cls.__new__(cls)
        state = instance.__dict__
        for name, index, default in plan:
            state[name] = row[index] if index is not None else default
        state["_row"] = row
        return instance


_PLANS: dict[tuple[type, tuple[str, ...]], list[tuple[str, int | None, Any]]] = {}

# Fields that mean the same on every entity that has them (a type's own `_descriptions` win).
COMMON_DESCRIPTIONS = {
    "row_id": "The row's UUID primary key: what `...Id` arguments and filters take, and the `entityId` its"
    " history and audit entries name.",
    "created_at": "When it was created (UTC).",
    "updated_at": "When it was last changed (UTC).",
    "created_by": "The user who created it.",
    "updated_by": "The user who last changed it.",
    "archived_by": "The user who archived it; null while it is not archived.",
    "opportunity_project": "The opportunity project it belongs to.",
}


def _describe_fields(cls: type[EntityNode]) -> None:
    """Give the type's fields without a description the one `_descriptions` (or the common list) has."""
    from strawberry.types.field import StrawberryField

    own = vars(cls).get("_descriptions", {})
    annotations = vars(cls).get("__annotations__", {})
    for name, description in {**COMMON_DESCRIPTIONS, **own}.items():
        value = vars(cls).get(name)
        if isinstance(value, StrawberryField):
            value.description = value.description or description
        elif name in annotations and value is None:
            setattr(cls, name, strawberry.field(description=description))
        elif name in own:
            raise TypeError(f"{cls.__name__}._descriptions names {name!r}, which is not a field of it")


def _guard_fields(cls: type[EntityNode]) -> None:
    """Put `@requiresPermission` on the fields of the columns auth.rules.FIELD_RULES guards."""
    table = vars(cls).get("_table")
    if table is None:
        return
    from strawberry.types.field import StrawberryField

    from auth.rules import FIELD_RULES
    from schema.permissions import requires

    fields = {column: name for name, column in cls._renames.items()}
    for (table_name, column), permission in FIELD_RULES.items():
        if table_name != table.name:
            continue
        name = fields.get(column, column)
        value = vars(cls).get(name)
        if isinstance(value, StrawberryField):
            value.extensions.append(requires(permission))
        elif name in vars(cls).get("__annotations__", {}):
            setattr(cls, name, strawberry.field(extensions=[requires(permission)]))
        else:
            raise TypeError(f"{cls.__name__} has no field {name!r} for the guarded column {table_name}.{column}")


def _plan(cls: type[EntityNode], fields: tuple[str, ...]) -> list[tuple[str, int | None, Any]]:
    positions = {name: i for i, name in enumerate(fields)}
    plan: list[tuple[str, int | None, Any]] = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not field.init:
            continue
        column = "id" if field.name == "row_id" else cls._renames.get(field.name, field.name)
        if column in positions:
            plan.append((field.name, positions[column], None))
        elif field.default is not dataclasses.MISSING:
            plan.append((field.name, None, field.default))
        elif field.default_factory is not dataclasses.MISSING:
            plan.append((field.name, None, field.default_factory()))
        else:
            raise TypeError(f"{cls.__name__}.from_row: the row has no column {column!r}")
    _PLANS[(cls, fields)] = plan
    return plan


def _tenant_field() -> Any:
    import models
    from schema.relations import to_one

    return to_one(("Tenant", "schema.identity"), models.Tenant.__table__, "tenant_id",
                  description="The tenant this belongs to (always the caller's).")


@strawberry.type
class TenantOwned:
    """Base of every entity type but Tenant: the `tenant` relation of its tenant_id."""

    tenant = _tenant_field()
