"""What every audited mutation field shares: its unit of work, its payload, its input-field permissions.

Mutation fields are declared through schema/mutation_kit.py (`mutation(...)`), which generates the
payload type and the resolver; the resolver does three things, in this order:

    entity_id = await write(info, lambda uow: run(uow, args), permissions=(...))
    payload = XPayload(x=await load(info, X, entity_id))
    # all of it inside payload_or_errors(XPayload, ..., under=("input",)): refusals -> errors

`write` opens a `UnitOfWork` (models/unit_of_work.py) for the caller's tenant with the request's
audit context, runs the change, and commits when it returns. Each mutation field is its own
transaction with its own change batch (docs/decisions.md W13): in a document with two mutations the
first commits before the second starts, and a refusal of the second leaves the first in place.
Around the unit of work the request's read snapshot is refreshed (`GraphQLContext.refresh_reads`),
so the payload, and the next mutation of the document, read what was committed.

`requires_for_input` declares a permission needed only when the input sets some fields (the
scores of a project): `@requiresPermissionForInput(permission: ..., inputFields: [...])` in the
SDL, FORBIDDEN and audited like any refusal (schema/permissions.py), checked before anything is
written.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import orjson
import strawberry
from graphql import OperationDefinitionNode, OperationType
from sqlalchemy.ext.asyncio import AsyncConnection
from strawberry.permission import PermissionExtension
from strawberry.schema_directive import Location
from strawberry.types.base import get_object_definition
from strawberry.types.field import StrawberryField
from strawberry.types.unset import UNSET
from strawberry.utils.str_converters import to_camel_case

from auth.audit import inet, redact
from auth.permissions import Permission
from models.audit_trail import AuditContext, Redaction
from models.unit_of_work import UnitOfWork
from resolvers.common.loaders import SECRET_COLUMNS
from schema.context import GraphQLContext, Info
from schema.node import EntityNode
from schema.permissions import DescribedPermissions, ProjectLookup, Requires

__all__ = [
    "REDACTION",
    "RequiresForInput",
    "RequiresPermissionForInput",
    "audit_context",
    "begin_write",
    "changes_of",
    "describe_like",
    "is_mutation_request",
    "load",
    "requires_for_input",
    "set_fields",
    "unit_of_work",
    "write",
]

N = TypeVar("N", bound=EntityNode)

#: What the audit trail never records in the clear (resolvers/common/loaders.py, auth/audit.py).
REDACTION = Redaction(secret_columns=SECRET_COLUMNS, redact_json=redact)


def audit_context(info: Info, permissions: Iterable[Permission]) -> AuditContext:
    """Who is writing, from where, through which operation and field, under which permissions."""
    context = info.context
    principal, meta = context.principal, context.meta
    operation = info.operation.name.value if info.operation.name is not None else None
    return AuditContext(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        session_id=principal.audit_session,
        ip_address=inet(meta.ip),
        user_agent=meta.user_agent,
        request_id=meta.request_id,
        endpoint=meta.endpoint,
        http_method=meta.method,
        operation_name=operation,
        field_name=info.field_name,
        permission=",".join(p.value for p in permissions),
    )


def unit_of_work(
    info: Info, permissions: Iterable[Permission], *, connection: AsyncConnection | None = None
) -> UnitOfWork:
    """A unit of work for this mutation field (enter it with `async with`); `connection`: the
    request's write transaction to take over (`begin_write`)."""
    context: GraphQLContext = info.context
    return UnitOfWork(
        context.engine,
        chain=context.auth.writer.chain,
        context=audit_context(info, permissions),
        redaction=REDACTION,
        connection=connection,
    )


async def begin_write(info: Info, permissions: Iterable[Permission]) -> UnitOfWork:
    """The unit of work of this mutation field, with no read transaction left open (enter it at once).

    The first one of a request the middleware began for a write takes over that transaction, in which
    the caller was looked up (GraphQLContext.take_write_connection): no transaction of its own for the
    authentication, nor a second BEGIN. The others (and a request begun for reads) begin their own.
    """
    context = info.context
    adopted = await context.take_write_connection()
    try:
        await context.refresh_reads()  # no read transaction stays open while this one writes
        return unit_of_work(info, permissions, connection=adopted)
    except BaseException:
        if adopted is not None:
            await adopted.close()  # rolls the transaction back
        raise


def is_mutation_request(body: bytes) -> bool:
    """Whether a GraphQL POST body certainly runs a mutation: its document is one the schema parsed,
    checked and kept (schema/limits.py DocumentCache: it passed validation), and the operation it
    selects is a mutation. False whenever that is not certain (a document not seen yet, a malformed
    body, an unnamed choice among several operations, persisted-query extensions): the request is then
    authenticated in a read transaction, as any other (server/middleware.py)."""
    if b"mutation" not in body:  # a read's body: no parsing (an escaped keyword only means "unsure")
        return False
    from schema.schema import DOCUMENT_CACHE  # the schema module imports this one

    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(data, dict) or data.get("extensions") is not None:
        return False
    query, name = data.get("query"), data.get("operationName")
    if not isinstance(query, str) or not isinstance(name, str | None) or query not in DOCUMENT_CACHE:
        return False
    document = DOCUMENT_CACHE.parse(query, {})  # kept: no parsing
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        chosen = operations[0] if len(operations) == 1 else None
    else:
        chosen = next((o for o in operations if o.name is not None and o.name.value == name), None)
    return chosen is not None and chosen.operation is OperationType.MUTATION


async def write(
    info: Info,
    change: Callable[[UnitOfWork], Awaitable[uuid.UUID]],
    *,
    permissions: Sequence[Permission],
    reason: str | None = None,
) -> uuid.UUID:
    """Run `change` in a unit of work and commit; the id it returns is the payload's entity."""
    context = info.context
    try:
        async with await begin_write(info, permissions) as uow:
            if reason is not None:
                uow.set_reason(reason)
            return await change(uow)
    finally:
        await context.refresh_reads()


async def load(info: Info, node: type[N], entity_id: uuid.UUID) -> N | None:
    """The entity as the caller may read it now (null when it may not)."""
    row = await info.context.loaders.by_id(node._table).load(entity_id)
    return node.from_row(row)


def set_fields(value: Any, *, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The fields an input object sets (UNSET left out), by Python name."""
    names = _FIELD_NAMES.get(type(value))
    if names is None:
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in dataclasses.fields(value))
    skipped = skip if isinstance(skip, frozenset) else frozenset(skip)
    found = {name: getattr(value, name) for name in names if name not in skipped}
    return {name: given for name, given in found.items() if given is not UNSET}


# An input class's field names, in order (`dataclasses.fields` walks the class's fields on every call).
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def changes_of(value: Any, *, skip: Iterable[str] = ("id", "updated_at")) -> dict[str, Any]:
    """An update input's changes: the fields it sets besides the target and its updatedAt."""
    return set_fields(value, skip=skip)


def describe_like(input_type: type, entity: type) -> None:
    """The input's fields without a description take the one of the entity's field of the same name.

    A create or update input sets the entity's columns: saying what a column means once, on the
    entity, keeps the two from drifting apart (a description written on the input field wins).
    """
    meanings = {f.python_name: f.description for f in get_object_definition(entity, strict=True).fields}
    for field in get_object_definition(input_type, strict=True).fields:
        field.description = field.description or meanings.get(field.python_name)


# -- permissions that depend on the input ---------------------------------------------------------


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    name="requiresPermissionForInput",
    description="Setting any of these input fields also needs this permission.",
)
class RequiresPermissionForInput:
    permission: str
    input_fields: list[str]


class RequiresForInput(Requires):
    """`Requires(permission)`, asked only when the `argument` input sets one of `fields`.

    `nulls` says whether an explicit null counts as setting a field (it does on an update, where
    null clears the value; on a create, null is the same as leaving the field out).
    """

    def __init__(
        self,
        permission: Permission,
        fields: Sequence[str],
        *,
        argument: str = "input",
        project: ProjectLookup | None = None,
        nulls: bool = True,
    ) -> None:
        super().__init__(permission, project=project)
        self.fields = tuple(fields)
        self.argument = argument
        self.nulls = nulls
        self.message = (
            f"You do not have permission to set {', '.join(to_camel_case(f) for f in self.fields)} "
            f"({permission.value} is required)."
        )
        self._input_directive = RequiresPermissionForInput(
            permission=permission.value, input_fields=[to_camel_case(f) for f in self.fields]
        )

    @property
    def schema_directive(self) -> object:
        return self._input_directive

    def sentence(self, field: StrawberryField) -> str:
        fields = ", ".join(f"`{argument}.{to_camel_case(f)}`" for argument in (self.argument,) for f in self.fields)
        text = f"Setting {fields} also requires the `{self.permission.value}` permission"
        if self.project is not None:
            argument = to_camel_case(self.project[0])
            text += f"; a grant on the opportunity project of the target named by `{argument}` counts"
        return text + "."

    def applies(self, value: Any) -> bool:
        """Does this input set one of the guarded fields?"""
        for name in self.fields:
            given = getattr(value, name, UNSET)
            if given is UNSET or (given is None and not self.nulls):
                continue
            return True
        return False

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        value = kwargs.get(self.argument)
        if value is None or not self.applies(value):
            return True
        return await super().has_permission(source, info, **kwargs)


def requires_for_input(
    permission: Permission,
    fields: Sequence[str],
    *,
    project: ProjectLookup | None = None,
    nulls: bool = True,
) -> PermissionExtension:
    """The field extension declaring `RequiresForInput(...)` on a mutation field."""
    return DescribedPermissions([RequiresForInput(permission, fields, project=project, nulls=nulls)])

