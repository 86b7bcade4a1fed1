"""A mutation is its input, its permission and its domain function: the rest is generated here.

    from schema.mutation_kit import Args, Deleted, Entity, mutation, ref_id, ref_row_id, target_project

    @strawberry.input(description="Archive a capture plan: it is kept and hidden from default lists.")
    class CapturePlanArchiveInput:
        id: relay.GlobalID | None = ref_id("CapturePlan")
        row_id: uuid.UUID | None = ref_row_id("CapturePlan")
        updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)

    @strawberry.type
    class CaptureMutation:
        capture_plan_archive = mutation(
            "capturePlanArchive",
            input=CapturePlanArchiveInput,
            permission=Permission.CAPTURE_PLAN_WRITE,
            project=target_project(CapturePlanModel.__table__),
            run=lambda uow, args: mutations.archive_plan(uow, args.id, args.updated_at),
            returns=Entity(CapturePlan, "the capture plan, now archived"),
            description="Archive a capture plan read at updatedAt.",
        )

`mutation(...)` generates the payload type `<Field>Payload` (`{<entity>: Node, errors: [UserError!]!}`;
a true delete `{deletedId: ID, deletedRowId: UUID, errors}`) and the resolver: the input's node
references resolved (`ref_id`/`ref_row_id` pairs, exactly one of the two), the change run in one unit
of work (`schema.writes.write`: audited, committed before the payload reads), idempotent creates
(`idempotent=True`), and every user-fixable refusal turned into the payload's `errors`
(`schema.errors.payload_or_errors`, the one place that happens). No module writes a payload class
by hand (tests/test_mutation_kit.py).

Node references in inputs (Relay conventions, docs/decisions.md W21): the field naming an entity is
its global id, as on the node (`id` for the mutation's target, `opportunityProjectId` for a
reference), and `rowId` (`opportunityProjectRowId`) is accepted instead. Exactly one of the two:
both, or neither for a required reference, is VALIDATION; a global id of another type (or whose id
is not a UUID) is NOT_FOUND, on the global id's field.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Generic, TypeVar, cast

import strawberry
from sqlalchemy import Table
from sqlalchemy.engine.result import result_tuple
from strawberry import relay
from strawberry.extensions.field_extension import FieldExtension
from strawberry.relay.types import GlobalIDValueError, InvalidGlobalIDError
from strawberry.scalars import is_scalar
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
    get_object_definition,
)
from strawberry.types.enum import StrawberryEnumDefinition, has_enum_definition
from strawberry.types.field import StrawberryField
from strawberry.types.unset import UNSET
from strawberry.utils.str_converters import to_camel_case, to_snake_case

from auth.exceptions import AuthRequestError
from auth.permissions import Permission
from models.db import RequestConnection
from models.errors import DomainError, Invalid, NotFound
from models.idempotency import idempotent as idempotent_create
from models.unit_of_work import UnitOfWork
from resolvers.common.loaders import columns_of
from schema.context import GraphQLContext, Info
from schema.errors import PAYLOAD_ERRORS, UserError, payload_or_errors
from schema.permissions import OwnerLookup, ProjectLookup, requires
from schema.writes import begin_write, load, set_fields

__all__ = [
    "IDEMPOTENCY_KEY",
    "PAYLOADS",
    "UPDATED_AT",
    "Args",
    "Deleted",
    "Done",
    "Entity",
    "Extra",
    "Ref",
    "creates",
    "mutation",
    "node_id",
    "ref_id",
    "ref_project",
    "ref_row_id",
    "refs_of",
    "removes",
    "resolve_ref",
    "resolve_ref_leniently",
    "row_id",
    "target_project",
    "updates",
]

InputT = TypeVar("InputT")

#: Every payload type the kit generated, by GraphQL name (the test checks the schema has no other).
PAYLOADS: dict[str, type] = {}

#: The description of an `updatedAt` input field (W12).
UPDATED_AT = "The updatedAt you read (exact to the microsecond); CONFLICT if the row changed since."

#: The description of an `idempotencyKey` input field of a create (W20).
IDEMPOTENCY_KEY = (
    "1 to 200 characters, yours to choose (a UUID is best): a retry with the same key within 24 hours "
    "returns what the first request created, without creating again (docs/api.md, Idempotent creates)."
)

_REF = "gwm.kit.ref"
# Input fields the kit consumes itself: never part of `Args.values`.
_CONSUMED = frozenset(("id", "row_id", "updated_at", "idempotency_key", "reason"))


# -- node references in inputs --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ref:
    """A reference field pair of an input: `name` is the prefix (`""` for the target, else e.g.
    `opportunity_project`), `target` the node type's GraphQL name."""

    name: str
    target: str
    required: bool

    @property
    def global_field(self) -> str:
        return f"{self.name}_id" if self.name else "id"

    @property
    def row_field(self) -> str:
        return f"{self.name}_row_id" if self.name else "row_id"

    @property
    def column(self) -> str:
        """Where the resolved row id goes in `Args.values` (the column: `opportunity_project_id`)."""
        return self.global_field


def _type_name(target: type | str) -> str:
    if isinstance(target, str):
        return target
    return get_object_definition(target, strict=True).name


def ref_id(target: type | str, *, required: bool = True, description: str | None = None) -> Any:
    """The global id field of a node reference (`id`, or `<name>Id`): `relay.GlobalID | None = ref_id(T)`.

    `required=False`: the pair may be left out (and on an update, an explicit null clears the
    reference). The row id alternative is declared next to it with `ref_row_id(T)`.
    """
    name = _type_name(target)
    text = description or f"The {name}'s global id (`{name}.id`); or give its rowId instead."
    if not required:
        text += " Optional: leave both out for none."
    return strawberry.field(default=UNSET, description=text, metadata={_REF: (name, required, "global")})


def ref_row_id(target: type | str, *, description: str | None = None) -> Any:
    """The rowId alternative of a node reference (`rowId`, or `<name>RowId`): `uuid.UUID | None = ref_row_id(T)`."""
    name = _type_name(target)
    text = description or f"The {name}'s rowId (`{name}.rowId`), instead of its global id."
    return strawberry.field(default=UNSET, description=text, metadata={_REF: (name, None, "row")})


#: The first names of `ref_id` / `ref_row_id` (kept: `row_id` is shadowed inside an input that has a
#: `row_id` field, so new code uses the `ref_` names).
node_id = ref_id
row_id = ref_row_id

_REFS: dict[type, tuple[Ref, ...]] = {}


def refs_of(input_type: type) -> tuple[Ref, ...]:
    """The node reference pairs an input declares (checked: each global id field has its rowId twin)."""
    found = _REFS.get(input_type)
    if found is not None:
        return found
    fields = {f.python_name: f for f in get_object_definition(input_type, strict=True).fields}
    refs: list[Ref] = []
    rows: set[str] = set()
    for name, field in fields.items():
        metadata: Mapping[str, Any] = field.metadata or {}
        meta = metadata.get(_REF)
        if meta is None:
            continue
        target, required, kind = meta
        if kind == "row":
            rows.add(name)
            continue
        if name != "id" and not name.endswith("_id"):
            raise TypeError(f"{input_type.__name__}.{name}: a global id field is named id or <name>_id")
        ref = Ref(name="" if name == "id" else name[: -len("_id")], target=target, required=bool(required))
        twin = fields.get(ref.row_field)
        if twin is None or _REF not in (twin.metadata or {}) or twin.metadata[_REF][0] != target:
            raise TypeError(f"{input_type.__name__}.{name} needs its twin {ref.row_field} = ref_row_id({target!r})")
        refs.append(ref)
    rows -= {ref.row_field for ref in refs}
    if rows:
        raise TypeError(f"{input_type.__name__}: row id fields without a global id twin: {sorted(rows)}")
    _REFS[input_type] = tuple(refs)
    return _REFS[input_type]


def resolve_ref(value: Any, name: str, target: type | str, *, required: bool = True) -> Any:
    """The row id an input names through the pair `<name>_id` / `<name>_row_id` (`name=""`: `id` / `row_id`).

    Returns the UUID; None when an optional pair is explicitly null; UNSET when an optional pair is
    left out. Raises Invalid (both given, or neither for a required pair) or NotFound (a global id
    of another type, or whose id is not a UUID), on the global id's field.
    """
    return _resolve(value, Ref(name=name, target=_type_name(target), required=required))


def _resolve(value: Any, ref: Ref) -> Any:
    """`resolve_ref` of a declared pair (the messages' field names worked out only for a refusal)."""
    given = getattr(value, ref.global_field, UNSET)
    raw = getattr(value, ref.row_field, UNSET)
    has_global, has_row = given is not None and given is not UNSET, raw is not None and raw is not UNSET
    if has_row and not has_global:
        return cast(uuid.UUID, raw)
    if has_global and not has_row:
        gid = cast(relay.GlobalID, given)
        if gid.type_name == ref.target:
            try:
                return uuid.UUID(gid.node_id)
            except ValueError:
                pass
        label = to_camel_case(ref.global_field)
        raise NotFound(f"There is no {ref.target} with that {label}.", field=ref.global_field) from None
    label = to_camel_case(ref.global_field)
    if has_global and has_row:
        raise Invalid(
            f"Give {label} or {to_camel_case(ref.row_field)}, not both.", field=ref.global_field
        )
    if ref.required:
        raise Invalid(f"Give {label} or {to_camel_case(ref.row_field)}.", field=ref.global_field)
    if given is None or raw is None:
        return None
    return UNSET


def resolve_ref_leniently(value: Any, name: str = "") -> uuid.UUID | None:
    """The row id of a declared pair of `value`, or None where `resolve_ref` would refuse or find none
    (for permission lookups, which run before the resolver reports the input's mistakes)."""
    for ref in refs_of(type(value)):
        if ref.name == name:
            try:
                found = _resolve(value, ref)
            except (Invalid, NotFound):
                return None
            return found if isinstance(found, uuid.UUID) else None
    raise KeyError(f"{type(value).__name__} declares no reference {name or 'id'!r}")


def target_project(table: Table, *, argument: str = "input") -> ProjectLookup:
    """`project=` lookup: the opportunity project of the row of `table` the input's target names."""
    return ref_project("", table, argument=argument)


def ref_project(name: str, table: Table, *, argument: str = "input") -> ProjectLookup:
    """`project=` lookup: the opportunity project of the row of `table` the reference `name` names
    (`ref_project("opportunity_project", projects)` for a new row under that project)."""
    from resolvers.opportunities.mutations import project_id_of

    async def lookup(context: GraphQLContext, value: Any) -> uuid.UUID | None:
        found = resolve_ref_leniently(value, name)
        return None if found is None else await project_id_of(context.loaders.db, table, found)

    return (argument, lookup)


# -- what the resolver hands the domain function --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Args(Generic[InputT]):
    """The mutation's input, with its references resolved.

    `id`: the target's row id (the input's `id`/`rowId`), None without a target. `updated_at`: the
    input's updatedAt, if it has one. `values`: the fields the input sets (UNSET left out), by
    Python name, each reference pair replaced by its row id under `<name>_id` (left out when not
    given), without id, rowId, updatedAt, idempotencyKey and reason.
    """

    input: InputT
    info: Info
    id: uuid.UUID | None
    updated_at: datetime.datetime | None
    values: dict[str, Any]
    #: Global id field -> the rowId field the caller used instead (errors then name what was given).
    given_as: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def context(self) -> GraphQLContext:
        return self.info.context


@dataclasses.dataclass(frozen=True)
class Done:
    """What a domain function may return instead of a row id: the payload's entity already built
    (`node`, e.g. `User.from_row(row)`; or `id` to load it), and values of `Extra` fields."""

    id: uuid.UUID | None = None
    node: Any = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


Result = uuid.UUID | Done

# The shapes most domain functions take, as `run=` adapters (no wrapper function per mutation).
ValuesFn = Callable[[UnitOfWork, dict[str, Any]], Awaitable[uuid.UUID]]
TargetFn = Callable[[UnitOfWork, uuid.UUID, Any], Awaitable[uuid.UUID]]
TargetValuesFn = Callable[[UnitOfWork, uuid.UUID, Any, dict[str, Any]], Awaitable[uuid.UUID]]


def creates(fn: ValuesFn) -> Callable[[UnitOfWork, Args[Any]], Awaitable[Result]]:
    """`run=` for `fn(uow, values)`: a create from the input's values."""

    async def run(uow: UnitOfWork, args: Args[Any]) -> Result:
        return await fn(uow, args.values)

    return run


def updates(fn: TargetValuesFn) -> Callable[[UnitOfWork, Args[Any]], Awaitable[Result]]:
    """`run=` for `fn(uow, id, updated_at, values)`: a change of the target read at updatedAt."""

    async def run(uow: UnitOfWork, args: Args[Any]) -> Result:
        assert args.id is not None
        return await fn(uow, args.id, args.updated_at, args.values)

    return run


def removes(fn: TargetFn) -> Callable[[UnitOfWork, Args[Any]], Awaitable[Result]]:
    """`run=` for `fn(uow, id, updated_at)`: an archive, restore or delete of the target read at updatedAt."""

    async def run(uow: UnitOfWork, args: Args[Any]) -> Result:
        assert args.id is not None
        return await fn(uow, args.id, args.updated_at)

    return run


@dataclasses.dataclass(frozen=True)
class Entity:
    """The payload names the entity the mutation created or changed: `<field>: <node> | null`.

    `what` completes "The <what>, as the caller may read it now" (e.g. "opportunity project, now
    archived"); `field` defaults to the node's name in snake_case.
    """

    node: type
    what: str
    field: str | None = None

    @property
    def name(self) -> str:
        return self.field or to_snake_case(_type_name(self.node))


@dataclasses.dataclass(frozen=True)
class Deleted:
    """A true delete: the payload has `deletedId` (the global id, for Relay's @deleteRecord) and
    `deletedRowId`, both null when `errors` is not empty."""

    node: type | str
    what: str


@dataclasses.dataclass(frozen=True)
class Extra:
    """Another payload field (a value shown once: a key, recovery codes), filled from `Done.extra`."""

    type: Any
    description: str


Returns = Entity | Deleted


def _payload(field_name: str, returns: Returns, extra: Mapping[str, Extra]) -> type:
    name = f"{field_name[0].upper()}{field_name[1:]}Payload"
    if name in PAYLOADS:
        raise TypeError(f"{name} is generated twice")
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {}
    if isinstance(returns, Entity):
        annotations[returns.name] = returns.node | None
        namespace[returns.name] = strawberry.field(
            default=None,
            description=f"The {returns.what}, as the caller may read it now; null when `errors` is not empty.",
        )
    else:
        target = _type_name(returns.node)
        annotations["deleted_id"] = relay.GlobalID | None
        namespace["deleted_id"] = strawberry.field(
            default=None,
            description=f"The global id of the {returns.what} deleted (`{target}.id`, for Relay's @deleteRecord);"
            " null when `errors` is not empty.",
        )
        annotations["deleted_row_id"] = uuid.UUID | None
        namespace["deleted_row_id"] = strawberry.field(
            default=None, description=f"The rowId of the {returns.what} deleted; null when `errors` is not empty."
        )
    for key, spec in extra.items():
        annotations[key] = spec.type
        namespace[key] = strawberry.field(default=None, description=spec.description)
    annotations["errors"] = list[UserError]
    namespace["errors"] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)
    namespace["__annotations__"] = annotations
    namespace["__module__"] = __name__
    cls = strawberry.type(
        type(name, (), namespace),
        description=f"What `{field_name}` returns: its result, or the errors that prevented it.",
    )
    PAYLOADS[name] = cls
    return cls


# -- the input's conversion ------------------------------------------------------------------------


def _convert_by_plan(input_type: type) -> None:
    """The input's value built from its GraphQL value by a plan worked out once (`_InputPlan`), instead of
    strawberry's conversion, which resolves every field's type and GraphQL name again on each request
    (about a tenth of a small mutation's GraphQL work). The value is the same: fields without a default
    start as None, each field the value holds is converted (scalars and enums as graphql-core coerced
    them, anything else by strawberry's own `convert_argument`), then the class is called."""
    definition = get_object_definition(input_type, strict=True)
    # Not for an input with a Maybe field: strawberry's validation of its nulls skips types that convert
    # themselves.
    if definition.from_input is None and not any(isinstance(f.type, StrawberryMaybe) for f in definition.fields):
        definition.from_input = _InputPlan(definition).build


class _InputPlan:
    """How to build one input class from its GraphQL value (strawberry's `from_input` hook)."""

    def __init__(self, definition: StrawberryObjectDefinition) -> None:
        self.definition = definition
        # (GraphQL name, Python name, type, how: _AS_GIVEN, _GLOBAL_ID or _CONVERTED), worked out on first use
        # (the scalars are the schema's).
        self.fields: list[tuple[str, str, Any, int]] | None = None
        self.defaults = {
            field.python_name: None
            for field in definition.fields
            if field.default_value is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        }

    def _fields(self, context: InputContext) -> list[tuple[str, str, Any, int]]:
        definition, registry = self.definition, context.scalar_registry
        fields = []
        for field in definition.fields:
            type_ = field.resolve_type(type_definition=definition)
            inner = type_.of_type if type(type_) is StrawberryOptional else type_
            how = _CONVERTED
            if inner is relay.GlobalID:
                how = _GLOBAL_ID
            elif (
                is_scalar(inner, registry) or isinstance(inner, StrawberryEnumDefinition) or has_enum_definition(inner)
            ):
                how = _AS_GIVEN
            fields.append((context.config.name_converter.from_field(field), field.python_name, type_, how))
        return fields

    def build(self, cls: type, value: Mapping[str, Any], context: InputContext) -> Any:
        fields = self.fields
        if fields is None:
            fields = self.fields = self._fields(context)
        kwargs: dict[str, Any] = dict(self.defaults)
        for graphql_name, python_name, type_, how in fields:
            if graphql_name in value:
                given = value[graphql_name]
                if how == _AS_GIVEN or given is None:
                    kwargs[python_name] = given
                elif how == _GLOBAL_ID:
                    kwargs[python_name] = _global_id(given)
                else:
                    kwargs[python_name] = context.convert(given, type_, graphql_name)
        return cls(**kwargs)


# How a field's value is converted: as graphql-core coerced it (a scalar, an enum), as a global id, or by
# strawberry's `convert_argument` (a list, a nested input).
_AS_GIVEN, _GLOBAL_ID, _CONVERTED = 0, 1, 2


def _global_id(value: Any) -> relay.GlobalID:
    """A global id as strawberry's conversion makes it, with its refusal."""
    try:
        return relay.GlobalID.from_id(value)
    except GlobalIDValueError as error:
        raise InvalidGlobalIDError(f'Value cannot represent a GlobalID: "{value}".') from error


def _args(value: Any, info: Info) -> Args[Any]:
    if value is None:
        return Args(input=None, info=info, id=None, updated_at=None, values={})
    values = set_fields(value, skip=_CONSUMED)
    target: uuid.UUID | None = None
    given_as: dict[str, str] = {}
    for ref in refs_of(type(value)):
        values.pop(ref.global_field, None)
        values.pop(ref.row_field, None)
        if getattr(value, ref.row_field, None) not in (None, UNSET):
            given_as[ref.global_field] = ref.row_field
        found = _resolve(value, ref)
        if not ref.name:
            target = found if isinstance(found, uuid.UUID) else None
        elif found is not UNSET:
            values[ref.column] = found
    if target is None and isinstance(getattr(value, "id", None), uuid.UUID):
        target = value.id  # a target that is not a node (an API key): a plain UUID `id`
    updated_at = getattr(value, "updated_at", None)
    return Args(input=value, info=info, id=target, updated_at=updated_at, values=values, given_as=given_as)


def _name_as_given(exc: AuthRequestError | DomainError, args: Args[Any], renames: Mapping[str, str]) -> None:
    """A refusal names the input field at fault: a service's own name for it is `renames`d (`userId` ->
    `id`), and one on a reference's global id field names the rowId field when that is what was given."""
    if exc.field is not None and exc.field in renames:
        exc.field = renames[exc.field]
    field = exc.field
    if field:
        head, _, rest = field.partition(".")
        used = args.given_as.get(to_snake_case(head))
        if used is not None:
            exc.field = used + (f".{rest}" if rest else "")


def mutation(
    name: str,
    *,
    input: type | None,
    returns: Returns,
    description: str,
    permission: Permission | None,
    run: Callable[[UnitOfWork, Args[Any]], Awaitable[Result]] | None = None,
    service: Callable[[Args[Any]], Awaitable[Result]] | None = None,
    project: ProjectLookup | None = None,
    unless_owner: OwnerLookup | None = None,
    extensions: Sequence[FieldExtension] = (),
    audit_permissions: Callable[[Any], Sequence[Permission]] | None = None,
    idempotent: bool = False,
    input_description: str | None = None,
    extra: Mapping[str, Extra] | None = None,
    error_fields: Mapping[str, str] | None = None,
) -> Any:
    """The mutation field `name` (camelCase) of a root Mutation class: assign it to the snake_case attribute.

    Exactly one of:
      run(uow, args) -> row id | Done      run inside a unit of work the kit opens (schema/writes.py
                                           `write`): the usual case, audited and committed as one
      service(args) -> row id | Done       a service that opens its own unit of work (auth/roles.py,
                                           auth/audited.py `caller_unit`)
    `permission` (None: any signed-in caller) with `project` / `unless_owner` as in
    schema/permissions.py `requires`; `extensions` adds more (e.g. `requires_for_input`).
    `audit_permissions(input)` are recorded on the audit rows (default: `permission`).
    `idempotent=True`: a create with an optional `idempotencyKey` input field (W20).
    `input=None`: a mutation without arguments.
    `error_fields`: a service's field names for its refusals -> the input's (`{"userId": "id"}`).
    """
    if (run is None) == (service is None):
        raise TypeError(f"{name}: give exactly one of run= and service=")
    if input is not None:
        refs_of(input)  # declaration errors surface at import
        _convert_by_plan(input)
    if idempotent and (input is None or "idempotency_key" not in _field_names(input)):
        raise TypeError(f"{name}: an idempotent create's input declares idempotency_key (W20)")
    extras = dict(extra or {})
    renames = dict(error_fields or {})
    payload = _payload(name, returns, extras)
    write_permissions = (permission,) if permission is not None else ()
    # Worked out once, not per request: the payload's entity field and the node type its write loads.
    entity_field = returns.name if isinstance(returns, Entity) else ""
    node_type = returns.node if isinstance(returns, Entity) else None

    async def work(info: Info, value: Any) -> Any:
        args = _args(value, info)
        try:
            return await complete(info, value, args)
        except (AuthRequestError, DomainError) as exc:
            _name_as_given(exc, args, renames)
            raise

    async def complete(info: Info, value: Any, args: Args[Any]) -> Any:
        result: Result
        if run is not None:
            granted = tuple(audit_permissions(value)) if audit_permissions is not None else write_permissions

            def change(uow: UnitOfWork) -> Awaitable[uuid.UUID]:
                if not idempotent:
                    return cast(Awaitable[uuid.UUID], run(uow, args))
                return idempotent_create(
                    uow,
                    getattr(value, "idempotency_key", None),
                    mutation=name,
                    values=args.values,
                    create=lambda: cast(Awaitable[uuid.UUID], run(uow, args)),
                )

            result = await _write_and_load(
                info, change, permissions=granted, reason=getattr(value, "reason", None), node_type=node_type
            )
        else:
            assert service is not None
            result = await service(args)
            await info.context.refresh_reads()
        done = result if isinstance(result, Done) else Done(id=result)
        fields: dict[str, Any] = {key: done.extra.get(key) for key in extras}
        if isinstance(returns, Deleted):
            deleted = done.id if done.id is not None else args.id
            fields["deleted_id"] = None if deleted is None else relay.GlobalID(_type_name(returns.node), str(deleted))
            fields["deleted_row_id"] = deleted
        elif isinstance(done.node, _Loaded):
            fields[entity_field] = done.node.node
        elif done.node is not None:
            fields[entity_field] = done.node
        elif done.id is not None:
            fields[entity_field] = await load(info, returns.node, done.id)
        return payload(**fields)

    if input is None:

        async def resolve_without_input(self: Any, info: Info) -> Any:
            return await payload_or_errors(payload, work(info, None))

        resolver: Callable[..., Any] = resolve_without_input
        resolver.__annotations__ = {"info": Info, "return": payload if permission is None else payload | None}
    else:
        argument = strawberry.argument(description=input_description or _input_sentence(input))

        async def resolve(self: Any, info: Info, input: Any) -> Any:
            return await payload_or_errors(payload, work(info, input), under=("input",))

        resolver = resolve
        resolver.__annotations__ = {
            "info": Info,
            "input": Annotated[input, argument],
            "return": payload | None if permission is not None else payload,
        }
    resolver.__name__ = to_snake_case(name)
    field_extensions: list[FieldExtension] = []
    if permission is not None:
        field_extensions.append(requires(permission, project=project, unless_owner=unless_owner))
    field_extensions.extend(extensions)
    field: StrawberryField = strawberry.mutation(
        resolver=resolver, name=name, description=description, extensions=field_extensions
    )
    return field


async def _write_and_load(
    info: Info,
    change: Callable[[UnitOfWork], Awaitable[uuid.UUID]],
    *,
    permissions: Sequence[Permission],
    reason: str | None,
    node_type: type | None,
) -> Result:
    """schema/writes.py `write`, with the payload's entity read in the write's own transaction.

    The change runs in a unit of work for the caller's tenant; its entity (when the payload has
    one and the domain function did not build it) is then read as the caller may read it, through
    the request's loaders lent the unit of work's connection, before COMMIT: the payload shows what
    is being committed without a transaction of its own to re-read it afterwards (issue 18). Where
    the loader could only return the row as the unit of work wrote it (a caller reading every row of
    the table), the entity is built from that row instead, with no statement (`_as_stored`). If the
    COMMIT fails, the payload is dropped with the rest. Reads after the field (the payload's nested
    fields, the next mutation) open a new snapshot, which sees the commit.
    """
    context = info.context
    try:
        async with await begin_write(info, permissions) as uow:
            uow.defer_audit_rows()  # every flush's audit rows appended at once, with the notification
            if reason is not None:
                uow.set_reason(reason)
            result = await change(uow)
            done = result if isinstance(result, Done) else Done(id=result)
            if node_type is not None and done.node is None and done.id is not None:
                await uow.flush()
                node: Any = _as_stored(context, uow, node_type, done.id)
                await uow.flush(announce=True)  # only the payload's read follows: the batch is complete
                if node is None:
                    await context.refresh_reads()  # a read connection the change itself opened goes back first
                    lent = _UnitConnection(uow)
                    context._db, context._loaders = lent, None
                    try:
                        node = await load(info, cast(Any, node_type), done.id)
                    finally:
                        context._db, context._loaders = None, None
                done = dataclasses.replace(done, node=_Loaded(node))
            return done
    finally:
        await context.refresh_reads()


def _as_stored(context: GraphQLContext, uow: UnitOfWork, node_type: type, entity_id: uuid.UUID) -> Any:
    """The payload's entity built from the row as the unit of work knows it stored, or None to read it
    with a loader.

    The unit of work knows every column of a row it wrote (its flush's INSERT or UPDATE returns them
    as stored) or read under its row lock, until a statement outside its flushes may have changed it
    (`_stored`); the row stays locked until the unit ends, so those values are what a read
    in its transaction returns. They stand in for the loader's read only where the loader could not
    decide otherwise: the row is of the caller's tenant, has every column the loader reads, and the
    caller's read scope has no condition on the table (every row of the tenant is readable). Anything
    else (a project-scoped reader, a row not known) is read with the loader, as before.
    """
    table: Table = cast(Any, node_type)._table
    stored = uow.stored(table.name, entity_id)
    if stored is None:
        return None
    scope = context.scope
    if scope.condition(table) is not None:
        return None
    shape = _ROW_SHAPES.get(table)
    if shape is None:
        shape = _ROW_SHAPES[table] = _row_shape(table)
    keys, make = shape
    try:
        row = make(tuple(stored[key] for key in keys))
    except KeyError:
        return None
    owner = row.id if table.name == "tenants" else getattr(row, "tenant_id", None)
    if owner != scope.tenant_id:
        return None
    return cast(Any, node_type).from_row(row)


# Table -> the names of the columns the loaders read (resolvers/common/loaders.py `columns_of`), in
# their order, and the maker of a row with those fields.
_ROW_SHAPES: dict[Table, tuple[tuple[str, ...], Callable[[tuple[Any, ...]], Any]]] = {}


def _row_shape(table: Table) -> tuple[tuple[str, ...], Callable[[tuple[Any, ...]], Any]]:
    names = tuple(column.name for column in columns_of(table))
    return names, result_tuple(names)


@dataclasses.dataclass(frozen=True)
class _Loaded:
    """The payload's entity as read in the write's transaction (None: the caller may not read it)."""

    node: Any


class _UnitConnection(RequestConnection):
    """A unit of work's connection, lent to the request's loaders for the payload's read: statements
    take turns as on any request connection; closing it only gives it back (the unit of work ends
    the transaction)."""

    def __init__(self, uow: UnitOfWork) -> None:
        connection = uow.connection
        super().__init__(connection.engine, uow.tenant_id, read_only=False)
        self._conn = connection

    async def close(self, *, commit: bool = False) -> None:
        self._conn = None


def _field_names(input_type: type) -> set[str]:
    return {f.python_name for f in get_object_definition(input_type, strict=True).fields}


def _input_sentence(input_type: type) -> str:
    definition = get_object_definition(input_type, strict=True)
    return definition.description or f"The {definition.name}."
